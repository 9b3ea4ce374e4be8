//! The Tencent Cloud SMS provider end to end: a real daemon with `kind = "tencent"` talking to
//! the fake API in `common::fake_tencent`, which verifies TC3 signatures with its own code. The
//! official `tencentcloud-sdk-python` is held against the same fake, and verifyd's signer is
//! compared with the SDK's signature of the very same request.

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::TestDaemon;
use common::fake_tencent::{FakeTencent, Mode};
use reqwest::StatusCode;
use serde_json::Value;
use std::process::Command;
use verifyd::config::{Backend, ProviderKind};
use verifyd::provider::config::NamedProvider;
use verifyd::provider::tencent::{TencentConfig, sign};
use verifyd::secret::Secret;

const ID: &str = "AKIDtestSecretId0123456789";
const KEY: &str = "testSecretKey0123456789abcdef";
const APP: &str = "1400787878";
const PHONE: &str = "+8613800138000";

async fn daemon(fake: &FakeTencent, tweak: impl FnOnce(&mut TencentConfig)) -> TestDaemon {
    let endpoint = fake.url();
    TestDaemon::start(Backend::Sqlite, move |c| {
        c.provider.kind = ProviderKind::Tencent;
        let t = &mut c.provider.tencent;
        t.secret_id = ID.into();
        t.secret_key = Secret::new(KEY);
        t.sms_sdk_app_id = APP.into();
        t.sign_name = "腾讯云".into();
        t.template_id = "449739".into();
        t.template_params = vec!["{code}".into(), "{minutes}".into()];
        t.endpoint = endpoint;
        t.timeout = Seconds::from_millis(500);
        t.max_total = Seconds::from_millis(3000);
        tweak(t);
    })
    .await
    .expect("SQLite daemons always start")
}

async fn fake() -> FakeTencent {
    FakeTencent::start(ID, KEY, APP).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_sends_a_signed_request_and_approves() {
    let fake = fake().await;
    let d = daemon(&fake, |_| {}).await;
    let mut browser = d.browser();
    let (status, body) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    let seen = fake.requests_seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.code, "Ok", "{r:?}");
    assert_eq!(r.action, "SendSms");
    assert_eq!(r.version, "2021-01-11");
    assert_eq!(r.region, "ap-guangzhou");
    assert_eq!(r.content_type, "application/json; charset=utf-8");
    assert!(
        r.authorization.contains(&format!("Credential={ID}/")),
        "{r:?}"
    );

    let m = &fake.messages()[0];
    assert_eq!(m.phone, PHONE, "Tencent takes E.164 with the +");
    assert_eq!(m.sign_name.as_deref(), Some("腾讯云"));
    assert_eq!(m.template_id, "449739");
    assert_eq!(m.params.len(), 2);
    assert_eq!(m.params[1], "5", "{m:?}");
    let code = m.params[0].clone();
    assert_eq!(code.len(), 6);
    browser.wrong_then_right(PHONE, &code).await;
    d.stop().await;
}

async fn send_with(mode: Mode) -> (StatusCode, Value, usize) {
    let fake = fake().await;
    fake.set_mode(mode);
    let d = daemon(&fake, |_| {}).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    let n = fake.requests_seen().len();
    d.stop().await;
    (status, body, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_number_codes_map_onto_the_failure_classes() {
    let cases = [
        (
            "InvalidParameterValue.IncorrectPhoneNumber",
            422,
            "invalid_phone",
        ),
        (
            "LimitExceeded.PhoneNumberDailyLimit",
            429,
            "provider_rate_limited",
        ),
        (
            "FailedOperation.TemplateIncorrectOrUnapproved",
            502,
            "provider_unavailable",
        ),
        (
            "FailedOperation.InsufficientBalanceInSmsPackage",
            502,
            "provider_unavailable",
        ),
    ];
    for (code, status, error) in cases {
        let (s, body, n) = send_with(Mode::PerNumber(code.into())).await;
        assert_eq!(s.as_u16(), status, "{code}: {body}");
        assert_eq!(body["error"], error, "{code}");
        assert_eq!(n, 1, "{code} is final, not retried");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_a_configuration_error_and_leaks_nothing() {
    let fake = fake().await;
    let d = daemon(&fake, |t| t.secret_key = Secret::new("not-the-key")).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    let seen = fake.requests_seen();
    assert_eq!(seen.len(), 1, "a signature failure is not retried");
    assert_eq!(seen[0].code, "AuthFailure.SignatureFailure");
    assert!(!body.to_string().contains("13800138000"));
    assert!(fake.messages().is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_errors_are_retried_within_the_budget() {
    let fake = fake().await;
    fake.set_mode(Mode::FailThenOk(2));
    let d = daemon(&fake, |_| {}).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let codes: Vec<String> = fake.requests_seen().into_iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        ["InternalError.Timeout", "InternalError.Timeout", "Ok"]
    );
    assert_eq!(fake.messages().len(), 1);
    d.stop().await;

    let (status, body, n) = send_with(Mode::ServerError).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(n >= 2, "5xx is retried ({n} attempts)");
}

/// The fake refuses what a real verifier refuses: a tampered body, another key, a missing
/// header, an old timestamp. Without this, a fake that accepted anything would prove nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_verifies_signatures_independently() {
    let fake = fake().await;
    let http = reqwest::Client::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = format!(
        r#"{{"PhoneNumberSet":["{PHONE}"],"SmsSdkAppId":"{APP}","TemplateId":"1","TemplateParamSet":["1"]}}"#
    );
    let host = fake.host();
    let ct = "application/json";
    let send = |auth: String, sent_body: String, ts: i64, action: &'static str| {
        let http = http.clone();
        let url = fake.url();
        async move {
            let resp = http
                .post(url)
                .header("content-type", ct)
                .header("authorization", auth)
                .header("x-tc-action", action)
                .header("x-tc-version", "2021-01-11")
                .header("x-tc-region", "ap-guangzhou")
                .header("x-tc-timestamp", ts.to_string())
                .body(sent_body)
                .send()
                .await
                .unwrap();
            let v: Value = resp.json().await.unwrap();
            v["Response"]["Error"]["Code"]
                .as_str()
                .or(v["Response"]["SendStatusSet"][0]["Code"].as_str())
                .unwrap_or_default()
                .to_owned()
        }
    };
    let auth = |key: &str, payload: &str, ts: i64| {
        sign::authorization(&sign::Request {
            secret_id: ID,
            secret_key: key,
            service: "sms",
            host: &host,
            content_type: ct,
            payload: payload.as_bytes(),
            timestamp: ts,
        })
    };
    assert_eq!(
        send(auth(KEY, &body, now), body.clone(), now, "SendSms").await,
        "Ok"
    );
    let tampered = body.replace("13800138000", "13800138001");
    assert_eq!(
        send(auth(KEY, &body, now), tampered, now, "SendSms").await,
        "AuthFailure.SignatureFailure"
    );
    assert_eq!(
        send(auth("other", &body, now), body.clone(), now, "SendSms").await,
        "AuthFailure.SignatureFailure"
    );
    assert_eq!(
        send(
            auth(KEY, &body, now - 600),
            body.clone(),
            now - 600,
            "SendSms"
        )
        .await,
        "AuthFailure.SignatureExpire"
    );
    assert_eq!(
        send(auth(KEY, &body, now), body.clone(), now + 1, "SendSms").await,
        "AuthFailure.SignatureFailure",
        "the timestamp is signed"
    );
    assert_eq!(
        send(auth(KEY, &body, now), body.clone(), now, "SendSmsX").await,
        "InvalidAction"
    );
    assert_eq!(common::fake_tencent::date_of(1_551_113_065), "2019-02-25");
    assert_eq!(common::fake_tencent::date_of(951_782_400), "2000-02-29");
}

fn sdk_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import tencentcloud.sms.v20210111"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The official SDK signs a SendSms; the fake accepts it (so the fake verifies what Tencent's
/// own client produces), and verifyd's signer, given the same request, produces the SDK's
/// `Authorization` byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_agrees_with_the_fake_and_with_verifyd() {
    if !sdk_installed() {
        if std::env::var_os("CI").is_some() {
            panic!("tencentcloud-sdk-python-sms is not installed; CI requires it (.ci/run)");
        }
        eprintln!(
            "skipping: pip install tencentcloud-sdk-python-sms==3.1.153 tencentcloud-sdk-python-common==3.1.195"
        );
        return;
    }
    let fake = fake().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tencent/sdk_send.py");
    let host = fake.host();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &host, ID, KEY, APP])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("OK 2433:"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = fake.requests_seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.code, "Ok");
    let ours = sign::authorization(&sign::Request {
        secret_id: ID,
        secret_key: KEY,
        service: "sms",
        host: &r.host,
        content_type: &r.content_type,
        payload: r.body.as_bytes(),
        timestamp: r.timestamp.parse().unwrap(),
    });
    assert_eq!(ours, r.authorization, "verifyd and the SDK sign alike");
    let m = &fake.messages()[0];
    assert_eq!(m.params, ["123456"]);
}

/// A named Tencent instance joins a route; when it fails transiently the router fails over to
/// the next provider, and the receipt names the instance that delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_tencent_instance_fails_over_to_the_next_provider() {
    let fake = fake().await;
    fake.set_mode(Mode::ServerError);
    let endpoint = fake.url();
    let d = TestDaemon::start(Backend::Sqlite, move |c| {
        let tencent = TencentConfig {
            secret_id: ID.into(),
            secret_key: Secret::new(KEY),
            sms_sdk_app_id: APP.into(),
            template_id: "449739".into(),
            endpoint,
            timeout: Seconds::from_millis(300),
            max_total: Seconds::from_millis(600),
            ..TencentConfig::default()
        };
        let named = |kind| NamedProvider {
            kind,
            timeout: Seconds::from_millis(1000),
            breaker: Default::default(),
            mock: None,
            aliyun: None,
            sns: None,
            tencent: None,
            http: None,
            hook: None,
        };
        c.providers.insert(
            "cn-tencent".into(),
            NamedProvider {
                tencent: Some(tencent),
                ..named(ProviderKind::Tencent)
            },
        );
        c.providers
            .insert("backup".into(), named(ProviderKind::Mock));
        c.routes.insert(
            "*".parse().unwrap(),
            vec!["cn-tencent".into(), "backup".into()],
        );
    })
    .await
    .unwrap();
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(fake.requests_seen().len() >= 2, "tencent was tried first");
    let metrics = reqwest::Client::new()
        .get(d.url("/metrics"))
        .bearer_auth(common::daemon::API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sent = |provider: &str, outcome: &str| {
        metrics.lines().any(|l| {
            l.starts_with("verifyd_sms_sent_total")
                && l.contains(&format!("provider=\"{provider}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
                && l.ends_with(" 1")
        })
    };
    assert!(sent("cn-tencent", "transient"), "{metrics}");
    assert!(sent("backup", "ok"), "{metrics}");
    d.stop().await;
}
