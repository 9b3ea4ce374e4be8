//! `[provider.sns]` (or `[providers.<name>.sns]`): the AWS account, region and SMS settings for
//! SNS. Checked at start-up, so a missing region or a malformed sender ID stops the daemon with
//! the key's name.

use crate::seconds::Seconds;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// SNS settings. `Debug` and serialization redact the secret key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnsConfig {
    /// AWS region that sends the SMS, e.g. "us-east-1" (required).
    pub region: String,
    /// Static credentials of an IAM user allowed `sns:Publish`. Unset: the standard AWS chain
    /// (environment, shared files, web identity, ECS or EC2 instance role).
    pub access_key_id: String,
    /// Its secret; prefer `VERIFYD_PROVIDER__SNS__SECRET_ACCESS_KEY` to the file.
    pub secret_access_key: Secret,
    /// A file holding the secret instead, read at start-up.
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// Another endpoint than AWS's (tests point it at moto).
    pub endpoint_url: Option<String>,
    /// `AWS.SNS.SMS.SenderID`: 3–11 letters and digits, at least one letter (where supported).
    pub sender_id: Option<String>,
    /// `AWS.MM.SMS.OriginationNumber`: an E.164 long code or toll-free number, or a short code.
    pub origination_number: Option<String>,
    /// `AWS.SNS.SMS.MaxPrice`: the most one message may cost, in USD (e.g. "0.50").
    pub max_price: Option<String>,
    /// Seconds one Publish call (connect, request, answer) may take.
    #[serde(alias = "timeout_ms")]
    pub timeout: Seconds,
    /// Publish calls per send. Only throttling is retried: it proves nothing was sent.
    pub max_attempts: u32,
}

impl Default for SnsConfig {
    fn default() -> Self {
        Self {
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            secret_access_key_file: None,
            endpoint_url: None,
            sender_id: None,
            origination_number: None,
            max_price: None,
            timeout: Seconds::from_secs(5),
            max_attempts: 2,
        }
    }
}

impl SnsConfig {
    /// The offending key (under `table`, e.g. `provider.sns`) and why.
    pub fn validate(&self, table: &str) -> Result<(), (String, String)> {
        let err = |key: &str, msg: &str| Err((format!("{table}.{key}"), msg.to_owned()));
        let region_ok = !self.region.is_empty()
            && self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return err("region", "must be an AWS region such as \"us-east-1\"");
        }
        match (
            self.access_key_id.trim().is_empty(),
            self.secret_access_key.is_empty(),
        ) {
            (false, true) => {
                return err(
                    "secret_access_key",
                    "must be set together with access_key_id (or leave both unset for the standard AWS chain)",
                );
            }
            (true, false) => {
                return err(
                    "access_key_id",
                    "must be set together with secret_access_key",
                );
            }
            _ => {}
        }
        if let Some(url) = &self.endpoint_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return err("endpoint_url", "must be an http:// or https:// URL"),
            }
        }
        if let Some(id) = &self.sender_id {
            let ok = (3..=11).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric())
                && id.bytes().any(|b| b.is_ascii_alphabetic());
            if !ok {
                return err(
                    "sender_id",
                    "must be 3 to 11 letters and digits with at least one letter",
                );
            }
        }
        if let Some(n) = &self.origination_number {
            let e164 = crate::phone::PhoneNumber::parse_e164(n).is_ok();
            let short_code = (3..=8).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit());
            if !e164 && !short_code {
                return err(
                    "origination_number",
                    "must be an E.164 number (\"+18005550100\") or a short code (\"12345\")",
                );
            }
        }
        if let Some(p) = &self.max_price {
            let ok = p.parse::<f64>().is_ok_and(|v| v.is_finite() && v > 0.0)
                && p.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if !ok {
                return err(
                    "max_price",
                    "must be a positive amount in USD such as \"0.50\"",
                );
            }
        }
        if self.timeout.is_zero() {
            return err("timeout", "must be positive");
        }
        if !(1..=5).contains(&self.max_attempts) {
            return err("max_attempts", "must be between 1 and 5");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> SnsConfig {
        SnsConfig {
            region: "eu-west-1".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: Secret::new("hunter2"),
            sender_id: Some("Verifyd1".into()),
            origination_number: Some("+18005550100".into()),
            max_price: Some("0.50".into()),
            ..SnsConfig::default()
        }
    }

    #[test]
    fn complete_config_is_valid_and_redacted() {
        let c = complete();
        assert_eq!(c.validate("provider.sns"), Ok(()));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!toml::to_string(&c).unwrap().contains("hunter2"));
    }

    #[test]
    fn no_credentials_means_the_standard_chain() {
        let c = SnsConfig {
            region: "us-east-1".into(),
            ..SnsConfig::default()
        };
        assert_eq!(c.validate("provider.sns"), Ok(()));
    }

    #[test]
    fn names_the_offending_key() {
        let key = |f: fn(&mut SnsConfig)| {
            let mut c = complete();
            f(&mut c);
            c.validate("providers.global.sns").unwrap_err().0
        };
        let k = |s: &str| format!("providers.global.sns.{s}");
        assert_eq!(key(|c| c.region.clear()), k("region"));
        assert_eq!(key(|c| c.region = "US East".into()), k("region"));
        assert_eq!(
            key(|c| c.secret_access_key = Secret::default()),
            k("secret_access_key")
        );
        assert_eq!(key(|c| c.access_key_id.clear()), k("access_key_id"));
        assert_eq!(
            key(|c| c.endpoint_url = Some("localhost:4566".into())),
            k("endpoint_url")
        );
        for bad in ["AB", "TWELVELETTER", "123456", "Acme-Co"] {
            let mut c = complete();
            c.sender_id = Some(bad.into());
            assert_eq!(c.validate("p").unwrap_err().0, "p.sender_id", "{bad}");
        }
        assert_eq!(
            key(|c| c.origination_number = Some("18005550100".into())),
            k("origination_number")
        );
        assert_eq!(key(|c| c.max_price = Some("-1".into())), k("max_price"));
        assert_eq!(key(|c| c.max_price = Some("1e3".into())), k("max_price"));
        assert_eq!(key(|c| c.timeout = Seconds::default()), k("timeout"));
        assert_eq!(key(|c| c.max_attempts = 0), k("max_attempts"));
    }

    #[test]
    fn short_codes_are_origination_numbers_too() {
        let mut c = complete();
        c.origination_number = Some("12345".into());
        assert_eq!(c.validate("p"), Ok(()));
    }
}
