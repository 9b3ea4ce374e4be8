//! A running daemon: the HTTP server plus its background tasks, started together and stopped
//! together. `verifyd serve` and the integration tests both use it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::http::{Limits, serve};

pub struct Daemon {
    pub addr: SocketAddr,
    /// Where `GET /metrics` answers, when `metrics.listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Daemon {
    /// Opens the store (migrating when configured), binds, and starts serving, sweeping and, with
    /// event endpoints, delivering events.
    pub async fn start(config: Config) -> anyhow::Result<Daemon> {
        let migrate = config.store.migrate_on_start;
        let app = Arc::new(App::build(config, migrate).await?);
        let listener = TcpListener::bind(app.config.http.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", app.config.http.listen))?;
        let addr = listener.local_addr()?;
        let metrics_listener = match app.config.metrics.listen {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot listen on {a} (metrics.listen): {e}"))?,
            ),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let events = crate::events::worker::Worker::new(
            &app.config.events,
            app.config.verification.max_attempts,
            app.store.clone(),
            app.metrics.clone(),
        )?;
        if let Some(w) = &events {
            w.start_recording().await;
        }
        let stop = CancellationToken::new();
        let http = &app.config.http;
        let api_limits = Limits {
            header_timeout: Duration::from_secs(http.header_timeout),
            max_connections: Some(http.max_connections),
            shutdown_grace: Duration::from_secs(http.shutdown_grace),
        };
        let mut tasks = vec![tokio::spawn(serve(
            listener,
            crate::http::api(app.clone()),
            api_limits,
            stop.clone(),
        ))];
        if let Some(l) = metrics_listener {
            // Scrapes are small and quick; a stuck scraper must not hold up shutdown for long.
            let limits = Limits {
                max_connections: None,
                shutdown_grace: Duration::from_secs(1),
                ..api_limits
            };
            let service = crate::http::metrics::service(app.clone());
            tasks.push(tokio::spawn(serve(l, service, limits, stop.clone())));
        }
        let sw = &app.config.sweeper;
        if sw.enabled {
            tasks.push(tokio::spawn(crate::sweeper::run(
                app.store.clone(),
                app.metrics.clone(),
                Duration::from_secs(sw.interval),
                sw.batch_size,
                app.config.events.keep_dead.duration(),
                stop.clone(),
            )));
        }
        if let Some(w) = events {
            tasks.push(tokio::spawn(w.run(stop.clone())));
        }
        tracing::info!(%addr, metrics = ?metrics_addr, store = ?app.config.store.backend, "verifyd listening");
        Ok(Daemon {
            addr,
            metrics_addr,
            app,
            stop,
            tasks,
        })
    }

    /// Stops accepting, lets in-flight requests finish (bounded), stops the sweeper and the events
    /// worker (which finishes its round, bounded by `events.timeout`), joins all.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            if let Err(e) = t.await {
                tracing::error!(error = %e, "a daemon task failed");
            }
        }
        if let Err(e) = self.app.store.hand_back().await {
            tracing::warn!(error = %e, "could not hand back the budgets this daemon holds");
        }
        tracing::info!("verifyd stopped");
    }

    /// A token that stops the daemon when cancelled (for signal handlers).
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }
}
