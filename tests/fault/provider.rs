//! Provider outage: the SMS gateway (the fake dysmsapi) stalls or fails while many sends are in
//! flight. Each send must give up within the configured budget, and the rest of the daemon —
//! health checks, the session API — must keep answering quickly meanwhile: a stalled provider
//! holds no worker thread and no database connection.

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::TestDaemon;
use common::fake_aliyun::{FakeAliyun, Mode};
use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};
use verifyd::config::{Backend, ProviderKind};
use verifyd::secret::Secret;

const ID: &str = "LTAI5tFaultAccessKeyId";
const SECRET: &str = "FaultAccessKeySecret0123456789";
const TIMEOUT_MS: u64 = 800;
const BUDGET_MS: u64 = 2500;
/// Concurrent sends during the outage: more than the runtime's worker threads and more than the
/// store's pool, so a send that held either would starve the others.
const SENDERS: usize = 48;

async fn daemon(fake: &FakeAliyun) -> TestDaemon {
    let endpoint = fake.url();
    TestDaemon::start(Backend::Sqlite, move |c| {
        c.http.request_timeout = 5;
        // Every sender shares one address and one country: the abuse limits would answer
        // before the provider is ever asked.
        c.per_ip.max_sends = 0;
        c.pumping.enabled = false;
        // The breaker would cut the outage short (tests/providers/routing.rs covers it); here every send
        // must meet the stalled or failing gateway itself.
        c.provider.breaker.failures = 0;
        c.provider.kind = ProviderKind::Aliyun;
        let a = &mut c.provider.aliyun;
        a.access_key_id = ID.into();
        a.access_key_secret = Secret::new(SECRET);
        a.sign_name = "验证码测试".into();
        a.template_code = "SMS_154950909".into();
        a.endpoint = endpoint;
        a.timeout = Seconds::from_millis(TIMEOUT_MS);
        a.max_total = Seconds::from_millis(BUDGET_MS);
    })
    .await
    .expect("SQLite daemons always start")
}

fn phone(i: usize) -> String {
    format!("+86138{i:08}")
}

/// Starts `SENDERS` sends; meanwhile measures other routes; returns (send answers with their
/// latencies, the slowest other request).
async fn outage(
    d: &TestDaemon,
    fake: &FakeAliyun,
) -> (Vec<(StatusCode, String, Duration)>, Duration) {
    // Sessions first, so that the sends' own store work is small next to the provider's.
    let mut browsers = Vec::new();
    for _ in 0..SENDERS {
        let (status, s) = d.api(Method::POST, "/v1/sessions", None).await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
        let mut b = d.browser();
        b.cookie = Some(s["key"].as_str().unwrap().to_owned());
        browsers.push(b);
    }
    let sends: Vec<_> = browsers
        .into_iter()
        .enumerate()
        .map(|(i, mut b)| {
            tokio::spawn(async move {
                let started = Instant::now();
                let (status, body) = b.send_code(&phone(i)).await;
                let error = body["error"].as_str().unwrap_or_default().to_owned();
                (status, error, started.elapsed())
            })
        })
        .collect();
    // Measure once every send is parked on the gateway (their session writes are done).
    let parked = Instant::now();
    while fake.requests_seen().len() < SENDERS {
        assert!(
            parked.elapsed() < Duration::from_millis(BUDGET_MS),
            "the sends never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut slowest = Duration::ZERO;
    let mut others = 0;
    let until = Instant::now() + Duration::from_millis(BUDGET_MS / 4);
    while Instant::now() < until {
        let started = Instant::now();
        let r = d.http.get(d.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let (status, s) = d.api(Method::POST, "/v1/sessions", None).await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
        let key = s["key"].as_str().unwrap();
        let (status, _) = d
            .api(Method::GET, &format!("/v1/sessions/{key}"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        others += 1;
    }
    eprintln!("{others} rounds of other requests, slowest {slowest:?}");
    assert!(others >= 3, "only {others} rounds of other requests");
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap());
    }
    (answers, slowest)
}

fn assert_bounded(answers: &[(StatusCode, String, Duration)]) {
    // The provider's budget plus the send's two store writes (issue, then lift the cooldown),
    // which SQLite commits one at a time, each synced to disk, for all senders at once.
    let bound = Duration::from_millis(BUDGET_MS + 1500);
    for (status, error, took) in answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        assert_eq!(error, "provider_unavailable");
        assert!(*took < bound, "a send took {took:?}, budget {BUDGET_MS} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_provider_times_out_and_starves_nothing() {
    let fake = FakeAliyun::start(ID, SECRET).await;
    fake.set_mode(Mode::Stall(Duration::from_secs(30)));
    let d = daemon(&fake).await;
    let (answers, slowest) = outage(&d, &fake).await;
    assert_bounded(&answers);
    // Three requests (health, create, get), each normally a few milliseconds.
    assert!(
        slowest < Duration::from_millis(500),
        "other routes slowed to {slowest:?} during the stall"
    );
    // The gateway comes back: the failed sends lifted their cooldowns, so a resend works at once.
    fake.set_mode(Mode::Ok);
    let mut b = d.browser();
    let (status, body) = b.send_code(&phone(0)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_answers_within_the_budget() {
    let fake = FakeAliyun::start(ID, SECRET).await;
    fake.set_mode(Mode::ServerError);
    let d = daemon(&fake).await;
    let (answers, slowest) = outage(&d, &fake).await;
    assert_bounded(&answers);
    // Failed sends write to the store (lifting their cooldowns) while we measure, and SQLite
    // commits one at a time with `synchronous = full`: a looser bound than during the stall.
    assert!(
        slowest < Duration::from_millis(1000),
        "other routes slowed to {slowest:?} during the outage"
    );
    d.stop().await;
}
