//! The browser-facing extras over plain HTTP: `GET /v1/session` (a browser reads the
//! verification facts of its own session, and nothing else) and the demo page at `GET /` with
//! its headers. `tests/browser/demo.rs` drives the same through a real browser.

use crate::common;

use base64::Engine;
use common::daemon::TestDaemon;
use reqwest::Method;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use verifyd::config::Backend;

const A: &str = "+8613800138000";

async fn own_session(d: &TestDaemon, cookie: Option<&str>) -> (u16, Value) {
    let mut req = d.http.get(d.url("/v1/session"));
    if let Some(c) = cookie {
        req = req.header(COOKIE, format!("sessionid={c}"));
    }
    let resp = req.send().await.unwrap();
    let (status, body) = common::daemon::into_json(resp).await;
    (status.as_u16(), body)
}

on_both_stores! {
    async fn own_session_shows_only_the_verification_facts(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let (status, body) = own_session(&d, None).await;
        assert_eq!((status, body["error"].as_str()), (404, Some("no_session")), "{body}");
        let forged = "a".repeat(32);
        assert_eq!(own_session(&d, Some(&forged)).await.0, 404);

        let mut b = d.browser();
        assert_eq!(b.send_code(A).await.0, 202);
        let before = b.cookie.clone().unwrap();
        assert_eq!(
            own_session(&d, Some(&before)).await,
            (200, json!({"verified_phone": null, "verified_at": null}))
        );
        // The backend keeps its own data in the same session: none of it reaches the browser.
        let (status, _) = d
            .api(Method::PUT, &format!("/v1/sessions/{before}/data/user_id"), Some(json!({"value": 42})))
            .await;
        assert_eq!(status, 200);

        let code = d.last_code(A).unwrap();
        assert_eq!(b.check_code(A, &code).await.1["status"], "approved");
        let after = b.cookie.clone().unwrap();
        assert_ne!(after, before, "approval cycles the key");
        let (status, body) = own_session(&d, Some(&after)).await;
        assert_eq!(status, 200, "{body}");
        let facts = body.as_object().unwrap();
        assert_eq!(facts.len(), 2, "{body}");
        assert_eq!(body["verified_phone"], A);
        let at = body["verified_at"].as_str().unwrap();
        assert!(at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T', "{at}");
        // The key from before approval names nothing any more.
        assert_eq!(own_session(&d, Some(&before)).await.0, 404);

        // An API key does not turn this into a backend route: without a cookie there is nothing.
        let resp = d.http.get(d.url("/v1/session")).bearer_auth(common::daemon::API_KEY).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let resp = d.http.post(d.url("/v1/session")).send().await.unwrap();
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()["allow"], "GET");
        d.stop().await;
    }
}

/// `'sha256-…'` of the text between `<tag>` and `</tag>`, computed here independently of the
/// server's own code.
fn csp_hash(page: &str, tag: &str) -> String {
    let start = page.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
    let end = page.find(&format!("</{tag}>")).unwrap();
    let digest = Sha256::digest(&page.as_bytes()[start..end]);
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_is_off_by_default() {
    let d = TestDaemon::start(Backend::Sqlite, |_| {}).await.unwrap();
    let resp = d.http.get(d.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_page_is_one_self_contained_page_under_a_strict_policy() {
    let d = TestDaemon::start(Backend::Sqlite, |c| c.http.demo_page = true)
        .await
        .unwrap();
    let resp = d.http.get(d.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(h[CACHE_CONTROL], "no-store");
    assert_eq!(h["x-content-type-options"], "nosniff");
    let csp = h["content-security-policy"].to_str().unwrap().to_owned();
    let page = resp.text().await.unwrap();

    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for expected in [
        "default-src 'none'".to_owned(),
        "connect-src 'self'".to_owned(),
        format!("script-src {}", csp_hash(&page, "script")),
        format!("style-src {}", csp_hash(&page, "style")),
        "frame-ancestors 'none'".to_owned(),
    ] {
        assert!(
            directives.contains(&expected.as_str()),
            "{expected} not in {csp}"
        );
    }
    assert!(!csp.contains("unsafe"), "{csp}");

    // What a person needs, reachable by label and announced by screen readers.
    for needle in [
        r#"<label for="phone">"#,
        r#"<label for="code">"#,
        r#"aria-live="polite""#,
        r#"name="viewport""#,
        "credentials: \"include\"",
        "/v1/session",
    ] {
        assert!(page.contains(needle), "the page lacks {needle}");
    }
    assert_eq!(d.http.head(d.url("/")).send().await.unwrap().status(), 405);
    d.stop().await;
}
