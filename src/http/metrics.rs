//! The metrics listener: `GET /metrics` on its own address (`metrics.listen`), apart from the
//! public API so that it can stay on loopback or an internal network without authentication.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::response::Resp;
use crate::app::App;

/// Scrapes are small and quick; a stuck scraper must not hold up shutdown for long.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Serves `GET /metrics` on `listener` until `stop` is cancelled.
pub async fn serve(app: Arc<App>, listener: TcpListener, stop: CancellationToken) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(app.config.http.header_timeout));
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(answer(&app, &req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
}

/// The metrics text, with the gauges sampled now. The breakers' states live in the providers,
/// the pumping breaker's in the store (shared by all daemons); a store that cannot answer leaves
/// those gauges out rather than failing the scrape.
pub async fn scrape(app: &App) -> String {
    let pumping = app.store.pumping_states().await.unwrap_or_default();
    let breakers = app.provider.breaker_states();
    app.metrics
        .set_provider_states(breakers.iter().map(|(name, s)| (*name, s.as_str())));
    app.metrics.render(
        app.store.pool_usage().map(Into::into),
        pumping.iter().map(Into::into),
    )
}

async fn answer(app: &App, req: &Request<Incoming>) -> Resp {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            crate::metrics::CONTENT_TYPE,
            scrape(app).await,
        ),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    resp
}
