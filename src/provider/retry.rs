//! How every HTTP gateway retries: a send is a run of attempts inside the provider's
//! `max_total` budget, with exponential backoff and jitter between them. One copy, so that
//! Aliyun, Tencent, the HTTP gateway and the hook behave alike and a fix reaches all four.

use std::future::Future;
use std::time::{Duration, Instant};

use super::ProviderError;
use crate::phone::PhoneNumber;

/// First pause between attempts; it doubles each time, up to [`BACKOFF_MAX`], with jitter.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// No attempt is started with less time than this left in the budget (or the per-attempt
/// timeout, if smaller): it could only time out, and perhaps still deliver.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// How one attempt ended, as each gateway's answer classifier reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Accepted, with the gateway's message id when it gave one.
    Sent(Option<String>),
    /// Final: retrying cannot help.
    Failed(ProviderError),
    /// Worth another attempt; the reason is safe to log.
    Retry(String),
}

/// The time a send may take: each attempt at most `per_attempt`, all of them `total`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub per_attempt: Duration,
    pub total: Duration,
}

/// Calls `attempt` with the time that attempt may take until the gateway accepts (the message
/// id, if any) or refuses for good, or until the budget has no room for the next pause and a
/// useful attempt: then the last reason is a transient failure naming `gateway`. Each call
/// builds its request afresh, so signatures, timestamps and nonces are new on every attempt.
pub(crate) async fn until_sent<F, Fut>(
    gateway: &str,
    to: &PhoneNumber,
    budget: Budget,
    mut attempt: F,
) -> Result<Option<String>, ProviderError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let deadline = Instant::now() + budget.total;
    let mut n = 1u32;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Final outcomes are logged by the caller; only the retries are logged here.
        let reason = match attempt(budget.per_attempt.min(left)).await {
            Attempt::Sent(message_id) => {
                tracing::debug!(phone = %to, attempts = n, message_id = ?message_id, "{gateway} accepted the message");
                return Ok(message_id);
            }
            Attempt::Failed(e) => return Err(e),
            Attempt::Retry(reason) => reason,
        };
        let pause = backoff(n);
        let left = deadline.saturating_duration_since(Instant::now());
        if left < pause + MIN_ATTEMPT.min(budget.per_attempt) {
            return Err(ProviderError::Transient(format!(
                "{gateway}: {reason} (attempts: {n})"
            )));
        }
        tracing::warn!(phone = %to, attempt = n, %reason, "{gateway}: attempt failed, retrying");
        tokio::time::sleep(pause).await;
        n += 1;
    }
}

/// The pause after failed attempt `n` (1-based): half of `min(first · 2^(n-1), max)` plus a
/// random part of up to the other half, so that daemons that failed together do not retry
/// together.
fn backoff(n: u32) -> Duration {
    let ceiling = BACKOFF_FIRST
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let half = ceiling / 2;
    let mut b = [0u8; 8];
    let random = getrandom::fill(&mut b).map_or(0, |_| u64::from_le_bytes(b));
    let half_ms = half.as_millis() as u64;
    half + Duration::from_millis(random % (half_ms + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn backoff_grows_and_is_capped() {
        for n in 1..40 {
            let d = backoff(n);
            let ceiling = BACKOFF_FIRST
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_MAX);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d:?}");
        }
    }

    fn phone() -> PhoneNumber {
        PhoneNumber::parse_e164("+12015550123").unwrap()
    }

    #[tokio::test]
    async fn retries_until_accepted_with_the_time_left() {
        let calls = AtomicU32::new(0);
        let budget = Budget {
            per_attempt: Duration::from_secs(1),
            total: Duration::from_secs(10),
        };
        let id = until_sent("gw", &phone(), budget, |limit| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(limit <= Duration::from_secs(1));
                if n < 2 {
                    Attempt::Retry(format!("busy {n}"))
                } else {
                    Attempt::Sent(Some("m-1".into()))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(id.as_deref(), Some("m-1"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_final_refusal_is_not_retried() {
        let calls = AtomicU32::new(0);
        let budget = Budget {
            per_attempt: Duration::from_secs(1),
            total: Duration::from_secs(10),
        };
        let err = until_sent("gw", &phone(), budget, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Attempt::Failed(ProviderError::Configuration("bad key".into())) }
        })
        .await
        .unwrap_err();
        assert!(matches!(err, ProviderError::Configuration(_)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_exhausted_budget_names_the_gateway_the_reason_and_the_attempts() {
        let calls = AtomicU32::new(0);
        // Room for the first attempt only: the first pause (50–100 ms) plus a useful attempt
        // (100 ms) does not fit in what is left.
        let budget = Budget {
            per_attempt: Duration::from_secs(1),
            total: Duration::from_millis(120),
        };
        let err = until_sent("gw", &phone(), budget, |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Attempt::Retry("503".into()) }
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "transient provider failure: gw: 503 (attempts: 1)"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
