//! The backend session API (`/v1/sessions/…`): Django's session operations over HTTP, for
//! application servers holding an API key.

use axum::extract::State;
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::SystemTime;

use crate::app::App;
use crate::session::{Expiry, Session, SessionKey};
use crate::session_data::{check_data, check_integers, check_name, check_value};
use crate::store::{DeleteOutcome, ReplaceOutcome, StoreError};

use super::caller::{require_backend, session_by_key};
use super::cookies;
use super::error::ApiError;
use super::request::{Body, PathParams, json_body, query, require_json};
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

/// The session's answer with its version as a strong `ETag` (`"v<N>"`), for `If-Match`.
fn with_etag(app: &App, key: &SessionKey, s: &Session, status: StatusCode) -> Resp {
    let mut resp = json(status, &view(app, key, s));
    if let Ok(v) = http::HeaderValue::from_str(&etag(s.version)) {
        resp.headers_mut().insert(http::header::ETAG, v);
    }
    resp
}

fn etag(version: i64) -> String {
    format!("\"v{version}\"")
}

/// The version an `If-Match` header asks for: `None` without the header (or with `*`, which any
/// live session matches). Anything but one strong tag of ours can match no version, so it
/// is answered 412 like a stale tag rather than silently ignored.
fn if_match(parts: &Parts) -> Result<Option<i64>> {
    let Some(raw) = parts.headers.get(http::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = raw.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix("\"v")
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| !t.is_empty() && t.len() <= 18 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::precondition_failed(
                "version_mismatch",
                "If-Match must be one ETag of this session, such as \"v3\"",
            )
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
pub async fn create(State(app): State<Arc<App>>, parts: Parts, Body(body): Body) -> Result<Resp> {
    require_backend(&app, &parts)?;
    let req: Option<CreateBody> = json_body(&parts, &body, true)?;
    let (data, expiry) = match req {
        Some(b) => (b.data, b.expiry),
        None => (Map::new(), Expiry::Default),
    };
    check_integers(&body)?;
    check_data(&data)?;
    let (key, s) = new_session(&app, &data, expiry).await?;
    Ok(with_etag(&app, &key, &s, StatusCode::CREATED))
}

/// `GET /v1/sessions/{key}`
pub async fn get(
    State(app): State<Arc<App>>,
    PathParams(key): PathParams<String>,
    parts: Parts,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    let k = parse_key(&key)?;
    let s = session_by_key(&app, &key).await?;
    Ok(with_etag(&app, &k, &s, StatusCode::OK))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceBody {
    data: Map<String, Value>,
    expiry: Expiry,
}

/// `PUT /v1/sessions/{key}` with `{"data": {…}, "expiry": …}`: Django's whole-session `save()`
/// as one store operation, optionally guarded by `If-Match`.
pub async fn replace(
    State(app): State<Arc<App>>,
    PathParams(key): PathParams<String>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    let req: ReplaceBody = require_json(&parts, &body)?;
    check_integers(&body)?;
    check_data(&req.data)?;
    let k = parse_key(&key)?;
    let wanted = if_match(&parts)?;
    match app
        .store
        .replace_session(&k.hash(), &req.data, req.expiry, wanted)
        .await?
    {
        ReplaceOutcome::Replaced(s) => Ok(with_etag(&app, &k, &s, StatusCode::OK)),
        ReplaceOutcome::NoSession => Err(missing()),
        ReplaceOutcome::VersionMismatch(now) => Err(ApiError::precondition_failed(
            "version_mismatch",
            format!(
                "the session changed since that ETag was read (it is now {})",
                etag(now)
            ),
        )),
    }
}

/// `GET /v1/sessions/{key}/data/{name}[?default=JSON]`
pub async fn get_value(
    State(app): State<Arc<App>>,
    PathParams((key, name)): PathParams<(String, String)>,
    parts: Parts,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    check_name(&name)?;
    let default = match query(&parts).get("default") {
        Some(raw) => Some(serde_json::from_str::<Value>(raw).map_err(|e| {
            ApiError::bad_request("invalid_query", format!("`default` must be JSON: {e}"))
        })?),
        None => None,
    };
    let s = session_by_key(&app, &key).await?;
    let value = s.data.get(&name).cloned().or(default).ok_or_else(|| {
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
    State(app): State<Arc<App>>,
    PathParams((key, name)): PathParams<(String, String)>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    check_name(&name)?;
    let req: SetBody = require_json(&parts, &body)?;
    check_integers(&body)?;
    check_value(&name, &req.value)?;
    let k = parse_key(&key)?;
    app.store
        .set_value(&k.hash(), &name, &req.value)
        .await?
        .ok_or_else(missing)?;
    Ok(json(
        StatusCode::OK,
        &json!({ "name": name, "value": req.value }),
    ))
}

/// `DELETE /v1/sessions/{key}/data/{name}`
pub async fn delete_value(
    State(app): State<Arc<App>>,
    PathParams((key, name)): PathParams<(String, String)>,
    parts: Parts,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    check_name(&name)?;
    let k = parse_key(&key)?;
    match app.store.delete_value(&k.hash(), &name).await? {
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
pub async fn clear(
    State(app): State<Arc<App>>,
    PathParams(key): PathParams<String>,
    parts: Parts,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    let k = parse_key(&key)?;
    let s = app.store.clear(&k.hash()).await?.ok_or_else(missing)?;
    Ok(with_etag(&app, &k, &s, StatusCode::OK))
}

/// `POST /v1/sessions/{key}/flush`
pub async fn flush(
    State(app): State<Arc<App>>,
    PathParams(key): PathParams<String>,
    parts: Parts,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    let k = parse_key(&key)?;
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
pub async fn cycle(
    State(app): State<Arc<App>>,
    PathParams(key): PathParams<String>,
    parts: Parts,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    let k = parse_key(&key)?;
    let new_key = SessionKey::generate();
    let s = app
        .store
        .cycle(&k.hash(), &new_key.hash())
        .await?
        .ok_or_else(missing)?;
    Ok(with_etag(&app, &new_key, &s, StatusCode::OK))
}

/// `PUT /v1/sessions/{key}/expiry` with `{"expiry": N | 0 | null | "default" | {"at": …}}`
pub async fn set_expiry(
    State(app): State<Arc<App>>,
    PathParams(key): PathParams<String>,
    parts: Parts,
    Body(body): Body,
) -> Result<Resp> {
    require_backend(&app, &parts)?;
    let mut req: Map<String, Value> = require_json(&parts, &body)?;
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
    let k = parse_key(&key)?;
    let s = app
        .store
        .set_expiry(&k.hash(), expiry)
        .await?
        .ok_or_else(missing)?;
    Ok(with_etag(&app, &k, &s, StatusCode::OK))
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
