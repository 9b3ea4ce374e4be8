//! `openapi.json` is the description generated from the code, it describes the routes the router
//! serves, and the daemon serves it.

use crate::common;

use common::daemon::TestDaemon;
use serde_json::Value;
use std::collections::BTreeSet;

const DOC: &str = include_str!("../../openapi.json");

fn document() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is JSON")
}

/// Each documented (method, path template) pair.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("`paths` is an object") {
        for (method, _) in item.as_object().expect("path items are objects") {
            if methods.contains(&method.as_str()) {
                documented.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    documented
}

/// The router has no list to compare with, so it is asked: every documented operation must
/// reach a handler (not the router's 404 or 405), and every other method on a documented path
/// must be the router's 405, whose `Allow` names exactly the documented methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_exactly_the_routes_the_router_serves() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented = documented(&doc);
    let d = TestDaemon::start(verifyd::config::Backend::Sqlite, |c| {
        c.compat.seed_routes = true;
        c.http.demo_page = true;
    })
    .await
    .unwrap();
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let url = d.url(
            &path
                .replace("{key}", "abcdefghijklmnopqrstuvwxyz012345")
                .replace("{name}", "cart")
                .replace("{id}", "0123456789abcdef")
                .replace("{provider}", "mock")
                .replace("{token}", "t"),
        );
        let mut allowed: Vec<&str> = documented
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.as_str())
            .collect();
        allowed.sort_unstable();
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let resp = d.http.request(m, &url).send().await.unwrap();
            let status = resp.status().as_u16();
            let allow = resp
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            let unrouted = body["error"] == "method_not_allowed"
                || (status == 404
                    && body["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("no route")));
            if allowed.contains(&method) {
                assert!(
                    !unrouted,
                    "{method} {path} is documented but not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is served but not documented: {body}"
                );
                let mut listed: Vec<String> = allow
                    .unwrap_or_default()
                    .split(", ")
                    .map(str::to_owned)
                    .collect();
                listed.sort_unstable();
                assert_eq!(listed, allowed, "{path}: Allow against the document");
            }
        }
    }
    d.stop().await;
}

/// The committed file is what the code generates, so that the clients built from it in CI and
/// the reviewers reading it see what the daemon serves.
#[test]
fn the_committed_file_is_current() {
    assert!(
        DOC == verifyd::http::openapi::document(),
        "openapi.json is not what the code generates; regenerate it with `{}`",
        verifyd::http::openapi::REGENERATE
    );
}

#[test]
fn every_operation_documents_its_answers() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap_or_else(|| {
                panic!("{method} {path} has no responses");
            });
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            assert!(
                responses.contains_key("413"),
                "{method} {path}: every route can answer 413"
            );
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_the_document() {
    let d = TestDaemon::start(verifyd::config::Backend::Sqlite, |_| {})
        .await
        .unwrap();
    let resp = d.http.get(d.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served: Value = resp.json().await.unwrap();
    assert_eq!(served, document());
    let resp = d.http.post(d.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"].to_str().unwrap(), "GET");
    d.stop().await;
}
