//! [`IdempotencyStore`] on PostgreSQL: a claim is an insert that loses quietly to a live
//! record, so two daemons given one key agree on which of them does the work.

use async_trait::async_trait;
use std::time::{Duration, SystemTime};

use super::{MAX_RERUNS, PgStore, db_error};
use crate::store::idempotency::{headers_from_json, headers_to_json};
use crate::store::{IdempotencyBegin, IdempotencyStore, StoreError, StoreResult};

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
