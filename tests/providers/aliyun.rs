//! The Aliyun provider end to end: a real daemon, configured with `provider.kind = "aliyun"`,
//! talking to the fake dysmsapi in `common::fake_aliyun` over HTTP. Covers the README's curl flow,
//! each error class as the client sees it, the retry policy and its time bound, and the fake's
//! own independence (it must reproduce Alibaba's published signatures by itself).

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::TestDaemon;
use common::fake_aliyun::{self, FakeAliyun, Mode};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use verifyd::config::{Backend, Config, ProviderKind};
use verifyd::provider::aliyun::AliyunConfig;
use verifyd::secret::Secret;

const ID: &str = "LTAI5tTestAccessKeyId";
const SECRET: &str = "TestAccessKeySecret0123456789";
const PHONE: &str = "+8613800138000";

/// A daemon on SQLite whose Aliyun provider points at `fake` with short timeouts.
async fn daemon(fake: &FakeAliyun, tweak: impl FnOnce(&mut AliyunConfig)) -> TestDaemon {
    let endpoint = fake.url();
    TestDaemon::start(Backend::Sqlite, move |c| {
        c.provider.kind = ProviderKind::Aliyun;
        let a = &mut c.provider.aliyun;
        a.access_key_id = ID.into();
        a.access_key_secret = Secret::new(SECRET);
        a.sign_name = "验证码测试".into();
        a.template_code = "SMS_154950909".into();
        a.endpoint = endpoint;
        a.timeout = Seconds::from_millis(500);
        a.max_total = Seconds::from_millis(3000);
        tweak(a);
    })
    .await
    .expect("SQLite daemons always start")
}

async fn fake() -> FakeAliyun {
    FakeAliyun::start(ID, SECRET).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_sends_a_signed_post_and_approves() {
    let fake = fake().await;
    let d = daemon(&fake, |_| {}).await;
    let mut browser = d.browser();

    let (status, body) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "pending");

    let seen = fake.requests_seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.status, 200, "{req:?}");
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    for (k, v) in [
        ("Action", "SendSms"),
        ("Version", "2017-05-25"),
        ("Format", "JSON"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("AccessKeyId", ID),
    ] {
        assert_eq!(req.params[k], v, "{k}");
    }

    let messages = fake.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(
        m.phone, "13800138000",
        "mainland numbers go as 11 national digits"
    );
    assert_eq!(m.sign_name, "验证码测试");
    assert_eq!(m.template_code, "SMS_154950909");
    assert_eq!(m.template_param.len(), 1);
    let code = m.template_param["code"].clone();
    assert_eq!(code.len(), 6);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        req.params["TemplateParam"],
        format!(r#"{{"code":"{code}"}}"#)
    );

    browser.wrong_then_right(PHONE, &code).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn international_numbers_keep_their_country_code() {
    let fake = fake().await;
    let d = daemon(&fake, |a| a.template_param_name = "otp".into()).await;
    let (status, body) = d.browser().send_code("+85291234567").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let m = &fake.messages()[0];
    assert_eq!(m.phone, "85291234567");
    assert!(m.template_param.contains_key("otp"), "{m:?}");
    d.stop().await;
}

/// Sends one code with the fake in `mode`; returns the answer and how many requests it saw.
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
async fn illegal_number_is_422_invalid_phone() {
    let (status, body, n) = send_with(Mode::Business("isv.MOBILE_NUMBER_ILLEGAL".into())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_phone");
    assert_eq!(n, 1, "recipient errors are not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_flow_control_is_429_provider_rate_limited() {
    let (status, body, n) = send_with(Mode::Business("isv.BUSINESS_LIMIT_CONTROL".into())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"], "provider_rate_limited");
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_502_and_not_retried() {
    for code in [
        "isv.AMOUNT_NOT_ENOUGH",
        "isv.SMS_TEMPLATE_ILLEGAL",
        "isp.RAM_PERMISSION_DENY",
    ] {
        let (status, body, n) = send_with(Mode::Business(code.into())).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{code}: {body}");
        assert_eq!(body["error"], "provider_unavailable");
        assert_eq!(n, 1, "{code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_502_and_leaks_nothing() {
    let fake = fake().await;
    let d = daemon(&fake, |a| {
        a.access_key_secret = Secret::new("not-the-secret")
    })
    .await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    let seen = fake.requests_seen();
    assert_eq!(seen.len(), 1, "a signature error is not retried");
    assert_eq!(seen[0].code, "SignatureDoesNotMatch");
    let param: BTreeMap<String, String> =
        serde_json::from_str(&seen[0].params["TemplateParam"]).unwrap();
    let text = body.to_string();
    for secret in [param["code"].as_str(), "13800138000", "string to sign"] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(fake.messages().is_empty());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_fresh_nonces() {
    let fake = fake().await;
    fake.set_mode(Mode::FailThenOk(2));
    let d = daemon(&fake, |_| {}).await;
    let (status, body) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let seen = fake.requests_seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen.iter().map(|r| r.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    let nonces: HashSet<&str> = seen
        .iter()
        .map(|r| r.params["SignatureNonce"].as_str())
        .collect();
    assert_eq!(nonces.len(), 3, "each attempt has its own nonce");
    let codes: HashSet<&str> = seen
        .iter()
        .map(|r| r.params["TemplateParam"].as_str())
        .collect();
    assert_eq!(codes.len(), 1, "every attempt carries the same code");
    assert_eq!(fake.messages().len(), 1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_forever_give_up_within_the_budget() {
    let fake = fake().await;
    fake.set_mode(Mode::ServerError);
    let d = daemon(&fake, |a| a.max_total = Seconds::from_millis(1500)).await;
    let started = Instant::now();
    let (status, body) = d.browser().send_code(PHONE).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    assert!(elapsed < Duration::from_millis(1500 + 700), "{elapsed:?}");
    let n = fake.requests_seen().len();
    assert!((3..=12).contains(&n), "{n} attempts");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_gateway_gives_up_within_the_budget() {
    let fake = fake().await;
    fake.set_mode(Mode::Stall(Duration::from_secs(10)));
    let d = daemon(&fake, |a| {
        a.timeout = Seconds::from_millis(300);
        a.max_total = Seconds::from_millis(1000);
    })
    .await;
    let started = Instant::now();
    let (status, body) = d.browser().send_code(PHONE).await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    assert!(elapsed < Duration::from_millis(1000 + 700), "{elapsed:?}");
    assert!(fake.requests_seen().len() >= 2, "a timeout is retried");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_failure_lifts_the_resend_cooldown() {
    let fake = fake().await;
    fake.set_mode(Mode::Business("isv.OUT_OF_SERVICE".into()));
    let d = daemon(&fake, |_| {}).await;
    let mut browser = d.browser();
    let (status, _) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    fake.set_mode(Mode::Ok);
    let (status, body) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = browser.send_code(PHONE).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        body["error"], "resend_too_soon",
        "a delivered code starts the cooldown"
    );
    d.stop().await;
}

/// The fake's independent signer reproduces both published vectors, so agreeing with it means
/// agreeing with Aliyun, not with ourselves.
#[test]
fn fake_reproduces_the_published_vectors() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let sms = map(&[
        ("AccessKeyId", "testId"),
        ("Action", "SendSms"),
        ("Format", "XML"),
        ("OutId", "123"),
        ("PhoneNumbers", "15300000001"),
        ("RegionId", "cn-hangzhou"),
        ("SignName", "阿里云短信测试专用"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
        ("SignatureVersion", "1.0"),
        ("TemplateCode", "SMS_71390007"),
        ("TemplateParam", r#"{"customer":"test"}"#),
        ("Timestamp", "2017-07-12T02:42:19Z"),
        ("Version", "2017-05-25"),
    ]);
    assert_eq!(
        fake_aliyun::signature("GET", &sms, "testSecret").0,
        "zJDF+Lrzhj/ThnlvIToysFRq6t4="
    );
    let rpc = map(&[
        ("AccessKeyId", "testid"),
        ("Action", "DescribeRegions"),
        ("Format", "XML"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2016-02-23T12:46:24Z"),
        ("Version", "2014-05-26"),
    ]);
    assert_eq!(
        fake_aliyun::signature("GET", &rpc, "testsecret").0,
        "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    );
}

/// The fake refuses what Aliyun refuses: a replayed nonce, a GET, a stale timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_refuses_replays_gets_and_stale_timestamps() {
    let fake = fake().await;
    let d = daemon(&fake, |_| {}).await;
    let (status, _) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let original = fake.requests_seen()[0].params.clone();
    let encode = |p: &BTreeMap<String, String>| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(p)
            .finish()
    };
    let http = reqwest::Client::new();
    let post = |body: String| {
        http.post(fake.url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let code = |resp: reqwest::Response| async move {
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        (status, v["Code"].as_str().unwrap().to_owned())
    };

    let replay = post(encode(&original)).await.unwrap();
    assert_eq!(code(replay).await, (400, "SignatureNonceUsed".into()));

    let get = http
        .get(format!("{}?{}", fake.url(), encode(&original)))
        .send()
        .await
        .unwrap();
    assert_eq!(code(get).await.0, 400);

    let mut stale = original.clone();
    stale.insert("Timestamp".into(), "2017-07-12T02:42:19Z".into());
    stale.insert("SignatureNonce".into(), "fresh".into());
    let (sig, _) = fake_aliyun::signature(
        "POST",
        &stale
            .iter()
            .filter(|(k, _)| *k != "Signature")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        SECRET,
    );
    stale.insert("Signature".into(), sig);
    let resp = post(encode(&stale)).await.unwrap();
    assert_eq!(code(resp).await, (400, "InvalidTimeStamp.Expired".into()));
    assert_eq!(fake.messages().len(), 1);
    d.stop().await;
}

/// `[provider.aliyun]` from a file, the secret from the environment; missing keys are named.
#[test]
#[allow(clippy::result_large_err)] // figment's `Jail` closures return its large error by design
fn config_from_file_and_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "aliyun.toml",
            r#"
[provider]
kind = "aliyun"
[provider.aliyun]
access_key_id = "LTAI5t"
sign_name = "验证码测试"
template_code = "SMS_154950909"
"#,
        )?;
        let path = std::path::Path::new("aliyun.toml");
        let err = Config::load(Some(path), true).unwrap_err().to_string();
        assert!(err.contains("provider.aliyun.access_key_secret"), "{err}");

        jail.set_env(
            "VERIFYD_PROVIDER__ALIYUN__ACCESS_KEY_SECRET",
            "from-env-Secret",
        );
        let c = Config::load(Some(path), true).map_err(|e| e.to_string())?;
        let a = &c.provider.aliyun;
        assert_eq!(a.access_key_secret.expose(), "from-env-Secret");
        assert_eq!(a.template_param_name, "code");
        assert_eq!(a.endpoint, "https://dysmsapi.aliyuncs.com/");
        assert_eq!(
            (a.timeout, a.max_total),
            (Seconds::from_secs(5), Seconds::from_secs(10))
        );
        assert!(!format!("{c:?}").contains("from-env-Secret"));

        jail.create_file(
            "no-sign.toml",
            "[provider]\nkind = \"aliyun\"\n[provider.aliyun]\naccess_key_id = \"x\"\ntemplate_code = \"SMS_1\"\n",
        )?;
        let err = Config::load(Some(std::path::Path::new("no-sign.toml")), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("provider.aliyun.sign_name"), "{err}");

        jail.create_file("typo.toml", "[provider.aliyun]\nsignname = \"x\"\n")?;
        let err = Config::load(Some(std::path::Path::new("typo.toml")), true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("provider.aliyun.signname"), "{err}");
        Ok(())
    });
}

fn capture_logs() -> common::logs::Capture {
    common::logs::capture("debug")
}

/// The signature error echoes phone and code; the logs get only its Code and RequestId, and
/// phone numbers appear masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_never_carry_the_phone_or_the_code() {
    let logs = capture_logs();
    let fake = fake().await;
    let d = daemon(&fake, |a| {
        a.access_key_secret = Secret::new("not-the-secret")
    })
    .await;
    let (status, _) = d.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    fake.set_mode(Mode::FailThenOk(1));
    let d2 = daemon(&fake, |_| {}).await;
    let (status, _) = d2.browser().send_code(PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    d.stop().await;
    d2.stop().await;

    let text = logs.text();
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(text.contains("+86138****8000"), "{text}");
    let mut secrets = vec!["13800138000".to_owned(), "string to sign".to_owned()];
    for r in fake.requests_seen() {
        let p: BTreeMap<String, String> = serde_json::from_str(&r.params["TemplateParam"]).unwrap();
        let code = &p["code"];
        assert!(
            !common::logs::mentions_code(&text, code),
            "{code:?} leaked into the logs:\n{text}"
        );
        secrets.push(r.params["Signature"].clone());
    }
    for s in &secrets {
        assert!(
            !text.contains(s.as_str()),
            "{s:?} leaked into the logs:\n{text}"
        );
    }
}
