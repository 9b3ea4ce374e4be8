//! The storage boundary: small traits by concern (sessions, verifications, idempotency,
//! maintenance, the events outbox), each with two complete implementations (PostgreSQL and an
//! embedded SQLite file), both held to the same conformance suite in `tests/store/conformance.rs`.
//!
//! Every operation is one atomic statement or one transaction, so racing requests — in one
//! daemon or in several sharing a database — get the answer a single server would give.

use std::time::{Duration, SystemTime};

pub mod events;
pub mod idempotency;
pub mod maintenance;
pub mod pg_hosts;
pub mod pg_tls;
pub mod postgres;
pub mod sessions;
pub mod sqlite;
pub mod verifications;

pub use events::EventStore;
pub use idempotency::{IdempotencyBegin, IdempotencyStore};
pub use maintenance::{Maintenance, PoolStatus, SweepReport};
pub use sessions::{DeleteOutcome, ReplaceOutcome, SessionStore};
pub use verifications::{
    Approval, CheckOutcome, CheckVerification, Checked, KeptCode, NewSession, StartOutcome,
    StartVerification, Started, VerificationStore,
};

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
    /// The session a write belongs under was deleted meanwhile (a flush racing a send, say):
    /// every foreign key of the schema points at `sessions`, so a broken one means this.
    #[error("the session is gone")]
    SessionGone,
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything verifyd keeps, as one object the daemon holds (`Arc<dyn Store>`). Code that needs
/// only one concern should ask for that trait instead.
pub trait Store:
    SessionStore + VerificationStore + IdempotencyStore + Maintenance + EventStore + 'static
{
}

impl<T> Store for T where
    T: SessionStore + VerificationStore + IdempotencyStore + Maintenance + EventStore + 'static
{
}

/// How long until `t` from `now`, for `Retry-After`: at least one second.
pub fn retry_after(t: SystemTime, now: SystemTime) -> Duration {
    Duration::from_secs(crate::time::secs_until(t, now).max(1))
}
