//! Challenges before sending: a proof that a person's browser did some work (ALTCHA, built in)
//! or passed a CAPTCHA (Turnstile, hCaptcha) before an SMS costs the operator money. This module
//! issues what `GET /v1/challenge` hands out and checks what a send carries back; when a send
//! needs one is decided with the other abuse limits.

pub mod altcha;
pub mod config;
pub mod siteverify;

use serde_json::{Value, json};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::secret::Secret;
use crate::store::{IdempotencyStore, StoreError};
use altcha::{AltchaError, AltchaKey};
use config::{ChallengeConfig, ChallengeKind};
use siteverify::{Siteverify, SiteverifyError};

/// The path pages fetch a challenge from; named in `challenge_required` answers.
pub const PATH: &str = "/v1/challenge";

/// Why a submitted solution did not count.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// Forged, wrong, expired, replayed or meant for another kind: the client should fetch a
    /// new challenge.
    #[error("{0}")]
    Invalid(String),
    /// The CAPTCHA provider could not be asked (down, slow, garbled answer).
    #[error("{0}")]
    Unavailable(String),
    /// The CAPTCHA provider refused the server's own credentials.
    #[error("{0}")]
    Misconfigured(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AltchaError> for ChallengeError {
    fn from(e: AltchaError) -> Self {
        ChallengeError::Invalid(e.to_string())
    }
}

impl From<SiteverifyError> for ChallengeError {
    fn from(e: SiteverifyError) -> Self {
        match e {
            SiteverifyError::Rejected(m) => ChallengeError::Invalid(m),
            SiteverifyError::Unavailable(m) => ChallengeError::Unavailable(m),
            SiteverifyError::Misconfigured(m) => ChallengeError::Misconfigured(m),
        }
    }
}

/// The solution fields of a send body, by the name each widget gives them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Submitted<'a> {
    pub altcha: Option<&'a str>,
    pub turnstile: Option<&'a str>,
    pub hcaptcha: Option<&'a str>,
}

impl<'a> Submitted<'a> {
    fn of(&self, kind: ChallengeKind) -> Option<&'a str> {
        match kind {
            ChallengeKind::Altcha => self.altcha,
            ChallengeKind::Turnstile => self.turnstile,
            ChallengeKind::Hcaptcha => self.hcaptcha,
        }
    }
}

/// Issues and checks the configured kind of challenge.
pub struct Challenges {
    kind: ChallengeKind,
    altcha_key: AltchaKey,
    max_number: u64,
    lifetime: Duration,
    site_key: String,
    siteverify: Option<Siteverify>,
}

impl Challenges {
    /// `code_key` is the code-MAC key, from which the ALTCHA key is derived when none is set.
    /// Errors name the configuration key at fault.
    pub fn build(cfg: &ChallengeConfig, code_key: &[u8]) -> Result<Self, String> {
        let altcha_key = if cfg.altcha.hmac_key.is_empty() {
            AltchaKey::derive(code_key)
        } else {
            AltchaKey::new(cfg.altcha.hmac_key.expose().as_bytes().to_vec())
        };
        let siteverify = match cfg.kind.default_siteverify_url() {
            None => None,
            Some(default_url) => {
                let url = cfg.siteverify_url.as_deref().unwrap_or(default_url);
                let client = Siteverify::new(
                    cfg.kind,
                    url,
                    secret(cfg)?,
                    cfg.site_key.clone(),
                    cfg.hostnames.clone(),
                    cfg.timeout.duration(),
                )
                .map_err(|e| format!("challenge.siteverify_url: {e}"))?;
                Some(client)
            }
        };
        Ok(Self {
            kind: cfg.kind,
            altcha_key,
            max_number: cfg.altcha.max_number,
            lifetime: Duration::from_secs(cfg.altcha.expires),
            site_key: cfg.site_key.clone(),
            siteverify,
        })
    }

    pub fn kind(&self) -> ChallengeKind {
        self.kind
    }

    /// The answer of `GET /v1/challenge`: a fresh ALTCHA challenge in the widget's format, or
    /// what a page needs to show the Turnstile/hCaptcha widget.
    pub fn describe(&self, now: SystemTime) -> Value {
        let field = self.kind.field();
        match self.kind {
            ChallengeKind::Altcha => {
                let c = altcha::issue(&self.altcha_key, self.max_number, self.lifetime, now);
                json!({
                    "kind": "altcha", "field": field,
                    "algorithm": c.algorithm, "challenge": c.challenge, "maxnumber": c.maxnumber,
                    "salt": c.salt, "signature": c.signature,
                })
            }
            kind => json!({ "kind": kind.as_str(), "field": field, "site_key": self.site_key }),
        }
    }

    /// Checks the solution a send carries, if any: `Ok(false)` when there is none, `Ok(true)`
    /// when it is valid (and, for ALTCHA, now spent in the store for every daemon).
    pub async fn check(
        &self,
        store: &dyn IdempotencyStore,
        submitted: Submitted<'_>,
        client: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<bool, ChallengeError> {
        let Some(solution) = submitted.of(self.kind) else {
            let other = [
                ChallengeKind::Altcha,
                ChallengeKind::Turnstile,
                ChallengeKind::Hcaptcha,
            ]
            .into_iter()
            .find(|k| submitted.of(*k).is_some());
            return match other {
                Some(k) => Err(ChallengeError::Invalid(format!(
                    "this server takes {} challenges in `{}`, not `{}`",
                    self.kind.as_str(),
                    self.kind.field(),
                    k.field()
                ))),
                None => Ok(false),
            };
        };
        match &self.siteverify {
            None => {
                let v = altcha::verify(&self.altcha_key, solution, now)?;
                if !store.spend_challenge(&v.id, v.expires_at).await? {
                    return Err(ChallengeError::Invalid(
                        "this altcha challenge was already used; fetch a new one".into(),
                    ));
                }
            }
            Some(sv) => sv.verify(solution, client).await?,
        }
        Ok(true)
    }
}

/// The Turnstile/hCaptcha secret, from the setting (or its credential) or from its file.
fn secret(cfg: &ChallengeConfig) -> Result<Secret, String> {
    let Some(path) = &cfg.secret_file else {
        return Ok(cfg.secret.clone());
    };
    let raw = std::fs::read_to_string(path)
        .map_err(|e| format!("challenge.secret_file: cannot read {}: {e}", path.display()))?;
    let value = raw.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!(
            "challenge.secret_file: {} is empty",
            path.display()
        ));
    }
    Ok(Secret::new(value))
}
