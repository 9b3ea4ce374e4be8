//! Browsers on other origins: CORS with credentials for the browser-facing routes only (the
//! verification routes and the seed routes), and the CSRF rule that a browser request to any
//! state-changing route, whatever its method, is refused unless it comes from our own origin or
//! an allowed one. Backend (API-key) routes never answer CORS, so no browser script can read
//! them.

use axum::extract::{Request, State};
use axum::middleware::Next;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::App;

use super::error::ApiError;
use super::response::Resp;

pub use crate::net::is_origin;

/// CORS for the browser-facing routes: `http.cors.allowed_origins` may read the answers, cookies
/// included. The `Vary` header is left to [`preflight_answer`], which names only `Origin`: the
/// other preflight headers do not change what this daemon answers.
pub fn layer(app: &App) -> CorsLayer {
    let origins = app.config.http.cors.allowed_origins.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| origins.iter().any(|allowed| allowed == o))
        }))
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(600))
        .vary([])
}

/// Around [`layer`]: a preflight is answered 204 (it has no content), and every answer of a
/// browser-facing route varies with `Origin`, so that no cache hands one site's answer to another.
pub async fn preflight_answer(req: Request, next: Next) -> Resp {
    let preflight = req.method() == Method::OPTIONS;
    let mut resp = next.run(req).await;
    if preflight {
        *resp.status_mut() = StatusCode::NO_CONTENT;
    }
    resp.headers_mut()
        .append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

/// Which CSRF rule a group of routes follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Only methods other than `GET` change state, and an API key marks a backend's request.
    Api,
    /// The seed's routes: `GET` sends a code too, and an API key means nothing there.
    Seed,
}

/// Middleware: refuses a cross-site browser request to a state-changing route before the
/// handler sees it (see [`check_origin`]).
pub async fn refuse_foreign(
    State((app, guard)): State<(Arc<App>, Guard)>,
    req: Request,
    next: Next,
) -> Result<Resp, ApiError> {
    check_origin(&app, guard, req.method(), req.headers())?;
    Ok(next.run(req).await)
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
fn check_origin(
    app: &App,
    guard: Guard,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let changes_state = guard == Guard::Seed || method != Method::GET;
    let backend = guard == Guard::Api && headers.contains_key(header::AUTHORIZATION);
    if !changes_state || backend {
        return Ok(());
    }
    let ours = |origin: &str| is_allowed(app, origin) || same_origin(origin, headers);
    let ok = match provenance(headers) {
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
