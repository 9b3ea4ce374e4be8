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
use crate::verify::{self, Checked};

use super::caller::browser_session;
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
    // No session is created here: verify::send creates one only with an accepted send.
    let caller = browser_session(app, parts, false)
        .await
        .map_err(|e| (e, None))?;
    let client = super::client_ip::browser(app, parts, false);
    let session = caller.as_ref().map(|c| &c.session);
    let cookie = caller.as_ref().and_then(|c| c.set_cookie.clone());
    let submitted = Submitted {
        altcha: params.get("altcha").map(String::as_str),
        turnstile: params.get("cf-turnstile-response").map(String::as_str),
        hcaptcha: params.get("h-captcha-response").map(String::as_str),
    };
    let challenge_passed = super::challenge::passed(app, parts, submitted, false)
        .await
        .map_err(|e| (e, cookie.clone()))?;
    let locale = super::accept_language::locale(&app.templates, parts, None);
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
            let mut resp = json(StatusCode::OK, &json!({ "Code": "OK", "Message": "OK" }));
            let cookie = match sent.created {
                Some((key, s)) => Some(cookies::set_cookie(&app.config.session, &key, &s)),
                None => cookie,
            };
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
    let Some(caller) = browser_session(&app, &parts, false).await? else {
        return no();
    };
    let mut resp;
    let client = super::client_ip::browser(&app, &parts, false);
    match verify::check(&app.flow(), &caller.session, &phone, &code, client).await? {
        Checked::Approved { session, new_key } => {
            resp = raw_json(StatusCode::OK, OK);
            let c = cookies::set_cookie(&app.config.session, &new_key, &session);
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
        _ => {
            resp = raw_json(StatusCode::OK, FALSE);
            if let Some(c) = caller.set_cookie {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
        }
    }
    Ok(resp)
}
