//! The embedded store: one SQLite file in WAL mode, for a single daemon without PostgreSQL.

use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::{StoreError, StoreResult};
use crate::session::{Expiry, KeyHash, Session, SessionPolicy};
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
    (
        10,
        "0010_mac_scheme",
        include_str!("../../migrations/sqlite/0010_mac_scheme.sql"),
    ),
    (
        11,
        "0011_dead_event_sweep",
        include_str!("../../migrations/sqlite/0011_dead_event_sweep.sql"),
    ),
];

mod deliveries;
mod events;
mod idempotency;
mod limits;
mod maintenance;
mod sessions;
mod verifications;

/// Milliseconds of `d`, saturated to what the millisecond columns hold.
fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

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

/// [`Store`](crate::store::Store) on one SQLite file; the process clock is the clock.
pub struct SqliteStore {
    /// A single connection: SQLite admits one writer at a time anyway. A std `Mutex` suits
    /// because it is only ever taken on a blocking thread and never held across an `.await`.
    conn: Arc<Mutex<Connection>>,
    policy: SessionPolicy,
    /// Set while a sweep runs, so that a second caller returns `ran = false` at once.
    sweeping: AtomicBool,
    /// Calls on the connection's thread so far ([`crate::store::Maintenance::round_trips`]).
    round_trips: AtomicU64,
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
            round_trips: AtomicU64::new(0),
        })
    }

    /// Runs `f` with the connection on a blocking thread, so async workers never wait on disk.
    async fn blocking<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
        {
            return StoreError::SessionGone;
        }
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
