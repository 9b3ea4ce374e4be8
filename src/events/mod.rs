//! Verification events as signed webhooks. The store's triggers write each event to an outbox
//! table in the transaction of the change it reports (migrations/*/0009_events.sql); the
//! [`worker`] posts them to the configured endpoints, signed per Standard Webhooks, until each
//! endpoint answers 2xx or the retry period is over.

pub mod config;
pub mod worker;

pub use config::{EndpointConfig, EventsConfig};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::phone::PhoneNumber;
use crate::store::events::OutboxEvent;

/// Every event type, as the triggers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    #[serde(rename = "verification.sent")]
    VerificationSent,
    #[serde(rename = "verification.approved")]
    VerificationApproved,
    #[serde(rename = "verification.failed")]
    VerificationFailed,
    #[serde(rename = "verification.max_attempts")]
    VerificationMaxAttempts,
    #[serde(rename = "verification.expired")]
    VerificationExpired,
    #[serde(rename = "verification.refused")]
    VerificationRefused,
    #[serde(rename = "delivery.updated")]
    DeliveryUpdated,
    #[serde(rename = "pumping.tripped")]
    PumpingTripped,
    #[serde(rename = "pumping.reset")]
    PumpingReset,
}

impl EventKind {
    /// The type of a stored event; `None` for a name this version does not know (written by
    /// a newer daemon on the same database), which no endpoint filter can then select.
    pub fn parse(name: &str) -> Option<EventKind> {
        serde_json::from_value(Value::String(name.to_owned())).ok()
    }
}

/// The JSON body for one endpoint, in the Standard Webhooks shape (`type`, `timestamp`,
/// `data`). Phone numbers are masked unless the endpoint takes them in full. A wrong attempt
/// says how many are left under this daemon's `verification.max_attempts`.
pub fn body(event: &OutboxEvent, full_numbers: bool, max_attempts: u32) -> String {
    let mut data = event.data.clone();
    if let Some(obj) = data.as_object_mut() {
        if !full_numbers {
            if let Some(Value::String(phone)) = obj.get_mut("phone") {
                *phone = mask(phone);
            }
        }
        if event.kind == "verification.failed" {
            if let Some(attempts) = obj.get("attempts").and_then(Value::as_u64) {
                let left = u64::from(max_attempts).saturating_sub(attempts);
                obj.insert("attempts_left".into(), left.into());
            }
        }
    }
    json!({
        "type": event.kind,
        "timestamp": crate::time::rfc3339_millis(event.created_at),
        "data": data,
    })
    .to_string()
}

/// The masked form logs use; something that is not a number at all is hidden entirely.
fn mask(phone: &str) -> String {
    PhoneNumber::parse_e164(phone).map_or_else(|_| "[masked]".to_owned(), |p| p.masked())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn event(kind: &str, data: Value) -> OutboxEvent {
        OutboxEvent {
            seq: 1,
            id: "evt_1".into(),
            kind: kind.into(),
            data,
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            attempts: 0,
            age: Duration::ZERO,
            done: vec![],
        }
    }

    #[test]
    fn numbers_are_masked_unless_the_endpoint_takes_them_in_full() {
        let e = event(
            "verification.approved",
            json!({"phone": "+8613800138000", "session_id": 7}),
        );
        let masked: Value = serde_json::from_str(&body(&e, false, 5)).unwrap();
        assert_eq!(masked["data"]["phone"], "+86138****8000");
        assert_eq!(masked["type"], "verification.approved");
        assert_eq!(masked["timestamp"], "2023-11-14T22:13:20Z");
        let full: Value = serde_json::from_str(&body(&e, true, 5)).unwrap();
        assert_eq!(full["data"]["phone"], "+8613800138000");
        let junk = event("verification.sent", json!({"phone": "not a number 12345"}));
        assert!(!body(&junk, false, 5).contains("12345"));
    }

    #[test]
    fn a_wrong_attempt_says_how_many_are_left() {
        let e = event(
            "verification.failed",
            json!({"phone": "+8613800138000", "attempts": 2}),
        );
        let v: Value = serde_json::from_str(&body(&e, false, 5)).unwrap();
        assert_eq!(v["data"]["attempts_left"], 3);
    }

    #[test]
    fn every_trigger_name_parses() {
        for name in [
            "verification.sent",
            "verification.approved",
            "verification.failed",
            "verification.max_attempts",
            "verification.expired",
            "verification.refused",
            "delivery.updated",
            "pumping.tripped",
            "pumping.reset",
        ] {
            assert!(EventKind::parse(name).is_some(), "{name}");
        }
        assert_eq!(EventKind::parse("verification.bogus"), None);
    }
}
