//! PgBouncer (Debian's package) between verifyd and PostgreSQL. Session mode carries verifyd
//! as it is; transaction mode breaks it, because verifyd keeps named prepared statements per
//! connection and the sweeper holds a session-level advisory lock, and transaction mode hands
//! each transaction whichever server connection is free. The README says so; these tests keep
//! that statement true.

use super::{daemon_on, phone};
use crate::common::cluster::{Cluster, give_to_postgres};
use crate::common::process::free_port;
use reqwest::StatusCode;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A PgBouncer daemon in front of `cluster`, stopped on drop.
struct Bouncer {
    port: u16,
    pid_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Bouncer {
    /// `None` (after a loud SKIPPED line) without PgBouncer; under `CI=true` a failure.
    /// `server_connections` is PgBouncer's `default_pool_size`.
    fn start(cluster: &Cluster, pool_mode: &str, server_connections: u32) -> Option<Bouncer> {
        let Some(bin) = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "pgbouncer is not installed (apt-get install pgbouncer)"
            );
            eprintln!("\n*** SKIPPED: pgbouncer is not installed ***\n");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        give_to_postgres(dir.path());
        let port = free_port();
        let d = dir.path();
        std::fs::write(d.join("userlist.txt"), "\"postgres\" \"\"\n").unwrap();
        // verifyd sends `options=-c statement_timeout=…`, which PgBouncer cannot pass on; the
        // timeout then has to be set on the role (see the README).
        let ini = format!(
            "[databases]\npostgres = host=127.0.0.1 port={}\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = trust\nauth_file = {}\npool_mode = {pool_mode}\n\
             default_pool_size = {server_connections}\nmax_client_conn = 100\n\
             ignore_startup_parameters = options\nlogfile = {}\npidfile = {}\n",
            cluster.port,
            d.join("userlist.txt").display(),
            d.join("pgbouncer.log").display(),
            d.join("pgbouncer.pid").display(),
        );
        std::fs::write(d.join("pgbouncer.ini"), ini).unwrap();
        // PgBouncer refuses to run as root.
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&bin)
            .arg("-d")
            .arg(d.join("pgbouncer.ini"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbouncer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Bouncer {
            port,
            pid_file: d.join("pgbouncer.pid"),
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// 24 sends and checks from 8 concurrent browsers; the statuses they got.
async fn traffic(d: &crate::common::daemon::TestDaemon, prefix: u32) -> Vec<StatusCode> {
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let mut b = d.browser();
            let outbox = d.outbox.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for n in 0..3 {
                    let number = phone(prefix, w * 10 + n);
                    let (status, _) = b.send_code(&number).await;
                    statuses.push(status);
                    if status == StatusCode::ACCEPTED {
                        let code = last_code(&outbox, &number);
                        statuses.push(b.check_code(&number, &code).await.0);
                    }
                }
                statuses
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

fn last_code(outbox: &std::path::Path, number: &str) -> String {
    std::fs::read_to_string(outbox)
        .unwrap()
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|m| m["to"] == number)
        .map(|m| m["code"].as_str().unwrap().to_owned())
        .unwrap()
}

fn no_limits(c: &mut verifyd::config::Config) {
    c.per_ip.max_sends = 0;
    c.per_ip.max_checks = 0;
    c.pumping.enabled = false;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_pgbouncer_carries_verifyd() {
    let Some(cluster) = Cluster::init() else {
        return;
    };
    cluster.start();
    cluster.psql("ALTER ROLE postgres SET statement_timeout = '5s'");
    let Some(bouncer) = Bouncer::start(&cluster, "session", 4) else {
        return;
    };
    // Session mode pins a server connection to each of the daemon's (pool_size = 4).
    let d = daemon_on(&bouncer.url(), no_limits).await;
    let statuses = traffic(&d, 50).await;
    assert!(
        statuses.iter().all(|s| s.is_success()),
        "session mode: {statuses:?}"
    );
    assert_eq!(statuses.len(), 48);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_pgbouncer_breaks_prepared_statements() {
    let Some(cluster) = Cluster::init() else {
        return;
    };
    cluster.start();
    let Some(bouncer) = Bouncer::start(&cluster, "transaction", 2) else {
        return;
    };
    // Global to this test binary; only this test's daemon fails on prepared statements.
    let logs = crate::common::logs::capture("warn");
    let d = daemon_on(&bouncer.url(), no_limits).await;
    let statuses = traffic(&d, 51).await;
    let failed = statuses.iter().filter(|s| !s.is_success()).count();
    assert!(
        failed > 0,
        "transaction mode carried all {} requests: if this PgBouncer keeps prepared statements \
         across server connections, revisit the README's PgBouncer section",
        statuses.len()
    );
    let text = logs.text();
    assert!(
        text.contains("prepared statement") && text.contains("does not exist (26000)"),
        "the failures are not the prepared statements':\n{text}"
    );
    eprintln!(
        "transaction mode: {failed} of {} requests failed",
        statuses.len()
    );
    d.stop().await;
}
