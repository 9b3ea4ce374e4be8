//! `POST /v1/verifications` and `POST /v1/verifications/check` end to end, over real HTTP, on
//! both stores: cookies, codes bound to session and phone, attempt counting, resend cooldown,
//! expiry, test numbers, input validation, the backend (API key) mode, forged cookies and races
//! between concurrent requests (in one daemon and across two daemons on one database).

use crate::common;

use common::daemon::{API_KEY, Browser, TestDaemon, wrong_code as wrong};
use common::reply::Reply;
use reqwest::header::{CONTENT_TYPE, COOKIE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use verifyd::config::Backend;

const A: &str = "+8613800138000";
const B: &str = "+8613800138001";
const C: &str = "+8613800138002";
const DEFAULT_AGE: u64 = 1_209_600;

async fn post(b: &mut Browser, path: &str, body: Value) -> Reply {
    Reply::from(b.request(Method::POST, path, Some(body)).await).await
}

async fn send(b: &mut Browser, phone: &str) -> Reply {
    post(b, "/v1/verifications", json!({ "phone": phone })).await
}

async fn check(b: &mut Browser, phone: &str, code: &str) -> Reply {
    post(
        b,
        "/v1/verifications/check",
        json!({ "phone": phone, "code": code }),
    )
    .await
}

/// A request built by hand: any content type, body bytes, extra headers.
async fn raw(
    d: &TestDaemon,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = d.http.post(d.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Reply::from(req.send().await.expect("request sent")).await
}

/// A JSON request with an arbitrary `Authorization` header (or none).
async fn with_auth(d: &TestDaemon, path: &str, auth: Option<&str>, body: Value) -> Reply {
    let mut req = d.http.post(d.url(path)).json(&body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    Reply::from(req.send().await.expect("request sent")).await
}

/// Messages the mock provider delivered to `phone`, oldest first.
fn messages_to(d: &TestDaemon, phone: &str) -> Vec<Value> {
    d.messages()
        .into_iter()
        .filter(|m| m["to"] == phone)
        .collect()
}

fn is_session_key(k: &str) -> bool {
    k.len() == 32
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A new session made through the backend API; returns its key.
async fn api_session(d: &TestDaemon, body: Option<Value>) -> String {
    let (status, v) = d.api(Method::POST, "/v1/sessions", body).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["key"].as_str().unwrap().to_owned()
}

/// The backend's view of a session (`GET /v1/sessions/{key}`).
async fn api_get(d: &TestDaemon, key: &str) -> (StatusCode, Value) {
    d.api(Method::GET, &format!("/v1/sessions/{key}"), None)
        .await
}

fn assert_not_found(r: &Reply) {
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{r:?}");
    assert_eq!(r.body["status"], "not_found", "{r:?}");
    assert_eq!(r.body["error"], "not_found", "{r:?}");
}

fn assert_pending(r: &Reply, attempts_left: u32) {
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(
        r.body,
        json!({ "status": "pending", "attempts_left": attempts_left }),
        "{r:?}"
    );
}

fn assert_approved(r: &Reply, phone: &str) {
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["status"], "approved", "{r:?}");
    assert_eq!(r.body["verified_phone"], phone, "{r:?}");
}

fn assert_error(r: &Reply, status: StatusCode, error: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["error"], error, "{r:?}");
    assert!(r.body["message"].is_string(), "{r:?}");
}

/// A session's expiry was left at the default age (give or take a few seconds of test time).
fn assert_default_age(v: &Value) {
    let age = v["max_age"]
        .as_u64()
        .unwrap_or_else(|| panic!("no max_age: {v}"));
    assert!(
        (DEFAULT_AGE - 30..=DEFAULT_AGE).contains(&age),
        "session lifetime changed: max_age {age} in {v}"
    );
    assert_eq!(v["expiry"], "default", "{v}");
}

/// One request that the send or check route must refuse before touching any state.
struct BadInput {
    name: String,
    path: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: StatusCode,
    error: &'static str,
}

/// Every bad request of `bad_input_is_refused_without_side_effects`, each named for failures:
/// broken or empty JSON, wrong content types, wrong fields, bad numbers and codes, big bodies.
fn bad_inputs() -> Vec<BadInput> {
    const JSON: Option<&str> = Some("application/json");
    const SEND: &str = "/v1/verifications";
    const CHECK: &str = "/v1/verifications/check";
    let mut cases = Vec::new();
    let mut case = |name: String, path, content_type, body: String, status, error| {
        cases.push(BadInput {
            name,
            path,
            content_type,
            body,
            status,
            error,
        });
    };
    for path in [SEND, CHECK] {
        // The body each route would accept, and one with `phone` replaced.
        let with_phone = |phone: Value| match path {
            SEND => json!({ "phone": phone }),
            _ => json!({ "phone": phone, "code": "123456" }),
        };
        let good = with_phone(json!(A)).to_string();
        for body in [r#"{"phone": "+8613800138000""#, "not json", "{", ""] {
            let name = format!("malformed JSON {body:?}");
            case(
                name,
                path,
                JSON,
                body.into(),
                StatusCode::BAD_REQUEST,
                "malformed_json",
            );
        }
        for ct in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            case(
                format!("content type {ct:?}"),
                path,
                ct,
                good.clone(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            );
        }
        // A content type with parameters is still JSON: the body is what is wrong.
        case(
            "JSON with a charset, not an object".into(),
            path,
            Some("application/json; charset=utf-8"),
            "[]".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        );
        for (name, body) in [
            (
                "unknown field",
                json!({ "phone": A, "code": "123456", "extra": 1 }),
            ),
            ("missing phone", json!({ "code": "123456" })),
            (
                "phone as a number",
                json!({ "phone": 8613800138000u64, "code": "123456" }),
            ),
            ("an array", json!([A])),
        ] {
            let body = body.to_string();
            let status = StatusCode::UNPROCESSABLE_ENTITY;
            case(name.into(), path, JSON, body, status, "invalid_field");
        }
        for phone in [
            "123",
            "+0123456789",
            "+86abc",
            "+1234567890123456",
            "",
            "8613800138000",
            "+1234567",
        ] {
            case(
                format!("phone {phone:?}"),
                path,
                JSON,
                with_phone(json!(phone)).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_phone",
            );
        }
        // Past the 16 KiB limit.
        let big = json!({ "phone": A, "pad": "x".repeat(17 * 1024) }).to_string();
        let status = StatusCode::PAYLOAD_TOO_LARGE;
        case(
            "17 KiB body".into(),
            path,
            JSON,
            big,
            status,
            "body_too_large",
        );
    }
    for code in ["abc", "12", "12345678901", "12 34", "１２３４５６"] {
        case(
            format!("code {code:?}"),
            CHECK,
            JSON,
            json!({ "phone": A, "code": code }).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_code",
        );
    }
    cases
}

async fn start(
    backend: Backend,
    tweak: impl FnOnce(&mut verifyd::config::Config),
) -> Option<TestDaemon> {
    TestDaemon::start(backend, tweak).await
}

on_both_stores! {
    async fn send_without_cookie_creates_session_and_sends_one_code(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        let r = send(&mut b, A).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        assert_eq!(
            r.body,
            json!({ "status": "pending", "expires_in": 300, "resend_in": 60 })
        );
        let cookies = r.set_cookies();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        let c = &cookies[0];
        let key = r.session_cookie().expect("sessionid cookie set");
        assert!(is_session_key(&key), "{c}");
        assert_eq!(b.cookie.as_deref(), Some(key.as_str()));
        let attrs: Vec<&str> = c.split(';').map(str::trim).collect();
        assert!(attrs.contains(&"HttpOnly"), "{c}");
        assert!(attrs.contains(&"SameSite=Lax"), "{c}");
        assert!(attrs.contains(&"Path=/"), "{c}");
        assert!(!attrs.contains(&"Secure"), "cookie_secure = false: {c}");
        let max_age: u64 = attrs
            .iter()
            .find_map(|a| a.strip_prefix("Max-Age="))
            .expect("Max-Age")
            .parse()
            .unwrap();
        assert!((DEFAULT_AGE - 30..=DEFAULT_AGE).contains(&max_age), "{c}");

        let msgs = d.messages();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["to"], A);
        let code = msgs[0]["code"].as_str().unwrap();
        assert_eq!(code.len(), 6, "{code}");
        assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        assert_eq!(
            msgs[0]["text"],
            format!("Your verification code is {code}. It expires in 5 minutes.")
        );

        // The session exists, keeps its default lifetime and holds no code in its data.
        let (status, v) = api_get(&d, &key).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_default_age(&v);
        assert!(
            !v["data"].to_string().contains(code),
            "code leaked into session data: {v}"
        );

        // A second send in the same session (another number) reuses the session.
        let r = send(&mut b, B).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        if let Some(again) = r.session_cookie() {
            assert_eq!(again, key, "a live session must not be replaced");
        }
        assert_eq!(b.cookie.as_deref(), Some(key.as_str()));
        assert_eq!(d.messages().len(), 2);
        assert_eq!(messages_to(&d, B).len(), 1);
        d.stop().await;
    }

    async fn secure_cookie_when_configured(backend: Backend) {
        let Some(d) = start(backend, |c| c.session.cookie_secure = true).await else {
            return;
        };
        let mut b = d.browser();
        let r = send(&mut b, A).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        let cookies = r.set_cookies();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        let attrs: Vec<&str> = cookies[0].split(';').map(str::trim).collect();
        assert!(attrs.contains(&"Secure"), "{cookies:?}");
        assert!(attrs.contains(&"HttpOnly"), "{cookies:?}");
        assert!(attrs.contains(&"SameSite=Lax"), "{cookies:?}");
        // The approval's new cookie is Secure too.
        let code = d.code_for(A);
        let r = check(&mut b, A, &code).await;
        assert_approved(&r, A);
        let cookies = r.set_cookies();
        assert_eq!(cookies.len(), 1, "{cookies:?}");
        assert!(
            cookies[0].split(';').map(str::trim).any(|a| a == "Secure"),
            "{cookies:?}"
        );
        d.stop().await;
    }

    async fn code_length_follows_config(backend: Backend) {
        for len in [4usize, 8, 10] {
            let Some(d) = start(backend, |c| c.verification.code_length = len).await else {
                return;
            };
            let mut b = d.browser();
            let r = send(&mut b, A).await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
            let code = d.code_for(A);
            assert_eq!(code.len(), len, "{code}");
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
            assert!(d.messages()[0]["text"].as_str().unwrap().contains(&code));
            assert_pending(&check(&mut b, A, &wrong(&code)).await, 4);
            assert_approved(&check(&mut b, A, &code).await, A);
            d.stop().await;
        }
    }

    async fn right_code_approves_cycles_key_and_records_phone(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.status, StatusCode::ACCEPTED);
        let old = b.cookie.clone().expect("cookie after send");
        // Data stored before the approval survives the key change (Django's cycle_key).
        let (status, v) = d
            .api(
                Method::PUT,
                &format!("/v1/sessions/{old}/data/cart"),
                Some(json!({ "value": [1, 2, 3] })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let (_, before) = api_get(&d, &old).await;
        assert_default_age(&before);
        assert!(before["data"].get("verified_phone").is_none(), "{before}");

        let code = d.code_for(A);
        let r = check(&mut b, A, &code).await;
        assert_approved(&r, A);
        assert!(
            r.body.get("session").is_none(),
            "browsers get the key as a cookie: {r:?}"
        );
        let new = r.session_cookie().expect("approval sets a new cookie");
        assert!(is_session_key(&new), "{new}");
        assert_ne!(new, old, "the key must be cycled on approval");
        assert_eq!(b.cookie.as_deref(), Some(new.as_str()));
        let c = &r.set_cookies()[0];
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax"), "{c}");

        // The old key names nothing any more.
        let (status, v) = api_get(&d, &old).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
        assert_eq!(v["error"], "session_not_found");
        let mut stale = d.browser();
        stale.cookie = Some(old.clone());
        assert_not_found(&check(&mut stale, A, &code).await);

        // The new key carries the verified number, the time and the earlier data.
        let (status, v) = api_get(&d, &new).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["verified_phone"], A, "{v}");
        let at = v["data"]["verified_at"].as_str().expect("verified_at");
        assert!(
            at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
            "verified_at is not RFC 3339 UTC: {at}"
        );
        assert_eq!(v["data"]["cart"], json!([1, 2, 3]), "{v}");
        assert_default_age(&v);

        // A code is good once: the same code again in the new session finds nothing.
        assert_not_found(&check(&mut b, A, &code).await);
        // And the session is still the same one afterwards.
        let (status, v) = api_get(&d, &new).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["verified_phone"], A);
        d.stop().await;
    }

    async fn approval_keeps_the_session_expiry_policy(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        // Idle(600): sending and approving keep it (Django's cycle_key keeps the expiry).
        let idle = api_session(&d, Some(json!({ "expiry": 600 }))).await;
        let mut b = d.browser();
        b.cookie = Some(idle.clone());
        assert_eq!(send(&mut b, A).await.status, StatusCode::ACCEPTED);
        let (_, v) = api_get(&d, &idle).await;
        assert_eq!(v["expiry"], 600, "{v}");
        let r = check(&mut b, A, &d.code_for(A)).await;
        assert_approved(&r, A);
        let c = &r.set_cookies()[0];
        let age: u64 = c
            .split(';')
            .map(str::trim)
            .find_map(|a| a.strip_prefix("Max-Age="))
            .unwrap_or_else(|| panic!("Max-Age missing: {c}"))
            .parse()
            .unwrap();
        assert!((590..=600).contains(&age), "{c}");
        let (status, v) = api_get(&d, b.cookie.as_deref().unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["expiry"], 600, "{v}");
        assert!((590..=600).contains(&v["max_age"].as_u64().unwrap()), "{v}");

        // A browser-session cookie (expiry 0) stays one: no Max-Age on the new cookie.
        let browser_only = api_session(&d, Some(json!({ "expiry": 0 }))).await;
        let mut b = d.browser();
        b.cookie = Some(browser_only.clone());
        assert_eq!(send(&mut b, B).await.status, StatusCode::ACCEPTED);
        let r = check(&mut b, B, &d.code_for(B)).await;
        assert_approved(&r, B);
        let c = &r.set_cookies()[0];
        assert!(
            !c.contains("Max-Age"),
            "browser-session cookie got a Max-Age: {c}"
        );
        assert!(!c.contains("Expires"), "{c}");
        let (_, v) = api_get(&d, b.cookie.as_deref().unwrap()).await;
        assert_eq!(v["expiry"], 0, "{v}");
        d.stop().await;
    }

    async fn input_is_normalised_before_use(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        // Grouped digits and a locale are accepted; the message goes to the E.164 number.
        let r = post(
            &mut b,
            "/v1/verifications",
            json!({ "phone": " +86 138-0013-8000 ", "locale": "zh-CN" }),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        assert_eq!(messages_to(&d, A).len(), 1, "{:?}", d.messages());
        // The cooldown is per number, not per spelling of it.
        let r = send(&mut b, A).await;
        assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "resend_too_soon");
        // An over-long locale is ignored rather than refused.
        let r = post(
            &mut b,
            "/v1/verifications",
            json!({ "phone": B, "locale": "x".repeat(100) }),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        // Another spelling of the number and a code with surrounding spaces approve.
        let code = d.code_for(A);
        let r = check(&mut b, "+86 13800138000", &format!(" {code} ")).await;
        assert_approved(&r, A);
        d.stop().await;
    }

    async fn wrong_codes_count_down_then_exhaust(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.status, StatusCode::ACCEPTED);
        let code = d.code_for(A);
        let bad = wrong(&code);
        for left in (1..=4).rev() {
            assert_pending(&check(&mut b, A, &bad).await, left);
        }
        let r = check(&mut b, A, &bad).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body, json!({ "status": "max_attempts_reached" }));
        // Now even the right code is refused.
        let r = check(&mut b, A, &code).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body, json!({ "status": "max_attempts_reached" }));
        assert!(
            r.session_cookie().is_none(),
            "no key change without approval: {r:?}"
        );

        // No new code while exhausted.
        let r = send(&mut b, A).await;
        assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
        let secs = r.retry_after();
        assert!(
            (280..=300).contains(&secs),
            "Retry-After {secs}: until the code expires"
        );
        assert_eq!(d.messages().len(), 1, "nothing may be sent while exhausted");
        let r = check(&mut b, A, &code).await;
        assert_eq!(r.body, json!({ "status": "max_attempts_reached" }));

        // Another number in the same session is not affected.
        assert_eq!(send(&mut b, B).await.status, StatusCode::ACCEPTED);
        assert_approved(&check(&mut b, B, &d.code_for(B)).await, B);
        d.stop().await;
    }

    async fn code_is_bound_to_phone_and_session(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let mut one = d.browser();
        assert_eq!(send(&mut one, A).await.status, StatusCode::ACCEPTED);
        let code_a = d.code_for(A);

        // Same session, other number: B has no verification at all.
        assert_not_found(&check(&mut one, B, &code_a).await);

        // Another browser with a session of its own (for a different number): A's code is
        // unknown there.
        let mut two = d.browser();
        assert_eq!(send(&mut two, C).await.status, StatusCode::ACCEPTED);
        assert_ne!(one.cookie, two.cookie);
        assert_not_found(&check(&mut two, A, &code_a).await);
        // A browser without any session.
        let mut three = d.browser();
        assert_not_found(&check(&mut three, A, &code_a).await);
        assert!(three.cookie.is_none(), "a check must not create a session");

        // A fourth browser that also asked for a code for A: the first browser's code is wrong
        // there (unless both codes happen to coincide, one chance in a million).
        let mut four = d.browser();
        assert_eq!(send(&mut four, A).await.status, StatusCode::ACCEPTED);
        let code_a4 = d.code_for(A);
        if code_a4 != code_a {
            assert_pending(&check(&mut four, A, &code_a).await, 4);
        }

        // None of this disturbed the first browser's verification.
        assert_approved(&check(&mut one, A, &code_a).await, A);
        assert_approved(&check(&mut four, A, &code_a4).await, A);
        d.stop().await;
    }

    async fn resend_within_cooldown_is_refused(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.status, StatusCode::ACCEPTED);
        let cookie = b.cookie.clone();
        let code = d.code_for(A);
        let r = send(&mut b, A).await;
        assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "resend_too_soon");
        let secs = r.retry_after();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
        assert_eq!(b.cookie, cookie, "the session stays");
        assert_eq!(d.messages().len(), 1, "a refused resend sends nothing");
        // The refused resend changed nothing: the first code still works.
        assert_approved(&check(&mut b, A, &code).await, A);
        d.stop().await;
    }

    async fn resend_after_interval_issues_new_code_and_keeps_attempts(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.ttl = 30;
            c.verification.resend_interval = 1;
            // `same_code` resends are tested in api_easy_codes.rs.
            c.verification.resend = verifyd::config::ResendMode::NewCode;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        let r = send(&mut b, A).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        assert_eq!(
            r.body,
            json!({ "status": "pending", "expires_in": 30, "resend_in": 1 })
        );
        let first = d.code_for(A);
        let bad = wrong(&first);
        assert_pending(&check(&mut b, A, &bad).await, 4);
        assert_pending(&check(&mut b, A, &bad).await, 3);
        let r = send(&mut b, A).await;
        assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "resend_too_soon");
        assert_eq!(r.retry_after(), 1);

        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = send(&mut b, A).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        let msgs = messages_to(&d, A);
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        let second = d.code_for(A);
        // The wrong-attempt count carried over: the next wrong code leaves 2. The old code is
        // such a wrong code (unless the new one happens to be equal to it).
        let next_wrong = if second != first {
            first.clone()
        } else {
            wrong(&second)
        };
        assert_pending(&check(&mut b, A, &next_wrong).await, 2);
        assert_approved(&check(&mut b, A, &second).await, A);
        d.stop().await;
    }

    async fn expired_code_never_approves(backend: Backend) {
        let Some(d) = start(backend, |c| {
            c.verification.ttl = 2;
            c.verification.resend_interval = 1;
            // Many wrong codes from one network: its lock-out is not the subject here.
            c.per_phone.network_max_failed_checks = 0;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        let r = send(&mut b, A).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        assert_eq!(r.body["expires_in"], 2);
        let code = d.code_for(A);
        // A second browser exhausts its code for B before the time runs out.
        let mut two = d.browser();
        assert_eq!(send(&mut two, B).await.status, StatusCode::ACCEPTED);
        let code_b = d.code_for(B);
        for _ in 0..5 {
            check(&mut two, B, &wrong(&code_b)).await;
        }
        let r = send(&mut two, B).await;
        assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
        assert!((1..=2).contains(&r.retry_after()), "{r:?}");
        tokio::time::sleep(Duration::from_millis(2300)).await;
        for attempt in [code.clone(), wrong(&code), code.clone()] {
            let r = check(&mut b, A, &attempt).await;
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            assert_eq!(r.body, json!({ "status": "expired" }));
            assert!(r.session_cookie().is_none(), "{r:?}");
        }
        // A fresh send starts a new verification with a full set of attempts.
        assert_eq!(send(&mut b, A).await.status, StatusCode::ACCEPTED);
        let fresh = d.code_for(A);
        assert_eq!(messages_to(&d, A).len(), 2);
        assert_pending(&check(&mut b, A, &wrong(&fresh)).await, 4);
        assert_approved(&check(&mut b, A, &fresh).await, A);

        // Exhaustion lasts only as long as the code would have: once it expired, the check
        // says so and a new send starts over with every attempt.
        let r = check(&mut two, B, &code_b).await;
        assert_eq!(r.body, json!({ "status": "expired" }), "{r:?}");
        assert_eq!(send(&mut two, B).await.status, StatusCode::ACCEPTED);
        let fresh_b = d.code_for(B);
        assert_eq!(messages_to(&d, B).len(), 2);
        assert_pending(&check(&mut two, B, &wrong(&fresh_b)).await, 4);
        assert_approved(&check(&mut two, B, &fresh_b).await, B);
        d.stop().await;
    }

    async fn test_numbers_send_nothing_but_follow_the_rules(backend: Backend) {
        const T: &str = "+12015550123";
        let Some(d) = start(backend, |c| {
            c.verification
                .test_numbers
                .insert(T.into(), "000000".into());
            c.per_phone.network_max_failed_checks = 0;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        let r = send(&mut b, T).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        assert_eq!(
            r.body,
            json!({ "status": "pending", "expires_in": 300, "resend_in": 60 })
        );
        assert!(b.cookie.is_some());
        assert!(
            d.messages().is_empty(),
            "a test number gets no message: {:?}",
            d.messages()
        );
        // Cooldown applies.
        let r = send(&mut b, T).await;
        assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "resend_too_soon");
        // Wrong codes count.
        assert_pending(&check(&mut b, T, "123456").await, 4);
        assert_pending(&check(&mut b, T, "000001").await, 3);
        let old = b.cookie.clone();
        let r = check(&mut b, T, "000000").await;
        assert_approved(&r, T);
        assert_ne!(b.cookie, old, "key cycled");
        assert!(d.messages().is_empty());
        // Single use, like any code.
        assert_not_found(&check(&mut b, T, "000000").await);

        // The fixed code is only for that number: other numbers get real codes and messages.
        let mut other = d.browser();
        assert_eq!(send(&mut other, A).await.status, StatusCode::ACCEPTED);
        assert_eq!(d.messages().len(), 1);
        let code = d.code_for(A);
        if code != "000000" {
            assert_pending(&check(&mut other, A, "000000").await, 4);
        }

        // Exhaustion applies to test numbers too.
        let mut third = d.browser();
        assert_eq!(send(&mut third, T).await.status, StatusCode::ACCEPTED);
        for left in (1..=4).rev() {
            assert_pending(&check(&mut third, T, "999999").await, left);
        }
        assert_eq!(
            check(&mut third, T, "999999").await.body,
            json!({ "status": "max_attempts_reached" })
        );
        assert_eq!(
            check(&mut third, T, "000000").await.body,
            json!({ "status": "max_attempts_reached" })
        );
        d.stop().await;
    }

    async fn bad_input_is_refused_without_side_effects(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let no_cookie = |r: &Reply| {
            assert!(
                r.set_cookies().is_empty(),
                "no session for bad input: {r:?}"
            );
        };
        for case in bad_inputs() {
            let r = raw(&d, case.path, case.content_type, case.body, &[]).await;
            let what = format!("{} ({})", case.name, case.path);
            assert_eq!(r.status, case.status, "{what}: {r:?}");
            assert_eq!(r.body["error"], case.error, "{what}: {r:?}");
            assert!(r.body["message"].is_string(), "{what}: {r:?}");
            assert!(r.set_cookies().is_empty(), "{what}: no session for bad input: {r:?}");
        }
        // Wrong methods.
        for path in ["/v1/verifications", "/v1/verifications/check"] {
            for m in [Method::GET, Method::PUT, Method::DELETE] {
                let r =
                    Reply::from(d.http.request(m.clone(), d.url(path)).send().await.unwrap()).await;
                assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
                assert_eq!(
                    r.headers.get("allow").map(|v| v.to_str().unwrap()),
                    Some("POST"),
                    "{m} {path}"
                );
                no_cookie(&r);
            }
        }
        assert!(
            d.messages().is_empty(),
            "bad input sent something: {:?}",
            d.messages()
        );

        // In a live session, text that cannot be a code costs no attempt.
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.status, StatusCode::ACCEPTED);
        let code = d.code_for(A);
        for _ in 0..6 {
            let r = check(&mut b, A, "abc").await;
            assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_code");
        }
        assert_pending(&check(&mut b, A, &wrong(&code)).await, 4);
        // A bad number in a live session is refused without touching it.
        let r = send(&mut b, "+86abc").await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_phone");
        assert_eq!(d.messages().len(), 1);
        assert_approved(&check(&mut b, A, &code).await, A);
        d.stop().await;
    }

    async fn backend_mode_uses_explicit_sessions(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let bearer = format!("Bearer {API_KEY}");
        let key = api_session(&d, None).await;
        let r = with_auth(
            &d,
            "/v1/verifications",
            Some(&bearer),
            json!({ "phone": A, "session": key }),
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        // Backends also get the send's id, to follow its delivery (GET /v1/verifications/{id}).
        let id = r.body["id"].as_str().expect("a delivery id").to_owned();
        assert!(verifyd::delivery::is_id(&id), "{id}");
        assert_eq!(
            r.body,
            json!({ "status": "pending", "expires_in": 300, "resend_in": 60, "id": id })
        );
        assert!(r.set_cookies().is_empty(), "backends get no cookies: {r:?}");
        let code = d.code_for(A);
        assert_eq!(d.messages().len(), 1);

        let r = with_auth(
            &d,
            "/v1/verifications/check",
            Some(&bearer),
            json!({ "phone": A, "code": wrong(&code), "session": key }),
        )
        .await;
        assert_pending(&r, 4);
        assert!(r.set_cookies().is_empty(), "{r:?}");

        // A browser without the session does not see the verification.
        let mut stranger = d.browser();
        assert_not_found(&check(&mut stranger, A, &code).await);

        let r = with_auth(
            &d,
            "/v1/verifications/check",
            Some(&bearer),
            json!({ "phone": A, "code": code, "session": key }),
        )
        .await;
        assert_approved(&r, A);
        assert!(
            r.set_cookies().is_empty(),
            "backends get the key in the body: {r:?}"
        );
        let new = r.body["session"]
            .as_str()
            .expect("new session key")
            .to_owned();
        assert!(is_session_key(&new) && new != key, "{r:?}");
        let (status, v) = api_get(&d, &new).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["verified_phone"], A);
        assert!(v["data"]["verified_at"].is_string(), "{v}");
        assert_default_age(&v);
        let (status, _) = api_get(&d, &key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "old key must be gone");
        // The old key no longer works for the backend either.
        let r = with_auth(
            &d,
            "/v1/verifications/check",
            Some(&bearer),
            json!({ "phone": A, "code": code, "session": key }),
        )
        .await;
        assert_error(&r, StatusCode::NOT_FOUND, "session_not_found");

        // Missing `session` with an API key.
        for (path, body) in [
            ("/v1/verifications", json!({ "phone": B })),
            (
                "/v1/verifications/check",
                json!({ "phone": B, "code": "123456" }),
            ),
        ] {
            let r = with_auth(&d, path, Some(&bearer), body).await;
            assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field");
            assert!(r.set_cookies().is_empty());
        }

        let fresh = api_session(&d, None).await;
        // Wrong API key, malformed Authorization, other schemes.
        for auth in [
            "Bearer wrong-key".to_owned(),
            "Bearer ".to_owned(),
            format!("Basic {API_KEY}"),
            format!("bearer{API_KEY}"),
        ] {
            let r = with_auth(
                &d,
                "/v1/verifications",
                Some(&auth),
                json!({ "phone": B, "session": fresh }),
            )
            .await;
            assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(
                r.headers.get(WWW_AUTHENTICATE).map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{auth}: {r:?}"
            );
            assert!(r.set_cookies().is_empty());
            let r = with_auth(
                &d,
                "/v1/verifications/check",
                Some(&auth),
                json!({ "phone": B, "code": "123456", "session": fresh }),
            )
            .await;
            assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
            assert!(r.headers.get(WWW_AUTHENTICATE).is_some());
        }
        // Naming a session without an API key, even with a cookie.
        let r = with_auth(
            &d,
            "/v1/verifications",
            None,
            json!({ "phone": B, "session": fresh }),
        )
        .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        assert!(r.set_cookies().is_empty());
        let mut browser = d.browser();
        browser.cookie = Some(fresh.clone());
        let r = post(
            &mut browser,
            "/v1/verifications/check",
            json!({ "phone": B, "code": "123456", "session": fresh }),
        )
        .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        // Unknown or malformed sessions with an API key.
        for unknown in ["abcdefghijklmnopqrstuvwxyz012345", "not-a-key", ""] {
            let r = with_auth(
                &d,
                "/v1/verifications",
                Some(&bearer),
                json!({ "phone": B, "session": unknown }),
            )
            .await;
            assert_error(&r, StatusCode::NOT_FOUND, "session_not_found");
            let r = with_auth(
                &d,
                "/v1/verifications/check",
                Some(&bearer),
                json!({ "phone": B, "code": "123456", "session": unknown }),
            )
            .await;
            assert_error(&r, StatusCode::NOT_FOUND, "session_not_found");
        }
        assert!(
            messages_to(&d, B).is_empty(),
            "refused requests sent something"
        );
        d.stop().await;
    }

    async fn forged_garbled_or_expired_cookie_is_no_session(backend: Backend) {
        // Many fresh sessions send to one number here: the per-number quota is not the subject.
        let Some(d) = start(backend, |c| {
            c.per_phone.max_sends = 0;
            c.per_phone.hard_max_sends = 0;
            c.per_phone.network_max_sends = 0;
            c.per_phone.network_daily_max = 0;
        })
        .await
        else {
            return;
        };
        // A session that expired (1 s of idle time) and one that was flushed.
        let expired = api_session(&d, Some(json!({ "expiry": 1 }))).await;
        let flushed = api_session(&d, None).await;
        let (status, v) = d
            .api(Method::POST, &format!("/v1/sessions/{flushed}/flush"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, _) = api_get(&d, &expired).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "the session should have expired"
        );

        let forged = [
            "forged".to_owned(),
            "!!garbled%%".to_owned(),
            "A".repeat(32),
            "a".repeat(33),
            "abcdefghijklmnopqrstuvwxyz012345".to_owned(),
            "\"quoted\"".to_owned(),
            expired.clone(),
            flushed.clone(),
        ];
        let mut issued = Vec::new();
        let mut live = None;
        for (i, bad) in forged.iter().enumerate() {
            let cookie = format!("sessionid={bad}");
            // Check first: nothing to find.
            let body = json!({ "phone": A, "code": "123456" }).to_string();
            let r = raw(
                &d,
                "/v1/verifications/check",
                Some("application/json"),
                body,
                &[(COOKIE.as_str(), &cookie)],
            )
            .await;
            assert_not_found(&r);
            // Send: a new session and cookie, no error.
            let body = json!({ "phone": A }).to_string();
            let r = raw(
                &d,
                "/v1/verifications",
                Some("application/json"),
                body,
                &[(COOKIE.as_str(), &cookie)],
            )
            .await;
            assert_eq!(r.status, StatusCode::ACCEPTED, "cookie {bad:?}: {r:?}");
            let new = r
                .session_cookie()
                .unwrap_or_else(|| panic!("no new cookie for {bad:?}"));
            assert!(is_session_key(&new) && &new != bad, "{bad:?} -> {new:?}");
            assert!(!issued.contains(&new));
            issued.push(new.clone());
            assert_eq!(messages_to(&d, A).len(), i + 1);
            // The new cookie works.
            let mut b = d.browser();
            b.cookie = Some(new);
            assert_approved(&check(&mut b, A, &d.code_for(A)).await, A);
            live = b.cookie.clone();
        }
        // A valid key among forged cookies of the same name is found: no new session.
        // (The key the last approval issued.)
        let live = live.expect("a live session");
        let cookie = format!("sessionid=forged; other=1; sessionid={live}");
        let body = json!({ "phone": B }).to_string();
        let r = raw(
            &d,
            "/v1/verifications",
            Some("application/json"),
            body,
            &[(COOKIE.as_str(), &cookie)],
        )
        .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
        if let Some(c) = r.session_cookie() {
            assert_eq!(c, live, "the live session must be used: {r:?}");
        }
        let mut b = d.browser();
        b.cookie = Some(live.clone());
        assert_approved(&check(&mut b, B, &d.code_for(B)).await, B);
        // The expired and flushed sessions stay dead.
        for dead in [&expired, &flushed] {
            let (status, _) = api_get(&d, dead).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        d.stop().await;
    }

    async fn concurrent_right_checks_approve_exactly_once(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.status, StatusCode::ACCEPTED);
        let code = d.code_for(A);
        let old = b.cookie.clone().unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let mut b = b.clone();
                let code = code.clone();
                tokio::spawn(async move {
                    let r = check(&mut b, A, &code).await;
                    (r, b.cookie)
                })
            })
            .collect();
        let mut approved = Vec::new();
        for t in tasks {
            let (r, cookie) = t.await.unwrap();
            if r.body["status"] == "approved" {
                assert_approved(&r, A);
                approved.push(cookie.unwrap());
            } else {
                assert_not_found(&r);
            }
        }
        assert_eq!(approved.len(), 1, "exactly one approval: {approved:?}");
        assert_ne!(approved[0], old);
        let (status, v) = api_get(&d, &approved[0]).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["verified_phone"], A);
        let (status, _) = api_get(&d, &old).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        d.stop().await;
    }

    async fn concurrent_wrong_checks_are_all_counted(backend: Backend) {
        // 20 wrong codes for one number: the per-number lock-out is not the subject here.
        let Some(d) = start(backend, |c| {
            c.verification.max_attempts = 30;
            c.per_phone.max_failed_checks = 0;
            c.per_phone.network_max_failed_checks = 0;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(send(&mut b, A).await.status, StatusCode::ACCEPTED);
        let code = d.code_for(A);
        let bad = wrong(&code);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let mut b = b.clone();
                let bad = bad.clone();
                tokio::spawn(async move { check(&mut b, A, &bad).await })
            })
            .collect();
        let mut left = Vec::new();
        for t in tasks {
            let r = t.await.unwrap();
            assert_eq!(r.status, StatusCode::OK, "{r:?}");
            assert_eq!(r.body["status"], "pending", "{r:?}");
            left.push(r.body["attempts_left"].as_u64().expect("attempts_left"));
        }
        left.sort_unstable();
        assert_eq!(
            left,
            (10..=29).collect::<Vec<u64>>(),
            "each wrong try counted once"
        );
        // Exactly ten more wrong tries exhaust it.
        for n in (1..=9).rev() {
            assert_pending(&check(&mut b, A, &bad).await, n);
        }
        assert_eq!(
            check(&mut b, A, &bad).await.body,
            json!({ "status": "max_attempts_reached" })
        );
        assert_eq!(
            check(&mut b, A, &code).await.body,
            json!({ "status": "max_attempts_reached" })
        );
        d.stop().await;
    }

    async fn concurrent_sends_deliver_exactly_one_code(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let key = api_session(&d, None).await;
        let mut b = d.browser();
        b.cookie = Some(key.clone());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let mut b = b.clone();
                tokio::spawn(async move { send(&mut b, A).await })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            let r = t.await.unwrap();
            if r.status == StatusCode::ACCEPTED {
                accepted += 1;
            } else {
                assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "resend_too_soon");
                assert!(r.retry_after() >= 1);
            }
            if let Some(c) = r.session_cookie() {
                assert_eq!(c, key, "the session must not be replaced");
            }
        }
        assert_eq!(accepted, 1, "exactly one send wins");
        assert_eq!(d.messages().len(), 1, "{:?}", d.messages());
        assert_approved(&check(&mut b, A, &d.code_for(A)).await, A);
        d.stop().await;
    }

    async fn two_daemons_on_one_database_send_and_approve_once(backend: Backend) {
        let Some(d) = start(backend, |_| {}).await else {
            return;
        };
        let d2 = d.sibling().await;
        let key = api_session(&d, None).await;
        let mut b1 = d.browser();
        b1.cookie = Some(key.clone());
        let mut b2 = d2.browser();
        b2.cookie = Some(key.clone());

        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let mut b = if i % 2 == 0 { b1.clone() } else { b2.clone() };
                tokio::spawn(async move { send(&mut b, A).await })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            let r = t.await.unwrap();
            if r.status == StatusCode::ACCEPTED {
                accepted += 1;
            } else {
                assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "resend_too_soon");
            }
        }
        assert_eq!(accepted, 1, "exactly one send across both daemons");
        assert_eq!(d.messages().len(), 1, "{:?}", d.messages());
        let code = d.code_for(A);

        // One wrong try on each daemon: counted together (shared store and code key).
        assert_pending(&check(&mut b1, A, &wrong(&code)).await, 4);
        assert_pending(&check(&mut b2, A, &wrong(&code)).await, 3);

        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let mut b = if i % 2 == 0 { b1.clone() } else { b2.clone() };
                let code = code.clone();
                tokio::spawn(async move {
                    let r = check(&mut b, A, &code).await;
                    (r, b.cookie)
                })
            })
            .collect();
        let mut approved = Vec::new();
        for t in tasks {
            let (r, cookie) = t.await.unwrap();
            if r.body["status"] == "approved" {
                assert_approved(&r, A);
                approved.push(cookie.unwrap());
            } else {
                assert_not_found(&r);
            }
        }
        assert_eq!(
            approved.len(),
            1,
            "exactly one approval across both daemons"
        );
        for dd in [&d, &d2] {
            let (status, v) = api_get(dd, &approved[0]).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            assert_eq!(v["data"]["verified_phone"], A);
            let (status, _) = api_get(dd, &key).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        d2.stop().await;
        d.stop().await;
    }
}
