//! [`SessionStore`] on SQLite: each operation is one IMMEDIATE transaction on the process
//! clock, which serialises it against every other writer of the file.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Map, Value};

use super::{Row, SqliteStore, expires_at, save, secs_ms, to_json};
use crate::session::{Expiry, KeyHash, Session};
use crate::session_data::data_bytes;
use crate::store::{DeleteOutcome, ReplaceOutcome, SessionStore, StoreError, StoreResult};

/// A new session id. SQLite has no sequence to draw from without a write (and daemons sharing
/// the file share no counter), so the id is random in [2^62, 2^63): with 2^62 values a clash with
/// any existing id is as likely as guessing a 62-bit secret, and would only fail that one write
/// (the primary key refuses it).
pub(super) fn random_session_id() -> StoreResult<i64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Internal(format!("the OS random generator failed: {e}")))?;
    Ok((i64::from_le_bytes(bytes) & (i64::MAX >> 1)) | (1 << 62))
}

/// The live session with this key, its expiry slid when `policy.refresh_interval` has passed
/// since the last slide (what a read does; `refreshed` tells).
pub(super) fn touch(
    tx: &Transaction<'_>,
    key: &KeyHash,
    now: i64,
    policy: &crate::session::SessionPolicy,
) -> StoreResult<Option<Session>> {
    let Some(row) = load(tx, key, now)? else {
        return Ok(None);
    };
    // Lazy refresh: a read writes only once `refresh_interval` passed since the last slide.
    if now - row.touched_at < secs_ms(policy.refresh_interval) {
        return Ok(Some(row.into_session(false)));
    }
    save(tx, key, row, now, policy).map(Some)
}

/// The live session with this key.
fn load(tx: &Transaction<'_>, key: &KeyHash, now: i64) -> StoreResult<Option<Row>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, data, expiry_kind, idle_secs, created_at, touched_at, expires_at, version
         FROM sessions WHERE key_hash = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
    )?;
    Ok(stmt
        .query_row(params![&key.0[..], now], Row::read)
        .optional()?)
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(
        &self,
        key: &KeyHash,
        data: &Map<String, Value>,
        expiry: Expiry,
    ) -> StoreResult<Session> {
        let key = *key;
        let data = data.clone();
        self.transaction(move |tx, now, policy| {
            if data_bytes(&data) > policy.max_data_bytes {
                return Err(StoreError::DataTooLarge(policy.max_data_bytes));
            }
            let expires = expires_at(policy, expiry, now, now);
            let (kind, idle) = expiry.to_parts();
            let text = to_json(&data)?;
            // Not SQLite's next rowid: that reuses the id of the newest session once it is
            // deleted, and an id names its owner elsewhere (idempotency records, sends still in
            // flight), as PostgreSQL's identity column, which never reuses one, guarantees.
            let id = random_session_id()?;
            tx.prepare_cached(
                "INSERT INTO sessions
                     (id, key_hash, data, expiry_kind, idle_secs, created_at, touched_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
            )?
            .execute(params![id, &key.0[..], text, kind, idle, now, expires])?;
            let row = Row {
                id,
                data,
                expiry,
                created_at: now,
                touched_at: now,
                expires_at: expires,
                version: 1,
            };
            Ok(row.into_session(true))
        })
        .await
    }

    async fn touch_session(&self, key: &KeyHash) -> StoreResult<Option<Session>> {
        let key = *key;
        self.transaction(move |tx, now, policy| touch(tx, &key, now, policy))
            .await
    }

    async fn set_value(
        &self,
        key: &KeyHash,
        name: &str,
        value: &Value,
    ) -> StoreResult<Option<Session>> {
        let key = *key;
        let (name, value) = (name.to_owned(), value.clone());
        self.transaction(move |tx, now, policy| {
            let Some(mut row) = load(tx, &key, now)? else {
                return Ok(None);
            };
            let before = data_bytes(&row.data);
            row.data.insert(name, value);
            let after = data_bytes(&row.data);
            // A write that shrinks a session already over a lowered limit is still allowed.
            if after > policy.max_data_bytes && after > before {
                return Err(StoreError::DataTooLarge(policy.max_data_bytes));
            }
            save(tx, &key, row, now, policy).map(Some)
        })
        .await
    }

    async fn delete_value(&self, key: &KeyHash, name: &str) -> StoreResult<DeleteOutcome> {
        let key = *key;
        let name = name.to_owned();
        self.transaction(move |tx, now, policy| {
            let Some(mut row) = load(tx, &key, now)? else {
                return Ok(DeleteOutcome::NoSession);
            };
            // `shift_remove` keeps the order of the keys after it (`remove` would swap).
            if row.data.shift_remove(&name).is_none() {
                return Ok(DeleteOutcome::NoSuchKey);
            }
            save(tx, &key, row, now, policy).map(DeleteOutcome::Deleted)
        })
        .await
    }

    async fn clear(&self, key: &KeyHash) -> StoreResult<Option<Session>> {
        let key = *key;
        self.transaction(move |tx, now, policy| {
            let Some(mut row) = load(tx, &key, now)? else {
                return Ok(None);
            };
            row.data.clear();
            save(tx, &key, row, now, policy).map(Some)
        })
        .await
    }

    async fn flush(&self, key: &KeyHash) -> StoreResult<bool> {
        let key = *key;
        self.transaction(move |tx, now, _| {
            // An expired row goes too, but only a live one counts as a flush.
            let live = tx
                .prepare_cached(
                    "DELETE FROM sessions WHERE key_hash = ?1
                     RETURNING expires_at IS NULL OR expires_at > ?2",
                )?
                .query_row(params![&key.0[..], now], |r| r.get(0))
                .optional()?;
            Ok(live.unwrap_or(false))
        })
        .await
    }

    async fn cycle(&self, key: &KeyHash, new_key: &KeyHash) -> StoreResult<Option<Session>> {
        let (key, new_key) = (*key, *new_key);
        self.transaction(move |tx, now, policy| {
            let Some(row) = load(tx, &key, now)? else {
                return Ok(None);
            };
            save(tx, &new_key, row, now, policy).map(Some)
        })
        .await
    }

    async fn set_expiry(&self, key: &KeyHash, expiry: Expiry) -> StoreResult<Option<Session>> {
        let key = *key;
        self.transaction(move |tx, now, policy| {
            let Some(mut row) = load(tx, &key, now)? else {
                return Ok(None);
            };
            row.expiry = expiry;
            save(tx, &key, row, now, policy).map(Some)
        })
        .await
    }

    async fn replace_session(
        &self,
        key: &KeyHash,
        data: &Map<String, Value>,
        expiry: Expiry,
        if_version: Option<i64>,
    ) -> StoreResult<ReplaceOutcome> {
        let key = *key;
        let data = data.clone();
        self.transaction(move |tx, now, policy| {
            if data_bytes(&data) > policy.max_data_bytes {
                return Err(StoreError::DataTooLarge(policy.max_data_bytes));
            }
            let Some(mut row) = load(tx, &key, now)? else {
                return Ok(ReplaceOutcome::NoSession);
            };
            if if_version.is_some_and(|v| v != row.version) {
                return Ok(ReplaceOutcome::VersionMismatch(row.version));
            }
            row.data = data;
            row.expiry = expiry;
            save(tx, &key, row, now, policy).map(ReplaceOutcome::Replaced)
        })
        .await
    }
}
