//! The SNS provider end to end: a real daemon with `provider.kind = "sns"`, talking through
//! aws-sdk-sns either to moto (SigV4 and IAM policy checked, messages recorded) or to the
//! capturing fake in `common::fake_sns` (attributes on the wire, every error class, retries).

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::TestDaemon;
use common::fake_sns::{Answer, FakeSns};
use common::moto::Moto;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, Instant};
use verifyd::config::{Backend, Config, ProviderKind};
use verifyd::provider::sns::SnsConfig;
use verifyd::secret::Secret;

const PHONE: &str = "+12015550133";

/// A daemon on SQLite whose SNS provider uses `endpoint` with the given key.
async fn daemon(
    endpoint: &str,
    id: &str,
    secret: &str,
    tweak: impl FnOnce(&mut SnsConfig),
) -> TestDaemon {
    let (endpoint, id, secret) = (endpoint.to_owned(), id.to_owned(), secret.to_owned());
    TestDaemon::start(Backend::Sqlite, move |c| {
        c.provider.kind = ProviderKind::Sns;
        let s = &mut c.provider.sns;
        s.region = "us-east-1".into();
        s.access_key_id = id;
        s.secret_access_key = Secret::new(secret);
        s.endpoint_url = Some(endpoint);
        s.timeout = Seconds::from_millis(3000);
        tweak(s);
    })
    .await
    .expect("SQLite daemons always start")
}

async fn fake_daemon(fake: &FakeSns, tweak: impl FnOnce(&mut SnsConfig)) -> TestDaemon {
    daemon(&fake.url(), "AKIDFAKE", "fake-secret", tweak).await
}

/// The code inside a rendered default template.
fn code_in(text: &str) -> String {
    let code: String = text
        .split_whitespace()
        .find(|w| w.trim_end_matches('.').bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("no code in {text:?}"))
        .trim_end_matches('.')
        .to_owned();
    assert_eq!(code.len(), 6, "{text}");
    code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_through_moto_with_signatures_checked() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let d = daemon(
        &moto.url,
        &moto.access_key_id,
        &moto.secret_access_key,
        |_| {},
    )
    .await;
    let mut browser = d.browser();

    let (status, body) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending");

    let sms = moto.sms().await;
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert_eq!(sms[0].phone_number, PHONE);
    let code = code_in(&sms[0].message);
    assert_eq!(
        sms[0].message,
        format!("Your verification code is {code}. It expires in 5 minutes.")
    );

    browser.wrong_then_right(PHONE, &code).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_a_configuration_error_and_nothing_is_sent() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let d = daemon(&moto.url, &moto.access_key_id, "not-the-secret", |_| {}).await;
    let mut browser = d.browser();
    let (status, body) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    assert!(moto.sms().await.is_empty());
    // The failure lifted the cooldown: the client may ask again at once, and gets the same answer.
    let (status, _) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_access_key_is_a_configuration_error() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    // A key moto does not know at all: InvalidClientTokenId.
    let d = daemon(&moto.url, "AKIAUNKNOWN000000000", "whatever", |_| {}).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    assert!(moto.sms().await.is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_carries_the_sms_attributes() {
    let fake = FakeSns::start(vec![Answer::Ok]).await;
    let d = fake_daemon(&fake, |s| {
        s.sender_id = Some("Verifyd".into());
        s.origination_number = Some("+18005550100".into());
        s.max_price = Some("0.50".into());
    })
    .await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    let form = &seen[0];
    assert_eq!(form["Action"], "Publish");
    assert_eq!(form["Version"], "2010-03-31");
    assert_eq!(form["PhoneNumber"], PHONE, "E.164 with its +");
    code_in(&form["Message"]);
    let attrs = FakeSns::attributes(form);
    let expect = |v: &[(&str, &str, &str)]| {
        v.iter()
            .map(|(n, t, s)| (n.to_string(), (t.to_string(), s.to_string())))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        attrs,
        expect(&[
            ("AWS.MM.SMS.OriginationNumber", "String", "+18005550100"),
            ("AWS.SNS.SMS.MaxPrice", "Number", "0.50"),
            ("AWS.SNS.SMS.SMSType", "String", "Transactional"),
            ("AWS.SNS.SMS.SenderID", "String", "Verifyd"),
        ])
    );
    d.stop().await;

    // Without sender settings only the SMS type is sent.
    let fake = FakeSns::start(vec![Answer::Ok]).await;
    let d = fake_daemon(&fake, |_| {}).await;
    d.browser().send_code(PHONE).await;
    let attrs = FakeSns::attributes(&fake.requests()[0]);
    assert_eq!(
        attrs,
        expect(&[("AWS.SNS.SMS.SMSType", "String", "Transactional")])
    );
    d.stop().await;
}

/// Sends one code against a scripted fake; returns the answer and how many Publish calls it saw.
async fn send_with(
    script: Vec<Answer>,
    tweak: impl FnOnce(&mut SnsConfig),
) -> (StatusCode, Value, usize) {
    let fake = FakeSns::start(script).await;
    let d = fake_daemon(&fake, tweak).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    let n = fake.requests().len();
    d.stop().await;
    (status, body, n)
}

/// Each error SNS answers is published once and mapped to one status: the SDK would retry a 500
/// up to three times, but a 500 may already have sent the SMS, so verifyd publishes once and
/// leaves failover to the router.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_errors_are_mapped_and_never_retried() {
    // (case, the answer's HTTP status, `Code` and `Message`, our status and error code)
    for (case, answer, status, error) in [
        (
            "an invalid phone number is 422",
            Answer::Error(
                400,
                "InvalidParameter",
                "Invalid parameter: PhoneNumber Reason: +12015550133 is not valid to publish to",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone",
        ),
        (
            "an invalid sender setting is a configuration error",
            Answer::Error(
                400,
                "InvalidParameter",
                "Invalid parameter: MessageAttributes Reason: bad SenderID",
            ),
            StatusCode::BAD_GATEWAY,
            "provider_unavailable",
        ),
        (
            "authorization errors are 502",
            Answer::Error(
                403,
                "AuthorizationError",
                "User is not authorized to perform: SNS:Publish",
            ),
            StatusCode::BAD_GATEWAY,
            "provider_unavailable",
        ),
        (
            "server errors are 503",
            Answer::Error(500, "InternalError", "Internal error"),
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
        ),
    ] {
        let (got, body, n) = send_with(vec![answer], |_| {}).await;
        assert_eq!(got, status, "{case}: {body}");
        assert_eq!(body["error"], error, "{case}: {body}");
        assert_eq!(n, 1, "{case}: published once, no SDK retries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_within_max_attempts() {
    let throttled = || Answer::Error(400, "Throttling", "Rate exceeded");
    let (status, body, n) = send_with(vec![throttled(), Answer::Ok], |_| {}).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(n, 2);

    let (status, body, n) = send_with(vec![throttled()], |s| s.max_attempts = 3).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(n, 3);

    let (status, _, n) = send_with(vec![throttled(), Answer::Ok], |s| s.max_attempts = 1).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_endpoint_times_out_once() {
    let started = Instant::now();
    let (status, body, n) = send_with(vec![Answer::Stall(Duration::from_secs(20))], |s| {
        s.timeout = Seconds::from_millis(500)
    })
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    assert_eq!(n, 1, "a timeout is not retried: the SMS may have left");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_503() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let d = daemon(&url, "AKID", "secret", |_| {}).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    d.stop().await;
}

/// `[provider.sns]` from a file, the secret from the environment; bad keys are named.
#[test]
#[allow(clippy::result_large_err)] // figment's `Jail` closures return its large error by design
fn config_from_file_and_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "sns.toml",
            r#"
[provider]
kind = "sns"
[provider.sns]
region = "eu-west-1"
access_key_id = "AKIAEXAMPLE"
sender_id = "Verifyd"
"#,
        )?;
        let path = std::path::Path::new("sns.toml");
        let err = Config::load(Some(path), true).unwrap_err().to_string();
        assert!(err.contains("provider.sns.secret_access_key"), "{err}");

        jail.set_env(
            "VERIFYD_PROVIDER__SNS__SECRET_ACCESS_KEY",
            "from-env-Secret",
        );
        let c = Config::load(Some(path), true).map_err(|e| e.to_string())?;
        let s = &c.provider.sns;
        assert_eq!(c.provider.kind, ProviderKind::Sns);
        assert_eq!(s.secret_access_key.expose(), "from-env-Secret");
        assert_eq!((s.timeout, s.max_attempts), (Seconds::from_secs(5), 2));
        assert!(!format!("{c:?}").contains("from-env-Secret"));
        assert!(!toml::to_string(&c).unwrap().contains("from-env-Secret"));

        jail.create_file("typo.toml", "[provider.sns]\nsenderid = \"x\"\n")?;
        let err = Config::load(Some(std::path::Path::new("typo.toml")), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("provider.sns.senderid"), "{err}");

        jail.create_file(
            "no-region.toml",
            "[provider]\nkind = \"sns\"\n[provider.sns]\nsender_id = \"Verifyd\"\n",
        )?;
        let err = Config::load(Some(std::path::Path::new("no-region.toml")), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("provider.sns.region"), "{err}");
        Ok(())
    });
}

/// SNS error messages quote the phone number: logs carry only the code and the masked number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_the_phone_or_the_code() {
    let logs = common::logs::capture("debug");
    let fake = FakeSns::start(vec![
        Answer::Error(
            400,
            "InvalidParameter",
            "Invalid parameter: PhoneNumber Reason: +12015550133 is not valid to publish to",
        ),
        Answer::Ok,
    ])
    .await;
    let d = fake_daemon(&fake, |_| {}).await;
    let mut browser = d.browser();
    let (status, _) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    d.stop().await;

    let text = logs.text();
    assert!(text.contains("InvalidParameter"), "{text}");
    assert!(text.contains("+120****0133"), "{text}");
    assert!(text.contains("provider=sns"), "{text}");
    for form in fake.requests() {
        let code = code_in(&form["Message"]);
        assert!(
            !common::logs::mentions_code(&text, &code),
            "{code:?} leaked into the logs:\n{text}"
        );
    }
    for s in ["2015550133", "fake-secret"] {
        assert!(!text.contains(s), "{s:?} leaked into the logs:\n{text}");
    }
}

/// Runs the `verifyd` binary with `config` and the given environment (nothing inherited from AWS
/// or VERIFYD variables, no shared AWS files, no instance metadata), sends one code and returns
/// the answer. The environment is the process's own, so this is how the standard AWS credential
/// chain gets tested without touching the test binary's environment.
async fn send_via_binary(config: &str, env: &[(&str, &str)]) -> (StatusCode, Value) {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[store.sqlite]\npath = {:?}\n\
         [session]\ncookie_secure = false\n[log]\nlevel = \"warn\"\n{config}",
        dir.path().join("v.db").display().to_string()
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verifyd"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("VERIFYD_") || k.starts_with("AWS_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--config")
        .arg(&path)
        .env("HOME", dir.path())
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(cmd.spawn().expect("verifyd starts"));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "verifyd did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = http
        .post(format!("{base}/v1/verifications"))
        .json(&serde_json::json!({ "phone": PHONE }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// With no key in the config, credentials come from the standard AWS chain (here: the process
/// environment); with nothing anywhere, the send is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_static_keys_the_standard_aws_chain_is_used() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let config = format!(
        "[provider]\nkind = \"sns\"\n[provider.sns]\nregion = \"us-east-1\"\nendpoint_url = {:?}\n",
        moto.url
    );
    let (status, body) = send_via_binary(
        &config,
        &[
            ("AWS_ACCESS_KEY_ID", &moto.access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &moto.secret_access_key),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let sms = moto.sms().await;
    assert_eq!(sms.len(), 1);
    assert_eq!(sms[0].phone_number, PHONE);

    let (status, body) = send_via_binary(&config, &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    assert_eq!(moto.sms().await.len(), 1);
}
