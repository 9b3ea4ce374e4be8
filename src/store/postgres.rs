//! The PostgreSQL store: what several daemons share when they serve one deployment. Every
//! operation is one statement (or, for migrations, one transaction per file; for `set_value`, one
//! transaction holding the row lock) evaluated against the database clock, so racing requests
//! from any daemon get the answer a single server would give.

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use postgres_types::Json;
use serde_json::{Map, Value};
use std::future::Future;
use std::time::{Duration, SystemTime};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::session::{Expiry, KeyHash, Session, SessionPolicy};
use crate::store::pg_hosts::HostByHost;
use crate::store::pg_tls;
use crate::store::{StoreError, StoreResult};

/// The schema files, applied in order; the number is the version recorded in `schema_migrations`.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "0002_abuse_limits",
        include_str!("../../migrations/postgres/0002_abuse_limits.sql"),
    ),
    (
        3,
        "0003_challenge_and_networks",
        include_str!("../../migrations/postgres/0003_challenge_and_networks.sql"),
    ),
    (
        4,
        "0004_spent_challenges",
        include_str!("../../migrations/postgres/0004_spent_challenges.sql"),
    ),
    (
        5,
        "0005_deliveries",
        include_str!("../../migrations/postgres/0005_deliveries.sql"),
    ),
    (
        6,
        "0006_session_replace",
        include_str!("../../migrations/postgres/0006_session_replace.sql"),
    ),
    (
        7,
        "0007_same_code_resend",
        include_str!("../../migrations/postgres/0007_same_code_resend.sql"),
    ),
    (
        8,
        "0008_sharded_counters",
        include_str!("../../migrations/postgres/0008_sharded_counters.sql"),
    ),
    (
        9,
        "0009_events",
        include_str!("../../migrations/postgres/0009_events.sql"),
    ),
    (
        10,
        "0010_one_round_trip",
        include_str!("../../migrations/postgres/0010_one_round_trip.sql"),
    ),
    (
        11,
        "0011_dead_event_sweep",
        include_str!("../../migrations/postgres/0011_dead_event_sweep.sql"),
    ),
    (
        12,
        "0012_counted_by_upsert",
        include_str!("../../migrations/postgres/0012_counted_by_upsert.sql"),
    ),
    (
        13,
        "0013_leases",
        include_str!("../../migrations/postgres/0013_leases.sql"),
    ),
    (
        14,
        "0014_number_counters",
        include_str!("../../migrations/postgres/0014_number_counters.sql"),
    ),
    (
        15,
        "0015_number_quotas_judged_at_a_limit",
        include_str!("../../migrations/postgres/0015_number_quotas_judged_at_a_limit.sql"),
    ),
    (
        16,
        "0016_less_started_per_call",
        include_str!("../../migrations/postgres/0016_less_started_per_call.sql"),
    ),
    (
        17,
        "0017_one_failure_write",
        include_str!("../../migrations/postgres/0017_one_failure_write.sql"),
    ),
    (
        18,
        "0018_checks_on_domains",
        include_str!("../../migrations/postgres/0018_checks_on_domains.sql"),
    ),
];

mod budget;
mod deliveries;
mod events;
mod idempotency;
mod maintenance;
mod sessions;
mod verifications;

/// A statement that saw a row its own snapshot did not (a concurrent commit) is re-run; each
/// re-run sees at least one more commit, so a handful always suffices in practice.
const MAX_RERUNS: usize = 8;

/// Connection settings. Every wait is bounded so that a sick database yields `Unavailable`
/// quickly instead of hanging requests.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Maximum number of pooled connections.
    pub pool_size: usize,
    /// Limit for opening one connection to one host (TCP connect, TLS, startup); a URL with
    /// several hosts tries each in turn, each with this limit, as libpq does.
    pub connect_timeout: Duration,
    /// Limit for waiting until a pooled connection is free.
    pub acquire_timeout: Duration,
    /// Server-side limit for one statement (`statement_timeout`).
    pub statement_timeout: Duration,
}

/// A [`Store`](crate::store::Store) on a pool of PostgreSQL connections.
pub struct PgStore {
    pool: Pool,
    policy: SessionPolicy,
    /// Upper bound for one request-path operation, checkout included. It covers the case the
    /// server-side `statement_timeout` cannot: a server that stopped answering at all.
    deadline: Duration,
    /// Connection checkouts so far ([`crate::store::Maintenance::round_trips`]).
    round_trips: std::sync::atomic::AtomicU64,
    /// The blocks of shared budgets and the breaker counts this daemon holds.
    budgets: budget::Budgets,
}

impl PgStore {
    /// Builds the pool without connecting: the first operation opens the first connection, so a
    /// daemon can start (and report not-ready) while the database is down.
    ///
    /// Fails on a URL or TLS setting that cannot work (a bad `sslmode`, an unreadable CA file
    /// or key), naming the parameter.
    pub fn new(url: &str, opts: &PgOptions, policy: SessionPolicy) -> StoreResult<Self> {
        // The error texts never contain the URL, which may hold a password.
        let target = pg_tls::parse(url)
            .map_err(|e| StoreError::Internal(format!("store.postgres.url: {e}")))?;
        let mut cfg = target.config;
        cfg.connect_timeout(opts.connect_timeout);
        let hosts = cfg.get_hosts().len().max(1) as u32;
        let timeout = format!(
            "-c statement_timeout={}",
            opts.statement_timeout.as_millis()
        );
        let options = match cfg.get_options() {
            Some(existing) => format!("{existing} {timeout}"),
            None => timeout,
        };
        cfg.options(options);
        if cfg.get_application_name().is_none() {
            cfg.application_name("verifyd");
        }
        // `Fast` recycling only asks whether the connection's task has seen it close: a
        // database restart closes every socket, so broken connections are dropped on checkout
        // without the extra round trip `Verified` would add to every request (measured in
        // BENCHMARKS.md). A connection that dies unnoticed fails one request with 503.
        let manager = Manager::from_connect(
            cfg,
            HostByHost {
                tls: target.tls,
                per_host: opts.connect_timeout,
                warned_plaintext: Default::default(),
            },
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.acquire_timeout))
            .create_timeout(Some(opts.connect_timeout * hosts))
            .recycle_timeout(Some(opts.connect_timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("cannot build the PostgreSQL pool: {e}")))?;
        let deadline = opts.acquire_timeout + opts.connect_timeout * hosts + opts.statement_timeout;
        Ok(Self {
            pool,
            policy,
            deadline: deadline + Duration::from_secs(1),
            round_trips: std::sync::atomic::AtomicU64::new(0),
            budgets: budget::Budgets::default(),
        })
    }

    async fn conn(&self) -> StoreResult<Object> {
        self.round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.pool.get().await.map_err(pool_error)
    }

    /// A connection that leaves the pool for good unless the statement run on it settles
    /// cleanly; see [`Lease`].
    async fn lease(&self) -> StoreResult<Lease> {
        Ok(Lease(Some(self.conn().await?)))
    }

    /// Runs one request-path operation under the overall deadline.
    async fn bounded<T>(&self, op: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        tokio::time::timeout(self.deadline, op)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "the database did not answer in time".into(),
                ))
            })
    }

    /// One statement returning at most one row.
    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Option<Row>> {
        self.bounded(async {
            let c = self.lease().await?;
            let client = c.client();
            let r = match client.prepare_cached(sql).await {
                Ok(stmt) => client.query_opt(&stmt, params).await,
                Err(e) => Err(e),
            };
            c.settle(r)
        })
        .await
    }

    /// One statement whose row count is the answer.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        self.bounded(async {
            let c = self.lease().await?;
            let client = c.client();
            let r = match client.prepare_cached(sql).await {
                Ok(stmt) => client.execute(&stmt, params).await,
                Err(e) => Err(e),
            };
            c.settle(r)
        })
        .await
    }

    /// Policy values as statement parameters: passed on every call so that a configuration
    /// change applies to existing sessions at their next use.
    fn default_age(&self) -> i64 {
        i64::from(self.policy.default_age)
    }

    fn max_lifetime(&self) -> Option<i64> {
        self.policy.max_lifetime.map(i64::from)
    }

    /// A statement that updates one session by key (live only), slides its expiry and returns
    /// it. `$1` is the key hash, `$2`/`$3` the policy; the caller's extra parameters follow.
    async fn write_session(
        &self,
        sql: &str,
        key: &KeyHash,
        extra: &[&(dyn ToSql + Sync)],
    ) -> StoreResult<Option<Session>> {
        let (key, age, cap) = (key.0.as_slice(), self.default_age(), self.max_lifetime());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&key, &age, &cap];
        params.extend_from_slice(extra);
        match self.query_opt(sql, &params).await? {
            Some(row) => session_from(&row, true),
            None => Ok(None),
        }
    }
}

/// Builds the session from a row carrying the session columns; `None` when they are NULL (an
/// outer join that found no session).
fn session_from(row: &Row, refreshed: bool) -> StoreResult<Option<Session>> {
    let Some(id) = row.try_get::<_, Option<i64>>("id").map_err(db_error)? else {
        return Ok(None);
    };
    // Statements from before migration 6 return neither `data_json` nor the version: their
    // rows come in jsonb's key order and report version 0.
    let Json(data) = match row.try_get::<_, Json<Map<String, Value>>>("data_json") {
        Ok(ordered) => ordered,
        Err(_) => row
            .try_get::<_, Json<Map<String, Value>>>("data")
            .map_err(db_error)?,
    };
    let expires_at: Option<SystemTime> = row.try_get("expires_at").map_err(db_error)?;
    Ok(Some(Session {
        id,
        data,
        expiry: Expiry::from_row(
            row.try_get("expiry_kind").map_err(db_error)?,
            row.try_get("idle_secs").map_err(db_error)?,
            expires_at,
        ),
        created_at: row.try_get("created_at").map_err(db_error)?,
        expires_at,
        refreshed,
        version: row.try_get("version").unwrap_or(0),
    }))
}

/// Attempt counts are never negative (a CHECK constraint says so).
fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A pooled connection that is closed, not returned, unless released: a future dropped mid-
/// statement (the request deadline passed) leaves the connection with an answer still owed, and
/// on a frozen server the next request would queue behind it; the sweep lock is held by the
/// database session, so a sweep that fails must close its connection to release the lock.
struct Lease(Option<Object>);

impl Lease {
    fn client(&self) -> &deadpool_postgres::ClientWrapper {
        self.0
            .as_ref()
            .expect("the lease holds its connection until released")
    }

    /// Returns the connection to the pool.
    fn release(mut self) {
        self.0.take();
    }

    /// Returns the connection to the pool unless the error says it is on the wrong server:
    /// after a failover the old primary may come back read-only (or a standby may be reached
    /// without `target_session_attrs=read-write`), and its connections would fail every write.
    /// Dropping them makes the pool open new ones, which find the new primary.
    fn settle<T>(self, r: Result<T, tokio_postgres::Error>) -> StoreResult<T> {
        match r {
            Ok(v) => {
                self.release();
                Ok(v)
            }
            Err(e) if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => {
                tracing::warn!("PostgreSQL server is read-only; dropping its connection");
                Err(db_error(e))
            }
            Err(e) => {
                self.release();
                Err(db_error(e))
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Timeout(_) => {
            StoreError::Unavailable("timed out waiting for a database connection".into())
        }
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".into()),
        // Opening a connection failed (refused, TLS, authentication, no writable host): the
        // request can succeed once the database or its configuration is fixed.
        PoolError::Backend(e) => match db_error(e) {
            StoreError::Internal(text) => StoreError::Unavailable(text),
            other => other,
        },
        other => StoreError::Internal(format!("connection pool: {other}")),
    }
}

/// Unavailable for what retrying later can fix (no connection, a broken one, a server shutting
/// down or out of resources, a statement cut off by `statement_timeout`); Internal for the rest.
fn db_error(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        return StoreError::SessionGone;
    }
    let unavailable = match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08")
                || c.starts_with("53")
                // The database itself is missing (dropped, or not created yet): nothing the
                // client did; it comes back when the operator restores it.
                || *code == SqlState::INVALID_CATALOG_NAME
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    // A demoted primary or a standby: the next connection finds the primary.
                    SqlState::READ_ONLY_SQL_TRANSACTION,
                ]
                .contains(code)
                || *code == SqlState::QUERY_CANCELED
        }
        None => {
            e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        }
    };
    // The database's detail line can quote row values (a phone number, say); only the message
    // and the SQLSTATE go into the error, and from there into logs.
    let text = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // tokio-postgres' own text omits the cause ("error performing TLS handshake").
        None => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text = format!("{text}: {c}");
                cause = c.source();
            }
            text
        }
    };
    if unavailable {
        StoreError::Unavailable(text)
    } else {
        StoreError::Internal(text)
    }
}
