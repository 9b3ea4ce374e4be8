//! Browsers on other origins: CORS with credentials for the browser-facing routes only (the
//! verification routes and the seed routes), and the CSRF rule that a cookie-bound POST from an
//! origin that is neither allowed nor our own is refused. Backend (API-key) routes never answer
//! CORS, so no browser script can read them.

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::app::App;

use super::error::ApiError;
use super::response::{Resp, json};
use super::router::Route;

/// `scheme://host[:port]` with no path: the form browsers send in `Origin`.
pub fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

/// The routes a browser script may call.
pub fn browser_path(path: &str) -> Option<&'static str> {
    match path.trim_end_matches('/') {
        "/v1/verifications" | "/v1/verifications/check" => Some("POST"),
        "/sms_send" | "/sms_check" => Some("GET, POST"),
        "/v1/session" | "/v1/challenge" => Some("GET"),
        _ => None,
    }
}

fn browser_route(route: &Route) -> bool {
    matches!(
        route,
        Route::SendCode
            | Route::CheckCode
            | Route::SeedSend
            | Route::SeedCheck
            | Route::OwnSession
            | Route::Challenge
    )
}

fn allowed<'a>(app: &App, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    app.config
        .http
        .cors
        .allowed_origins
        .iter()
        .any(|o| o == text)
        .then_some(origin)
}

/// Lets `origin` read the answer, cookies included.
fn allow_origin(h: &mut HeaderMap, origin: &HeaderValue) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

/// Answers a preflight (`OPTIONS`) for a browser-facing path; `None` leaves the request to the
/// router (which refuses `OPTIONS` elsewhere with 405).
pub fn preflight(app: &App, method: &Method, path: &str, headers: &HeaderMap) -> Option<Resp> {
    if method != Method::OPTIONS {
        return None;
    }
    let methods = browser_path(path)?;
    let mut resp = json(StatusCode::NO_CONTENT, &serde_json::Value::Null);
    *resp.body_mut() = Default::default();
    resp.headers_mut().remove(header::CONTENT_TYPE);
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed(app, headers) {
        allow_origin(h, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, idempotency-key, x-request-id"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    Some(resp)
}

/// Refuses a browser POST (no API key) to a browser-facing route whose `Origin` is neither
/// allowed nor the host it was sent to.
pub fn check_origin(app: &App, route: &Route, parts: &Parts) -> Result<(), ApiError> {
    // An API key makes a request a backend's, except on the seed routes, which ignore it.
    let backend = parts.headers.contains_key(header::AUTHORIZATION)
        && !matches!(route, Route::SeedSend | Route::SeedCheck);
    if !browser_route(route) || parts.method != Method::POST || backend {
        return Ok(());
    }
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return Ok(());
    };
    if allowed(app, &parts.headers).is_some() || same_origin(origin, &parts.headers) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "requests from this origin are not allowed",
    ))
}

/// `Origin`'s host and port equal the `Host` the request was sent to.
fn same_origin(origin: &HeaderValue, headers: &HeaderMap) -> bool {
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(|h| h.to_str()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Adds the CORS headers of an actual response on a browser-facing route.
pub fn decorate(app: &App, route: &Route, headers: &HeaderMap, resp: &mut Resp) {
    if !browser_route(route) {
        return;
    }
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = allowed(app, headers) {
        allow_origin(h, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after, x-request-id, idempotent-replayed"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(is_origin("https://shop.example") && is_origin("http://127.0.0.1:8080"));
        for bad in [
            "shop.example",
            "https://shop.example/",
            "ftp://x",
            "https://",
            "null",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }

    #[test]
    fn same_origin_compares_host_and_port() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example:8443"));
        assert!(same_origin(
            &HeaderValue::from_static("https://api.example:8443"),
            &h
        ));
        assert!(!same_origin(
            &HeaderValue::from_static("https://evil.example"),
            &h
        ));
    }
}
