//! Configuration: defaults in code, then `config.toml`, then systemd credentials, then
//! `VERIFYD_SECTION__KEY` variables, merged by figment. Values are parsed into their types as
//! they are read (networks, origins, API key hashes); what serde cannot check — ranges and
//! relations between keys — is checked right after, so a `Config` that loaded is valid. Every
//! refusal names the key and the file, credential or variable that set it.
//!
//! One file per section here; sections that belong to a lower module (providers, limits,
//! challenges) are defined by that module and only gathered here.

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

mod api;
mod daemon;
mod explain;
mod http;
mod renamed;
mod secrets;
mod session;
mod sources;
mod store;
mod verification;

pub use api::{ApiConfig, ApiKeyHash};
pub use daemon::{CompatConfig, LogConfig, LogFormat, MetricsConfig, SweeperConfig};
pub use explain::explain;
pub use http::{CorsConfig, ForwardedHeader, HttpConfig};
pub use session::SessionConfig;
pub use store::{Backend, PostgresConfig, SqliteConfig, StoreConfig};
pub use verification::{ResendMode, VerificationConfig};

pub use crate::challenge::config::ChallengeConfig;
pub use crate::provider::config::{MockConfig, NamedProvider, ProviderConfig, ProviderKind};
pub use crate::quota::{
    ChallengeMode, CountriesConfig, GlobalConfig, OnTrip, PerIpConfig, PerPhoneConfig,
    PumpingConfig,
};

use crate::provider::config::ProviderSet;
use crate::quota::Limits;

/// The whole configuration. Every section rejects keys it does not know.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub session: SessionConfig,
    pub verification: VerificationConfig,
    /// The single provider; ignored shape when `providers` is used.
    pub provider: ProviderConfig,
    /// Named provider instances, used with `routes` for per-country routing and failover.
    pub providers: BTreeMap<String, NamedProvider>,
    /// E.164 prefix (or `*`) → provider names, tried in order.
    pub routes: BTreeMap<crate::provider::routing::RouteKey, Vec<String>>,
    pub api: ApiConfig,
    pub sweeper: SweeperConfig,
    pub compat: CompatConfig,
    pub log: LogConfig,
    pub per_phone: PerPhoneConfig,
    pub per_ip: PerIpConfig,
    pub global: GlobalConfig,
    pub countries: CountriesConfig,
    pub pumping: PumpingConfig,
    /// Challenges (proof-of-work or CAPTCHA) before sends.
    pub challenge: ChallengeConfig,
    pub metrics: MetricsConfig,
    /// Verification events posted to webhook endpoints.
    pub events: crate::events::config::EventsConfig,
    /// One note per deprecated key the configuration used, for the log once logging is set up.
    #[serde(skip)]
    pub deprecations: Vec<String>,
}

/// A configuration that could not be loaded, with the key and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Defaults, then `path` (when given and present), then systemd credentials
    /// (`$CREDENTIALS_DIRECTORY`, see [`crate::credentials`]), then `VERIFYD_*__*` variables.
    /// An explicitly given path must exist.
    pub fn load(path: Option<&Path>, explicit: bool) -> Result<Config, ConfigError> {
        Self::from_figment(Self::figment(path, explicit)?)
    }

    /// The layers `load` merges, for `load` and for `check-config --explain`.
    pub fn figment(path: Option<&Path>, explicit: bool) -> Result<Figment, ConfigError> {
        // No `Serialized::defaults` layer: every section is `#[serde(default)]`, so serde fills
        // in what the file and environment leave out — and secrets are never round-tripped
        // through their redacting `Serialize`.
        let mut fig = Figment::new();
        if let Some(p) = path {
            if explicit && !p.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    p.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(p));
        }
        for credential in crate::credentials::from_env().map_err(ConfigError)? {
            fig = fig.merge(credential);
        }
        Ok(fig.merge(sources::env_provider()))
    }

    /// Extracts and validates; used by `load` and by tests that build their own figment.
    pub fn from_figment(fig: Figment) -> Result<Config, ConfigError> {
        // `fig` still knows where each deprecated key was written; `converted` holds its
        // value in seconds, under the old name that the field's serde alias accepts.
        let (converted, deprecations) = renamed::convert(&fig)?;
        let mut config: Config = converted
            .extract()
            .map_err(|e| sources::describe(&fig, e))?;
        config.deprecations = deprecations;
        let invalid = |key: &str, msg: String| sources::invalid(&fig, key, msg);
        // Before validation, which checks that the secrets a provider needs are there.
        crate::secret_file::read_all(config.secret_slots(), |key| fig.contains(key))
            .map_err(|(key, msg)| invalid(&key, msg))?;
        config.validate().map_err(|(key, msg)| invalid(key, msg))?;
        if !config.providers.is_empty() && fig.contains("provider") {
            return Err(invalid(
                "provider",
                "use either [provider] or [providers.<name>] with [routes], not both".into(),
            ));
        }
        crate::provider::instances::validate(config.provider_set(), config.http.request_timeout)
            .map_err(|(key, msg)| invalid(&key, msg))?;
        config
            .events
            .validate()
            .map_err(|(key, msg)| invalid(&key, msg))?;
        Ok(config)
    }

    /// The abuse-limit settings, as the guards read them.
    pub fn limits(&self) -> Limits<'_> {
        Limits {
            per_phone: &self.per_phone,
            per_ip: &self.per_ip,
            global: &self.global,
            countries: &self.countries,
            pumping: &self.pumping,
            challenge: self.challenge.mode,
        }
    }

    /// The provider settings, as the router is built from them.
    pub fn provider_set(&self) -> ProviderSet<'_> {
        ProviderSet {
            single: &self.provider,
            named: &self.providers,
            routes: &self.routes,
        }
    }

    /// Checks the values serde cannot: ranges and relations between keys, section by section.
    /// Returns the offending key and why.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.verification.validate()?;
        self.session.validate()?;
        self.http.validate()?;
        self.store.validate()?;
        self.sweeper.validate()?;
        if self.provider.kind == ProviderKind::Aliyun {
            let aliyun = &self.provider.aliyun;
            aliyun.validate()?;
            // Otherwise the request times out first, and the send is cancelled mid-retry.
            if aliyun.max_total.duration() >= Duration::from_secs(self.http.request_timeout) {
                return Err((
                    "provider.aliyun.max_total",
                    format!(
                        "must be shorter than http.request_timeout ({} s)",
                        self.http.request_timeout
                    ),
                ));
            }
        }
        self.limits().validate()?;
        self.challenge.validate()?;
        self.log.validate()
    }
}

#[cfg(test)]
// figment's `Jail` closures return its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests;
