//! `GET /v1/session`: what a browser may learn about its own session. Only the verification
//! facts leave the server; the rest of the data is the backend's (carts, user ids, flags) and
//! stays out of reach of scripts running in the page.

use axum::extract::State;
use http::request::Parts;
use http::{StatusCode, header};
use serde_json::{Value, json};
use std::sync::Arc;

use crate::app::App;
use crate::session::Session;

use super::caller::from_cookie;
use super::error::ApiError;
use super::openapi::shared as doc;
use super::response::{Resp, json};

/// The keys a browser may read back, as written by an approved check.
const VISIBLE: [&str; 2] = ["verified_phone", "verified_at"];

/// `GET /v1/session`: `{"verified_phone": …, "verified_at": …}` (both `null` until a number is
/// verified), or 404 `no_session` when the request carries no live session cookie.
#[utoipa::path(
    get,
    path = "/v1/session",
    operation_id = "ownSession",
    tag = "verifications",
    summary = "The caller's own verification facts",
    description = "Cookie-bound: what the browser's own session says about verification. Only `verified_phone` and `verified_at` are shown (both null until a number is verified); the rest of the session data belongs to the backend. An `Authorization` header is ignored. Reading slides the session's expiry and may re-send the cookie.",
    security(("sessionCookie" = []), ()),
    responses(
        (
            status = 200,
            description = "The session's verification facts.",
            body = doc::OwnSession,
            content_type = "application/json",
            headers(("Set-Cookie")),
            examples(
                ("verified" = (value = json!({"verified_phone": "+8613800138000", "verified_at": "2026-11-26T04:00:00Z"}))),
                ("unverified" = (value = json!({"verified_phone": null, "verified_at": null}))),
            )
        ),
        (
            status = 404,
            description = "No live session cookie (`no_session`).",
            body = doc::Error,
            content_type = "application/json",
            examples(
                ("no_session" = (value = json!({"error": "no_session", "message": "this browser has no session; one starts with the first code sent"}))),
            )
        ),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
    )
)]
pub async fn get(State(app): State<Arc<App>>, parts: Parts) -> Result<Resp, ApiError> {
    let Some(caller) = from_cookie(&app, &parts).await? else {
        return Err(ApiError::not_found(
            "no_session",
            "this browser has no session; one starts with the first code sent",
        ));
    };
    let mut resp = json(StatusCode::OK, &visible_facts(&caller.session));
    if let Some(c) = caller.set_cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// The verification facts of a session; anything that is not a string (a backend may have
/// written these names itself) reads as not verified.
fn visible_facts(session: &Session) -> Value {
    let mut out = serde_json::Map::new();
    for name in VISIBLE {
        let v = session.data.get(name).filter(|v| v.is_string());
        out.insert(name.into(), v.cloned().unwrap_or(Value::Null));
    }
    json!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Expiry;
    use std::time::SystemTime;

    fn session(data: Value) -> Session {
        Session {
            id: 1,
            data: data.as_object().unwrap().clone(),
            expiry: Expiry::Default,
            created_at: SystemTime::now(),
            expires_at: None,
            refreshed: false,
            version: 1,
        }
    }

    #[test]
    fn only_the_verification_facts_are_visible() {
        let s = session(json!({
            "verified_phone": "+8613800138000",
            "verified_at": "2026-11-26T04:03:53Z",
            "user_id": 42,
            "cart": {"items": 3},
        }));
        assert_eq!(
            visible_facts(&s),
            json!({"verified_phone": "+8613800138000", "verified_at": "2026-11-26T04:03:53Z"})
        );
    }

    #[test]
    fn unverified_or_odd_values_read_as_null() {
        assert_eq!(
            visible_facts(&session(json!({"cart": []}))),
            json!({"verified_phone": null, "verified_at": null})
        );
        assert_eq!(
            visible_facts(&session(json!({"verified_phone": {"nested": "x"}}))),
            json!({"verified_phone": null, "verified_at": null})
        );
    }
}
