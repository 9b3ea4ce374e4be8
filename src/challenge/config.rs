//! The `[challenge]` settings that say which challenge a page solves and how it is checked.

use crate::seconds::Seconds;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::secret::Secret;

pub use crate::quota::ChallengeMode;

/// Which challenge guards sends.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeKind {
    /// Self-hosted ALTCHA proof-of-work: nothing leaves the deployment.
    #[default]
    Altcha,
    /// Cloudflare Turnstile, checked with its `siteverify`.
    Turnstile,
    /// hCaptcha, checked with its `siteverify`.
    Hcaptcha,
}

impl ChallengeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Altcha => "altcha",
            ChallengeKind::Turnstile => "turnstile",
            ChallengeKind::Hcaptcha => "hcaptcha",
        }
    }

    /// The send-body field that carries this kind's solution: the name each widget gives its
    /// hidden form input.
    pub fn field(self) -> &'static str {
        match self {
            ChallengeKind::Altcha => "altcha",
            ChallengeKind::Turnstile => "cf-turnstile-response",
            ChallengeKind::Hcaptcha => "h-captcha-response",
        }
    }

    /// The provider's documented verification endpoint.
    pub fn default_siteverify_url(self) -> Option<&'static str> {
        match self {
            ChallengeKind::Altcha => None,
            ChallengeKind::Turnstile => {
                Some("https://challenges.cloudflare.com/turnstile/v0/siteverify")
            }
            ChallengeKind::Hcaptcha => Some("https://api.hcaptcha.com/siteverify"),
        }
    }
}

/// ALTCHA proof-of-work settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AltchaConfig {
    /// HMAC key that signs challenges. Unset: derived from the code-MAC key (which, unset too,
    /// is the random key kept in the store), so all daemons on one store agree.
    pub hmac_key: Secret,
    /// A file holding the HMAC key instead, read at start-up.
    pub hmac_key_file: Option<PathBuf>,
    /// Largest secret number: a browser tries half of them on average.
    pub max_number: u64,
    /// Seconds a challenge may be solved and used in.
    pub expires: u64,
}

impl Default for AltchaConfig {
    fn default() -> Self {
        Self {
            hmac_key: Secret::default(),
            hmac_key_file: None,
            max_number: 100_000,
            expires: 600,
        }
    }
}

/// `[challenge]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeConfig {
    pub mode: ChallengeMode,
    pub kind: ChallengeKind,
    pub altcha: AltchaConfig,
    /// Turnstile/hCaptcha site key, handed to pages by `GET /v1/challenge`.
    pub site_key: String,
    /// Turnstile/hCaptcha secret key (or a systemd credential named `challenge.secret`).
    pub secret: Secret,
    /// A file holding the secret key instead (its trailing newline ignored).
    pub secret_file: Option<PathBuf>,
    /// Where tokens are verified; unset: the provider's documented endpoint.
    pub siteverify_url: Option<String>,
    /// Host names a Turnstile/hCaptcha token must have been solved on; empty: not checked.
    pub hostnames: Vec<String>,
    /// Seconds `siteverify` may take before the send fails with 503.
    #[serde(alias = "timeout_ms")]
    pub timeout: Seconds,
}

impl Default for ChallengeConfig {
    fn default() -> Self {
        Self {
            mode: ChallengeMode::default(),
            kind: ChallengeKind::default(),
            altcha: AltchaConfig::default(),
            site_key: String::new(),
            secret: Secret::default(),
            secret_file: None,
            siteverify_url: None,
            hostnames: Vec::new(),
            timeout: Seconds::from_secs(5),
        }
    }
}

impl ChallengeConfig {
    /// Ranges and relations serde cannot check; returns the key at fault and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let a = &self.altcha;
        if !(1_000..=10_000_000).contains(&a.max_number) {
            return Err((
                "challenge.altcha.max_number",
                "must be between 1000 and 10000000".into(),
            ));
        }
        if !(10..=86_400).contains(&a.expires) {
            return Err((
                "challenge.altcha.expires",
                "must be between 10 and 86400 seconds".into(),
            ));
        }
        if self.timeout.is_zero() || self.timeout > Seconds::from_secs(60) {
            return Err((
                "challenge.timeout",
                "must be between 0.001 and 60 seconds".into(),
            ));
        }
        if let Some(url) = &self.siteverify_url {
            let ok = reqwest::Url::parse(url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err((
                    "challenge.siteverify_url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        if self.kind != ChallengeKind::Altcha {
            let kind = self.kind.as_str();
            if self.site_key.is_empty() {
                return Err((
                    "challenge.site_key",
                    format!("is required for kind {kind:?}"),
                ));
            }
            if self.secret.is_empty() && self.secret_file.is_none() {
                return Err((
                    "challenge.secret",
                    format!("is required for kind {kind:?} (or challenge.secret_file)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use figment::Figment;
    use figment::providers::{Format, Toml};

    fn load(toml: &str) -> Result<Config, String> {
        Config::from_figment(Figment::new().merge(Toml::string(toml))).map_err(|e| e.to_string())
    }

    #[test]
    fn captcha_kinds_need_their_site_key_and_one_secret() {
        // The secret file is read at load, so the one named here must exist.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("captcha.secret");
        std::fs::write(&file, "captcha-secret-from-file\n").unwrap();
        let file = file.display().to_string();
        let e = load("[challenge]\nkind = \"turnstile\"\nsecret = \"s\"\n").unwrap_err();
        assert!(e.contains("challenge.site_key"), "{e}");
        let e = load("[challenge]\nkind = \"hcaptcha\"\nsite_key = \"k\"\n").unwrap_err();
        assert!(e.contains("challenge.secret"), "{e}");
        let e = load(&format!(
            "[challenge]\nkind = \"hcaptcha\"\nsite_key = \"k\"\nsecret = \"s\"\nsecret_file = {file:?}\n",
        ))
        .unwrap_err();
        assert!(
            e.contains("challenge.secret_file") && e.contains("not both"),
            "{e}"
        );
        let e = load("[challenge]\nsiteverify_url = \"ftp://x\"\n").unwrap_err();
        assert!(e.contains("challenge.siteverify_url"), "{e}");
        let e = load("[challenge.altcha]\nmax_number = 10\n").unwrap_err();
        assert!(e.contains("challenge.altcha.max_number"), "{e}");
        let e = load("[challenge]\nkind = \"recaptcha\"\n").unwrap_err();
        assert!(e.contains("challenge.kind"), "{e}");
        let c = load(&format!(
            "[challenge]\nkind = \"turnstile\"\nsite_key = \"k\"\nsecret_file = {file:?}\n"
        ))
        .unwrap();
        assert_eq!(c.challenge.kind, super::ChallengeKind::Turnstile);
        assert_eq!(c.challenge.secret.expose(), "captcha-secret-from-file");
    }

    #[test]
    fn secrets_come_from_systemd_credentials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("challenge.secret"), "captcha-secret\n").unwrap();
        std::fs::write(dir.path().join("challenge.altcha.hmac_key"), "altcha-key").unwrap();
        let mut fig = Figment::new().merge(Toml::string(
            "[challenge]\nkind = \"hcaptcha\"\nsite_key = \"k\"\n",
        ));
        for c in crate::credentials::from_dir(dir.path()).unwrap() {
            fig = fig.merge(c);
        }
        let c = Config::from_figment(fig).unwrap();
        assert_eq!(c.challenge.secret.expose(), "captcha-secret");
        assert_eq!(c.challenge.altcha.hmac_key.expose(), "altcha-key");
        assert!(!format!("{c:?}").contains("captcha-secret"));
    }

    #[test]
    fn an_unreadable_secret_file_is_named_at_start_up() {
        let mut c = Config::default().challenge;
        c.kind = super::ChallengeKind::Turnstile;
        c.site_key = "k".into();
        c.secret_file = Some("/nonexistent/verifyd-captcha.secret".into());
        let e = crate::challenge::Challenges::build(&c, b"key")
            .err()
            .unwrap();
        assert!(
            e.contains("challenge.secret_file") && e.contains("/nonexistent"),
            "{e}"
        );
    }
}
