//! The route table: every path and method the API serves, declared once. Each handler is mounted
//! at the path and method of its own `#[utoipa::path]` (utoipa-axum's `routes!`), so the route and
//! its OpenAPI operation are one declaration, and the description lists exactly these
//! ([`operations`]). Unknown paths are 404 and known paths with the wrong method 405 with `Allow`
//! (see `stack`); the metrics label of a route is its path here, as axum's `MatchedPath`.

use axum::Router;
use axum::extract::MatchedPath;
use axum::middleware::{self, Next};
use axum::routing::get;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;

use super::cors::{self, Guard};
use super::openapi::seed;
use super::response::Resp;
use super::{
    challenge, compat, demo, metrics, own_session, receipts, sessions, stack, status, verifications,
};

/// The browser API (CORS, and the CSRF refusal).
fn browser_api() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(verifications::send))
        .routes(routes!(verifications::check))
        .routes(routes!(own_session::get))
        .routes(routes!(challenge::get))
}

/// The seed's routes on their slashed paths; [`routes`] adds the same without the slash.
fn seed_api() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(
            seed::seed_send_get_slash,
            seed::seed_send_post_slash
        ))
        .routes(routes!(
            seed::seed_check_get_slash,
            seed::seed_check_post_slash
        ))
}

/// The backend API, the probes, the description and the metrics (no CORS).
fn backend_api() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(status::healthz))
        .routes(routes!(status::readyz))
        .routes(routes!(status::openapi))
        .routes(routes!(metrics::on_api_port))
        .routes(routes!(sessions::create))
        .routes(routes!(sessions::get, sessions::replace))
        .routes(routes!(
            sessions::get_value,
            sessions::set_value,
            sessions::delete_value
        ))
        .routes(routes!(sessions::clear))
        .routes(routes!(sessions::flush))
        .routes(routes!(sessions::cycle))
        .routes(routes!(sessions::set_expiry))
        .routes(routes!(receipts::get))
        .routes(routes!(receipts::ingest))
}

/// The demo page at `/`.
fn demo_page() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(demo::get))
}

/// Every operation the API can serve, whatever the configuration switches on: the paths of the
/// OpenAPI description (`super::openapi` adds what all operations share).
pub fn operations() -> utoipa::openapi::OpenApi {
    backend_api()
        .merge(browser_api())
        .merge(seed_api())
        .merge(demo_page())
        .into_openapi()
}

/// The API's routes with their CORS and CSRF rules. `compat.seed_routes` switches the seed's
/// routes on, `http.demo_page` the page at `/`.
pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    let cfg = &app.config;
    let mut browser = Router::from(browser_api()).route_layer(middleware::from_fn_with_state(
        (app.clone(), Guard::Api),
        cors::refuse_foreign,
    ));
    if cfg.compat.seed_routes {
        let seed = Router::from(seed_api())
            .route("/sms_send", get(compat::send).post(compat::send))
            .route("/sms_check", get(compat::check).post(compat::check))
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
    let mut without_cors = Router::from(backend_api());
    if cfg.http.demo_page {
        without_cors = without_cors.merge(Router::from(demo_page()));
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
