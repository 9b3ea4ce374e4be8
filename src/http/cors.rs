//! Browsers on other origins: CORS with credentials for the browser-facing routes only (the
//! verification routes and the seed routes), and the CSRF rule that a browser request to any
//! state-changing route, whatever its method, is refused unless it comes from our own origin or
//! an allowed one. Backend (API-key) routes never answer CORS, so no browser script can read
//! them.

use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::app::App;

use super::error::ApiError;
use super::response::{Resp, json};
use super::router::Route;

pub use crate::net::is_origin;

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

/// Routes that change something (a code sent, a session bound or edited), whatever the method:
/// the seed routes do it on `GET`, which `SameSite=Lax` cookies follow from any site's links.
fn changes_state(route: &Route) -> bool {
    !matches!(
        route,
        Route::Healthz
            | Route::Readyz
            | Route::OpenApi
            | Route::DemoPage
            | Route::OwnSession
            | Route::Metrics
            | Route::Challenge
            | Route::GetSession { .. }
            | Route::GetValue { .. }
    )
}

/// Where a browser says a request comes from, strongest signal first.
#[derive(Debug, PartialEq, Eq)]
enum Provenance<'a> {
    /// `Sec-Fetch-Site: same-origin`, or `none` (the person typed the address or used a
    /// bookmark): not a request another site made.
    Own,
    /// `Sec-Fetch-Site: same-site`, with the `Origin` it carried, if any.
    SameSite(Option<&'a str>),
    /// `Sec-Fetch-Site: cross-site`.
    CrossSite,
    /// No `Sec-Fetch-Site` (older browsers): the origin from `Origin`, else from `Referer`.
    Claimed(Option<String>),
    /// None of the three headers: curl, a server-side caller; nothing a browser sends alone.
    Unknown,
}

fn provenance(headers: &HeaderMap) -> Provenance<'_> {
    let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    match text("sec-fetch-site") {
        Some("same-origin" | "none") => return Provenance::Own,
        Some("same-site") => return Provenance::SameSite(text("origin")),
        Some("cross-site") => return Provenance::CrossSite,
        // A value this code does not know says nothing; fall back on the older headers.
        _ => {}
    }
    if let Some(origin) = text("origin") {
        return Provenance::Claimed(Some(origin.to_owned()));
    }
    if let Some(referer) = text("referer") {
        return Provenance::Claimed(referer_origin(referer));
    }
    Provenance::Unknown
}

/// `scheme://host[:port]` of a `Referer` URL; `None` when it is not an http(s) URL.
fn referer_origin(referer: &str) -> Option<String> {
    let (scheme, rest) = referer.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let origin = format!("{scheme}://{authority}");
    is_origin(&origin).then_some(origin)
}

/// Refuses a browser request to a state-changing route that another site made: by
/// `Sec-Fetch-Site` where the browser sends it, else by `Origin`, else by `Referer`, each
/// checked against `http.cors.allowed_origins` and the daemon's own origin. A request with none
/// of these headers is not a browser's cross-site request and passes; so does a backend call
/// with an API key (no page can add an `Authorization` header to another site's request
/// without a CORS preflight, which backend routes refuse).
pub fn check_origin(app: &App, route: &Route, parts: &Parts) -> Result<(), ApiError> {
    // An API key makes a request a backend's, except on the seed routes, which ignore it.
    let backend = parts.headers.contains_key(header::AUTHORIZATION)
        && !matches!(route, Route::SeedSend | Route::SeedCheck);
    if !changes_state(route) || backend {
        return Ok(());
    }
    let ours = |origin: &str| is_allowed(app, origin) || same_origin(origin, &parts.headers);
    let ok = match provenance(&parts.headers) {
        Provenance::Own | Provenance::Unknown => true,
        Provenance::SameSite(origin) => origin.is_some_and(|o| is_allowed(app, o)),
        Provenance::CrossSite => false,
        Provenance::Claimed(origin) => origin.is_some_and(|o| ours(&o)),
    };
    if ok {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        "requests from other sites or origins are not allowed here",
    ))
}

fn is_allowed(app: &App, origin: &str) -> bool {
    app.config
        .http
        .cors
        .allowed_origins
        .iter()
        .any(|o| o == origin)
}

/// `origin`'s host and port equal the `Host` the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(Ok(host)) = headers.get(header::HOST).map(|h| h.to_str()) else {
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
    fn same_origin_compares_host_and_port() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example:8443"));
        assert!(same_origin("https://api.example:8443", &h));
        assert!(!same_origin("https://evil.example", &h));
    }

    #[test]
    fn provenance_prefers_fetch_metadata_then_origin_then_referer() {
        let of = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let h = of(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://a.example"),
        ]);
        assert_eq!(provenance(&h), Provenance::CrossSite);
        let h = of(&[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://a.example"),
        ]);
        assert_eq!(
            provenance(&h),
            Provenance::SameSite(Some("https://a.example"))
        );
        assert_eq!(
            provenance(&of(&[("sec-fetch-site", "none")])),
            Provenance::Own
        );
        let h = of(&[
            ("sec-fetch-site", "bogus"),
            ("referer", "https://b.example:8443/p?q#f"),
        ]);
        assert_eq!(
            provenance(&h),
            Provenance::Claimed(Some("https://b.example:8443".into()))
        );
        let h = of(&[("origin", "null"), ("referer", "https://b.example/")]);
        assert_eq!(provenance(&h), Provenance::Claimed(Some("null".into())));
        assert_eq!(
            provenance(&of(&[("referer", "about:blank")])),
            Provenance::Claimed(None)
        );
        assert_eq!(provenance(&HeaderMap::new()), Provenance::Unknown);
    }
}
