//! Delivery receipts end to end, on both stores: a backend sends through Aliyun or Tencent (the
//! fakes), the gateway's push arrives at `/v1/receipts/{instance}/{token}` in its documented
//! format, and `GET /v1/verifications/{id}` and `/metrics` show what happened. Written as an
//! attacker would try the endpoint too: wrong and missing tokens, other instances' tokens,
//! unknown ids, replays, contradicting late receipts, huge batches.

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::{API_KEY, TestDaemon};
use common::fake_aliyun::FakeAliyun;
use common::fake_tencent::FakeTencent;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use verifyd::config::{Config, ProviderKind};
use verifyd::provider::breaker::BreakerConfig;
use verifyd::provider::config::NamedProvider;
use verifyd::provider::tencent::TencentConfig;
use verifyd::secret::Secret;

const TOKEN: &str = "rcpt-token-0123456789abcdef";
const PHONE: &str = "+8613800138000";

fn aliyun_config(c: &mut Config, fake: &FakeAliyun) {
    c.provider.kind = ProviderKind::Aliyun;
    let a = &mut c.provider.aliyun;
    a.access_key_id = "LTAI5tTestAccessKeyId".into();
    a.access_key_secret = Secret::new("TestAccessKeySecret0123456789");
    a.sign_name = "验证码测试".into();
    a.template_code = "SMS_154950909".into();
    a.endpoint = fake.url();
    a.receipt_token = Secret::new(TOKEN);
    a.timeout = Seconds::from_millis(500);
    a.max_total = Seconds::from_millis(2000);
}

fn tencent_config(fake: &FakeTencent) -> TencentConfig {
    TencentConfig {
        secret_id: "AKIDtest".into(),
        secret_key: Secret::new("tencent-key"),
        sms_sdk_app_id: "1400000001".into(),
        template_id: "1".into(),
        endpoint: fake.url(),
        receipt_token: Secret::new(TOKEN),
        timeout: Seconds::from_millis(300),
        max_total: Seconds::from_millis(600),
        ..TencentConfig::default()
    }
}

/// A backend send: a fresh session, then the send; returns the delivery id.
async fn backend_send(d: &TestDaemon, phone: &str) -> String {
    let (status, s) = d.api(Method::POST, "/v1/sessions", None).await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let body = json!({ "phone": phone, "session": s["key"] });
    let (status, sent) = d.api(Method::POST, "/v1/verifications", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let id = sent["id"]
        .as_str()
        .expect("backends get the delivery id")
        .to_owned();
    assert!(id.starts_with("dlv_"), "{id}");
    id
}

async fn push(d: &TestDaemon, path: &str, body: &Value) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(d.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    common::daemon::into_json(resp).await
}

async fn delivery(d: &TestDaemon, id: &str) -> Value {
    let (status, v) = d
        .api(Method::GET, &format!("/v1/verifications/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

async fn metrics(d: &TestDaemon) -> String {
    reqwest::Client::new()
        .get(d.url("/metrics"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn has(metrics: &str, prefix: &str, labels: &[&str], value: &str) -> bool {
    metrics.lines().any(|l| {
        l.starts_with(prefix)
            && labels.iter().all(|x| l.contains(x))
            && l.ends_with(&format!(" {value}"))
    })
}

fn aliyun_report(biz_id: &str, success: bool, code: &str) -> Value {
    json!({
        "phone_number": "13800138000", "send_time": "2026-11-30 10:00:00",
        "report_time": "2026-11-30 10:00:05", "success": success, "err_code": code,
        "err_msg": "x", "sms_size": "1", "biz_id": biz_id, "out_id": ""
    })
}

fn tencent_report(sid: &str, ok: bool, code: &str) -> Value {
    json!({
        "user_receive_time": "2026-11-30 10:00:04", "nationcode": "86", "mobile": "13800138000",
        "report_status": if ok { "SUCCESS" } else { "FAIL" }, "errmsg": code,
        "description": "x", "sid": sid
    })
}

on_both_stores! {
    async fn aliyun_sms_report_moves_the_delivery_and_is_idempotent(backend: Backend) {
        let fake = FakeAliyun::start("LTAI5tTestAccessKeyId", "TestAccessKeySecret0123456789").await;
        let Some(d) = TestDaemon::start(backend, |c| aliyun_config(c, &fake)).await else { return };
        let id = backend_send(&d, PHONE).await;
        let v = delivery(&d, &id).await;
        assert_eq!(v["delivery"]["state"], "queued", "{v}");
        assert_eq!(v["provider"], "aliyun");
        assert_eq!(v["country"], "+86");
        let biz_id = v["message_id"].as_str().unwrap().to_owned();
        assert!(biz_id.contains('^'), "the BizId: {biz_id}");

        let path = format!("/v1/receipts/aliyun/{TOKEN}");
        let report = json!([aliyun_report(&biz_id, true, "DELIVERED")]);
        let (status, ack) = push(&d, &path, &report).await;
        assert_eq!((status, ack.clone()), (StatusCode::OK, json!({"code": 0, "msg": "成功"})));
        let v = delivery(&d, &id).await;
        assert_eq!(v["delivery"]["state"], "delivered", "{v}");
        assert_eq!(v["delivery"]["error_code"], "DELIVERED");
        let final_at = v["delivery"]["final_at"].clone();
        assert!(final_at.is_string());

        // The gateway retries its push; a late failure contradicts it. Neither changes anything.
        assert_eq!(push(&d, &path, &report).await.0, StatusCode::OK);
        let late = json!([aliyun_report(&biz_id, false, "MK:0012")]);
        assert_eq!(push(&d, &path, &late).await.0, StatusCode::OK);
        let v = delivery(&d, &id).await;
        assert_eq!(v["delivery"]["state"], "delivered");
        assert_eq!(v["delivery"]["final_at"], final_at);

        // Unknown ids are counted and dropped; the batch is still acknowledged.
        let unknown = json!([aliyun_report("999^0", true, "DELIVERED"), {"success": true}]);
        assert_eq!(push(&d, &path, &unknown).await.0, StatusCode::OK);

        let m = metrics(&d).await;
        assert!(has(&m, "verifyd_sms_delivery_receipts_total", &["provider=\"aliyun\"", "country=\"+86\"", "state=\"delivered\""], "1"), "{m}");
        assert!(has(&m, "verifyd_sms_time_to_delivery_seconds_count", &["provider=\"aliyun\"", "country=\"+86\""], "1"), "{m}");
        assert!(has(&m, "verifyd_sms_receipts_ignored_total", &["provider=\"aliyun\"", "reason=\"unknown\""], "2"), "{m}");
        assert!(has(&m, "verifyd_sms_receipts_ignored_total", &["reason=\"duplicate\""], "1"), "{m}");
        assert!(has(&m, "verifyd_sms_receipts_ignored_total", &["reason=\"stale\""], "1"), "{m}");
        d.stop().await;
    }

    async fn receipt_endpoints_refuse_everyone_without_the_token(backend: Backend) {
        let fake = FakeAliyun::start("LTAI5tTestAccessKeyId", "TestAccessKeySecret0123456789").await;
        let Some(d) = TestDaemon::start(backend, |c| aliyun_config(c, &fake)).await else { return };
        let id = backend_send(&d, PHONE).await;
        let biz_id = delivery(&d, &id).await["message_id"].as_str().unwrap().to_owned();
        let forged = json!([aliyun_report(&biz_id, false, "FORGED")]);
        let near = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
        let upper = TOKEN.to_uppercase();
        let encoded = TOKEN.replace('-', "%2D");
        for path in [
            "/v1/receipts/aliyun/".to_owned(),
            "/v1/receipts/aliyun/wrong-token-0123456789".to_owned(),
            format!("/v1/receipts/aliyun/{near}"),
            format!("/v1/receipts/aliyun/{upper}"),
            format!("/v1/receipts/aliyun/{encoded}"),
            format!("/v1/receipts/aliyun/{TOKEN}x"),
            format!("/v1/receipts/aliyun/{}", &TOKEN[..10]),
            format!("/v1/receipts/tencent/{TOKEN}"),
            format!("/v1/receipts/mock/{TOKEN}"),
            format!("/v1/receipts/ALIYUN/{TOKEN}"),
            format!("/v1/receipts/aliyun/{TOKEN}/extra"),
        ] {
            let (status, body) = push(&d, &path, &forged).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        }
        // The push is POST only; the id lookup needs the API key and a well-formed id.
        let resp = reqwest::Client::new().get(d.url(&format!("/v1/receipts/aliyun/{TOKEN}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let resp = reqwest::Client::new().get(d.url(&format!("/v1/verifications/{id}"))).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        for bad in ["dlv_0", "check2", "..%2F..%2Fetc", &id.to_uppercase()] {
            let (status, _) = d.api(Method::GET, &format!("/v1/verifications/{bad}"), None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        }
        assert_eq!(delivery(&d, &id).await["delivery"]["state"], "queued", "nothing forged got through");

        // Bodies that are not the documented format are refused whole; a flood is refused.
        let path = format!("/v1/receipts/aliyun/{TOKEN}");
        for body in [json!({"biz_id": biz_id}), json!("x"), json!([1, 2])] {
            let (status, v) = push(&d, &path, &body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
            assert_eq!(v["error"], "invalid_receipts");
        }
        let flood = Value::Array(vec![json!({}); 1001]);
        let (status, v) = push(&d, &path, &flood).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"], "too_many_receipts");
        d.stop().await;
    }

    async fn tencent_status_callback_records_failures_with_the_code(backend: Backend) {
        let fake = FakeTencent::start("AKIDtest", "tencent-key", "1400000001").await;
        let Some(d) = TestDaemon::start(backend, |c| {
            c.provider.kind = ProviderKind::Tencent;
            c.provider.tencent = tencent_config(&fake);
        }).await else { return };
        let id = backend_send(&d, PHONE).await;
        let v = delivery(&d, &id).await;
        assert_eq!(v["provider"], "tencent");
        let sid = fake.messages()[0].serial_no.clone();
        assert_eq!(v["message_id"], sid.as_str());

        let path = format!("/v1/receipts/tencent/{TOKEN}");
        let (status, ack) = push(&d, &path, &json!([tencent_report(&sid, false, "MK:0001")])).await;
        assert_eq!((status, ack), (StatusCode::OK, json!({"result": 0, "errmsg": "OK"})));
        let v = delivery(&d, &id).await;
        assert_eq!(v["delivery"]["state"], "failed", "{v}");
        assert_eq!(v["delivery"]["error_code"], "MK:0001");
        // A success that arrives after the failure does not resurrect it.
        push(&d, &path, &json!([tencent_report(&sid, true, "DELIVRD")])).await;
        assert_eq!(delivery(&d, &id).await["delivery"]["state"], "failed");
        let m = metrics(&d).await;
        assert!(has(&m, "verifyd_sms_delivery_receipts_total", &["provider=\"tencent\"", "state=\"failed\""], "1"), "{m}");
        assert!(
            !has(&m, "verifyd_sms_time_to_delivery_seconds_count", &["provider=\"tencent\""], "1"),
            "failures are not deliveries: {m}"
        );
        d.stop().await;
    }

    async fn failed_receipts_open_the_breaker_and_sends_fail_over(backend: Backend) {
        let fake = FakeTencent::start("AKIDtest", "tencent-key", "1400000001").await;
        let tencent = tencent_config(&fake);
        let Some(d) = TestDaemon::start(backend, move |c| {
            let named = |kind| NamedProvider {
                kind,
                timeout: Seconds::from_millis(1000),
                breaker: BreakerConfig::default(),
                mock: None,
                aliyun: None,
                sns: None,
                tencent: None,
                http: None,
                hook: None,
            };
            c.providers.insert(
                "cn".into(),
                NamedProvider {
                    tencent: Some(tencent),
                    breaker: BreakerConfig {
                        receipt_failure_percent: 50,
                        receipt_window: 600,
                        receipt_min_samples: 3,
                        ..BreakerConfig::default()
                    },
                    ..named(ProviderKind::Tencent)
                },
            );
            c.providers.insert("backup".into(), named(ProviderKind::Mock));
            c.routes.insert("*".parse().unwrap(), vec!["cn".into(), "backup".into()]);
        }).await else { return };
        let path = format!("/v1/receipts/cn/{TOKEN}");
        // The gateway accepts everything and delivers nothing.
        for i in 0..3 {
            backend_send(&d, &format!("+861380013800{i}")).await;
        }
        let reports: Vec<Value> = fake.messages().iter().map(|m| tencent_report(&m.serial_no, false, "MK:0005")).collect();
        assert_eq!(reports.len(), 3);
        // Two failures are below the minimum sample: still closed.
        assert_eq!(push(&d, &path, &json!(reports[..2])).await.0, StatusCode::OK);
        backend_send(&d, "+8613800138009").await;
        assert_eq!(fake.messages().len(), 4, "still sent through Tencent");
        assert_eq!(push(&d, &path, &json!(reports[2..])).await.0, StatusCode::OK);
        // 3 of 3 failed: the breaker is open, the next send goes to the backup.
        let id = backend_send(&d, "+8613800138010").await;
        assert_eq!(fake.messages().len(), 4, "Tencent was skipped");
        assert_eq!(delivery(&d, &id).await["provider"], "backup");
        let m = metrics(&d).await;
        assert!(has(&m, "verifyd_provider_circuit_state", &["provider=\"cn\"", "state=\"open\""], "1"), "{m}");
        d.stop().await;
    }
}
