//! Opening a pooled connection from a multi-host URL the way libpq does: each host gets its own
//! `connect_timeout` for the whole attempt (TCP, TLS, start-up, the `target_session_attrs`
//! check). tokio-postgres bounds only the TCP connect, so a primary that froze with its sockets
//! open would otherwise hold every attempt and the standby behind it would never be tried.

use deadpool_postgres::Connect;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_postgres::config::{Host, LoadBalanceHosts, SslMode};
use tokio_postgres::{Client, Config, Error};

use crate::store::pg_tls::RustlsConnect;

/// The pool's [`Connect`]: tries the URL's hosts one after the other.
pub struct HostByHost {
    pub tls: RustlsConnect,
    /// Limit for one host's attempt.
    pub per_host: Duration,
    /// Whether a plaintext connection under `sslmode=prefer` was already reported.
    pub warned_plaintext: AtomicBool,
}

type Connected = Result<(Client, JoinHandle<()>), Error>;

impl Connect for HostByHost {
    fn connect(&self, config: &Config) -> Pin<Box<dyn Future<Output = Connected> + Send + '_>> {
        let config = config.clone();
        Box::pin(async move {
            let mut order: Vec<usize> = (0..config.get_hosts().len().max(1)).collect();
            if config.get_load_balance_hosts() == LoadBalanceHosts::Random {
                shuffle(&mut order);
            }
            let mut last = None;
            for i in order {
                let one = single_host(&config, i);
                let (tls, encrypted) = self.tls.watched();
                match tokio::time::timeout(self.per_host, one.connect(tls)).await {
                    Ok(Ok((client, connection))) => {
                        if one.get_ssl_mode() == SslMode::Prefer
                            && !encrypted.load(Ordering::Relaxed)
                            && !self.warned_plaintext.swap(true, Ordering::Relaxed)
                        {
                            tracing::warn!(
                                host = host_name(&one),
                                port = one.get_ports().first().copied().unwrap_or(5432),
                                "PostgreSQL connection without TLS: the server offers none and \
                                 sslmode is prefer; set sslmode=verify-full to refuse plaintext"
                            );
                        }
                        let task = tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::debug!(error = %e, "PostgreSQL connection ended");
                            }
                        });
                        return Ok((client, task));
                    }
                    Ok(Err(e)) => last = Some(e),
                    // A host that did not answer in time: the next one may.
                    Err(_) => {}
                }
            }
            match last {
                Some(e) => Err(e),
                // Every host timed out. tokio-postgres offers no way to build its error type,
                // so this attempt waits for the pool's create timeout (set to the sum of the
                // per-host limits), which reports the timeout.
                None => std::future::pending().await,
            }
        })
    }
}

fn host_name(c: &Config) -> String {
    match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    }
}

/// The configuration narrowed to the `i`-th host (with its port and `hostaddr`).
fn single_host(all: &Config, i: usize) -> Config {
    let mut one = Config::new();
    if let Some(v) = all.get_user() {
        one.user(v);
    }
    if let Some(v) = all.get_password() {
        one.password(v);
    }
    if let Some(v) = all.get_dbname() {
        one.dbname(v);
    }
    if let Some(v) = all.get_options() {
        one.options(v);
    }
    if let Some(v) = all.get_application_name() {
        one.application_name(v);
    }
    one.ssl_mode(all.get_ssl_mode());
    one.ssl_negotiation(all.get_ssl_negotiation());
    match all.get_hosts().get(i) {
        Some(Host::Tcp(h)) => {
            one.host(h);
        }
        Some(Host::Unix(p)) => {
            one.host_path(p);
        }
        None => {}
    }
    if let Some(a) = all.get_hostaddrs().get(i) {
        one.hostaddr(*a);
    }
    // libpq: one port for every host, or one per host.
    if let Some(p) = all.get_ports().get(i).or(all.get_ports().first()) {
        one.port(*p);
    }
    if let Some(v) = all.get_connect_timeout() {
        one.connect_timeout(*v);
    }
    if let Some(v) = all.get_tcp_user_timeout() {
        one.tcp_user_timeout(*v);
    }
    one.keepalives(all.get_keepalives());
    one.keepalives_idle(all.get_keepalives_idle());
    if let Some(v) = all.get_keepalives_interval() {
        one.keepalives_interval(v);
    }
    if let Some(v) = all.get_keepalives_retries() {
        one.keepalives_retries(v);
    }
    one.target_session_attrs(all.get_target_session_attrs());
    one.channel_binding(all.get_channel_binding());
    one
}

fn shuffle(order: &mut [usize]) {
    for i in (1..order.len()).rev() {
        let r = getrandom::u32().unwrap_or(0) as usize % (i + 1);
        order.swap(i, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_keeps_its_port_and_everything_else() {
        let all: Config =
            "postgres://u:pw@a:5001,b:5002/db?target_session_attrs=read-write&application_name=x"
                .parse()
                .unwrap();
        let b = single_host(&all, 1);
        assert_eq!(b.get_hosts(), &[Host::Tcp("b".into())]);
        assert_eq!(b.get_ports(), &[5002]);
        assert_eq!(b.get_user(), Some("u"));
        assert_eq!(b.get_password(), Some(&b"pw"[..]));
        assert_eq!(b.get_dbname(), Some("db"));
        assert_eq!(b.get_application_name(), Some("x"));
        assert_eq!(
            b.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        let shared: Config = "host=a,b port=5009 user=u dbname=db".parse().unwrap();
        assert_eq!(single_host(&shared, 0).get_ports(), &[5009]);
    }
}
