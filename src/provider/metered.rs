//! A provider wrapper that counts every send and times it, so `/metrics` sees each gateway's
//! outcomes and latency however the provider is chosen or routed.

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Instant;

use super::{OutgoingCode, Provider, ProviderError, Receipt};
use crate::metrics::Metrics;

/// Wraps one named provider instance.
pub struct Metered {
    name: String,
    inner: Arc<dyn Provider>,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn new(name: impl Into<String>, inner: Arc<dyn Provider>, metrics: Arc<Metrics>) -> Self {
        Metered {
            name: name.into(),
            inner,
            metrics,
        }
    }
}

/// The `outcome` label of `verifyd_sms_sent_total`.
pub fn outcome(result: &Result<Receipt, ProviderError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ProviderError::Recipient {
            rate_limited: true, ..
        }) => "rate_limited",
        Err(ProviderError::Recipient { .. }) => "recipient",
        Err(ProviderError::Configuration(_)) => "configuration",
        Err(ProviderError::Transient(_)) => "transient",
    }
}

#[async_trait]
impl Provider for Metered {
    async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError> {
        let started = Instant::now();
        // The receipt names the instance, not the kind: delivery receipts are matched to it.
        let result = self.inner.send(msg).await.map(|mut r| {
            r.provider.clone_from(&self.name);
            r
        });
        self.metrics
            .sms(&self.name, outcome(&result), started.elapsed());
        result
    }
}
