//! What every API request goes through around the route table: the request id, the headers
//! every answer carries, the time limit, the panic guard, the refusal of `HEAD`, JSON answers
//! for unknown paths and methods, and the request log line and metrics.

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use std::any::Any;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::App;

use super::client_ip::{Peer, ProxyWarning};
use super::echo::Echo;
use super::error::ApiError;
use super::response::Resp;
use super::router;
use super::serve::HttpService;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A method no route serves, which `HEAD` requests are turned into (see [`refuse_head`]).
static UNSERVED: LazyLock<Method> =
    LazyLock::new(|| Method::from_bytes(b"HEAD-UNSERVED").expect("a valid method token"));

/// The API as one service: the route table inside the layers every request shares.
pub fn api(app: Arc<App>) -> HttpService {
    let routes = router::routes(&app);
    layered(app, routes)
}

fn layered(app: Arc<App>, routes: Router<Arc<App>>) -> HttpService {
    let limit = Duration::from_secs(app.config.http.request_timeout);
    let routes = routes.with_state(app.clone());
    let proxy_warning = Arc::new(ProxyWarning::default());
    let service = ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(
            (app, proxy_warning),
            observe,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, RandomId))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(HandleErrorLayer::new(|_: BoxError| async {
            ApiError::timeout()
        }))
        .timeout(limit)
        .layer(CatchPanicLayer::custom(panicked))
        .layer(middleware::map_request(refuse_head))
        .layer(middleware::map_response(explain_405))
        .service(routes);
    BoxCloneService::new(service)
}

/// The outermost layer: checks for forwarding headers nobody trusts, drops a request id that
/// should not be echoed, and writes the request's log line and metrics.
async fn observe(
    State((app, proxy_warning)): State<(Arc<App>, Arc<ProxyWarning>)>,
    mut req: Request,
    next: Next,
) -> Resp {
    let started = Instant::now();
    let method = req.method().clone();
    if let Some(Peer(peer)) = req.extensions().get::<Peer>() {
        proxy_warning.check(&app.config.http, peer.ip(), req.headers());
    }
    // The id is echoed in the answer and the log: only short visible ASCII is kept, anything
    // else is replaced by a fresh one.
    if req
        .headers()
        .get(X_REQUEST_ID)
        .is_some_and(|v| !acceptable_id(v.as_bytes()))
    {
        req.headers_mut().remove(X_REQUEST_ID);
    }
    let resp = next.run(req).await;
    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .map_or("?", MatchedPath::as_str);
    let status = resp.status().as_u16();
    app.metrics
        .request(method.as_str(), route, status, started.elapsed());
    let request_id = resp
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info!(
        %request_id,
        method = %Echo(method.as_str()),
        route,
        status,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

fn acceptable_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= 128 && id.iter().all(u8::is_ascii_graphic)
}

/// Makes request ids for requests that come without a usable one: 16 random hex digits.
#[derive(Debug, Clone, Copy)]
struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the OS random generator is unavailable");
        HeaderValue::try_from(hex::encode(b))
            .ok()
            .map(RequestId::new)
    }
}

/// A handler panicked: the client gets the standard 500, the log says so (the request line
/// that follows carries the request id).
fn panicked(_: Box<dyn Any + Send + 'static>) -> Resp {
    tracing::error!("request handler panicked");
    ApiError::internal().into_response()
}

/// `HEAD` is not served: axum would answer it with the `GET` handler, and the seed's `GET`
/// sends a code. Renamed to a method no route serves, it meets the same 405 as any other.
async fn refuse_head(mut req: Request) -> Request {
    if req.method() == Method::HEAD {
        *req.method_mut() = UNSERVED.clone();
    }
    req
}

/// Marks the router's 405 so that [`explain_405`] gives it our body once axum has set `Allow`.
#[derive(Debug, Clone, Copy)]
struct WrongMethod;

/// The route table's answer to a known path with a method it does not serve.
pub async fn method_not_allowed() -> Resp {
    let mut resp = StatusCode::METHOD_NOT_ALLOWED.into_response();
    resp.extensions_mut().insert(WrongMethod);
    resp
}

/// The route table's answer to an unknown path.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("not_found", format!("no route for {}", Echo(uri.path())))
}

/// Turns the router's 405 into the standard JSON error. axum lists the route's methods in
/// `Allow` as `GET,HEAD,PUT`; `HEAD` is not served here (see [`refuse_head`]).
async fn explain_405(resp: Resp) -> Resp {
    if resp.extensions().get::<WrongMethod>().is_none() {
        return resp;
    }
    let listed = resp
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let allow: Vec<&str> = listed
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "HEAD")
        .collect();
    ApiError::method_not_allowed(allow.join(", ")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn panics() -> &'static str {
        panic!("a bug")
    }

    /// Routes that misbehave, behind the real layers, with a one-second time limit.
    async fn misbehaving() -> (HttpService, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::default();
        config.store.sqlite.path = dir.path().join("verifyd.db");
        config.http.request_timeout = 1;
        let app = Arc::new(App::build(config, true).await.unwrap());
        let routes = Router::new()
            .route("/panics", get(panics))
            .route(
                "/hangs",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "too late"
                }),
            )
            .method_not_allowed_fallback(method_not_allowed);
        (layered(app, routes), dir)
    }

    async fn call(service: &HttpService, method: Method, path: &str) -> (Resp, serde_json::Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let resp = service.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or_default();
        (Resp::from_parts(parts, Body::empty()), json)
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_the_standard_500() {
        let (service, _dir) = misbehaving().await;
        let (resp, body) = call(&service, Method::GET, "/panics").await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "internal");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        assert!(resp.headers().contains_key(X_REQUEST_ID));
        // The service survives it.
        let (resp, _) = call(&service, Method::GET, "/panics").await;
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn a_request_over_its_time_answers_503_timeout() {
        let (service, _dir) = misbehaving().await;
        let started = Instant::now();
        let (resp, body) = call(&service, Method::GET, "/hangs").await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "timeout");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn head_never_runs_a_get_handler() {
        let (service, _dir) = misbehaving().await;
        let (resp, body) = call(&service, Method::HEAD, "/panics").await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET");
        assert_eq!(body["error"], "method_not_allowed");
    }

    #[test]
    fn request_ids_are_short_visible_ascii() {
        assert!(acceptable_id(b"abc-123_XYZ"));
        for bad in [&b""[..], b"a b", b"\xff", &[b'a'; 129]] {
            assert!(!acceptable_id(bad), "{bad:?}");
        }
    }
}
