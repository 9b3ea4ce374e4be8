//! The background flush: deletes expired sessions, finished verifications and long-dead events
//! on an interval, in bounded batches, one daemon at a time. `verifyd clear-sessions` runs the same sweep once.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, SweepSample};
use crate::store::{Maintenance, StoreResult, SweepReport};

/// One sweep, logged; dead events older than `keep_dead` go too.
pub async fn sweep_once(
    store: &dyn Maintenance,
    batch: u32,
    keep_dead: Duration,
) -> StoreResult<SweepReport> {
    let started = Instant::now();
    let report = store.sweep(batch, keep_dead).await?;
    if report.ran {
        tracing::info!(
            sessions = report.sessions,
            verifications = report.verifications,
            dead_events = report.dead_events,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sweep finished"
        );
    } else {
        tracing::debug!("another daemon is sweeping; skipped");
    }
    Ok(report)
}

/// Sweeps every `interval` until `stop` is cancelled, counting each sweep in `metrics`. A sweep
/// in progress is abandoned at cancellation (each batch is its own statement, so nothing is left
/// half-done).
pub async fn run(
    store: Arc<dyn Maintenance>,
    metrics: Arc<Metrics>,
    interval: Duration,
    batch: u32,
    keep_dead: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            result = sweep_once(store.as_ref(), batch, keep_dead) => match result {
                Ok(report) => metrics.sweep(Ok(SweepSample {
                    ran: report.ran,
                    sessions: report.sessions,
                    verifications: report.verifications,
                    limits: report.limits,
                    dead_events: report.dead_events,
                })),
                Err(e) => {
                    metrics.sweep(Err(()));
                    tracing::warn!(error = %e, "sweep failed; will retry");
                }
            }
        }
    }
    tracing::debug!("sweeper stopped");
}
