//! Verification events as signed webhooks, end to end: real daemons on both stores post to
//! receivers written with the `standardwebhooks` Python package, which verify every signature
//! with code that is not ours. Covers what each change reports, masking and filters per
//! endpoint, retries under one `webhook-id`, the dead letter and its redrive from the CLI,
//! kill -9 between commit and delivery, and two daemons sharing one PostgreSQL.

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::TestDaemon;
use common::hook_receiver::HookReceiver;
use common::process::{Proc, free_port};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use verifyd::config::{Backend, Config};
use verifyd::events::{EndpointConfig, EventKind};
use verifyd::secret::Secret;
use verifyd::store::events::{Failure, Redrive};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3ItdGhlLWNybS1ob29r";
const PHONE: &str = "+12015550123";
const OTHER_PHONE: &str = "+12015550177";

fn endpoint(url: &str, secret: &str) -> EndpointConfig {
    EndpointConfig {
        url: url.to_owned(),
        secret: Secret::new(secret),
        ..EndpointConfig::default()
    }
}

/// An endpoint for `verification.sent` only: one event per send.
fn sent_only(url: &str) -> EndpointConfig {
    EndpointConfig {
        events: Some(vec![EventKind::VerificationSent]),
        ..endpoint(url, SECRET)
    }
}

/// No limits, quick polling and retries, and the given endpoints.
fn with_endpoints(c: &mut Config, endpoints: Vec<(&str, EndpointConfig)>) {
    common::no_limits(c);
    c.events.poll_interval = Seconds::from_millis(50);
    c.events.first_retry = Seconds::from_millis(100);
    c.events.max_retry_interval = 1;
    c.events.endpoints = endpoints
        .into_iter()
        .map(|(n, e)| (n.to_owned(), e))
        .collect::<BTreeMap<_, _>>();
}

/// Waits (at most 20 s) until `pred` holds for what the receiver got, and returns it.
async fn wait_for(
    receiver: &HookReceiver,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = receiver.received(0);
        if pred(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "waited in vain for {what}: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kind(r: &Value) -> &str {
    r["payload"]["type"].as_str().unwrap_or("")
}

fn of_kind<'a>(got: &'a [Value], k: &str) -> Vec<&'a Value> {
    got.iter().filter(|r| kind(r) == k).collect()
}

fn has(got: &[Value], k: &str) -> bool {
    !of_kind(got, k).is_empty()
}

/// Every delivery passed the reference library's verification, and the same headers over a
/// changed body did not.
fn all_verified(got: &[Value]) {
    for r in got {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["tampered_verified"], false, "{r}");
        assert!(r["webhook_id"].as_str().unwrap().starts_with("evt_"), "{r}");
    }
}

/// `verifyd <args>` on the store of `d`, as an operator would run it next to the daemon.
fn cli(d: &TestDaemon, args: &[&str]) -> (bool, String, String) {
    let store = match d.config.store.backend {
        Backend::Sqlite => format!(
            "[store]\nbackend = \"sqlite\"\n[store.sqlite]\npath = {:?}\n",
            d.config.store.sqlite.path
        ),
        Backend::Postgres => format!(
            "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = {:?}\n",
            d.config.store.postgres.url.expose()
        ),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cli.toml");
    std::fs::write(&config, format!("{store}[log]\nlevel = \"warn\"\n")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .env_remove("RUST_LOG")
        .arg("--config")
        .arg(&config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

on_both_stores! {
    // One endpoint takes everything with masked numbers, another only approvals with full
    // numbers; each is signed with its own secret.
    async fn every_change_is_posted_signed_and_masked_per_endpoint(backend: Backend) {
        let Some(all) = HookReceiver::start(SECRET, &[]) else { return };
        let Some(crm) = HookReceiver::start(OTHER_SECRET, &[]) else { return };
        let Some(d) = TestDaemon::start(backend, |c| {
            let mut approvals = endpoint(&crm.url, OTHER_SECRET);
            approvals.full_numbers = true;
            approvals.events = Some(vec![EventKind::VerificationApproved]);
            with_endpoints(c, vec![("all", endpoint(&all.url, SECRET)), ("crm", approvals)]);
            c.verification.resend_interval = 30;
            c.verification.max_attempts = 2;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(b.send_code(PHONE).await.0, StatusCode::ACCEPTED);
        let (status, _) = b.send_code(PHONE).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let code = d.last_code(PHONE).unwrap();
        b.wrong_then_right(PHONE, &code).await;
        let mut other = d.browser();
        assert_eq!(other.send_code(OTHER_PHONE).await.0, StatusCode::ACCEPTED);
        let wrong = if d.last_code(OTHER_PHONE).unwrap() == "000000" { "111111" } else { "000000" };
        other.check_code(OTHER_PHONE, wrong).await;
        other.check_code(OTHER_PHONE, wrong).await;

        let got = wait_for(&all, "every kind", |g| {
            ["verification.sent", "verification.refused", "verification.failed",
             "verification.approved", "verification.max_attempts"]
                .iter()
                .all(|k| has(g, k))
        })
        .await;
        all_verified(&got);
        let refused = of_kind(&got, "verification.refused")[0];
        assert_eq!(refused["payload"]["data"]["limit"], "resend_too_soon", "{refused}");
        assert_eq!(refused["payload"]["data"]["operation"], "send", "{refused}");
        assert_eq!(refused["payload"]["data"]["error"], "resend_too_soon", "{refused}");
        let failed = of_kind(&got, "verification.failed")[0];
        assert_eq!(failed["payload"]["data"]["attempts"], 1, "{failed}");
        assert_eq!(failed["payload"]["data"]["attempts_left"], 1, "{failed}");
        let sent = of_kind(&got, "verification.sent")[0];
        assert_eq!(sent["payload"]["data"]["resend"], false, "{sent}");
        assert!(sent["payload"]["timestamp"].as_str().unwrap().ends_with('Z'), "{sent}");
        for r in &got {
            let text = r["payload"].to_string();
            assert!(!text.contains("2015550123") && !text.contains("2015550177"), "{text}");
        }
        assert_eq!(
            of_kind(&got, "verification.approved")[0]["payload"]["data"]["phone"],
            "+120****0123"
        );

        let full = wait_for(&crm, "the approval", |g| has(g, "verification.approved")).await;
        all_verified(&full);
        assert!(full.iter().all(|r| kind(r) == "verification.approved"), "{full:#?}");
        assert_eq!(full[0]["payload"]["data"]["phone"], PHONE);
        // The same event reaches both endpoints under the same id.
        let ids: HashSet<&str> = got.iter().map(|r| r["webhook_id"].as_str().unwrap()).collect();
        assert!(ids.contains(full[0]["webhook_id"].as_str().unwrap()));
        d.stop().await;
    }

    // 500, 500, 503, then 204: four attempts of one event under one `webhook-id`, each signed
    // afresh, and the metrics count three retries and one delivery.
    async fn a_receiver_failing_for_a_while_gets_the_event_later_with_the_same_id(backend: Backend) {
        let Some(r) = HookReceiver::start(SECRET, &[500, 500, 503]) else { return };
        let Some(d) = TestDaemon::start(backend, |c| {
            with_endpoints(c, vec![("app", sent_only(&r.url))]);
        })
        .await
        else {
            return;
        };
        assert_eq!(d.browser().send_code(PHONE).await.0, StatusCode::ACCEPTED);
        let got = wait_for(&r, "a 2xx", |g| g.iter().any(|x| x["answered"] == 204)).await;
        assert_eq!(got.len(), 4, "{got:#?}");
        all_verified(&got);
        assert!(got.iter().all(|x| x["webhook_id"] == got[0]["webhook_id"]), "{got:#?}");
        // The daemon records the delivery (its latency last) once it has read the 2xx the
        // receiver has just sent.
        let deadline = Instant::now() + Duration::from_secs(10);
        let metrics = loop {
            let m = d.daemon.as_ref().unwrap().app.metrics.render(None, []);
            let recorded = m.contains("verifyd_event_delivery_latency_seconds_count{endpoint=\"app\"}");
            if recorded || Instant::now() > deadline {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(metrics.contains("verifyd_events_retried_total{endpoint=\"app\"} 3"), "{metrics}");
        assert!(metrics.contains("verifyd_events_delivered_total{endpoint=\"app\"} 1"), "{metrics}");
        assert!(metrics.contains("verifyd_event_delivery_latency_seconds_count{endpoint=\"app\"} 1"), "{metrics}");
        // Nothing more arrives once it is delivered.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(r.received(0).len(), 4);
        d.stop().await;
    }

    // Nobody listens: after `retry_for` the event is dead, `verifyd events list --dead` shows
    // it, and `verifyd events redrive --all-dead` delivers it, same id, once a receiver is up.
    async fn a_dead_event_is_listed_and_redriven_from_the_cli(backend: Backend) {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}/hooks/sms");
        let Some(d) = TestDaemon::start(backend, |c| {
            with_endpoints(c, vec![("app", sent_only(&url))]);
            c.events.retry_for = 1;
        })
        .await
        else {
            return;
        };
        assert_eq!(d.browser().send_code(PHONE).await.0, StatusCode::ACCEPTED);
        let deadline = Instant::now() + Duration::from_secs(20);
        let listed = loop {
            let (ok, out, err) = cli(&d, &["events", "list", "--dead"]);
            assert!(ok, "{err}");
            if !out.trim().is_empty() {
                break out;
            }
            assert!(Instant::now() < deadline, "the event never died");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let id = listed.split('\t').next().unwrap().to_owned();
        assert!(id.starts_with("evt_") && listed.contains("verification.sent"), "{listed}");
        assert!(listed.contains("app: network error"), "{listed}");
        assert!(!listed.contains(&port.to_string()), "no URL in errors: {listed}");
        let (ok, pending, _) = cli(&d, &["events", "list"]);
        assert!(ok && pending.trim().is_empty(), "{pending}");
        let metrics = d.daemon.as_ref().unwrap().app.metrics.render(None, []);
        assert!(metrics.contains("verifyd_events_dead_total{endpoint=\"app\"} 1"), "{metrics}");

        let Some(r) = HookReceiver::start_on(SECRET, &[], port) else { return };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(r.received(0).is_empty(), "a dead event stays dead until redriven");
        let (ok, out, err) = cli(&d, &["events", "redrive", "--all-dead"]);
        assert!(ok, "{err}");
        assert!(out.contains("1 events"), "{out}");
        let got = wait_for(&r, "the redriven event", |g| !g.is_empty()).await;
        all_verified(&got);
        assert_eq!(got[0]["webhook_id"], id.as_str());
        let (ok, out, err) = cli(&d, &["events", "redrive", "evt_nonesuch"]);
        assert!(!ok && out.is_empty() && err.contains("evt_nonesuch"), "{out} {err}");
        d.stop().await;
    }

    // The changes no request path reports directly: a breaker tripping and being reset, a
    // code dying unused (seen by the sweep), and a delivery receipt.
    async fn breaker_expiry_and_receipts_are_events(backend: Backend) {
        let Some(r) = HookReceiver::start(SECRET, &[]) else { return };
        let Some(d) = TestDaemon::start(backend, |c| {
            with_endpoints(c, vec![("all", endpoint(&r.url, SECRET))]);
            c.pumping.enabled = true;
            c.pumping.min_sample = 2;
            c.pumping.min_conversion = 0.5;
            c.verification.ttl = 1;
            c.verification.resend_interval = 0;
            c.sweeper.enabled = false;
        })
        .await
        else {
            return;
        };
        let app = d.daemon.as_ref().unwrap().app.clone();
        assert_eq!(d.browser().send_code(PHONE).await.0, StatusCode::ACCEPTED);
        assert_eq!(d.browser().send_code(OTHER_PHONE).await.0, StatusCode::ACCEPTED);
        let got = wait_for(&r, "the trip", |g| has(g, "pumping.tripped")).await;
        let tripped = of_kind(&got, "pumping.tripped")[0];
        assert_eq!(tripped["payload"]["data"]["country"], "+1", "{tripped}");
        assert!(app.store.pumping_reset("+1").await.unwrap());
        wait_for(&r, "the reset", |g| has(g, "pumping.reset")).await;

        tokio::time::sleep(Duration::from_millis(1100)).await;
        app.store.sweep(100, app.config.events.keep_dead.duration()).await.unwrap();
        let got = wait_for(&r, "two expiries", |g| of_kind(g, "verification.expired").len() == 2).await;
        let session_id = of_kind(&got, "verification.sent")[0]["payload"]["data"]["session_id"]
            .as_i64()
            .unwrap();

        let new = verifyd::delivery::NewDelivery {
            id: "dlv_events_test",
            session_id,
            provider: "gw",
            message_id: "m-1",
            country: "+1",
        };
        if app.store.record_delivery(&new).await.is_ok() {
            // The session went with the sweep only if it expired; it did not (default age).
            let receipt = verifyd::delivery::ReceiptUpdate {
                provider: "gw".into(),
                message_id: "m-1".into(),
                state: verifyd::delivery::DeliveryState::Delivered,
                error_code: None,
            };
            app.store.apply_receipt(&receipt).await.unwrap();
            let got = wait_for(&r, "the receipt", |g| has(g, "delivery.updated")).await;
            let u = of_kind(&got, "delivery.updated")[0];
            assert_eq!(u["payload"]["data"]["state"], "delivered", "{u}");
            assert_eq!(u["payload"]["data"]["delivery_id"], "dlv_events_test", "{u}");
        } else {
            panic!("the session of the first send is gone");
        }
        all_verified(&r.received(0));
        d.stop().await;
    }

    // Without endpoints the triggers stay off: a whole verification writes no outbox row.
    async fn nothing_is_recorded_without_endpoints(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, common::no_limits).await else { return };
        let mut b = d.browser();
        assert_eq!(b.send_code(PHONE).await.0, StatusCode::ACCEPTED);
        b.wrong_then_right(PHONE, &d.last_code(PHONE).unwrap()).await;
        let (status, _) = b.send_code(PHONE).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let counts = d.daemon.as_ref().unwrap().app.store.outbox_counts().await.unwrap();
        assert_eq!(counts.pending + counts.dead, 0);
        d.stop().await;
    }

    // The outbox contract on its own: a claim hides an event from other claimers until its
    // lease runs out (a crashed worker's claim comes back), failures keep it, dead ones wait for
    // a redrive, a delivered one is gone.
    async fn a_claim_whose_worker_died_falls_due_after_its_lease(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, common::no_limits).await else { return };
        let store = d.daemon.as_ref().unwrap().app.store.clone();
        store.events_keepalive(Duration::from_secs(60)).await.unwrap();
        assert_eq!(d.browser().send_code(PHONE).await.0, StatusCode::ACCEPTED);
        let lease = Duration::from_millis(800);
        let first = store.claim_events(10, lease).await.unwrap();
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(first[0].kind, "verification.sent");
        assert_eq!(first[0].data["phone"], PHONE);
        assert!(store.claim_events(10, lease).await.unwrap().is_empty(), "claimed twice");
        tokio::time::sleep(lease + Duration::from_millis(300)).await;
        let again = store.claim_events(10, lease).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].seq, &again[0].id), (first[0].seq, &first[0].id));

        let done = vec!["a".to_owned()];
        store.event_failed(again[0].seq, &done, Failure::Dead, "b: HTTP 500").await.unwrap();
        assert!(store.claim_events(10, lease).await.unwrap().is_empty(), "dead is never due");
        let dead = store.list_events(true, 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("b: HTTP 500"));
        assert_eq!(dead[0].attempts, 1);
        assert_eq!(store.redrive_events(&Redrive::Id(dead[0].id.clone())).await.unwrap(), 1);
        let redriven = store.claim_events(10, lease).await.unwrap();
        assert_eq!(redriven.len(), 1);
        assert_eq!(redriven[0].done, done, "endpoints that had it are remembered");
        assert!(redriven[0].age < Duration::from_secs(1), "a fresh retry period");
        store.event_delivered(redriven[0].seq).await.unwrap();
        let counts = store.outbox_counts().await.unwrap();
        assert_eq!((counts.pending, counts.dead), (0, 0));
        d.stop().await;
    }

    // The receiver is down when the send commits; the daemon is killed -9 and restarted; the
    // receiver comes up; the event arrives.
    async fn kill_9_between_commit_and_delivery_loses_no_event(backend: Backend) {
        let dir = tempfile::tempdir().unwrap();
        let (store, _db) = match backend {
            Backend::Sqlite => (
                format!("[store]\nbackend = \"sqlite\"\n[store.sqlite]\npath = {:?}\n",
                        dir.path().join("v.db")),
                None,
            ),
            Backend::Postgres => {
                let Some(db) = common::pg::TestDb::create().await else { return };
                (format!("[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = {:?}\n", db.url),
                 Some(db))
            }
        };
        let (port, hook_port) = (free_port(), free_port());
        let toml = format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n{store}\
             [session]\ncookie_secure = false\n\
             [verification.test_numbers]\n\"{PHONE}\" = \"123456\"\n\
             [provider.mock]\nquiet = true\n[log]\nlevel = \"warn\"\n[challenge]\nmode = \"off\"\n\
             [events]\npoll_interval_ms = 50\nfirst_retry_ms = 200\nmax_retry_interval = 1\n\
             [events.endpoints.app]\nurl = \"http://127.0.0.1:{hook_port}/hooks/sms\"\n\
             secret = \"{SECRET}\"\nevents = [\"verification.sent\"]\n"
        );
        let first = Proc::spawn(dir.path(), "first", port, &toml).await;
        let mut b = browser(&first.base());
        assert_eq!(b.send_code(PHONE).await.0, StatusCode::ACCEPTED);
        // Let the worker fail at least once, so the kill finds the event claimed or rescheduled.
        tokio::time::sleep(Duration::from_millis(400)).await;
        first.kill9();
        let second = Proc::spawn(dir.path(), "second", port, &toml).await;
        let Some(r) = HookReceiver::start_on(SECRET, &[], hook_port) else { return };
        let got = wait_for(&r, "the event after the restart", |g| !g.is_empty()).await;
        all_verified(&got);
        assert_eq!(kind(&got[0]), "verification.sent");
        drop(second);
    }
}

fn browser(base: &str) -> common::daemon::Browser {
    common::daemon::Browser {
        base: base.to_owned(),
        http: reqwest::Client::new(),
        cookie: None,
        cookie_name: "sessionid".into(),
    }
}

/// Two daemons on one PostgreSQL, both delivering to the same receiver: every event arrives
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_postgresql_deliver_each_event_once() {
    let Some(r) = HookReceiver::start(SECRET, &[]) else {
        return;
    };
    let Some(a) = TestDaemon::start(Backend::Postgres, |c| {
        with_endpoints(c, vec![("app", sent_only(&r.url))]);
        c.events.poll_interval = Seconds::from_millis(10);
    })
    .await
    else {
        return;
    };
    let b = a.sibling().await;
    const SENDS: usize = 40;
    for i in 0..SENDS {
        let d = if i % 2 == 0 { &a } else { &b };
        let phone = format!("+1201555{:04}", 1000 + i);
        assert_eq!(d.browser().send_code(&phone).await.0, StatusCode::ACCEPTED);
    }
    let got = wait_for(&r, "every send", |g| g.len() >= SENDS).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = r.received(0);
    assert_eq!(
        got_after.len(),
        got.len(),
        "late duplicates: {got_after:#?}"
    );
    let ids: HashSet<&str> = got_after
        .iter()
        .map(|x| x["webhook_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), SENDS, "each event once: {got_after:#?}");
    assert_eq!(got_after.len(), SENDS);
    all_verified(&got_after);
    let delivered = |d: &TestDaemon| {
        let m = d.daemon.as_ref().unwrap().app.metrics.render(None, []);
        m.lines()
            .find(|l| l.starts_with("verifyd_events_delivered_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<usize>().ok())
            .unwrap_or(0)
    };
    assert_eq!(delivered(&a) + delivered(&b), SENDS);
    b.stop().await;
    a.stop().await;
}

/// Settings that cannot work stop the daemon at start, naming the key; a secret is never
/// echoed back.
#[test]
fn odd_event_settings_are_refused_naming_the_key() {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let good = format!(
        "[events.endpoints.crm]\nurl = \"https://app.example/events\"\nsecret = \"{SECRET}\"\n"
    );
    for (toml, key) in [
        (
            good.replace("https://app.example/events", "ftp://app.example/"),
            "events.endpoints.crm.url",
        ),
        (
            good.replace(SECRET, "hunter2hunter2"),
            "events.endpoints.crm.secret",
        ),
        (
            good.replace(SECRET, "whsec_aHVudGVyMg=="),
            "events.endpoints.crm.secret",
        ),
        (
            format!("{good}events = [\"verification.hacked\"]\n"),
            "events",
        ),
        (
            format!("{good}events = []\n"),
            "events.endpoints.crm.events",
        ),
        (format!("{good}colour = \"red\"\n"), "colour"),
        (
            good.replace("endpoints.crm", "endpoints.CRM"),
            "events.endpoints.CRM",
        ),
        (
            format!("{good}secret_file = {secret_file:?}\n"),
            "events.endpoints.crm.secret_file",
        ),
        (
            format!("[events]\nretry_for = 0\n{good}"),
            "events.retry_for",
        ),
        (format!("[events]\ntimeout = 600\n{good}"), "events.timeout"),
    ] {
        let err = Config::from_figment(Figment::from(Toml::string(&toml)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{toml}: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("MfKQ9r8"),
            "{err}"
        );
    }
    // The secret may come from a file instead.
    let from_file = format!(
        "[events.endpoints.crm]\nurl = \"https://app.example/events\"\nsecret_file = {secret_file:?}\n"
    );
    let c = Config::from_figment(Figment::from(Toml::string(&from_file))).unwrap();
    assert_eq!(c.events.endpoints["crm"].secret.expose(), SECRET);
    assert!(!format!("{c:?}").contains("MfKQ9r8"));
}
