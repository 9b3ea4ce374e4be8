//! The embedded store: one SQLite file in WAL mode, for a single daemon without PostgreSQL.

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;

use super::{
    CheckOutcome, CheckVerification, DeleteOutcome, IdempotencyBegin, IdempotencyStore, LiveCode,
    Maintenance, ReplaceOutcome, SessionStore, StartOutcome, StartVerification, StoreError,
    StoreResult, SweepReport, VerificationStore,
    idempotency::{headers_from_json, headers_to_json},
    maintenance::SECRET_NAME,
    retry_after,
};
use crate::code::{CodeMac, CodeNonce};
use crate::delivery::{Delivery, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::phone::PhoneNumber;
use crate::quota::{CheckGuard, PumpingState, Refusal, SendGuard};
use crate::session::{Expiry, KeyHash, Session, SessionPolicy};
use crate::session_data::data_bytes;
use crate::time::{from_millis, to_millis};

/// The files of `migrations/sqlite`, in order: (version, name, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "0002_abuse_limits",
        include_str!("../../migrations/sqlite/0002_abuse_limits.sql"),
    ),
    (
        3,
        "0003_challenge_and_networks",
        include_str!("../../migrations/sqlite/0003_challenge_and_networks.sql"),
    ),
    (
        4,
        "0004_spent_challenges",
        include_str!("../../migrations/sqlite/0004_spent_challenges.sql"),
    ),
    (
        5,
        "0005_deliveries",
        include_str!("../../migrations/sqlite/0005_deliveries.sql"),
    ),
    (
        6,
        "0006_session_replace",
        include_str!("../../migrations/sqlite/0006_session_replace.sql"),
    ),
    (
        7,
        "0007_same_code_resend",
        include_str!("../../migrations/sqlite/0007_same_code_resend.sql"),
    ),
    (
        8,
        "0008_secret_name",
        include_str!("../../migrations/sqlite/0008_secret_name.sql"),
    ),
    (
        9,
        "0009_events",
        include_str!("../../migrations/sqlite/0009_events.sql"),
    ),
];

mod deliveries;
mod events;
mod limits;

/// Milliseconds of `d`, saturated to what the millisecond columns hold.
fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A new session id. SQLite has no sequence to draw from without a write (and daemons sharing
/// the file share no counter), so the id is random in [2^62, 2^63): with 2^62 values a clash with
/// any existing id is as likely as guessing a 62-bit secret, and would only fail that one write
/// (the primary key refuses it).
fn random_session_id() -> StoreResult<i64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Internal(format!("the OS random generator failed: {e}")))?;
    Ok((i64::from_le_bytes(bytes) & (i64::MAX >> 1)) | (1 << 62))
}

/// `verifications.state` values.
const PENDING: i64 = 0;
const APPROVED: i64 = 1;
const EXHAUSTED: i64 = 2;

/// How hard SQLite pushes commits to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// Every commit is on disk before it returns; survives power loss.
    Full,
    /// The usual WAL setting: a power loss may undo the last commits but never corrupts the file.
    Normal,
}

/// Connection settings for [`SqliteStore::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// How long a statement waits for another connection's lock before failing as `Unavailable`.
    pub busy_timeout: Duration,
}

/// [`Store`] on one SQLite file; the process clock is the clock.
pub struct SqliteStore {
    /// A single connection: SQLite admits one writer at a time anyway. A std `Mutex` suits
    /// because it is only ever taken on a blocking thread and never held across an `.await`.
    conn: Arc<Mutex<Connection>>,
    policy: SessionPolicy,
    /// Set while a sweep runs, so that a second caller returns `ran = false` at once.
    sweeping: AtomicBool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory. Does not migrate.
    pub fn open(path: &Path, opts: &SqliteOptions, policy: SessionPolicy) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        // SQLite would create the file with the umask's permissions; made first, `0600`, it
        // passes its mode on: SQLite gives a new `-wal` and `-shm` the database file's mode.
        // Files left looser by an older version are tightened.
        let private = |p: &Path, create: bool| {
            let done = if create {
                crate::private_file::ensure(p)
            } else {
                crate::private_file::tighten_if_present(p)
            };
            done.map_err(|e| StoreError::Unavailable(format!("{}: {e}", p.display())))
        };
        private(path, true)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            private(Path::new(&side), false)?;
        }
        let conn = Connection::open(path)?;
        // First, so that the pragmas below already wait for a lock held elsewhere.
        conn.busy_timeout(opts.busy_timeout)?;
        // WAL lets readers (a backup, the sqlite3 shell) work beside the writer.
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Internal(format!(
                "{} cannot use the WAL journal (got {mode})",
                path.display()
            )));
        }
        let sync = match opts.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)?;
        // Off by default in SQLite; the cascade from sessions to verifications needs it.
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Room for every statement below, so none is ever prepared twice.
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            policy,
            sweeping: AtomicBool::new(false),
        })
    }

    /// Runs `f` with the connection on a blocking thread, so async workers never wait on disk.
    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| StoreError::Internal("sqlite connection mutex poisoned".into()))?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Internal(format!("sqlite task failed: {e}")))?
    }

    /// Runs `f` as one `BEGIN IMMEDIATE` transaction: it holds the write lock from the start, so
    /// reading a row and then writing it is atomic. `f` gets the current time in milliseconds.
    async fn transaction<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64, &SessionPolicy) -> StoreResult<T> + Send + 'static,
    {
        let policy = self.policy;
        self.blocking(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Read under the lock, so that time order follows commit order.
            let now = to_millis(SystemTime::now());
            let out = f(&tx, now, &policy)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Runs one bounded `DELETE` (`?1` = now, `?2` = batch) until it removes fewer than `batch`
    /// rows. Each batch takes the connection on its own, so requests run between batches.
    async fn delete_in_batches(&self, sql: &'static str, now: i64, batch: u32) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let n = self
                .blocking(move |conn| Ok(conn.prepare_cached(sql)?.execute(params![now, batch])?))
                .await?;
            total += n as u64;
            if n < batch as usize {
                return Ok(total);
            }
        }
    }
}

/// A session row as read inside a transaction.
struct Row {
    id: i64,
    data: Map<String, Value>,
    expiry: Expiry,
    created_at: i64,
    touched_at: i64,
    expires_at: Option<i64>,
    version: i64,
}

impl Row {
    /// Reads the columns in the order the `SELECT`s of [`load`] and [`load_by_id`] list them.
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let text: String = r.get(1)?;
        let data = serde_json::from_str(&text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, Type::Text, Box::new(e)))?;
        let expires_at: Option<i64> = r.get(6)?;
        Ok(Self {
            id: r.get(0)?,
            data,
            expiry: Expiry::from_row(r.get(2)?, r.get(3)?, expires_at.map(from_millis)),
            created_at: r.get(4)?,
            touched_at: r.get(5)?,
            expires_at,
            version: r.get(7)?,
        })
    }

    fn into_session(self, refreshed: bool) -> Session {
        Session {
            id: self.id,
            data: self.data,
            expiry: self.expiry,
            created_at: from_millis(self.created_at),
            expires_at: self.expires_at.map(from_millis),
            refreshed,
            version: self.version,
        }
    }
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

/// The live session with this id.
fn load_by_id(tx: &Transaction<'_>, id: i64, now: i64) -> StoreResult<Option<Row>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, data, expiry_kind, idle_secs, created_at, touched_at, expires_at, version
         FROM sessions WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
    )?;
    Ok(stmt.query_row(params![id, now], Row::read).optional()?)
}

/// The write path of every session change: stores `row` under `key` and slides its expiry.
fn save(
    tx: &Transaction<'_>,
    key: &KeyHash,
    mut row: Row,
    now: i64,
    policy: &SessionPolicy,
) -> StoreResult<Session> {
    row.touched_at = now;
    row.expires_at = expires_at(policy, row.expiry, row.created_at, now);
    let data = to_json(&row.data)?;
    let (kind, idle) = row.expiry.to_parts();
    // The version moves when data or expiry policy changed, as the PostgreSQL trigger does;
    // for an absolute expiry the policy includes its moment.
    row.version = tx
        .prepare_cached(
            "UPDATE sessions SET key_hash = ?2, data = ?3, expiry_kind = ?4, idle_secs = ?5,
                touched_at = ?6, expires_at = ?7,
                version = version + (data IS NOT ?3 OR expiry_kind IS NOT ?4
                    OR idle_secs IS NOT ?5 OR (?4 = 4 AND expires_at IS NOT ?7))
         WHERE id = ?1 RETURNING version",
        )?
        .query_row(
            params![
                row.id,
                &key.0[..],
                data,
                kind,
                idle,
                row.touched_at,
                row.expires_at
            ],
            |r| r.get(0),
        )?;
    Ok(row.into_session(true))
}

fn to_json(data: &Map<String, Value>) -> StoreResult<String> {
    serde_json::to_string(data).map_err(|e| StoreError::Internal(format!("session data: {e}")))
}

/// `now + idle`, never later than `created_at + max_lifetime`; `None` means no expiry.
fn expires_at(policy: &SessionPolicy, expiry: Expiry, created_at: i64, now: i64) -> Option<i64> {
    let sliding = match expiry {
        Expiry::Idle(n) => Some(now.saturating_add(secs_ms(n))),
        Expiry::Default | Expiry::Browser => Some(now.saturating_add(secs_ms(policy.default_age))),
        Expiry::Never => None,
        // Never slides: the moment itself, however the session is used.
        Expiry::At(t) => Some(to_millis(t)),
    };
    let cap = policy
        .max_lifetime
        .map(|secs| created_at.saturating_add(secs_ms(secs)));
    match (sliding, cap) {
        (Some(s), Some(c)) => Some(s.min(c)),
        (s, c) => s.or(c),
    }
}

fn secs_ms(secs: u32) -> i64 {
    i64::from(secs) * 1000
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `Retry-After` for an instant in milliseconds.
fn retry_after_ms(t: i64, now: i64) -> Duration {
    retry_after(from_millis(t), from_millis(now))
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            // The lock stayed taken past the busy timeout, or the file itself failed.
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

/// Holds [`SqliteStore::sweeping`]; dropping it (after an error too) lets the next sweep run.
struct SweepGuard<'a>(&'a AtomicBool);

impl<'a> SweepGuard<'a> {
    fn acquire(flag: &'a AtomicBool) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Self(flag))
    }
}

impl Drop for SweepGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What the abuse limits say about a send the verification's rules allow, in the order of
/// [`Store::start_send`]: `None` when it may go out. Reads only; the caller takes the quotas.
fn limits_refuse(
    tx: &Transaction<'_>,
    guard: &SendGuard,
    now: i64,
) -> StoreResult<Option<StartOutcome>> {
    let refused = |by, end| StartOutcome::Refused {
        by,
        retry_after: retry_after_ms(end, now),
    };
    let breaker = match &guard.pumping {
        Some(rule) => limits::breaker_open(tx, rule, now)?,
        None => None,
    };
    let challenge = guard.challenge;
    if let Some(end) = breaker.filter(|_| !challenge.on_trip) {
        return Ok(Some(refused(Refusal::Breaker, end)));
    }
    let hard = limits::live_counts(tx, &guard.quotas, now)?;
    if let Some((scope, end)) = limits::fullest(&guard.quotas, &hard) {
        return Ok(Some(refused(Refusal::Quota(scope), end)));
    }
    if challenge.passed {
        return Ok(None);
    }
    let soft = limits::live_counts(tx, &guard.soft, now)?;
    let suspicious = || {
        guard
            .all_quotas()
            .zip(hard.iter().chain(&soft))
            .any(|(q, &(count, _))| q.scope.suspicious_at(count, q.limit))
    };
    let needed = challenge.always
        || breaker.is_some()
        || (challenge.when_suspicious && suspicious())
        || limits::fullest(&guard.soft, &soft).is_some();
    Ok(needed.then_some(StartOutcome::Refused {
        by: Refusal::Challenge,
        retry_after: Duration::ZERO,
    }))
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
        self.transaction(move |tx, now, policy| {
            let Some(row) = load(tx, &key, now)? else {
                return Ok(None);
            };
            // Lazy refresh: a read writes only once `refresh_interval` passed since the last slide.
            if now - row.touched_at < secs_ms(policy.refresh_interval) {
                return Ok(Some(row.into_session(false)));
            }
            save(tx, &key, row, now, policy).map(Some)
        })
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

    async fn reserve_session_id(&self) -> StoreResult<i64> {
        random_session_id()
    }
}

#[async_trait]
impl VerificationStore for SqliteStore {
    async fn start_send(
        &self,
        req: &StartVerification<'_>,
        guard: &SendGuard,
    ) -> StoreResult<StartOutcome> {
        let (session_id, phone, mac) =
            (req.session_id, req.phone.as_str().to_owned(), req.code_mac);
        let (ttl, resend) = (duration_ms(req.ttl), duration_ms(req.resend_interval));
        let (max_attempts, new_session) = (req.max_attempts, req.new_session);
        let guard = guard.clone();
        self.transaction(move |tx, now, policy| {
            let current: Option<(i64, u32, i64, i64)> = tx
                .prepare_cached(
                    "SELECT state, attempts, sent_at, expires_at FROM verifications
                     WHERE session_id = ?1 AND phone = ?2",
                )?
                .query_row(params![session_id, phone], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let expires = now.saturating_add(ttl);
            let live = current.filter(|&(state, _, _, exp)| exp > now && state != APPROVED);
            match live {
                Some((state, attempts, _, _)) if state == EXHAUSTED || attempts >= max_attempts => {
                }
                Some((_, _, sent_at, _)) if now < sent_at.saturating_add(resend) => {}
                // The verification's own rules allow a send: now the limits decide.
                _ => {
                    if let Some(refused) = limits_refuse(tx, &guard, now)? {
                        return Ok(refused);
                    }
                    limits::bump_all(tx, guard.all_quotas(), now)?;
                    if let Some(rule) = &guard.pumping {
                        if limits::record_send(tx, rule, now)? {
                            tracing::warn!(country = %rule.country, "SMS pumping breaker tripped");
                        }
                    }
                    if let Some(new) = new_session {
                        let (kind, idle) = new.expiry.to_parts();
                        let expires = expires_at(policy, new.expiry, now, now);
                        tx.prepare_cached(
                            "INSERT INTO sessions (id, key_hash, data, expiry_kind, idle_secs,
                                                   created_at, touched_at, expires_at)
                             VALUES (?1, ?2, '{}', ?3, ?4, ?5, ?5, ?6)",
                        )?
                        .execute(params![
                            session_id,
                            &new.key.0[..],
                            kind,
                            idle,
                            now,
                            expires
                        ])?;
                    }
                }
            }
            match live {
                Some((state, attempts, _, exp))
                    if state == EXHAUSTED || attempts >= max_attempts =>
                {
                    Ok(StartOutcome::Exhausted {
                        retry_after: retry_after_ms(exp, now),
                    })
                }
                Some((_, _, sent_at, _)) if now < sent_at.saturating_add(resend) => {
                    let ready = sent_at.saturating_add(resend);
                    Ok(StartOutcome::TooSoon {
                        retry_after: retry_after_ms(ready, now),
                    })
                }
                Some((_, attempts, _, _)) => {
                    tx.prepare_cached(
                        "UPDATE verifications SET code_mac = ?3, sent_at = ?4, expires_at = ?5
                         WHERE session_id = ?1 AND phone = ?2",
                    )?
                    .execute(params![
                        session_id,
                        phone,
                        &mac.0[..],
                        now,
                        expires
                    ])?;
                    Ok(StartOutcome::Issued {
                        resend: true,
                        attempts,
                    })
                }
                // Never sent, or the previous verification is over: start afresh.
                None => {
                    tx.prepare_cached(
                        "INSERT INTO verifications
                             (session_id, phone, code_mac, state, attempts, created_at, sent_at,
                              expires_at)
                         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?6)
                         ON CONFLICT (session_id, phone) DO UPDATE SET
                             code_mac = excluded.code_mac, state = excluded.state, attempts = 0,
                             created_at = excluded.created_at, sent_at = excluded.sent_at,
                             expires_at = excluded.expires_at",
                    )?
                    .execute(params![
                        session_id,
                        phone,
                        &mac.0[..],
                        PENDING,
                        now,
                        expires
                    ])?;
                    Ok(StartOutcome::Issued {
                        resend: false,
                        attempts: 0,
                    })
                }
            }
        })
        .await
    }

    async fn abandon_send(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        code_mac: &CodeMac,
        guard: &SendGuard,
    ) -> StoreResult<()> {
        let (phone, mac, guard) = (phone.as_str().to_owned(), *code_mac, guard.clone());
        self.transaction(move |tx, now, _| {
            // A send at the epoch is as good as no send: the cooldown is over at once.
            tx.prepare_cached(
                "UPDATE verifications SET sent_at = 0
                 WHERE session_id = ?1 AND phone = ?2 AND code_mac = ?3 AND state = ?4",
            )?
            .execute(params![session_id, phone, &mac.0[..], PENDING])?;
            if let Some(rule) = &guard.pumping {
                limits::unrecord_send(tx, rule, now)?;
            }
            limits::give_back(tx, guard.all_quotas(), now)
        })
        .await
    }

    async fn live_code(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        margin: Duration,
        min_keep: Duration,
    ) -> StoreResult<Option<LiveCode>> {
        let phone = phone.as_str().to_owned();
        let (margin, min_keep) = (duration_millis(margin), duration_millis(min_keep));
        self.blocking(move |conn| {
            let now = to_millis(SystemTime::now());
            let row = conn
                .prepare_cached(
                    "SELECT code_nonce, keep_until FROM verifications
                     WHERE session_id = ?1 AND phone = ?2 AND state = ?3
                       AND nonce_mac = code_mac AND expires_at >= ?4 AND keep_until >= ?5",
                )?
                .query_row(
                    params![
                        session_id,
                        phone,
                        PENDING,
                        now.saturating_add(margin),
                        now.saturating_add(min_keep)
                    ],
                    |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            row.map(|(nonce, keep_until)| {
                let nonce = nonce.try_into().map_err(|_| {
                    StoreError::Internal("a stored code nonce is not 16 bytes".into())
                })?;
                Ok(LiveCode {
                    nonce: CodeNonce(nonce),
                    keep_left: Duration::from_millis(
                        u64::try_from(keep_until.saturating_sub(now)).unwrap_or(0),
                    ),
                })
            })
            .transpose()
        })
        .await
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
        let (phone, mac, new_mac, nonce) = (phone.as_str().to_owned(), *mac, *new_mac, *nonce);
        self.blocking(move |conn| {
            let now = to_millis(SystemTime::now());
            let keep_until = keep_for.map(|k| now.saturating_add(duration_millis(k)));
            let n = conn
                .prepare_cached(
                    "UPDATE verifications
                     SET code_mac = ?4, code_nonce = ?5, nonce_mac = ?4,
                         keep_until = coalesce(?6, keep_until)
                     WHERE session_id = ?1 AND phone = ?2 AND code_mac = ?3",
                )?
                .execute(params![
                    session_id,
                    phone,
                    &mac.0[..],
                    &new_mac.0[..],
                    &nonce.0[..],
                    keep_until
                ])?;
            Ok(n > 0)
        })
        .await
    }

    async fn check_guarded(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
    ) -> StoreResult<CheckOutcome> {
        let (session_id, phone, mac) =
            (req.session_id, req.phone.as_str().to_owned(), req.code_mac);
        let max_attempts = req.max_attempts;
        let (new_key, approval) = (req.on_approve.new_key, req.on_approve.data.clone());
        let guard = guard.clone();
        self.transaction(move |tx, now, policy| {
            if let Some((scope, end)) = limits::take_quotas(tx, &guard.quotas, now)? {
                return Ok(CheckOutcome::Refused {
                    by: Refusal::Quota(scope),
                    retry_after: retry_after_ms(end, now),
                });
            }
            let counters = limits::failure_counters(&phone, &guard);
            let mut locked: Option<i64> = None;
            for f in &counters {
                if let Some(end) = limits::locked_until(tx, f, now)? {
                    locked = Some(locked.map_or(end, |l| l.max(end)));
                }
            }
            let current: Option<(Vec<u8>, i64, u32, i64)> = tx
                .prepare_cached(
                    "SELECT code_mac, state, attempts, expires_at FROM verifications
                     WHERE session_id = ?1 AND phone = ?2",
                )?
                .query_row(params![session_id, phone], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            // A session that died after its code was sent has no code to check (right or wrong).
            let session = load_by_id(tx, session_id, now)?;
            // Every answer that is not about a live code the session holds: the lock on the
            // number is not revealed, and the counter write a wrong code makes is made anyway.
            let settled = match &current {
                _ if session.is_none() => Some(CheckOutcome::NotFound),
                None => Some(CheckOutcome::NotFound),
                Some((_, state, _, _)) if *state == APPROVED => Some(CheckOutcome::NotFound),
                Some((_, _, _, expires)) if *expires <= now => Some(CheckOutcome::Expired),
                Some((_, state, attempts, _))
                    if *state == EXHAUSTED || *attempts >= max_attempts =>
                {
                    Some(CheckOutcome::Exhausted)
                }
                Some(_) => locked.map(|end| CheckOutcome::Refused {
                    by: Refusal::Locked,
                    retry_after: retry_after_ms(end, now),
                }),
            };
            // The comparison runs on every path (against nothing when there is no live code), so
            // the time it takes does not tell the paths apart either.
            let stored = current.as_ref().map_or(&[0u8; 32][..], |c| c.0.as_slice());
            let matches = bool::from(stored.ct_eq(&mac.0[..]));
            let Some((_, _, attempts, _)) = current.filter(|_| settled.is_none()) else {
                for f in &counters {
                    limits::touch_failures(tx, f, now)?;
                }
                return Ok(settled.unwrap_or(CheckOutcome::NotFound));
            };
            if matches {
                let Some(mut row) = session else {
                    return Ok(CheckOutcome::NotFound);
                };
                row.data.extend(approval);
                let session = save(tx, &new_key, row, now, policy)?;
                tx.prepare_cached(
                    "UPDATE verifications SET state = ?3 WHERE session_id = ?1 AND phone = ?2",
                )?
                .execute(params![session_id, phone, APPROVED])?;
                if let Some(rule) = &guard.pumping {
                    limits::record_approval(tx, rule, now)?;
                }
                return Ok(CheckOutcome::Approved { session });
            }
            let attempts = attempts + 1;
            let state = if attempts >= max_attempts {
                EXHAUSTED
            } else {
                PENDING
            };
            tx.prepare_cached(
                "UPDATE verifications SET attempts = ?3, state = ?4
                 WHERE session_id = ?1 AND phone = ?2",
            )?
            .execute(params![session_id, phone, attempts, state])?;
            for f in &counters {
                limits::record_failure(tx, f, now)?;
            }
            Ok(if state == EXHAUSTED {
                CheckOutcome::Exhausted
            } else {
                CheckOutcome::Wrong {
                    attempts_left: max_attempts - attempts,
                }
            })
        })
        .await
    }

    async fn pumping_states(&self) -> StoreResult<Vec<PumpingState>> {
        self.transaction(|tx, now, _| {
            let mut stmt = tx.prepare_cached(
                "SELECT country, sends, approvals, tripped, expires_at FROM pumping
                 WHERE expires_at > ?1 ORDER BY country",
            )?;
            let rows = stmt.query_map([now], |r| {
                Ok(PumpingState {
                    country: r.get(0)?,
                    sends: r.get(1)?,
                    approvals: r.get(2)?,
                    tripped: r.get(3)?,
                    window_ends: from_millis(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn pumping_reset(&self, country: &str) -> StoreResult<bool> {
        let country = country.to_owned();
        self.transaction(move |tx, now, _| {
            // Ends the window: the next send starts a fresh one.
            let n = tx
                .prepare_cached(
                    "UPDATE pumping SET sends = 0, approvals = 0, tripped = 0, expires_at = ?2
                     WHERE country = ?1",
                )?
                .execute(params![country, now])?;
            Ok(n > 0)
        })
        .await
    }

    async fn record_delivery(&self, d: &NewDelivery<'_>) -> StoreResult<()> {
        let row = deliveries::Owned::from(d);
        self.transaction(move |tx, now, _| deliveries::record(tx, &row, now))
            .await
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> StoreResult<ReceiptOutcome> {
        let r = r.clone();
        self.transaction(move |tx, now, _| deliveries::apply(tx, &r, now))
            .await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        let id = id.to_owned();
        self.blocking(move |conn| deliveries::get(conn, &id)).await
    }
}

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

    async fn sweep(&self, batch: u32) -> StoreResult<SweepReport> {
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
        Ok(SweepReport {
            sessions,
            verifications,
            limits,
            ran: true,
        })
    }
}
