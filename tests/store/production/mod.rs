//! PostgreSQL as production runs it: TLS configured by libpq's URL parameters, and a primary
//! that fails over to its standby under traffic. Every test runs private clusters of its own
//! (see common/cluster.rs), so it may reconfigure, stop, freeze and promote them.

mod failover;
mod pgbouncer;
mod tls;

use crate::common;
use common::daemon::TestDaemon;
use std::path::Path;
use verifyd::config::{Backend, Config};
use verifyd::daemon::Daemon;
use verifyd::secret::Secret;

/// A test daemon (mock provider, API key, port 0) on the PostgreSQL database at `url`.
pub async fn daemon_on(url: &str, tweak: impl FnOnce(&mut Config)) -> TestDaemon {
    let url = url.to_owned();
    TestDaemon::start(Backend::Sqlite, move |c| {
        c.store.backend = Backend::Postgres;
        c.store.postgres.url = Secret::new(url);
        c.store.postgres.pool_size = 4;
        tweak(c);
    })
    .await
    .expect("a SQLite-based config never skips")
}

/// The error with which a daemon on `url` refuses to start (panics if it starts).
pub async fn start_error(url: &str, dir: &Path) -> String {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.store.backend = Backend::Postgres;
    c.store.postgres.url = Secret::new(url);
    c.store.postgres.connect_timeout = 2;
    c.provider.mock.outbox = Some(dir.join("outbox.jsonl"));
    c.provider.mock.quiet = true;
    match Daemon::start(c).await {
        Ok(d) => {
            d.stop().await;
            panic!("a daemon on {url} started");
        }
        Err(e) => format!("{e:#}"),
    }
}

/// A phone number of the test's own (numbers differ per test so outboxes never mix them up).
pub fn phone(prefix: u32, n: u32) -> String {
    format!("+86138{prefix:04}{n:04}")
}
