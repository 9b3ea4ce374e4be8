//! The delivery loop: claims due events from the outbox, posts each to the endpoints that want
//! it and do not have it yet, and records the outcome. At-least-once: an event leaves the
//! outbox only after every endpoint answered 2xx, so a crash at any point means a repeat (with
//! the same `webhook-id`), never a loss.

use futures_util::future::join_all;
use reqwest::header::CONTENT_TYPE;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

use super::{EventKind, EventsConfig};
use crate::metrics::Metrics;
use crate::store::events::{EventStore, Failure, OutboxEvent};

/// Events claimed per round; a full round is followed by the next without pausing.
const BATCH: u32 = 32;

/// How long one keepalive keeps the triggers recording, and how often it is renewed. The
/// margin covers a worker that is slow or briefly cut off from the database: events keep being
/// recorded, to be delivered when it is back.
const RECORD_FOR: Duration = Duration::from_secs(600);
const KEEPALIVE_EVERY: Duration = Duration::from_secs(60);

struct Endpoint {
    name: String,
    url: reqwest::Url,
    key: Vec<u8>,
    config: super::EndpointConfig,
}

/// Everything the loop needs, built once from the configuration.
pub struct Worker {
    store: Arc<dyn EventStore>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    endpoints: Vec<Endpoint>,
    retry_for: Duration,
    first_retry: Duration,
    max_retry_interval: Duration,
    poll: Duration,
    /// Longer than a round can take (its POSTs run side by side, each within the timeout),
    /// so a claim never runs out while its worker is still at it.
    lease: Duration,
    max_attempts: u32,
}

impl Worker {
    /// `None` when no endpoint is configured. The configuration was validated at load.
    pub fn new(
        cfg: &EventsConfig,
        max_attempts: u32,
        store: Arc<dyn EventStore>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Worker>> {
        if cfg.endpoints.is_empty() {
            return Ok(None);
        }
        let mut endpoints = Vec::new();
        for (name, e) in &cfg.endpoints {
            let bad = |what: &str| anyhow::anyhow!("events.endpoints.{name}.{what}");
            endpoints.push(Endpoint {
                name: name.clone(),
                url: reqwest::Url::parse(&e.url).map_err(|_| bad("url"))?,
                key: crate::standard_webhooks::key_bytes(&e.secret).ok_or_else(|| bad("secret"))?,
                config: e.clone(),
            });
        }
        let timeout = cfg.timeout.duration();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("verifyd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("events: cannot build the HTTP client: {e}"))?;
        Ok(Some(Worker {
            store,
            metrics,
            http,
            endpoints,
            retry_for: Duration::from_secs(cfg.retry_for),
            first_retry: cfg.first_retry.duration(),
            max_retry_interval: Duration::from_secs(cfg.max_retry_interval),
            poll: cfg.poll_interval.duration(),
            lease: timeout * 2 + Duration::from_secs(5),
            max_attempts,
        }))
    }

    /// Turns recording on before the daemon takes requests, so that its first changes already
    /// have events. A store that is down now is retried by the loop.
    pub async fn start_recording(&self) {
        if let Err(e) = self.store.events_keepalive(RECORD_FOR).await {
            tracing::warn!(error = %e, "events: cannot turn recording on yet; will retry");
        }
    }

    /// Delivers until `stop`; the round in progress is finished first (bounded by the POST
    /// timeout), and anything it did not settle is retried when its lease runs out.
    pub async fn run(self, stop: CancellationToken) {
        let mut kept_alive: Option<Instant> = None;
        while !stop.is_cancelled() {
            if kept_alive.is_none_or(|t| t.elapsed() >= KEEPALIVE_EVERY) {
                kept_alive = match self.store.events_keepalive(RECORD_FOR).await {
                    Ok(()) => Some(Instant::now()),
                    Err(e) => {
                        tracing::warn!(error = %e, "events: cannot renew recording");
                        None
                    }
                };
            }
            let full = match self.store.claim_events(BATCH, self.lease).await {
                Ok(events) => {
                    let full = events.len() == BATCH as usize;
                    join_all(events.into_iter().map(|e| self.deliver(e))).await;
                    full
                }
                Err(e) => {
                    tracing::warn!(error = %e, "events: cannot claim events; will retry");
                    false
                }
            };
            if let Ok(counts) = self.store.outbox_counts().await {
                self.metrics.events.outbox(counts.pending, counts.dead);
            }
            if full {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
        tracing::debug!("events worker stopped");
    }

    async fn deliver(&self, event: OutboxEvent) {
        let kind = EventKind::parse(&event.kind);
        let targets: Vec<&Endpoint> = self
            .endpoints
            .iter()
            // A type this version does not know (written by a newer daemon) still reaches the
            // endpoints that take every type, rather than being dropped.
            .filter(|e| {
                kind.map_or(e.config.events.is_none(), |k| e.config.wants(k))
                    && !event.done.contains(&e.name)
            })
            .collect();
        let results = join_all(targets.iter().map(|e| self.post(e, &event))).await;
        let mut done = event.done.clone();
        let mut failed = Vec::new();
        for (endpoint, result) in targets.iter().zip(results) {
            match result {
                Ok(()) => {
                    let latency = SystemTime::now()
                        .duration_since(event.created_at)
                        .unwrap_or_default();
                    self.metrics.events.delivered(&endpoint.name, latency);
                    done.push(endpoint.name.clone());
                }
                Err(why) => failed.push((endpoint.name.as_str(), why)),
            }
        }
        let outcome = if failed.is_empty() {
            self.store.event_delivered(event.seq).await
        } else {
            let left = self.retry_for.saturating_sub(event.age);
            let failure = if left.is_zero() {
                Failure::Dead
            } else {
                Failure::RetryAfter(self.backoff(event.attempts).min(left))
            };
            let error = failed
                .iter()
                .map(|(name, why)| format!("{name}: {why}"))
                .collect::<Vec<_>>()
                .join("; ");
            for (name, _) in &failed {
                match failure {
                    Failure::Dead => self.metrics.events.dead(name),
                    Failure::RetryAfter(_) => self.metrics.events.retried(name),
                }
            }
            match failure {
                Failure::Dead => tracing::warn!(id = %event.id, kind = %event.kind, %error,
                    "event is dead after its retry period; `verifyd events redrive` sends it again"),
                Failure::RetryAfter(after) => tracing::info!(id = %event.id, kind = %event.kind,
                    %error, retry_in_ms = after.as_millis() as u64, "event delivery failed"),
            }
            self.store
                .event_failed(event.seq, &done, failure, &error)
                .await
        };
        if let Err(e) = outcome {
            // The lease runs out and the event is tried again: a repeat, not a loss.
            tracing::warn!(id = %event.id, error = %e, "events: cannot record a delivery outcome");
        }
    }

    /// One signed POST; the error says why in words fit for `verifyd events` (no URL, which
    /// may hold a token).
    async fn post(&self, endpoint: &Endpoint, event: &OutboxEvent) -> Result<(), String> {
        let body = super::body(event, endpoint.config.full_numbers, self.max_attempts);
        // A fresh timestamp per attempt: receivers refuse old ones (5 minutes by default).
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let signature = crate::standard_webhooks::signature(&endpoint.key, &event.id, now, &body);
        let sent = self
            .http
            .post(endpoint.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &event.id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
            Err(e) if e.is_timeout() => Err("no answer in time".into()),
            Err(e) => Err(format!(
                "network error: {}",
                crate::provider::error_chain(&e.without_url())
            )),
        }
    }

    /// `first_retry`, doubling per attempt up to `max_retry_interval`, each spread by up to a
    /// quarter either way so that events that failed together do not retry together.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self
            .first_retry
            .saturating_mul(2u32.saturating_pow(attempts.min(30)))
            .min(self.max_retry_interval);
        let spread = f64::from(getrandom::u32().unwrap_or(0)) / f64::from(u32::MAX);
        base.mul_f64(0.75 + spread / 2.0)
    }
}
