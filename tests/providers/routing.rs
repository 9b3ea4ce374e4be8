//! Routing and failover end to end: named providers behind `[routes]`, a fake Aliyun that fails in
//! chosen ways, SNS on moto (or the capturing fake) and the mock behind it. Covers failover on
//! transient errors, no failover on recipient errors, the breaker as `/readyz` shows it, message
//! templates by prefix and locale, and start-up validation of the routing configuration.

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::TestDaemon;
use common::fake_aliyun::{FakeAliyun, Mode};
use common::fake_sns::{Answer, FakeSns};
use common::moto::Moto;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use verifyd::config::{Backend, Config, MockConfig, ProviderKind};
use verifyd::provider::aliyun::AliyunConfig;
use verifyd::provider::breaker::BreakerConfig;
use verifyd::provider::config::NamedProvider;
use verifyd::provider::sns::SnsConfig;
use verifyd::secret::Secret;

const ALIYUN_ID: &str = "LTAI5tTestAccessKeyId";
const ALIYUN_SECRET: &str = "TestAccessKeySecret0123456789";
const CN: &str = "+8613800138000";

fn named(kind: ProviderKind) -> NamedProvider {
    NamedProvider {
        kind,
        timeout: Seconds::from_millis(5000),
        breaker: BreakerConfig::default(),
        mock: None,
        aliyun: None,
        sns: None,
        tencent: None,
        http: None,
        hook: None,
    }
}

/// An Aliyun instance pointed at `fake`, giving up quickly on a failing gateway.
fn aliyun(fake: &FakeAliyun, breaker: BreakerConfig) -> NamedProvider {
    NamedProvider {
        breaker,
        aliyun: Some(AliyunConfig {
            access_key_id: ALIYUN_ID.into(),
            access_key_secret: Secret::new(ALIYUN_SECRET),
            sign_name: "验证码测试".into(),
            template_code: "SMS_154950909".into(),
            endpoint: fake.url(),
            timeout: Seconds::from_millis(300),
            max_total: Seconds::from_millis(600),
            ..AliyunConfig::default()
        }),
        ..named(ProviderKind::Aliyun)
    }
}

fn sns(url: &str, id: &str, secret: &str) -> NamedProvider {
    NamedProvider {
        sns: Some(SnsConfig {
            region: "us-east-1".into(),
            access_key_id: id.into(),
            secret_access_key: Secret::new(secret),
            endpoint_url: Some(url.into()),
            timeout: Seconds::from_millis(3000),
            ..SnsConfig::default()
        }),
        ..named(ProviderKind::Sns)
    }
}

/// A mock instance writing to the test daemon's outbox, so `TestDaemon::messages` sees it.
fn mock(c: &Config) -> NamedProvider {
    NamedProvider {
        mock: Some(MockConfig {
            outbox: c.provider.mock.outbox.clone(),
            quiet: true,
        }),
        ..named(ProviderKind::Mock)
    }
}

fn routes(
    pairs: &[(&str, &[&str])],
) -> std::collections::BTreeMap<verifyd::provider::routing::RouteKey, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                k.parse().unwrap(),
                v.iter().map(|s| s.to_string()).collect(),
            )
        })
        .collect()
}

async fn start(tweak: impl FnOnce(&mut Config)) -> TestDaemon {
    TestDaemon::start(Backend::Sqlite, tweak)
        .await
        .expect("SQLite daemons always start")
}

async fn readyz(d: &TestDaemon) -> (StatusCode, Value) {
    let resp = d.http.get(d.url("/readyz")).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn capture_logs() -> common::logs::Capture {
    common::logs::capture("debug")
}

/// The issue's scenario: `+86 → [aliyun, sns]`, Aliyun answering 5xx, SNS on moto with
/// signatures checked. The code arrives through SNS, the logs say so, and `/readyz` shows the
/// Aliyun breaker open (it opens after one failure here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_5xx_falls_over_to_sns_on_moto() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let logs = capture_logs();
    let fake = FakeAliyun::start(ALIYUN_ID, ALIYUN_SECRET).await;
    fake.set_mode(Mode::ServerError);
    let d = start(|c| {
        let breaker = BreakerConfig {
            failures: 1,
            cooldown: 300,
            ..BreakerConfig::default()
        };
        c.providers.insert("aliyun".into(), aliyun(&fake, breaker));
        c.providers.insert(
            "sns".into(),
            sns(&moto.url, &moto.access_key_id, &moto.secret_access_key),
        );
        c.routes = routes(&[("+86", &["aliyun", "sns"]), ("*", &["sns"])]);
    })
    .await;
    let (_, body) = readyz(&d).await;
    assert_eq!(
        body["providers"],
        json!({"aliyun": "closed", "sns": "closed"})
    );

    let mut browser = d.browser();
    let (status, body) = browser.send_code(CN).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(!fake.requests_seen().is_empty(), "aliyun was tried first");
    assert!(fake.messages().is_empty());
    let sms = moto.sms().await;
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert_eq!(sms[0].phone_number, CN);
    let code: String = sms[0]
        .message
        .chars()
        .filter(char::is_ascii_digit)
        .take(6)
        .collect();
    assert_eq!(
        sms[0].message,
        format!("Your verification code is {code}. It expires in 5 minutes.")
    );
    let (status, body) = browser.check_code(CN, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");

    let (status, body) = readyz(&d).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["providers"],
        json!({"aliyun": "open", "sns": "closed"})
    );
    assert_eq!(body["delivery"], "ok", "the * route (sns) is closed");
    let stats = d.daemon.as_ref().unwrap().app.provider.stats();
    assert_eq!((stats[0].name.as_str(), stats[0].failed), ("aliyun", 1));
    assert_eq!((stats[1].name.as_str(), stats[1].delivered), ("sns", 1));
    d.stop().await;

    let text = logs.text();
    // Other tests of this binary log into the same capture: look for this delivery's line.
    assert!(
        text.lines()
            .any(|l| l.contains("code delivered to provider")
                && l.contains("+86138****8000")
                && l.contains("provider=sns")),
        "no delivery line through sns:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("provider failed") && l.contains("provider=aliyun")),
        "{text}"
    );
    assert!(
        !common::logs::mentions_code(&text, &code),
        "the code leaked into the logs"
    );
}

/// A recipient error means the number is bad: no other provider is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_error_does_not_fall_over() {
    let fake = FakeAliyun::start(ALIYUN_ID, ALIYUN_SECRET).await;
    fake.set_mode(Mode::Business("isv.MOBILE_NUMBER_ILLEGAL".into()));
    let backup = FakeSns::start(vec![Answer::Ok]).await;
    let d = start(|c| {
        c.providers
            .insert("aliyun".into(), aliyun(&fake, BreakerConfig::default()));
        c.providers
            .insert("sns".into(), sns(&backup.url(), "AKID", "secret"));
        c.routes = routes(&[("+86", &["aliyun", "sns"]), ("*", &["sns"])]);
    })
    .await;
    let (status, body) = d.browser().send_code(CN).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_phone");
    assert_eq!(fake.requests_seen().len(), 1);
    assert!(backup.requests().is_empty(), "sns was not asked");
    let (_, body) = readyz(&d).await;
    assert_eq!(body["providers"]["aliyun"], "closed");
    d.stop().await;
}

/// A configuration error on the first provider falls over too (and is logged as an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_error_falls_over() {
    let fake = FakeAliyun::start(ALIYUN_ID, ALIYUN_SECRET).await;
    fake.set_mode(Mode::Business("isv.AMOUNT_NOT_ENOUGH".into()));
    let d = start(|c| {
        c.providers
            .insert("aliyun".into(), aliyun(&fake, BreakerConfig::default()));
        c.providers.insert("backup".into(), mock(c));
        c.routes = routes(&[("*", &["aliyun", "backup"])]);
    })
    .await;
    let (status, body) = d.browser().send_code(CN).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(d.messages().len(), 1);
    assert_eq!(d.messages()[0]["to"], CN);
    d.stop().await;
}

/// After `failures` transient failures the breaker opens: the next sends skip Aliyun entirely,
/// `/readyz` shows it, and with no provider left on the `*` route, delivery is "unavailable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_and_later_sends_skip_the_provider() {
    let fake = FakeAliyun::start(ALIYUN_ID, ALIYUN_SECRET).await;
    fake.set_mode(Mode::ServerError);
    let d = start(|c| {
        let breaker = BreakerConfig {
            failures: 2,
            cooldown: 600,
            ..BreakerConfig::default()
        };
        c.providers.insert("aliyun".into(), aliyun(&fake, breaker));
        c.providers.insert("backup".into(), mock(c));
        c.routes = routes(&[("+86", &["aliyun", "backup"]), ("*", &["aliyun"])]);
    })
    .await;
    for (i, phone) in ["+8613800138001", "+8613800138002"].iter().enumerate() {
        let (status, body) = d.browser().send_code(phone).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let (_, ready) = readyz(&d).await;
        let expected = if i == 0 { "closed" } else { "open" };
        assert_eq!(ready["providers"]["aliyun"], expected, "after send {i}");
    }
    let tried = fake.requests_seen().len();
    assert!(tried >= 2, "{tried}");

    let (status, body) = d.browser().send_code("+8613800138003").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(fake.requests_seen().len(), tried, "aliyun was skipped");
    assert_eq!(d.messages().len(), 3, "the backup delivered all three");

    // Numbers outside +86 have only aliyun: skipped, so 503 at once.
    let (status, body) = d.browser().send_code("+12015550123").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "provider_unavailable");
    assert_eq!(fake.requests_seen().len(), tried);

    let (status, ready) = readyz(&d).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "open breakers do not make the daemon unready"
    );
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["delivery"], "unavailable");
    assert_eq!(
        ready["providers"],
        json!({"aliyun": "open", "backup": "closed"})
    );
    let stats = d.daemon.as_ref().unwrap().app.provider.stats();
    assert_eq!(stats[0].skipped, 2);
    d.stop().await;
}

/// A send that outlasts the provider's `timeout_ms` is cut off and the next provider delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_is_cut_off_by_its_timeout() {
    let slow = FakeSns::start(vec![Answer::Stall(std::time::Duration::from_secs(20))]).await;
    let started = std::time::Instant::now();
    let d = start(|c| {
        let mut s = sns(&slow.url(), "AKID", "secret");
        s.timeout = Seconds::from_millis(700);
        c.providers.insert("slow".into(), s);
        c.providers.insert("backup".into(), mock(c));
        c.routes = routes(&[("*", &["slow", "backup"])]);
    })
    .await;
    let (status, body) = d.browser().send_code(CN).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(slow.requests().len(), 1);
    assert_eq!(d.messages().len(), 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(8));
    d.stop().await;
}

/// Message text by locale first, then by the longest prefix, then the default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_by_locale_and_prefix() {
    let d = start(|c| {
        let t = &mut c.verification.templates;
        t.insert(
            "+86".parse().unwrap(),
            "您的验证码是{code}，{minutes}分钟内有效。".into(),
        );
        t.insert("fr".parse().unwrap(), "Votre code : {code}".into());
    })
    .await;
    let mut browser = d.browser();
    let (status, _) = browser.send_code(CN).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = browser
        .post(
            "/v1/verifications",
            json!({"phone": "+8613800138009", "locale": "fr-CA"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    d.browser().send_code("+12015550123").await;
    let texts: Vec<(String, String)> = d
        .messages()
        .iter()
        .map(|m| {
            let code = m["code"].as_str().unwrap();
            (
                m["to"].as_str().unwrap().to_owned(),
                m["text"].as_str().unwrap().replace(code, "<code>"),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [
            (CN.into(), "您的验证码是<code>，5分钟内有效。".into()),
            ("+8613800138009".into(), "Votre code : <code>".into()),
            (
                "+12015550123".into(),
                "Your verification code is <code>. It expires in 5 minutes.".into()
            ),
        ]
    );
    d.stop().await;
}

/// Loads `text` as the config file; the error message, or `None` when it loads.
#[allow(clippy::result_large_err)] // figment's `Jail` closures return its large error by design
fn load_error(text: &str) -> Option<String> {
    let mut out = None;
    figment::Jail::expect_with(|jail| {
        jail.create_file("c.toml", text)?;
        out = Config::load(Some(Path::new("c.toml")), true)
            .err()
            .map(|e| e.to_string());
        Ok(())
    });
    out
}

const NAMED: &str = r#"
[providers.cn]
kind = "aliyun"
timeout = 8
breaker = { failures = 3, cooldown = 60 }
[providers.cn.aliyun]
access_key_id = "LTAI5t"
access_key_secret = "s"
sign_name = "验证码测试"
template_code = "SMS_154950909"
max_total = 6

[providers.global]
kind = "sns"
[providers.global.sns]
region = "us-east-1"

[providers.dev]
kind = "mock"
"#;

#[test]
#[allow(clippy::result_large_err)] // figment's `Jail` closures return its large error by design
fn a_complete_routing_config_loads() {
    let text = format!(
        "{NAMED}\n[routes]\n\"+86\" = [\"cn\", \"global\"]\n\"*\" = [\"global\", \"dev\"]\n"
    );
    assert_eq!(load_error(&text), None);
    let mut loaded = None;
    figment::Jail::expect_with(|jail| {
        jail.create_file("c.toml", &text)?;
        jail.set_env("VERIFYD_PROVIDERS__GLOBAL__SNS__ACCESS_KEY_ID", "AKIAENV");
        jail.set_env(
            "VERIFYD_PROVIDERS__GLOBAL__SNS__SECRET_ACCESS_KEY",
            "from-env",
        );
        loaded = Some(Config::load(Some(Path::new("c.toml")), true).map_err(|e| e.to_string())?);
        Ok(())
    });
    let c = loaded.unwrap();
    assert_eq!(
        c.providers["cn"].breaker,
        BreakerConfig {
            failures: 3,
            cooldown: 60,
            ..BreakerConfig::default()
        }
    );
    assert_eq!(
        c.providers["global"].timeout,
        Seconds::from_secs(10),
        "the default"
    );
    let s = c.providers["global"].sns.as_ref().unwrap();
    assert_eq!(s.secret_access_key.expose(), "from-env");
    let cn: verifyd::provider::routing::RouteKey = "+86".parse().unwrap();
    assert_eq!(c.routes[&cn], ["cn", "global"]);
    assert!(!toml::to_string(&c).unwrap().contains("from-env"));
}

#[test]
fn routing_config_errors_name_the_key() {
    let cases: &[(&str, &str)] = &[
        // A route naming a provider that does not exist.
        (
            "[routes]\n\"*\" = [\"global\", \"backup\"]\n",
            "routes.\"*\"",
        ),
        // No default route.
        (
            "[routes]\n\"+86\" = [\"cn\"]\n",
            "a \"*\" route is required",
        ),
        // Bad route keys and lists.
        (
            "[routes]\n\"86\" = [\"cn\"]\n\"*\" = [\"dev\"]\n",
            "`routes.86` (from TOML file c.toml): \"86\": route keys are \"*\" or an E.164 prefix",
        ),
        ("[routes]\n\"*\" = []\n", "at least one provider"),
        ("[routes]\n\"*\" = [\"dev\", \"dev\"]\n", "listed twice"),
        // Unknown keys inside a provider table, named with their path.
        (
            "[providers.ali]\nkind = \"aliyun\"\n[providers.ali.aliyun]\nsignname = \"x\"\n[routes]\n\"*\" = [\"cn\"]\n",
            "providers.ali.aliyun.signname",
        ),
        (
            "[providers.extra]\nkind = \"mock\"\ntimeout_s = 5\n[routes]\n\"*\" = [\"cn\"]\n",
            "providers.extra.timeout_s",
        ),
        (
            "[providers.dev.breaker]\nfailure = 5\n[routes]\n\"*\" = [\"cn\"]\n",
            "providers.dev.breaker.failure",
        ),
        (
            "[providers.sms]\nkind = \"sns\"\n[providers.sms.sns]\nregion = \"us-east-1\"\nsender = \"x\"\n[routes]\n\"*\" = [\"cn\"]\n",
            "providers.sms.sns.sender",
        ),
        // Timeouts that could not all run within one request.
        (
            "[providers.slow]\nkind = \"mock\"\ntimeout_ms = 25000\n[routes]\n\"*\" = [\"cn\", \"slow\"]\n",
            "add up to 33 s",
        ),
    ];
    for (extra, expected) in cases {
        let err =
            load_error(&format!("{NAMED}\n{extra}")).unwrap_or_else(|| panic!("{extra:?} loaded"));
        assert!(err.contains(expected), "{extra:?}: {err}");
    }
}

#[test]
fn provider_tables_must_match_their_kind() {
    let err = load_error("[providers.x]\nkind = \"aliyun\"\n[routes]\n\"*\" = [\"x\"]\n").unwrap();
    assert!(err.contains("providers.x.aliyun"), "{err}");
    assert!(err.contains("required"), "{err}");
    let err = load_error(
        "[providers.x]\nkind = \"mock\"\n[providers.x.sns]\nregion = \"us-east-1\"\n[routes]\n\"*\" = [\"x\"]\n",
    )
    .unwrap();
    assert!(err.contains("providers.x.sns"), "{err}");
    let err = load_error("[providers.x]\ntimeout_ms = 5\n[routes]\n\"*\" = [\"x\"]\n").unwrap();
    assert!(err.contains("kind"), "{err}");
    let err = load_error("[providers.x]\nkind = \"twilio\"\n[routes]\n\"*\" = [\"x\"]\n").unwrap();
    assert!(
        err.contains("providers.x.kind") || err.contains("twilio"),
        "{err}"
    );
    let err =
        load_error("[providers.Big]\nkind = \"mock\"\n[routes]\n\"*\" = [\"Big\"]\n").unwrap();
    assert!(err.contains("providers.Big"), "{err}");
}

#[test]
fn single_and_named_shapes_do_not_mix() {
    let err = load_error(&format!(
        "[provider]\nkind = \"mock\"\n{NAMED}\n[routes]\n\"*\" = [\"dev\"]\n"
    ))
    .unwrap();
    assert!(err.contains("either [provider] or [providers"), "{err}");
    let err = load_error("[routes]\n\"*\" = [\"mock\"]\n").unwrap();
    assert!(err.contains("routes need named providers"), "{err}");
    let err = load_error(NAMED).unwrap();
    assert!(err.contains("a \"*\" route is required"), "{err}");
}

#[test]
fn templates_too_long_for_one_sms_are_refused() {
    let long = "x".repeat(150);
    let err = load_error(&format!("[verification]\ntemplate = \"{long} {{code}}\"\n")).unwrap();
    assert!(err.contains("verification.template"), "{err}");
    assert!(err.contains("161") && err.contains("160"), "{err}");
    let zh = "码".repeat(61);
    let err = load_error(&format!(
        "[verification.templates]\n\"zh\" = \"{zh}{{code}}\"\n"
    ))
    .unwrap();
    assert!(
        err.contains("verification.templates") && err.contains("UCS-2"),
        "{err}"
    );
    let err = load_error("[verification.templates]\n\"+86\" = \"no code\"\n").unwrap();
    assert!(err.contains("{code}"), "{err}");
    assert_eq!(
        load_error(
            "[verification.templates]\n\"+86\" = \"验证码{code}\"\n\"zh-TW\" = \"驗證碼{code}\"\n"
        ),
        None
    );
}

/// The first TOML block after `heading` in docs/providers.md.
fn readme_example(heading: &str) -> String {
    let readme = include_str!("../../docs/providers.md");
    let section = &readme[readme.find(heading).expect("heading in docs/providers.md")..];
    let start = section.find("```toml\n").expect("a TOML block") + "```toml\n".len();
    let len = section[start..].find("```").unwrap();
    section[start..start + len].to_owned()
}

/// The README's SNS and routing examples load as they are, given their secrets from the
/// environment as the README says.
#[test]
#[allow(clippy::result_large_err)] // figment's `Jail` closures return its large error by design
fn the_readme_examples_load() {
    for (heading, env) in [
        (
            "### AWS SNS",
            Some("VERIFYD_PROVIDER__SNS__SECRET_ACCESS_KEY"),
        ),
        (
            "### Routing and failover",
            Some("VERIFYD_PROVIDERS__ALIYUN__ALIYUN__ACCESS_KEY_SECRET"),
        ),
        ("### Message text", None),
    ] {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", &readme_example(heading))?;
            if let Some(env) = env {
                jail.set_env(env, "from-env");
            }
            Config::load(Some(Path::new("c.toml")), true).map_err(|e| format!("{heading}: {e}"))?;
            Ok(())
        });
    }
}
