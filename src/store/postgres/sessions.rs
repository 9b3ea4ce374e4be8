//! [`SessionStore`] on PostgreSQL: one statement per operation, on the database's clock; the
//! exception, `set_value`, locks the row from its read to its write.

use async_trait::async_trait;
use postgres_types::Json;
use serde_json::{Map, Value};
use std::time::SystemTime;

use super::{PgStore, db_error, session_from};
use crate::session::{Expiry, KeyHash, Session};
use crate::session_data::data_bytes;
use crate::store::{DeleteOutcome, ReplaceOutcome, SessionStore, StoreError, StoreResult};

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
        // An expired row goes too (as on SQLite), but only a live one counts as a flush.
        let row = self
            .query_opt(
                "DELETE FROM sessions WHERE key_hash = $1
                 RETURNING expires_at IS NULL OR expires_at > now()",
                &[&key.0.as_slice()],
            )
            .await?;
        Ok(row.is_some_and(|r| r.get::<_, bool>(0)))
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
}

/// The moment of an absolute expiry, for the `expiry_at` column.
fn absolute(expiry: Expiry) -> Option<SystemTime> {
    match expiry {
        Expiry::At(t) => Some(t),
        _ => None,
    }
}
