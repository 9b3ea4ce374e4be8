//! Session data the two stores could disagree on, sent as an attacker (or a careless backend)
//! would: U+0000 in names and nested values, integers beyond 64 bits, over-long names on every
//! route, data that outgrows `session.max_data_bytes` by one write or many (also racing), and
//! deeply nested JSON. Both stores must answer the same, with a 4xx and nothing half-written.

use crate::common;

use common::daemon::{API_KEY, TestDaemon};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use verifyd::config::Backend;

async fn start(backend: Backend, max_data_bytes: Option<usize>) -> Option<TestDaemon> {
    TestDaemon::start(backend, move |c| {
        if let Some(n) = max_data_bytes {
            c.session.max_data_bytes = n;
        }
    })
    .await
}

/// A request with a raw JSON body, as bytes: `json!` cannot write a 20-digit integer.
async fn raw(d: &TestDaemon, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = d
        .http
        .request(method, d.url(path))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    common::daemon::into_json(resp).await
}

async fn new_session(d: &TestDaemon, data: Value) -> String {
    let (status, s) = d
        .api(Method::POST, "/v1/sessions", Some(json!({ "data": data })))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    s["key"].as_str().unwrap().to_owned()
}

async fn data_of(d: &TestDaemon, key: &str) -> Value {
    let (status, s) = d
        .api(Method::GET, &format!("/v1/sessions/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    s["data"].clone()
}

fn path(key: &str, name: &str) -> String {
    let name = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("/v1/sessions/{key}/data/{name}")
}

fn assert_invalid(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {body}");
    assert_eq!(body["error"], "invalid_field", "{what}: {body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

fn assert_too_large(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{what}: {body}");
    assert_eq!(body["error"], "session_data_too_large", "{what}: {body}");
}

/// Bytes of the data as compact JSON: the measure `session.max_data_bytes` limits.
fn size(data: &Value) -> usize {
    serde_json::to_vec(data).unwrap().len()
}

/// `n` levels of arrays around `1`.
fn nested(n: usize) -> String {
    format!("{}1{}", "[".repeat(n), "]".repeat(n))
}

on_both_stores! {
    async fn nul_in_a_name_is_refused_on_every_route(backend: Backend) {
        let Some(d) = start(backend, None).await else { return };
        let (status, body) =
            raw(&d, Method::POST, "/v1/sessions", r#"{"data": {"a\u0000b": 1}}"#).await;
        assert_invalid(status, &body, "create");

        let key = new_session(&d, json!({"kept": true})).await;
        let name = "a\u{0}b";
        let (status, body) = d.api(Method::PUT, &path(&key, name), Some(json!({"value": 1}))).await;
        assert_invalid(status, &body, "put");
        let (status, body) = d.api(Method::GET, &path(&key, name), None).await;
        assert_invalid(status, &body, "get");
        let (status, body) = d.api(Method::DELETE, &path(&key, name), None).await;
        assert_invalid(status, &body, "delete");
        assert_eq!(data_of(&d, &key).await, json!({"kept": true}));
        d.stop().await;
    }

    async fn nul_in_a_nested_value_or_key_is_refused(backend: Backend) {
        let Some(d) = start(backend, None).await else { return };
        let bodies = [
            r#"{"data": {"cart": {"items": ["ok", "bad\u0000"]}}}"#,
            r#"{"data": {"cart": [{"k\u0000": 1}]}}"#,
        ];
        for body in bodies {
            let (status, answer) = raw(&d, Method::POST, "/v1/sessions", body).await;
            assert_invalid(status, &answer, body);
        }
        let key = new_session(&d, json!({"cart": [1]})).await;
        let puts = [
            r#"{"value": "\u0000"}"#,
            r#"{"value": {"a": {"b": [null, "x\u0000y"]}}}"#,
            r#"{"value": {"nul\u0000key": true}}"#,
        ];
        for body in puts {
            let (status, answer) = raw(&d, Method::PUT, &path(&key, "cart"), body).await;
            assert_invalid(status, &answer, body);
        }
        assert_eq!(data_of(&d, &key).await, json!({"cart": [1]}));
        d.stop().await;
    }

    async fn integers_beyond_64_bits_are_refused_and_64_bit_ones_are_exact(backend: Backend) {
        let Some(d) = start(backend, None).await else { return };
        let (status, body) = raw(
            &d,
            Method::POST,
            "/v1/sessions",
            r#"{"data": {"n": 123456789012345678901234567890}}"#,
        )
        .await;
        assert_invalid(status, &body, "create");

        let key = new_session(&d, json!({})).await;
        for body in [
            r#"{"value": 18446744073709551616}"#,
            r#"{"value": [1, -9223372036854775809]}"#,
            r#"{"value": {"deep": {"n": 99999999999999999999999}}}"#,
        ] {
            let (status, answer) = raw(&d, Method::PUT, &path(&key, "n"), body).await;
            assert_invalid(status, &answer, body);
        }
        assert_eq!(data_of(&d, &key).await, json!({}));

        // The extremes that do fit come back digit for digit, and digits in strings are data.
        let body = r#"{"value": [18446744073709551615, -9223372036854775808, "123456789012345678901234567890"]}"#;
        let (status, answer) = raw(&d, Method::PUT, &path(&key, "n"), body).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let text = d
            .http
            .get(d.url(&path(&key, "n")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(r#"[18446744073709551615,-9223372036854775808,"123456789012345678901234567890"]"#),
            "{text}"
        );
        d.stop().await;
    }

    async fn names_over_256_characters_are_refused_on_every_route(backend: Backend) {
        let Some(d) = start(backend, None).await else { return };
        let long = "n".repeat(257);
        let (status, body) = d
            .api(Method::POST, "/v1/sessions", Some(json!({"data": {long.clone(): 1}})))
            .await;
        assert_invalid(status, &body, "create");

        let key = new_session(&d, json!({})).await;
        let (status, body) = d.api(Method::PUT, &path(&key, &long), Some(json!({"value": 1}))).await;
        assert_invalid(status, &body, "put");
        let (status, body) = d.api(Method::GET, &path(&key, &long), None).await;
        assert_invalid(status, &body, "get");
        let (status, body) = d.api(Method::DELETE, &path(&key, &long), None).await;
        assert_invalid(status, &body, "delete");

        // 256 characters (512 bytes of UTF-8) pass on every route alike.
        let longest = "é".repeat(256);
        let key = new_session(&d, json!({longest.clone(): 1})).await;
        let (status, body) = d.api(Method::PUT, &path(&key, &longest), Some(json!({"value": 2}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = d.api(Method::GET, &path(&key, &longest), None).await;
        assert_eq!((status, &body["value"]), (StatusCode::OK, &json!(2)), "{body}");
        let (status, body) = d.api(Method::DELETE, &path(&key, &longest), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        d.stop().await;
    }

    async fn data_beyond_the_cap_is_413_on_create_and_put(backend: Backend) {
        let Some(d) = start(backend, Some(1024)).await else { return };
        let (status, body) = d
            .api(Method::POST, "/v1/sessions", Some(json!({"data": {"big": "x".repeat(1100)}})))
            .await;
        assert_too_large(status, &body, "create");

        let key = new_session(&d, json!({"a": "x".repeat(600)})).await;
        let (status, body) = d
            .api(Method::PUT, &path(&key, "b"), Some(json!({"value": "y".repeat(500)})))
            .await;
        assert_too_large(status, &body, "put of a second entry");
        assert_eq!(data_of(&d, &key).await, json!({"a": "x".repeat(600)}));

        // Replacing an entry counts its new size only: the same name may grow up to the cap.
        let (status, body) = d
            .api(Method::PUT, &path(&key, "a"), Some(json!({"value": "x".repeat(1000)})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, body) = d
            .api(Method::PUT, &path(&key, "a"), Some(json!({"value": "x".repeat(1020)})))
            .await;
        assert_too_large(status, &body, "growing one entry past the cap");
        let (status, body) = d.api(Method::PUT, &path(&key, "a"), Some(json!({"value": 1}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(data_of(&d, &key).await, json!({"a": 1}));
        d.stop().await;
    }

    async fn repeated_small_puts_stop_at_the_default_64_kib(backend: Backend) {
        let Some(d) = start(backend, None).await else { return };
        assert_eq!(d.config.session.max_data_bytes, 65_536);
        let key = new_session(&d, json!({})).await;
        let value = "v".repeat(15_000);
        let mut stored = 0;
        for i in 0..8 {
            let (status, body) = d
                .api(Method::PUT, &path(&key, &format!("k{i}")), Some(json!({"value": value})))
                .await;
            if status == StatusCode::OK {
                stored += 1;
                continue;
            }
            assert_too_large(status, &body, &format!("put {i}"));
            break;
        }
        assert_eq!(stored, 4, "four 15 kB entries fit in 64 KiB, a fifth does not");
        let data = data_of(&d, &key).await;
        assert_eq!(data.as_object().unwrap().len(), 4);
        assert!(size(&data) <= 65_536);
        d.stop().await;
    }

    async fn racing_puts_cannot_together_pass_the_cap(backend: Backend) {
        let Some(d) = start(backend, Some(1024)).await else { return };
        let key = new_session(&d, json!({})).await;
        let mut puts = Vec::new();
        for i in 0..24 {
            let (http, url) = (d.http.clone(), d.url(&path(&key, &format!("n{i:02}"))));
            puts.push(tokio::spawn(async move {
                http.put(url)
                    .bearer_auth(API_KEY)
                    .json(&json!({"value": "r".repeat(90)}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        let mut ok = 0;
        for p in puts {
            let status = p.await.unwrap();
            assert!(
                status == StatusCode::OK || status == StatusCode::PAYLOAD_TOO_LARGE,
                "{status}"
            );
            ok += usize::from(status == StatusCode::OK);
        }
        let data = data_of(&d, &key).await;
        assert!(size(&data) <= 1024, "{} bytes", size(&data));
        assert_eq!(data.as_object().unwrap().len(), ok, "every 200 was stored, nothing else");
        assert!(ok >= 9, "only {ok} of the puts that fit were stored");
        d.stop().await;
    }

    async fn deeply_nested_json_is_refused_cleanly(backend: Backend) {
        let Some(d) = start(backend, None).await else { return };
        let key = new_session(&d, json!({})).await;
        let (status, body) =
            raw(&d, Method::PUT, &path(&key, "deep"), &format!("{{\"value\": {}}}", nested(64))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let stored = data_of(&d, &key).await;
        assert_eq!(stored["deep"], serde_json::from_str::<Value>(&nested(64)).unwrap());

        let (status, body) =
            raw(&d, Method::PUT, &path(&key, "deeper"), &format!("{{\"value\": {}}}", nested(65))).await;
        assert_invalid(status, &body, "65 levels");
        let (status, body) = raw(
            &d,
            Method::POST,
            "/v1/sessions",
            &format!("{{\"data\": {{\"deeper\": {}}}}}", nested(65)),
        )
        .await;
        assert_invalid(status, &body, "65 levels on create");
        // Far beyond any parser's recursion limit: a clean 400, and the daemon carries on.
        let (status, body) =
            raw(&d, Method::PUT, &path(&key, "abyss"), &format!("{{\"value\": {}}}", nested(8000))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"], "malformed_json", "{body}");
        assert_eq!(data_of(&d, &key).await, stored);
        d.stop().await;
    }
}
