//! `POST /v1/verifications` and `POST /v1/verifications/check`: the verification API for
//! browsers (session cookie) and backends (API key plus an explicit session).

use axum::extract::State;
use axum::response::IntoResponse;
use http::request::Parts;
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use crate::app::App;
use crate::challenge::Submitted;
use crate::code::Code;
use crate::verify::{self, Checked};

use super::caller::resolve;
use super::challenge;
use super::client_ip;
use super::cookies;
use super::error::ApiError;
use super::idempotency;
use super::request::require_json;
use super::request::{Body, bearer};
use super::response::{Resp, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    phone: String,
    session: Option<String>,
    locale: Option<String>,
    /// A solved challenge, under the name its widget gives it (see `crate::challenge`).
    altcha: Option<String>,
    #[serde(rename = "cf-turnstile-response")]
    turnstile: Option<String>,
    #[serde(rename = "h-captcha-response")]
    hcaptcha: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    phone: String,
    code: String,
    session: Option<String>,
}

/// Parses the code a person typed; text that cannot be a code is refused without costing an
/// attempt.
pub fn parse_code(app: &App, raw: &str) -> Result<Code, ApiError> {
    let alphabet = app.config.verification.alphabet;
    Code::parse_in(raw, alphabet)
        .ok_or_else(|| ApiError::unprocessable("invalid_code", alphabet.describe()))
}

/// `POST /v1/verifications`
pub async fn send(
    State(app): State<Arc<App>>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp, ApiError> {
    let req: SendBody = require_json(&parts, &body)?;
    let phone = app.phones.parse(&req.phone)?;
    let locale = super::accept_language::locale(
        &app.templates,
        &parts,
        req.locale.filter(|l| l.len() <= 35),
    );
    let idempotency_key = idempotency::key(&parts)?;
    // A browser without a session gets one only with an accepted send (verify::send creates
    // it in the send's transaction), so refused requests cost the store nothing lasting.
    let caller = resolve(&app, &parts, req.session.as_deref(), false).await?;
    let backend = caller.as_ref().is_some_and(|c| c.backend);
    let client = client_ip::browser(&app, &parts, backend);
    let submitted = Submitted {
        altcha: req.altcha.as_deref(),
        turnstile: req.turnstile.as_deref(),
        hcaptcha: req.hcaptcha.as_deref(),
    };
    let session = caller.as_ref().map(|c| &c.session);
    let mut born = None;
    let work = async {
        // Backends are never challenged; a browser passes with a valid solution (checked, and
        // spent, before anything is sent), and a bad one ends the request here.
        let challenge_passed = backend
            || match challenge::passed(&app, &parts, submitted, backend).await {
                Ok(passed) => passed,
                Err(e) => return e.into_response(),
            };
        match verify::send(
            &app.flow(),
            session,
            &phone,
            locale,
            client,
            challenge_passed,
        )
        .await
        {
            Ok(sent) => {
                born = sent.created;
                let mut body = json!({ "status": "pending", "expires_in": sent.expires_in, "resend_in": sent.resend_in });
                // Backends may follow the delivery (GET /v1/verifications/{id}); browsers have
                // no use for it.
                if let (true, Some(id)) = (backend, sent.delivery_id) {
                    body["id"] = json!(id);
                }
                json(StatusCode::ACCEPTED, &body)
            }
            Err(e) => ApiError::from(e).into_response(),
        }
    };
    let owner = match (bearer(&parts).and_then(|t| app.api_key_name(t)), session) {
        (Some(name), _) => Some(format!("k:{name}")),
        (None, Some(s)) => Some(format!("s:{}", s.id)),
        (None, None) => None,
    };
    let mut resp = match (idempotency_key, owner) {
        (Some(key), Some(owner)) => {
            idempotency::once(&app, &owner, &key, &parts, &body, work).await?
        }
        (None, _) => work.await,
        // A browser without a session: the key is recorded only under the session its
        // accepted send created (so that a retry with the new cookie is a replay); a refused
        // send leaves nothing behind, and no other request can hold that key yet.
        (Some(key), None) => {
            let resp = work.await;
            match &born {
                Some((_, s)) => {
                    let owner = format!("s:{}", s.id);
                    idempotency::once(&app, &owner, &key, &parts, &body, async { resp }).await?
                }
                None => resp,
            }
        }
    };
    let cookie = match born {
        Some((key, session)) => Some(cookies::set_cookie(&app.config.session, &key, &session)),
        None => caller.and_then(|c| c.set_cookie),
    };
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// `POST /v1/verifications/check`
pub async fn check(
    State(app): State<Arc<App>>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp, ApiError> {
    let req: CheckBody = require_json(&parts, &body)?;
    let phone = app.phones.parse(&req.phone)?;
    let code = parse_code(&app, &req.code)?;
    let Some(caller) = resolve(&app, &parts, req.session.as_deref(), false).await? else {
        // No session, so no code to compare with; the MAC is computed all the same, so that
        // the only thing this answer's timing can tell is what the caller knows: it has no
        // session.
        std::hint::black_box(app.code_key.mac(0, &phone, &code));
        return Ok(not_found());
    };
    let mut cookie = caller.set_cookie;
    let client = client_ip::browser(&app, &parts, caller.backend);
    let mut resp = match verify::check(&app.flow(), &caller.session, &phone, &code, client).await? {
        Checked::Approved { session, new_key } => {
            let mut body = json!({ "status": "approved", "verified_phone": phone.as_str() });
            if caller.backend {
                body["session"] = json!(new_key.as_str());
            } else {
                cookie = Some(cookies::set_cookie(&app.config.session, &new_key, &session));
            }
            json(StatusCode::OK, &body)
        }
        Checked::Pending { attempts_left } => json(
            StatusCode::OK,
            &json!({ "status": "pending", "attempts_left": attempts_left }),
        ),
        Checked::Expired => json(StatusCode::OK, &json!({ "status": "expired" })),
        Checked::Exhausted => json(StatusCode::OK, &json!({ "status": "max_attempts_reached" })),
        Checked::NotFound => not_found(),
        Checked::Refused { by, retry_after } => ApiError::refused(by, retry_after).into_response(),
    };
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

fn not_found() -> Resp {
    json(
        StatusCode::NOT_FOUND,
        &json!({
            "status": "not_found",
            "error": "not_found",
            "message": "no pending verification for this number in this session",
        }),
    )
}
