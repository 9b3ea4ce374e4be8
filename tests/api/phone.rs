//! Phone numbers as an attacker writes them, end to end: another country's number behind `+86`,
//! zero-padded and oddly written forms of one number, premium-rate lines, and what the SMS
//! gateway is finally asked to deliver to. Every number is validated with libphonenumber's
//! metadata and keyed by one canonical E.164 form before any list, limit or provider sees it.

use crate::common;
use verifyd::seconds::Seconds;

use common::no_limits;

use common::daemon::TestDaemon;
use common::fake_aliyun::FakeAliyun;
use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::StatusCode;
use serde_json::json;
use verifyd::config::{Backend, Config, ProviderKind};
use verifyd::secret::Secret;

const CN: &str = "+8613800138000";

/// `+86` followed by numbers of other places: Hong Kong and UK mobiles, an Iridium satellite
/// phone, and a Hong Kong number glued behind +86 that happens to fit a mainland landline.
const BEHIND_PLUS_86: [&str; 4] = [
    "+86 9123 4567",
    "+86 7400 123456",
    "+86 8816 1234 5678",
    "+86 852 9123 4567",
];

on_both_stores! {
    async fn foreign_numbers_behind_plus_86_pass_no_list_and_spend_no_quota(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.countries.allow = vec!["+86".parse().unwrap()];
            c.countries.limits.insert("+86".parse().unwrap(), 1);
            c.pumping.enabled = true;
            c.pumping.min_sample = 1;
            c.pumping.min_conversion = 1.0;
        })
        .await
        else {
            return;
        };
        for phone in BEHIND_PLUS_86 {
            let (s, v) = d.browser().send_code(phone).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{phone}: {v}");
            let error = v["error"].as_str().unwrap();
            assert!(error == "invalid_phone" || error == "unsupported_number_type", "{phone}: {v}");
        }
        // The real Hong Kong number is Hong Kong's, whatever list it is measured against.
        let (s, v) = d.browser().send_code("+852 9123 4567").await;
        assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("destination_blocked")));
        assert!(d.messages().is_empty(), "{:?}", d.messages());
        let app = &d.daemon.as_ref().unwrap().app;
        assert!(app.store.pumping_states().await.unwrap().is_empty(), "the +86 breaker counted nothing");
        // +86's hourly quota of one is still there for a Chinese mobile.
        assert_eq!(d.browser().send_code(CN).await.0, StatusCode::ACCEPTED);
        assert_eq!(d.messages()[0]["to"], CN);
        d.stop().await;
    }

    async fn differently_written_forms_share_one_send_counter(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.per_phone.max_sends = 5;
        })
        .await
        else {
            return;
        };
        let forms = [
            "+8613800138000",
            "+86 0 138 0013 8000",
            "+86 (138) 0013-8000",
            "+86 138.0013.8000",
            "＋８６ １３８ ００１３ ８０００",
            "+86 0138-0013-8000",
        ];
        let mut answers = vec![];
        for form in forms {
            answers.push(d.browser().send_code(form).await);
        }
        for (form, (s, v)) in forms.iter().zip(&answers).take(5) {
            assert_eq!(*s, StatusCode::ACCEPTED, "{form}: {v}");
        }
        assert_eq!(answers[5].0, StatusCode::TOO_MANY_REQUESTS, "{:?}", answers[5]);
        assert_eq!(answers[5].1["error"], "too_many_sends");
        let to: Vec<_> = d.messages().iter().map(|m| m["to"].clone()).collect();
        assert_eq!(to, vec![json!(CN); 5]);
        d.stop().await;
    }

    async fn differently_written_forms_share_one_lock_out(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.per_phone.max_failed_checks = 3;
            c.verification.max_attempts = 10;
        })
        .await
        else {
            return;
        };
        let mut b = d.browser();
        assert_eq!(b.send_code("+86 0 138 0013 8000").await.0, StatusCode::ACCEPTED);
        let code = d.last_code(CN).expect("the code went to the canonical number");
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for form in ["+8613800138000", "+86 0 13800138000", "＋８６-１３８-００１３-８０００"] {
            let (s, v) = b.check_code(form, wrong).await;
            assert_eq!((s, v["status"].clone()), (StatusCode::OK, json!("pending")), "{form}: {v}");
        }
        // Three wrong guesses, however written, locked the one number: the right code waits.
        for form in [CN, "+86 0 138 0013 8000"] {
            let (s, v) = b.check_code(form, &code).await;
            assert_eq!((s, v["error"].clone()), (StatusCode::TOO_MANY_REQUESTS, json!("too_many_checks")), "{form}");
        }
        d.stop().await;
    }

    async fn premium_rate_and_other_paid_lines_are_refused(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |c| {
            no_limits(c);
            c.global.max_sends_per_hour = 1;
        })
        .await
        else {
            return;
        };
        for phone in ["+1 900 234 5678", "+44 871 234 5678", "+1 800 555 0100"] {
            let (s, v) = d.browser().send_code(phone).await;
            assert_eq!((s, v["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("unsupported_number_type")), "{phone}: {v}");
            let (s, v) = d.browser().check_code(phone, "123456").await;
            assert_eq!((s, v["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("unsupported_number_type")), "{phone}: {v}");
        }
        let (s, v) = d.browser().send_code("+1 555 555 0100").await;
        assert_eq!((s, v["error"].clone()), (StatusCode::UNPROCESSABLE_ENTITY, json!("invalid_phone")), "{v}");
        // The seed's route refuses them the same way.
        let r = d.http.get(d.url("/sms_send/?phone=%2B19002345678")).send().await.unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["Code"], "unsupported_number_type", "{v}");
        assert!(d.messages().is_empty());
        // Nothing was counted: the global budget of one is still there.
        assert_eq!(d.browser().send_code(CN).await.0, StatusCode::ACCEPTED);
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_types_can_admit_premium_rate_on_purpose() {
    let d = TestDaemon::start(Backend::Sqlite, |c| {
        use verifyd::phone::NumberType;
        c.verification.number_types = vec![NumberType::Mobile, NumberType::PremiumRate];
    })
    .await
    .unwrap();
    assert_eq!(
        d.browser().send_code("+1 900 234 5678").await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(d.messages()[0]["to"], "+19002345678");
    // fixed_line_or_mobile is no longer listed: a US number is refused now.
    let (s, v) = d.browser().send_code("+1 201 555 0123").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"], "unsupported_number_type");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_number_written_with_spaces_still_sends_nothing() {
    let d = TestDaemon::start(Backend::Sqlite, |c| {
        c.verification
            .test_numbers
            .insert("+86 138 0013 8000".into(), "246810".into());
    })
    .await
    .unwrap();
    let mut b = d.browser();
    assert_eq!(
        b.send_code("+86 0 13800138000").await.0,
        StatusCode::ACCEPTED
    );
    assert!(d.messages().is_empty(), "{:?}", d.messages());
    let (s, v) = b.check_code(CN, "246810").await;
    assert_eq!(
        (s, v["status"].clone()),
        (StatusCode::OK, json!("approved"))
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_is_given_the_parsed_numbers_destination() {
    const ID: &str = "LTAI5tPhoneAccessKeyId";
    const SECRET: &str = "PhoneAccessKeySecret0123456789";
    let fake = FakeAliyun::start(ID, SECRET).await;
    let endpoint = fake.url();
    let d = TestDaemon::start(Backend::Sqlite, move |c| {
        no_limits(c);
        c.provider.kind = ProviderKind::Aliyun;
        let a = &mut c.provider.aliyun;
        a.access_key_id = ID.into();
        a.access_key_secret = Secret::new(SECRET);
        a.sign_name = "验证码测试".into();
        a.template_code = "SMS_154950909".into();
        a.endpoint = endpoint;
        a.timeout = Seconds::from_millis(500);
        a.max_total = Seconds::from_millis(3000);
    })
    .await
    .unwrap();
    // Another country's number behind +86 never reaches the gateway: cutting `86` off it
    // would have sent `91234567…` or `852…`, which Aliyun reads as international.
    for phone in BEHIND_PLUS_86 {
        assert_eq!(
            d.browser().send_code(phone).await.0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
    assert!(fake.requests_seen().is_empty());
    for (written, destination) in [
        ("+86 0 138 0013 8000", "13800138000"),
        ("+852 9123 4567", "85291234567"),
        ("+44 07400 123456", "447400123456"),
    ] {
        let (s, v) = d.browser().send_code(written).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{written}: {v}");
        assert_eq!(fake.messages().last().unwrap().phone, destination);
    }
    d.stop().await;
}

/// The error `text` as a config file gets, or `None` when it loads.
fn config_error(text: &str) -> Option<String> {
    Config::from_figment(Figment::from(Toml::string(text)))
        .err()
        .map(|e| e.to_string())
}

#[test]
fn numbers_and_country_keys_in_the_config_are_validated_at_load() {
    for (text, key) in [
        (
            "[verification.test_numbers]\n\"+15555550100\" = \"000000\"\n",
            "verification.test_numbers",
        ),
        (
            "[verification.test_numbers]\n\"+19002345678\" = \"000000\"\n",
            "verification.test_numbers",
        ),
        (
            "[verification.test_numbers]\n\"+8613800138000\" = \"000000\"\n\"+86 0 138 0013 8000\" = \"111111\"\n",
            "verification.test_numbers",
        ),
        ("[countries]\nallow = [\"+999\"]\n", "countries.allow"),
        ("[countries]\ndeny = [\"+86 \"]\n", "countries.deny"),
        ("[countries.limits]\n\"+28\" = 5\n", "countries.limits"),
        (
            "[verification]\nnumber_types = []\n",
            "verification.number_types",
        ),
        (
            "[verification]\nnumber_types = [\"mobile\", \"premium\"]\n",
            "verification.number_types",
        ),
    ] {
        let err = config_error(text).unwrap_or_else(|| panic!("{text} loaded"));
        assert!(err.contains(key), "{text}: {err}");
    }
    let ok = "[verification]\nnumber_types = [\"mobile\", \"fixed_line_or_mobile\", \"fixed_line\", \
              \"voip\", \"toll_free\", \"premium_rate\", \"shared_cost\", \"personal_number\", \
              \"pager\", \"uan\", \"voicemail\"]\n\
              [verification.test_numbers]\n\"+86 138 0013 8000\" = \"000000\"\n\
              [countries]\nallow = [\"+86\", \"+852\"]\n";
    assert_eq!(config_error(ok), None);
}
