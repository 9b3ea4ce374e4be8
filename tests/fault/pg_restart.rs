//! PostgreSQL restart under load. The shared cluster other tests use must not be restarted, so
//! this test runs a private throwaway cluster (common/cluster.rs) and stops and starts that one
//! under a running `verifyd` process.
//! While the database is down every request must fail fast with 503 `store_unavailable`,
//! `/readyz` must say not ready and the process must stay up; once the database is back,
//! requests must succeed again within 2 s, without a daemon restart.

use crate::common;

use common::cluster::Cluster;
use common::process::{Proc, free_port};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const API_KEY: &str = "fault-pg-api-key";
/// The daemon's store limits for this test; a request may take at most their sum (plus the
/// one-second margin `PgStore` adds) before it must have answered.
const ACQUIRE_MS: u64 = 500;
const CONNECT_S: u64 = 1;
const STATEMENT_MS: u64 = 1000;

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
    let Some(cluster) = Cluster::init() else {
        return;
    };
    cluster.start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let hash = hex::encode(Sha256::digest(API_KEY.as_bytes()));
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\nrequest_timeout = 15\n\
         [store]\nbackend = \"postgres\"\n\
         [store.postgres]\nurl = {:?}\npool_size = 4\nconnect_timeout = {CONNECT_S}\n\
         acquire_timeout = {}\nstatement_timeout = {}\n\
         [provider.mock]\nquiet = true\n[api.keys]\nfault = \"{hash}\"\n[log]\nlevel = \"warn\"\n",
        cluster.url(),
        ACQUIRE_MS as f64 / 1000.0,
        STATEMENT_MS as f64 / 1000.0,
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
    // A fast shutdown: open sessions are terminated, as in a restart for maintenance.
    cluster.stop("fast");
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
