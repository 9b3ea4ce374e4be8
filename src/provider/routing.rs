//! The router in front of the provider instances: picks the route by longest E.164 prefix, then
//! tries its providers in order, each under its own timeout and circuit breaker. Transient and
//! configuration failures move on to the next provider; a recipient error stops, because every
//! gateway would refuse that number the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::breaker::{Breaker, BreakerConfig, BreakerState, Outcome};
use super::{OutgoingCode, Provider, ProviderError, Receipt};
use crate::phone::PhoneNumber;

mod key;

pub use key::RouteKey;

/// One provider instance as the router needs it.
pub struct Instance {
    pub name: String,
    pub provider: Arc<dyn Provider>,
    /// Cap on one whole send through this provider, its own retries included.
    pub timeout: Duration,
    pub breaker: BreakerConfig,
}

struct Slot {
    name: String,
    provider: Arc<dyn Provider>,
    timeout: Duration,
    breaker: Breaker,
    delivered: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

/// Counters and breaker state of one provider, for `/readyz` and a later `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStats {
    pub name: String,
    pub state: BreakerState,
    /// Messages this provider accepted.
    pub delivered: u64,
    /// Sends that failed here (any class, timeouts included).
    pub failed: u64,
    /// Sends that passed this provider by because its breaker was open.
    pub skipped: u64,
}

/// Why the router could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("routes: route {0:?} names provider {1:?}, which is not configured")]
    UnknownProvider(String, String),
    #[error("routes: a \"*\" route is required")]
    NoDefault,
    #[error("routes: route {0:?} lists no provider")]
    Empty(String),
}

pub struct Router {
    slots: Vec<Slot>,
    /// (route, slot indices), longest prefix first, the `*` route last.
    routes: Vec<(RouteKey, Vec<usize>)>,
}

impl Router {
    /// `routes` maps prefixes and `*` to provider names in the order to try them.
    pub fn new(
        instances: Vec<Instance>,
        routes: &[(RouteKey, Vec<String>)],
    ) -> Result<Router, RouteError> {
        let slots: Vec<Slot> = instances
            .into_iter()
            .map(|i| Slot {
                name: i.name,
                provider: i.provider,
                timeout: i.timeout,
                breaker: Breaker::new(i.breaker),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
            })
            .collect();
        let mut resolved = Vec::new();
        for (key, names) in routes {
            if names.is_empty() {
                return Err(RouteError::Empty(key.to_string()));
            }
            let mut chain = Vec::new();
            for name in names {
                let idx = slots
                    .iter()
                    .position(|s| &s.name == name)
                    .ok_or_else(|| RouteError::UnknownProvider(key.to_string(), name.clone()))?;
                chain.push(idx);
            }
            resolved.push((key.clone(), chain));
        }
        if !resolved.iter().any(|(k, _)| *k == RouteKey::Default) {
            return Err(RouteError::NoDefault);
        }
        resolved.sort_by_key(|(k, _)| k.precedence());
        Ok(Router {
            slots,
            routes: resolved,
        })
    }

    /// The providers to try for `phone`, in order: its longest matching route.
    fn chain(&self, phone: &PhoneNumber) -> &[usize] {
        self.routes
            .iter()
            .find(|(k, _)| k.matches(phone))
            .map_or(&[], |(_, c)| c)
    }

    /// Delivers through the first provider of the route that accepts the message. The receipt
    /// names the provider instance that did. When every provider failed, the last provider's
    /// error is returned (a transient one when all were skipped by their breakers).
    pub async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError> {
        let mut last = None;
        for &i in self.chain(&msg.to) {
            let slot = &self.slots[i];
            if !slot.breaker.try_acquire() {
                slot.skipped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(phone = %msg.to, provider = %slot.name, "provider skipped: circuit open");
                last.get_or_insert(ProviderError::Transient(format!(
                    "{}: circuit open",
                    slot.name
                )));
                continue;
            }
            let result = match tokio::time::timeout(slot.timeout, slot.provider.send(msg)).await {
                Ok(r) => r,
                Err(_) => Err(ProviderError::Transient(format!(
                    "no answer within {} ms",
                    slot.timeout.as_millis()
                ))),
            };
            match result {
                Ok(mut receipt) => {
                    slot.breaker.record(Outcome::Healthy);
                    slot.delivered.fetch_add(1, Ordering::Relaxed);
                    receipt.provider = slot.name.clone();
                    return Ok(receipt);
                }
                Err(e) => {
                    slot.failed.fetch_add(1, Ordering::Relaxed);
                    match &e {
                        ProviderError::Recipient { .. } => {
                            slot.breaker.record(Outcome::Healthy);
                            return Err(e);
                        }
                        ProviderError::Transient(detail) => {
                            slot.breaker.record(Outcome::Transient);
                            tracing::warn!(phone = %msg.to, provider = %slot.name, %detail, breaker = slot.breaker.state().as_str(), "provider failed, trying the next one if any");
                        }
                        ProviderError::Configuration(detail) => {
                            slot.breaker.record(Outcome::Neutral);
                            tracing::error!(phone = %msg.to, provider = %slot.name, %detail, "provider misconfigured, trying the next one if any");
                        }
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ProviderError::Configuration("no route for this number".into())))
    }

    /// A final delivery receipt for a message `provider` accepted: feeds its breaker's
    /// failure ratio. Unknown names (a receipt for a provider since removed) are ignored.
    pub fn receipt(&self, provider: &str, failed: bool) {
        if let Some(slot) = self.slots.iter().find(|s| s.name == provider) {
            slot.breaker.record_receipt(failed);
        }
    }

    /// Each provider's name and breaker state, in configuration order.
    pub fn breaker_states(&self) -> Vec<(&str, BreakerState)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.breaker.state()))
            .collect()
    }

    /// Counters and breaker state of each provider.
    pub fn stats(&self) -> Vec<ProviderStats> {
        self.slots
            .iter()
            .map(|s| ProviderStats {
                name: s.name.clone(),
                state: s.breaker.state(),
                delivered: s.delivered.load(Ordering::Relaxed),
                failed: s.failed.load(Ordering::Relaxed),
                skipped: s.skipped.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// False when every provider of the `*` route has an open breaker: most numbers would get
    /// 503 until a cool-down ends.
    pub fn default_route_available(&self) -> bool {
        self.routes
            .iter()
            .find(|(k, _)| *k == RouteKey::Default)
            .is_some_and(|(_, chain)| {
                chain
                    .iter()
                    .any(|&i| self.slots[i].breaker.state() != BreakerState::Open)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Code;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// A provider that answers from a script, then with its last entry forever.
    struct Scripted {
        answers: Mutex<Vec<Result<(), ProviderError>>>,
        calls: AtomicU64,
        delay: Duration,
    }

    impl Scripted {
        fn new(answers: Vec<Result<(), ProviderError>>) -> Arc<Self> {
            Self::slow(answers, Duration::ZERO)
        }
        fn slow(answers: Vec<Result<(), ProviderError>>, delay: Duration) -> Arc<Self> {
            Arc::new(Self {
                answers: Mutex::new(answers),
                calls: AtomicU64::new(0),
                delay,
            })
        }
        fn calls(&self) -> u64 {
            self.calls.load(Ordering::Relaxed)
        }
    }

    #[async_trait]
    impl Provider for Scripted {
        async fn send(&self, _: &OutgoingCode) -> Result<Receipt, ProviderError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.delay).await;
            let answer = {
                let mut a = self.answers.lock().unwrap();
                if a.len() > 1 {
                    a.remove(0)
                } else {
                    a[0].clone()
                }
            };
            answer.map(|()| Receipt {
                provider: "kind".into(),
                message_id: Some("m-1".into()),
            })
        }
    }

    fn transient() -> Result<(), ProviderError> {
        Err(ProviderError::Transient("503".into()))
    }

    fn instance(name: &str, p: &Arc<Scripted>) -> Instance {
        Instance {
            name: name.into(),
            provider: p.clone(),
            timeout: Duration::from_secs(5),
            breaker: BreakerConfig {
                failures: 2,
                cooldown: 30,
                ..BreakerConfig::default()
            },
        }
    }

    fn routes(pairs: &[(&str, &[&str])]) -> Vec<(RouteKey, Vec<String>)> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.parse().unwrap(),
                    v.iter().map(|s| s.to_string()).collect(),
                )
            })
            .collect()
    }

    fn msg(to: &str) -> OutgoingCode {
        OutgoingCode {
            to: PhoneNumber::parse_e164(to).unwrap(),
            code: Code::parse("123456").unwrap(),
            lifetime: Duration::from_secs(300),
            locale: None,
            text: "Your code is 123456".into(),
        }
    }

    const CN: &str = "+8613800138000";
    const US: &str = "+12015550123";

    #[tokio::test]
    async fn longest_prefix_wins_and_the_receipt_names_the_instance() {
        let (a, b, c) = (
            Scripted::new(vec![Ok(())]),
            Scripted::new(vec![Ok(())]),
            Scripted::new(vec![Ok(())]),
        );
        let r = Router::new(
            vec![instance("a", &a), instance("b", &b), instance("c", &c)],
            &routes(&[("+8", &["c"]), ("+86", &["a"]), ("*", &["b"])]),
        )
        .unwrap();
        assert_eq!(r.send(&msg(CN)).await.unwrap().provider, "a");
        assert_eq!(r.send(&msg("+81312345678")).await.unwrap().provider, "c");
        assert_eq!(r.send(&msg(US)).await.unwrap().provider, "b");
        assert_eq!((a.calls(), b.calls(), c.calls()), (1, 1, 1));
    }

    #[tokio::test]
    async fn transient_and_configuration_failures_fall_over() {
        for first in [
            transient(),
            Err(ProviderError::Configuration("bad key".into())),
        ] {
            let (a, b) = (Scripted::new(vec![first]), Scripted::new(vec![Ok(())]));
            let r = Router::new(
                vec![instance("a", &a), instance("b", &b)],
                &routes(&[("*", &["a", "b"])]),
            )
            .unwrap();
            let receipt = r.send(&msg(US)).await.unwrap();
            assert_eq!(receipt.provider, "b");
            let stats = r.stats();
            assert_eq!((stats[0].failed, stats[1].delivered), (1, 1));
        }
    }

    #[tokio::test]
    async fn a_recipient_error_does_not_fall_over() {
        let a = Scripted::new(vec![Err(ProviderError::Recipient {
            message: "bad number".into(),
            rate_limited: false,
        })]);
        let b = Scripted::new(vec![Ok(())]);
        let r = Router::new(
            vec![instance("a", &a), instance("b", &b)],
            &routes(&[("*", &["a", "b"])]),
        )
        .unwrap();
        let err = r.send(&msg(US)).await.unwrap_err();
        assert!(matches!(err, ProviderError::Recipient { .. }), "{err}");
        assert_eq!(b.calls(), 0);
    }

    #[tokio::test]
    async fn when_all_fail_the_last_error_is_returned() {
        let a = Scripted::new(vec![Err(ProviderError::Configuration("key".into()))]);
        let b = Scripted::new(vec![transient()]);
        let r = Router::new(
            vec![instance("a", &a), instance("b", &b)],
            &routes(&[("*", &["a", "b"])]),
        )
        .unwrap();
        assert_eq!(
            r.send(&msg(US)).await.unwrap_err(),
            transient().unwrap_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_cuts_a_slow_provider_and_moves_on() {
        let a = Scripted::slow(vec![Ok(())], Duration::from_secs(60));
        let b = Scripted::new(vec![Ok(())]);
        let mut slow = instance("a", &a);
        slow.timeout = Duration::from_secs(2);
        let r = Router::new(
            vec![slow, instance("b", &b)],
            &routes(&[("*", &["a", "b"])]),
        )
        .unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(r.send(&msg(US)).await.unwrap().provider, "b");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(r.stats()[0].failed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_skips_the_provider_until_the_cooldown_ends() {
        let a = Scripted::new(vec![transient(), transient(), Ok(())]);
        let b = Scripted::new(vec![Ok(())]);
        let r = Router::new(
            vec![instance("a", &a), instance("b", &b)],
            &routes(&[("*", &["a", "b"])]),
        )
        .unwrap();
        for _ in 0..2 {
            assert_eq!(r.send(&msg(US)).await.unwrap().provider, "b");
        }
        assert_eq!(
            r.breaker_states(),
            [("a", BreakerState::Open), ("b", BreakerState::Closed)]
        );
        assert!(r.default_route_available(), "b is still closed");
        assert_eq!(r.send(&msg(US)).await.unwrap().provider, "b");
        assert_eq!(a.calls(), 2, "skipped while open");
        assert_eq!(r.stats()[0].skipped, 1);

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(r.breaker_states()[0].1, BreakerState::HalfOpen);
        assert_eq!(r.send(&msg(US)).await.unwrap().provider, "a", "the trial");
        assert_eq!(r.breaker_states()[0].1, BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn all_open_is_transient_and_marks_the_default_route_unavailable() {
        let a = Scripted::new(vec![transient()]);
        let r = Router::new(vec![instance("a", &a)], &routes(&[("*", &["a"])])).unwrap();
        for _ in 0..2 {
            r.send(&msg(US)).await.unwrap_err();
        }
        assert!(!r.default_route_available());
        let err = r.send(&msg(US)).await.unwrap_err();
        assert_eq!(err, ProviderError::Transient("a: circuit open".into()));
        assert_eq!(a.calls(), 2);
    }

    #[test]
    fn routes_must_name_providers_and_have_a_default() {
        let a = Scripted::new(vec![Ok(())]);
        let err = |r: &[(&str, &[&str])]| Router::new(vec![instance("a", &a)], &routes(r)).err();
        assert_eq!(
            err(&[("*", &["a", "b"])]),
            Some(RouteError::UnknownProvider("*".into(), "b".into()))
        );
        assert_eq!(err(&[("+86", &["a"])]), Some(RouteError::NoDefault));
        assert_eq!(err(&[("*", &[])]), Some(RouteError::Empty("*".into())));
        assert_eq!(err(&[("*", &["a"])]), None);
    }
}
