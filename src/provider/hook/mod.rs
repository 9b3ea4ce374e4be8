//! `kind = "hook"`: verifyd hands the message to the application, which delivers it however it
//! likes (its own gateway, a queue, a chat app). Each POST is signed per Standard Webhooks so
//! the application can tell verifyd's messages from anyone else's.

mod config;

pub use config::HookConfig;

use async_trait::async_trait;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::http::rules::token;
use super::retry::{self, Attempt, Budget};
use super::{OutgoingCode, Provider, ProviderError, Receipt};

/// Why the provider could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}: {1}")]
    Config(String, String),
    #[error("{0}: cannot build the HTTP client: {1}")]
    Client(String, reqwest::Error),
}

/// POSTs signed messages to the application.
pub struct HookProvider {
    http: reqwest::Client,
    url: reqwest::Url,
    key: Vec<u8>,
    timeout: Duration,
    max_total: Duration,
}

impl HookProvider {
    /// `table` names the config table (`providers.app.hook`) in errors.
    pub fn new(cfg: &HookConfig, table: &str) -> Result<Self, SetupError> {
        cfg.validate(table)
            .map_err(|(k, m)| SetupError::Config(k, m))?;
        let bad = |m: &str| SetupError::Config(table.to_owned(), m.to_owned());
        let url = reqwest::Url::parse(&cfg.url).map_err(|_| bad("url is not a URL"))?;
        let key =
            crate::standard_webhooks::key_bytes(&cfg.secret).ok_or_else(|| bad("bad secret"))?;
        let timeout = cfg.timeout.duration();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("verifyd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Client(table.to_owned(), e))?;
        Ok(Self {
            http,
            url,
            key,
            timeout,
            max_total: cfg.max_total.duration(),
        })
    }

    async fn attempt(&self, id: &str, body: &str, budget: Duration) -> Attempt {
        // A fresh timestamp per attempt: receivers refuse old ones (5 minutes by default).
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let req = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header(
                "webhook-signature",
                crate::standard_webhooks::signature(&self.key, id, now, body),
            )
            .body(body.to_owned());
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.bytes().await?))
        };
        match tokio::time::timeout(budget, exchange).await {
            Err(_) => Attempt::Retry(format!("no answer within {} ms", budget.as_millis())),
            Ok(Err(e)) => Attempt::Retry(format!(
                "network error: {}",
                super::error_chain(&e.without_url())
            )),
            Ok(Ok((status, bytes))) => classify(status.as_u16(), &bytes),
        }
    }
}

/// The application's answer: 2xx accepted (an optional `{"message_id": "…"}` is kept); 400 and
/// 422 refuse the recipient; 429 is the application's rate limit for it; 408 and 5xx are
/// retried; anything else (401, 403, 404, redirects) is the operator's to fix.
fn classify(status: u16, body: &[u8]) -> Attempt {
    let what = format!("hook: HTTP {status}");
    match status {
        200..=299 => Attempt::Sent(
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("message_id")?.as_str().map(token))
                .filter(|id| !id.is_empty()),
        ),
        400 | 422 => Attempt::Failed(ProviderError::Recipient {
            message: what,
            rate_limited: false,
        }),
        429 => Attempt::Failed(ProviderError::Recipient {
            message: what,
            rate_limited: true,
        }),
        408 | 500..=599 => Attempt::Retry(what),
        _ => Attempt::Failed(ProviderError::Configuration(what)),
    }
}

/// The payload: Standard Webhooks' recommended `type` / `timestamp` / `data` envelope.
fn payload(msg: &OutgoingCode, request_id: &str) -> String {
    json!({
        "type": "verification.code",
        "timestamp": crate::time::rfc3339(SystemTime::now()),
        "data": {
            "to": msg.to.as_str(),
            "country": msg.to.region(),
            "code": msg.code.expose(),
            "text": msg.text,
            "locale": msg.locale,
            "ttl_seconds": msg.lifetime.as_secs(),
            "request_id": request_id,
        }
    })
    .to_string()
}

#[async_trait]
impl Provider for HookProvider {
    /// Retries while `max_total` lasts, with the same `webhook-id` each time: Standard
    /// Webhooks receivers deduplicate on it, so a retry after a lost answer is not a second SMS.
    async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError> {
        let request_id = super::nonce();
        let id = format!("msg_{}", request_id.replace('-', ""));
        let body = payload(msg, &request_id);
        let budget = Budget {
            per_attempt: self.timeout,
            total: self.max_total,
        };
        let message_id = retry::until_sent("hook", &msg.to, budget, |limit| {
            self.attempt(&id, &body, limit)
        })
        .await?;
        Ok(Receipt {
            provider: "hook".into(),
            message_id: message_id.or(Some(id)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_onto_the_failure_classes() {
        assert!(matches!(classify(204, b""), Attempt::Sent(None)));
        assert!(
            matches!(classify(200, br#"{"message_id":"q-1 <x>"}"#), Attempt::Sent(Some(id)) if id == "q-1x")
        );
        assert!(matches!(
            classify(422, b""),
            Attempt::Failed(ProviderError::Recipient {
                rate_limited: false,
                ..
            })
        ));
        assert!(matches!(
            classify(429, b""),
            Attempt::Failed(ProviderError::Recipient {
                rate_limited: true,
                ..
            })
        ));
        for s in [408, 500, 503] {
            assert!(matches!(classify(s, b""), Attempt::Retry(_)), "{s}");
        }
        for s in [301, 401, 403, 404] {
            assert!(
                matches!(
                    classify(s, b""),
                    Attempt::Failed(ProviderError::Configuration(_))
                ),
                "{s}"
            );
        }
    }
}
