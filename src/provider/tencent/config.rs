//! `[provider.tencent]`: what the operator sets up in the Tencent Cloud SMS console, plus our
//! timeouts. Checked at start-up so a missing key stops the daemon with its name.

use crate::seconds::Seconds;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::secret::Secret;

/// `[provider.tencent]`. `Debug` and serialization redact the secrets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TencentConfig {
    /// SecretId of a CAM user allowed to call `sms:SendSms`.
    pub secret_id: String,
    /// Its SecretKey; prefer a credential or `secret_key_file`.
    pub secret_key: Secret,
    pub secret_key_file: Option<PathBuf>,
    /// The SMS application's SdkAppId (`1400…`).
    pub sms_sdk_app_id: String,
    /// The approved signature; required for mainland China numbers, empty for international.
    pub sign_name: String,
    /// The approved template's id.
    pub template_id: String,
    /// The template's parameters in order; `{code}` and `{minutes}` are replaced.
    pub template_params: Vec<String>,
    /// `X-TC-Region`: `ap-guangzhou`, `ap-beijing` or `ap-nanjing`.
    pub region: String,
    /// API endpoint; tests point it at a local fake.
    pub endpoint: String,
    /// The secret path segment of the status callback URL (`/v1/receipts/<instance>/<token>`).
    pub receipt_token: Secret,
    pub receipt_token_file: Option<PathBuf>,
    /// Seconds one attempt may take.
    #[serde(alias = "timeout_ms")]
    pub timeout: Seconds,
    /// Seconds all attempts of one send may take together, pauses included.
    #[serde(alias = "max_total_ms")]
    pub max_total: Seconds,
}

impl Default for TencentConfig {
    fn default() -> Self {
        Self {
            secret_id: String::new(),
            secret_key: Secret::default(),
            secret_key_file: None,
            sms_sdk_app_id: String::new(),
            sign_name: String::new(),
            template_id: String::new(),
            template_params: vec!["{code}".into()],
            region: "ap-guangzhou".into(),
            endpoint: "https://sms.tencentcloudapi.com/".into(),
            receipt_token: Secret::default(),
            receipt_token_file: None,
            timeout: Seconds::from_secs(5),
            max_total: Seconds::from_secs(10),
        }
    }
}

impl TencentConfig {
    /// The offending key (under `table`, e.g. `provider.tencent`) and why.
    pub fn validate(&self, table: &str) -> Result<(), (String, String)> {
        let key = |k: &str| format!("{table}.{k}");
        let required = "must be set when kind = \"tencent\"".to_owned();
        if self.secret_id.trim().is_empty() {
            return Err((key("secret_id"), required));
        }
        if self.secret_key.is_empty() {
            return Err((
                key("secret_key"),
                format!("{required} (or {table}.secret_key_file)"),
            ));
        }
        let app_ok = !self.sms_sdk_app_id.is_empty()
            && self.sms_sdk_app_id.bytes().all(|b| b.is_ascii_digit());
        if !app_ok {
            return Err((
                key("sms_sdk_app_id"),
                "must be the application's numeric SdkAppId".into(),
            ));
        }
        if self.template_id.trim().is_empty() {
            return Err((key("template_id"), required));
        }
        if !self.template_params.iter().any(|p| p.contains("{code}")) {
            return Err((
                key("template_params"),
                "one parameter must contain {code}".into(),
            ));
        }
        if self.region.trim().is_empty() {
            return Err((key("region"), "must not be empty".into()));
        }
        match reqwest::Url::parse(&self.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err((key("endpoint"), "must be an http:// or https:// URL".into())),
        }
        if !self.receipt_token.is_empty() && self.receipt_token.expose().len() < 16 {
            return Err((
                key("receipt_token"),
                "must be at least 16 characters".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err((key("timeout"), "must be positive".into()));
        }
        if self.max_total < self.timeout {
            return Err((
                key("max_total"),
                format!("must be at least {table}.timeout ({} s)", self.timeout),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> TencentConfig {
        TencentConfig {
            secret_id: "AKIDtest".into(),
            secret_key: Secret::new("hunter2"),
            sms_sdk_app_id: "1400000000".into(),
            sign_name: "腾讯云".into(),
            template_id: "449739".into(),
            ..TencentConfig::default()
        }
    }

    #[test]
    fn complete_config_is_valid_and_redacted() {
        let c = complete();
        assert_eq!(c.validate("provider.tencent"), Ok(()));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
    }

    #[test]
    fn names_the_offending_key() {
        let key = |f: fn(&mut TencentConfig)| {
            let mut c = complete();
            f(&mut c);
            c.validate("providers.cn.tencent").unwrap_err().0
        };
        assert_eq!(
            key(|c| c.secret_id.clear()),
            "providers.cn.tencent.secret_id"
        );
        assert_eq!(
            key(|c| c.secret_key = Secret::default()),
            "providers.cn.tencent.secret_key"
        );
        assert_eq!(
            key(|c| c.sms_sdk_app_id = "abc".into()),
            "providers.cn.tencent.sms_sdk_app_id"
        );
        assert_eq!(
            key(|c| c.template_id.clear()),
            "providers.cn.tencent.template_id"
        );
        assert_eq!(
            key(|c| c.template_params = vec!["{minutes}".into()]),
            "providers.cn.tencent.template_params"
        );
        assert_eq!(
            key(|c| c.endpoint = "ftp://x/".into()),
            "providers.cn.tencent.endpoint"
        );
        assert_eq!(
            key(|c| c.receipt_token = Secret::new("short")),
            "providers.cn.tencent.receipt_token"
        );
        assert_eq!(
            key(|c| c.timeout = Seconds::default()),
            "providers.cn.tencent.timeout"
        );
        assert_eq!(
            key(|c| c.max_total = Seconds::from_millis(1)),
            "providers.cn.tencent.max_total"
        );
    }
}
