//! What happened to each accepted send after the gateway took it: the delivery record, its
//! state machine (`queued → sent → delivered | failed`) and the id backends look it up by.
//! The stores keep the records; this module holds the rules both of them follow.

use serde::Serialize;
use std::time::SystemTime;

pub mod receipts;
pub mod twilio;

/// Where a message is. The order is the order of `rank`: a receipt may only move a delivery
/// to a higher rank, so late or repeated receipts never undo a final answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// The gateway accepted the message (the state every record starts in).
    Queued,
    /// The gateway handed it to the carrier.
    Sent,
    /// The handset received it (final).
    Delivered,
    /// The carrier or the gateway gave up (final).
    Failed,
}

impl DeliveryState {
    /// The stored number.
    pub fn code(self) -> i16 {
        match self {
            DeliveryState::Queued => 0,
            DeliveryState::Sent => 1,
            DeliveryState::Delivered => 2,
            DeliveryState::Failed => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<Self> {
        Some(match code {
            0 => DeliveryState::Queued,
            1 => DeliveryState::Sent,
            2 => DeliveryState::Delivered,
            3 => DeliveryState::Failed,
            _ => return None,
        })
    }

    /// Both final states share the top rank: the first final receipt wins.
    pub fn rank(self) -> i16 {
        self.code().min(2)
    }

    pub fn is_final(self) -> bool {
        self.rank() == 2
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sent => "sent",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The public id (`dlv_` and 32 hex digits), given to the backend with the send.
    pub id: String,
    /// The provider instance that accepted the message.
    pub provider: String,
    /// The gateway's id for it (Aliyun `BizId`, Tencent `SerialNo`, SNS `MessageId`).
    pub message_id: String,
    /// Calling code of the destination (`+86`), for metrics by country.
    pub country: String,
    pub state: DeliveryState,
    /// The gateway's status or error code from the last receipt that moved the state.
    pub error_code: Option<String>,
    pub queued_at: SystemTime,
    /// When a receipt said `sent`, and when a final receipt arrived (our clock).
    pub sent_at: Option<SystemTime>,
    pub final_at: Option<SystemTime>,
}

/// What a send asks the store to record.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub id: &'a str,
    pub session_id: i64,
    pub provider: &'a str,
    pub message_id: &'a str,
    pub country: &'a str,
}

/// One receipt as a gateway reported it, already authenticated and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptUpdate {
    pub provider: String,
    pub message_id: String,
    pub state: DeliveryState,
    pub error_code: Option<String>,
}

/// What a receipt did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiptOutcome {
    /// The state moved forward; `delivery` is the record after the change.
    Applied { delivery: Delivery },
    /// The delivery is already in this state: nothing changed (a resent receipt).
    Duplicate,
    /// The delivery is already further along (or final): nothing changed.
    Stale,
    /// No delivery has this provider and message id: counted and dropped.
    Unknown,
}

/// A fresh public id: unguessable, so knowing one id says nothing about another.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random generator is unavailable");
    format!("dlv_{}", hex::encode(b))
}

/// Whether `s` has the shape of an id from [`new_id`] (checked before any store lookup).
pub fn is_id(s: &str) -> bool {
    s.strip_prefix("dlv_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_only_move_forward_and_finals_tie() {
        use DeliveryState::*;
        assert!(Queued.rank() < Sent.rank() && Sent.rank() < Delivered.rank());
        assert_eq!(Delivered.rank(), Failed.rank());
        for s in [Queued, Sent, Delivered, Failed] {
            assert_eq!(DeliveryState::from_code(s.code().into()), Some(s));
        }
        assert_eq!(DeliveryState::from_code(7), None);
        assert!(Failed.is_final() && !Sent.is_final());
    }

    #[test]
    fn ids_are_fresh_and_checked() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert!(is_id(&a));
        for bad in [
            "",
            "dlv_",
            "dlv_XYZ",
            &a.to_uppercase(),
            &format!("{a}0"),
            "dlv_../../etc",
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }
}
