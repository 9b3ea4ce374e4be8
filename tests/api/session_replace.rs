//! `PUT /v1/sessions/{key}` (Django's whole-session `save()`), `ETag` / `If-Match`, absolute
//! expiry and exact data, driven over HTTP as a careless or hostile backend would: stale and
//! forged tags, racing writers, dead sessions, past moments, odd numbers and key orders.

use crate::common;

use common::daemon::{API_KEY, TestDaemon};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A request with a raw JSON body and optional `If-Match`; returns status, `ETag` and body text.
async fn put(
    d: &TestDaemon,
    key: &str,
    body: &str,
    tag: Option<&str>,
) -> (StatusCode, String, String) {
    let mut req = d
        .http
        .put(d.url(&format!("/v1/sessions/{key}")))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = tag {
        req = req.header("if-match", t);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, etag, resp.text().await.unwrap())
}

/// GET as raw text, so key order is seen exactly as sent.
async fn get(d: &TestDaemon, key: &str) -> (StatusCode, String, String) {
    let resp = d
        .http
        .get(d.url(&format!("/v1/sessions/{key}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, etag, resp.text().await.unwrap())
}

async fn create(d: &TestDaemon, body: Value) -> (String, String) {
    let resp = d
        .http
        .post(d.url("/v1/sessions"))
        .bearer_auth(API_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let v: Value = resp.json().await.unwrap();
    (v["key"].as_str().unwrap().to_owned(), etag)
}

/// The `"data"` object of a session answer, as the raw text the daemon wrote.
fn data_text(body: &str) -> String {
    let start = body.find("\"data\":").expect("data in answer") + 7;
    let mut depth = 0;
    for (i, c) in body[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return body[start..=start + i].to_owned();
                }
            }
            _ => {}
        }
    }
    panic!("unterminated data in {body}")
}

fn error_of(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const ORDERED: &str =
    r#"{"zz":1,"a":{"y":0.1,"b":[1.5,2]},"_session_expiry":"2030-01-01T00:00:00","mm":null}"#;

on_both_stores! {
    async fn put_replaces_everything_and_keeps_key_order(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let (key, tag) = create(&d, json!({"data": {"old": 1}})).await;
        assert_eq!(tag, "\"v1\"");
        let body = format!(r#"{{"data":{ORDERED},"expiry":300}}"#);
        let (status, tag, answer) = put(&d, &key, &body, None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(tag, "\"v2\"");
        assert_eq!(data_text(&answer), ORDERED, "stored as sent, order and numbers");
        let (status, tag, answer) = get(&d, &key).await;
        assert_eq!((status, tag.as_str()), (StatusCode::OK, "\"v2\""));
        assert_eq!(data_text(&answer), ORDERED);
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["expiry"], json!(300));
        assert!(v["data"].get("old").is_none(), "a replace drops what it does not name");
    }

    async fn put_never_creates_or_revives(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let body = r#"{"data":{"a":1},"expiry":"default"}"#;
        let forged = "a".repeat(32);
        for key in [forged.as_str(), "short"] {
            let (status, _, answer) = put(&d, key, body, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{key}: {answer}");
            assert_eq!(error_of(&answer), "session_not_found");
        }
        let (key, _) = create(&d, json!({})).await;
        let (status, _) = d.api(Method::POST, &format!("/v1/sessions/{key}/flush"), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, answer) = put(&d, &key, body, Some("*")).await;
        assert_eq!((status, error_of(&answer).as_str()), (StatusCode::NOT_FOUND, "session_not_found"));
        assert_eq!(get(&d, &key).await.0, StatusCode::NOT_FOUND, "nothing was created");
    }

    async fn stale_forged_and_racing_if_match(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let (key, v1) = create(&d, json!({"data": {"n": 0}})).await;
        let body = |n: u32| format!(r#"{{"data":{{"n":{n}}},"expiry":"default"}}"#);
        let (status, v2, _) = put(&d, &key, &body(1), Some(&v1)).await;
        assert_eq!((status, v2.as_str()), (StatusCode::OK, "\"v2\""));
        for tag in [v1.as_str(), "\"v3\"", "v2", "W/\"v2\"", "\"v2\", \"v3\"", "\"v-1\"",
                    "\"v99999999999999999999\"", "", "\"2\""] {
            let (status, _, answer) = put(&d, &key, &body(9), Some(tag)).await;
            assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{tag}: {answer}");
            assert_eq!(error_of(&answer), "version_mismatch");
        }
        let v: Value = serde_json::from_str(&get(&d, &key).await.2).unwrap();
        assert_eq!(v["data"]["n"], 1, "no refused write landed");

        // Eight writers that all read v2: exactly one wins, the rest get 412.
        let mut racers = Vec::new();
        for n in 10..18 {
            let (http, url, b, tag) = (d.http.clone(), d.url(&format!("/v1/sessions/{key}")), body(n), v2.clone());
            racers.push(tokio::spawn(async move {
                http.put(url).bearer_auth(API_KEY).header("content-type", "application/json")
                    .header("if-match", tag).body(b).send().await.unwrap().status()
            }));
        }
        let mut codes = Vec::new();
        for r in racers {
            codes.push(r.await.unwrap());
        }
        assert_eq!(codes.iter().filter(|c| **c == StatusCode::OK).count(), 1, "{codes:?}");
        assert!(codes.iter().all(|c| *c == StatusCode::OK || *c == StatusCode::PRECONDITION_FAILED));
        assert_eq!(get(&d, &key).await.1, "\"v3\"");
        // A per-name write moves the version too, so a tag read before it goes stale.
        let (status, _) = d.api(Method::PUT, &format!("/v1/sessions/{key}/data/x"), Some(json!({"value": 1}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(put(&d, &key, &body(1), Some("\"v3\"")).await.0, StatusCode::PRECONDITION_FAILED);
    }

    async fn absolute_expiry_on_every_door(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let (key, _) = create(&d, json!({"expiry": {"at": "2999-01-01T00:00:00.250+02:00"}})).await;
        let v: Value = serde_json::from_str(&get(&d, &key).await.2).unwrap();
        assert_eq!(v["expiry"], json!({"at": "2998-12-31T22:00:00.250Z"}));
        assert_eq!(v["expires_at"], "2998-12-31T22:00:00Z");

        let past = r#"{"data":{"a":1},"expiry":{"at":"2020-01-01T00:00:00Z"}}"#;
        let (status, _, answer) = put(&d, &key, past, None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["max_age"], 0, "{answer}");
        assert!(v["set_cookie"].as_str().unwrap().contains("Max-Age=0"));
        assert_eq!(get(&d, &key).await.0, StatusCode::NOT_FOUND, "dead at once");

        let (born_dead, _) = create(&d, json!({"expiry": {"at": "1999-12-31T23:59:59Z"}})).await;
        assert_eq!(get(&d, &born_dead).await.0, StatusCode::NOT_FOUND);
        let (k3, _) = create(&d, json!({})).await;
        let (status, _) = d.api(Method::PUT, &format!("/v1/sessions/{k3}/expiry"),
            Some(json!({"expiry": {"at": "2001-01-01T00:00:00Z"}}))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(get(&d, &k3).await.0, StatusCode::NOT_FOUND);

        let (k4, _) = create(&d, json!({})).await;
        for bad in [r#"{"at":"2030-01-01T00:00:00"}"#, r#"{"at":"2030-02-30T00:00:00Z"}"#,
                    r#"{"at":1893456000}"#, r#"{"at":"2030-01-01T00:00:00Z","idle":5}"#,
                    r#"{"at":"1969-12-31T23:59:59Z"}"#, r#"{"until":"2030-01-01T00:00:00Z"}"#, "-5"] {
            let (status, _, answer) = put(&d, &k4, &format!(r#"{{"data":{{}},"expiry":{bad}}}"#), None).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {answer}");
        }
        assert_eq!(get(&d, &k4).await.0, StatusCode::OK, "refused bodies changed nothing");
    }

    async fn put_keeps_the_data_rules(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| c.session.max_data_bytes = 200).await else { return };
        let (key, _) = create(&d, json!({"data": {"keep": 1}})).await;
        let long = "n".repeat(257);
        for bad in [
            r#"{"data":{"a\u0000":1},"expiry":"default"}"#.to_owned(),
            r#"{"data":{"":1},"expiry":"default"}"#.to_owned(),
            format!(r#"{{"data":{{"{long}":1}},"expiry":"default"}}"#),
            r#"{"data":{"a":18446744073709551616},"expiry":"default"}"#.to_owned(),
            r#"{"data":{"a":0.1000000000000000000001},"expiry":"default"}"#.to_owned(),
            r#"{"data":{"a":"x\u0000"},"expiry":"default"}"#.to_owned(),
            r#"{"data":{"a":1}}"#.to_owned(),
            r#"{"expiry":"default"}"#.to_owned(),
            r#"{"data":[1],"expiry":"default"}"#.to_owned(),
            r#"{"data":{},"expiry":"default","extra":1}"#.to_owned(),
        ] {
            let (status, _, answer) = put(&d, &key, &bad, None).await;
            assert!(status.is_client_error(), "{bad}: {status} {answer}");
            assert!(!error_of(&answer).is_empty(), "{bad}: {answer}");
        }
        let big = format!(r#"{{"data":{{"a":"{}"}},"expiry":"default"}}"#, "x".repeat(300));
        let (status, _, answer) = put(&d, &key, &big, None).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
        let (status, tag, answer) = get(&d, &key).await;
        assert_eq!((status, tag.as_str()), (StatusCode::OK, "\"v1\""));
        assert_eq!(data_text(&answer), r#"{"keep":1}"#, "nothing half-written");
        let (status, _, answer) = put(&d, &key, r#"{"data":{"f":1.50,"g":15e-1,"h":-0.0,"i":1e300},"expiry":"default"}"#, None).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(v["data"], json!({"f": 1.5, "g": 1.5, "h": -0.0, "i": 1e300}));
    }
}
