//! `[provider.hook]` / `[providers.<name>.hook]`: where the application receives codes to
//! deliver itself, and the Standard Webhooks secret verifyd signs them with.

use crate::seconds::Seconds;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::secret::Secret;
use crate::standard_webhooks::SECRET_SHAPE;

/// `[provider.hook]`. `Debug` and serialization redact the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HookConfig {
    /// The application's endpoint, `https://` in production.
    pub url: String,
    /// `whsec_` and the base64 of the signing key, as Standard Webhooks libraries generate it.
    pub secret: Secret,
    /// A file holding the secret, read once at start-up.
    pub secret_file: Option<PathBuf>,
    /// Seconds one attempt may take.
    #[serde(alias = "timeout_ms")]
    pub timeout: Seconds,
    /// Seconds all attempts of one send may take together, pauses included.
    #[serde(alias = "max_total_ms")]
    pub max_total: Seconds,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: Secret::default(),
            secret_file: None,
            timeout: Seconds::from_secs(5),
            max_total: Seconds::from_secs(10),
        }
    }
}

impl HookConfig {
    /// The offending key (under `table`, e.g. `providers.app.hook`) and why.
    pub fn validate(&self, table: &str) -> Result<(), (String, String)> {
        let key = |k: &str| format!("{table}.{k}");
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err((
                    key("url"),
                    "must be an http:// or https:// URL when kind = \"hook\"".into(),
                ));
            }
        }
        if self.secret.is_empty() {
            return Err((
                key("secret"),
                format!(
                    "must be set (or {}) when kind = \"hook\"",
                    key("secret_file")
                ),
            ));
        }
        if crate::standard_webhooks::key_bytes(&self.secret).is_none() {
            return Err((key("secret"), SECRET_SHAPE.into()));
        }
        if self.timeout.is_zero() {
            return Err((key("timeout"), "must be positive".into()));
        }
        if self.max_total < self.timeout {
            return Err((
                key("max_total"),
                format!("must be at least {} ({} s)", key("timeout"), self.timeout),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn complete() -> HookConfig {
        HookConfig {
            url: "https://app.example/hooks/sms".into(),
            secret: Secret::new(SECRET),
            ..HookConfig::default()
        }
    }

    #[test]
    fn a_complete_config_is_valid_and_redacted() {
        let c = complete();
        assert_eq!(c.validate("provider.hook"), Ok(()));
        assert!(!format!("{c:?}").contains("MfKQ9r8"));
        assert!(!toml::to_string(&c).unwrap().contains("MfKQ9r8"));
    }

    #[test]
    fn mistakes_name_their_key() {
        let key = |f: fn(&mut HookConfig)| {
            let mut c = complete();
            f(&mut c);
            c.validate("providers.app.hook").unwrap_err().0
        };
        assert_eq!(key(|c| c.url.clear()), "providers.app.hook.url");
        assert_eq!(key(|c| c.url = "ftp://x/".into()), "providers.app.hook.url");
        assert_eq!(
            key(|c| c.secret = Secret::default()),
            "providers.app.hook.secret"
        );
        assert_eq!(
            key(|c| c.secret = Secret::new("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
            "providers.app.hook.secret"
        );
        assert_eq!(
            key(|c| c.secret = Secret::new("whsec_c2hvcnQ=")),
            "providers.app.hook.secret"
        );
        assert_eq!(
            key(|c| c.secret = Secret::new("whsec_!!!")),
            "providers.app.hook.secret"
        );
        assert_eq!(
            key(|c| c.timeout = Seconds::default()),
            "providers.app.hook.timeout"
        );
        assert_eq!(
            key(|c| c.max_total = Seconds::from_millis(1)),
            "providers.app.hook.max_total"
        );
    }
}
