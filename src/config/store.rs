//! `[store]`: which database keeps sessions and verifications, and how verifyd talks to it.

use crate::seconds::Seconds;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::secret::Secret;
use crate::store::sqlite::Synchronous;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
    pub sqlite: SqliteConfig,
    pub postgres: PostgresConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Sqlite,
            migrate_on_start: true,
            sqlite: SqliteConfig::default(),
            postgres: PostgresConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    pub path: PathBuf,
    /// `full`: every acknowledged write survives power loss; `normal`: survives process crashes.
    pub synchronous: Synchronous,
    /// Seconds to wait for the database lock before answering 503.
    #[serde(alias = "busy_timeout_ms")]
    pub busy_timeout: Seconds,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: "verifyd.db".into(),
            synchronous: Synchronous::Full,
            busy_timeout: Seconds::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// libpq-style URL; may carry a password, so it is redacted when printed.
    pub url: Secret,
    /// A file holding the URL instead, read at start-up.
    pub url_file: Option<PathBuf>,
    pub pool_size: usize,
    /// Seconds to open a connection.
    pub connect_timeout: u64,
    /// Seconds a request waits for a pooled connection before 503.
    #[serde(alias = "acquire_timeout_ms")]
    pub acquire_timeout: Seconds,
    /// Seconds one statement may run (server-side `statement_timeout`).
    #[serde(alias = "statement_timeout_ms")]
    pub statement_timeout: Seconds,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/verifyd"),
            url_file: None,
            pool_size: 16,
            connect_timeout: 3,
            acquire_timeout: Seconds::from_secs(2),
            statement_timeout: Seconds::from_secs(5),
        }
    }
}

impl StoreConfig {
    /// Ranges serde cannot check; returns the key at fault and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.postgres.pool_size == 0 {
            return Err(("store.postgres.pool_size", "must be positive".into()));
        }
        Ok(())
    }
}
