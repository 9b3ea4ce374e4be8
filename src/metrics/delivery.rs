//! The delivery-receipt series of `/metrics`, registered into the daemon's one registry:
//! final receipts by provider, country and state, time to delivery, and the receipts that
//! changed nothing (unknown ids, duplicates, stale ones).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Final {
    provider: String,
    country: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Where {
    provider: String,
    country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Ignored {
    provider: String,
    reason: &'static str,
}

fn delivery_histogram() -> Histogram {
    // 1 s … ~4.5 h: handsets answer in seconds, or after coming back into coverage.
    Histogram::new(exponential_buckets(1.0, 2.0, 15))
}

pub struct DeliveryMetrics {
    receipts: Family<Final, Counter>,
    seconds: Family<Where, Histogram, fn() -> Histogram>,
    ignored: Family<Ignored, Counter>,
}

impl DeliveryMetrics {
    pub fn register(r: &mut Registry) -> DeliveryMetrics {
        let m = DeliveryMetrics {
            receipts: Family::default(),
            seconds: Family::new_with_constructor(delivery_histogram),
            ignored: Family::default(),
        };
        r.register(
            "sms_delivery_receipts",
            "Receipts that moved a delivery, by provider instance, calling code and new state",
            m.receipts.clone(),
        );
        r.register_with_unit(
            "sms_time_to_delivery",
            "From the gateway accepting a message to its delivered receipt",
            Unit::Seconds,
            m.seconds.clone(),
        );
        r.register(
            "sms_receipts_ignored",
            "Receipts that changed nothing, by provider and reason (unknown, duplicate, stale)",
            m.ignored.clone(),
        );
        m
    }

    /// A receipt moved a delivery of `provider` to `country` into `state`; `elapsed` since
    /// the send when it is the delivered receipt.
    pub fn moved(
        &self,
        provider: &str,
        country: &str,
        state: &'static str,
        elapsed: Option<Duration>,
    ) {
        self.receipts
            .get_or_create(&Final {
                provider: provider.to_owned(),
                country: country.to_owned(),
                state,
            })
            .inc();
        if let Some(d) = elapsed {
            self.seconds
                .get_or_create(&Where {
                    provider: provider.to_owned(),
                    country: country.to_owned(),
                })
                .observe(d.as_secs_f64());
        }
    }

    /// A receipt from `provider` that changed nothing.
    pub fn ignored(&self, provider: &str, reason: &'static str) {
        self.ignored
            .get_or_create(&Ignored {
                provider: provider.to_owned(),
                reason,
            })
            .inc();
    }
}
