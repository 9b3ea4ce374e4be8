//! The webhook series of `/metrics`, registered into the daemon's one registry: events waiting
//! in the outbox, deliveries, retries and dead events per endpoint, and the time from an
//! event's commit to its endpoint's 2xx.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Endpoint {
    endpoint: String,
}

fn latency_histogram() -> Histogram {
    // 10 ms … ~11 h: a receiver that is up answers in milliseconds; one that was down gets
    // the event hours later, after the backoff.
    Histogram::new(exponential_buckets(0.01, 4.0, 12))
}

pub struct EventMetrics {
    pending: Gauge,
    dead_now: Gauge,
    delivered: Family<Endpoint, Counter>,
    retried: Family<Endpoint, Counter>,
    dead: Family<Endpoint, Counter>,
    latency: Family<Endpoint, Histogram, fn() -> Histogram>,
}

impl EventMetrics {
    pub fn register(r: &mut Registry) -> EventMetrics {
        let m = EventMetrics {
            pending: Gauge::default(),
            dead_now: Gauge::default(),
            delivered: Family::default(),
            retried: Family::default(),
            dead: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        r.register(
            "events_pending",
            "Events in the outbox waiting for delivery (all daemons on this store)",
            m.pending.clone(),
        );
        r.register(
            "events_dead_stored",
            "Dead events kept in the outbox for `verifyd events redrive`",
            m.dead_now.clone(),
        );
        r.register(
            "events_delivered",
            "Events an endpoint answered 2xx to, by endpoint",
            m.delivered.clone(),
        );
        r.register(
            "events_retried",
            "Failed deliveries scheduled for another attempt, by endpoint",
            m.retried.clone(),
        );
        r.register(
            "events_dead",
            "Events given up on after the retry period, by endpoint",
            m.dead.clone(),
        );
        r.register_with_unit(
            "event_delivery_latency",
            "From the event's commit to the endpoint's 2xx, by endpoint",
            Unit::Seconds,
            m.latency.clone(),
        );
        m
    }

    pub fn outbox(&self, pending: u64, dead: u64) {
        self.pending.set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.dead_now.set(i64::try_from(dead).unwrap_or(i64::MAX));
    }

    pub fn delivered(&self, endpoint: &str, latency: Duration) {
        let l = Endpoint {
            endpoint: endpoint.to_owned(),
        };
        self.delivered.get_or_create(&l).inc();
        self.latency
            .get_or_create(&l)
            .observe(latency.as_secs_f64());
    }

    pub fn retried(&self, endpoint: &str) {
        self.retried
            .get_or_create(&Endpoint {
                endpoint: endpoint.to_owned(),
            })
            .inc();
    }

    pub fn dead(&self, endpoint: &str) {
        self.dead
            .get_or_create(&Endpoint {
                endpoint: endpoint.to_owned(),
            })
            .inc();
    }
}
