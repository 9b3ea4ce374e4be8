//! Prometheus metrics: one registry per [`App`](crate::app::App) (no global statics, so every
//! test daemon counts only its own traffic), incremented where each event happens and encoded
//! in the OpenMetrics text format for `GET /metrics` on the `metrics.listen` address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

pub mod delivery;
pub mod events;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CountryLabels {
    country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SmsLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BreakerLabels {
    provider: String,
    state: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every circuit-breaker state's label, so that the current one reads 1 and the others 0
/// (`provider::breaker` checks that its states are these).
pub const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// One background sweep that ran or was skipped, as the store reported it.
#[derive(Debug, Clone, Copy, Default)]
pub struct SweepSample {
    /// False when another daemon held the sweep lock.
    pub ran: bool,
    pub sessions: u64,
    pub verifications: u64,
    pub limits: u64,
    pub dead_events: u64,
}

/// The store's connection pool at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct PoolSample {
    pub in_use: usize,
    pub idle: usize,
    pub waiting: usize,
}

/// One country's SMS-pumping window at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct PumpingSample<'a> {
    pub country: &'a str,
    pub sends: u32,
    pub approvals: u32,
    pub tripped: bool,
}

/// Every metric verifyd exports. Methods are named after the event they record.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    verifications_started: Counter,
    checks: Family<OutcomeLabels, Counter>,
    sms: Family<SmsLabels, Counter>,
    provider_seconds: Histograms<ProviderLabels>,
    quota_refusals: Family<ReasonLabels, Counter>,
    challenges: Family<OutcomeLabels, Counter>,
    sessions_created: Counter,
    sessions_flushed: Counter,
    pool: Family<StateLabels, Gauge>,
    pool_waiting: Gauge,
    store_round_trips: Counter,
    sweeps: Family<OutcomeLabels, Counter>,
    swept_rows: Family<KindLabels, Counter>,
    breakers: Family<BreakerLabels, Gauge>,
    pumping_tripped: Family<CountryLabels, Gauge>,
    pumping_sends: Family<CountryLabels, Gauge>,
    pumping_approvals: Family<CountryLabels, Gauge>,
    /// Delivery receipts ([`delivery`]).
    pub delivery: delivery::DeliveryMetrics,
    /// Webhook events ([`events`]).
    pub events: events::EventMetrics,
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s: store round trips at the bottom, slow SMS gateways at the top.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("verifyd");
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            verifications_started: Counter::default(),
            checks: Family::default(),
            sms: Family::default(),
            provider_seconds: Family::new_with_constructor(latency_histogram),
            quota_refusals: Family::default(),
            challenges: Family::default(),
            sessions_created: Counter::default(),
            sessions_flushed: Counter::default(),
            pool: Family::default(),
            pool_waiting: Gauge::default(),
            store_round_trips: Counter::default(),
            sweeps: Family::default(),
            swept_rows: Family::default(),
            breakers: Family::default(),
            pumping_tripped: Family::default(),
            pumping_sends: Family::default(),
            pumping_approvals: Family::default(),
            delivery: delivery::DeliveryMetrics::register(&mut r),
            events: events::EventMetrics::register(&mut r),
            registry: Registry::default(),
        };
        r.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            m.requests.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "Time from request to response, by route template",
            Unit::Seconds,
            m.request_seconds.clone(),
        );
        r.register(
            "verifications_started",
            "Codes issued (each send or resend the store accepted)",
            m.verifications_started.clone(),
        );
        r.register(
            "verification_checks",
            "Code checks by outcome: approved, wrong, expired, exhausted, not_found",
            m.checks.clone(),
        );
        r.register(
            "sms_sent",
            "Messages handed to a provider, by provider and outcome \
             (ok, recipient, rate_limited, configuration, transient)",
            m.sms.clone(),
        );
        r.register_with_unit(
            "provider_request_duration",
            "Time one provider took to accept or refuse a message, retries included",
            Unit::Seconds,
            m.provider_seconds.clone(),
        );
        r.register(
            "quota_refusals",
            "Sends or checks refused by a rate rule, by reason (the 429 error code)",
            m.quota_refusals.clone(),
        );
        r.register(
            "challenge_solutions",
            "Challenge solutions carried by sends, by outcome (passed, invalid, unavailable)",
            m.challenges.clone(),
        );
        r.register(
            "sessions_created",
            "Sessions created (API and browsers' first send)",
            m.sessions_created.clone(),
        );
        r.register(
            "sessions_flushed",
            "Sessions deleted through the flush API",
            m.sessions_flushed.clone(),
        );
        r.register(
            "store_pool_connections",
            "Database pool connections by state (in_use, idle); PostgreSQL only",
            m.pool.clone(),
        );
        r.register(
            "store_pool_waiting",
            "Requests waiting for a pooled database connection; PostgreSQL only",
            m.pool_waiting.clone(),
        );
        r.register(
            "store_round_trips",
            "Times this daemon went to its store (PostgreSQL: connection checkouts; SQLite: transactions); sampled at scrape time",
            m.store_round_trips.clone(),
        );
        r.register(
            "pumping_breaker_tripped",
            "1 while the SMS-pumping breaker refuses sends to a calling code; sampled at scrape time",
            m.pumping_tripped.clone(),
        );
        r.register(
            "pumping_window_sends",
            "Sends to a calling code in the breaker's current window; sampled at scrape time",
            m.pumping_sends.clone(),
        );
        r.register(
            "pumping_window_approvals",
            "Approvals for a calling code in the breaker's current window; sampled at scrape time",
            m.pumping_approvals.clone(),
        );
        r.register(
            "sweeper_runs",
            "Background sweeps by outcome (ok, skipped: another daemon held the lock, error)",
            m.sweeps.clone(),
        );
        r.register(
            "sweeper_deleted_rows",
            "Rows the sweeper deleted, by kind (sessions, verifications, limits, dead_events)",
            m.swept_rows.clone(),
        );
        r.register(
            "provider_circuit_state",
            "1 for each provider's current circuit-breaker state, 0 for the others",
            m.breakers.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// One answered HTTP request (`route` is the route table's template, `?` when nothing
    /// matched, never the request's own path). Every label takes one of a few known values
    /// whatever the client sent: a label per unknown method, path or status would let anyone
    /// grow the registry (and each scrape) without bound.
    pub fn request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route: route.to_owned(),
                status: status_label(status),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The store accepted a new code.
    pub fn verification_started(&self) {
        self.verifications_started.inc();
    }

    /// A check was decided (`approved`, `wrong`, `expired`, `exhausted`, `not_found`).
    pub fn verification_checked(&self, outcome: &'static str) {
        self.checks.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// One send through `provider` ended with `outcome` after `elapsed`.
    pub fn sms(&self, provider: &str, outcome: &'static str, elapsed: Duration) {
        self.sms
            .get_or_create(&SmsLabels {
                provider: provider.to_owned(),
                outcome,
            })
            .inc();
        self.provider_seconds
            .get_or_create(&ProviderLabels {
                provider: provider.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A send or check refused by a rate rule; `reason` is the stable error code of the 429
    /// (`resend_too_soon`, `too_many_attempts`, and the quota codes of the abuse protection).
    pub fn quota_refused(&self, reason: &str) {
        self.quota_refusals
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// A send carried a challenge solution: `passed`, `invalid` (forged, wrong, expired,
    /// replayed) or `unavailable` (the CAPTCHA provider could not be asked).
    pub fn challenge_solution(&self, outcome: &'static str) {
        self.challenges
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn session_created(&self) {
        self.sessions_created.inc();
    }

    pub fn session_flushed(&self) {
        self.sessions_flushed.inc();
    }

    /// One background sweep; `Err(())` when it failed.
    pub fn sweep(&self, result: Result<SweepSample, ()>) {
        let outcome = match result {
            Ok(r) if r.ran => "ok",
            Ok(_) => "skipped",
            Err(()) => "error",
        };
        self.sweeps.get_or_create(&OutcomeLabels { outcome }).inc();
        if let Ok(r) = result {
            self.swept_rows
                .get_or_create(&KindLabels { kind: "sessions" })
                .inc_by(r.sessions);
            self.swept_rows
                .get_or_create(&KindLabels {
                    kind: "verifications",
                })
                .inc_by(r.verifications);
            self.swept_rows
                .get_or_create(&KindLabels { kind: "limits" })
                .inc_by(r.limits);
            self.swept_rows
                .get_or_create(&KindLabels {
                    kind: "dead_events",
                })
                .inc_by(r.dead_events);
        }
    }

    /// Replaces the reported circuit-breaker states: one `(provider name, state)` per provider.
    /// The hook for provider failover: call it whenever a breaker changes state.
    /// States are labels from [`BREAKER_STATES`].
    pub fn set_provider_states<'a>(&self, states: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (provider, current) in states {
            for s in BREAKER_STATES {
                self.breakers
                    .get_or_create(&BreakerLabels {
                        provider: provider.to_owned(),
                        state: s,
                    })
                    .set(i64::from(s == current));
            }
        }
    }

    /// The store's count of round trips so far, sampled at scrape time: the counter catches up.
    pub fn store_round_trips(&self, total: u64) {
        let seen = self.store_round_trips.get();
        if total > seen {
            self.store_round_trips.inc_by(total - seen);
        }
    }

    /// The text for `/metrics`; `pool` is sampled by the caller at scrape time.
    pub fn render<'a>(
        &self,
        pool: Option<PoolSample>,
        pumping: impl IntoIterator<Item = PumpingSample<'a>>,
    ) -> String {
        // Countries whose window ended drop out of the store's answer: start from nothing.
        self.pumping_tripped.clear();
        self.pumping_sends.clear();
        self.pumping_approvals.clear();
        for p in pumping {
            let labels = CountryLabels {
                country: p.country.to_owned(),
            };
            self.pumping_tripped
                .get_or_create(&labels)
                .set(i64::from(p.tripped));
            self.pumping_sends
                .get_or_create(&labels)
                .set(i64::from(p.sends));
            self.pumping_approvals
                .get_or_create(&labels)
                .set(i64::from(p.approvals));
        }
        if let Some(p) = pool {
            let gauge = |state| self.pool.get_or_create(&StateLabels { state }).clone();
            gauge("in_use").set(saturating_i64(p.in_use));
            gauge("idle").set(saturating_i64(p.idle));
            self.pool_waiting.set(saturating_i64(p.waiting));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Methods counted under their own name; any other is `other`.
const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("other")
}

/// Valid HTTP statuses keep their number; anything outside 100..=599 (which hyper would not
/// send anyway) is counted as 0 rather than as a label of its own.
fn status_label(status: u16) -> u16 {
    if (100..=599).contains(&status) {
        status
    } else {
        0
    }
}

fn saturating_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_text() {
        let m = Metrics::new();
        m.request("POST", "/v1/verifications", 202, Duration::from_millis(3));
        m.verification_checked("approved");
        m.quota_refused("resend_too_soon");
        m.sweep(Ok(SweepSample {
            sessions: 4,
            verifications: 1,
            limits: 2,
            dead_events: 3,
            ran: true,
        }));
        let pumping = [PumpingSample {
            country: "+86",
            sends: 60,
            approvals: 3,
            tripped: true,
        }];
        let text = m.render(
            Some(PoolSample {
                in_use: 2,
                idle: 3,
                waiting: 1,
            }),
            pumping,
        );
        for line in [
            "verifyd_http_requests_total{method=\"POST\",route=\"/v1/verifications\",status=\"202\"} 1",
            "verifyd_http_request_duration_seconds_count{route=\"/v1/verifications\"} 1",
            "verifyd_verification_checks_total{outcome=\"approved\"} 1",
            "verifyd_quota_refusals_total{reason=\"resend_too_soon\"} 1",
            "verifyd_sweeper_runs_total{outcome=\"ok\"} 1",
            "verifyd_sweeper_deleted_rows_total{kind=\"sessions\"} 4",
            "verifyd_sweeper_deleted_rows_total{kind=\"limits\"} 2",
            "verifyd_sweeper_deleted_rows_total{kind=\"dead_events\"} 3",
            "verifyd_pumping_breaker_tripped{country=\"+86\"} 1",
            "verifyd_pumping_window_sends{country=\"+86\"} 60",
            "verifyd_store_pool_connections{state=\"in_use\"} 2",
            "verifyd_store_pool_waiting 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn request_labels_take_known_values_only() {
        let m = Metrics::new();
        for n in 0..500 {
            m.request(
                &format!("X{n}{}", "Y".repeat(4000)),
                "?",
                405,
                Duration::ZERO,
            );
        }
        m.request("get", "?", 404, Duration::ZERO);
        m.request("GET", "/healthz", 200, Duration::ZERO);
        let text = m.render(None, []);
        let mut series: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("verifyd_http_requests_total"))
            .collect();
        series.sort_unstable();
        assert_eq!(
            series,
            [
                "verifyd_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1",
                "verifyd_http_requests_total{method=\"other\",route=\"?\",status=\"404\"} 1",
                "verifyd_http_requests_total{method=\"other\",route=\"?\",status=\"405\"} 500",
            ],
            "{text}"
        );
        assert!(text.len() < 8192, "{} bytes", text.len());
    }

    #[test]
    fn breaker_states_are_one_hot() {
        let m = Metrics::new();
        m.set_provider_states([("aliyun", "open")]);
        m.set_provider_states([("aliyun", "closed")]);
        let text = m.render(None, []);
        let value = |state: &str| {
            let prefix =
                format!("verifyd_provider_circuit_state{{provider=\"aliyun\",state=\"{state}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {state} line in\n{text}"))
        };
        assert_eq!(value("closed"), "1");
        assert_eq!(value("open"), "0");
        assert_eq!(value("half_open"), "0");
    }
}
