//! The daemon's answers about itself: liveness, readiness (store and delivery) and the API
//! description.

use axum::extract::State;
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;

use crate::app::App;

use super::response::{Resp, json, raw_json};

/// The API description served at `GET /openapi.json`.
const OPENAPI: &str = include_str!("../../openapi.json");

/// `GET /healthz`: the process answers.
pub async fn healthz() -> Resp {
    json(StatusCode::OK, &json!({ "status": "ok" }))
}

/// `GET /readyz`: the store answers; delivery and breaker states are reported alongside.
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
pub async fn openapi() -> Resp {
    raw_json(StatusCode::OK, OPENAPI)
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
