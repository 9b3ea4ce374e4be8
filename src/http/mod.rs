//! The HTTP server: hyper 1 connections with bounded headers, bodies, connection count and
//! request time; graceful shutdown; one dispatcher that turns every outcome into a JSON response.

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::app::App;

mod accept_language;
mod caller;
mod challenge;
pub mod client_ip;
mod compat;
mod cookies;
pub mod cors;
mod demo;
mod echo;
pub mod error;
mod idempotency;
pub mod metrics;
mod own_session;
mod receipts;
mod request;
pub mod response;
pub mod router;
mod sessions;
mod verifications;

use error::ApiError;
use response::{Resp, add_standard_headers, json, raw_json};
use router::Route;

/// Serves `listener` until `stop` is cancelled, then lets in-flight requests finish for up to
/// `http.shutdown_grace` seconds.
pub async fn serve(app: Arc<App>, listener: TcpListener, stop: CancellationToken) {
    let cfg = &app.config.http;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(cfg.header_timeout))
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let proxy_warning = Arc::new(client_ip::ProxyWarning::default());
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = cfg.max_connections, "connection refused: too many open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let proxy_warning = proxy_warning.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let app = app.clone();
            proxy_warning.check(&app.config.http, peer.ip(), req.headers());
            req.extensions_mut().insert(client_ip::Peer(peer));
            async move { Ok::<_, Infallible>(handle(&app, req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = Duration::from_secs(cfg.shutdown_grace);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight requests did not finish within the shutdown grace period"
        );
    }
}

/// One request, start to finish: request id, time limit, panic guard, standard headers, log line.
pub async fn handle(app: &App, req: Request<Incoming>) -> Resp {
    let started = Instant::now();
    let request_id = request_id(&req);
    let method = req.method().clone();
    let limit = Duration::from_secs(app.config.http.request_timeout);
    let work = AssertUnwindSafe(dispatch(app, req)).catch_unwind();
    let (template, mut resp) = match tokio::time::timeout(limit, work).await {
        Ok(Ok((template, Ok(resp)))) => (template, resp),
        Ok(Ok((template, Err(e)))) => (template, e.into_response()),
        Ok(Err(_panic)) => {
            tracing::error!(%request_id, "request handler panicked");
            ("?", ApiError::internal().into_response())
        }
        Err(_) => ("?", ApiError::timeout().into_response()),
    };
    add_standard_headers(&mut resp, &request_id);
    app.metrics.request(
        method.as_str(),
        template,
        resp.status().as_u16(),
        started.elapsed(),
    );
    tracing::info!(
        %request_id,
        method = %echo::Echo(method.as_str()),
        route = template,
        status = resp.status().as_u16(),
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    resp
}

/// Echoes a sane `X-Request-Id` or makes one.
fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the OS random generator is unavailable");
            hex::encode(b)
        })
}

async fn dispatch(app: &App, req: Request<Incoming>) -> (&'static str, Result<Resp, ApiError>) {
    if let Some(resp) = cors::preflight(app, req.method(), req.uri().path(), req.headers()) {
        return ("OPTIONS", Ok(resp));
    }
    let route = match router::route(
        req.method(),
        req.uri().path(),
        app.config.compat.seed_routes,
        app.config.http.demo_page,
    ) {
        Ok(r) => r,
        Err(e) => return ("?", Err(e)),
    };
    let template = route.template();
    let (parts, body) = req.into_parts();
    let body = match request::read_body(body, &parts.headers, app.config.http.max_body_bytes).await
    {
        Ok(b) => b,
        Err(e) => return (template, Err(e)),
    };
    if let Err(e) = cors::check_origin(app, &route, &parts) {
        return (template, Err(e));
    }
    let mut resp = run(app, route.clone(), &parts, &body)
        .await
        .unwrap_or_else(ApiError::into_response);
    cors::decorate(app, &route, &parts.headers, &mut resp);
    (template, Ok(resp))
}

/// Each provider's breaker state for `/readyz`: `{"aliyun": "closed", "sns": "open"}`. Open
/// breakers do not make the daemon unready: every daemon sees the same gateways, so an outage
/// would take all of them, and the session API with them, out of the load balancer.
fn providers(app: &App) -> serde_json::Value {
    app.provider
        .breaker_states()
        .into_iter()
        .map(|(name, state)| (name.to_owned(), state.as_str().into()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// `"ok"`, or `"unavailable"` when every provider of the `*` route has an open breaker.
fn delivery(app: &App) -> &'static str {
    if app.provider.default_route_available() {
        "ok"
    } else {
        "unavailable"
    }
}

/// The API description served at `GET /openapi.json`.
const OPENAPI: &str = include_str!("../../openapi.json");

async fn run(
    app: &App,
    route: Route,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<Resp, ApiError> {
    match route {
        Route::Healthz => Ok(json(StatusCode::OK, &json!({ "status": "ok" }))),
        Route::Readyz => Ok(match app.store.ping().await {
            Ok(()) => json(
                StatusCode::OK,
                &json!({ "status": "ready", "store": "ok",
                         "delivery": delivery(app), "providers": providers(app) }),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "not ready");
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({ "status": "not_ready", "store": "unavailable",
                             "error": "store_unavailable", "message": "the session store is unreachable",
                             "delivery": delivery(app), "providers": providers(app) }),
                )
            }
        }),
        Route::CreateSession => sessions::create(app, parts, body).await,
        Route::GetSession { key } => sessions::get(app, parts, &key).await,
        Route::ReplaceSession { key } => sessions::replace(app, parts, body, &key).await,
        Route::GetValue { key, name } => sessions::get_value(app, parts, &key, &name).await,
        Route::SetValue { key, name } => sessions::set_value(app, parts, body, &key, &name).await,
        Route::DeleteValue { key, name } => sessions::delete_value(app, parts, &key, &name).await,
        Route::Clear { key } => sessions::clear(app, parts, &key).await,
        Route::Flush { key } => sessions::flush(app, parts, &key).await,
        Route::Cycle { key } => sessions::cycle(app, parts, &key).await,
        Route::SetExpiry { key } => sessions::set_expiry(app, parts, body, &key).await,
        Route::SendCode => verifications::send(app, parts, body).await,
        Route::CheckCode => verifications::check(app, parts, body).await,
        Route::SeedSend => Ok(compat::send(app, parts, body).await),
        Route::SeedCheck => compat::check(app, parts, body).await,
        Route::OpenApi => Ok(raw_json(StatusCode::OK, OPENAPI)),
        Route::DemoPage => Ok(demo::page(app.config.verification.alphabet)),
        Route::OwnSession => own_session::get(app, parts).await,
        Route::Metrics => metrics_on_api_port(app, parts).await,
        Route::GetVerification { id } => receipts::get(app, parts, &id).await,
        Route::Receipt { provider, token } => {
            receipts::ingest(app, parts, &provider, &token, body).await
        }
        Route::Challenge => Ok(challenge::get(app)),
    }
}

/// `GET /metrics` on the API port, for deployments without a separate `metrics.listen`: the
/// port faces browsers, so a scrape needs an API key (checked first, whatever the answer). With
/// `metrics.listen` set the metrics live only there.
async fn metrics_on_api_port(app: &App, parts: &http::request::Parts) -> Result<Resp, ApiError> {
    caller::require_backend(app, parts)?;
    if let Some(addr) = app.config.metrics.listen {
        return Err(ApiError::not_found(
            "not_found",
            format!("metrics are served on the metrics address ({addr})"),
        ));
    }
    let mut resp = response::raw_json(StatusCode::OK, metrics::scrape(app).await);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(resp)
}
