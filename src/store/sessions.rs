//! The Django-style session operations: one live row per key, data as a JSON object, expiry
//! that slides when the session is used.

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::session::{Expiry, KeyHash, Session};
use crate::store::StoreResult;

/// What [`SessionStore::replace_session`] did.
#[derive(Debug)]
pub enum ReplaceOutcome {
    Replaced(Session),
    /// No live session has this key.
    NoSession,
    /// The session is at another version (given) than the caller's `If-Match`.
    VersionMismatch(i64),
}

/// Outcome of deleting one key from a session's data.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    NoSession,
    NoSuchKey,
    Deleted(Session),
}

/// The session store behind the Django backend. Implementations own their clock: PostgreSQL uses
/// the database's `now()` (one clock for all daemons), SQLite the process clock.
///
/// Session rules every implementation follows (see `../shared/reference/sessions.md`):
/// - A session whose `expires_at` has passed is never returned, even before the sweeper runs.
/// - The idle time of a session is `N` for `Expiry::Idle(N)`, `policy.default_age` for
///   `Default` and `Browser`, and none for `Never`. When a session is used its expiry becomes
///   `now + idle`, but never later than `created_at + policy.max_lifetime` when a cap is set
///   (`Never` sessions get exactly that cap, or no expiry at all without one).
/// - Reads (`touch_session`) slide the expiry only when `policy.refresh_interval` seconds have
///   passed since the last slide, and then report `refreshed = true`; writes always slide it and
///   report `refreshed = true`.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Inserts a new session with the given key, data and expiry policy.
    async fn create_session(
        &self,
        key: &KeyHash,
        data: &Map<String, Value>,
        expiry: Expiry,
    ) -> StoreResult<Session>;

    /// Loads a live session, sliding its expiry when due.
    async fn touch_session(&self, key: &KeyHash) -> StoreResult<Option<Session>>;

    /// Sets `data[name] = value`.
    async fn set_value(
        &self,
        key: &KeyHash,
        name: &str,
        value: &Value,
    ) -> StoreResult<Option<Session>>;

    /// Removes `data[name]`.
    async fn delete_value(&self, key: &KeyHash, name: &str) -> StoreResult<DeleteOutcome>;

    /// Empties the data, keeps the key and expiry policy.
    async fn clear(&self, key: &KeyHash) -> StoreResult<Option<Session>>;

    /// Deletes the session (and its verifications). True when a live session was deleted.
    async fn flush(&self, key: &KeyHash) -> StoreResult<bool>;

    /// Moves the session to `new_key`; the old key stops working at once. Data, id and pending
    /// verifications stay.
    async fn cycle(&self, key: &KeyHash, new_key: &KeyHash) -> StoreResult<Option<Session>>;

    /// Changes the expiry policy and recomputes `expires_at` from now.
    async fn set_expiry(&self, key: &KeyHash, expiry: Expiry) -> StoreResult<Option<Session>>;

    /// Replaces the whole data (keeping its key order) and the expiry policy of a live session
    /// in one step, sliding its expiry; with `if_version`, only while the session's version
    /// still is that number (optimistic concurrency for Django's whole-session `save()`).
    async fn replace_session(
        &self,
        key: &KeyHash,
        data: &Map<String, Value>,
        expiry: Expiry,
        if_version: Option<i64>,
    ) -> StoreResult<ReplaceOutcome>;
}
