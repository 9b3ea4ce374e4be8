//! AWS SNS: one `Publish` to the phone number per code, through aws-sdk-sns. The SDK's own retries
//! are switched off (a retried Publish can deliver the code twice); this module retries only a
//! throttled Publish, which AWS refused before sending anything.

mod config;
// Without the `sns` feature only the configuration is here: a config naming SNS is refused
// (`provider::instances`), and the AWS SDK is not built.
#[cfg(feature = "sns")]
mod errors;

pub use config::SnsConfig;

#[cfg(feature = "sns")]
use async_trait::async_trait;
#[cfg(feature = "sns")]
use aws_sdk_sns::config::retry::RetryConfig;
#[cfg(feature = "sns")]
use aws_sdk_sns::config::timeout::TimeoutConfig;
#[cfg(feature = "sns")]
use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
#[cfg(feature = "sns")]
use aws_sdk_sns::types::MessageAttributeValue;
#[cfg(feature = "sns")]
use std::collections::HashMap;
#[cfg(feature = "sns")]
use std::time::Duration;

#[cfg(feature = "sns")]
use super::{OutgoingCode, Provider, ProviderError, Receipt};
#[cfg(feature = "sns")]
use errors::Failure;

/// Pause before the second attempt after throttling; it doubles for each further one.
#[cfg(feature = "sns")]
const THROTTLE_BACKOFF: Duration = Duration::from_millis(200);

/// Why the provider could not be built at start-up.
#[cfg(feature = "sns")]
#[derive(Debug, thiserror::Error)]
#[error("{table}: {message}")]
pub struct SetupError {
    table: String,
    message: String,
}

/// Sends codes as SNS SMS messages.
#[cfg(feature = "sns")]
pub struct SnsProvider {
    client: aws_sdk_sns::Client,
    attributes: HashMap<String, MessageAttributeValue>,
    max_attempts: u32,
}

#[cfg(feature = "sns")]
impl SnsProvider {
    /// Builds the SDK client: static credentials when configured, otherwise the standard AWS
    /// chain (resolved lazily, at the first send). `table` names the config table for errors.
    pub async fn new(cfg: &SnsConfig, table: &str) -> Result<Self, SetupError> {
        let setup = |message: String| SetupError {
            table: table.to_owned(),
            message,
        };
        let region = Region::new(cfg.region.clone());
        let timeout = cfg.timeout.duration();
        let mut builder = if cfg.access_key_id.is_empty() {
            let shared = aws_config::defaults(BehaviorVersion::latest())
                .region(region)
                .load()
                .await;
            aws_sdk_sns::config::Builder::from(&shared)
        } else {
            aws_sdk_sns::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(region)
                .credentials_provider(Credentials::new(
                    cfg.access_key_id.clone(),
                    cfg.secret_access_key.expose().to_owned(),
                    None,
                    None,
                    "verifyd-config",
                ))
        };
        builder = builder
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(timeout)
                    .operation_attempt_timeout(timeout)
                    .build(),
            );
        if let Some(url) = &cfg.endpoint_url {
            builder = builder.endpoint_url(url.clone());
        }
        let attributes = attributes(cfg).map_err(|e| setup(e.to_string()))?;
        Ok(Self {
            client: aws_sdk_sns::Client::from_conf(builder.build()),
            attributes,
            max_attempts: cfg.max_attempts,
        })
    }
}

/// The message attributes every Publish carries: always `Transactional` (SNS then prefers
/// reliable routes over cheap ones), plus the optional sender settings.
#[cfg(feature = "sns")]
fn attributes(
    cfg: &SnsConfig,
) -> Result<HashMap<String, MessageAttributeValue>, aws_sdk_sns::error::BuildError> {
    let value = |data_type: &str, v: &str| {
        MessageAttributeValue::builder()
            .data_type(data_type)
            .string_value(v)
            .build()
    };
    let mut map = HashMap::new();
    map.insert(
        "AWS.SNS.SMS.SMSType".to_owned(),
        value("String", "Transactional")?,
    );
    if let Some(id) = &cfg.sender_id {
        map.insert("AWS.SNS.SMS.SenderID".to_owned(), value("String", id)?);
    }
    if let Some(n) = &cfg.origination_number {
        map.insert(
            "AWS.MM.SMS.OriginationNumber".to_owned(),
            value("String", n)?,
        );
    }
    if let Some(p) = &cfg.max_price {
        map.insert("AWS.SNS.SMS.MaxPrice".to_owned(), value("Number", p)?);
    }
    Ok(map)
}

/// SNS wants E.164: `+`, calling code, national significant number, from the parsed parts.
#[cfg(feature = "sns")]
fn destination(phone: &crate::phone::PhoneNumber) -> String {
    format!("+{}{}", phone.calling_code(), phone.national())
}

#[cfg(feature = "sns")]
#[async_trait]
impl Provider for SnsProvider {
    /// One Publish; a throttled one is repeated (up to `max_attempts`) after a short pause.
    /// Everything else is final here: a 5xx or a timeout may already have sent the SMS, so it
    /// goes back to the router, which may try another provider.
    async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError> {
        let mut attempt = 1u32;
        loop {
            let result = self
                .client
                .publish()
                .phone_number(destination(&msg.to))
                .message(&msg.text)
                .set_message_attributes(Some(self.attributes.clone()))
                .send()
                .await;
            match result.map_err(|e| errors::classify(&e)) {
                Ok(out) => {
                    tracing::debug!(phone = %msg.to, attempts = attempt, message_id = ?out.message_id(), "sns accepted the message");
                    return Ok(Receipt {
                        provider: "sns".into(),
                        message_id: out.message_id().map(str::to_owned),
                    });
                }
                Err(Failure::Throttled(reason)) if attempt < self.max_attempts => {
                    tracing::warn!(phone = %msg.to, attempt, %reason, "sns: throttled, retrying");
                    tokio::time::sleep(THROTTLE_BACKOFF * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                Err(Failure::Throttled(reason)) => {
                    return Err(ProviderError::Transient(format!(
                        "sns: {reason} (attempts: {attempt})"
                    )));
                }
                Err(Failure::Final(e)) => return Err(e),
            }
        }
    }
}

#[cfg(all(test, feature = "sns"))]
mod tests {
    use super::*;

    #[test]
    fn attributes_carry_type_and_sender_settings() {
        let cfg = SnsConfig {
            sender_id: Some("Verifyd".into()),
            origination_number: Some("+18005550100".into()),
            max_price: Some("0.25".into()),
            ..SnsConfig::default()
        };
        let a = attributes(&cfg).unwrap();
        let get = |k: &str| {
            let v = &a[k];
            (v.data_type(), v.string_value().unwrap())
        };
        assert_eq!(get("AWS.SNS.SMS.SMSType"), ("String", "Transactional"));
        assert_eq!(get("AWS.SNS.SMS.SenderID"), ("String", "Verifyd"));
        assert_eq!(
            get("AWS.MM.SMS.OriginationNumber"),
            ("String", "+18005550100")
        );
        assert_eq!(get("AWS.SNS.SMS.MaxPrice"), ("Number", "0.25"));
        let minimal = attributes(&SnsConfig::default()).unwrap();
        assert_eq!(minimal.len(), 1);
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn destination_is_e164_from_the_parsed_parts() {
        let d = |s| destination(&crate::phone::PhoneNumber::parse_e164(s).unwrap());
        assert_eq!(d("+86 0 138 0013 8000"), "+8613800138000");
        assert_eq!(d("+44 07400 123456"), "+447400123456");
        assert_eq!(d("+39 06 6988 1234"), "+390669881234");
    }
}
