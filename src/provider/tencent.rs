//! Tencent Cloud SMS (`SendSms`, API 2021-01-11): the mainland counterpart of Aliyun. The code
//! travels as a template parameter in a JSON body signed with our own TC3-HMAC-SHA256 signer
//! ([`sign`]); the per-number `SendStatusSet` code decides between success, the three error
//! classes, and a bounded retry.

mod config;
mod response;
pub mod sign;

pub use config::TencentConfig;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::retry::{self, Attempt, Budget};
use super::{OutgoingCode, Provider, ProviderError, Receipt};
use crate::phone::PhoneNumber;
use crate::secret::Secret;

/// The content type we send and sign (the documentation's example uses the same).
const JSON: &str = "application/json; charset=utf-8";

/// Why the provider could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("endpoint: {0}")]
    Endpoint(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// Sends codes through Tencent Cloud SMS.
pub struct TencentProvider {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    /// The `host` header value we sign: host, and port when not the scheme's default.
    host: String,
    secret_id: String,
    secret_key: Secret,
    app_id: String,
    sign_name: String,
    template_id: String,
    template_params: Vec<String>,
    region: String,
    timeout: Duration,
    max_total: Duration,
}

impl TencentProvider {
    pub fn new(cfg: &TencentConfig) -> Result<Self, SetupError> {
        let endpoint =
            reqwest::Url::parse(&cfg.endpoint).map_err(|e| SetupError::Endpoint(e.to_string()))?;
        let host = match (endpoint.host_str(), endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(SetupError::Endpoint("no host".into())),
        };
        let timeout = cfg.timeout.duration();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            // A redirect of a signed, non-idempotent POST is never what we want to follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("verifyd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SetupError::Client)?;
        Ok(Self {
            http,
            endpoint,
            host,
            secret_id: cfg.secret_id.clone(),
            secret_key: cfg.secret_key.clone(),
            app_id: cfg.sms_sdk_app_id.clone(),
            sign_name: cfg.sign_name.clone(),
            template_id: cfg.template_id.clone(),
            template_params: cfg.template_params.clone(),
            region: cfg.region.clone(),
            timeout,
            max_total: cfg.max_total.duration(),
        })
    }

    /// The JSON body: one number, the template and its parameters.
    fn body(&self, msg: &OutgoingCode) -> String {
        let minutes = msg.lifetime.as_secs().div_ceil(60).max(1).to_string();
        let params: Vec<String> = self
            .template_params
            .iter()
            .map(|p| {
                p.replace("{code}", msg.code.expose())
                    .replace("{minutes}", &minutes)
            })
            .collect();
        let mut body = serde_json::json!({
            "PhoneNumberSet": [phone_number(&msg.to)],
            "SmsSdkAppId": self.app_id,
            "TemplateId": self.template_id,
            "TemplateParamSet": params,
        });
        if !self.sign_name.is_empty() {
            body["SignName"] = serde_json::Value::String(self.sign_name.clone());
        }
        body.to_string()
    }

    /// The `Authorization` header for `body` at `timestamp`.
    fn authorization(&self, body: &str, timestamp: i64) -> String {
        sign::authorization(&sign::Request {
            secret_id: &self.secret_id,
            secret_key: self.secret_key.expose(),
            service: "sms",
            host: &self.host,
            content_type: JSON,
            payload: body.as_bytes(),
            timestamp,
        })
    }

    /// One signed POST, bounded by `budget`.
    async fn attempt(&self, body: &str, budget: Duration) -> Attempt {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let exchange = async {
            let resp = self
                .http
                .post(self.endpoint.clone())
                .header(CONTENT_TYPE, JSON)
                .header(AUTHORIZATION, self.authorization(body, timestamp))
                .header("X-TC-Action", "SendSms")
                .header("X-TC-Version", "2021-01-11")
                .header("X-TC-Timestamp", timestamp.to_string())
                .header("X-TC-Region", &self.region)
                .body(body.to_owned())
                .send()
                .await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.bytes().await?))
        };
        match tokio::time::timeout(budget, exchange).await {
            Err(_) => Attempt::Retry(format!("no answer within {} ms", budget.as_millis())),
            Ok(Err(e)) => Attempt::Retry(format!("network error: {}", super::error_chain(&e))),
            Ok(Ok((status, bytes))) => response::classify(status, &bytes),
        }
    }
}

#[async_trait]
impl Provider for TencentProvider {
    /// Retries transient failures with backoff and a fresh timestamp and signature while the
    /// `max_total` budget lasts. Like Aliyun's, `SendSms` has no idempotency key, so a retry
    /// after a lost answer may deliver a second copy of the same code; the budget bounds it.
    async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError> {
        let body = self.body(msg);
        let budget = Budget {
            per_attempt: self.timeout,
            total: self.max_total,
        };
        let message_id = retry::until_sent("tencent", &msg.to, budget, |limit| {
            self.attempt(&body, limit)
        })
        .await?;
        Ok(Receipt {
            provider: "tencent".into(),
            message_id,
        })
    }
}

/// Tencent takes every number, mainland ones included, in E.164 with the `+`.
fn phone_number(phone: &PhoneNumber) -> String {
    format!("+{}{}", phone.calling_code(), phone.national())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;

    fn provider(endpoint: &str) -> TencentProvider {
        TencentProvider::new(&TencentConfig {
            secret_id: "AKIDtest".into(),
            secret_key: Secret::new("s3cret"),
            sms_sdk_app_id: "1400000001".into(),
            sign_name: "腾讯云".into(),
            template_id: "449739".into(),
            template_params: vec!["{code}".into(), "{minutes}".into()],
            endpoint: endpoint.into(),
            ..TencentConfig::default()
        })
        .unwrap()
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn numbers_are_e164_with_plus() {
        let p = |s| phone_number(&PhoneNumber::parse_e164(s).unwrap());
        assert_eq!(p("+8613800138000"), "+8613800138000");
        assert_eq!(p("+85291234567"), "+85291234567");
        assert_eq!(p("+44 07400 123456"), "+447400123456");
    }

    #[test]
    fn body_carries_template_parameters_as_strings() {
        let p = provider("https://sms.tencentcloudapi.com/");
        let msg = OutgoingCode {
            to: PhoneNumber::parse_e164("+8613800138000").unwrap(),
            code: Code::parse("012345").unwrap(),
            lifetime: Duration::from_secs(290),
            locale: None,
            text: String::new(),
        };
        let v: serde_json::Value = serde_json::from_str(&p.body(&msg)).unwrap();
        assert_eq!(v["PhoneNumberSet"], serde_json::json!(["+8613800138000"]));
        assert_eq!(v["SmsSdkAppId"], "1400000001");
        assert_eq!(v["SignName"], "腾讯云");
        assert_eq!(v["TemplateId"], "449739");
        assert_eq!(v["TemplateParamSet"], serde_json::json!(["012345", "5"]));
        assert_eq!(p.host, "sms.tencentcloudapi.com");
        assert_eq!(provider("http://127.0.0.1:8123/").host, "127.0.0.1:8123");
    }
}
