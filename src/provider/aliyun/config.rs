//! `[provider.aliyun]`: what the operator sets up in the Aliyun console, plus our timeouts.
//! Checked by `Config::validate` when `provider.kind = "aliyun"`, so a missing key stops the
//! daemon at start-up with its name.

use crate::seconds::Seconds;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::secret::Secret;

/// `[provider.aliyun]`. `Debug` and serialization redact the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AliyunConfig {
    /// AccessKey ID of a RAM user allowed to send SMS (`AliyunDysmsFullAccess` or `dysms:SendSms`).
    pub access_key_id: String,
    /// Its AccessKey secret. Prefer `VERIFYD_PROVIDER__ALIYUN__ACCESS_KEY_SECRET` or
    /// `access_key_secret_file` over writing it into a config file.
    pub access_key_secret: Secret,
    /// A file holding the secret, read once at start-up (surrounding whitespace is ignored);
    /// by the time the config is validated its text is in `access_key_secret`.
    pub access_key_secret_file: Option<PathBuf>,
    /// The approved signature (签名), e.g. "阿里云短信测试".
    pub sign_name: String,
    /// The approved template, e.g. "SMS_154950909"; its text must contain `${code}`.
    pub template_code: String,
    /// The template variable that receives the code (`${code}` → `code`).
    pub template_param_name: String,
    /// dysmsapi endpoint; tests point it at a local fake.
    pub endpoint: String,
    pub region_id: String,
    /// The secret path segment of the `SmsReport` push URL (`/v1/receipts/<instance>/<token>`);
    /// unset: no receipt endpoint.
    pub receipt_token: Secret,
    pub receipt_token_file: Option<PathBuf>,
    /// Seconds one attempt (connect, request, answer) may take.
    #[serde(alias = "timeout_ms")]
    pub timeout: Seconds,
    /// Seconds all attempts of one send may take together, pauses included.
    #[serde(alias = "max_total_ms")]
    pub max_total: Seconds,
}

impl Default for AliyunConfig {
    fn default() -> Self {
        Self {
            access_key_id: String::new(),
            access_key_secret: Secret::default(),
            access_key_secret_file: None,
            sign_name: String::new(),
            template_code: String::new(),
            template_param_name: "code".into(),
            endpoint: "https://dysmsapi.aliyuncs.com/".into(),
            region_id: "cn-hangzhou".into(),
            receipt_token: Secret::default(),
            receipt_token_file: None,
            timeout: Seconds::from_secs(5),
            max_total: Seconds::from_secs(10),
        }
    }
}

impl AliyunConfig {
    /// The offending key and why, for `Config::validate`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let required = "must be set when provider.kind = \"aliyun\"";
        if self.access_key_id.trim().is_empty() {
            return Err(("provider.aliyun.access_key_id", required.into()));
        }
        if self.access_key_secret.is_empty() {
            return Err((
                "provider.aliyun.access_key_secret",
                format!("{required} (or provider.aliyun.access_key_secret_file)"),
            ));
        }
        if self.sign_name.trim().is_empty() {
            return Err(("provider.aliyun.sign_name", required.into()));
        }
        if self.template_code.trim().is_empty() {
            return Err(("provider.aliyun.template_code", required.into()));
        }
        if self.template_param_name.trim().is_empty() {
            return Err((
                "provider.aliyun.template_param_name",
                "must not be empty".into(),
            ));
        }
        if self.region_id.trim().is_empty() {
            return Err(("provider.aliyun.region_id", "must not be empty".into()));
        }
        match reqwest::Url::parse(&self.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err((
                    "provider.aliyun.endpoint",
                    "must be an http:// or https:// URL".into(),
                ));
            }
        }
        if !self.receipt_token.is_empty() && self.receipt_token.expose().len() < 16 {
            return Err((
                "provider.aliyun.receipt_token",
                "must be at least 16 characters".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(("provider.aliyun.timeout", "must be positive".into()));
        }
        if self.max_total < self.timeout {
            return Err((
                "provider.aliyun.max_total",
                format!(
                    "must be at least provider.aliyun.timeout ({} s)",
                    self.timeout
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> AliyunConfig {
        AliyunConfig {
            access_key_id: "LTAI".into(),
            access_key_secret: Secret::new("hunter2"),
            sign_name: "签名".into(),
            template_code: "SMS_1".into(),
            ..AliyunConfig::default()
        }
    }

    #[test]
    fn complete_config_is_valid_and_redacted() {
        let c = complete();
        assert_eq!(c.validate(), Ok(()));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
    }

    #[test]
    fn names_the_missing_key() {
        let key = |f: fn(&mut AliyunConfig)| {
            let mut c = complete();
            f(&mut c);
            c.validate().unwrap_err().0
        };
        assert_eq!(
            key(|c| c.access_key_id.clear()),
            "provider.aliyun.access_key_id"
        );
        assert_eq!(
            key(|c| c.access_key_secret = Secret::default()),
            "provider.aliyun.access_key_secret"
        );
        assert_eq!(key(|c| c.sign_name.clear()), "provider.aliyun.sign_name");
        assert_eq!(
            key(|c| c.template_code.clear()),
            "provider.aliyun.template_code"
        );
        assert_eq!(
            key(|c| c.endpoint = "ftp://x/".into()),
            "provider.aliyun.endpoint"
        );
        assert_eq!(
            key(|c| c.receipt_token = Secret::new("short")),
            "provider.aliyun.receipt_token"
        );
        assert_eq!(
            key(|c| c.timeout = Seconds::default()),
            "provider.aliyun.timeout"
        );
        assert_eq!(
            key(|c| c.max_total = Seconds::from_millis(1)),
            "provider.aliyun.max_total"
        );
    }
}
