//! Maps method and path to a route. Unknown paths are 404; known paths with the wrong method are
//! 405 with `Allow`.

use http::Method;

use super::error::ApiError;

/// Every route the server knows, with its path parameters (still percent-encoded where noted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    CreateSession,
    GetSession { key: String },
    ReplaceSession { key: String },
    GetValue { key: String, name: String },
    SetValue { key: String, name: String },
    DeleteValue { key: String, name: String },
    Clear { key: String },
    Flush { key: String },
    Cycle { key: String },
    SetExpiry { key: String },
    SendCode,
    CheckCode,
    SeedSend,
    SeedCheck,
    OpenApi,
    DemoPage,
    OwnSession,
    Metrics,
    GetVerification { id: String },
    Receipt { provider: String, token: String },
    Challenge,
}

/// Every (method, path template) pair the router serves, the seed routes with and without their
/// trailing slash (served only when `compat.seed_routes` is on) and the demo page (only when
/// `http.demo_page` is on). `openapi.json` documents exactly
/// these; `tests/api/openapi.rs` keeps the two in step.
pub const ALL_ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/v1/session"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/sessions/{key}"),
    ("PUT", "/v1/sessions/{key}"),
    ("GET", "/v1/sessions/{key}/data/{name}"),
    ("PUT", "/v1/sessions/{key}/data/{name}"),
    ("DELETE", "/v1/sessions/{key}/data/{name}"),
    ("POST", "/v1/sessions/{key}/clear"),
    ("POST", "/v1/sessions/{key}/flush"),
    ("POST", "/v1/sessions/{key}/cycle"),
    ("PUT", "/v1/sessions/{key}/expiry"),
    ("POST", "/v1/verifications"),
    ("POST", "/v1/verifications/check"),
    ("GET", "/v1/verifications/{id}"),
    ("POST", "/v1/receipts/{provider}/{token}"),
    ("GET", "/v1/challenge"),
    ("GET", "/sms_send/"),
    ("POST", "/sms_send/"),
    ("GET", "/sms_send"),
    ("POST", "/sms_send"),
    ("GET", "/sms_check/"),
    ("POST", "/sms_check/"),
    ("GET", "/sms_check"),
    ("POST", "/sms_check"),
];

impl Route {
    /// The route's path template, for logs and metrics.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::CreateSession => "/v1/sessions",
            Route::GetSession { .. } | Route::ReplaceSession { .. } => "/v1/sessions/{key}",
            Route::GetValue { .. } | Route::SetValue { .. } | Route::DeleteValue { .. } => {
                "/v1/sessions/{key}/data/{name}"
            }
            Route::Clear { .. } => "/v1/sessions/{key}/clear",
            Route::Flush { .. } => "/v1/sessions/{key}/flush",
            Route::Cycle { .. } => "/v1/sessions/{key}/cycle",
            Route::SetExpiry { .. } => "/v1/sessions/{key}/expiry",
            Route::SendCode => "/v1/verifications",
            Route::CheckCode => "/v1/verifications/check",
            Route::SeedSend => "/sms_send/",
            Route::SeedCheck => "/sms_check/",
            Route::OpenApi => "/openapi.json",
            Route::DemoPage => "/",
            Route::OwnSession => "/v1/session",
            Route::Metrics => "/metrics",
            Route::GetVerification { .. } => "/v1/verifications/{id}",
            Route::Receipt { .. } => "/v1/receipts/{provider}/{token}",
            Route::Challenge => "/v1/challenge",
        }
    }
}

/// Resolves a request line. `seed_routes` switches the compatibility routes on, `demo_page` the
/// page at `/`.
pub fn route(
    method: &Method,
    path: &str,
    seed_routes: bool,
    demo_page: bool,
) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = method.clone();
    let only = |allowed: &Method, allow: &'static str, r: Route| {
        if m == allowed {
            Ok(r)
        } else {
            Err(ApiError::method_not_allowed(allow))
        }
    };
    match segments.as_slice() {
        ["healthz"] => only(&Method::GET, "GET", Route::Healthz),
        ["readyz"] => only(&Method::GET, "GET", Route::Readyz),
        ["openapi.json"] => only(&Method::GET, "GET", Route::OpenApi),
        ["metrics"] => only(&Method::GET, "GET", Route::Metrics),
        [""] if demo_page => only(&Method::GET, "GET", Route::DemoPage),
        ["v1", "session"] => only(&Method::GET, "GET", Route::OwnSession),
        ["v1", "challenge"] => only(&Method::GET, "GET", Route::Challenge),
        ["v1", "sessions"] => only(&Method::POST, "POST", Route::CreateSession),
        ["v1", "sessions", key] => {
            let key = key.to_string();
            match m {
                Method::GET => Ok(Route::GetSession { key }),
                Method::PUT => Ok(Route::ReplaceSession { key }),
                _ => Err(ApiError::method_not_allowed("GET, PUT")),
            }
        }
        ["v1", "sessions", key, "data", name] => {
            let name = decode(name)?;
            let key = key.to_string();
            match m {
                Method::GET => Ok(Route::GetValue { key, name }),
                Method::PUT => Ok(Route::SetValue { key, name }),
                Method::DELETE => Ok(Route::DeleteValue { key, name }),
                _ => Err(ApiError::method_not_allowed("GET, PUT, DELETE")),
            }
        }
        [
            "v1",
            "sessions",
            key,
            action @ ("clear" | "flush" | "cycle"),
        ] => {
            let key = key.to_string();
            let r = match *action {
                "clear" => Route::Clear { key },
                "flush" => Route::Flush { key },
                _ => Route::Cycle { key },
            };
            only(&Method::POST, "POST", r)
        }
        ["v1", "sessions", key, "expiry"] => only(
            &Method::PUT,
            "PUT",
            Route::SetExpiry {
                key: key.to_string(),
            },
        ),
        ["v1", "verifications"] => only(&Method::POST, "POST", Route::SendCode),
        ["v1", "verifications", "check"] => only(&Method::POST, "POST", Route::CheckCode),
        ["v1", "verifications", id] => only(
            &Method::GET,
            "GET",
            Route::GetVerification {
                id: (*id).to_owned(),
            },
        ),
        ["v1", "receipts", provider, token] => only(
            &Method::POST,
            "POST",
            Route::Receipt {
                provider: (*provider).to_owned(),
                token: (*token).to_owned(),
            },
        ),
        ["sms_send"] | ["sms_send", ""] if seed_routes => seed(&m, Route::SeedSend),
        ["sms_check"] | ["sms_check", ""] if seed_routes => seed(&m, Route::SeedCheck),
        _ => Err(ApiError::not_found(
            "not_found",
            format!("no route for {}", super::echo::Echo(path)),
        )),
    }
}

fn seed(m: &Method, r: Route) -> Result<Route, ApiError> {
    if *m == Method::GET || *m == Method::POST {
        Ok(r)
    } else {
        Err(ApiError::method_not_allowed("GET, POST"))
    }
}

fn decode(segment: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::bad_request("invalid_path", "path segments must be UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_methods() {
        assert_eq!(
            route(&Method::GET, "/healthz", false, false).unwrap(),
            Route::Healthz
        );
        assert_eq!(
            route(&Method::PUT, "/v1/sessions/k/data/a%20b", false, false).unwrap(),
            Route::SetValue {
                key: "k".into(),
                name: "a b".into()
            }
        );
        let e = route(&Method::PATCH, "/v1/sessions/k/data/x", false, false).unwrap_err();
        assert_eq!(e.status, http::StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            route(&Method::GET, "/nope", false, false)
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            route(&Method::GET, "/sms_send/", false, false)
                .unwrap_err()
                .status,
            404
        );
        assert_eq!(
            route(&Method::GET, "/sms_send/", true, false).unwrap(),
            Route::SeedSend
        );
        assert_eq!(
            route(&Method::POST, "/sms_check", true, false).unwrap(),
            Route::SeedCheck
        );
        assert_eq!(
            route(&Method::GET, "/v1/sessions/k/data/%FF", false, false)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route(&Method::GET, "/", false, false).unwrap_err().status,
            404
        );
        assert_eq!(
            route(&Method::GET, "/", false, true).unwrap(),
            Route::DemoPage
        );
        assert_eq!(
            route(&Method::POST, "/", false, true).unwrap_err().status,
            405
        );
        assert_eq!(
            route(&Method::GET, "/v1/session", false, false).unwrap(),
            Route::OwnSession
        );
    }

    #[test]
    fn every_listed_route_routes() {
        for &(method, template) in ALL_ROUTES {
            let path = template
                .replace("{key}", "abcdefghijklmnopqrstuvwxyz012345")
                .replace("{name}", "cart");
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let r = route(&m, &path, true, true)
                .unwrap_or_else(|e| panic!("{method} {path}: {} {}", e.status, e.message));
            assert_eq!(
                r.template().trim_end_matches('/'),
                template.trim_end_matches('/')
            );
        }
        let mut seen = std::collections::HashSet::new();
        assert!(
            ALL_ROUTES.iter().all(|r| seen.insert(*r)),
            "duplicates in ALL_ROUTES"
        );
    }
}
