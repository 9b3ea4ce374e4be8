//! The backend session API (`/v1/sessions/…`) end to end against a real daemon, on both stores:
//! Django's session operations, expiry semantics, authentication, and what reaches the database.

use crate::common;

use common::daemon::{API_KEY, TestDaemon};
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use verifyd::config::Backend;

const TWO_WEEKS: i64 = 1_209_600;
/// What a never-expiring session's cookie gets (the browsers' 400-day cap).
const LONGEST_MAX_AGE: i64 = 400 * 86_400;

// ---------------------------------------------------------------------------------------------
// Helpers

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Unix seconds of `2026-11-26T04:03:53Z` (the only form the daemon writes).
fn parse_rfc3339(s: &str) -> i64 {
    let b = s.as_bytes();
    assert!(
        s.len() == 20 && b[4] == b'-' && b[10] == b'T' && b[19] == b'Z',
        "not RFC 3339 UTC: {s}"
    );
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().expect(s);
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// Seconds from now until the session's `expires_at` (`None` when it never expires).
fn expires_in(session: &Value) -> Option<i64> {
    session["expires_at"]
        .as_str()
        .map(|t| parse_rfc3339(t) - now_secs())
}

/// The `Max-Age` of a `Set-Cookie` value, if any.
fn cookie_max_age(set_cookie: &str) -> Option<i64> {
    set_cookie
        .split(';')
        .filter_map(|a| a.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("max-age"))
        .map(|(_, v)| v.parse().expect(set_cookie))
}

fn assert_near(actual: i64, expected: i64, slack: i64, what: &str) {
    assert!(
        (actual - expected).abs() <= slack,
        "{what}: {actual}, expected {expected} ± {slack}"
    );
}

fn is_session_key(k: &str) -> bool {
    k.len() == 32
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Percent-encodes a data name for the path.
fn enc(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn create(d: &TestDaemon, body: Option<Value>) -> Value {
    let (status, s) = d.api(Method::POST, "/v1/sessions", body).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert!(is_session_key(s["key"].as_str().unwrap()), "{s}");
    s
}

fn key_of(s: &Value) -> String {
    s["key"].as_str().unwrap().to_owned()
}

async fn get(d: &TestDaemon, key: &str) -> (StatusCode, Value) {
    d.api(Method::GET, &format!("/v1/sessions/{key}"), None)
        .await
}

async fn set_expiry(d: &TestDaemon, key: &str, body: Value) -> (StatusCode, Value) {
    d.api(
        Method::PUT,
        &format!("/v1/sessions/{key}/expiry"),
        Some(body),
    )
    .await
}

fn assert_not_found(status: StatusCode, body: &Value, code: &str) {
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], code, "{body}");
}

/// The daemon's database, read directly.
enum Db {
    Sqlite(std::path::PathBuf),
    Postgres(tokio_postgres::Client),
}

impl Db {
    async fn open(d: &TestDaemon) -> Db {
        match d.config.store.backend {
            Backend::Sqlite => Db::Sqlite(d.config.store.sqlite.path.clone()),
            Backend::Postgres => {
                let url = &d.db.as_ref().expect("postgres daemons have a TestDb").url;
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test database");
                tokio::spawn(conn);
                Db::Postgres(client)
            }
        }
    }

    fn sqlite(path: &std::path::Path) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(path).expect("open the SQLite file");
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }

    async fn count_sessions(&self) -> i64 {
        match self {
            Db::Sqlite(p) => Self::sqlite(p)
                .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
                .unwrap(),
            Db::Postgres(c) => c
                .query_one("SELECT count(*) FROM sessions", &[])
                .await
                .unwrap()
                .get(0),
        }
    }

    async fn key_hashes(&self) -> Vec<Vec<u8>> {
        match self {
            Db::Sqlite(p) => {
                let c = Self::sqlite(p);
                let mut st = c.prepare("SELECT key_hash FROM sessions").unwrap();
                st.query_map([], |r| r.get::<_, Vec<u8>>(0))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
            }
            Db::Postgres(c) => c
                .query("SELECT key_hash FROM sessions", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }

    /// Every column of every row of `table`, as text (binary values both raw and as hex).
    async fn all_text(&self, table: &str) -> Vec<String> {
        match self {
            Db::Sqlite(p) => {
                use rusqlite::types::ValueRef;
                let c = Self::sqlite(p);
                let mut st = c.prepare(&format!("SELECT * FROM {table}")).unwrap();
                let n = st.column_count();
                let mut out = Vec::new();
                let mut rows = st.query([]).unwrap();
                while let Some(row) = rows.next().unwrap() {
                    for i in 0..n {
                        out.push(match row.get_ref(i).unwrap() {
                            ValueRef::Null => String::new(),
                            ValueRef::Integer(v) => v.to_string(),
                            ValueRef::Real(v) => v.to_string(),
                            ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                            ValueRef::Blob(b) => {
                                format!("{} {}", String::from_utf8_lossy(b), hex::encode(b))
                            }
                        });
                    }
                }
                out
            }
            Db::Postgres(c) => c
                // A whole row as text: bytea columns come out as `\x<hex>`.
                .query(&format!("SELECT t::text FROM {table} t"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tests, each against SQLite and PostgreSQL

on_both_stores! {
    async fn create_and_get(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };

        // Empty body: default policy, no data.
        let s = create(&d, None).await;
        assert_eq!(s["data"], json!({}), "{s}");
        assert_eq!(s["expiry"], "default", "{s}");
        assert_near(expires_in(&s).unwrap(), TWO_WEEKS, 3, "expires_at of a default session");
        assert_near(s["max_age"].as_i64().unwrap(), TWO_WEEKS, 3, "max_age");
        let cookie = s["set_cookie"].as_str().unwrap();
        assert!(cookie.starts_with(&format!("sessionid={};", key_of(&s))), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
        assert_eq!(cookie_max_age(cookie), s["max_age"].as_i64(), "{cookie}");

        // Data and an idle expiry.
        let s2 = create(&d, Some(json!({"data": {"cart": [1, 2], "user": "ann"}, "expiry": 300}))).await;
        assert_ne!(key_of(&s), key_of(&s2));
        assert_eq!(s2["data"], json!({"cart": [1, 2], "user": "ann"}));
        assert_eq!(s2["expiry"], 300);
        assert_near(expires_in(&s2).unwrap(), 300, 3, "expires_at");
        assert_near(s2["max_age"].as_i64().unwrap(), 300, 2, "max_age");
        assert_eq!(cookie_max_age(s2["set_cookie"].as_str().unwrap()), s2["max_age"].as_i64());
        assert!(s2["created_at"].as_str().is_some_and(|t| (parse_rfc3339(t) - now_secs()).abs() <= 3));

        for created in [&s, &s2] {
            let (status, got) = get(&d, &key_of(created)).await;
            assert_eq!(status, StatusCode::OK, "{got}");
            assert_eq!(got["key"], created["key"]);
            assert_eq!(got["data"], created["data"]);
            assert_eq!(got["expiry"], created["expiry"]);
            assert_eq!(got["created_at"], created["created_at"]);
        }

        // A well-formed key nobody issued.
        let (status, body) = get(&d, &"a".repeat(32)).await;
        assert_not_found(status, &body, "session_not_found");

        // Bad bodies are refused.
        let (status, body) = d.api(Method::POST, "/v1/sessions", Some(json!({"data": [1]}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, body) = d.api(Method::POST, "/v1/sessions", Some(json!({"extra": 1}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, body) = d.api(Method::POST, "/v1/sessions", Some(json!({"expiry": -5}))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        d.stop().await;
    }

    async fn database_holds_only_key_hashes(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let mut keys = Vec::new();
        for i in 0..3 {
            let s = create(&d, Some(json!({"data": {"n": i}}))).await;
            keys.push(key_of(&s));
        }
        // A cycled key must not leave the old or the new key behind either.
        let (status, cycled) = d.api(Method::POST, &format!("/v1/sessions/{}/cycle", keys[2]), None).await;
        assert_eq!(status, StatusCode::OK, "{cycled}");
        keys.push(key_of(&cycled));

        let db = Db::open(&d).await;
        assert_eq!(db.count_sessions().await, 3);
        let mut text = Vec::new();
        for table in ["sessions", "verifications", "verifyd_meta"] {
            text.extend(db.all_text(table).await);
        }
        assert!(!text.is_empty());
        for key in &keys {
            assert!(
                text.iter().all(|col| !col.contains(key.as_str())),
                "the plain key {key} is in the sessions table: {text:?}"
            );
            assert!(!text.iter().any(|col| col.contains(&hex::encode(key.as_bytes()))));
        }
        let mut stored = db.key_hashes().await;
        stored.sort();
        let mut expected: Vec<Vec<u8>> = [&keys[0], &keys[1], &keys[3]]
            .iter()
            .map(|k| Sha256::digest(k.as_bytes()).to_vec())
            .collect();
        expected.sort();
        assert_eq!(stored, expected, "key_hash must be SHA-256 of the key");

        if let Db::Sqlite(path) = &db {
            // Nothing on disk either: the file and its write-ahead log.
            for p in [path.clone(), path.with_extension("db-wal")] {
                let bytes = std::fs::read(&p).unwrap_or_default();
                for key in &keys {
                    assert!(
                        !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                        "{} holds the plain key",
                        p.display()
                    );
                }
            }
        }
        d.stop().await;
    }

    async fn data_values(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let key = key_of(&create(&d, None).await);
        let path = |name: &str| format!("/v1/sessions/{key}/data/{}", enc(name));

        let values = [
            ("s", json!("text")),
            ("n", json!(42.5)),
            ("b", json!(false)),
            ("nothing", json!(null)),
            ("list", json!([1, "two", {"three": 3}])),
            ("obj", json!({"nested": {"deep": [true]}})),
        ];
        for (name, value) in &values {
            let (status, body) = d.api(Method::PUT, &path(name), Some(json!({"value": value}))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(body, json!({"name": name, "value": value}));
        }
        for (name, value) in &values {
            let (status, body) = d.api(Method::GET, &path(name), None).await;
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
            assert_eq!(body["value"], *value, "{name}");
        }
        // Overwrite.
        let (status, _) = d.api(Method::PUT, &path("s"), Some(json!({"value": "new"}))).await;
        assert_eq!(status, StatusCode::OK);
        let (_, body) = d.api(Method::GET, &path("s"), None).await;
        assert_eq!(body["value"], "new");
        let (_, session) = get(&d, &key).await;
        assert_eq!(session["data"].as_object().unwrap().len(), values.len(), "{session}");

        // Missing, with and without a default.
        let (status, body) = d.api(Method::GET, &path("missing"), None).await;
        assert_not_found(status, &body, "key_not_found");
        let default = enc(r#"{"fallback": [1, 2]}"#);
        let (status, body) = d
            .api(Method::GET, &format!("{}?default={default}", path("missing")), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["value"], json!({"fallback": [1, 2]}));
        // A default does not hide a stored value, even a stored null.
        let (_, body) = d.api(Method::GET, &format!("{}?default=1", path("nothing")), None).await;
        assert_eq!(body["value"], json!(null), "{body}");
        let (status, body) = d.api(Method::GET, &format!("{}?default=%7Bnope", path("missing")), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].is_string() && body["message"].is_string(), "{body}");

        // PUT needs exactly {"value": …}.
        for bad in [json!({}), json!({"value": 1, "more": 2}), json!({"val": 1})] {
            let (status, body) = d.api(Method::PUT, &path("x"), Some(bad.clone())).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        }

        // Delete once, then it is gone.
        let (status, body) = d.api(Method::DELETE, &path("n"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = d.api(Method::DELETE, &path("n"), None).await;
        assert_not_found(status, &body, "key_not_found");
        let (status, body) = d.api(Method::GET, &path("n"), None).await;
        assert_not_found(status, &body, "key_not_found");

        // Names with spaces, unicode, slashes and percent signs round-trip.
        let odd = ["with space", "日本語のキー", "ключ é", "a/b", "100%", "semi;colon?q=1#frag"];
        for (i, name) in odd.iter().enumerate() {
            let (status, body) = d.api(Method::PUT, &path(name), Some(json!({"value": i}))).await;
            assert_eq!(status, StatusCode::OK, "{name}: {body}");
            assert_eq!(body["name"], *name);
        }
        let (_, session) = get(&d, &key).await;
        for (i, name) in odd.iter().enumerate() {
            assert_eq!(session["data"][*name], json!(i), "{name}: {session}");
            let (status, body) = d.api(Method::GET, &path(name), None).await;
            assert_eq!((status, body["value"].clone()), (StatusCode::OK, json!(i)), "{name}");
        }
        let (status, _) = d.api(Method::DELETE, &path("日本語のキー"), None).await;
        assert_eq!(status, StatusCode::OK);
        d.stop().await;
    }

    async fn clear_flush_cycle(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let data = json!({"a": 1, "b": {"c": [2]}});

        // clear: same key, no data.
        let key = key_of(&create(&d, Some(json!({"data": data, "expiry": 600}))).await);
        let (status, body) = d.api(Method::POST, &format!("/v1/sessions/{key}/clear"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["key"], key.as_str());
        assert_eq!(body["data"], json!({}));
        assert_eq!(body["expiry"], 600, "clear keeps the expiry policy");
        let (status, body) = get(&d, &key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"], json!({}));

        // cycle: new key, same data; the old key is dead at once.
        let (status, _) = d
            .api(Method::PUT, &format!("/v1/sessions/{key}/data/x"), Some(json!({"value": "kept"})))
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, cycled) = d.api(Method::POST, &format!("/v1/sessions/{key}/cycle"), None).await;
        assert_eq!(status, StatusCode::OK, "{cycled}");
        let new_key = key_of(&cycled);
        assert!(is_session_key(&new_key));
        assert_ne!(new_key, key);
        assert_eq!(cycled["data"], json!({"x": "kept"}));
        assert!(cycled["set_cookie"].as_str().unwrap().starts_with(&format!("sessionid={new_key};")));
        let (status, body) = get(&d, &key).await;
        assert_not_found(status, &body, "session_not_found");
        let (status, body) = d.api(Method::POST, &format!("/v1/sessions/{key}/cycle"), None).await;
        assert_not_found(status, &body, "session_not_found");
        let (status, body) = get(&d, &new_key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"], json!({"x": "kept"}));
        assert_eq!(body["expiry"], 600);

        // flush: gone, cookie expired, every further operation 404.
        let (status, body) = d.api(Method::POST, &format!("/v1/sessions/{new_key}/flush"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["flushed"], true);
        let cookie = body["set_cookie"].as_str().unwrap();
        assert!(cookie.starts_with("sessionid=;"), "{cookie}");
        assert_eq!(cookie_max_age(cookie), Some(0), "{cookie}");
        let k = &new_key;
        let after: [(Method, String, Option<Value>); 8] = [
            (Method::GET, format!("/v1/sessions/{k}"), None),
            (Method::GET, format!("/v1/sessions/{k}/data/x"), None),
            (Method::PUT, format!("/v1/sessions/{k}/data/x"), Some(json!({"value": 1}))),
            (Method::DELETE, format!("/v1/sessions/{k}/data/x"), None),
            (Method::POST, format!("/v1/sessions/{k}/clear"), None),
            (Method::POST, format!("/v1/sessions/{k}/flush"), None),
            (Method::POST, format!("/v1/sessions/{k}/cycle"), None),
            (Method::PUT, format!("/v1/sessions/{k}/expiry"), Some(json!({"expiry": 5}))),
        ];
        for (m, p, b) in after {
            let (status, body) = d.api(m.clone(), &p, b).await;
            assert_not_found(status, &body, "session_not_found");
        }
        let db = Db::open(&d).await;
        assert_eq!(db.count_sessions().await, 0, "flush deletes the row");
        d.stop().await;
    }

    async fn expiry_forms(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| c.session.default_age = 5000).await else {
            return;
        };
        let key = key_of(&create(&d, None).await);

        // N seconds.
        let (status, s) = set_expiry(&d, &key, json!({"expiry": 300})).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert_eq!(s["expiry"], 300);
        assert_near(s["max_age"].as_i64().unwrap(), 300, 2, "max_age");
        assert_near(expires_in(&s).unwrap(), 300, 3, "expires_at");
        let cookie = s["set_cookie"].as_str().unwrap();
        assert_eq!(cookie_max_age(cookie), s["max_age"].as_i64(), "{cookie}");
        assert_near(cookie_max_age(cookie).unwrap(), expires_in(&s).unwrap(), 2, "Max-Age vs expires_at");
        let (_, got) = get(&d, &key).await;
        assert_eq!(got["expiry"], 300, "{got}");
        assert_near(expires_in(&got).unwrap(), 300, 3, "expires_at after GET");

        // 0: a browser-session cookie; the row still expires after the default age.
        let (status, s) = set_expiry(&d, &key, json!({"expiry": 0})).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert_eq!(s["expiry"], 0);
        assert!(s["max_age"].is_null(), "{s}");
        let cookie = s["set_cookie"].as_str().unwrap();
        assert!(cookie.starts_with(&format!("sessionid={key};")), "{cookie}");
        assert_eq!(cookie_max_age(cookie), None, "{cookie}");
        assert!(!cookie.to_ascii_lowercase().contains("expires="), "{cookie}");
        assert_near(expires_in(&s).unwrap(), 5000, 3, "expires_at of a browser session");

        // null: never expires; the cookie gets the longest Max-Age browsers keep.
        let (status, s) = set_expiry(&d, &key, json!({"expiry": null})).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert!(s["expiry"].is_null(), "{s}");
        assert!(s["expires_at"].is_null(), "{s}");
        assert_eq!(s["max_age"], LONGEST_MAX_AGE, "{s}");
        assert_eq!(cookie_max_age(s["set_cookie"].as_str().unwrap()), Some(LONGEST_MAX_AGE));
        let (_, got) = get(&d, &key).await;
        assert!(got["expires_at"].is_null(), "{got}");

        // "default": back to the global policy.
        let (status, s) = set_expiry(&d, &key, json!({"expiry": "default"})).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert_eq!(s["expiry"], "default");
        assert_near(expires_in(&s).unwrap(), 5000, 3, "expires_at of a default session");
        assert_near(s["max_age"].as_i64().unwrap(), 5000, 2, "max_age");
        assert_eq!(cookie_max_age(s["set_cookie"].as_str().unwrap()), s["max_age"].as_i64());

        // Invalid forms change nothing.
        for bad in [
            json!({"expiry": -1}),
            json!({"expiry": "soon"}),
            json!({"expiry": 1.5}),
            json!({"expiry": true}),
            json!({"expiry": [300]}),
            json!({"expiry": 99_999_999_999u64}),
            json!({}),
            json!({"expiry": 300, "extra": 1}),
            json!([300]),
        ] {
            let (status, body) = set_expiry(&d, &key, bad.clone()).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
            assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
        }
        let (_, got) = get(&d, &key).await;
        assert_eq!(got["expiry"], "default", "{got}");
        d.stop().await;
    }

    async fn expired_session_is_never_served(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| c.sweeper.interval = 3600).await else {
            return;
        };
        let key = key_of(&create(&d, Some(json!({"data": {"a": 1}}))).await);
        let (status, s) = set_expiry(&d, &key, json!({"expiry": 1})).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert_eq!(s["max_age"], 1, "{s}");
        let (status, _) = get(&d, &key).await;
        assert_eq!(status, StatusCode::OK, "alive right after");
        tokio::time::sleep(Duration::from_millis(1300)).await;

        let (status, body) = get(&d, &key).await;
        assert_not_found(status, &body, "session_not_found");
        let (status, body) = d.api(Method::GET, &format!("/v1/sessions/{key}/data/a"), None).await;
        assert_not_found(status, &body, "session_not_found");
        let (status, body) = d
            .api(Method::PUT, &format!("/v1/sessions/{key}/data/b"), Some(json!({"value": 2})))
            .await;
        assert_not_found(status, &body, "session_not_found");
        let (status, body) = set_expiry(&d, &key, json!({"expiry": 600})).await;
        assert_not_found(status, &body, "session_not_found");
        let (status, body) = d.api(Method::POST, &format!("/v1/sessions/{key}/cycle"), None).await;
        assert_not_found(status, &body, "session_not_found");
        // The row is still there: the store itself refused it, not the sweeper.
        assert_eq!(Db::open(&d).await.count_sessions().await, 1);
        d.stop().await;
    }

    async fn use_slides_the_expiry(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            c.session.refresh_interval = 0;
            c.sweeper.interval = 3600;
        })
        .await else {
            return;
        };
        let key = key_of(&create(&d, Some(json!({"expiry": 2}))).await);
        let started = Instant::now();
        for i in 1..=3 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let (status, s) = get(&d, &key).await;
            assert_eq!(status, StatusCode::OK, "touch {i} after {:?}: {s}", started.elapsed());
            assert_near(expires_in(&s).unwrap(), 2, 1, "expires_at slid to now + 2");
        }
        assert!(started.elapsed() >= Duration::from_secs(3));
        // Left alone, it dies.
        tokio::time::sleep(Duration::from_millis(2300)).await;
        let (status, body) = get(&d, &key).await;
        assert_not_found(status, &body, "session_not_found");
        d.stop().await;
    }

    async fn max_lifetime_caps_every_session(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            c.session.max_lifetime = 2;
            c.session.refresh_interval = 0;
            c.sweeper.interval = 3600;
        })
        .await else {
            return;
        };
        let never = key_of(&create(&d, None).await);
        let (status, s) = set_expiry(&d, &never, json!({"expiry": null})).await;
        assert_eq!(status, StatusCode::OK, "{s}");
        assert!(s["expiry"].is_null(), "{s}");
        // Capped: an expiry timestamp at creation + 2 s, and a cookie that agrees.
        let left = expires_in(&s).expect("a capped session has an expiry");
        assert!((0..=3).contains(&left), "{s}");
        let max_age = s["max_age"].as_i64().unwrap();
        assert!((0..=2).contains(&max_age), "{s}");
        assert_eq!(cookie_max_age(s["set_cookie"].as_str().unwrap()), Some(max_age));

        let idle = key_of(&create(&d, Some(json!({"expiry": 3600}))).await);
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            // Use does not extend past the cap.
            let (status, s) = get(&d, &idle).await;
            if status == StatusCode::OK {
                assert!(s["max_age"].as_i64().unwrap() <= 2, "{s}");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for key in [&never, &idle] {
            let (status, body) = get(&d, key).await;
            assert_not_found(status, &body, "session_not_found");
        }
        d.stop().await;
    }

    async fn every_route_requires_the_api_key(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let key = key_of(&create(&d, Some(json!({"data": {"x": 1}}))).await);
        let routes: [(Method, String, Option<Value>); 9] = [
            (Method::POST, "/v1/sessions".into(), None),
            (Method::GET, format!("/v1/sessions/{key}"), None),
            (Method::GET, format!("/v1/sessions/{key}/data/x"), None),
            (Method::PUT, format!("/v1/sessions/{key}/data/x"), Some(json!({"value": 2}))),
            (Method::DELETE, format!("/v1/sessions/{key}/data/x"), None),
            (Method::POST, format!("/v1/sessions/{key}/clear"), None),
            (Method::POST, format!("/v1/sessions/{key}/flush"), None),
            (Method::POST, format!("/v1/sessions/{key}/cycle"), None),
            (Method::PUT, format!("/v1/sessions/{key}/expiry"), Some(json!({"expiry": 5}))),
        ];
        let wrong_key = format!("{API_KEY}x");
        let auths: [Option<String>; 6] = [
            None,
            Some(format!("Bearer {wrong_key}")),
            Some("Bearer ".into()),
            Some(format!("Basic {API_KEY}")),
            Some(API_KEY.into()),
            Some(format!("Bearer {}", key)),
        ];
        for (m, p, b) in &routes {
            for auth in &auths {
                let mut req = d.http.request(m.clone(), d.url(p));
                if let Some(a) = auth {
                    req = req.header("authorization", a);
                }
                if let Some(b) = b {
                    req = req.json(b);
                }
                let resp = req.send().await.unwrap();
                let status = resp.status();
                let challenge = resp.headers().get(WWW_AUTHENTICATE).cloned();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{m} {p} with {auth:?}: {body}");
                assert_eq!(challenge.as_ref().map(|v| v.to_str().unwrap()), Some("Bearer"), "{m} {p}");
                assert_eq!(body["error"], "unauthorized", "{body}");
            }
        }
        // Nothing happened to the session.
        let (status, s) = get(&d, &key).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(s["data"], json!({"x": 1}));
        d.stop().await;
    }

    async fn malformed_keys_are_unknown_sessions(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let real = key_of(&create(&d, None).await);
        let bad = [
            "abc".to_owned(),
            "a".repeat(33),
            format!("{real}0"),
            real.to_uppercase(),
            "a".repeat(31) + "-",
            "%00".repeat(11),
            "a".repeat(31) + "%C3%A9",
            "x".repeat(3000),
            "'%20OR%201=1--".into(),
        ];
        for k in &bad {
            let ops: [(Method, String, Option<Value>); 8] = [
                (Method::GET, format!("/v1/sessions/{k}"), None),
                (Method::GET, format!("/v1/sessions/{k}/data/x"), None),
                (Method::PUT, format!("/v1/sessions/{k}/data/x"), Some(json!({"value": 1}))),
                (Method::DELETE, format!("/v1/sessions/{k}/data/x"), None),
                (Method::POST, format!("/v1/sessions/{k}/clear"), None),
                (Method::POST, format!("/v1/sessions/{k}/flush"), None),
                (Method::POST, format!("/v1/sessions/{k}/cycle"), None),
                (Method::PUT, format!("/v1/sessions/{k}/expiry"), Some(json!({"expiry": 5}))),
            ];
            for (m, p, b) in ops {
                let (status, body) = d.api(m.clone(), &p, b).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{m} {p}: {body}");
                assert_eq!(body["error"], "session_not_found", "{m} {p}: {body}");
            }
        }
        let (status, _) = get(&d, &real).await;
        assert_eq!(status, StatusCode::OK);
        d.stop().await;
    }

    async fn sweeper_deletes_expired_rows(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| c.sweeper.interval = 1).await else {
            return;
        };
        let live: Vec<String> = {
            let mut v = Vec::new();
            v.push(key_of(&create(&d, None).await));
            v.push(key_of(&create(&d, Some(json!({"expiry": 3600}))).await));
            let never = key_of(&create(&d, None).await);
            let (status, _) = set_expiry(&d, &never, json!({"expiry": null})).await;
            assert_eq!(status, StatusCode::OK);
            v.push(never);
            v
        };
        for _ in 0..3 {
            create(&d, Some(json!({"expiry": 1, "data": {"doomed": true}}))).await;
        }
        let db = Db::open(&d).await;
        assert_eq!(db.count_sessions().await, 6);
        let deadline = Instant::now() + Duration::from_secs(6);
        loop {
            let n = db.count_sessions().await;
            if n == 3 {
                break;
            }
            assert!(n > 3, "the sweeper deleted live sessions: {n} rows left");
            assert!(Instant::now() < deadline, "expired rows still there: {n} rows");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut stored = db.key_hashes().await;
        stored.sort();
        let mut expected: Vec<Vec<u8>> =
            live.iter().map(|k| Sha256::digest(k.as_bytes()).to_vec()).collect();
        expected.sort();
        assert_eq!(stored, expected, "exactly the live sessions remain");
        for k in &live {
            let (status, _) = get(&d, k).await;
            assert_eq!(status, StatusCode::OK);
        }
        d.stop().await;
    }
}
