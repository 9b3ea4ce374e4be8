//! The backend session API (`/v1/sessions/…`): Django's session operations over HTTP, for
//! application servers holding an API key.

use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::SystemTime;

use crate::app::App;
use crate::session::{Expiry, Session, SessionKey};
use crate::session_data::{check_data, check_integers, check_name, check_value};
use crate::store::{DeleteOutcome, StoreError};

use super::caller::{require_backend, session_by_key};
use super::cookies;
use super::error::ApiError;
use super::request::{json_body, query, require_json};
use super::response::{Resp, json};

type Result<T> = std::result::Result<T, ApiError>;

/// The JSON a backend gets for a session, including a ready `Set-Cookie` value to forward.
fn view(app: &App, key: &SessionKey, s: &Session) -> Value {
    let now = SystemTime::now();
    json!({
        "key": key.as_str(),
        "data": s.data,
        "expiry": s.expiry,
        "created_at": crate::time::rfc3339(s.created_at),
        "expires_at": s.expires_at.map(crate::time::rfc3339),
        "max_age": cookies::max_age(s, now),
        "set_cookie": cookies::set_cookie(&app.config.session, key, s).to_str().unwrap_or_default(),
    })
}

fn missing() -> ApiError {
    ApiError::not_found("session_not_found", "no such session (or it expired)")
}

/// Parses the `{key}` path segment; a malformed key is an unknown session.
fn parse_key(key: &str) -> Result<SessionKey> {
    SessionKey::parse(key).ok_or_else(missing)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    #[serde(default)]
    data: Map<String, Value>,
    #[serde(default = "default_expiry")]
    expiry: Expiry,
}

fn default_expiry() -> Expiry {
    Expiry::Default
}

/// `POST /v1/sessions`
pub async fn create(app: &App, parts: &Parts, body: &Bytes) -> Result<Resp> {
    require_backend(app, parts)?;
    let req: Option<CreateBody> = json_body(parts, body, true)?;
    let (data, expiry) = match req {
        Some(b) => (b.data, b.expiry),
        None => (Map::new(), Expiry::Default),
    };
    check_integers(body)?;
    check_data(&data)?;
    let (key, s) = new_session(app, &data, expiry).await?;
    Ok(json(StatusCode::CREATED, &view(app, &key, &s)))
}

/// `GET /v1/sessions/{key}`
pub async fn get(app: &App, parts: &Parts, key: &str) -> Result<Resp> {
    require_backend(app, parts)?;
    let k = parse_key(key)?;
    let s = session_by_key(app, key).await?;
    Ok(json(StatusCode::OK, &view(app, &k, &s)))
}

/// `GET /v1/sessions/{key}/data/{name}[?default=JSON]`
pub async fn get_value(app: &App, parts: &Parts, key: &str, name: &str) -> Result<Resp> {
    require_backend(app, parts)?;
    check_name(name)?;
    let default = match query(parts).get("default") {
        Some(raw) => Some(serde_json::from_str::<Value>(raw).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("`default` must be JSON: {e}"))
        })?),
        None => None,
    };
    let s = session_by_key(app, key).await?;
    let value = s.data.get(name).cloned().or(default).ok_or_else(|| {
        ApiError::not_found("key_not_found", format!("the session has no {name:?}"))
    })?;
    Ok(json(
        StatusCode::OK,
        &json!({ "name": name, "value": value }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    value: Value,
}

/// `PUT /v1/sessions/{key}/data/{name}` with `{"value": …}`
pub async fn set_value(
    app: &App,
    parts: &Parts,
    body: &Bytes,
    key: &str,
    name: &str,
) -> Result<Resp> {
    require_backend(app, parts)?;
    check_name(name)?;
    let req: SetBody = require_json(parts, body)?;
    check_integers(body)?;
    check_value(name, &req.value)?;
    let k = parse_key(key)?;
    app.store
        .set_value(&k.hash(), name, &req.value)
        .await?
        .ok_or_else(missing)?;
    Ok(json(
        StatusCode::OK,
        &json!({ "name": name, "value": req.value }),
    ))
}

/// `DELETE /v1/sessions/{key}/data/{name}`
pub async fn delete_value(app: &App, parts: &Parts, key: &str, name: &str) -> Result<Resp> {
    require_backend(app, parts)?;
    check_name(name)?;
    let k = parse_key(key)?;
    match app.store.delete_value(&k.hash(), name).await? {
        DeleteOutcome::NoSession => Err(missing()),
        DeleteOutcome::NoSuchKey => Err(ApiError::not_found(
            "key_not_found",
            format!("the session has no {name:?}"),
        )),
        DeleteOutcome::Deleted(_) => Ok(json(
            StatusCode::OK,
            &json!({ "name": name, "deleted": true }),
        )),
    }
}

/// `POST /v1/sessions/{key}/clear`
pub async fn clear(app: &App, parts: &Parts, key: &str) -> Result<Resp> {
    require_backend(app, parts)?;
    let k = parse_key(key)?;
    let s = app.store.clear(&k.hash()).await?.ok_or_else(missing)?;
    Ok(json(StatusCode::OK, &view(app, &k, &s)))
}

/// `POST /v1/sessions/{key}/flush`
pub async fn flush(app: &App, parts: &Parts, key: &str) -> Result<Resp> {
    require_backend(app, parts)?;
    let k = parse_key(key)?;
    if !app.store.flush(&k.hash()).await? {
        return Err(missing());
    }
    app.metrics.session_flushed();
    let expired = cookies::expire_cookie(&app.config.session);
    Ok(json(
        StatusCode::OK,
        &json!({ "flushed": true, "set_cookie": expired.to_str().unwrap_or_default() }),
    ))
}

/// `POST /v1/sessions/{key}/cycle`
pub async fn cycle(app: &App, parts: &Parts, key: &str) -> Result<Resp> {
    require_backend(app, parts)?;
    let k = parse_key(key)?;
    let new_key = SessionKey::generate();
    let s = app
        .store
        .cycle(&k.hash(), &new_key.hash())
        .await?
        .ok_or_else(missing)?;
    Ok(json(StatusCode::OK, &view(app, &new_key, &s)))
}

/// `PUT /v1/sessions/{key}/expiry` with `{"expiry": N | 0 | null | "default"}`
pub async fn set_expiry(app: &App, parts: &Parts, body: &Bytes, key: &str) -> Result<Resp> {
    require_backend(app, parts)?;
    let mut req: Map<String, Value> = require_json(parts, body)?;
    let raw = req
        .remove("expiry")
        .ok_or_else(|| ApiError::unprocessable("invalid_field", "missing field `expiry`"))?;
    if let Some(extra) = req.keys().next() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("unknown field `{extra}`"),
        ));
    }
    let expiry: Expiry = serde_json::from_value(raw)
        .map_err(|e| ApiError::unprocessable("invalid_field", e.to_string()))?;
    let k = parse_key(key)?;
    let s = app
        .store
        .set_expiry(&k.hash(), expiry)
        .await?
        .ok_or_else(missing)?;
    Ok(json(StatusCode::OK, &view(app, &k, &s)))
}

/// Creates a session under a fresh key, for the session API. (A browser's session is born
/// with its first accepted send, in the store's send transaction: see `verify::send`.)
pub async fn new_session(
    app: &App,
    data: &Map<String, Value>,
    expiry: Expiry,
) -> std::result::Result<(SessionKey, Session), StoreError> {
    let key = SessionKey::generate();
    let session = app.store.create_session(&key.hash(), data, expiry).await?;
    app.metrics.session_created();
    Ok((key, session))
}
