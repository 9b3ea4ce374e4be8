//! The outbox of the embedded store: the same operations as on PostgreSQL. One connection
//! serializes every statement, so a claim needs no row locks; the lease still matters, for the
//! restart of a daemon that died holding a claim.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use std::time::Duration;

use super::{SqliteStore, duration_millis};
use crate::store::StoreError;
use crate::store::StoreResult;
use crate::store::events::{
    EventStore, EventSummary, Failure, OutboxCounts, OutboxEvent, Redrive, Refused,
};
use crate::time::from_millis;

fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Internal(format!("outbox row: {e}"))
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn events_keepalive(&self, ttl: Duration) -> StoreResult<()> {
        let ttl = duration_millis(ttl);
        self.transaction(move |tx, now, _| {
            tx.prepare_cached(
                "INSERT INTO outbox_state (id, record_until) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET
                     record_until = max(record_until, excluded.record_until)",
            )?
            .execute([now.saturating_add(ttl)])?;
            Ok(())
        })
        .await
    }

    async fn record_refusal(&self, r: &Refused<'_>) -> StoreResult<()> {
        let (id, phone, operation, limit, error) = (
            r.session_id,
            r.phone.to_owned(),
            r.operation.to_owned(),
            r.limit.to_owned(),
            r.error.to_owned(),
        );
        self.transaction(move |tx, _, _| {
            tx.prepare_cached(
                "INSERT INTO outbox (type, data)
                 SELECT 'verification.refused', json_object('session_id', ?1, 'phone', ?2,
                                                            'operation', ?3, 'limit', ?4,
                                                            'error', ?5)
                 WHERE EXISTS (SELECT 1 FROM outbox_recording)",
            )?
            .execute(params![id, phone, operation, limit, error])?;
            Ok(())
        })
        .await
    }

    async fn claim_events(&self, limit: u32, lease: Duration) -> StoreResult<Vec<OutboxEvent>> {
        let lease = duration_millis(lease);
        self.transaction(move |tx, now, _| {
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET next_at = ?2 + ?3
                 WHERE seq IN (SELECT seq FROM outbox WHERE dead_at IS NULL AND next_at <= ?2
                               ORDER BY next_at LIMIT ?1)
                 RETURNING seq, id, type, data, created_at, attempts, done, retry_from",
            )?;
            let rows = stmt.query_map(params![limit, now, lease], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, id, kind, data, created, attempts, done, retry_from) = row?;
                out.push(OutboxEvent {
                    seq,
                    id,
                    kind,
                    data: serde_json::from_str(&data).map_err(json_error)?,
                    created_at: from_millis(created),
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    age: Duration::from_millis(u64::try_from(now - retry_from).unwrap_or(0)),
                    done: serde_json::from_str(&done).map_err(json_error)?,
                });
            }
            // RETURNING gives no order; the worker delivers oldest first.
            out.sort_by_key(|e| e.seq);
            Ok(out)
        })
        .await
    }

    async fn event_delivered(&self, seq: i64) -> StoreResult<()> {
        self.transaction(move |tx, _, _| {
            tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1")?
                .execute([seq])?;
            Ok(())
        })
        .await
    }

    async fn event_failed(
        &self,
        seq: i64,
        done: &[String],
        failure: Failure,
        error: &str,
    ) -> StoreResult<()> {
        let done = serde_json::to_string(done).map_err(json_error)?;
        let retry = match failure {
            Failure::RetryAfter(d) => Some(duration_millis(d)),
            Failure::Dead => None,
        };
        let error = error.to_owned();
        self.transaction(move |tx, now, _| {
            tx.prepare_cached(
                "UPDATE outbox SET done = ?2, attempts = attempts + 1, last_error = ?3,
                     next_at = CASE WHEN ?4 IS NULL THEN next_at ELSE ?5 + ?4 END,
                     dead_at = CASE WHEN ?4 IS NULL THEN ?5 END
                 WHERE seq = ?1",
            )?
            .execute(params![seq, done, error, retry, now])?;
            Ok(())
        })
        .await
    }

    async fn list_events(&self, dead: bool, limit: u32) -> StoreResult<Vec<EventSummary>> {
        self.blocking(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, type, created_at, attempts, dead_at, next_at, last_error FROM outbox
                 WHERE (dead_at IS NOT NULL) = ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![dead, limit], |r| {
                Ok(EventSummary {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    created_at: from_millis(r.get(2)?),
                    attempts: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    dead_at: r.get::<_, Option<i64>>(4)?.map(from_millis),
                    next_at: from_millis(r.get(5)?),
                    last_error: r.get(6)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn redrive_events(&self, which: &Redrive) -> StoreResult<u64> {
        let id = match which {
            Redrive::Id(id) => Some(id.clone()),
            Redrive::AllDead => None,
        };
        self.transaction(move |tx, now, _| {
            let n = tx
                .prepare_cached(
                    "UPDATE outbox SET dead_at = NULL, next_at = ?1, retry_from = ?1, attempts = 0
                     WHERE CASE WHEN ?2 IS NULL THEN dead_at IS NOT NULL ELSE id = ?2 END",
                )?
                .execute(params![now, id])?;
            Ok(n as u64)
        })
        .await
    }

    async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        self.blocking(|conn| {
            let counts = conn
                .prepare_cached(
                    "SELECT count(*) FILTER (WHERE dead_at IS NULL),
                            count(*) FILTER (WHERE dead_at IS NOT NULL) FROM outbox",
                )?
                .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
                .optional()?
                .unwrap_or_default();
            Ok(OutboxCounts {
                pending: u64::try_from(counts.0).unwrap_or(0),
                dead: u64::try_from(counts.1).unwrap_or(0),
            })
        })
        .await
    }
}
