//! The daemon's answers about itself: liveness, readiness (store and delivery) and the API
//! description.

use axum::extract::State;
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

use crate::app::App;

use super::openapi::shared as doc;
use super::response::{Resp, json, raw_json};

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    summary = "Liveness",
    description = "Answers 200 while the process runs; it does not touch the store.",
    security(),
    responses(
        (
            status = 200,
            description = "The daemon is running.",
            body = doc::Health,
            content_type = "application/json",
            examples(
                ("ok" = (value = json!({"status": "ok"}))),
            )
        ),
        (status = 503, response = doc::Timeout),
    )
)]
pub async fn healthz() -> Resp {
    json(StatusCode::OK, &json!({ "status": "ok" }))
}

/// `GET /readyz`: the store answers; delivery and breaker states are reported alongside.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    summary = "Readiness",
    description = "Pings the session store: 200 when it answers, 503 when it does not. Also reports each SMS provider's circuit breaker (`providers`) and whether the default route can deliver (`delivery`); open breakers do not make the daemon unready.",
    security(),
    responses(
        (
            status = 200,
            description = "The store answers; the daemon can serve requests.",
            body = doc::Ready,
            content_type = "application/json",
            examples(
                ("ready" = (value = json!({"status": "ready", "store": "ok", "delivery": "ok", "providers": {"mock": "closed"}}))),
            )
        ),
        (
            status = 503,
            description = "The store is unreachable (`store_unavailable`, with `status` and `store` fields), or the ping took longer than `http.request_timeout` (`timeout`, plain error body).",
            body = doc::NotReady,
            content_type = "application/json",
            examples(
                ("not_ready" = (value = json!({"status": "not_ready", "store": "unavailable", "error": "store_unavailable", "message": "the session store is unreachable"}))),
                ("timeout" = (value = json!({"error": "timeout", "message": "the request took too long"}))),
            )
        ),
    )
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Resp {
    match app.store.ping().await {
        Ok(()) => json(
            StatusCode::OK,
            &json!({ "status": "ready", "store": "ok",
                     "delivery": delivery(&app), "providers": providers(&app) }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "not_ready", "store": "unavailable",
                         "error": "store_unavailable", "message": "the session store is unreachable",
                         "delivery": delivery(&app), "providers": providers(&app) }),
            )
        }
    }
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "health",
    summary = "This document",
    description = "The OpenAPI 3.1 description of this API, exactly as shipped in the repository's `openapi.json`.",
    security(),
    responses(
        (
            status = 200,
            description = "The OpenAPI document.",
            body = doc::ApiDocument,
            content_type = "application/json"
        ),
        (status = 503, response = doc::Timeout),
    )
)]
pub async fn openapi() -> Resp {
    raw_json(StatusCode::OK, super::openapi::document())
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
