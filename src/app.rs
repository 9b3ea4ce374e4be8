//! `App`: the long-lived state every request handler shares, built once from the configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::challenge::Challenges;
use crate::code::{Code, CodeKey};
use crate::config::{ApiKeyHash, Backend, Config};
use crate::metrics::Metrics;
use crate::phone::PhoneParser;
use crate::provider::routing::Router;
use crate::provider::templates::Templates;
use crate::store::Store;
use crate::store::postgres::{PgOptions, PgStore};
use crate::store::sqlite::{SqliteOptions, SqliteStore};

pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    /// The configured provider instances behind their routes, timeouts and breakers.
    pub provider: Arc<Router>,
    /// Message texts by locale and prefix.
    pub templates: Templates,
    pub code_key: CodeKey,
    /// Issues and checks the challenges a browser solves before a send.
    pub challenges: Challenges,
    pub phones: PhoneParser,
    /// Counters and histograms for `/metrics`; this daemon's alone.
    pub metrics: Arc<Metrics>,
    /// Fixed codes for test numbers, by E.164 number.
    pub test_numbers: HashMap<String, Code>,
}

impl App {
    /// Opens the store (migrating it when `migrate` is set), loads the code key and the provider.
    pub async fn build(config: Config, migrate: bool) -> anyhow::Result<App> {
        let store = open_store(&config)?;
        if migrate {
            store.migrate().await?;
        }
        let secret = if config.verification.secret.is_empty() {
            store.server_secret().await?
        } else {
            config.verification.secret.expose().as_bytes().to_vec()
        };
        let challenges =
            Challenges::build(&config.challenge, &secret).map_err(anyhow::Error::msg)?;
        let metrics = Arc::new(Metrics::new());
        let provider =
            Arc::new(crate::provider::instances::build(config.provider_set(), &metrics).await?);
        let templates = Templates::new(
            &config.verification.template,
            &config.verification.templates,
            config.verification.otp_domain.as_deref(),
        );
        let verification = &config.verification;
        let invalid = |(key, e): (&str, String)| anyhow::anyhow!("{key}: {e}");
        let phones = verification.phone_parser();
        let test_numbers = verification.fixed_codes(&phones).map_err(invalid)?;
        Ok(App {
            store,
            provider,
            templates,
            code_key: CodeKey::new(secret),
            challenges,
            phones,
            metrics,
            test_numbers,
            config,
        })
    }

    /// The name of the API key `presented`, comparing hashes in constant time.
    pub fn api_key_name(&self, presented: &str) -> Option<&str> {
        self.config.api.key_name(presented)
    }

    /// What the verification flow may use.
    pub fn flow(&self) -> crate::verify::Context<'_> {
        crate::verify::Context {
            store: self.store.as_ref(),
            provider: &self.provider,
            templates: &self.templates,
            code_key: &self.code_key,
            metrics: &self.metrics,
            test_numbers: &self.test_numbers,
            verification: &self.config.verification,
            limits: self.config.limits(),
            record_refusals: !self.config.events.endpoints.is_empty(),
            providers: self.config.provider_set(),
        }
    }
}

/// The SHA-256 of an API key: the form `api.keys` holds (printed as hex).
pub fn hash_api_key(key: &str) -> ApiKeyHash {
    ApiKeyHash::of(key)
}

/// Builds the configured store without touching the network or the disk beyond opening a file.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let policy = config.session.policy();
    Ok(match config.store.backend {
        Backend::Sqlite => {
            let c = &config.store.sqlite;
            let opts = SqliteOptions {
                synchronous: c.synchronous,
                busy_timeout: c.busy_timeout.duration(),
            };
            Arc::new(SqliteStore::open(&c.path, &opts, policy)?)
        }
        Backend::Postgres => {
            let c = &config.store.postgres;
            let opts = PgOptions {
                pool_size: c.pool_size,
                connect_timeout: Duration::from_secs(c.connect_timeout),
                acquire_timeout: c.acquire_timeout.duration(),
                statement_timeout: c.statement_timeout.duration(),
            };
            Arc::new(PgStore::new(c.url.expose(), &opts, policy)?)
        }
    })
}
