//! `kind = "hook"` end to end: a real daemon POSTs each code to a receiver written with the
//! `standardwebhooks` Python package, which verifies verifyd's signature (and refuses the same
//! headers over a tampered body); the receiver's statuses map onto the failure classes.

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::TestDaemon;
use common::hook_receiver::HookReceiver;
use reqwest::StatusCode;
use verifyd::config::{Backend, ProviderKind};
use verifyd::provider::hook::HookConfig;
use verifyd::secret::Secret;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER_SECRET: &str = "whsec_dGhpcy1pcy1ub3QtdGhlLXJpZ2h0LWtleSE=";
const PHONE: &str = "+8613800138000";

/// A daemon whose single provider is a hook to `url`, signing with `secret`.
async fn daemon(url: &str, secret: &str) -> TestDaemon {
    let (url, secret) = (url.to_owned(), secret.to_owned());
    TestDaemon::start(Backend::Sqlite, move |c| {
        c.provider.kind = ProviderKind::Hook;
        c.provider.hook = HookConfig {
            url,
            secret: Secret::new(secret),
            timeout: Seconds::from_millis(1000),
            max_total: Seconds::from_millis(3000),
            ..HookConfig::default()
        };
    })
    .await
    .expect("SQLite daemons always start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_verifies_the_signature_and_the_code_approves() {
    let Some(receiver) = HookReceiver::start(SECRET, &[]) else {
        return;
    };
    let d = daemon(&receiver.url, SECRET).await;
    let mut browser = d.browser();
    let (status, body) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = receiver.received(1);
    assert_eq!(got.len(), 1, "{got:?}");
    let r = &got[0];
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["tampered_verified"], false, "negative control: {r}");
    assert_eq!(r["path"], "/hooks/sms");
    assert_eq!(r["content_type"], "application/json");
    assert!(r["webhook_id"].as_str().unwrap().starts_with("msg_"), "{r}");
    assert!(
        r["webhook_signature"].as_str().unwrap().starts_with("v1,"),
        "{r}"
    );
    let payload = &r["payload"];
    assert_eq!(payload["type"], "verification.code");
    let data = &payload["data"];
    assert_eq!(data["to"], PHONE);
    assert_eq!(data["country"], "CN");
    assert_eq!(data["ttl_seconds"], 300);
    let code = data["code"].as_str().unwrap().to_owned();
    assert!(data["text"].as_str().unwrap().contains(&code));
    browser.wrong_then_right(PHONE, &code).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_made_with_another_secret_is_refused_and_not_retried() {
    let Some(receiver) = HookReceiver::start(SECRET, &[]) else {
        return;
    };
    let d = daemon(&receiver.url, OTHER_SECRET).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    // Waits for a second delivery that must not come (every attempt ended before the answer).
    let got = receiver.received(2);
    assert_eq!(got.len(), 1, "401 is a configuration error: {got:?}");
    assert_eq!(got[0]["verified"], false);
    assert_eq!(got[0]["answered"], 401);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_keep_the_webhook_id_and_sign_each_attempt() {
    let Some(receiver) = HookReceiver::start(SECRET, &[503, 500]) else {
        return;
    };
    let d = daemon(&receiver.url, SECRET).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = receiver.received(3);
    assert_eq!(got.len(), 3, "{got:?}");
    for r in &got {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["webhook_id"], got[0]["webhook_id"], "one id per message");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_statuses_map_onto_the_failure_classes() {
    for (answer, want, error, deliveries) in [
        (422, StatusCode::UNPROCESSABLE_ENTITY, "invalid_phone", 1),
        (400, StatusCode::UNPROCESSABLE_ENTITY, "invalid_phone", 1),
        (
            429,
            StatusCode::TOO_MANY_REQUESTS,
            "provider_rate_limited",
            1,
        ),
        (404, StatusCode::BAD_GATEWAY, "provider_unavailable", 1),
    ] {
        let Some(receiver) = HookReceiver::start(SECRET, &[answer]) else {
            return;
        };
        let d = daemon(&receiver.url, SECRET).await;
        let (status, body) = d.browser().send_code(PHONE).await;
        assert_eq!(status, want, "{answer}: {body}");
        assert_eq!(body["error"], error, "{answer}");
        assert_eq!(receiver.received(deliveries).len(), deliveries, "{answer}");
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_that_keeps_failing_is_503_within_the_budget() {
    let Some(receiver) = HookReceiver::start(SECRET, &[503; 40]) else {
        return;
    };
    let d = daemon(&receiver.url, SECRET).await;
    let started = std::time::Instant::now();
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(receiver.received(2).len() >= 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    d.stop().await;
}

/// A hook without a URL, or with a secret that is not `whsec_` base64, stops the daemon.
#[test]
fn a_bad_hook_config_names_the_key() {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    for (toml, key) in [
        (
            "[provider]\nkind = \"hook\"\n[provider.hook]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
            "provider.hook.url",
        ),
        (
            "[provider]\nkind = \"hook\"\n[provider.hook]\nurl = \"https://a.example/\"\n",
            "provider.hook.secret",
        ),
        (
            "[provider]\nkind = \"hook\"\n[provider.hook]\nurl = \"https://a.example/\"\nsecret = \"hunter2\"\n",
            "provider.hook.secret",
        ),
        (
            "[providers.app]\nkind = \"hook\"\n[routes]\n\"*\" = [\"app\"]\n",
            "providers.app.hook",
        ),
        (
            "[providers.app]\nkind = \"hook\"\n[providers.app.hook]\nurl = \"https://a.example/\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nmax_total = 20\n[routes]\n\"*\" = [\"app\"]\n",
            "providers.app.hook.max_total",
        ),
    ] {
        let err = verifyd::config::Config::from_figment(Figment::from(Toml::string(toml)))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{toml}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
