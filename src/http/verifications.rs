//! `POST /v1/verifications` and `POST /v1/verifications/check`: the verification API for
//! browsers (session cookie) and backends (API key plus an explicit session).

use bytes::Bytes;
use http::request::Parts;
use http::{StatusCode, header};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::code::Code;
use crate::verify::{self, Checked};

use super::caller::resolve;
use super::client_ip;
use super::cookies;
use super::error::ApiError;
use super::idempotency;
use super::request::bearer;
use super::request::require_json;
use super::response::{Resp, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    phone: String,
    session: Option<String>,
    locale: Option<String>,
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
pub fn parse_code(raw: &str) -> Result<Code, ApiError> {
    Code::parse(raw)
        .ok_or_else(|| ApiError::unprocessable("invalid_code", "codes are 4 to 10 digits"))
}

/// `POST /v1/verifications`
pub async fn send(app: &App, parts: &Parts, body: &Bytes) -> Result<Resp, ApiError> {
    let req: SendBody = require_json(parts, body)?;
    let phone = app.phones.parse(&req.phone)?;
    let locale = req.locale.filter(|l| l.len() <= 35);
    let idempotency_key = idempotency::key(parts)?;
    let caller = resolve(app, parts, req.session.as_deref(), true)
        .await?
        .expect("resolve creates a session when asked to");
    let client = client_ip::browser(app, parts, caller.backend);
    let work = async {
        match verify::send(app, &caller.session, &phone, locale, client).await {
            Ok(sent) => {
                let mut body = json!({ "status": "pending", "expires_in": sent.expires_in, "resend_in": sent.resend_in });
                // Backends may follow the delivery (GET /v1/verifications/{id}); browsers have
                // no use for it.
                if let (true, Some(id)) = (caller.backend, sent.delivery_id) {
                    body["id"] = json!(id);
                }
                json(StatusCode::ACCEPTED, &body)
            }
            Err(e) => ApiError::from(e).into_response(),
        }
    };
    let mut resp = match idempotency_key {
        None => work.await,
        Some(key) => {
            let owner = match bearer(parts).and_then(|t| app.api_key_name(t)) {
                Some(name) => format!("k:{name}"),
                None => format!("s:{}", caller.session.id),
            };
            idempotency::once(app, &owner, &key, parts, body, work).await?
        }
    };
    if let Some(c) = caller.set_cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// `POST /v1/verifications/check`
pub async fn check(app: &App, parts: &Parts, body: &Bytes) -> Result<Resp, ApiError> {
    let req: CheckBody = require_json(parts, body)?;
    let phone = app.phones.parse(&req.phone)?;
    let code = parse_code(&req.code)?;
    let Some(caller) = resolve(app, parts, req.session.as_deref(), false).await? else {
        // No session, so no code to compare with; the MAC is computed all the same, so that
        // the only thing this answer's timing can tell is what the caller knows: it has no
        // session.
        std::hint::black_box(app.code_key.mac(0, &phone, &code));
        return Ok(not_found());
    };
    let mut cookie = caller.set_cookie;
    let client = client_ip::browser(app, parts, caller.backend);
    let mut resp = match verify::check(app, &caller.session, &phone, &code, client).await? {
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
