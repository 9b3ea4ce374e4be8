//! Aliyun SMS (dysmsapi `SendSms`, API 2017-05-25): a template-based gateway. The code travels as
//! a template parameter, each attempt is a POST signed with our own V2 signer ([`sign`]), and the
//! answer's `Code` decides between success, the three error classes, and a bounded retry.

mod config;
mod response;
mod sign;

pub use config::AliyunConfig;

use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use std::time::{Duration, SystemTime};

use super::retry::{self, Attempt, Budget};
use super::{OutgoingCode, Provider, ProviderError, Receipt};
use crate::phone::PhoneNumber;
use crate::secret::Secret;

/// Why the provider could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("provider.aliyun.endpoint: {0}")]
    Endpoint(String),
    #[error("provider.aliyun: cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// Sends codes through Aliyun's dysmsapi.
pub struct AliyunProvider {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    access_key_id: String,
    secret: Secret,
    sign_name: String,
    template_code: String,
    template_param_name: String,
    region_id: String,
    timeout: Duration,
    max_total: Duration,
}

impl AliyunProvider {
    /// Builds the HTTP client. The config has
    /// been validated already (`Config::validate`), so the required keys are present.
    pub fn new(cfg: &AliyunConfig) -> Result<Self, SetupError> {
        // `access_key_secret_file` was read into the secret when the config was loaded.
        let secret = cfg.access_key_secret.clone();
        let endpoint =
            reqwest::Url::parse(&cfg.endpoint).map_err(|e| SetupError::Endpoint(e.to_string()))?;
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
            access_key_id: cfg.access_key_id.clone(),
            secret,
            sign_name: cfg.sign_name.clone(),
            template_code: cfg.template_code.clone(),
            template_param_name: cfg.template_param_name.clone(),
            region_id: cfg.region_id.clone(),
            timeout,
            max_total: cfg.max_total.duration(),
        })
    }

    /// The signed form body of one attempt; `nonce` and `timestamp` are fresh for each.
    fn body(&self, phone: &str, template_param: &str, nonce: &str, timestamp: &str) -> String {
        let params = [
            ("AccessKeyId", self.access_key_id.as_str()),
            ("Action", "SendSms"),
            ("Format", "JSON"),
            ("PhoneNumbers", phone),
            ("RegionId", &self.region_id),
            ("SignName", &self.sign_name),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", nonce),
            ("SignatureVersion", "1.0"),
            ("TemplateCode", &self.template_code),
            ("TemplateParam", template_param),
            ("Timestamp", timestamp),
            ("Version", "2017-05-25"),
        ];
        sign::signed_query("POST", &params, self.secret.expose())
    }

    /// One signed POST, bounded by `budget`.
    async fn attempt(&self, phone: &str, template_param: &str, budget: Duration) -> Attempt {
        let timestamp = crate::time::rfc3339(SystemTime::now());
        let body = self.body(phone, template_param, &super::nonce(), &timestamp);
        let exchange = async {
            let resp = self
                .http
                .post(self.endpoint.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ACCEPT, "application/json")
                .body(body)
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
impl Provider for AliyunProvider {
    /// Retries transient failures with exponential backoff, jitter and a fresh nonce and
    /// timestamp, while the `max_total` budget lasts.
    ///
    /// SendSms is not idempotent (it has no idempotency key): when an attempt times out after
    /// Aliyun accepted it, the retry delivers a second SMS. We still retry because a code that
    /// never arrives costs the user more than a duplicate, and the duplicate carries the same
    /// code; the budget bounds how many attempts there can be. Errors that prove nothing was
    /// sent for a reason a retry cannot fix (recipient, configuration) are never retried.
    async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError> {
        let phone = phone_numbers(&msg.to);
        let param = template_param(&self.template_param_name, msg.code.expose());
        let budget = Budget {
            per_attempt: self.timeout,
            total: self.max_total,
        };
        let message_id = retry::until_sent("aliyun", &msg.to, budget, |limit| {
            self.attempt(&phone, &param, limit)
        })
        .await?;
        Ok(Receipt {
            provider: "aliyun".into(),
            message_id,
        })
    }
}

/// `PhoneNumbers` as Aliyun wants it: mainland numbers as their national number, every other
/// country as calling code and national number without `+` (Hong Kong `852…`, the US `1…`).
/// Built from the parsed parts: Aliyun reads anything not mainland-shaped as international.
fn phone_numbers(phone: &PhoneNumber) -> String {
    if phone.calling_code() == 86 {
        phone.national().to_owned()
    } else {
        format!("{}{}", phone.calling_code(), phone.national())
    }
}

/// `{"<name>":"<code>"}`: the value must be a JSON string (a number is `isv.INVALID_JSON_PARAM`,
/// and would drop leading zeros).
fn template_param(name: &str, code: &str) -> String {
    let mut map = serde_json::Map::new();
    map.insert(name.to_owned(), serde_json::Value::String(code.to_owned()));
    serde_json::Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(endpoint: &str) -> AliyunProvider {
        let c = AliyunConfig {
            access_key_id: "id".into(),
            access_key_secret: Secret::new("s3cret"),
            sign_name: "验证".into(),
            template_code: "SMS_1".into(),
            endpoint: endpoint.into(),
            ..AliyunConfig::default()
        };
        AliyunProvider::new(&c).unwrap()
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn formats_phone_numbers_for_aliyun() {
        let p = |s| phone_numbers(&PhoneNumber::parse_e164(s).unwrap());
        assert_eq!(p("+8613800138000"), "13800138000");
        assert_eq!(p("+85291234567"), "85291234567");
        assert_eq!(p("+886912345678"), "886912345678");
        assert_eq!(p("+12015550123"), "12015550123");
        assert_eq!(p("+44 07400 123456"), "447400123456");
    }

    #[test]
    fn template_param_values_are_strings() {
        assert_eq!(template_param("code", "012345"), r#"{"code":"012345"}"#);
        assert_eq!(template_param("otp", "9999"), r#"{"otp":"9999"}"#);
    }

    #[tokio::test]
    async fn body_is_a_signed_post_form() {
        let p = provider("http://127.0.0.1:1/");
        let body = p.body(
            "13800138000",
            r#"{"code":"123456"}"#,
            "n-1",
            "2024-01-02T03:04:05Z",
        );
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("Action"), "SendSms");
        assert_eq!(get("Format"), "JSON");
        assert_eq!(get("PhoneNumbers"), "13800138000");
        assert_eq!(get("SignName"), "验证");
        assert_eq!(get("TemplateParam"), r#"{"code":"123456"}"#);
        assert_eq!(get("RegionId"), "cn-hangzhou");
        let unsigned: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, _)| k != "Signature")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(unsigned.len(), 13);
        assert_eq!(
            get("Signature"),
            sign::signature("POST", &unsigned, "s3cret")
        );
        assert!(!body.contains('+') && !body.contains(' '), "{body}");
    }
}
