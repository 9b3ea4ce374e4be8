//! [`IdempotencyStore`] on SQLite: idempotency claims and spent challenges, each one statement
//! or one IMMEDIATE transaction.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use std::time::{Duration, SystemTime};

use super::{SqliteStore, duration_ms};
use crate::store::{
    IdempotencyBegin, IdempotencyStore, StoreResult,
    idempotency::{headers_from_json, headers_to_json},
};
use crate::time::to_millis;

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn idempotency_begin(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &[u8; 32],
        ttl: Duration,
    ) -> StoreResult<IdempotencyBegin> {
        let (owner, key, fingerprint) = (owner.to_owned(), key.to_owned(), *fingerprint);
        let ttl = duration_ms(ttl);
        self.transaction(move |tx, now, _| {
            type Held = (Vec<u8>, Option<u16>, Option<String>, Option<String>);
            let held: Option<Held> = tx
                .prepare_cached(
                    "SELECT fingerprint, status, body, headers FROM idempotency_keys
                     WHERE owner = ?1 AND key = ?2 AND expires_at > ?3",
                )?
                .query_row(params![owner, key, now], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            Ok(match held {
                Some((stored, ..)) if stored.as_slice() != fingerprint.as_slice() => {
                    IdempotencyBegin::Mismatch
                }
                Some((_, None, ..)) => IdempotencyBegin::InFlight,
                Some((_, Some(status), body, headers)) => IdempotencyBegin::Done {
                    status,
                    body: body.unwrap_or_default(),
                    headers: headers_from_json(headers.as_deref())?,
                },
                None => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO idempotency_keys
                             (owner, key, fingerprint, status, body, headers, expires_at)
                         VALUES (?1, ?2, ?3, NULL, NULL, NULL, ?4)",
                    )?
                    .execute(params![
                        owner,
                        key,
                        &fingerprint[..],
                        now.saturating_add(ttl)
                    ])?;
                    IdempotencyBegin::Started
                }
            })
        })
        .await
    }

    async fn idempotency_finish(
        &self,
        owner: &str,
        key: &str,
        status: u16,
        body: &str,
        headers: &[(String, String)],
    ) -> StoreResult<()> {
        let (owner, key, body) = (owner.to_owned(), key.to_owned(), body.to_owned());
        let headers = headers_to_json(headers)?;
        self.transaction(move |tx, _, _| {
            tx.prepare_cached(
                "UPDATE idempotency_keys SET status = ?3, body = ?4, headers = ?5
                 WHERE owner = ?1 AND key = ?2 AND status IS NULL",
            )?
            .execute(params![owner, key, status, body, headers])?;
            Ok(())
        })
        .await
    }

    async fn idempotency_abandon(&self, owner: &str, key: &str) -> StoreResult<()> {
        let (owner, key) = (owner.to_owned(), key.to_owned());
        self.transaction(move |tx, _, _| {
            tx.prepare_cached(
                "DELETE FROM idempotency_keys WHERE owner = ?1 AND key = ?2 AND status IS NULL",
            )?
            .execute(params![owner, key])?;
            Ok(())
        })
        .await
    }

    async fn spend_challenge(&self, id: &[u8; 32], expires_at: SystemTime) -> StoreResult<bool> {
        let (id, expires_at) = (*id, to_millis(expires_at));
        self.blocking(move |conn| {
            let n = conn
                .prepare_cached(
                    "INSERT INTO spent_challenges (id, expires_at) VALUES (?1, ?2)
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![&id[..], expires_at])?;
            Ok(n == 1)
        })
        .await
    }
}
