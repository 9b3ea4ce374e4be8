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
use crate::session::{Session, SessionKey};
use crate::verify::{self, CallerKey, Checked, Sending};

use super::caller::{from_cookie, presented, session_by_key};
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
    let who = presented(&app, &parts, req.session.as_deref())?;
    let backend = who.backend;
    // An Idempotency-Key is recorded under its owner, a browser's session id: only such
    // requests learn their session before the send (one more statement, BENCHMARKS.md).
    // Every other send resolves (or, for a browser, creates) its session in the send's own
    // statement; a refused send creates none.
    let caller = match (&idempotency_key, &who.key) {
        (Some(_), _) if !backend => from_cookie(&app, &parts).await?,
        // A backend's unknown session is answered before anything is recorded under its key.
        (Some(_), Some(key)) => {
            session_by_key(&app, key.as_str()).await?;
            None
        }
        _ => None,
    };
    let client = client_ip::browser(&app, &parts, backend);
    let submitted = Submitted {
        altcha: req.altcha.as_deref(),
        turnstile: req.turnstile.as_deref(),
        hcaptcha: req.hcaptcha.as_deref(),
    };
    // The caller's session as the send's statement left it, and the key of one it created.
    let mut after: Option<(Option<Session>, Option<SessionKey>)> = None;
    let work = async {
        // Backends are never challenged; a browser passes with a valid solution (checked, and
        // spent, before anything is sent), and a bad one ends the request here.
        let challenge_passed = backend
            || match challenge::passed(&app, &parts, submitted, backend).await {
                Ok(passed) => passed,
                Err(e) => return e.into_response(),
            };
        let caller_key = CallerKey {
            key: who.key.as_ref().map(SessionKey::hash),
            browser: !backend,
        };
        let Sending {
            result,
            session,
            born,
        } = verify::send(
            &app.flow(),
            caller_key,
            &phone,
            locale,
            client,
            challenge_passed,
        )
        .await;
        after = Some((session, born));
        match result {
            Ok(sent) => {
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
    let owner = match (bearer(&parts).and_then(|t| app.api_key_name(t)), &caller) {
        (Some(name), _) => Some(format!("k:{name}")),
        (None, Some(c)) => Some(format!("s:{}", c.session.id)),
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
            match &after {
                Some((Some(s), Some(_))) => {
                    let owner = format!("s:{}", s.id);
                    idempotency::once(&app, &owner, &key, &parts, &body, async { resp }).await?
                }
                _ => resp,
            }
        }
    };
    let cookie = match after {
        Some((Some(session), Some(key))) => {
            Some(cookies::set_cookie(&app.config.session, &key, &session))
        }
        // The send's statement slid the cookie's session: its cookie goes out again.
        Some((Some(session), None)) if !backend && session.refreshed => who
            .key
            .as_ref()
            .map(|k| cookies::set_cookie(&app.config.session, k, &session)),
        _ => caller.and_then(|c| c.set_cookie),
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
    let who = presented(&app, &parts, req.session.as_deref())?;
    let code_mac = app.code_key.mac(&phone, &code);
    let Some(key) = who.key else {
        // No session, so no code to compare with; the MAC is computed all the same, so that
        // the only thing this answer's timing can tell is what the caller knows: it has no
        // session.
        std::hint::black_box(code_mac);
        return Ok(not_found());
    };
    let client = client_ip::browser(&app, &parts, who.backend);
    let (checked, session) = verify::check(&app.flow(), &key.hash(), &phone, &code, client).await?;
    // The check's statement slid the session: its cookie goes out again.
    let mut cookie = session
        .filter(|s| !who.backend && s.refreshed)
        .map(|s| cookies::set_cookie(&app.config.session, &key, &s));
    let mut resp = match checked {
        Checked::Approved { session, new_key } => {
            let mut body = json!({ "status": "approved", "verified_phone": phone.as_str() });
            if who.backend {
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
        // A browser's stale cookie is a browser without a session; a backend named a session
        // that does not exist.
        Checked::NoSession if who.backend => {
            return Err(ApiError::not_found(
                "session_not_found",
                "no such session (or it expired)",
            ));
        }
        Checked::NoSession => not_found(),
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
