//! The provider boundary: how a code leaves verifyd. Real SMS gateways and the stdout mock all
//! implement [`Provider`]; the rest of the daemon only sees the [`routing::Router`] over them,
//! its `send` and the three error classes.

use async_trait::async_trait;
use std::time::Duration;

use crate::code::Code;
use crate::phone::PhoneNumber;

pub mod aliyun;
pub mod breaker;
pub mod config;
pub mod hook;
pub mod http;
pub mod instances;
pub mod metered;
pub mod mock;
pub(crate) mod retry;
pub mod routing;
pub mod sms_length;
pub mod sns;
pub mod templates;
pub mod tencent;

/// One message to deliver.
#[derive(Debug, Clone)]
pub struct OutgoingCode {
    pub to: PhoneNumber,
    pub code: Code,
    /// How long the code stays valid (for "expires in N minutes").
    pub lifetime: Duration,
    /// BCP 47 language tag of the recipient's locale, when known (e.g. "zh-CN").
    pub locale: Option<String>,
    /// The message text rendered from the configured template, for providers that send text;
    /// template-based gateways (Aliyun) send the code as a template parameter instead.
    pub text: String,
}

/// Proof of hand-off to a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Name of the provider instance that accepted the message.
    pub provider: String,
    /// The gateway's message or request id, when it gives one.
    pub message_id: Option<String>,
}

/// Why a send failed, in the three classes that decide what happens next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying, here or on another provider: network, timeout, 5xx, throttling.
    #[error("transient provider failure: {0}")]
    Transient(String),
    /// The recipient cannot be served (bad number, the gateway's own per-number limits);
    /// another provider would fail the same way. `rate_limited` marks quota refusals.
    #[error("recipient refused by provider: {message}")]
    Recipient { message: String, rate_limited: bool },
    /// The operator must fix something (credentials, sign name, template, balance).
    #[error("provider misconfigured: {0}")]
    Configuration(String),
}

/// A way to deliver codes. Object-safe so that providers can be chosen at run time.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError>;
}

/// Renders a message template: `{code}` and `{minutes}` (rounded up) are replaced.
pub fn render(template: &str, code: &Code, lifetime: Duration) -> String {
    let minutes = lifetime.as_secs().div_ceil(60).max(1);
    template
        .replace("{code}", code.expose())
        .replace("{minutes}", &minutes.to_string())
}

/// An error and its causes on one line ("error sending request: …: connection refused"), for
/// transport errors whose top-level text says little.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A random UUID-shaped nonce (hex of 16 bytes from the OS generator).
pub(crate) fn nonce() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random generator is unavailable");
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_fresh_and_uuid_shaped() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }

    #[test]
    fn renders_code_and_minutes() {
        let code = Code::parse("123456").unwrap();
        let text = render(
            "Code {code}, {minutes} min",
            &code,
            Duration::from_secs(300),
        );
        assert_eq!(text, "Code 123456, 5 min");
        assert_eq!(render("{minutes}", &code, Duration::from_secs(61)), "2");
    }
}
