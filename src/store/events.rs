//! The outbox's side of the store: the triggers of migration 9 write events in the transaction
//! of the change they report; these operations let the webhook worker (crate::events) hand
//! them out, one worker per event at a time, and let the operator see and redrive them.

use async_trait::async_trait;
use serde_json::Value;
use std::time::{Duration, SystemTime};

use crate::store::StoreResult;

/// One event claimed for delivery by [`EventStore::claim_events`].
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The row, for [`EventStore::event_delivered`] and [`EventStore::event_failed`].
    pub seq: i64,
    /// The public id (`webhook-id`).
    pub id: String,
    pub kind: String,
    /// The facts as the trigger wrote them (phone numbers in full).
    pub data: Value,
    pub created_at: SystemTime,
    /// Attempts before this one.
    pub attempts: u32,
    /// Time since the retry period started (creation, or the last redrive).
    pub age: Duration,
    /// Endpoints that already have it.
    pub done: Vec<String>,
}

/// What becomes of an event that some endpoint did not take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Due again after this long.
    RetryAfter(Duration),
    /// The retry period is over: kept for the operator, never retried by itself.
    Dead,
}

/// An event as `verifyd events` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSummary {
    pub id: String,
    pub kind: String,
    pub created_at: SystemTime,
    pub attempts: u32,
    /// `None` for a pending event.
    pub dead_at: Option<SystemTime>,
    pub next_at: SystemTime,
    pub last_error: Option<String>,
}

/// A refused send or check, for [`EventStore::record_refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused<'a> {
    pub session_id: i64,
    /// E.164.
    pub phone: &'a str,
    /// `send` or `check`.
    pub operation: &'a str,
    /// Which limit: a quota's scope (`phone_sends`), `breaker`, `locked`, `challenge`,
    /// `resend_too_soon` or `too_many_attempts`.
    pub limit: &'a str,
    /// The `error` code the client got.
    pub error: &'a str,
}

/// Which dead events `verifyd events redrive` gives a new retry period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    /// One event by its id (pending or dead: a pending one is made due at once).
    Id(String),
    AllDead,
}

/// Counts for the `events_pending` gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub dead: u64,
}

#[async_trait]
pub trait EventStore: Send + Sync {
    /// Keeps the triggers recording for `ttl` from now. Called by daemons with endpoints; when
    /// none has called it for `ttl`, changes record no events.
    async fn events_keepalive(&self, ttl: Duration) -> StoreResult<()>;

    /// Records `verification.refused` when events are being recorded. A refusal changes no
    /// state, so this is a transaction of its own.
    async fn record_refusal(&self, refusal: &Refused<'_>) -> StoreResult<()>;

    /// Up to `limit` due events, oldest due first, each made not due for `lease`: until the
    /// claimer reports back or the lease runs out, no other caller (in any daemon) gets them.
    async fn claim_events(&self, limit: u32, lease: Duration) -> StoreResult<Vec<OutboxEvent>>;

    /// Every endpoint has the event: it is removed.
    async fn event_delivered(&self, seq: i64) -> StoreResult<()>;

    /// Some endpoint did not take the event; `done` are the ones that have it by now.
    async fn event_failed(
        &self,
        seq: i64,
        done: &[String],
        failure: Failure,
        error: &str,
    ) -> StoreResult<()>;

    /// Pending (`dead = false`) or dead events, oldest first, at most `limit`.
    async fn list_events(&self, dead: bool, limit: u32) -> StoreResult<Vec<EventSummary>>;

    /// Makes the chosen events due now with a fresh retry period; returns how many.
    async fn redrive_events(&self, which: &Redrive) -> StoreResult<u64>;

    async fn outbox_counts(&self) -> StoreResult<OutboxCounts>;
}
