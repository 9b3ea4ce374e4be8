//! The store's upkeep, apart from what the product does with it: schema, health, the pool
//! gauge, the server secret and the sweeper that garbage-collects what has expired.

use async_trait::async_trait;
use std::time::Duration;

use crate::store::StoreResult;

/// Name of the server secret's row in `verifyd_meta`, the same in both stores.
pub(super) const SECRET_NAME: &str = "code_mac_key";

/// Rows removed by one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub sessions: u64,
    pub verifications: u64,
    /// Expired quota counters, pumping windows, idempotency records and spent challenges.
    pub limits: u64,
    /// Dead outbox events deleted because they had been dead longer than the sweep keeps them.
    pub dead_events: u64,
    /// False when another daemon held the sweep lock and this one did nothing.
    pub ran: bool,
}

/// Connections of a pooled store, sampled for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    pub in_use: usize,
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

impl From<PoolStatus> for crate::metrics::PoolSample {
    fn from(p: PoolStatus) -> Self {
        crate::metrics::PoolSample {
            in_use: p.in_use,
            idle: p.idle,
            waiting: p.waiting,
        }
    }
}

/// Keeping a store usable; called at start-up and by `verifyd migrate`, `/readyz`, `/metrics`
/// and the sweeper.
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Creates the schema or brings it up to date (idempotent, safe with concurrent callers).
    async fn migrate(&self) -> StoreResult<()>;

    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// The connection pool's state, for stores that have one (the embedded store has none).
    fn pool_usage(&self) -> Option<PoolStatus> {
        None
    }

    /// How many times this store has gone to its database since it was opened: on PostgreSQL a
    /// connection checkout (each runs one statement, or one transaction for the few multi-
    /// statement operations), on SQLite one transaction (or read) on the connection's thread.
    /// What a request costs in round trips and commits is the difference across it.
    fn round_trips(&self) -> u64;

    /// The server secret that keys code MACs: created randomly on first call, then the same
    /// value for every caller and every later start (shared by all daemons on one database).
    async fn server_secret(&self) -> StoreResult<Vec<u8>>;

    /// Deletes expired sessions, finished verifications, ended quota windows, expired
    /// idempotency records, spent challenges past their expiry and outbox events dead for
    /// longer than `keep_dead`, in batches of at most `batch` rows per statement, until none are
    /// left. A pending event (never dead, or redriven since) is never deleted. Only one caller
    /// sweeps a database at a time; the others return `ran = false` at once.
    async fn sweep(&self, batch: u32, keep_dead: Duration) -> StoreResult<SweepReport>;

    /// Hands back what this daemon holds of the shared counters and has not used (on
    /// PostgreSQL: the unspent slots of its leases, and the breaker counts it keeps in memory),
    /// so that the other daemons can use it. Called when the daemon stops.
    async fn hand_back(&self) -> StoreResult<()> {
        Ok(())
    }
}
