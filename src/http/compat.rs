//! The seed application's routes (`/sms_send/`, `/sms_check/`), answered the way its clients
//! expect, on top of the same verification flow. Enabled by `compat.seed_routes`.

use axum::extract::State;
use bytes::Bytes;
use http::request::Parts;
use http::{StatusCode, header};
use serde_json::json;
use std::sync::Arc;

use crate::app::App;
use crate::challenge::Submitted;
use crate::session::SessionKey;
use crate::verify::{self, CallerKey, Checked};

use super::cookies;
use super::error::ApiError;
use super::request::{Body, form_params};
use super::response::{Resp, json, raw_json};

/// `GET|POST /sms_send/?phone=…` → `{"Code":"OK","Message":"OK"}` or `{"Code":<error>,…}`.
pub async fn send(State(app): State<Arc<App>>, parts: Parts, Body(body): Body) -> Resp {
    match try_send(&app, &parts, &body).await {
        Ok(resp) => resp,
        Err((e, cookie)) => {
            let mut resp = json(e.status, &json!({ "Code": e.code, "Message": e.message }));
            if let Some(secs) = e.retry_after() {
                resp.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            if let Some(c) = cookie {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
    }
}

type Failure = (ApiError, Option<http::HeaderValue>);

async fn try_send(app: &App, parts: &Parts, body: &Bytes) -> Result<Resp, Failure> {
    let params = form_params(parts, body).map_err(|e| (e, None))?;
    let raw = params.get("phone").ok_or_else(|| {
        (
            ApiError::unprocessable("invalid_phone", "the `phone` parameter is required"),
            None,
        )
    })?;
    let phone = app.phones.parse(raw).map_err(|e| (e.into(), None))?;
    // The cookie's session is resolved, or a new one created with an accepted send, in the
    // send's own statement (the seed's routes know no API keys).
    let key = cookies::session_key(parts, &app.config.session.full_cookie_name());
    let client = super::client_ip::browser(app, parts, false);
    let submitted = Submitted {
        altcha: params.get("altcha").map(String::as_str),
        turnstile: params.get("cf-turnstile-response").map(String::as_str),
        hcaptcha: params.get("h-captcha-response").map(String::as_str),
    };
    let challenge_passed = super::challenge::passed(app, parts, submitted, false)
        .await
        .map_err(|e| (e, None))?;
    let locale = super::accept_language::locale(&app.templates, parts, None);
    let caller = CallerKey {
        key: key.as_ref().map(SessionKey::hash),
        browser: true,
    };
    let sending = verify::send(
        &app.flow(),
        caller,
        &phone,
        locale,
        client,
        challenge_passed,
    )
    .await;
    let cookie = match (sending.session, sending.born) {
        (Some(s), Some(born)) => Some(cookies::set_cookie(&app.config.session, &born, &s)),
        (Some(s), None) if s.refreshed => key
            .as_ref()
            .map(|k| cookies::set_cookie(&app.config.session, k, &s)),
        _ => None,
    };
    match sending.result {
        Ok(_) => {
            let mut resp = json(StatusCode::OK, &json!({ "Code": "OK", "Message": "OK" }));
            if let Some(c) = cookie {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            Ok(resp)
        }
        Err(e) => Err((e.into(), cookie)),
    }
}

/// The seed's exact answers: Django's `JsonResponse` separators included.
const OK: &str = r#"{"result": "OK"}"#;
const FALSE: &str = r#"{"result": "False"}"#;

/// `GET|POST /sms_check/?phone=…&code=…` → `{"result": "OK"}` or `{"result": "False"}`.
pub async fn check(
    State(app): State<Arc<App>>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp, ApiError> {
    let params = form_params(&parts, &body)?;
    let no = || Ok(raw_json(StatusCode::OK, FALSE));
    let (Some(raw_phone), Some(raw_code)) = (params.get("phone"), params.get("code")) else {
        return no();
    };
    let (Ok(phone), Some(code)) = (
        app.phones.parse(raw_phone),
        crate::code::Code::parse_in(raw_code, app.config.verification.alphabet),
    ) else {
        return no();
    };
    let Some(key) = cookies::session_key(&parts, &app.config.session.full_cookie_name()) else {
        return no();
    };
    let mut resp;
    let client = super::client_ip::browser(&app, &parts, false);
    let (checked, session) = verify::check(&app.flow(), &key.hash(), &phone, &code, client).await?;
    match checked {
        Checked::Approved { session, new_key } => {
            resp = raw_json(StatusCode::OK, OK);
            let c = cookies::set_cookie(&app.config.session, &new_key, &session);
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        _ => {
            resp = raw_json(StatusCode::OK, FALSE);
            if let Some(s) = session.filter(|s| s.refreshed) {
                let c = cookies::set_cookie(&app.config.session, &key, &s);
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
        }
    }
    Ok(resp)
}
