//! Who is calling and with which session: a browser carrying the session cookie, or a backend
//! with an API key naming a session explicitly.

use http::HeaderValue;
use http::request::Parts;

use crate::app::App;
use crate::session::{Expiry, Session, SessionKey};

use super::cookies;
use super::error::ApiError;
use super::request::bearer;

/// The session a request acts on.
pub struct Resolved {
    pub session: Session,
    /// Set when the caller is a backend (it gets new keys in the body, not as cookies).
    pub backend: bool,
    /// For browsers: a `Set-Cookie` to send (new session, or its expiry moved).
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

/// A session key from a URL or body: malformed keys are as unknown as missing ones.
pub async fn session_by_key(app: &App, key: &str) -> Result<Session, ApiError> {
    let missing = || ApiError::not_found("session_not_found", "no such session (or it expired)");
    let key = SessionKey::parse(key).ok_or_else(missing)?;
    app.store
        .touch_session(&key.hash())
        .await?
        .ok_or_else(missing)
}

/// The caller's session. Backends must name it (`explicit`); browsers use their cookie, and
/// when `create` is set a browser without a live session gets a new one.
/// Returns `None` for a browser without a session when `create` is false.
pub async fn resolve(
    app: &App,
    parts: &Parts,
    explicit: Option<&str>,
    create: bool,
) -> Result<Option<Resolved>, ApiError> {
    if backend(app, parts)? {
        return backend_session(app, explicit).await.map(Some);
    }
    if explicit.is_some() {
        // Naming a session in the body is the backend's privilege.
        return Err(ApiError::unauthorized());
    }
    browser_session(app, parts, create).await
}

async fn backend_session(app: &App, explicit: Option<&str>) -> Result<Resolved, ApiError> {
    let key = explicit.ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_field",
            "`session` is required when calling with an API key",
        )
    })?;
    let session = session_by_key(app, key).await?;
    Ok(Resolved {
        session,
        backend: true,
        set_cookie: None,
    })
}

/// The session of a browser: its cookie only, whatever `Authorization` says (the seed's routes
/// know no API keys).
pub async fn browser_session(
    app: &App,
    parts: &Parts,
    create: bool,
) -> Result<Option<Resolved>, ApiError> {
    if let Some(found) = from_cookie(app, parts).await? {
        return Ok(Some(found));
    }
    if !create {
        return Ok(None);
    }
    let cfg = &app.config.session;
    let (key, session) =
        super::sessions::new_session(app, &Default::default(), Expiry::Default).await?;
    let set_cookie = Some(cookies::set_cookie(cfg, &key, &session));
    Ok(Some(Resolved {
        session,
        backend: false,
        set_cookie,
    }))
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
        backend: false,
        set_cookie,
    }))
}
