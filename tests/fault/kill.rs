//! kill -9 under load: the real binary serves eight busy clients, is SIGKILLed mid-traffic and
//! restarted on the same store, twice. Afterwards every write the clients saw acknowledged is
//! there, every approval is still an approval (the session holds `verified_phone` under its
//! new key), the old keys are dead, and no code approves a second time. Requests cut off by the
//! kill were never acknowledged, so they may or may not have happened — but only whole.

use crate::common;

use common::pg::TestDb;
use common::process::{Proc, free_port};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const API_KEY: &str = "fault-kill-api-key";
const PHONE: &str = "+12015550123";
const CODE: &str = "123456";
const WORKERS: usize = 8;
const ROUNDS: usize = 2;
/// Approvals acknowledged before each kill; two rounds make the final check's minimum.
const MIN_APPROVALS_PER_ROUND: usize = 10;

/// What a client knows for sure about one session: its last acknowledged state, plus the
/// operation that was in flight when the daemon died (if any).
#[derive(Debug, Clone)]
struct Known {
    key: String,
    data: Value,
    approved: bool,
    in_flight: Option<Op>,
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Set(i64),
    Send,
    Check,
}

fn toml(store: &str, port: u16) -> String {
    let hash = hex::encode(Sha256::digest(API_KEY.as_bytes()));
    format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n{store}\
         [session]\ncookie_secure = false\n\
         [verification]\nresend_interval = 1\nmax_attempts = 100\n\
         [verification.test_numbers]\n\"{PHONE}\" = \"{CODE}\"\n\
         [provider.mock]\nquiet = true\n\
         [api.keys]\nfault = \"{hash}\"\n[log]\nlevel = \"warn\"\n\
         [per_phone]\nmax_sends = 0\ndaily_max = 0\nmax_failed_checks = 0\n\
         hard_max_sends = 0\nhard_daily_max = 0\nnetwork_max_sends = 0\n\
         network_daily_max = 0\nnetwork_max_failed_checks = 0\n[challenge]\nmode = \"off\"\n\
         [global]\nmax_sends_per_hour = 0\n[pumping]\nenabled = false\n"
    )
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Option<(StatusCode, Value)> {
    let mut req = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(API_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status();
    let body = resp.json().await.ok()?;
    Some((status, body))
}

/// One client: sessions through their whole life (create, write, send, check) until `stop`.
/// Returns what it knows; a request without an answer ends the client.
async fn client(
    base: String,
    worker: usize,
    stop: Arc<AtomicBool>,
    approvals: Arc<AtomicUsize>,
) -> Vec<Known> {
    use reqwest::Method;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut known: Vec<Known> = Vec::new();
    let mut i = 0i64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let data = json!({ "worker": worker, "i": i });
        let Some((status, body)) = call(
            &http,
            &base,
            Method::POST,
            "/v1/sessions",
            Some(json!({ "data": data })),
        )
        .await
        else {
            break;
        };
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let mut k = Known {
            key: body["key"].as_str().unwrap().to_owned(),
            data,
            approved: false,
            in_flight: None,
        };
        let steps = [Op::Set(i), Op::Send, Op::Check];
        for op in steps {
            let path_key = k.key.clone();
            let answer = match &op {
                Op::Set(v) => {
                    let path = format!("/v1/sessions/{path_key}/data/step");
                    call(
                        &http,
                        &base,
                        Method::PUT,
                        &path,
                        Some(json!({ "value": v })),
                    )
                    .await
                }
                Op::Send => {
                    let body = json!({ "phone": PHONE, "session": path_key });
                    call(&http, &base, Method::POST, "/v1/verifications", Some(body)).await
                }
                Op::Check => {
                    let body = json!({ "phone": PHONE, "code": CODE, "session": path_key });
                    let path = "/v1/verifications/check";
                    call(&http, &base, Method::POST, path, Some(body)).await
                }
            };
            let Some((status, body)) = answer else {
                k.in_flight = Some(op);
                break;
            };
            match op {
                Op::Set(v) => {
                    assert_eq!(status, StatusCode::OK, "{body}");
                    k.data["step"] = json!(v);
                }
                Op::Send => assert_eq!(status, StatusCode::ACCEPTED, "{body}"),
                Op::Check => {
                    assert_eq!(status, StatusCode::OK, "{body}");
                    assert_eq!(body["status"], "approved", "{body}");
                    k.key = body["session"].as_str().unwrap().to_owned();
                    k.approved = true;
                    approvals.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let cut = k.in_flight.is_some();
        known.push(k);
        if cut {
            break;
        }
    }
    known
}

/// Traffic for at least `ms` and until enough approvals were acknowledged to prove something
/// (a loaded machine is slow; 30 s at most), then SIGKILL; returns what the clients know.
async fn load_then_kill(proc: Proc, ms: u64) -> Vec<Known> {
    let stop = Arc::new(AtomicBool::new(false));
    let approvals = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(client(proc.base(), w, stop.clone(), approvals.clone())))
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    while approvals.load(Ordering::Relaxed) < MIN_APPROVALS_PER_ROUND
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proc.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Every acknowledged fact holds on the restarted daemon; in-flight operations happened whole
/// or not at all; approved codes stay spent.
async fn verify(base: &str, known: &[Known]) {
    use reqwest::Method;
    let http = reqwest::Client::new();
    let mut checked = 0;
    for k in known {
        let got = call(
            &http,
            base,
            Method::GET,
            &format!("/v1/sessions/{}", k.key),
            None,
        )
        .await
        .expect("the restarted daemon answers");
        match &k.in_flight {
            // Either the key was cycled (approved) or the session is untouched and unapproved.
            Some(Op::Check) if got.0 == StatusCode::NOT_FOUND => continue,
            Some(Op::Check) => {
                assert_eq!(got.0, StatusCode::OK, "{k:?}: {}", got.1);
                assert!(
                    got.1["data"].get("verified_phone").is_none(),
                    "a half-applied approval: the old key still works but holds the verified number: {k:?} {}",
                    got.1
                );
            }
            _ => {}
        }
        assert_eq!(
            got.0,
            StatusCode::OK,
            "acknowledged session lost: {k:?}: {}",
            got.1
        );
        let data = &got.1["data"];
        for (name, value) in k.data.as_object().unwrap() {
            assert_eq!(
                &data[name], value,
                "acknowledged value `{name}` lost: {k:?}: {data}"
            );
        }
        if let Some(Op::Set(v)) = k.in_flight {
            assert!(
                data.get("step").is_none() || data["step"] == json!(v),
                "{k:?}: {data}"
            );
        }
        if k.approved {
            assert_eq!(
                data["verified_phone"], PHONE,
                "approval lost: {k:?}: {data}"
            );
            let again = json!({ "phone": PHONE, "code": CODE, "session": k.key });
            let (status, body) = call(
                &http,
                base,
                Method::POST,
                "/v1/verifications/check",
                Some(again),
            )
            .await
            .unwrap();
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "a code approved twice: {k:?}: {body}"
            );
        }
        checked += 1;
    }
    let approved = known.iter().filter(|k| k.approved).count();
    let cut = known.iter().filter(|k| k.in_flight.is_some()).count();
    eprintln!("verified {checked} sessions, {approved} approvals, {cut} cut mid-request");
    assert!(
        checked >= 20 && approved >= 10,
        "too little traffic to prove anything: {checked} sessions, {approved} approvals"
    );
}

async fn kill_and_restart(dir: &tempfile::TempDir, store: &str) {
    let port = free_port();
    let config = toml(store, port);
    let mut known = Vec::new();
    for round in 0..ROUNDS {
        let proc = Proc::spawn(dir.path(), "verifyd", port, &config).await;
        known.extend(load_then_kill(proc, 1200 + 300 * round as u64).await);
    }
    let mut proc = Proc::spawn(dir.path(), "verifyd", port, &config).await;
    verify(&proc.base(), &known).await;
    assert!(proc.exited().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "[store]\nbackend = \"sqlite\"\n[store.sqlite]\npath = {:?}\nsynchronous = \"full\"\n",
        dir.path().join("verifyd.db").display().to_string()
    );
    kill_and_restart(&dir, &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_loses_nothing_acknowledged() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = {:?}\npool_size = 8\n",
        db.url
    );
    kill_and_restart(&dir, &store).await;
}
