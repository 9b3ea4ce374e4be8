//! The seed application's routes (`/sms_send/`, `/sms_check/`) over real HTTP, on both stores:
//! the exact answers its clients expect, query and form parameters, the seed's error shape,
//! national numbers with a default region, and the switch that turns the routes off.

use crate::common;

use common::daemon::{Browser, TestDaemon, wrong_code as wrong};
use common::reply::Reply;
use reqwest::header::{CONTENT_TYPE, COOKIE, RETRY_AFTER, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const A: &str = "+8613800138000";
const A_Q: &str = "%2B8613800138000";
const B: &str = "+8613800138001";
const B_Q: &str = "%2B8613800138001";

const OK: &[u8] = br#"{"result": "OK"}"#;
const FALSE: &[u8] = br#"{"result": "False"}"#;

/// `GET path` with the browser's cookie.
async fn get(b: &mut Browser, path: &str) -> Reply {
    Reply::from(b.request(Method::GET, path, None).await).await
}

/// `POST path` with a form body, keeping the cookie the way `Browser` does.
async fn post_form(b: &mut Browser, path: &str, form: &str) -> Reply {
    let mut req = b
        .http
        .post(format!("{}{}", b.base, path))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some(c) = &b.cookie {
        req = req.header(COOKIE, format!("{}={c}", b.cookie_name));
    }
    let r = Reply::from(req.send().await.expect("request sent")).await;
    if let Some(c) = r.session_cookie() {
        b.cookie = (!c.is_empty()).then_some(c);
    }
    r
}

fn assert_send_ok(r: &Reply) {
    assert_eq!(r.status, StatusCode::OK, "{r:?} {}", r.text());
    assert_eq!(
        r.body,
        json!({ "Code": "OK", "Message": "OK" }),
        "{}",
        r.text()
    );
    assert_eq!(r.content_type(), Some("application/json"));
}

fn assert_check(r: &Reply, expected: &[u8]) {
    assert_eq!(r.status, StatusCode::OK, "{r:?} {}", r.text());
    assert_eq!(
        r.bytes,
        expected,
        "got {:?}, want {:?}",
        r.text(),
        String::from_utf8_lossy(expected)
    );
    assert_eq!(r.content_type(), Some("application/json"));
}

on_both_stores! {
    async fn seed_send_by_query_and_form(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else {
            return;
        };
        // GET with a trailing slash.
        let mut one = d.browser();
        let r = get(&mut one, &format!("/sms_send/?phone={A_Q}")).await;
        assert_send_ok(&r);
        let key = r.session_cookie().expect("a session cookie");
        assert_eq!(key.len(), 32, "{key}");
        let msgs = d.messages();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["to"], A);
        assert_eq!(msgs[0]["code"].as_str().unwrap().len(), 6);

        // GET without the slash.
        let mut two = d.browser();
        let r = get(&mut two, &format!("/sms_send?phone={B_Q}")).await;
        assert_send_ok(&r);
        assert!(r.session_cookie().is_some());
        assert_ne!(one.cookie, two.cookie);

        // POST with a form body, with and without the slash.
        let mut three = d.browser();
        let r = post_form(&mut three, "/sms_send/", "phone=%2B8613800138002").await;
        assert_send_ok(&r);
        assert!(r.session_cookie().is_some());
        let mut four = d.browser();
        let r = post_form(&mut four, "/sms_send", "phone=%2B8613800138003").await;
        assert_send_ok(&r);
        assert!(r.session_cookie().is_some());

        let to: Vec<String> = d
            .messages()
            .iter()
            .map(|m| m["to"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(to, [A, B, "+8613800138002", "+8613800138003"]);

        // Each browser's code approves in its own session, through the seed's check.
        let r = get(
            &mut one,
            &format!("/sms_check/?phone={A_Q}&code={}", d.code_for(A)),
        )
        .await;
        assert_check(&r, OK);
        let code = d.code_for("+8613800138002");
        let r = post_form(
            &mut three,
            "/sms_check/",
            &format!("phone=%2B8613800138002&code={code}"),
        )
        .await;
        assert_check(&r, OK);
        d.stop().await;
    }

    async fn seed_check_answers_exact_bytes(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        assert_send_ok(&get(&mut b, &format!("/sms_send/?phone={A_Q}")).await);
        let old = b.cookie.clone().unwrap();
        let code = d.code_for(A);

        let r = get(
            &mut b,
            &format!("/sms_check/?phone={A_Q}&code={}", wrong(&code)),
        )
        .await;
        assert_check(&r, FALSE);
        assert_eq!(b.cookie.as_deref(), Some(old.as_str()));

        let r = get(&mut b, &format!("/sms_check/?phone={A_Q}&code={code}")).await;
        assert_check(&r, OK);
        let new = r.session_cookie().expect("approval sets a new cookie");
        assert_ne!(new, old, "the key is cycled on approval");
        let (status, v) = d
            .api(Method::GET, &format!("/v1/sessions/{new}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["data"]["verified_phone"], A);
        assert!(v["data"]["verified_at"].is_string(), "{v}");
        let (status, _) = d
            .api(Method::GET, &format!("/v1/sessions/{old}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Unlike the seed, the session keeps its own lifetime (no set_expiry(300)).
        let age = v["max_age"].as_u64().unwrap();
        assert!(age > 1_209_000, "session lifetime was shortened: {v}");

        // Single use: the same code again is refused (the seed allowed reuse).
        let r = get(&mut b, &format!("/sms_check/?phone={A_Q}&code={code}")).await;
        assert_check(&r, FALSE);
        // The old cookie names nothing.
        let mut stale = d.browser();
        stale.cookie = Some(old);
        assert_check(
            &get(&mut stale, &format!("/sms_check/?phone={A_Q}&code={code}")).await,
            FALSE,
        );
        d.stop().await;
    }

    async fn seed_check_false_cases(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        assert_send_ok(&get(&mut b, &format!("/sms_send/?phone={A_Q}")).await);
        let code = d.code_for(A);

        // No session at all.
        let mut nobody = d.browser();
        let r = get(&mut nobody, &format!("/sms_check/?phone={A_Q}&code={code}")).await;
        assert_check(&r, FALSE);
        assert!(r.session_cookie().is_none(), "a check creates no session");

        // Missing or malformed parameters, in the session that has a live code. None of them
        // costs an attempt.
        for query in [
            String::new(),
            format!("?phone={A_Q}"),
            format!("?code={code}"),
            format!("?phone=&code={code}"),
            format!("?phone={A_Q}&code="),
            format!("?phone=123&code={code}"),
            format!("?phone=%2B86abc&code={code}"),
            format!("?phone=8613800138000&code={code}"),
            format!("?phone={A_Q}&code=abc"),
            format!("?phone={A_Q}&code=12"),
            format!("?phone={A_Q}&code=12345678901"),
        ] {
            let r = get(&mut b, &format!("/sms_check/{query}")).await;
            assert_check(&r, FALSE);
        }
        // The code is bound to its number: another number with A's code is refused.
        assert_check(
            &get(&mut b, &format!("/sms_check/?phone={B_Q}&code={code}")).await,
            FALSE,
        );

        // Wrong codes use up the attempts; then even the right code is refused.
        let bad = wrong(&code);
        for _ in 0..5 {
            assert_check(
                &get(&mut b, &format!("/sms_check/?phone={A_Q}&code={bad}")).await,
                FALSE,
            );
        }
        assert_check(
            &get(&mut b, &format!("/sms_check/?phone={A_Q}&code={code}")).await,
            FALSE,
        );

        // The same through the JSON API confirms the count: exhausted after exactly five.
        let r = b
            .post(
                "/v1/verifications/check",
                json!({ "phone": A, "code": code }),
            )
            .await;
        assert_eq!(r.1, json!({ "status": "max_attempts_reached" }));
        d.stop().await;
    }

    async fn seed_check_attempts_match_json_api(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        assert_send_ok(&get(&mut b, &format!("/sms_send/?phone={A_Q}")).await);
        let code = d.code_for(A);
        // Malformed input did not count, one real wrong code did.
        assert_check(
            &get(&mut b, &format!("/sms_check/?phone={A_Q}&code=abc")).await,
            FALSE,
        );
        assert_check(
            &get(&mut b, &format!("/sms_check/?phone={A_Q}")).await,
            FALSE,
        );
        assert_check(
            &get(
                &mut b,
                &format!("/sms_check/?phone={A_Q}&code={}", wrong(&code)),
            )
            .await,
            FALSE,
        );
        let (status, v) = b
            .post(
                "/v1/verifications/check",
                json!({ "phone": A, "code": wrong(&code) }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v, json!({ "status": "pending", "attempts_left": 3 }));
        // A code sent through the seed route approves through the seed route by POST.
        let r = post_form(&mut b, "/sms_check", &format!("phone={A_Q}&code={code}")).await;
        assert_check(&r, OK);
        assert!(r.session_cookie().is_some());
        d.stop().await;
    }

    async fn seed_check_post_form(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else {
            return;
        };
        let mut b = d.browser();
        assert_send_ok(&post_form(&mut b, "/sms_send/", &format!("phone={A_Q}")).await);
        let code = d.code_for(A);
        let old = b.cookie.clone();
        let r = post_form(
            &mut b,
            "/sms_check/",
            &format!("phone={A_Q}&code={}", wrong(&code)),
        )
        .await;
        assert_check(&r, FALSE);
        let r = post_form(&mut b, "/sms_check/", "phone=").await;
        assert_check(&r, FALSE);
        let r = post_form(&mut b, "/sms_check/", &format!("phone={A_Q}&code={code}")).await;
        assert_check(&r, OK);
        assert_ne!(b.cookie, old);
        // Query and form mixed: the seed read `request.GET` / `request.POST` alike.
        assert_send_ok(&post_form(&mut b, &format!("/sms_send/?phone={B_Q}"), "x=1").await);
        let code = d.code_for(B);
        let r = post_form(
            &mut b,
            &format!("/sms_check/?phone={B_Q}"),
            &format!("code={code}"),
        )
        .await;
        assert_check(&r, OK);
        d.stop().await;
    }

    async fn seed_send_errors_use_the_seed_shape(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else {
            return;
        };
        for query in [
            "?phone=123",
            "?phone=%2B0123456789",
            "?phone=%2B86abc",
            "?phone=8613800138000",
            "?phone=",
            "",
        ] {
            let mut b = d.browser();
            let r = get(&mut b, &format!("/sms_send/{query}")).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{query}: {}",
                r.text()
            );
            let v = r.body.clone();
            assert_eq!(v["Code"], "invalid_phone", "{query}: {v}");
            assert!(v["Message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
            assert_eq!(
                v.as_object().unwrap().len(),
                2,
                "only Code and Message: {v}"
            );
            assert!(r.session_cookie().is_none(), "no session for a bad number");
            let r = post_form(
                &mut b,
                "/sms_send/",
                &format!("x=1&{}", query.trim_start_matches('?')),
            )
            .await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{query}: {}",
                r.text()
            );
            assert_eq!(r.body["Code"], "invalid_phone");
        }
        // Other methods are refused.
        for path in ["/sms_send/", "/sms_check/"] {
            let r = Reply::from(d.http.put(d.url(path)).send().await.unwrap()).await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
            assert_eq!(
                r.headers.get("allow").map(|v| v.to_str().unwrap()),
                Some("GET, POST")
            );
        }
        assert!(d.messages().is_empty(), "{:?}", d.messages());

        // Cooldown.
        let mut b = d.browser();
        assert_send_ok(&get(&mut b, &format!("/sms_send/?phone={A_Q}")).await);
        let cookie = b.cookie.clone();
        let r = get(&mut b, &format!("/sms_send/?phone={A_Q}")).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
        let v = r.body;
        assert_eq!(v["Code"], "resend_too_soon", "{v}");
        assert!(v["Message"].is_string(), "{v}");
        let secs: u64 = r
            .headers
            .get(RETRY_AFTER)
            .expect("Retry-After")
            .to_str()
            .unwrap()
            .parse()
            .expect("integer Retry-After");
        assert!((1..=60).contains(&secs), "{secs}");
        assert_eq!(b.cookie, cookie);
        // The POST variant is throttled the same way.
        let r = post_form(&mut b, "/sms_send", &format!("phone={A_Q}")).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body["Code"], "resend_too_soon");
        assert_eq!(d.messages().len(), 1, "{:?}", d.messages());

        // Exhausted: the seed shape with too_many_attempts.
        let code = d.code_for(A);
        for _ in 0..5 {
            assert_check(
                &get(
                    &mut b,
                    &format!("/sms_check/?phone={A_Q}&code={}", wrong(&code)),
                )
                .await,
                FALSE,
            );
        }
        let r = get(&mut b, &format!("/sms_send/?phone={A_Q}")).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.body["Code"], "too_many_attempts");
        assert!(r.headers.get(RETRY_AFTER).is_some());
        assert_eq!(d.messages().len(), 1);

        // A form body with another content type is refused, nothing sent.
        let r = Reply::from(
            d.http
                .post(d.url("/sms_send/"))
                .header(CONTENT_TYPE, "text/plain")
                .body(format!("phone={B_Q}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text());
        assert_eq!(r.body["Code"], "unsupported_media_type");
        assert_eq!(d.messages().len(), 1);
        d.stop().await;
    }

    async fn seed_national_numbers_with_default_region(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            c.verification.default_region = "CN".parse().ok();
        })
        .await
        else {
            return;
        };
        const E164: &str = "+8618434288349";
        let mut b = d.browser();
        assert_send_ok(&get(&mut b, "/sms_send/?phone=18434288349").await);
        let msgs = d.messages();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["to"], E164);
        let code = d.code_for(E164);
        let r = get(
            &mut b,
            &format!("/sms_check/?phone=18434288349&code={code}"),
        )
        .await;
        assert_check(&r, OK);
        let key = r.session_cookie().unwrap();
        let (_, v) = d
            .api(Method::GET, &format!("/v1/sessions/{key}"), None)
            .await;
        assert_eq!(v["data"]["verified_phone"], E164, "stored in E.164: {v}");

        // National and international forms name the same verification.
        let mut two = d.browser();
        assert_send_ok(&post_form(&mut two, "/sms_send/", "phone=184+3428+8349").await);
        assert_eq!(d.messages().len(), 2);
        let code = d.code_for(E164);
        let r = get(
            &mut two,
            &format!("/sms_check/?phone=%2B8618434288349&code={code}"),
        )
        .await;
        assert_check(&r, OK);
        // The cooldown also follows the number, whatever its form.
        let mut three = d.browser();
        assert_send_ok(&get(&mut three, "/sms_send/?phone=%2B8618434288349").await);
        let r = get(&mut three, "/sms_send/?phone=18434288349").await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
        // Numbers invalid for the region are refused in the seed's shape.
        let r = get(&mut three, "/sms_send/?phone=12345").await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
        assert_eq!(r.body["Code"], "invalid_phone");
        assert_eq!(d.messages().len(), 3);
        d.stop().await;
    }

    async fn seed_routes_off_are_not_found(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| c.compat.seed_routes = false).await else {
            return;
        };
        let mut b = d.browser();
        for path in [
            format!("/sms_send/?phone={A_Q}"),
            format!("/sms_send?phone={A_Q}"),
            format!("/sms_check/?phone={A_Q}&code=123456"),
            format!("/sms_check?phone={A_Q}&code=123456"),
        ] {
            let r = get(&mut b, &path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
            assert_eq!(r.body["error"], "not_found", "{path}");
            assert!(r.session_cookie().is_none());
            let r = post_form(&mut b, &path, "x=1").await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}: {}", r.text());
        }
        assert!(d.messages().is_empty());
        assert!(b.cookie.is_none());
        // The JSON API is unaffected.
        let (status, _) = b.send_code(A).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        d.stop().await;
    }

    // The seed's routes are cookie-bound and know no API keys: an `Authorization` header,
    // valid or not, changes nothing.
    async fn seed_routes_ignore_authorization(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else {
            return;
        };
        for auth in ["Bearer wrong", "Bearer test-api-key-0123456789", "Basic abc"] {
            let resp = d
                .http
                .get(d.url("/sms_send/?phone=%2B8613800138000"))
                .header("authorization", auth)
                .send()
                .await
                .unwrap();
            let cookie = resp.headers().get(SET_COOKIE).map(|v| v.to_str().unwrap().to_owned());
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, StatusCode::OK, "{auth}: {body}");
            assert_eq!(body, json!({"Code": "OK", "Message": "OK"}));
            let cookie = cookie.expect("a new session for each cookieless call");
            let code = d.last_code("+8613800138000").unwrap();
            let resp = d
                .http
                .get(d.url(&format!("/sms_check/?phone=%2B8613800138000&code={code}")))
                .header("authorization", auth)
                .header(COOKIE, cookie.split(';').next().unwrap())
                .send()
                .await
                .unwrap();
            assert_eq!(resp.text().await.unwrap(), r#"{"result": "OK"}"#, "{auth}");
        }
    }
}
