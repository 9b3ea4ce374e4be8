//! The one listener loop, shared by the API and the metrics address: hyper 1 connections with a
//! header deadline and an optional cap on open connections, and a graceful shutdown that lets
//! in-flight requests finish for a bounded time.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower::util::BoxCloneService;

use super::client_ip::Peer;

/// What a listener serves: one request in, one response out, never an error (every failure is
/// an answer).
pub type HttpService = BoxCloneService<Request, Response, Infallible>;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A client must send its whole request head within this; slow-header clients are cut off.
    pub header_timeout: Duration,
    /// Connections beyond this many are closed at once; `None` for no cap.
    pub max_connections: Option<usize>,
    /// How long in-flight requests may take to finish once `stop` is cancelled.
    pub shutdown_grace: Duration,
}

/// Serves `listener` with `service` until `stop` is cancelled, then drains. Each request
/// carries the connection's peer address as a [`Peer`] extension.
pub async fn serve(
    listener: TcpListener,
    service: HttpService,
    limits: Limits,
    stop: CancellationToken,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let slots = limits.max_connections.map(|n| Arc::new(Semaphore::new(n)));
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
        let permit = match &slots {
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::warn!(%peer, limit = ?limits.max_connections, "connection refused: too many open");
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let per_request = service_fn(move |req: Request<Incoming>| {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(Peer(peer));
            service.clone().oneshot(req)
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), per_request));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let grace = limits.shutdown_grace;
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
