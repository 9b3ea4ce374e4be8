//! The demo page in a real browser: headless Chromium (Debian's) driven by playwright-core
//! through the scenarios in `tests/browser/`, against a daemon with the mock provider. Each
//! step leaves a screenshot in `target/browser-artifacts/`.

use crate::common;

use common::browser::{available, run_scenario};
use common::daemon::TestDaemon;
use verifyd::config::Backend;

use super::ONE_BROWSER;

async fn demo_daemon(tweak: impl FnOnce(&mut verifyd::config::Config)) -> TestDaemon {
    TestDaemon::start(Backend::Sqlite, |c| {
        c.http.demo_page = true;
        tweak(c);
    })
    .await
    .expect("SQLite daemons always start")
}

fn daemon_env(d: &TestDaemon) -> Vec<(&'static str, String)> {
    vec![
        ("VERIFYD_URL", d.base.clone()),
        ("OUTBOX", d.outbox.display().to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_verifies_a_number_on_the_demo_page() {
    if !available("a_person_verifies_a_number_on_the_demo_page") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let d = demo_daemon(|_| {}).await;
    let phone = "+8613800138000";
    let mut env = daemon_env(&d);
    env.push(("PHONE", phone.into()));
    run_scenario("flow", &env).await;

    // What the browser did is what the daemon saw: one code, sent to that number.
    let sent = d.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["to"], phone);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_expiry_exhaustion_and_retry_after() {
    if !available("the_demo_page_shows_expiry_exhaustion_and_retry_after") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let d = demo_daemon(|c| {
        c.verification.ttl = 6;
        c.verification.resend_interval = 1;
        c.verification.max_attempts = 2;
    })
    .await;
    let (slow, guesser) = ("+8613800138001", "+8613800138002");
    let mut env = daemon_env(&d);
    env.push(("PHONES", format!("{slow},{guesser}")));
    run_scenario("limits", &env).await;

    let to: Vec<_> = d.messages().iter().map(|m| m["to"].clone()).collect();
    assert_eq!(to, [slow, guesser], "the refused resend sent nothing");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_solves_a_challenge_before_the_code_is_sent() {
    if !available("the_demo_page_solves_a_challenge_before_the_code_is_sent") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let d = demo_daemon(|c| c.challenge.mode = verifyd::config::ChallengeMode::Always).await;
    let phone = "+8613800138003";
    let mut env = daemon_env(&d);
    env.push(("PHONE", phone.into()));
    run_scenario("challenge", &env).await;

    // One code, sent only after the page's solution was accepted.
    let sent = d.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["to"], phone);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_speaks_chinese_and_english_and_takes_the_code_from_webotp() {
    if !available("the_demo_page_speaks_chinese_and_english_and_takes_the_code_from_webotp") {
        return;
    }
    let _one = ONE_BROWSER.lock().await;
    let domain = "verify.example.com";
    let d = demo_daemon(|c| {
        c.verification.alphabet = verifyd::code::Alphabet::Alphanumeric;
        c.verification.otp_domain = Some(domain.into());
        c.verification.templates.insert(
            "zh".parse().unwrap(),
            "您的验证码是{code}，{minutes}分钟内有效。".into(),
        );
    })
    .await;
    let (zh, en) = ("+8613800138004", "+8613800138005");
    let mut env = daemon_env(&d);
    env.push(("PHONES", format!("{zh},{en}")));
    env.push(("OTP_DOMAIN", domain.into()));
    run_scenario("language", &env).await;

    let sent = d.messages();
    let to: Vec<_> = sent.iter().map(|m| m["to"].clone()).collect();
    assert_eq!(to, [zh, en], "one code per person");
    d.stop().await;
}
