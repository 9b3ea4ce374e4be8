//! `openapi.json` describes exactly the routes the router serves, and the daemon serves it.

use crate::common;

use common::daemon::TestDaemon;
use serde_json::Value;
use std::collections::BTreeSet;
use verifyd::http::router::ALL_ROUTES;

const DOC: &str = include_str!("../../openapi.json");

fn document() -> Value {
    serde_json::from_str(DOC).expect("openapi.json is JSON")
}

#[test]
fn documents_exactly_the_routes_the_router_serves() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
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
    let served: BTreeSet<(String, String)> = ALL_ROUTES
        .iter()
        .map(|&(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    assert_eq!(served.len(), ALL_ROUTES.len(), "ALL_ROUTES has duplicates");
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not documented: {undocumented:?}; documented but not served: {unserved:?}"
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
