//! A circuit breaker per provider instance: after `failures` consecutive transient failures the
//! router skips the provider for `cooldown`, then lets one trial send through (half-open). A
//! provider that is down then costs one timeout per cool-down instead of one per request.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// `breaker = { failures = 5, cooldown = 30 }` inside a provider table.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker; 0 never opens it.
    pub failures: u32,
    /// Seconds an open breaker skips the provider before one trial send.
    pub cooldown: u64,
    /// Opens the breaker when at least this percentage of the delivery receipts of the last
    /// `receipt_window` seconds say `failed`; 0 never does. Catches a gateway that accepts
    /// every message and delivers none.
    pub receipt_failure_percent: u8,
    /// Seconds of final receipts the ratio looks at.
    pub receipt_window: u64,
    /// Final receipts the window must hold before the ratio counts: a few unlucky numbers
    /// must not take a provider out.
    pub receipt_min_samples: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: 30,
            receipt_failure_percent: 0,
            receipt_window: 600,
            receipt_min_samples: 20,
        }
    }
}

/// What `/readyz` (and later `/metrics`) reports for one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Sends go through.
    Closed,
    /// Skipped until the cool-down ends.
    Open,
    /// The cool-down ended: the next send (only one at a time) is a trial.
    HalfOpen,
}

impl BreakerState {
    /// The state's label in `/metrics`, where every state is listed (in declaration order).
    pub fn as_str(self) -> &'static str {
        crate::metrics::BREAKER_STATES[self as usize]
    }
}

/// How one attempt on the provider ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered for the message (delivered, or refused the recipient).
    Healthy,
    /// Timeout, network, 5xx, throttling.
    Transient,
    /// A configuration error: the provider is reachable but this says nothing about its health.
    Neutral,
}

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    /// `trial`: a trial send is in flight; `until` is when the next one may start, so a trial
    /// whose future was dropped (the request timed out) does not block the provider forever.
    Open {
        until: Instant,
        trial: bool,
    },
}

/// One provider's breaker. A std `Mutex` because it is never held across an `.await`.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    /// Final receipts of the window: when each arrived and whether it said `failed`.
    receipts: Mutex<VecDeque<(Instant, bool)>>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
            receipts: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts one final delivery receipt; opens the breaker when the window's failure ratio
    /// reaches `receipt_failure_percent` over at least `receipt_min_samples` receipts. The
    /// window starts empty again after that, so the provider is judged afresh after its trial.
    pub fn record_receipt(&self, failed: bool) {
        let c = &self.config;
        if c.receipt_failure_percent == 0 {
            return;
        }
        let now = Instant::now();
        let window = Duration::from_secs(c.receipt_window);
        let mut receipts = self.receipts.lock().unwrap_or_else(|p| p.into_inner());
        receipts.push_back((now, failed));
        while receipts
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
        {
            receipts.pop_front();
        }
        // Bounded memory whatever the receipt rate: only the proportion matters.
        while receipts.len() > 10_000 {
            receipts.pop_front();
        }
        let total = receipts.len() as u64;
        let failures = receipts.iter().filter(|(_, f)| *f).count() as u64;
        if total >= u64::from(c.receipt_min_samples.max(1))
            && failures * 100 >= total * u64::from(c.receipt_failure_percent)
        {
            receipts.clear();
            drop(receipts);
            *self.lock() = Inner::Open {
                until: now + self.cooldown(),
                trial: false,
            };
        }
    }

    fn cooldown(&self) -> Duration {
        Duration::from_secs(self.config.cooldown)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The state is a plain value that every writer leaves consistent: a panic elsewhere
        // cannot have left it half-updated.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { trial: true, .. } => BreakerState::HalfOpen,
            Inner::Open { until, .. } if Instant::now() >= until => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
        }
    }

    /// May a send go to this provider now? In half-open state only the first caller gets `true`.
    pub fn try_acquire(&self) -> bool {
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => true,
            Inner::Open { until, .. } if Instant::now() >= until => {
                *inner = Inner::Open {
                    until: Instant::now() + self.cooldown(),
                    trial: true,
                };
                true
            }
            Inner::Open { .. } => false,
        }
    }

    /// Records how an acquired send ended.
    pub fn record(&self, outcome: Outcome) {
        let mut inner = self.lock();
        *inner = match (&*inner, outcome) {
            (_, Outcome::Healthy) => Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, Outcome::Transient) => {
                let failures = failures + 1;
                if self.config.failures > 0 && failures >= self.config.failures {
                    Inner::Open {
                        until: Instant::now() + self.cooldown(),
                        trial: false,
                    }
                } else {
                    Inner::Closed { failures }
                }
            }
            (Inner::Open { .. }, Outcome::Transient) => Inner::Open {
                until: Instant::now() + self.cooldown(),
                trial: false,
            },
            (Inner::Closed { failures }, Outcome::Neutral) => Inner::Closed {
                failures: *failures,
            },
            // A trial that ended neither way: the next trial comes after the cool-down.
            (Inner::Open { until, .. }, Outcome::Neutral) => Inner::Open {
                until: *until,
                trial: false,
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_labels_are_the_names_readyz_shows() {
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    fn breaker(failures: u32, cooldown: u64) -> Breaker {
        Breaker::new(BreakerConfig {
            failures,
            cooldown,
            ..BreakerConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn receipt_failure_ratio_opens_after_the_minimum_sample() {
        let b = Breaker::new(BreakerConfig {
            receipt_failure_percent: 50,
            receipt_window: 60,
            receipt_min_samples: 4,
            ..BreakerConfig::default()
        });
        // Three failures of three: below the minimum sample, the provider stays in.
        for _ in 0..3 {
            b.record_receipt(true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_receipt(false);
        assert_eq!(b.state(), BreakerState::Open, "3 of 4 failed");
        // After the cool-down a trial goes through and a healthy send closes it again.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(b.try_acquire());
        b.record(Outcome::Healthy);
        assert_eq!(b.state(), BreakerState::Closed);
        // Old receipts leave the window: failures spread thinly over time do not add up.
        for _ in 0..3 {
            b.record_receipt(true);
            tokio::time::advance(Duration::from_secs(61)).await;
        }
        b.record_receipt(false);
        assert_eq!(b.state(), BreakerState::Closed);
        // Mostly delivered: stays closed however many receipts arrive.
        for i in 0..100 {
            b.record_receipt(i % 3 == 0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn receipt_ratio_is_off_by_default() {
        let b = breaker(5, 30);
        for _ in 0..100 {
            b.record_receipt(true);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_k_consecutive_transient_failures() {
        let b = breaker(3, 30);
        for _ in 0..2 {
            assert!(b.try_acquire());
            b.record(Outcome::Transient);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // A success in between starts the count again.
        b.record(Outcome::Healthy);
        for _ in 0..2 {
            b.record(Outcome::Transient);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(Outcome::Transient);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_cooldown_lets_one_trial_through() {
        let b = breaker(1, 30);
        b.record(Outcome::Transient);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.try_acquire());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.try_acquire(), "the first caller gets the trial");
        assert!(!b.try_acquire(), "only one trial at a time");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record(Outcome::Healthy);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_reopens_for_a_full_cooldown() {
        let b = breaker(2, 10);
        b.record(Outcome::Transient);
        b.record(Outcome::Transient);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_acquire());
        tokio::time::advance(Duration::from_secs(4)).await;
        b.record(Outcome::Transient);
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!b.try_acquire());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(b.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_trial_does_not_block_forever() {
        let b = breaker(1, 5);
        b.record(Outcome::Transient);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.try_acquire());
        // The trial's future is dropped: nothing is recorded.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.try_acquire(), "another trial after one more cool-down");
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_neither_count_nor_reset() {
        let b = breaker(2, 5);
        b.record(Outcome::Transient);
        b.record(Outcome::Neutral);
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(Outcome::Transient);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_failures_never_opens() {
        let b = breaker(0, 5);
        for _ in 0..100 {
            b.record(Outcome::Transient);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
