//! PostgreSQL restart under load. The shared cluster other tests use must not be restarted, so
//! this test runs a private throwaway cluster (`initdb` in a temp dir, `pg_ctl` on a free port,
//! as the `postgres` user) and stops and starts that one under a running `verifyd` process.
//! While the database is down every request must fail fast with 503 `store_unavailable`,
//! `/readyz` must say not ready and the process must stay up; once the database is back,
//! requests must succeed again within 2 s, without a daemon restart.

mod common;

use common::process::{Proc, free_port};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_KEY: &str = "fault-pg-api-key";
/// The daemon's store limits for this test; a request may take at most their sum (plus the
/// one-second margin `PgStore` adds) before it must have answered.
const ACQUIRE_MS: u64 = 500;
const CONNECT_S: u64 = 1;
const STATEMENT_MS: u64 = 1000;

/// A PostgreSQL cluster of this test's own, stopped (immediately) on drop.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `None` (after a loud SKIPPED line) when this machine cannot run one outside CI.
    fn create() -> Option<Cluster> {
        let ci = std::env::var("CI").as_deref() == Ok("true");
        let skip = |why: String| {
            assert!(!ci, "cannot run a private PostgreSQL cluster: {why}");
            eprintln!("\n*** SKIPPED: cannot run a private PostgreSQL cluster: {why} ***\n");
            None
        };
        let Some(bin) = newest_pg_bin() else {
            return skip("no /usr/lib/postgresql/*/bin".into());
        };
        let (uid, gid) = match (id("-u"), id("-g")) {
            (Some(u), Some(g)) => (u, g),
            _ => return skip("no `postgres` user".into()),
        };
        let dir = tempfile::tempdir().unwrap();
        if let Err(e) = std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)) {
            return skip(format!(
                "cannot hand a directory to `postgres` (not root?): {e}"
            ));
        }
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        if !out.status.success() {
            return skip(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let c = Cluster {
            bin,
            data,
            port: free_port(),
            _dir: dir,
        };
        c.start();
        Some(c)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let sock = self.data.parent().unwrap();
        let opts = format!(
            "-c fsync=off -p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            sock.display()
        );
        let log = sock.join("postgres.log");
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-o", &opts, "-w", "-t", "30"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Returns once the server accepts connections.
    fn start(&self) {
        self.pg_ctl(&["start"]);
    }

    /// A fast shutdown: open sessions are terminated, as in a restart for maintenance.
    fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "stop"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn newest_pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn id(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(program);
    c
}

/// One request as the load generator saw it.
#[derive(Debug)]
struct Seen {
    at: Instant,
    took: Duration,
    /// `None`: no HTTP answer at all.
    status: Option<StatusCode>,
    error: Value,
}

async fn load(base: String, stop: Arc<AtomicBool>, seen: Arc<Mutex<Vec<Seen>>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    while !stop.load(Ordering::Relaxed) {
        let at = Instant::now();
        let resp = http
            .post(format!("{base}/v1/sessions"))
            .bearer_auth(API_KEY)
            .send()
            .await;
        let (status, error) = match resp {
            Ok(r) => {
                let s = r.status();
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (Some(s), body["error"].clone())
            }
            Err(_) => (None, Value::Null),
        };
        seen.lock().unwrap().push(Seen {
            at,
            took: at.elapsed(),
            status,
            error,
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn readyz(base: &str) -> StatusCode {
    reqwest::get(format!("{base}/readyz"))
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_fails_fast_and_recovers() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hash = hex::encode(Sha256::digest(API_KEY.as_bytes()));
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\nrequest_timeout = 15\n\
         [store]\nbackend = \"postgres\"\n\
         [store.postgres]\nurl = {:?}\npool_size = 4\nconnect_timeout = {CONNECT_S}\n\
         acquire_timeout_ms = {ACQUIRE_MS}\nstatement_timeout_ms = {STATEMENT_MS}\n\
         [provider.mock]\nquiet = true\n[api.keys]\nfault = \"{hash}\"\n[log]\nlevel = \"warn\"\n",
        cluster.url()
    );
    let mut proc = Proc::spawn(dir.path(), "verifyd", port, &config).await;
    let base = proc.base();
    assert_eq!(readyz(&base).await, StatusCode::OK);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..4)
        .map(|_| tokio::spawn(load(base.clone(), stop.clone(), seen.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let down_at = Instant::now();
    cluster.stop();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(readyz(&base).await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        proc.exited().is_none(),
        "verifyd exited: {}",
        proc.log_text()
    );

    // The server accepts connections before `pg_ctl start -w` notices and returns, so the
    // outage ends, for judging answers, when the start begins.
    let restarting_at = Instant::now();
    cluster.start();
    let up_at = Instant::now();
    let recovered = loop {
        let ok = seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.at >= up_at && s.status == Some(StatusCode::CREATED));
        if ok {
            break up_at.elapsed();
        }
        assert!(
            up_at.elapsed() < Duration::from_secs(5),
            "no successful request within 5 s of the database's return"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(readyz(&base).await, StatusCode::OK);
    assert!(
        proc.exited().is_none(),
        "verifyd exited: {}",
        proc.log_text()
    );

    let seen = seen.lock().unwrap();
    let bound =
        Duration::from_millis(ACQUIRE_MS + STATEMENT_MS) + Duration::from_secs(CONNECT_S + 1);
    let mut unavailable = 0;
    let mut slowest_failure = Duration::ZERO;
    for s in seen.iter() {
        assert!(s.took < bound, "a request hung for {:?}: {s:?}", s.took);
        match s.status {
            Some(StatusCode::CREATED) => {}
            Some(StatusCode::SERVICE_UNAVAILABLE) => {
                assert_eq!(s.error, "store_unavailable", "{s:?}");
                unavailable += 1;
                slowest_failure = slowest_failure.max(s.took);
            }
            other => panic!("unexpected answer {other:?} {s:?}"),
        }
    }
    let during_outage = seen
        .iter()
        .filter(|s| s.at >= stopped_at && s.at + s.took < restarting_at)
        .collect::<Vec<_>>();
    assert!(
        during_outage.len() >= 10,
        "too few requests while the database was down: {}",
        during_outage.len()
    );
    assert!(
        during_outage
            .iter()
            .all(|s| s.status == Some(StatusCode::SERVICE_UNAVAILABLE)),
        "a request did not get 503 with the database down: {:?}",
        during_outage
            .iter()
            .filter(|s| s.status != Some(StatusCode::SERVICE_UNAVAILABLE))
            .map(|s| (s.status, &s.error))
            .collect::<Vec<_>>()
    );
    assert!(
        recovered < Duration::from_secs(2),
        "service resumed only {recovered:?} after the database"
    );
    eprintln!(
        "{} requests, {unavailable} answered 503 (slowest {slowest_failure:?}); database down \
         {:?}; first success {recovered:?} after it returned",
        seen.len(),
        up_at - down_at
    );
}
