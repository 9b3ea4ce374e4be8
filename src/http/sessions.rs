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
use super::openapi::shared as doc;
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

/// Both fields are optional. Unknown fields are refused (422).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateSession)]
struct CreateBody {
    /// Initial values (default: none). Names and values follow the same rules as
    /// `PUT /v1/sessions/{key}/data/{name}`; the whole, as compact JSON, may take at most
    /// `session.max_data_bytes` (413 beyond).
    #[serde(default)]
    data: Map<String, Value>,
    /// Initial expiry (default: `"default"`).
    #[serde(default = "default_expiry")]
    #[schema(value_type = doc::Expiry)]
    expiry: Expiry,
}

fn default_expiry() -> Expiry {
    Expiry::Default
}

/// `POST /v1/sessions`
#[utoipa::path(
    post,
    path = "/v1/sessions",
    operation_id = "createSession",
    tag = "sessions",
    summary = "Create a session",
    description = "Django's `SessionStore().create()`: makes a session with a fresh random key. The body is optional: no body (or an empty one, whatever its `Content-Type`) creates an empty session with the default expiry.",
    security(("bearerAuth" = [])),
    request_body(
        content = Option<CreateBody>,
        content_type = "application/json",
        examples(
            ("empty" = (value = json!({}))),
            ("with_data" = (value = json!({"data": {"cart": {"items": 3}}, "expiry": 300}))),
        ),
    ),
    responses(
        (
            status = 201,
            description = "The new session. Forward `set_cookie` to the browser as a `Set-Cookie` header.",
            body = doc::Session,
            content_type = "application/json",
            links(("GetSession" = (operation_id = "getSession", parameters(("key" = "$response.body#/key")), description = "Load the session by its key.")), ("SetValue" = (operation_id = "setValue", parameters(("key" = "$response.body#/key")))), ("GetValue" = (operation_id = "getValue", parameters(("key" = "$response.body#/key")))), ("DeleteValue" = (operation_id = "deleteValue", parameters(("key" = "$response.body#/key")))), ("SetExpiry" = (operation_id = "setExpiry", parameters(("key" = "$response.body#/key")))), ("ClearSession" = (operation_id = "clearSession", parameters(("key" = "$response.body#/key")))), ("CycleSession" = (operation_id = "cycleSession", parameters(("key" = "$response.body#/key")))), ("FlushSession" = (operation_id = "flushSession", parameters(("key" = "$response.body#/key"))))),
            examples(
                ("session" = (value = json!({"key": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5", "data": {"cart": {"items": 3}}, "expiry": "default", "created_at": "2026-11-26T04:00:00Z", "expires_at": "2026-12-10T04:00:00Z", "max_age": 1209600, "set_cookie": "sessionid=q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax; Secure"}))),
            )
        ),
        (status = 400, response = doc::MalformedJson),
        (status = 401, response = doc::Unauthorized),
        (status = 413, response = doc::SessionDataTooLarge),
        (status = 415, response = doc::JsonBodyErrors415),
        (
            status = 422,
            description = "The JSON has the wrong shape: an unknown field, `data` that is not an object, or an `expiry` that is not a whole number of seconds (0 to 2147483647), `null` or `\"default\"`; or a name in `data` breaks the name rule (1 to 256 characters, no U+0000), or a value breaks the value rule. A value may be any JSON except U+0000 in a string or object key, an integer outside the 64-bit range (send it as a string) or nesting deeper than 64 levels.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_field"]))),
            content_type = "application/json",
            examples(
                ("invalid_field" = (value = json!({"error": "invalid_field", "message": "unknown field `foo`, expected `data` or `expiry` at line 1 column 6"}))),
                ("nul_in_name" = (value = json!({"error": "invalid_field", "message": "data names must not contain U+0000 (NUL)"}))),
            )
        ),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBackend),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/sessions/{key}",
    operation_id = "getSession",
    tag = "sessions",
    summary = "Load a session",
    description = "Loads a live session. Reading slides its expiry forward at most once per `session.refresh_interval` seconds.",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
    ),
    responses(
        (
            status = 200,
            description = "The session.",
            body = doc::Session,
            content_type = "application/json",
            headers(("ETag" = String, description = "The session's version as a strong tag (`\"v<N>\"`); it changes whenever the data or the expiry policy changes. Send it back in `If-Match`.")),
            examples(
                ("session" = (value = json!({"key": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5", "data": {"cart": {"items": 3}}, "expiry": "default", "created_at": "2026-11-26T04:00:00Z", "expires_at": "2026-12-10T04:00:00Z", "max_age": 1209600, "set_cookie": "sessionid=q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax; Secure"}))),
            )
        ),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
    )
)]
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

/// The whole session as Django's `save()` writes it. `data` replaces every value (names 1–256
/// characters without U+0000, integers within 64 bits, numbers with a fraction or exponent only
/// when a 64-bit float keeps them exactly, at most `session.max_data_bytes` of compact JSON); its
/// key order is kept at every depth on both stores.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReplaceSession)]
struct ReplaceBody {
    data: Map<String, Value>,
    #[schema(value_type = doc::Expiry)]
    expiry: Expiry,
}

/// `PUT /v1/sessions/{key}` with `{"data": {…}, "expiry": …}`: Django's whole-session `save()`
/// as one store operation, optionally guarded by `If-Match`.
#[utoipa::path(
    put,
    path = "/v1/sessions/{key}",
    operation_id = "replaceSession",
    tag = "sessions",
    summary = "Replace a session's data and expiry",
    description = "Django's `save()` in one store operation: `data` and `expiry` are replaced together or not at all, and the expiry slides. A session that is gone (expired, flushed, never existed) answers 404 `session_not_found` (Django's `UpdateError`); nothing is created. With `If-Match: \"v<N>\"` the write happens only while the session still is at version N, otherwise 412 `version_mismatch` (of racing writers holding one tag exactly one wins); `If-Match: *` or no header writes unconditionally. The body is checked before the session is looked up.",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
        ("If-Match" = Option<String>, Header, nullable = false, description = "An `ETag` from an earlier answer for this session, or `*`."),
    ),
    request_body(
        content = ReplaceBody,
        content_type = "application/json",
        examples(
            ("save" = (value = json!({"data": {"cart": {"items": 3}, "_auth_user_id": "7"}, "expiry": "default"}))),
            ("until" = (value = json!({"data": {}, "expiry": {"at": "2026-12-24T18:00:00Z"}}))),
        ),
    ),
    responses(
        (
            status = 200,
            description = "The session as stored.",
            body = doc::Session,
            content_type = "application/json",
            headers(("ETag" = String, description = "The session's version as a strong tag (`\"v<N>\"`); it changes whenever the data or the expiry policy changes. Send it back in `If-Match`.")),
            examples(
                ("session" = (value = json!({"key": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5", "data": {"cart": {"items": 3}}, "expiry": "default", "created_at": "2026-11-26T04:00:00Z", "expires_at": "2026-12-10T04:00:00Z", "max_age": 1209600, "set_cookie": "sessionid=q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax; Secure"}))),
            )
        ),
        (status = 400, response = doc::MalformedJson),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 415, response = doc::JsonBodyErrors415),
        (
            status = 422,
            description = "`data` or `expiry` is missing or invalid (`invalid_field`): an unknown field, a bad name, an integer beyond 64 bits, a number a 64-bit float cannot keep exactly, or an expiry outside the forms above.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_field"]))),
            content_type = "application/json",
            examples(
                ("invalid_field" = (value = json!({"error": "invalid_field", "message": "unknown field `foo`, expected `data` or `expiry` at line 1 column 6"}))),
            )
        ),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBackend),
        (
            status = 412,
            description = "`If-Match` names another version than the session's (`version_mismatch`).",
            body = doc::Error,
            content_type = "application/json",
            examples(
                ("stale" = (value = json!({"error": "version_mismatch", "message": "the session changed since that ETag was read (it is now \"v4\")"}))),
            )
        ),
    )
)]
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
#[utoipa::path(
    get,
    path = "/v1/sessions/{key}/data/{name}",
    operation_id = "getValue",
    tag = "sessions",
    summary = "Read one value",
    description = "Django's `session[name]`, or `session.get(name, default)` when `default` is given. The query parameter is checked before the session is looked up, so a malformed `default` is 400 whatever the key.",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
        ("name" = String, Path),
        ("default" = Option<String>, Query),
    ),
    responses(
        (
            status = 200,
            description = "The value (or the `default` when the session has no such name).",
            body = doc::JsonValue,
            content_type = "application/json",
            examples(
                ("value" = (value = json!({"name": "cart", "value": {"items": 3}}))),
                ("default" = (value = json!({"name": "cart", "value": []}))),
            )
        ),
        (
            status = 400,
            description = "The `default` query parameter is not JSON (`invalid_query`), or the `{name}` segment percent-decodes to bytes that are not UTF-8 (`invalid_path`).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_query", "invalid_path"]))),
            content_type = "application/json",
            examples(
                ("invalid_query" = (value = json!({"error": "invalid_query", "message": "`default` must be JSON: expected value at line 1 column 1"}))),
                ("invalid_path" = (value = json!({"error": "invalid_path", "message": "path segments must be UTF-8"}))),
            )
        ),
        (status = 401, response = doc::Unauthorized),
        (
            status = 404,
            description = "No live session has this key (`session_not_found`; malformed keys too — never 400), or the session has no such name and no `default` was given (`key_not_found`).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["session_not_found", "key_not_found"]))),
            content_type = "application/json",
            examples(
                ("session_not_found" = (value = json!({"error": "session_not_found", "message": "no such session (or it expired)"}))),
                ("key_not_found" = (value = json!({"error": "key_not_found", "message": "the session has no \"cart\""}))),
            )
        ),
        (status = 422, response = doc::InvalidDataName),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
    )
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SetValue)]
struct SetBody {
    /// Any JSON value, `null` included.
    value: Value,
}

/// `PUT /v1/sessions/{key}/data/{name}` with `{"value": …}`
#[utoipa::path(
    put,
    path = "/v1/sessions/{key}/data/{name}",
    operation_id = "setValue",
    tag = "sessions",
    summary = "Write one value",
    description = "Django's `session[name] = value`. Writing always slides the session's expiry. Checks run in this order: API key (401), name length (422), body (415/400/422), session (404).",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
        ("name" = String, Path),
    ),
    request_body(
        content = SetBody,
        content_type = "application/json",
        examples(
            ("object" = (value = json!({"value": {"items": 3}}))),
            ("null" = (value = json!({"value": null}))),
        ),
    ),
    responses(
        (
            status = 200,
            description = "The value as stored.",
            body = doc::JsonValue,
            content_type = "application/json",
            examples(
                ("value" = (value = json!({"name": "cart", "value": {"items": 3}}))),
            )
        ),
        (
            status = 400,
            description = "The body is empty or not well-formed JSON (`malformed_json`), or the `{name}` segment percent-decodes to bytes that are not UTF-8 (`invalid_path`).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["malformed_json", "invalid_path"]))),
            content_type = "application/json",
            examples(
                ("malformed_json" = (value = json!({"error": "malformed_json", "message": "malformed JSON: EOF while parsing an object at line 1 column 1"}))),
                ("invalid_path" = (value = json!({"error": "invalid_path", "message": "path segments must be UTF-8"}))),
            )
        ),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 413, response = doc::SessionDataTooLarge),
        (status = 415, response = doc::JsonBodyErrors415),
        (
            status = 422,
            description = "The name breaks the name rule (empty, longer than 256 characters, or holding U+0000), the value breaks the value rule, or the body is not `{\"value\": …}` (missing `value`, unknown field, not an object). A value may be any JSON except U+0000 in a string or object key, an integer outside the 64-bit range (send it as a string) or nesting deeper than 64 levels.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_field"]))),
            content_type = "application/json",
            examples(
                ("invalid_field" = (value = json!({"error": "invalid_field", "message": "unknown field `foo`, expected `data` or `expiry` at line 1 column 6"}))),
                ("integer_too_large" = (value = json!({"error": "invalid_field", "message": "the integer 18446744073709551616 does not fit in 64 bits; send it as a string"}))),
            )
        ),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBackend),
    )
)]
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
#[utoipa::path(
    delete,
    path = "/v1/sessions/{key}/data/{name}",
    operation_id = "deleteValue",
    tag = "sessions",
    summary = "Delete one value",
    description = "Django's `del session[name]`.",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
        ("name" = String, Path),
    ),
    responses(
        (
            status = 200,
            description = "The value was deleted.",
            body = doc::Deleted,
            content_type = "application/json",
            examples(
                ("deleted" = (value = json!({"name": "cart", "deleted": true}))),
            )
        ),
        (
            status = 400,
            description = "The `{name}` segment percent-decodes to bytes that are not UTF-8.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_path"]))),
            content_type = "application/json",
            examples(
                ("invalid_path" = (value = json!({"error": "invalid_path", "message": "path segments must be UTF-8"}))),
            )
        ),
        (status = 401, response = doc::Unauthorized),
        (
            status = 404,
            description = "No live session has this key (`session_not_found`; malformed keys too — never 400), or the session has no such name (`key_not_found`).",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["session_not_found", "key_not_found"]))),
            content_type = "application/json",
            examples(
                ("session_not_found" = (value = json!({"error": "session_not_found", "message": "no such session (or it expired)"}))),
                ("key_not_found" = (value = json!({"error": "key_not_found", "message": "the session has no \"cart\""}))),
            )
        ),
        (status = 422, response = doc::InvalidDataName),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBackend),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/sessions/{key}/clear",
    operation_id = "clearSession",
    tag = "sessions",
    summary = "Empty a session",
    description = "Django's `clear()`: removes every value, keeps the key and the expiry. Any request body is ignored.",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
    ),
    responses(
        (
            status = 200,
            description = "The session after the change.",
            body = doc::Session,
            content_type = "application/json",
            examples(
                ("session" = (value = json!({"key": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5", "data": {"cart": {"items": 3}}, "expiry": "default", "created_at": "2026-11-26T04:00:00Z", "expires_at": "2026-12-10T04:00:00Z", "max_age": 1209600, "set_cookie": "sessionid=q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax; Secure"}))),
            )
        ),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBackend),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/sessions/{key}/flush",
    operation_id = "flushSession",
    tag = "sessions",
    summary = "Delete a session",
    description = "Django's `flush()`: deletes the session; the key is dead at once. Forward `set_cookie` to delete the browser's cookie. Any request body is ignored.",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
    ),
    responses(
        (
            status = 200,
            description = "The session is gone.",
            body = doc::Flushed,
            content_type = "application/json",
            examples(
                ("flushed" = (value = json!({"flushed": true, "set_cookie": "sessionid=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; HttpOnly; SameSite=Lax; Secure"}))),
            )
        ),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBackend),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/sessions/{key}/cycle",
    operation_id = "cycleSession",
    tag = "sessions",
    summary = "Give a session a new key",
    description = "Django's `cycle_key()`: same data and expiry under a new key (in the answer); the old key is dead at once. Any request body is ignored.",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
    ),
    responses(
        (
            status = 200,
            description = "The session under its new key.",
            body = doc::Session,
            content_type = "application/json",
            links(("GetSession" = (operation_id = "getSession", parameters(("key" = "$response.body#/key")), description = "Load the session by its key.")), ("SetValue" = (operation_id = "setValue", parameters(("key" = "$response.body#/key")))), ("GetValue" = (operation_id = "getValue", parameters(("key" = "$response.body#/key")))), ("DeleteValue" = (operation_id = "deleteValue", parameters(("key" = "$response.body#/key")))), ("SetExpiry" = (operation_id = "setExpiry", parameters(("key" = "$response.body#/key")))), ("ClearSession" = (operation_id = "clearSession", parameters(("key" = "$response.body#/key")))), ("CycleSession" = (operation_id = "cycleSession", parameters(("key" = "$response.body#/key")))), ("FlushSession" = (operation_id = "flushSession", parameters(("key" = "$response.body#/key"))))),
            examples(
                ("session" = (value = json!({"key": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5", "data": {"cart": {"items": 3}}, "expiry": "default", "created_at": "2026-11-26T04:00:00Z", "expires_at": "2026-12-10T04:00:00Z", "max_age": 1209600, "set_cookie": "sessionid=q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax; Secure"}))),
            )
        ),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBackend),
    )
)]
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
#[utoipa::path(
    put,
    path = "/v1/sessions/{key}/expiry",
    operation_id = "setExpiry",
    tag = "sessions",
    summary = "Set a session's expiry",
    description = "Django's `set_expiry()`. `expiry` is `N` (seconds of inactivity, sliding), `0` (browser-session cookie; the server still expires it after `session.default_age`), `null` (never expires; the cookie gets a 400-day `Max-Age`) or `\"default\"` (`session.default_age`). `session.max_lifetime`, when set, caps all of them. The body is checked before the session is looked up. `{\"at\": \"<RFC 3339>\"}` sets an absolute moment (a past one ends the session at once).",
    security(("bearerAuth" = [])),
    params(
        ("key" = String, Path),
    ),
    request_body(
        content = doc::SetExpiry,
        content_type = "application/json",
        examples(
            ("idle" = (value = json!({"expiry": 300}))),
            ("browser" = (value = json!({"expiry": 0}))),
            ("never" = (value = json!({"expiry": null}))),
            ("default" = (value = json!({"expiry": "default"}))),
            ("at" = (value = json!({"expiry": {"at": "2026-12-24T18:00:00Z"}}))),
        ),
    ),
    responses(
        (
            status = 200,
            description = "The session with its new expiry.",
            body = doc::Session,
            content_type = "application/json",
            examples(
                ("session" = (value = json!({"key": "q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5", "data": {"cart": {"items": 3}}, "expiry": "default", "created_at": "2026-11-26T04:00:00Z", "expires_at": "2026-12-10T04:00:00Z", "max_age": 1209600, "set_cookie": "sessionid=q3f0x8k2m1z9w7v5t4r6p2n8l0j1h3g5; Max-Age=1209600; Path=/; HttpOnly; SameSite=Lax; Secure"}))),
            )
        ),
        (status = 400, response = doc::MalformedJson),
        (status = 401, response = doc::Unauthorized),
        (status = 404, response = doc::SessionNotFound),
        (status = 415, response = doc::JsonBodyErrors415),
        (
            status = 422,
            description = "`expiry` is missing or invalid, another field is present, or the body is not a JSON object.",
            body = doc::Error,
            extensions(("x-error-codes" = json!(["invalid_field"]))),
            content_type = "application/json",
            examples(
                ("invalid_field" = (value = json!({"error": "invalid_field", "message": "unknown field `foo`, expected `data` or `expiry` at line 1 column 6"}))),
            )
        ),
        (status = 500, response = doc::Internal),
        (status = 503, response = doc::StoreOrTimeout),
        (status = 403, response = doc::ForeignOriginBackend),
    )
)]
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
