//! The verification flow — send a code, check a code — independent of HTTP. This is where the
//! seed's `sms_send`/`sms_check` views live now, with their weaknesses fixed.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::code::{Code, CodeKey};
use crate::config::VerificationConfig;
use crate::metrics::Metrics;
use crate::phone::PhoneNumber;
use crate::provider::config::ProviderSet;
use crate::provider::routing::Router;
use crate::provider::templates::Templates;
use crate::provider::{OutgoingCode, ProviderError};
use crate::quota::{CheckGuard, Limits, Refusal, SendGuard};
use crate::resend;
use crate::session::{Expiry, KeyHash, Session, SessionKey};
use crate::store::events::Refused;
use crate::store::{
    self, Approval, CheckOutcome, CheckVerification, NewSession, StartOutcome, StartVerification,
    Store, StoreError,
};

/// What the flow works with, borrowed from the application: the store, the providers behind
/// their router, the code key, the settings and limits. Nothing else is in reach.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub store: &'a dyn Store,
    pub provider: &'a Router,
    pub templates: &'a Templates,
    pub code_key: &'a CodeKey,
    pub metrics: &'a Metrics,
    /// Fixed codes for test numbers, by E.164 number.
    pub test_numbers: &'a HashMap<String, Code>,
    pub verification: &'a VerificationConfig,
    pub limits: Limits<'a>,
    /// Whether this daemon delivers events (it has `[events.endpoints]`). Only then does a
    /// refusal cost a write: a flood of refused requests adds no database work where nothing
    /// listens.
    pub record_refusals: bool,
    /// The provider instances, to know which of them push delivery receipts.
    pub providers: ProviderSet<'a>,
}

/// A code is on its way.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub expires_in: u64,
    pub resend_in: u64,
    /// The delivery record's public id, when the gateway gave a message id to track.
    pub delivery_id: Option<String>,
}

/// Whose session a send or a check is for, as the caller presented it.
#[derive(Debug, Clone, Copy)]
pub struct CallerKey {
    /// The key the caller holds (a browser's cookie, a backend's explicit key), if any.
    pub key: Option<KeyHash>,
    /// A browser: when `key` names no live session, an accepted send creates one under a new
    /// key. A backend's key must name a live session.
    pub browser: bool,
}

/// What a send did, with the caller's session as its statement left it: refused sends too may
/// have slid the session's expiry (its cookie is then sent again).
#[derive(Debug)]
pub struct Sending {
    pub result: Result<Sent, SendError>,
    /// The caller's live session after the send (`None`: it has none).
    pub session: Option<Session>,
    /// The key of the session this send created, for a browser that came without a live one.
    pub born: Option<SessionKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("a code was sent recently; retry in {} s", .0.as_secs())]
    TooSoon(Duration),
    #[error("too many wrong attempts; retry in {} s", .0.as_secs())]
    Exhausted(Duration),
    /// An abuse limit refused the send (nothing was sent); `Refusal::Challenge` when a solved
    /// challenge would let it through.
    #[error("refused by an abuse limit ({0:?}); retry in {secs} s", secs = .1.as_secs())]
    Refused(Refusal, Duration),
    /// The destination's country is not served (`countries.allow` / `countries.deny`).
    #[error("destination not served")]
    Denied,
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
    /// An abuse limit refused the check; no attempt was used.
    Refused {
        by: Refusal,
        retry_after: Duration,
    },
    /// The caller's key names no live session: nothing was looked at or written.
    NoSession,
}

/// Generates a code for `phone`, records its MAC under the caller's session, and delivers it.
/// Test numbers get their fixed code and nothing is sent. The caller's session is resolved by
/// its key in the send's own statement; a browser without a live one gets a new session in
/// that statement, only if the send is accepted. `client` is the browser's address (`None` for
/// backends, whose address is their own); `challenge_passed` says the caller solved a
/// challenge or is a backend (never challenged). The abuse limits, the need for a challenge and
/// (with `same_code`) whether the live code is sent again are decided in the same statement.
pub async fn send(
    cx: &Context<'_>,
    caller: CallerKey,
    phone: &PhoneNumber,
    locale: Option<String>,
    client: Option<IpAddr>,
    challenge_passed: bool,
) -> Sending {
    let mut session = None;
    let mut born = None;
    let result = send_inner(
        cx,
        caller,
        phone,
        locale,
        client,
        challenge_passed,
        &mut session,
        &mut born,
    )
    .await;
    Sending {
        result,
        session,
        born,
    }
}

/// [`send`]'s work. What it learns of the caller's session is left in `session` and `born` on
/// every path, refusals and failures included (the HTTP layer sets the cookie from them).
#[allow(clippy::too_many_arguments)]
async fn send_inner(
    cx: &Context<'_>,
    caller: CallerKey,
    phone: &PhoneNumber,
    locale: Option<String>,
    client: Option<IpAddr>,
    challenge_passed: bool,
    session: &mut Option<Session>,
    born: &mut Option<SessionKey>,
) -> Result<Sent, SendError> {
    let country = crate::country::calling_code(phone);
    let calling_code = crate::country::CallingCode::of(phone);
    if !cx.limits.serves(calling_code) {
        return Err(SendError::Denied);
    }
    let mut guard = SendGuard::build(
        &cx.limits,
        phone.as_str(),
        calling_code,
        client,
        challenge_passed,
    );
    let v = cx.verification;
    let fixed = cx.test_numbers.get(phone.as_str());
    if fixed.is_some() {
        // Test numbers cost nothing and their codes are public: they stay out of the breaker.
        guard.pumping = None;
    }
    let new_key = caller.browser.then(SessionKey::generate);
    // A browser without any cookie has no session to look up: the key it is looked up by is
    // the new one, which no session has yet.
    let lookup = caller
        .key
        .or_else(|| new_key.as_ref().map(SessionKey::hash))
        .ok_or_else(|| StoreError::Internal("a send without any session key".into()))?;
    let fresh = resend::draw(cx.code_key, v, phone, fixed);
    let req = StartVerification {
        key: lookup,
        phone,
        code_mac: fresh.mac,
        code_nonce: fresh.nonce,
        keep_margin: resend::keep_margin(v),
        code_cap: Duration::from_secs(v.max_code_lifetime()),
        ttl: fresh.ttl,
        resend_interval: Duration::from_secs(v.resend_interval),
        max_attempts: v.max_attempts,
        new_session: new_key.as_ref().map(|k| NewSession {
            key: k.hash(),
            expiry: Expiry::Default,
        }),
    };
    let started = cx.store.start_send(&req, &guard).await?;
    *session = started.session.clone();
    let session_id = started.session.as_ref().map_or(0, |s| s.id);
    if started.created {
        *born = new_key.clone();
    }
    let drawn = match started.outcome {
        StartOutcome::Issued { resend, attempts } => {
            if started.created {
                cx.metrics.session_created();
            }
            cx.metrics.verification_started();
            tracing::info!(phone = %phone, resend, attempts, kept = started.kept.is_some(), "verification code issued");
            resend::in_force(cx.code_key, v, phone, fresh, started.kept)
        }
        StartOutcome::NoSession => return Err(StoreError::SessionGone.into()),
        StartOutcome::TooSoon { retry_after } => {
            refused(
                cx,
                session_id,
                phone,
                "send",
                "resend_too_soon",
                "resend_too_soon",
            )
            .await;
            return Err(SendError::TooSoon(retry_after));
        }
        StartOutcome::Exhausted { retry_after } => {
            refused(
                cx,
                session_id,
                phone,
                "send",
                "too_many_attempts",
                "too_many_attempts",
            )
            .await;
            return Err(SendError::Exhausted(retry_after));
        }
        StartOutcome::Refused {
            by: Refusal::Challenge,
            ..
        } => {
            refused(
                cx,
                session_id,
                phone,
                "send",
                Refusal::Challenge.code(),
                "challenge",
            )
            .await;
            return Err(SendError::Refused(Refusal::Challenge, Duration::ZERO));
        }
        StartOutcome::Refused { by, retry_after } => {
            refused(cx, session_id, phone, "send", by.code(), limit_name(by)).await;
            tracing::info!(phone = %phone, refusal = ?by, "send refused by an abuse limit");
            return Err(SendError::Refused(by, retry_after));
        }
    };
    let (code_mac, ttl) = (drawn.mac, drawn.ttl);
    let mut delivery_id = None;
    if fixed.is_none() {
        let msg = OutgoingCode {
            to: phone.clone(),
            text: cx
                .templates
                .render(phone, locale.as_deref(), &drawn.code, ttl),
            code: drawn.code,
            lifetime: ttl,
            locale,
        };
        match cx.provider.send(&msg).await {
            Ok(receipt) => {
                tracing::info!(phone = %phone, provider = %receipt.provider, message_id = ?receipt.message_id, "code delivered to provider");
                // A delivery record costs a commit of its own, after the provider answered: it
                // is written only where it can be used, for a backend (which gets its id to
                // follow) or for an instance that pushes receipts (which move it forward).
                let used =
                    !caller.browser || cx.providers.receipt_source(&receipt.provider).is_some();
                if let Some(message_id) = receipt.message_id.as_deref().filter(|_| used) {
                    delivery_id =
                        record_delivery(cx, session_id, &receipt.provider, message_id, country)
                            .await;
                }
            }
            Err(e) => {
                tracing::warn!(phone = %phone, error = %e, "code delivery failed");
                // Nothing went out: the cooldown is lifted and the quotas and the breaker
                // get this send back, so an outage does not use up people's allowances.
                if let Err(undo) = cx
                    .store
                    .abandon_send(session_id, phone, &code_mac, &guard)
                    .await
                {
                    tracing::warn!(error = %undo, "could not undo the failed send");
                }
                // A session born with this send goes with it: otherwise numbers the provider
                // refuses would mint sessions for free (the quotas were just given back).
                if let Some(key) = born.take() {
                    *session = None;
                    if let Err(undo) = cx.store.flush(&key.hash()).await {
                        tracing::warn!(error = %undo, "could not remove the failed send's session");
                    }
                }
                return Err(e.into());
            }
        }
    }
    Ok(Sent {
        expires_in: ttl.as_secs(),
        resend_in: v.resend_interval,
        delivery_id,
    })
}

/// Counts a refusal (by the client's `error` code) and reports it as a `verification.refused`
/// event naming the limit (recorded only while some daemon delivers events). A refusal writes
/// no state, so there is no change for a trigger to see; a store failure here costs only the
/// event, the refusal stands.
async fn refused(
    cx: &Context<'_>,
    session_id: i64,
    phone: &PhoneNumber,
    operation: &str,
    error: &str,
    limit: &str,
) {
    cx.metrics.quota_refused(error);
    if !cx.record_refusals {
        return;
    }
    let event = Refused {
        session_id,
        phone: phone.as_str(),
        operation,
        limit,
        error,
    };
    if let Err(e) = cx.store.record_refusal(&event).await {
        tracing::warn!(error = %e, "could not record the refusal event");
    }
}

/// Which limit refused, finer than the client's `error` code: the quota's scope.
fn limit_name(by: Refusal) -> &'static str {
    match by {
        Refusal::Quota(scope) => scope.as_str(),
        Refusal::Locked => "locked",
        Refusal::Breaker => "breaker",
        Refusal::Challenge => "challenge",
    }
}

/// Records the accepted send for its receipts. The code is already on its way, so a store
/// failure here is logged and the send still succeeds, only without a delivery record.
async fn record_delivery(
    cx: &Context<'_>,
    session_id: i64,
    provider: &str,
    message_id: &str,
    country: &str,
) -> Option<String> {
    let id = crate::delivery::new_id();
    let new = crate::delivery::NewDelivery {
        id: &id,
        session_id,
        provider,
        message_id,
        country,
    };
    match cx.store.record_delivery(&new).await {
        Ok(()) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, provider, "could not record the delivery");
            None
        }
    }
}

/// Checks `code` for (the session of `key`, phone); on approval the session's key is cycled and
/// it gains `verified_phone` and `verified_at`, in the same transaction, which also resolves the
/// session (sliding it when due). Returns the session as the check left it, if it has one.
pub async fn check(
    cx: &Context<'_>,
    key: &KeyHash,
    phone: &PhoneNumber,
    code: &Code,
    client: Option<IpAddr>,
) -> Result<(Checked, Option<Session>), StoreError> {
    let mut guard = CheckGuard::build(&cx.limits, crate::country::CallingCode::of(phone), client);
    if cx.test_numbers.contains_key(phone.as_str()) {
        // Anyone can approve a test number (its code is fixed and public): such approvals
        // must not lift the conversion rate that the pumping breaker watches.
        guard.pumping = None;
    }
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
        key: *key,
        phone,
        code_mac: cx.code_key.mac(phone, code),
        max_attempts: cx.verification.max_attempts,
        on_approve: Approval {
            new_key: new_key.hash(),
            data: &data,
        },
    };
    let store::Checked { outcome, session } = cx.store.check_guarded(&req, &guard).await?;
    if outcome == CheckOutcome::NoSession {
        return Ok((Checked::NoSession, None));
    }
    let name = outcome_name(&outcome);
    cx.metrics.verification_checked(name);
    if let CheckOutcome::Refused { by, .. } = &outcome {
        let id = session.as_ref().map_or(0, |s| s.id);
        refused(cx, id, phone, "check", by.code(), limit_name(*by)).await;
    }
    tracing::info!(phone = %phone, outcome = name, "verification checked");
    let checked = match outcome {
        CheckOutcome::Approved { session } => Checked::Approved { session, new_key },
        CheckOutcome::Wrong { attempts_left } => Checked::Pending { attempts_left },
        CheckOutcome::Expired => Checked::Expired,
        CheckOutcome::Exhausted => Checked::Exhausted,
        CheckOutcome::NotFound => Checked::NotFound,
        CheckOutcome::Refused { by, retry_after } => Checked::Refused { by, retry_after },
        CheckOutcome::NoSession => Checked::NoSession,
    };
    Ok((checked, session))
}

fn outcome_name(o: &CheckOutcome) -> &'static str {
    match o {
        CheckOutcome::Approved { .. } => "approved",
        CheckOutcome::Wrong { .. } => "wrong",
        CheckOutcome::Expired => "expired",
        CheckOutcome::Exhausted => "exhausted",
        CheckOutcome::NotFound => "not_found",
        CheckOutcome::Refused { .. } => "refused",
        CheckOutcome::NoSession => "no_session",
    }
}
