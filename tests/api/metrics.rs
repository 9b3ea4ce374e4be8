//! `GET /metrics` on the `metrics.listen` address (or, without one, on the API port behind the
//! API key): the text parses strictly, and the counters move the way the README's
//! "Observability" section says they do.

use crate::common;

use common::daemon::TestDaemon;
use common::openmetrics::{self, Scrape};
use reqwest::Method;
use verifyd::config::Backend;

async fn start(backend: Backend) -> Option<TestDaemon> {
    TestDaemon::start(backend, |c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await
}

async fn scrape(d: &TestDaemon) -> Scrape {
    let addr = d
        .daemon
        .as_ref()
        .unwrap()
        .metrics_addr
        .expect("metrics listener");
    let resp = d
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    openmetrics::parse(&resp.text().await.unwrap())
}

const PHONE: &str = "+8613800138000";

/// A series, its labels and the value a scrape should show.
type Sample = (&'static str, &'static [(&'static str, &'static str)], f64);

on_both_stores! {
    async fn a_send_and_check_moves_the_counters(backend: Backend) {
        let Some(d) = start(backend).await else { return };
        let before = scrape(&d).await;
        assert_eq!(before.value("verifyd_verifications_started_total", &[]), 0.0);
        assert_eq!(before.value("verifyd_sessions_created_total", &[]), 0.0);

        let mut b = d.browser();
        assert_eq!(b.send_code(PHONE).await.0, 202);
        assert_eq!(b.send_code(PHONE).await.0, 429);
        assert_eq!(b.check_code(PHONE, "12ab").await.0, 422);
        let code = d.last_code(PHONE).unwrap();
        let wrong = if code == "000000" { "111111" } else { "000000" };
        assert_eq!(b.check_code(PHONE, wrong).await.1["status"], "pending");
        assert_eq!(b.check_code(PHONE, &code).await.1["status"], "approved");

        let m = scrape(&d).await;
        const SEND: &str = "/v1/verifications";
        const CHECK: &str = "/v1/verifications/check";
        // (series, labels, value after one send, one refused resend, one malformed check, one
        // wrong and one right code)
        let expected: &[Sample] = &[
            ("verifyd_verifications_started_total", &[], 1.0),
            ("verifyd_verification_checks_total", &[("outcome", "approved")], 1.0),
            ("verifyd_verification_checks_total", &[("outcome", "wrong")], 1.0),
            ("verifyd_verification_checks_total", &[("outcome", "expired")], 0.0),
            ("verifyd_quota_refusals_total", &[("reason", "resend_too_soon")], 1.0),
            ("verifyd_sessions_created_total", &[], 1.0),
            ("verifyd_sms_sent_total", &[("provider", "mock"), ("outcome", "ok")], 1.0),
            ("verifyd_provider_request_duration_seconds_count", &[("provider", "mock")], 1.0),
            ("verifyd_http_requests_total", &[("method", "POST"), ("route", SEND), ("status", "202")], 1.0),
            ("verifyd_http_requests_total", &[("method", "POST"), ("route", SEND), ("status", "429")], 1.0),
            ("verifyd_http_requests_total", &[("method", "POST"), ("route", CHECK), ("status", "200")], 2.0),
            ("verifyd_http_requests_total", &[("method", "POST"), ("route", CHECK), ("status", "422")], 1.0),
            ("verifyd_http_request_duration_seconds_count", &[("route", CHECK)], 3.0),
        ];
        for (name, labels, value) in expected {
            assert_eq!(m.value(name, labels), *value, "{name} {labels:?}");
        }
        // The embedded store has no pool; PostgreSQL reports one.
        let idle = m.get("verifyd_store_pool_connections", &[("state", "idle")]);
        match backend {
            Backend::Sqlite => assert_eq!(idle, None),
            Backend::Postgres => {
                assert!(idle.unwrap() >= 1.0, "a pooled connection should be idle");
                assert_eq!(m.get("verifyd_store_pool_waiting", &[]), Some(0.0));
            }
        }
        d.stop().await;
    }

    async fn sessions_created_and_flushed(backend: Backend) {
        let Some(d) = start(backend).await else { return };
        let (status, s) = d.api(Method::POST, "/v1/sessions", None).await;
        assert_eq!(status, 201);
        d.api(Method::POST, "/v1/sessions", None).await;
        let key = s["key"].as_str().unwrap();
        let (status, _) = d.api(Method::POST, &format!("/v1/sessions/{key}/flush"), None).await;
        assert_eq!(status, 200);
        let (status, _) = d.api(Method::POST, &format!("/v1/sessions/{key}/flush"), None).await;
        assert_eq!(status, 404);
        let (status, _) = d.api(Method::GET, "/no/such/route", None).await;
        assert_eq!(status, 404);

        let m = scrape(&d).await;
        assert_eq!(m.value("verifyd_sessions_created_total", &[]), 2.0);
        assert_eq!(m.value("verifyd_sessions_flushed_total", &[]), 1.0);
        let flushes = |status| {
            m.value(
                "verifyd_http_requests_total",
                &[("method", "POST"), ("route", "/v1/sessions/{key}/flush"), ("status", status)],
            )
        };
        assert_eq!((flushes("200"), flushes("404")), (1.0, 1.0));
        assert_eq!(
            m.value(
                "verifyd_http_requests_total",
                &[("method", "GET"), ("route", "?"), ("status", "404")]
            ),
            1.0,
            "unmatched paths share one label so that scanners cannot blow up the series"
        );
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_counts_its_runs() {
    let d = TestDaemon::start(Backend::Sqlite, |c| {
        c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
        c.sweeper.interval = 1;
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let m = scrape(&d).await;
        if m.value("verifyd_sweeper_runs_total", &[("outcome", "ok")]) >= 1.0 {
            assert_eq!(
                m.get(
                    "verifyd_sweeper_deleted_rows_total",
                    &[("kind", "sessions")]
                ),
                Some(0.0)
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sweep counted in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_metrics_is_served_there_and_not_on_the_api_port() {
    let d = start(Backend::Sqlite).await.unwrap();
    let addr = d.daemon.as_ref().unwrap().metrics_addr.unwrap();
    let resp = d
        .http
        .post(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET");
    let resp = d
        .http
        .get(format!("http://{addr}/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = d.http.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "the API port asks for the key first");
    let resp = d
        .http
        .get(d.url("/metrics"))
        .bearer_auth(common::daemon::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "with a metrics address, the API port does not serve metrics, even to a key"
    );
    d.stop().await;
}

/// Without `metrics.listen`, `GET /metrics` is on the API port, behind the API key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_metrics_address_the_api_port_serves_them_to_api_keys() {
    let d = TestDaemon::start(Backend::Sqlite, |_| {}).await.unwrap();
    let resp = d.http.get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    assert_eq!(d.browser().send_code(PHONE).await.0, 202);
    let resp = d
        .http
        .get(d.url("/metrics"))
        .bearer_auth(common::daemon::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let m = openmetrics::parse(&resp.text().await.unwrap());
    assert_eq!(m.value("verifyd_verifications_started_total", &[]), 1.0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_metrics_listener_unless_configured() {
    let d = TestDaemon::start(Backend::Sqlite, |_| {}).await.unwrap();
    assert_eq!(d.daemon.as_ref().unwrap().metrics_addr, None);
    d.stop().await;
}

/// An attacker's loop: every request has a unique 2 KB method name or a unique long path. The
/// request counter keeps a handful of series, the scrape stays small, and no log line repeats
/// the attacker's text in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_methods_and_paths_do_not_grow_metrics_or_logs() {
    let logs = common::logs::capture("verifyd=info");
    let d = start(Backend::Sqlite).await.unwrap();
    let mut tags = Vec::new();
    for n in 0..300 {
        let tag = format!("Z{n:04}{}", "Q".repeat(2000));
        let method = Method::from_bytes(tag.as_bytes()).unwrap();
        let resp = d
            .http
            .request(method, d.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405);
        let resp = d
            .http
            .get(d.url(&format!("/{tag}/x")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        let resp = d
            .http
            .request(
                Method::from_bytes(tag.as_bytes()).unwrap(),
                d.url(&format!("/{tag}")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        tags.push(tag);
    }
    let addr = d.daemon.as_ref().unwrap().metrics_addr.unwrap();
    let text = d
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = text
        .lines()
        .filter(|l| l.starts_with("verifyd_http_requests_total"))
        .count();
    assert!(series <= 8, "{series} request series:\n{text}");
    assert!(
        text.len() < 32 * 1024,
        "/metrics grew to {} bytes",
        text.len()
    );
    let m = openmetrics::parse(&text);
    assert_eq!(
        m.value(
            "verifyd_http_requests_total",
            &[("method", "other"), ("route", "?"), ("status", "405")]
        ),
        300.0
    );
    assert_eq!(
        m.value(
            "verifyd_http_requests_total",
            &[("method", "GET"), ("route", "?"), ("status", "404")]
        ),
        300.0
    );
    let log = logs.text();
    assert!(
        log.contains("Z0299QQQQ"),
        "the request lines are logged (shortened)"
    );
    for tag in tags.iter().take(5) {
        assert!(
            !log.contains(tag.as_str()),
            "a log line echoes a whole attacker method"
        );
    }
    assert!(
        log.lines().all(|l| l.len() < 1024),
        "a log line longer than 1 KB"
    );
    d.stop().await;
}
