//! The storage boundary: one trait, two complete implementations (PostgreSQL and an embedded
//! SQLite file), both held to the same conformance suite in `tests/store/conformance.rs`.
//!
//! Every operation is one atomic statement or one transaction, so racing requests — in one
//! daemon or in several sharing a database — get the answer a single server would give.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime};

use crate::code::{CodeMac, CodeNonce};
use crate::delivery::{Delivery, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::phone::PhoneNumber;
use crate::quota::{CheckGuard, PumpingState, Refusal, SendGuard};
use crate::session::{Expiry, KeyHash, Session};

pub mod events;
pub mod pg_hosts;
pub mod pg_tls;
pub mod postgres;
pub mod sqlite;

/// Failures at the storage boundary. The HTTP layer maps `Unavailable` to 503 `store_unavailable`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached, a pool wait timed out, or the connection broke.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else the database said; a bug or a broken schema, not a client problem.
    #[error("store error: {0}")]
    Internal(String),
    /// The write would take the session's data past `session.max_data_bytes` (the limit).
    #[error("session data would exceed {0} bytes")]
    DataTooLarge(usize),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Name of the server secret's row in `verifyd_meta`, the same in both stores.
const SECRET_NAME: &str = "code_mac_key";

/// What a send asks the store to record, atomically with the resend and attempt rules.
#[derive(Debug, Clone)]
pub struct StartVerification<'a> {
    pub session_id: i64,
    pub phone: &'a PhoneNumber,
    pub code_mac: CodeMac,
    /// Lifetime of the new code.
    pub ttl: Duration,
    /// Minimum time between two sends for the same session and phone.
    pub resend_interval: Duration,
    /// Wrong attempts allowed per verification (shared by all codes sent within it).
    pub max_attempts: u32,
    /// A browser's first session, created with the code only when the send is issued (so a
    /// refused send writes no session). `session_id` is then an id from
    /// [`Store::reserve_session_id`].
    pub new_session: Option<NewSession>,
}

/// The session a cookieless browser gets with its first accepted send: empty data.
#[derive(Debug, Clone, Copy)]
pub struct NewSession {
    pub key: KeyHash,
    pub expiry: Expiry,
}

/// Outcome of [`Store::start_verification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartOutcome {
    /// The code was recorded. `resend` is true when it replaced a live code of the same
    /// verification, whose wrong-attempt count (`attempts`) carries over.
    Issued { resend: bool, attempts: u32 },
    /// A code was sent less than `resend_interval` ago.
    TooSoon { retry_after: Duration },
    /// The live verification used up its attempts; no new code until it expires.
    Exhausted { retry_after: Duration },
    /// An abuse limit refused the send; no counter moved and no code was recorded.
    Refused { by: Refusal, retry_after: Duration },
}

/// What a check asks the store to decide, atomically.
#[derive(Debug, Clone)]
pub struct CheckVerification<'a> {
    pub session_id: i64,
    pub phone: &'a PhoneNumber,
    /// MAC of the code the person typed (same key and inputs as at send time).
    pub code_mac: CodeMac,
    pub max_attempts: u32,
    /// Applied to the session in the same transaction when the code is right.
    pub on_approve: Approval<'a>,
}

/// Session changes that come with an approval: new key (fixation defence) and the verified facts.
#[derive(Debug, Clone)]
pub struct Approval<'a> {
    pub new_key: KeyHash,
    /// Merged into the session data (`verified_phone`, `verified_at`).
    pub data: &'a Map<String, Value>,
}

/// Outcome of [`Store::check_verification`].
#[derive(Debug, Clone, PartialEq)]
pub enum CheckOutcome {
    /// Right code; the verification is spent, the session carries the approval data under its
    /// new key. `session` is the session after the change.
    Approved { session: Session },
    /// Wrong code; `attempts_left` more tries before the code dies (never 0 here).
    Wrong { attempts_left: u32 },
    /// The code's lifetime is over.
    Expired,
    /// Too many wrong tries (this one may have been the last). Reported while the code is
    /// live; after its lifetime the outcome is `Expired`, as for any other code.
    Exhausted,
    /// No live verification for this session and phone (never sent, already approved, swept).
    NotFound,
    /// An abuse limit refused the check; no attempt was used. A lock on the number is only
    /// reported to a session holding a live code for it: to anybody else the check answers as
    /// it would without the lock.
    Refused { by: Refusal, retry_after: Duration },
}

/// A pending code that a `same_code` resend may send again ([`Store::live_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCode {
    /// What the code was derived from.
    pub nonce: CodeNonce,
    /// Time left before the point past which resends no longer extend the code.
    pub keep_left: Duration,
}

/// Outcome of [`Store::idempotency_begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First use of the key: the caller does the work, then `idempotency_finish`es it.
    Started,
    /// Another request with this key is still running.
    InFlight,
    /// The key was used for this same request: its answer.
    Done {
        status: u16,
        body: String,
        /// The (name, value) pairs given to [`Store::idempotency_finish`], in order.
        headers: Vec<(String, String)>,
    },
    /// The key was used for a different request.
    Mismatch,
}

/// What [`Store::replace_session`] did.
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

/// Rows removed by one sweep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub sessions: u64,
    pub verifications: u64,
    /// Expired quota counters, pumping windows, idempotency records and spent challenges.
    pub limits: u64,
    /// False when another daemon held the sweep lock and this one did nothing.
    pub ran: bool,
}

/// Connections of a pooled store, sampled for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    pub in_use: usize,
    pub idle: usize,
    /// Callers waiting for a connection.
    pub waiting: usize,
}

impl From<PoolStatus> for crate::metrics::PoolSample {
    fn from(p: PoolStatus) -> Self {
        crate::metrics::PoolSample {
            in_use: p.in_use,
            idle: p.idle,
            waiting: p.waiting,
        }
    }
}

/// Everything verifyd keeps. Implementations own their clock: PostgreSQL uses the database's
/// `now()` (one clock for all daemons), SQLite the process clock.
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
pub trait Store: events::EventStore + Send + Sync + 'static {
    /// Creates the schema or brings it up to date (idempotent, safe with concurrent callers).
    async fn migrate(&self) -> StoreResult<()>;

    /// Cheap round trip for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// The connection pool's state, for stores that have one (the embedded store has none).
    fn pool_usage(&self) -> Option<PoolStatus> {
        None
    }

    /// The server secret that keys code MACs: created randomly on first call, then the same
    /// value for every caller and every later start (shared by all daemons on one database).
    async fn server_secret(&self) -> StoreResult<Vec<u8>>;

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
    /// An id no session has or will be given by [`Store::create_session`], for a session that
    /// [`Store::start_send`] may create ([`StartVerification::new_session`]). Writes no row.
    async fn reserve_session_id(&self) -> StoreResult<i64>;

    /// Records a freshly generated code for (session, phone).
    ///
    /// - No row, or the previous verification is over (code expired, or approved): a new
    ///   verification with 0 attempts.
    /// - A live pending code sent less than `resend_interval` ago: `TooSoon`, nothing changes.
    /// - A live pending code older than that: the code is replaced, the attempt count kept.
    /// - A live exhausted verification: `Exhausted` until its `expires_at`.
    ///
    /// The new code expires at `now + ttl`.
    async fn start_verification(&self, req: &StartVerification<'_>) -> StoreResult<StartOutcome> {
        self.start_send(req, &SendGuard::default()).await
    }

    /// [`Store::start_verification`] under abuse limits, in the same transaction. Order: the
    /// verification's own rules (`TooSoon`, `Exhausted`) first, then the pumping breaker
    /// (refusing unless `guard.challenge.on_trip`), then the hard quotas (the fullest refuses),
    /// then the challenge (see [`SendGuard`]: `Refusal::Challenge` unless
    /// `guard.challenge.passed`), then every quota, hard and soft, is incremented — all, or
    /// none when anything refused. A successful send counts towards the breaker of
    /// `guard.pumping`, and trips it when the approvals in its window fall below the minimum
    /// conversion. With `req.new_session`, the session is created only when the code is issued.
    async fn start_send(
        &self,
        req: &StartVerification<'_>,
        guard: &SendGuard,
    ) -> StoreResult<StartOutcome>;

    /// Undoes a send whose delivery failed, in one transaction: lifts its resend cooldown so
    /// the person can retry at once (only while the stored MAC is still `code_mac`: a later
    /// send wins), and gives back what [`Store::start_send`] took under `guard` — one unit of
    /// each quota whose window is still running, and the send's count in the breaker window of
    /// `guard.pumping` (closing the breaker again if that send tripped it). No SMS went out, so
    /// none is charged. `guard` must be the one the send passed (soft quotas are given back too).
    async fn abandon_send(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        code_mac: &CodeMac,
        guard: &SendGuard,
    ) -> StoreResult<()>;

    /// The pending code of (session, phone) when a resend may send it again: not approved or
    /// exhausted, bound to its nonce ([`Store::bind_code`] with this very MAC: a code replaced
    /// since is not its nonce's), valid for at least `margin`
    /// more, and with at least `min_keep` left before its lifetime cap. `None` otherwise.
    async fn live_code(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        margin: Duration,
        min_keep: Duration,
    ) -> StoreResult<Option<LiveCode>>;

    /// Records, for the row of (session, phone) whose stored MAC is still `mac`, the code it
    /// now holds: MAC `new_mac` (equal to `mac` unless the code is being replaced) derived from
    /// `nonce`, and with `keep_for` the cap `now + keep_for` on its lifetime (`None` keeps the
    /// cap). False when no row matched (a later send replaced the code).
    async fn bind_code(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        mac: &CodeMac,
        new_mac: &CodeMac,
        nonce: &CodeNonce,
        keep_for: Option<Duration>,
    ) -> StoreResult<bool>;

    /// Decides a check atomically: right code → approved (once, ever) and the session updated
    /// with [`Approval`] in the same transaction; wrong code → one attempt used, and at
    /// `max_attempts` the code dies. A code that is expired, exhausted or already used never
    /// approves.
    async fn check_verification(&self, req: &CheckVerification<'_>) -> StoreResult<CheckOutcome> {
        self.check_guarded(req, &CheckGuard::default()).await
    }

    /// [`Store::check_verification`] under abuse limits, in the same transaction: the quotas of
    /// `guard` are taken first (refusing costs no attempt); a session with a live code for a
    /// number locked by `guard.failures` is refused; a wrong code counts towards the number's
    /// failures (locking it for `lockout` at the maximum); an approval counts towards the
    /// breaker of `guard.pumping`. Every path past the quotas writes the number's failure
    /// counter the same number of times whether or not a code exists, and whatever the number's
    /// history elsewhere (never seen, failures, locked); a wrong code adds only the attempt on
    /// the caller's own verification row.
    async fn check_guarded(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
    ) -> StoreResult<CheckOutcome>;

    /// Every country's breaker window that has not ended, ordered by country.
    async fn pumping_states(&self) -> StoreResult<Vec<PumpingState>>;

    /// Closes the breaker of `country` and starts a new window. False when there was none.
    async fn pumping_reset(&self, country: &str) -> StoreResult<bool>;

    /// Claims `key` for `owner` (a session or an API key name) for `ttl`, or reports what an
    /// earlier request with it did. `fingerprint` identifies the request (method, path, body).
    async fn idempotency_begin(
        &self,
        owner: &str,
        key: &str,
        fingerprint: &[u8; 32],
        ttl: Duration,
    ) -> StoreResult<IdempotencyBegin>;

    /// Records the answer of a started request, for replays: its status, body and the
    /// (name, value) pairs of whatever response headers the caller wants repeated.
    async fn idempotency_finish(
        &self,
        owner: &str,
        key: &str,
        status: u16,
        body: &str,
        headers: &[(String, String)],
    ) -> StoreResult<()>;

    /// Forgets a started request that did not finish (a retry may then do the work).
    async fn idempotency_abandon(&self, owner: &str, key: &str) -> StoreResult<()>;

    /// Records that the challenge `id` was used, valid until `expires_at`. True for its first
    /// use; false when it was spent before (by any daemon on this store), while its record lasts
    /// — which is at least until `expires_at`, after which the challenge is refused anyway.
    async fn spend_challenge(&self, id: &[u8; 32], expires_at: SystemTime) -> StoreResult<bool>;

    /// Deletes expired sessions, finished verifications, ended quota windows, expired
    /// idempotency records and spent challenges past their expiry in batches of at most `batch` rows
    /// per statement, until none are left. Only one caller sweeps a database at a time; the
    /// others return `ran = false` at once.
    async fn sweep(&self, batch: u32) -> StoreResult<SweepReport>;

    /// Records a send a gateway accepted, in state `queued`. A second record with the same
    /// provider and message id is ignored (the first one keeps its receipts).
    async fn record_delivery(&self, d: &NewDelivery<'_>) -> StoreResult<()>;

    /// Applies one receipt atomically under the rank rule of [`crate::delivery`]: the state
    /// only moves forward, a final state never changes, a repeat changes nothing.
    async fn apply_receipt(&self, r: &ReceiptUpdate) -> StoreResult<ReceiptOutcome>;

    /// A delivery by its public id.
    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>>;
}

/// Stored form of the headers kept with an idempotent answer (a JSON array of pairs).
fn headers_to_json(headers: &[(String, String)]) -> StoreResult<String> {
    serde_json::to_string(headers)
        .map_err(|e| StoreError::Internal(format!("idempotency headers: {e}")))
}

/// Reads [`headers_to_json`]'s output; `None` (a record without headers) is no headers.
fn headers_from_json(text: Option<&str>) -> StoreResult<Vec<(String, String)>> {
    text.map_or(Ok(Vec::new()), |t| {
        serde_json::from_str(t)
            .map_err(|e| StoreError::Internal(format!("stored idempotency headers: {e}")))
    })
}

/// How long until `t` from `now`, for `Retry-After`: at least one second.
pub fn retry_after(t: SystemTime, now: SystemTime) -> Duration {
    Duration::from_secs(crate::time::secs_until(t, now).max(1))
}
