//! The verification flow — send a code, check a code — independent of HTTP. This is where the
//! seed's `sms_send`/`sms_check` views live now, with their weaknesses fixed.

use serde_json::{Map, Value};
use std::time::{Duration, SystemTime};

use crate::app::App;
use crate::code::Code;
use crate::phone::PhoneNumber;
use crate::provider::{OutgoingCode, ProviderError};
use crate::session::{Session, SessionKey};
use crate::store::{
    Approval, CheckOutcome, CheckVerification, StartOutcome, StartVerification, StoreError,
};

/// A code is on its way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub expires_in: u64,
    pub resend_in: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("a code was sent recently; retry in {} s", .0.as_secs())]
    TooSoon(Duration),
    #[error("too many wrong attempts; retry in {} s", .0.as_secs())]
    Exhausted(Duration),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of a check, as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// The session now carries the verified number under `new_key`.
    Approved {
        session: Session,
        new_key: SessionKey,
    },
    Pending {
        attempts_left: u32,
    },
    Expired,
    Exhausted,
    NotFound,
}

/// Generates a code for `phone`, records its MAC under the session, and delivers it.
/// Test numbers get their fixed code and nothing is sent.
pub async fn send(
    app: &App,
    session: &Session,
    phone: &PhoneNumber,
    locale: Option<String>,
) -> Result<Sent, SendError> {
    let v = &app.config.verification;
    let fixed = app.test_numbers.get(phone.as_str());
    let code = fixed
        .cloned()
        .unwrap_or_else(|| Code::generate(v.code_length));
    let code_mac = app.code_key.mac(session.id, phone, &code);
    let ttl = Duration::from_secs(v.ttl);
    let req = StartVerification {
        session_id: session.id,
        phone,
        code_mac,
        ttl,
        resend_interval: Duration::from_secs(v.resend_interval),
        max_attempts: v.max_attempts,
    };
    match app.store.start_verification(&req).await? {
        StartOutcome::Issued { resend, attempts } => {
            tracing::info!(phone = %phone, resend, attempts, "verification code issued");
        }
        StartOutcome::TooSoon { retry_after } => return Err(SendError::TooSoon(retry_after)),
        StartOutcome::Exhausted { retry_after } => return Err(SendError::Exhausted(retry_after)),
    }
    if fixed.is_none() {
        let msg = OutgoingCode {
            to: phone.clone(),
            text: app.templates.render(phone, locale.as_deref(), &code, ttl),
            code,
            lifetime: ttl,
            locale,
        };
        match app.provider.send(&msg).await {
            Ok(receipt) => {
                tracing::info!(phone = %phone, provider = %receipt.provider, message_id = ?receipt.message_id, "code delivered to provider");
            }
            Err(e) => {
                tracing::warn!(phone = %phone, error = %e, "code delivery failed");
                if let Err(undo) = app.store.abandon_send(session.id, phone, &code_mac).await {
                    tracing::warn!(error = %undo, "could not lift the resend cooldown");
                }
                return Err(e.into());
            }
        }
    }
    Ok(Sent {
        expires_in: v.ttl,
        resend_in: v.resend_interval,
    })
}

/// Checks `code` for (session, phone); on approval the session's key is cycled and it gains
/// `verified_phone` and `verified_at`, in the same transaction.
pub async fn check(
    app: &App,
    session: &Session,
    phone: &PhoneNumber,
    code: &Code,
) -> Result<Checked, StoreError> {
    let new_key = SessionKey::generate();
    let mut data = Map::new();
    data.insert(
        "verified_phone".into(),
        Value::String(phone.as_str().to_owned()),
    );
    data.insert(
        "verified_at".into(),
        Value::String(crate::time::rfc3339(SystemTime::now())),
    );
    let req = CheckVerification {
        session_id: session.id,
        phone,
        code_mac: app.code_key.mac(session.id, phone, code),
        max_attempts: app.config.verification.max_attempts,
        on_approve: Approval {
            new_key: new_key.hash(),
            data: &data,
        },
    };
    let outcome = app.store.check_verification(&req).await?;
    tracing::info!(phone = %phone, outcome = outcome_name(&outcome), "verification checked");
    Ok(match outcome {
        CheckOutcome::Approved { session } => Checked::Approved { session, new_key },
        CheckOutcome::Wrong { attempts_left } => Checked::Pending { attempts_left },
        CheckOutcome::Expired => Checked::Expired,
        CheckOutcome::Exhausted => Checked::Exhausted,
        CheckOutcome::NotFound => Checked::NotFound,
    })
}

fn outcome_name(o: &CheckOutcome) -> &'static str {
    match o {
        CheckOutcome::Approved { .. } => "approved",
        CheckOutcome::Wrong { .. } => "wrong",
        CheckOutcome::Expired => "expired",
        CheckOutcome::Exhausted => "exhausted",
        CheckOutcome::NotFound => "not_found",
    }
}
