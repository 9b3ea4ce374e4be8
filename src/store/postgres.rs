//! The PostgreSQL store: what several daemons share when they serve one deployment. Every
//! operation is one statement (or, for migrations, one transaction per file; for `set_value`, one
//! transaction holding the row lock) evaluated against the database clock, so racing requests
//! from any daemon get the answer a single server would give.

use async_trait::async_trait;
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

use crate::code::{CodeMac, CodeNonce};
use crate::delivery::{Delivery, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::phone::PhoneNumber;
use crate::quota::{CheckGuard, PumpingState, Quota, Refusal, Scope, SendGuard};
use crate::session::{Expiry, KeyHash, Session, SessionPolicy};
use crate::session_data::data_bytes;
use crate::store::idempotency::{headers_from_json, headers_to_json};
use crate::store::maintenance::SECRET_NAME;
use crate::store::pg_hosts::HostByHost;
use crate::store::pg_tls;
use crate::store::{
    CheckOutcome, CheckVerification, DeleteOutcome, IdempotencyBegin, IdempotencyStore, LiveCode,
    Maintenance, PoolStatus, ReplaceOutcome, SessionStore, StartOutcome, StartVerification,
    StoreError, StoreResult, SweepReport, VerificationStore, retry_after,
};

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
];

mod deliveries;
mod events;

/// Rows each deployment-wide counter (the global and per-country caps, the pumping breaker's
/// counts) is split into: `verifyd_shard()` in migrations/postgres/0008 picks one of this many.
/// A send can miss at most `SHARDS - 1` sends in flight, so near a limit it waits for them and
/// the caps stay exact (docs/performance.md has the proof).
pub const SHARDS: u32 = 16;

/// Advisory lock keys ("verifyd" in ASCII plus a tag), one per job that must not run twice at once.
const MIGRATE_LOCK: i64 = 0x7665_7269_6679_6401;
const SWEEP_LOCK: i64 = 0x7665_7269_6679_6402;

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

/// A [`Store`] on a pool of PostgreSQL connections.
pub struct PgStore {
    pool: Pool,
    policy: SessionPolicy,
    /// Upper bound for one request-path operation, checkout included. It covers the case the
    /// server-side `statement_timeout` cannot: a server that stopped answering at all.
    deadline: Duration,
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
        })
    }

    async fn conn(&self) -> StoreResult<Object> {
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

/// Run by `set_value` after it read and locked the row (see there).
const SET_VALUE: &str = "
    UPDATE sessions
    SET data = data || jsonb_build_object($4::text, $5::jsonb),
        data_json = $6::json,
        touched_at = now(),
        expires_at = verifyd_session_expiry(expiry_kind, idle_secs, created_at, $2, $3)
    WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
    RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version";

const CLEAR: &str = "
    UPDATE sessions
    SET data = '{}',
        touched_at = now(),
        expires_at = verifyd_session_expiry(expiry_kind, idle_secs, created_at, $2, $3)
    WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
    RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version";

const CYCLE: &str = "
    UPDATE sessions
    SET key_hash = $4,
        touched_at = now(),
        expires_at = verifyd_session_expiry(expiry_kind, idle_secs, created_at, $2, $3)
    WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
    RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version";

const SET_EXPIRY: &str = "
    UPDATE sessions
    SET expiry_kind = $4,
        idle_secs = $5,
        expiry_at = LEAST($6::timestamptz, created_at + make_interval(secs => $3::bigint)),
        touched_at = now(),
        expires_at = verifyd_session_expiry($4, $5, created_at, $2, $3)
    WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
    RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version";

/// Replaces data, key order and expiry at once (`PUT /v1/sessions/{key}`); with `$9` set, only
/// while the version still is `$9`. Under READ COMMITTED a racing writer's commit makes this
/// statement re-check the version on the new row, so two writers holding one version cannot
/// both succeed. `$6` is the absolute moment for kind 4.
const REPLACE: &str = "
    UPDATE sessions
    SET data = $4,
        data_json = $5,
        expiry_kind = $7,
        idle_secs = $8,
        expiry_at = LEAST($6::timestamptz, created_at + make_interval(secs => $3::bigint)),
        touched_at = now(),
        expires_at = verifyd_session_expiry($7, $8, created_at, $2, $3)
    WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
      AND ($9::bigint IS NULL OR version = $9)
    RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version";

/// The live session's version, after [`REPLACE`] changed nothing: tells 404 from 412.
const VERSION_OF: &str = "
    SELECT version FROM sessions
    WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())";

/// Slides the expiry only when the refresh interval has passed; otherwise returns the row as is.
/// The common case (no slide) takes no row lock.
const TOUCH: &str = "
    WITH slid AS (
        UPDATE sessions
        SET touched_at = now(),
            expires_at = verifyd_session_expiry(expiry_kind, idle_secs, created_at, $2, $3)
        WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
          AND touched_at <= now() - make_interval(secs => $4::bigint)
        RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version
    )
    SELECT id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version, true AS refreshed FROM slid
    UNION ALL
    SELECT id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version, false FROM sessions
    WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
      AND NOT EXISTS (SELECT 1 FROM slid)";

/// `found` tells a missing session from a missing key when nothing was deleted.
const DELETE_VALUE: &str = "
    WITH upd AS (
        UPDATE sessions
        SET data = data - $4::text,
            touched_at = now(),
            expires_at = verifyd_session_expiry(expiry_kind, idle_secs, created_at, $2, $3)
        WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now()) AND data ? $4::text
        RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version
    )
    SELECT EXISTS (SELECT 1 FROM sessions
                   WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())) AS found,
           upd.*
    FROM (VALUES (1)) AS one (x) LEFT JOIN upd ON true";

/// Lifts the cooldown of a failed send and gives back what it took (see migrations/postgres/0008).
const ABANDON_SEND: &str = "SELECT verifyd_abandon_send($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// Inserts the secret unless one exists, and returns the stored one. Under a concurrent first
/// call the insert waits, does nothing, and the snapshot misses the winner's row: no row comes
/// back and the caller re-runs.
const SERVER_SECRET: &str = "
    WITH ins AS (
        INSERT INTO verifyd_meta (name, value) VALUES ($1, $2)
        ON CONFLICT (name) DO NOTHING
        RETURNING value
    )
    SELECT value FROM ins
    UNION ALL
    SELECT value FROM verifyd_meta WHERE name = $1";

/// Batched deletes walk the `expires_at` indexes, so each statement touches at most `$1` rows
/// and holds its locks briefly. Deleting a session deletes its verifications too.
const SWEEP_SESSIONS: &str = "
    DELETE FROM sessions WHERE id IN (
        SELECT id FROM sessions WHERE expires_at < now() ORDER BY expires_at LIMIT $1)";

const SWEEP_VERIFICATIONS: &str = "
    DELETE FROM verifications WHERE (session_id, phone) IN (
        SELECT session_id, phone FROM verifications
        WHERE expires_at < now() ORDER BY expires_at LIMIT $1)";

/// One send: the verification rules, every abuse limit and the challenge, and a browser's
/// first session (see migrations/postgres/0008).
const START_SEND: &str = "
    SELECT * FROM verifyd_start_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                     $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,
                                     $25, $26, $27)";

/// An id from the sessions' own sequence: no row is written, and `create_session` never
/// hands it out.
const RESERVE_SESSION_ID: &str = "SELECT nextval(pg_get_serial_sequence('sessions', 'id'))";

/// One check; the session columns are renamed for [`session_from`].
const CHECK: &str = "
    SELECT o_outcome, o_attempts, o_retry_at, o_refused, o_now,
           o_id AS id, o_data AS data, o_expiry_kind AS expiry_kind, o_idle_secs AS idle_secs,
           o_created_at AS created_at, o_expires_at AS expires_at
    FROM verifyd_check($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                       $18, $19)";

/// The pending code a resend may send again, if its nonce is the one of the stored code;
/// `keep_until` comes back with the clock it is measured by.
const LIVE_CODE: &str = "
    SELECT code_nonce, keep_until, now() AS now FROM verifications
    WHERE session_id = $1 AND phone = $2 AND state = 0 AND nonce_mac = code_mac
      AND expires_at >= now() + make_interval(secs => $3::float8)
      AND keep_until >= now() + make_interval(secs => $4::float8)";

/// Records the code a row holds, while its MAC is still `$3`.
const BIND_CODE: &str = "
    UPDATE verifications
    SET code_mac = $4, code_nonce = $5, nonce_mac = $4,
        keep_until = coalesce(now() + make_interval(secs => $6::float8), keep_until)
    WHERE session_id = $1 AND phone = $2 AND code_mac = $3";

/// The counts are the sums of the window's shards (migrations/postgres/0008).
const PUMPING_STATES: &str = "
    SELECT p.country,
           least(coalesce(sum(s.sends), 0), 2147483647)::integer AS sends,
           least(coalesce(sum(s.approvals), 0), 2147483647)::integer AS approvals,
           p.tripped, p.expires_at
    FROM pumping p
        LEFT JOIN pumping_shards s ON s.country = p.country AND s.window_ends = p.expires_at
    WHERE p.expires_at > now()
    GROUP BY p.country, p.tripped, p.expires_at
    ORDER BY p.country";

/// Ends the window: the next send to the country starts a fresh one.
const PUMPING_RESET: &str = "
    UPDATE pumping SET sends = 0, approvals = 0, tripped = false, expires_at = now()
    WHERE country = $1";

/// Claims the key unless a live record holds it; `old` (the statement's snapshot) says what
/// the holder did. Under a concurrent first use the insert waits, does nothing, and the
/// snapshot misses the winner's row: neither side comes back and the caller re-runs.
const IDEMPOTENCY_BEGIN: &str = "
    WITH ins AS (
        INSERT INTO idempotency_keys AS i
            (owner, key, fingerprint, status, body, headers, expires_at)
        VALUES ($1, $2, $3, NULL, NULL, NULL, now() + make_interval(secs => $4::float8))
        ON CONFLICT (owner, key) DO UPDATE SET
            fingerprint = excluded.fingerprint, status = NULL, body = NULL, headers = NULL,
            expires_at = excluded.expires_at
        WHERE i.expires_at <= now()
        RETURNING true AS started
    )
    SELECT ins.started, old.fingerprint, old.status, old.body, old.headers
    FROM (VALUES (1)) AS one (x)
        LEFT JOIN ins ON true
        LEFT JOIN idempotency_keys old ON old.owner = $1 AND old.key = $2
                                      AND old.expires_at > now()";

/// Ended quota windows, breaker windows and idempotency records. The outer `expires_at`
/// condition is re-checked on a row a concurrent request renewed, which is then kept.
const SWEEP_LIMITS: &[&str] = &[
    "DELETE FROM quota_counters WHERE expires_at < now() AND (scope, key) IN (
         SELECT scope, key FROM quota_counters WHERE expires_at < now()
         ORDER BY expires_at LIMIT $1)",
    "DELETE FROM pumping WHERE expires_at < now() AND country IN (
         SELECT country FROM pumping WHERE expires_at < now() ORDER BY expires_at LIMIT $1)",
    "DELETE FROM quota_shards WHERE window_ends < now() AND (scope, key, shard) IN (
         SELECT scope, key, shard FROM quota_shards WHERE window_ends < now()
         ORDER BY window_ends LIMIT $1)",
    "DELETE FROM pumping_shards WHERE window_ends < now() AND (country, shard) IN (
         SELECT country, shard FROM pumping_shards WHERE window_ends < now()
         ORDER BY window_ends LIMIT $1)",
    "DELETE FROM idempotency_keys WHERE expires_at < now() AND (owner, key) IN (
         SELECT owner, key FROM idempotency_keys WHERE expires_at < now()
         ORDER BY expires_at LIMIT $1)",
    "DELETE FROM spent_challenges WHERE expires_at < now() AND id IN (
         SELECT id FROM spent_challenges WHERE expires_at < now() ORDER BY expires_at LIMIT $1)",
];

#[async_trait]
impl SessionStore for PgStore {
    async fn create_session(
        &self,
        key: &KeyHash,
        data: &Map<String, Value>,
        expiry: Expiry,
    ) -> StoreResult<Session> {
        if data_bytes(data) > self.policy.max_data_bytes {
            return Err(StoreError::DataTooLarge(self.policy.max_data_bytes));
        }
        let (kind, idle) = expiry.to_parts();
        let at = absolute(expiry);
        let row = self
            .query_opt(
                "INSERT INTO sessions
                     (key_hash, data, expiry_kind, idle_secs, created_at, touched_at, expires_at,
                      data_json, expiry_at)
                 VALUES ($1, $2, $3, $4, now(), now(),
                         verifyd_session_expiry($3, $4, now(), $5, $6), $8,
                         LEAST($7::timestamptz, now() + make_interval(secs => $6::bigint)))
                 RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at, data_json, version",
                &[
                    &key.0.as_slice(),
                    &Json(data),
                    &kind,
                    &idle,
                    &self.default_age(),
                    &self.max_lifetime(),
                    &at,
                    &Json(data),
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("INSERT … RETURNING returned no row".into()))?;
        session_from(&row, true)?
            .ok_or_else(|| StoreError::Internal("INSERT … RETURNING returned no id".into()))
    }

    async fn touch_session(&self, key: &KeyHash) -> StoreResult<Option<Session>> {
        let (age, cap) = (self.default_age(), self.max_lifetime());
        let refresh = i64::from(self.policy.refresh_interval);
        match self
            .query_opt(TOUCH, &[&key.0.as_slice(), &age, &cap, &refresh])
            .await?
        {
            Some(row) => {
                let refreshed = row.try_get("refreshed").map_err(db_error)?;
                session_from(&row, refreshed)
            }
            None => Ok(None),
        }
    }

    async fn set_value(
        &self,
        key: &KeyHash,
        name: &str,
        value: &Value,
    ) -> StoreResult<Option<Session>> {
        // The exception to one statement per operation: `session.max_data_bytes` is measured on
        // the compact JSON, exactly as SQLite measures it, so Rust must see the data. The row is
        // locked from the read to the write, so racing writes to one session queue up and
        // none can slip past the limit.
        let limit = self.policy.max_data_bytes;
        let (age, cap) = (self.default_age(), self.max_lifetime());
        self.bounded(async {
            let mut c = self.conn().await?;
            let tx = c.transaction().await.map_err(db_error)?;
            let read = tx
                .prepare_cached(
                    "SELECT data_json AS data FROM sessions
                     WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())
                     FOR UPDATE",
                )
                .await
                .map_err(db_error)?;
            let Some(row) = tx
                .query_opt(&read, &[&key.0.as_slice()])
                .await
                .map_err(db_error)?
            else {
                return Ok(None);
            };
            let Json(mut data) = row
                .try_get::<_, Json<Map<String, Value>>>("data")
                .map_err(db_error)?;
            let before = data_bytes(&data);
            data.insert(name.to_owned(), value.clone());
            let after = data_bytes(&data);
            // A write that shrinks a session already over a lowered limit is still allowed.
            if after > limit && after > before {
                return Err(StoreError::DataTooLarge(limit));
            }
            let write = tx.prepare_cached(SET_VALUE).await.map_err(db_error)?;
            let row = tx
                .query_opt(
                    &write,
                    &[
                        &key.0.as_slice(),
                        &age,
                        &cap,
                        &name,
                        &Json(value),
                        &Json(&data),
                    ],
                )
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            match row {
                Some(row) => session_from(&row, true),
                None => Ok(None),
            }
        })
        .await
    }

    async fn delete_value(&self, key: &KeyHash, name: &str) -> StoreResult<DeleteOutcome> {
        let (age, cap) = (self.default_age(), self.max_lifetime());
        let row = self
            .query_opt(DELETE_VALUE, &[&key.0.as_slice(), &age, &cap, &name])
            .await?
            .ok_or_else(|| StoreError::Internal("delete_value returned no row".into()))?;
        if let Some(session) = session_from(&row, true)? {
            return Ok(DeleteOutcome::Deleted(session));
        }
        let found: bool = row.try_get("found").map_err(db_error)?;
        Ok(if found {
            DeleteOutcome::NoSuchKey
        } else {
            DeleteOutcome::NoSession
        })
    }

    async fn clear(&self, key: &KeyHash) -> StoreResult<Option<Session>> {
        self.write_session(CLEAR, key, &[]).await
    }

    async fn flush(&self, key: &KeyHash) -> StoreResult<bool> {
        let deleted = self
            .execute(
                "DELETE FROM sessions
                 WHERE key_hash = $1 AND (expires_at IS NULL OR expires_at > now())",
                &[&key.0.as_slice()],
            )
            .await?;
        Ok(deleted > 0)
    }

    async fn cycle(&self, key: &KeyHash, new_key: &KeyHash) -> StoreResult<Option<Session>> {
        self.write_session(CYCLE, key, &[&new_key.0.as_slice()])
            .await
    }

    async fn set_expiry(&self, key: &KeyHash, expiry: Expiry) -> StoreResult<Option<Session>> {
        let (kind, idle) = expiry.to_parts();
        let at = absolute(expiry);
        self.write_session(SET_EXPIRY, key, &[&kind, &idle, &at])
            .await
    }

    async fn replace_session(
        &self,
        key: &KeyHash,
        data: &Map<String, Value>,
        expiry: Expiry,
        if_version: Option<i64>,
    ) -> StoreResult<ReplaceOutcome> {
        if data_bytes(data) > self.policy.max_data_bytes {
            return Err(StoreError::DataTooLarge(self.policy.max_data_bytes));
        }
        let (kind, idle) = expiry.to_parts();
        let (at, data) = (absolute(expiry), Json(data));
        if let Some(session) = self
            .write_session(
                REPLACE,
                key,
                &[&data, &data, &at, &kind, &idle, &if_version],
            )
            .await?
        {
            return Ok(ReplaceOutcome::Replaced(session));
        }
        Ok(
            match self.query_opt(VERSION_OF, &[&key.0.as_slice()]).await? {
                None => ReplaceOutcome::NoSession,
                Some(row) => ReplaceOutcome::VersionMismatch(row.try_get(0).map_err(db_error)?),
            },
        )
    }

    async fn reserve_session_id(&self) -> StoreResult<i64> {
        let row = self
            .query_opt(RESERVE_SESSION_ID, &[])
            .await?
            .ok_or_else(|| StoreError::Internal("nextval returned no row".into()))?;
        row.try_get(0).map_err(db_error)
    }
}

#[async_trait]
impl VerificationStore for PgStore {
    async fn start_send(
        &self,
        req: &StartVerification<'_>,
        guard: &SendGuard,
    ) -> StoreResult<StartOutcome> {
        let (scopes, keys, limits, windows) = quota_arrays(&guard.quotas);
        let (soft_scopes, soft_keys, soft_limits, soft_windows) = quota_arrays(&guard.soft);
        let c = guard.challenge;
        let new_key = req.new_session.map(|n| n.key.0.to_vec());
        let (kind, idle) = req.new_session.map_or((0, None), |n| n.expiry.to_parts());
        let (age, cap) = (self.default_age(), self.max_lifetime());
        let pumping = guard.pumping.as_ref();
        let country = pumping.map(|p| p.country.as_str());
        let pump_window = pumping.map_or(0.0, |p| p.window.as_secs_f64());
        let pump_sample = pumping.map_or(0, |p| i32::try_from(p.min_sample).unwrap_or(i32::MAX));
        let pump_conversion = pumping.map_or(0.0, |p| p.min_conversion);
        let row = self
            .query_opt(
                START_SEND,
                &[
                    &req.session_id,
                    &req.phone.as_str(),
                    &req.code_mac.0.as_slice(),
                    &req.ttl.as_secs_f64(),
                    &req.resend_interval.as_secs_f64(),
                    &i32::try_from(req.max_attempts).unwrap_or(i32::MAX),
                    &scopes,
                    &keys,
                    &limits,
                    &windows,
                    &soft_scopes,
                    &soft_keys,
                    &soft_limits,
                    &soft_windows,
                    &country,
                    &pump_window,
                    &pump_sample,
                    &pump_conversion,
                    &c.passed,
                    &c.always,
                    &c.when_suspicious,
                    &c.on_trip,
                    &new_key,
                    &kind,
                    &idle,
                    &age,
                    &cap,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("verifyd_start_send returned no row".into()))?;
        let outcome: String = row.try_get("o_outcome").map_err(db_error)?;
        let now: SystemTime = row.try_get("o_now").map_err(db_error)?;
        let wait = || -> StoreResult<Duration> {
            let at: SystemTime = row.try_get("o_retry_at").map_err(db_error)?;
            Ok(retry_after(at, now))
        };
        Ok(match outcome.as_str() {
            "issued" => {
                if row.try_get::<_, bool>("o_tripped").map_err(db_error)? {
                    if let Some(p) = pumping {
                        tracing::warn!(country = %p.country, "SMS pumping breaker tripped");
                    }
                }
                StartOutcome::Issued {
                    resend: row.try_get("o_resend").map_err(db_error)?,
                    attempts: count(row.try_get("o_attempts").map_err(db_error)?),
                }
            }
            "too_soon" => StartOutcome::TooSoon {
                retry_after: wait()?,
            },
            "exhausted" => StartOutcome::Exhausted {
                retry_after: wait()?,
            },
            "challenge" => StartOutcome::Refused {
                by: Refusal::Challenge,
                retry_after: Duration::ZERO,
            },
            other => StartOutcome::Refused {
                by: refusal(other, row.try_get("o_refused").map_err(db_error)?)?,
                retry_after: wait()?,
            },
        })
    }

    async fn abandon_send(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        code_mac: &CodeMac,
        guard: &SendGuard,
    ) -> StoreResult<()> {
        let all: Vec<Quota> = guard.all_quotas().cloned().collect();
        let (scopes, keys, limits, _) = quota_arrays(&all);
        let pumping = guard.pumping.as_ref();
        let country = pumping.map(|p| p.country.as_str());
        let pump_sample = pumping.map_or(0, |p| i32::try_from(p.min_sample).unwrap_or(i32::MAX));
        let pump_conversion = pumping.map_or(0.0, |p| p.min_conversion);
        self.execute(
            ABANDON_SEND,
            &[
                &session_id,
                &phone.as_str(),
                &code_mac.0.as_slice(),
                &scopes,
                &keys,
                &limits,
                &country,
                &pump_sample,
                &pump_conversion,
            ],
        )
        .await
        .map(drop)
    }

    async fn live_code(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        margin: Duration,
        min_keep: Duration,
    ) -> StoreResult<Option<LiveCode>> {
        let row = self
            .query_opt(
                LIVE_CODE,
                &[
                    &session_id,
                    &phone.as_str(),
                    &margin.as_secs_f64(),
                    &min_keep.as_secs_f64(),
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let nonce: Vec<u8> = row.try_get("code_nonce").map_err(db_error)?;
        let keep_until: SystemTime = row.try_get("keep_until").map_err(db_error)?;
        let now: SystemTime = row.try_get("now").map_err(db_error)?;
        let nonce = nonce
            .try_into()
            .map_err(|_| StoreError::Internal("a stored code nonce is not 16 bytes".into()))?;
        Ok(Some(LiveCode {
            nonce: CodeNonce(nonce),
            keep_left: keep_until.duration_since(now).unwrap_or(Duration::ZERO),
        }))
    }

    async fn bind_code(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        mac: &CodeMac,
        new_mac: &CodeMac,
        nonce: &CodeNonce,
        keep_for: Option<Duration>,
    ) -> StoreResult<bool> {
        let n = self
            .execute(
                BIND_CODE,
                &[
                    &session_id,
                    &phone.as_str(),
                    &mac.0.as_slice(),
                    &new_mac.0.as_slice(),
                    &nonce.0.as_slice(),
                    &keep_for.map(|k| k.as_secs_f64()),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn check_guarded(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
    ) -> StoreResult<CheckOutcome> {
        let max_attempts = i32::try_from(req.max_attempts).unwrap_or(i32::MAX);
        let (age, cap) = (self.default_age(), self.max_lifetime());
        let patch = Json(req.on_approve.data);
        let (scopes, keys, limits, windows) = quota_arrays(&guard.quotas);
        let failures = guard.failures;
        let fail_max = failures.map_or(0, |f| i32::try_from(f.max).unwrap_or(i32::MAX));
        // Both failure limits share one window and lock-out (see `CheckGuard`).
        let timing = failures.or(guard.network_failures.as_ref().map(|(_, f)| *f));
        let fail_window = timing.map_or(3600.0, |f| f.window.as_secs_f64());
        let lockout = timing.map_or(0.0, |f| f.lockout.as_secs_f64());
        let country = guard.pumping.as_ref().map(|p| p.country.as_str());
        let conversion = guard.pumping.as_ref().map_or(0.0, |p| p.min_conversion);
        let net = guard.network_failures.as_ref().map(|(n, _)| n.as_str());
        let net_fail_max = guard
            .network_failures
            .as_ref()
            .map_or(0, |(_, f)| i32::try_from(f.max).unwrap_or(i32::MAX));
        let row = self
            .query_opt(
                CHECK,
                &[
                    &req.session_id,
                    &req.phone.as_str(),
                    &req.code_mac.0.as_slice(),
                    &max_attempts,
                    &req.on_approve.new_key.0.as_slice(),
                    &patch,
                    &age,
                    &cap,
                    &scopes,
                    &keys,
                    &limits,
                    &windows,
                    &fail_max,
                    &fail_window,
                    &lockout,
                    &country,
                    &conversion,
                    &net,
                    &net_fail_max,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("verifyd_check returned no row".into()))?;
        let outcome: String = row.try_get("o_outcome").map_err(db_error)?;
        Ok(match outcome.as_str() {
            // The session died after the code was sent: the code is spent, nothing to approve.
            "approved" => match session_from(&row, true)? {
                Some(session) => CheckOutcome::Approved { session },
                None => CheckOutcome::NotFound,
            },
            "wrong" => {
                let attempts = count(row.try_get("o_attempts").map_err(db_error)?);
                CheckOutcome::Wrong {
                    attempts_left: req.max_attempts.saturating_sub(attempts).max(1),
                }
            }
            "exhausted" => CheckOutcome::Exhausted,
            "expired" => CheckOutcome::Expired,
            "not_found" => CheckOutcome::NotFound,
            other => {
                let now: SystemTime = row.try_get("o_now").map_err(db_error)?;
                let at: SystemTime = row.try_get("o_retry_at").map_err(db_error)?;
                CheckOutcome::Refused {
                    by: refusal(other, row.try_get("o_refused").map_err(db_error)?)?,
                    retry_after: retry_after(at, now),
                }
            }
        })
    }

    async fn pumping_states(&self) -> StoreResult<Vec<PumpingState>> {
        let rows = self
            .bounded(async {
                let c = self.lease().await?;
                let client = c.client();
                let r = match client.prepare_cached(PUMPING_STATES).await {
                    Ok(stmt) => client.query(&stmt, &[]).await,
                    Err(e) => Err(e),
                };
                c.settle(r)
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PumpingState {
                    country: r.try_get("country").map_err(db_error)?,
                    sends: count(r.try_get("sends").map_err(db_error)?),
                    approvals: count(r.try_get("approvals").map_err(db_error)?),
                    tripped: r.try_get("tripped").map_err(db_error)?,
                    window_ends: r.try_get("expires_at").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn pumping_reset(&self, country: &str) -> StoreResult<bool> {
        Ok(self.execute(PUMPING_RESET, &[&country]).await? > 0)
    }

    async fn record_delivery(&self, d: &NewDelivery<'_>) -> StoreResult<()> {
        self.pg_record_delivery(d).await
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> StoreResult<ReceiptOutcome> {
        self.pg_apply_receipt(r).await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        self.pg_delivery(id).await
    }
}

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn idempotency_begin(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &[u8; 32],
        ttl: Duration,
    ) -> StoreResult<IdempotencyBegin> {
        let ttl = ttl.as_secs_f64();
        for _ in 0..MAX_RERUNS {
            let row = self
                .query_opt(
                    IDEMPOTENCY_BEGIN,
                    &[&owner, &key, &fingerprint.as_slice(), &ttl],
                )
                .await?
                .ok_or_else(|| StoreError::Internal("idempotency_begin returned no row".into()))?;
            if row
                .try_get::<_, Option<bool>>("started")
                .map_err(db_error)?
                .is_some()
            {
                return Ok(IdempotencyBegin::Started);
            }
            let Some(stored) = row
                .try_get::<_, Option<Vec<u8>>>("fingerprint")
                .map_err(db_error)?
            else {
                // A concurrent first use committed after this statement's snapshot.
                continue;
            };
            if stored.as_slice() != fingerprint.as_slice() {
                return Ok(IdempotencyBegin::Mismatch);
            }
            let status: Option<i16> = row.try_get("status").map_err(db_error)?;
            return Ok(match status {
                None => IdempotencyBegin::InFlight,
                Some(status) => IdempotencyBegin::Done {
                    status: u16::try_from(status).unwrap_or(500),
                    body: row
                        .try_get::<_, Option<String>>("body")
                        .map_err(db_error)?
                        .unwrap_or_default(),
                    headers: headers_from_json(
                        row.try_get::<_, Option<&str>>("headers")
                            .map_err(db_error)?,
                    )?,
                },
            });
        }
        Err(StoreError::Internal(
            "idempotency_begin kept racing concurrent requests".into(),
        ))
    }

    async fn idempotency_finish(
        &self,
        owner: &str,
        key: &str,
        status: u16,
        body: &str,
        headers: &[(String, String)],
    ) -> StoreResult<()> {
        let status = i16::try_from(status).unwrap_or(500);
        let headers = headers_to_json(headers)?;
        self.execute(
            "UPDATE idempotency_keys SET status = $3, body = $4, headers = $5
             WHERE owner = $1 AND key = $2 AND status IS NULL",
            &[&owner, &key, &status, &body, &headers],
        )
        .await
        .map(drop)
    }

    async fn idempotency_abandon(&self, owner: &str, key: &str) -> StoreResult<()> {
        self.execute(
            "DELETE FROM idempotency_keys WHERE owner = $1 AND key = $2 AND status IS NULL",
            &[&owner, &key],
        )
        .await
        .map(drop)
    }

    async fn spend_challenge(&self, id: &[u8; 32], expires_at: SystemTime) -> StoreResult<bool> {
        // One statement: of two daemons racing with the same challenge, exactly one inserts.
        let n = self
            .execute(
                "INSERT INTO spent_challenges (id, expires_at) VALUES ($1, $2)
                 ON CONFLICT (id) DO NOTHING",
                &[&id.as_slice(), &expires_at],
            )
            .await?;
        Ok(n == 1)
    }
}

#[async_trait]
impl Maintenance for PgStore {
    async fn migrate(&self) -> StoreResult<()> {
        let mut c = self.conn().await?;
        for &(version, name, sql) in MIGRATIONS {
            let tx = c.transaction().await.map_err(db_error)?;
            // Taken before anything else, so concurrent daemons apply each file exactly once
            // and never race on creating the bookkeeping table.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
                .await
                .map_err(db_error)?;
            // Checked rather than `CREATE TABLE IF NOT EXISTS`, whose NOTICE about the existing
            // table the driver would log at INFO on every start.
            let bookkept: bool = tx
                .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
                .await
                .map_err(db_error)?
                .get(0);
            if !bookkept {
                tx.batch_execute(
                    "CREATE TABLE schema_migrations (
                         version    INTEGER PRIMARY KEY,
                         name       TEXT NOT NULL,
                         applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .await
                .map_err(db_error)?;
            }
            let applied = tx
                .query_opt(
                    "SELECT 1 FROM schema_migrations WHERE version = $1",
                    &[&version],
                )
                .await
                .map_err(db_error)?
                .is_some();
            if !applied {
                tx.batch_execute(sql).await.map_err(db_error)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    &[&version, &name],
                )
                .await
                .map_err(db_error)?;
                tracing::info!(version, name, "applied PostgreSQL migration");
            }
            tx.commit().await.map_err(db_error)?;
        }
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        self.query_opt("SELECT 1", &[]).await.map(drop)
    }

    fn pool_usage(&self) -> Option<PoolStatus> {
        let s = self.pool.status();
        Some(PoolStatus {
            in_use: s.size.saturating_sub(s.available),
            idle: s.available,
            waiting: s.waiting,
        })
    }

    async fn server_secret(&self) -> StoreResult<Vec<u8>> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| StoreError::Internal(format!("the OS random generator failed: {e}")))?;
        for _ in 0..MAX_RERUNS {
            if let Some(row) = self
                .query_opt(SERVER_SECRET, &[&SECRET_NAME, &fresh.as_slice()])
                .await?
            {
                return row.try_get("value").map_err(db_error);
            }
        }
        Err(StoreError::Internal(
            "the server secret could not be read back".into(),
        ))
    }

    async fn sweep(&self, batch: u32) -> StoreResult<SweepReport> {
        let lease = self.lease().await?;
        let c = lease.client();
        let locked: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK])
            .await
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        if !locked {
            lease.release();
            return Ok(SweepReport::default());
        }
        let batch = i64::from(batch.max(1));
        let sessions = delete_in_batches(c, SWEEP_SESSIONS, batch).await?;
        let verifications = delete_in_batches(c, SWEEP_VERIFICATIONS, batch).await?;
        let mut limits = 0;
        for sql in SWEEP_LIMITS {
            limits += delete_in_batches(c, sql, batch).await?;
        }
        c.execute("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK])
            .await
            .map_err(db_error)?;
        lease.release();
        Ok(SweepReport {
            sessions,
            verifications,
            limits,
            ran: true,
        })
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

/// The moment of an absolute expiry, for the `expiry_at` column.
fn absolute(expiry: Expiry) -> Option<SystemTime> {
    match expiry {
        Expiry::At(t) => Some(t),
        _ => None,
    }
}

/// The quotas as the four parallel arrays `verifyd_take_quotas` takes.
fn quota_arrays(quotas: &[Quota]) -> (Vec<&str>, Vec<&str>, Vec<i32>, Vec<f64>) {
    (
        quotas.iter().map(|q| q.scope.as_str()).collect(),
        quotas.iter().map(|q| q.key.as_str()).collect(),
        quotas
            .iter()
            .map(|q| i32::try_from(q.limit).unwrap_or(i32::MAX))
            .collect(),
        quotas.iter().map(|q| q.window.as_secs_f64()).collect(),
    )
}

/// Reads a refusal the functions report as an outcome name (plus the scope for quotas).
fn refusal(outcome: &str, scope: Option<String>) -> StoreResult<Refusal> {
    match outcome {
        "breaker" => Ok(Refusal::Breaker),
        "locked" => Ok(Refusal::Locked),
        "quota" => scope
            .as_deref()
            .and_then(Scope::parse)
            .map(Refusal::Quota)
            .ok_or_else(|| StoreError::Internal(format!("unknown quota scope {scope:?}"))),
        other => Err(StoreError::Internal(format!("unknown outcome {other:?}"))),
    }
}

/// Attempt counts are never negative (a CHECK constraint says so).
fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// Repeats one bounded `DELETE` until a batch comes back short; returns the rows deleted.
async fn delete_in_batches(c: &tokio_postgres::Client, sql: &str, batch: i64) -> StoreResult<u64> {
    let stmt = c.prepare(sql).await.map_err(db_error)?;
    let mut total = 0;
    loop {
        let n = c.execute(&stmt, &[&batch]).await.map_err(db_error)?;
        total += n;
        if n < batch as u64 {
            return Ok(total);
        }
    }
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
