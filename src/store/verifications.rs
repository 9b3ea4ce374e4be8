//! The phone verification operations: a send records a code under every abuse limit in one
//! transaction, a check decides it in one transaction, and delivery receipts move a send's state
//! forward.

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::time::Duration;

use crate::code::{CodeMac, CodeNonce};
use crate::delivery::{Delivery, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::phone::PhoneNumber;
use crate::quota::{CheckGuard, PumpingState, Refusal, SendGuard};
use crate::session::{Expiry, KeyHash, Session};
use crate::store::StoreResult;

/// What a send asks the store to record, atomically with the resend and attempt rules.
#[derive(Debug, Clone)]
pub struct StartVerification<'a> {
    /// The caller's key (a cookie, or a backend's explicit key): its session is resolved in the
    /// send's own transaction and slid as [`crate::store::SessionStore::touch_session`] slides
    /// it (the result's session says `refreshed`).
    pub key: KeyHash,
    pub phone: &'a PhoneNumber,
    /// A freshly drawn code: its MAC, and the nonce it was derived from (`None` for a test
    /// number's fixed code, which is never kept for a resend).
    pub code_mac: CodeMac,
    pub code_nonce: Option<CodeNonce>,
    /// `same_code` resends: the live code of the verification is kept instead of the fresh one
    /// while it stays valid this long at least (see [`VerificationStore::start_send`]). `None`
    /// always stores the fresh code.
    pub keep_margin: Option<Duration>,
    /// A fresh code's lifetime cap across resends (`verification.max_code_lifetime`).
    pub code_cap: Duration,
    /// Lifetime of the new code.
    pub ttl: Duration,
    /// Minimum time between two sends for the same session and phone.
    pub resend_interval: Duration,
    /// Wrong attempts allowed per verification (shared by all codes sent within it).
    pub max_attempts: u32,
    /// For a key that names no live session (a browser without a cookie, or
    /// with a stale one): a session under this new key, created with the code only when the
    /// send is issued (so a refused send writes no session), with an id the store assigns.
    /// `None` answers [`StartOutcome::NoSession`] instead.
    pub new_session: Option<NewSession>,
}

/// The session a cookieless browser gets with its first accepted send: empty data.
#[derive(Debug, Clone, Copy)]
pub struct NewSession {
    pub key: KeyHash,
    pub expiry: Expiry,
}

/// A live code a `same_code` resend kept: the daemon derives it again from its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptCode {
    pub nonce: CodeNonce,
    /// The lifetime it was given: the configured one, or less when its cap is nearer.
    pub ttl: Duration,
}

/// What [`VerificationStore::start_send`] answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Started {
    pub outcome: StartOutcome,
    /// With [`StartOutcome::Issued`]: the live code kept instead of the fresh one.
    pub kept: Option<KeptCode>,
    /// The caller's session (slid when due), or the one this send created; `None` when there
    /// is none (refused before one was born).
    pub session: Option<Session>,
    /// The session was created by this send.
    pub created: bool,
}

/// What [`VerificationStore::check_guarded`] answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub outcome: CheckOutcome,
    /// The caller's session as resolved (slid when due) or, with an approval, as changed by
    /// it; `None` when no session was found.
    pub session: Option<Session>,
}

/// Outcome of [`VerificationStore::start_send`].
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
    /// The key names no live session and no session was to be created: nothing written.
    NoSession,
}

/// What a check asks the store to decide, atomically.
#[derive(Debug, Clone)]
pub struct CheckVerification<'a> {
    /// The caller's key, resolved and slid in the check's own transaction as for a send.
    pub key: KeyHash,
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

/// Outcome of [`VerificationStore::check_guarded`].
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
    /// The key names no live session: nothing was taken or written (not even a quota).
    NoSession,
}

/// Sends, checks, the pumping breaker and delivery records. Every operation that enforces a
/// limit does it in the transaction that changes the state it guards.
#[async_trait]
pub trait VerificationStore: Send + Sync {
    /// Records a freshly generated code for (session, phone).
    ///
    /// - No row, or the previous verification is over (code expired, or approved): a new
    ///   verification with 0 attempts.
    /// - A live pending code sent less than `resend_interval` ago: `TooSoon`, nothing changes.
    /// - A live pending code older than that: the code is replaced, the attempt count kept.
    /// - A live exhausted verification: `Exhausted` until its `expires_at`.
    ///
    /// The new code expires at `now + ttl`.
    ///
    /// All under the abuse limits of `guard`, in the same transaction. Order: the
    /// verification's own rules (`TooSoon`, `Exhausted`) first, then the pumping breaker
    /// (refusing unless `guard.challenge.on_trip`), then the hard quotas (the fullest refuses),
    /// then the challenge (see [`SendGuard`]: `Refusal::Challenge` unless
    /// `guard.challenge.passed`), then every quota, hard and soft, is incremented — all, or
    /// none when anything refused. A successful send counts towards the breaker of
    /// `guard.pumping`, and trips it when the approvals in its window fall below the minimum
    /// conversion. With `req.new_session`, the session is created only when the code is issued.
    ///
    /// The session of `req.key` is resolved first (and slid as a read slides it, whatever the
    /// outcome). The code recorded is the fresh one of `req`, except that with
    /// `req.keep_margin` a live pending code of the same verification is kept when it is bound
    /// to its nonce, of the current MAC scheme, valid for `keep_margin` more, and has at least
    /// `ttl / 2` left before its cap: its life is then extended to `ttl` but not past the cap,
    /// and [`Started::kept`] names it. A fresh code gets the cap `now + code_cap`. Deciding and
    /// writing in one transaction, a kept code is always the live code of the verification it
    /// is sent for: no code serves two verifications.
    async fn start_send(
        &self,
        req: &StartVerification<'_>,
        guard: &SendGuard,
    ) -> StoreResult<Started>;

    /// Undoes a send whose delivery failed, in one transaction: lifts its resend cooldown so
    /// the person can retry at once (only while the stored MAC is still `code_mac`: a later
    /// send wins), and gives back what [`VerificationStore::start_send`] took under `guard` —
    /// one unit of each quota whose window is still running, and the send's count in the breaker
    /// window of `guard.pumping` (closing the breaker again if that send tripped it). No SMS went
    /// out, so none is charged. `guard` must be the one the send passed (soft quotas are given back too).
    async fn abandon_send(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        code_mac: &CodeMac,
        guard: &SendGuard,
    ) -> StoreResult<()>;

    /// Decides a check atomically: right code → approved (once, ever) and the session updated
    /// with [`Approval`] in the same transaction; wrong code → one attempt used, and at
    /// `max_attempts` the code dies. A code that is expired, exhausted or already used never
    /// approves.
    ///
    /// All under the abuse limits of `guard`, in the same transaction: the quotas of
    /// `guard` are taken first (refusing costs no attempt); a session with a live code for a
    /// number locked by `guard.failures` is refused; a wrong code counts towards the number's
    /// failures (locking it for `lockout` at the maximum); an approval counts towards the
    /// breaker of `guard.pumping`. Every path past the quotas writes the number's failure
    /// counter the same number of times whether or not a code exists, and whatever the number's
    /// history elsewhere (never seen, failures, locked); a wrong code adds only the attempt on
    /// the caller's own verification row.
    ///
    /// The key is resolved (and its session slid when due) first; one that names no live
    /// session answers [`CheckOutcome::NoSession`] before any quota is taken. A stored code of
    /// an older MAC scheme ([`crate::code::MAC_SCHEME`]) answers `Expired` and uses no attempt.
    async fn check_guarded(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
    ) -> StoreResult<Checked>;

    /// Every country's breaker window that has not ended, ordered by country.
    async fn pumping_states(&self) -> StoreResult<Vec<PumpingState>>;

    /// Closes the breaker of `country` and starts a new window. False when there was none.
    async fn pumping_reset(&self, country: &str) -> StoreResult<bool>;

    /// Records a send a gateway accepted, in state `queued`. A second record with the same
    /// provider and message id is ignored (the first one keeps its receipts).
    async fn record_delivery(&self, d: &NewDelivery<'_>) -> StoreResult<()>;

    /// Applies one receipt atomically under the rank rule of [`crate::delivery`]: the state
    /// only moves forward, a final state never changes, a repeat changes nothing.
    async fn apply_receipt(&self, r: &ReceiptUpdate) -> StoreResult<ReceiptOutcome>;

    /// A delivery by its public id.
    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>>;
}
