//! The route table: every path and method the API serves, declared once. Unknown paths are 404
//! and known paths with the wrong method 405 with `Allow` (see `stack`); the metrics label of
//! a route is its path here, as axum's `MatchedPath`.

use axum::Router;
use axum::extract::MatchedPath;
use axum::middleware::{self, Next};
use axum::routing::{get, post, put};
use std::sync::Arc;

use crate::app::App;

use super::cors::{self, Guard};
use super::response::Resp;
use super::{
    challenge, compat, demo, metrics, own_session, receipts, sessions, stack, status, verifications,
};

/// The API's routes with their CORS and CSRF rules. `compat.seed_routes` switches the seed's
/// routes on, `http.demo_page` the page at `/`.
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    let cfg = &app.config;
    let mut browser = Router::new()
        .route("/v1/verifications", post(verifications::send))
        .route("/v1/verifications/check", post(verifications::check))
        .route("/v1/session", get(own_session::get))
        .route("/v1/challenge", get(challenge::get))
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Guard::Api),
            cors::refuse_foreign,
        ));
    if cfg.compat.seed_routes {
        let seed = Router::new()
            .route("/sms_send", get(compat::send).post(compat::send))
            .route("/sms_send/", get(compat::send).post(compat::send))
            .route("/sms_check", get(compat::check).post(compat::check))
            .route("/sms_check/", get(compat::check).post(compat::check))
            .route_layer(middleware::from_fn_with_state(
                (app.clone(), Guard::Seed),
                cors::refuse_foreign,
            ));
        browser = browser.merge(seed);
    }
    // Before the layers: the 405 fallback replaces the route's own, and CORS must wrap it too,
    // so that a preflight (which no route serves as a method) reaches CORS.
    let browser = browser
        .method_not_allowed_fallback(stack::method_not_allowed)
        .layer(cors::layer(app))
        .layer(middleware::from_fn(cors::preflight_answer));

    // No CORS here: the backend API, the probes, the description and the demo page (which
    // calls only its own origin).
    let mut without_cors = Router::new()
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/openapi.json", get(status::openapi))
        .route("/metrics", get(metrics::on_api_port))
        .route("/v1/sessions", post(sessions::create))
        .route(
            "/v1/sessions/{key}",
            get(sessions::get).put(sessions::replace),
        )
        .route(
            "/v1/sessions/{key}/data/{name}",
            get(sessions::get_value)
                .put(sessions::set_value)
                .delete(sessions::delete_value),
        )
        .route("/v1/sessions/{key}/clear", post(sessions::clear))
        .route("/v1/sessions/{key}/flush", post(sessions::flush))
        .route("/v1/sessions/{key}/cycle", post(sessions::cycle))
        .route("/v1/sessions/{key}/expiry", put(sessions::set_expiry))
        .route("/v1/verifications/{id}", get(receipts::get))
        .route("/v1/receipts/{provider}/{token}", post(receipts::ingest));
    if cfg.http.demo_page {
        without_cors = without_cors.route("/", get(demo::get));
    }
    let without_cors = without_cors
        .method_not_allowed_fallback(stack::method_not_allowed)
        .route_layer(middleware::from_fn_with_state(
            (app.clone(), Guard::Api),
            cors::refuse_foreign,
        ));

    browser
        .merge(without_cors)
        .route_layer(middleware::from_fn(label))
        .fallback(stack::not_found)
}

/// Hands the route's path to the request log and metrics, which run outside the router: only
/// answers of a route's own handlers carry it, so 404, 405 and preflights count as `?`.
async fn label(path: MatchedPath, req: axum::extract::Request, next: Next) -> Resp {
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(path);
    resp
}
