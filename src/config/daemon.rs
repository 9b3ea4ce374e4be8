//! The daemon's own sections: `[sweeper]` (expired-row clean-up), `[compat]` (the seed
//! application's routes), `[log]` and `[metrics]`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SweeperConfig {
    pub enabled: bool,
    /// Seconds between sweeps.
    pub interval: u64,
    /// Rows deleted per statement.
    pub batch_size: u32,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: 60,
            batch_size: 10_000,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// Serve the seed application's `/sms_send/` and `/sms_check/` routes.
    pub seed_routes: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Own address for `GET /metrics` (Prometheus), where scrapes need no authentication: bind
    /// it to loopback or an internal network. Unset: served on the API port behind the API key.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `verifyd=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl SweeperConfig {
    /// Ranges serde cannot check; returns the key at fault and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.interval == 0 {
            return Err(("sweeper.interval", "must be positive".into()));
        }
        if self.batch_size == 0 {
            return Err(("sweeper.batch_size", "must be positive".into()));
        }
        Ok(())
    }
}

impl LogConfig {
    /// `level` must be a filter `tracing` understands.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map(drop)
            .map_err(|e| ("log.level", e.to_string()))
    }
}
