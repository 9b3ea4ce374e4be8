//! Keys that may be used only once: `Idempotency-Key` headers, whose first answer is replayed,
//! and spent challenge solutions, which are refused a second time.

use async_trait::async_trait;
use std::time::{Duration, SystemTime};

use crate::store::{StoreError, StoreResult};

/// Outcome of [`IdempotencyStore::idempotency_begin`].
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
        /// The (name, value) pairs given to [`IdempotencyStore::idempotency_finish`], in order.
        headers: Vec<(String, String)>,
    },
    /// The key was used for a different request.
    Mismatch,
}

/// Records that a client-chosen key was used, shared by all daemons on one database so a retry
/// or a replay that lands on another daemon gets the same answer.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
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
}

/// Stored form of the headers kept with an idempotent answer (a JSON array of pairs).
pub(super) fn headers_to_json(headers: &[(String, String)]) -> StoreResult<String> {
    serde_json::to_string(headers)
        .map_err(|e| StoreError::Internal(format!("idempotency headers: {e}")))
}

/// Reads [`headers_to_json`]'s output; `None` (a record without headers) is no headers.
pub(super) fn headers_from_json(text: Option<&str>) -> StoreResult<Vec<(String, String)>> {
    text.map_or(Ok(Vec::new()), |t| {
        serde_json::from_str(t)
            .map_err(|e| StoreError::Internal(format!("stored idempotency headers: {e}")))
    })
}
