//! Reading requests: bounded bodies, path parameters, content types, JSON and form parameters.

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use bytes::Bytes;
use http::header;
use http::request::Parts;
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

use crate::app::App;

use super::error::ApiError;

/// The request body, collected up to `http.max_body_bytes`: more is 413 without reading the
/// rest, and a declared `Content-Length` over the limit is refused before a byte is read.
pub struct Body(pub Bytes);

impl FromRequest<Arc<App>> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<App>) -> Result<Self, ApiError> {
        let limit = app.config.http.max_body_bytes;
        let too_large = || {
            ApiError::new(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request bodies are limited to {limit} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        match Limited::new(req.into_body(), limit).collect().await {
            Ok(collected) => Ok(Body(collected.to_bytes())),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(_) => Err(ApiError::bad_request(
                "bad_body",
                "the request body could not be read",
            )),
        }
    }
}

/// Path parameters, percent-decoded; a segment that does not decode to UTF-8 is 400.
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(params)) => Ok(PathParams(params)),
            Err(e) => {
                tracing::debug!(error = %e, "path parameters refused");
                Err(ApiError::bad_request(
                    "invalid_path",
                    "path segments must be UTF-8",
                ))
            }
        }
    }
}

/// The media type of the request (lower case, no parameters), if any.
fn media_type(parts: &Parts) -> Option<String> {
    let v = parts.headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn is_json(parts: &Parts) -> bool {
    media_type(parts).is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// Parses a JSON body. An empty body yields `None` when `optional`; anything else must be
/// `application/json` (415), well-formed (400) and of the right shape (422).
pub fn json_body<T: DeserializeOwned>(
    parts: &Parts,
    body: &Bytes,
    optional: bool,
) -> Result<Option<T>, ApiError> {
    if body.is_empty() && optional {
        return Ok(None);
    }
    if !is_json(parts) {
        return Err(ApiError::new(
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as Content-Type: application/json",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the request body is empty",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
    // Structs would also accept a positional array; every body here is an object.
    if !value.is_object() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| ApiError::unprocessable("invalid_field", e.to_string()))
}

/// A JSON body that must be present.
pub fn require_json<T: DeserializeOwned>(parts: &Parts, body: &Bytes) -> Result<T, ApiError> {
    json_body(parts, body, false).map(|v| v.expect("non-optional bodies are always present"))
}

/// Query-string parameters (first value wins).
pub fn query(parts: &Parts) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// Query parameters merged with a form-encoded body (the seed's routes accept both).
pub fn form_params(parts: &Parts, body: &Bytes) -> Result<HashMap<String, String>, ApiError> {
    let mut params = query(parts);
    if !body.is_empty() {
        if media_type(parts).as_deref() != Some("application/x-www-form-urlencoded") {
            return Err(ApiError::new(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send parameters in the query string or as application/x-www-form-urlencoded",
            ));
        }
        for (k, v) in form_urlencoded::parse(body) {
            params
                .entry(k.into_owned())
                .or_insert_with(|| v.into_owned());
        }
    }
    Ok(params)
}

/// The bearer token of the `Authorization` header; `Some("")` when the header is malformed, so
/// that a broken header is refused rather than ignored.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?;
    let s = v.to_str().unwrap_or("");
    let (scheme, token) = s.split_once(' ').unwrap_or((s, ""));
    Some(if scheme.eq_ignore_ascii_case("bearer") {
        token.trim()
    } else {
        ""
    })
}
