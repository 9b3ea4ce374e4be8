//! `App`: the long-lived state every request handler shares, built once from the configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::challenge::Challenges;
use crate::code::{Code, CodeKey};
use crate::config::{Backend, Config};
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
    /// (name, SHA-256 of the key) for each backend API key.
    api_keys: Vec<(String, [u8; 32])>,
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
        let provider = Arc::new(crate::provider::instances::build(&config, &metrics).await?);
        let templates = Templates::new(
            &config.verification.template,
            &config.verification.templates,
        );
        let phones = config
            .verification
            .phone_parser()
            .map_err(|(key, e)| anyhow::anyhow!("{key}: {e}"))?;
        // Keyed by the canonical form, which is what requests look up: a test number written
        // with spaces in the config must not be sent real messages.
        let test_numbers = config
            .verification
            .test_numbers
            .iter()
            .filter_map(|(number, code)| {
                let phone = phones.parse(number).ok()?;
                Some((phone.as_str().to_owned(), Code::parse(code)?))
            })
            .collect();
        let api_keys = config
            .api
            .keys
            .iter()
            .filter_map(|(name, hex_hash)| {
                let mut h = [0u8; 32];
                hex::decode_to_slice(hex_hash, &mut h).ok()?;
                Some((name.clone(), h))
            })
            .collect();
        Ok(App {
            store,
            provider,
            templates,
            code_key: CodeKey::new(secret),
            challenges,
            phones,
            metrics,
            test_numbers,
            api_keys,
            config,
        })
    }

    /// The name of the API key `presented`, comparing hashes in constant time.
    pub fn api_key_name(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, hash) in &self.api_keys {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Hex SHA-256 of an API key: the form `api.keys` holds.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

/// Builds the configured store without touching the network or the disk beyond opening a file.
pub fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let policy = config.session.policy();
    Ok(match config.store.backend {
        Backend::Sqlite => {
            let c = &config.store.sqlite;
            let opts = SqliteOptions {
                synchronous: c.synchronous,
                busy_timeout: Duration::from_millis(c.busy_timeout_ms),
            };
            Arc::new(SqliteStore::open(&c.path, &opts, policy)?)
        }
        Backend::Postgres => {
            let c = &config.store.postgres;
            let opts = PgOptions {
                pool_size: c.pool_size,
                connect_timeout: Duration::from_secs(c.connect_timeout),
                acquire_timeout: Duration::from_millis(c.acquire_timeout_ms),
                statement_timeout: Duration::from_millis(c.statement_timeout_ms),
            };
            Arc::new(PgStore::new(c.url.expose(), &opts, policy)?)
        }
    })
}
