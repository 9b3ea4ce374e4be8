//! Who is calling and with which session: a browser carrying the session cookie, or a backend
//! with an API key naming a session explicitly.

use http::HeaderValue;
use http::request::Parts;

use crate::app::App;
use crate::session::{Session, SessionKey};

use super::cookies;
use super::error::ApiError;
use super::request::bearer;

/// A browser's session, found by its cookie.
pub struct Resolved {
    pub session: Session,
    /// A `Set-Cookie` to send (its expiry moved).
    pub set_cookie: Option<HeaderValue>,
}

/// Checks the API key when an `Authorization` header is present: `Ok(true)` for a valid key,
/// `Ok(false)` when there is no header, 401 for anything else.
pub fn backend(app: &App, parts: &Parts) -> Result<bool, ApiError> {
    match bearer(parts) {
        None => Ok(false),
        Some(token) => match app.api_key_name(token) {
            Some(name) => {
                tracing::debug!(api_key = name, "backend caller");
                Ok(true)
            }
            None => Err(ApiError::unauthorized()),
        },
    }
}

/// Requires a valid API key (the backend session API).
pub fn require_backend(app: &App, parts: &Parts) -> Result<(), ApiError> {
    if backend(app, parts)? {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// Who is calling, learnt from the request alone (no store call): the send and check
/// statements resolve the session themselves.
pub struct Presented {
    /// A backend with a valid API key (it names its session in the body).
    pub backend: bool,
    /// The session key presented: a backend's explicit one, or a browser's cookie.
    pub key: Option<SessionKey>,
}

/// The caller and the session key it presents: backends
/// must name a session (422 without; a malformed key is as unknown as a missing session, 404),
/// and only backends may name one in the body (401).
pub fn presented(app: &App, parts: &Parts, explicit: Option<&str>) -> Result<Presented, ApiError> {
    if backend(app, parts)? {
        let raw = explicit.ok_or_else(|| {
            ApiError::unprocessable(
                "invalid_field",
                "`session` is required when calling with an API key",
            )
        })?;
        let key = SessionKey::parse(raw).ok_or_else(|| {
            ApiError::not_found("session_not_found", "no such session (or it expired)")
        })?;
        return Ok(Presented {
            backend: true,
            key: Some(key),
        });
    }
    if explicit.is_some() {
        return Err(ApiError::unauthorized());
    }
    Ok(Presented {
        backend: false,
        key: cookies::session_key(parts, &app.config.session.full_cookie_name()),
    })
}

/// A session key from a URL or body: malformed keys are as unknown as missing ones.
pub async fn session_by_key(app: &App, key: &str) -> Result<Session, ApiError> {
    let missing = || ApiError::not_found("session_not_found", "no such session (or it expired)");
    let key = SessionKey::parse(key).ok_or_else(missing)?;
    app.store
        .touch_session(&key.hash())
        .await?
        .ok_or_else(missing)
}

/// The live session named by the request's cookie, if any; the cookie is re-sent when the read
/// moved the expiry. An API key is not looked at: this is the browser's view.
pub async fn from_cookie(app: &App, parts: &Parts) -> Result<Option<Resolved>, ApiError> {
    let cfg = &app.config.session;
    let Some(key) = cookies::session_key(parts, &cfg.full_cookie_name()) else {
        return Ok(None);
    };
    let Some(session) = app.store.touch_session(&key.hash()).await? else {
        return Ok(None);
    };
    let set_cookie = session
        .refreshed
        .then(|| cookies::set_cookie(cfg, &key, &session));
    Ok(Some(Resolved {
        session,
        set_cookie,
    }))
}
