//! The outbox on PostgreSQL. Claims take due rows `FOR UPDATE SKIP LOCKED` and push them past
//! their lease in the same statement, so daemons sharing the database never hand one event to
//! two workers at once, and a claim whose worker died falls due again when its lease ends.

use async_trait::async_trait;
use postgres_types::Json;
use serde_json::Value;
use std::time::{Duration, SystemTime};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::{PgStore, db_error};
use crate::store::StoreResult;
use crate::store::events::{
    EventStore, EventSummary, Failure, OutboxCounts, OutboxEvent, Redrive, Refused,
};

/// Creates the triggers the first time (see migrations/postgres/0009_events.sql).
const KEEPALIVE: &str = "SELECT verifyd_events_keepalive($1)";

const REFUSAL: &str = "
    INSERT INTO outbox (type, data)
    SELECT 'verification.refused',
           jsonb_build_object('session_id', $1::bigint, 'phone', $2::text,
                              'operation', $3::text, 'limit', $4::text, 'error', $5::text)
    WHERE verifyd_events_on()";

const CLAIM: &str = "
    WITH due AS (
        SELECT seq FROM outbox
        WHERE dead_at IS NULL AND next_at <= now()
        ORDER BY next_at
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox o SET next_at = now() + make_interval(secs => $2::float8)
    FROM due WHERE o.seq = due.seq
    RETURNING o.seq, o.id, o.type, o.data, o.created_at, o.attempts, o.done,
              extract(epoch FROM now() - o.retry_from)::float8 AS age";

const DELIVERED: &str = "DELETE FROM outbox WHERE seq = $1";

const FAILED: &str = "
    UPDATE outbox SET done = $2, attempts = attempts + 1, last_error = $3,
        next_at = CASE WHEN $4::float8 IS NULL THEN next_at
                       ELSE now() + make_interval(secs => $4::float8) END,
        dead_at = CASE WHEN $4::float8 IS NULL THEN now() END
    WHERE seq = $1";

const LIST: &str = "
    SELECT id, type, created_at, attempts, dead_at, next_at, last_error FROM outbox
    WHERE (dead_at IS NOT NULL) = $1 ORDER BY seq LIMIT $2";

const REDRIVE_ONE: &str = "
    UPDATE outbox SET dead_at = NULL, next_at = now(), retry_from = now(), attempts = 0
    WHERE id = $1";

const REDRIVE_DEAD: &str = "
    UPDATE outbox SET dead_at = NULL, next_at = now(), retry_from = now(), attempts = 0
    WHERE dead_at IS NOT NULL";

const COUNTS: &str = "
    SELECT count(*) FILTER (WHERE dead_at IS NULL) AS pending,
           count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead
    FROM outbox";

impl PgStore {
    /// One statement returning any number of rows, under the same deadline as the others.
    async fn query_all(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        self.bounded(async {
            let c = self.lease().await?;
            let client = c.client();
            let r = match client.prepare_cached(sql).await {
                Ok(stmt) => client.query(&stmt, params).await,
                Err(e) => Err(e),
            };
            c.settle(r)
        })
        .await
    }
}

fn claimed(row: &Row) -> StoreResult<OutboxEvent> {
    let Json(data): Json<Value> = row.try_get("data").map_err(db_error)?;
    let attempts: i32 = row.try_get("attempts").map_err(db_error)?;
    let age: f64 = row.try_get("age").map_err(db_error)?;
    Ok(OutboxEvent {
        seq: row.try_get("seq").map_err(db_error)?,
        id: row.try_get("id").map_err(db_error)?,
        kind: row.try_get("type").map_err(db_error)?,
        data,
        created_at: row.try_get("created_at").map_err(db_error)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        age: Duration::try_from_secs_f64(age).unwrap_or_default(),
        done: row.try_get("done").map_err(db_error)?,
    })
}

fn summary(row: &Row) -> StoreResult<EventSummary> {
    let attempts: i32 = row.try_get("attempts").map_err(db_error)?;
    Ok(EventSummary {
        id: row.try_get("id").map_err(db_error)?,
        kind: row.try_get("type").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        dead_at: row
            .try_get::<_, Option<SystemTime>>("dead_at")
            .map_err(db_error)?,
        next_at: row.try_get("next_at").map_err(db_error)?,
        last_error: row.try_get("last_error").map_err(db_error)?,
    })
}

#[async_trait]
impl EventStore for PgStore {
    async fn events_keepalive(&self, ttl: Duration) -> StoreResult<()> {
        self.query_opt(KEEPALIVE, &[&ttl.as_secs_f64()]).await?;
        Ok(())
    }

    async fn record_refusal(&self, r: &Refused<'_>) -> StoreResult<()> {
        self.execute(
            REFUSAL,
            &[&r.session_id, &r.phone, &r.operation, &r.limit, &r.error],
        )
        .await?;
        Ok(())
    }

    async fn claim_events(&self, limit: u32, lease: Duration) -> StoreResult<Vec<OutboxEvent>> {
        let rows = self
            .query_all(CLAIM, &[&i64::from(limit), &lease.as_secs_f64()])
            .await?;
        rows.iter().map(claimed).collect()
    }

    async fn event_delivered(&self, seq: i64) -> StoreResult<()> {
        self.execute(DELIVERED, &[&seq]).await?;
        Ok(())
    }

    async fn event_failed(
        &self,
        seq: i64,
        done: &[String],
        failure: Failure,
        error: &str,
    ) -> StoreResult<()> {
        let retry = match failure {
            Failure::RetryAfter(d) => Some(d.as_secs_f64()),
            Failure::Dead => None,
        };
        self.execute(FAILED, &[&seq, &done, &error, &retry]).await?;
        Ok(())
    }

    async fn list_events(&self, dead: bool, limit: u32) -> StoreResult<Vec<EventSummary>> {
        let rows = self.query_all(LIST, &[&dead, &i64::from(limit)]).await?;
        rows.iter().map(summary).collect()
    }

    async fn redrive_events(&self, which: &Redrive) -> StoreResult<u64> {
        match which {
            Redrive::Id(id) => self.execute(REDRIVE_ONE, &[id]).await,
            Redrive::AllDead => self.execute(REDRIVE_DEAD, &[]).await,
        }
    }

    async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        let rows = self.query_all(COUNTS, &[]).await?;
        let count = |name: &str| -> StoreResult<u64> {
            let n: i64 = rows
                .first()
                .map(|r| r.try_get(name))
                .transpose()
                .map_err(db_error)?
                .unwrap_or(0);
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(OutboxCounts {
            pending: count("pending")?,
            dead: count("dead")?,
        })
    }
}
