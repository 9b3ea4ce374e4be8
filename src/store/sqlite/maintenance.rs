//! [`Maintenance`] on SQLite: migrations, the server secret and a sweep that a flag keeps to one
//! caller at a time.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use std::time::{Duration, SystemTime};

use super::{MIGRATIONS, SqliteStore, SweepGuard, duration_millis};
use crate::store::{Maintenance, StoreError, StoreResult, SweepReport, maintenance::SECRET_NAME};
use crate::time::to_millis;

#[async_trait]
impl Maintenance for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.blocking(|conn| {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )?;
            for &(version, name, sql) in MIGRATIONS {
                // Checked inside the write lock, so concurrent callers apply each file once.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let applied = tx
                    .query_row("SELECT 1 FROM schema_migrations WHERE version = ?1", [version], |_| {
                        Ok(())
                    })
                    .optional()?
                    .is_some();
                if !applied {
                    tx.execute_batch(sql)?;
                    tx.execute(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                        params![version, name, to_millis(SystemTime::now())],
                    )?;
                }
                tx.commit()?;
            }
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.blocking(|conn| Ok(conn.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?))
            .await
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn server_secret(&self) -> StoreResult<Vec<u8>> {
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh)
            .map_err(|e| StoreError::Internal(format!("the OS random generator failed: {e}")))?;
        self.transaction(move |tx, _, _| {
            // The first caller's value wins; everyone reads back the stored one.
            tx.prepare_cached("INSERT OR IGNORE INTO verifyd_meta (name, value) VALUES (?1, ?2)")?
                .execute(params![SECRET_NAME, &fresh[..]])?;
            Ok(tx
                .prepare_cached("SELECT value FROM verifyd_meta WHERE name = ?1")?
                .query_row([SECRET_NAME], |r| r.get(0))?)
        })
        .await
    }

    async fn sweep(&self, batch: u32, keep_dead: Duration) -> StoreResult<SweepReport> {
        let Some(_guard) = SweepGuard::acquire(&self.sweeping) else {
            return Ok(SweepReport::default());
        };
        let batch = batch.max(1);
        let now = to_millis(SystemTime::now());
        // Sessions first: their verifications go with them by cascade.
        let sessions = self
            .delete_in_batches(
                "DELETE FROM sessions WHERE id IN (
                     SELECT id FROM sessions WHERE expires_at < ?1 ORDER BY expires_at LIMIT ?2)",
                now,
                batch,
            )
            .await?;
        let verifications = self
            .delete_in_batches(
                "DELETE FROM verifications WHERE rowid IN (
                     SELECT rowid FROM verifications WHERE expires_at < ?1
                     ORDER BY expires_at LIMIT ?2)",
                now,
                batch,
            )
            .await?;
        let mut limits = 0;
        for sql in [
            "DELETE FROM quota_counters WHERE rowid IN (
                 SELECT rowid FROM quota_counters WHERE expires_at < ?1
                 ORDER BY expires_at LIMIT ?2)",
            "DELETE FROM pumping WHERE rowid IN (
                 SELECT rowid FROM pumping WHERE expires_at < ?1 ORDER BY expires_at LIMIT ?2)",
            "DELETE FROM idempotency_keys WHERE rowid IN (
                 SELECT rowid FROM idempotency_keys WHERE expires_at < ?1
                 ORDER BY expires_at LIMIT ?2)",
            "DELETE FROM spent_challenges WHERE id IN (
                 SELECT id FROM spent_challenges WHERE expires_at < ?1
                 ORDER BY expires_at LIMIT ?2)",
        ] {
            limits += self.delete_in_batches(sql, now, batch).await?;
        }
        // `dead_at` is NULL on a pending event, redriven ones included, so they never match.
        let dead_events = self
            .delete_in_batches(
                "DELETE FROM outbox WHERE seq IN (
                     SELECT seq FROM outbox WHERE dead_at < ?1 ORDER BY dead_at LIMIT ?2)",
                now.saturating_sub(duration_millis(keep_dead)),
                batch,
            )
            .await?;
        Ok(SweepReport {
            sessions,
            verifications,
            limits,
            dead_events,
            ran: true,
        })
    }
}
