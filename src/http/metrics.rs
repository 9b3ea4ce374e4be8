//! `GET /metrics`: on its own address (`metrics.listen`), apart from the public API so that it
//! can stay on loopback or an internal network without authentication; or on the API port,
//! behind an API key, for deployments without one.

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use std::sync::Arc;

use super::caller;
use super::error::ApiError;
use super::openapi::shared as doc;
use super::response::Resp;
use super::serve::HttpService;
use crate::app::App;

/// The metrics address's whole service: `GET /metrics`, and plain-text refusals for the rest.
pub fn service(app: Arc<App>) -> HttpService {
    let router = Router::new()
        .route("/metrics", get(on_metrics_address))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "metrics are at /metrics\n") })
        .method_not_allowed_fallback(|| async {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
            // Set here, axum's own list would name HEAD too.
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            resp
        })
        .with_state(app);
    HttpService::new(router)
}

fn text(status: StatusCode, body: &'static str) -> Resp {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn on_metrics_address(State(app): State<Arc<App>>) -> Resp {
    let mut resp = scrape_answer(&app).await;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `GET /metrics` on the API port, for deployments without a separate `metrics.listen`: the
/// port faces browsers, so a scrape needs an API key (checked first, whatever the answer). With
/// `metrics.listen` set the metrics live only there.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "health",
    summary = "Prometheus metrics (API port)",
    description = "The metrics in the OpenMetrics text format, on the API port only when `metrics.listen` is not set (with it, the metrics live on that address alone and this answers 404). The API port faces browsers, so a scrape needs an API key.",
    security(("bearerAuth" = [])),
    responses(
        (
            status = 200,
            description = "The metrics; see the README's Observability section for each one.",
            body = String,
            content_type = "application/openmetrics-text"
        ),
        (status = 401, response = doc::Unauthorized),
        (
            status = 404,
            description = "Metrics are served on `metrics.listen` instead.",
            body = doc::Error,
            content_type = "application/json"
        ),
        (status = 503, response = doc::Timeout),
    )
)]
pub async fn on_api_port(State(app): State<Arc<App>>, parts: Parts) -> Result<Resp, ApiError> {
    caller::require_backend(&app, &parts)?;
    if let Some(addr) = app.config.metrics.listen {
        return Err(ApiError::not_found(
            "not_found",
            format!("metrics are served on the metrics address ({addr})"),
        ));
    }
    Ok(scrape_answer(&app).await)
}

async fn scrape_answer(app: &App) -> Resp {
    let content_type = [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)];
    (content_type, scrape(app).await).into_response()
}

/// The metrics text, with the gauges sampled now. The breakers' states live in the providers,
/// the pumping breaker's in the store (shared by all daemons); a store that cannot answer leaves
/// those gauges out rather than failing the scrape.
async fn scrape(app: &App) -> String {
    let pumping = app.store.pumping_states().await.unwrap_or_default();
    let breakers = app.provider.breaker_states();
    app.metrics
        .set_provider_states(breakers.iter().map(|(name, s)| (*name, s.as_str())));
    app.metrics.store_round_trips(app.store.round_trips());
    app.metrics.render(
        app.store.pool_usage().map(Into::into),
        pumping.iter().map(Into::into),
    )
}
