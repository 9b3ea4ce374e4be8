//! [`Maintenance`] on PostgreSQL: migrations and the sweep each take an advisory lock, so
//! daemons sharing one database never run them twice at once.

use async_trait::async_trait;
use std::time::Duration;
use tokio_postgres::types::ToSql;

use super::{MAX_RERUNS, MIGRATIONS, PgStore, db_error};
use crate::store::maintenance::SECRET_NAME;
use crate::store::{Maintenance, PoolStatus, StoreError, StoreResult, SweepReport};

/// Advisory lock keys ("verifyd" in ASCII plus a tag), one per job that must not run twice at once.
const MIGRATE_LOCK: i64 = 0x7665_7269_6679_6401;
const SWEEP_LOCK: i64 = 0x7665_7269_6679_6402;

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

/// Ended quota windows, breaker windows and idempotency records. The outer `expires_at`
/// condition is re-checked on a row a concurrent request renewed, which is then kept.
const SWEEP_LIMITS: &[&str] = &[
    "DELETE FROM quota_counters WHERE expires_at < now() AND (scope, key) IN (
         SELECT scope, key FROM quota_counters WHERE expires_at < now()
         ORDER BY expires_at LIMIT $1)",
    "DELETE FROM number_counters WHERE expires_at < now() AND key IN (
         SELECT key FROM number_counters WHERE expires_at < now() ORDER BY expires_at LIMIT $1)",
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

/// Events dead for longer than `$2` seconds, oldest death first (migration 11 indexes `dead_at`
/// of dead rows). The outer condition is re-checked on a row a concurrent redrive has just made
/// pending again (its `dead_at` is NULL), which is then kept.
const SWEEP_DEAD_EVENTS: &str = "
    DELETE FROM outbox WHERE dead_at < now() - make_interval(secs => $2::float8) AND seq IN (
        SELECT seq FROM outbox WHERE dead_at < now() - make_interval(secs => $2::float8)
        ORDER BY dead_at LIMIT $1)";

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

    fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
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

    async fn hand_back(&self) -> StoreResult<()> {
        self.hand_back_budgets().await
    }

    async fn sweep(&self, batch: u32, keep_dead: Duration) -> StoreResult<SweepReport> {
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
        let sessions = delete_in_batches(c, SWEEP_SESSIONS, batch, &[]).await?;
        let verifications = delete_in_batches(c, SWEEP_VERIFICATIONS, batch, &[]).await?;
        let mut limits = 0;
        for sql in SWEEP_LIMITS {
            limits += delete_in_batches(c, sql, batch, &[]).await?;
        }
        let keep_dead = keep_dead.as_secs_f64();
        let dead_events = delete_in_batches(c, SWEEP_DEAD_EVENTS, batch, &[&keep_dead]).await?;
        c.execute("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK])
            .await
            .map_err(db_error)?;
        lease.release();
        Ok(SweepReport {
            sessions,
            verifications,
            limits,
            dead_events,
            ran: true,
        })
    }
}

/// Repeats one bounded `DELETE` (the batch size is `$1`, `more` are `$2`…) until a batch comes
/// back short; returns the rows deleted.
async fn delete_in_batches(
    c: &tokio_postgres::Client,
    sql: &str,
    batch: i64,
    more: &[&(dyn ToSql + Sync)],
) -> StoreResult<u64> {
    let stmt = c.prepare(sql).await.map_err(db_error)?;
    let params: Vec<&(dyn ToSql + Sync)> = std::iter::once(&batch as _)
        .chain(more.iter().copied())
        .collect();
    let mut total = 0;
    loop {
        let n = c.execute(&stmt, &params).await.map_err(db_error)?;
        total += n;
        if n < batch as u64 {
            return Ok(total);
        }
    }
}
