//! verifyd as systemd runs it: a real subprocess with `NOTIFY_SOCKET` pointing at a socket the
//! test listens on. READY/WATCHDOG/STOPPING, SIGTERM while requests are in flight, the log lines
//! (one JSON object per line, nothing secret in them) and secrets from `$CREDENTIALS_DIRECTORY`.

use crate::common;

use common::fake_aliyun::{FakeAliyun, Mode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::net::UnixDatagram;

const BIN: &str = env!("CARGO_BIN_EXE_verifyd");
const PHONE: &str = "+8613800138000";
const ALIYUN_ID: &str = "LTAItestid";
const ALIYUN_SECRET: &str = "aliyun-secret-from-a-credential";

/// A daemon started as systemd would, and the socket it reports to.
struct Service {
    child: Child,
    notify: UnixDatagram,
    /// Every notification received so far, in order.
    seen: Vec<String>,
    stderr: PathBuf,
    dir: TempDir,
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Service {
    /// Starts `verifyd serve` on a base config (SQLite, port 0, quiet mock writing an outbox)
    /// with `http` added to its `[http]` table and `extra` tables after it, `envs` set, `creds`
    /// as systemd credentials, and the notify socket in place.
    fn start(http: &str, extra: &str, envs: &[(&str, &str)], creds: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&sock).unwrap();
        let config = format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n{http}\n\
             [store.sqlite]\npath = \"{db}\"\n\
             [session]\ncookie_secure = false\n\
             [provider.mock]\nquiet = true\noutbox = \"{outbox}\"\n{extra}",
            db = dir.path().join("verifyd.db").display(),
            outbox = dir.path().join("outbox.jsonl").display(),
        );
        let cfg = dir.path().join("config.toml");
        std::fs::write(&cfg, config).unwrap();
        let stderr = dir.path().join("stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.current_dir(dir.path())
            .arg("--config")
            .arg(&cfg)
            .arg("serve")
            .env("NOTIFY_SOCKET", &sock)
            .env_remove("RUST_LOG")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("VERIFYD_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(envs.iter().copied());
        if !creds.is_empty() {
            cmd.env("CREDENTIALS_DIRECTORY", credentials(dir.path(), creds));
        }
        Service {
            child: cmd.spawn().unwrap(),
            notify,
            seen: Vec::new(),
            stderr,
            dir,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for a notification containing the line `line`; returns that whole message.
    async fn expect(&mut self, line: &str, within: Duration) -> String {
        if let Some(m) = self.seen.iter().find(|m| m.lines().any(|l| l == line)) {
            return m.clone();
        }
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let n = match tokio::time::timeout(left, self.notify.recv(&mut buf)).await {
                Ok(r) => r.unwrap(),
                Err(_) => panic!(
                    "no {line:?} within {within:?}; got {:?}\nstderr:\n{}",
                    self.seen,
                    self.logs()
                ),
            };
            let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
            self.seen.push(msg.clone());
            if msg.lines().any(|l| l == line) {
                return msg;
            }
        }
    }

    /// Waits for READY=1 and returns the API's base URL, read from the STATUS sent with it.
    async fn ready(&mut self) -> String {
        let msg = self.expect("READY=1", Duration::from_secs(20)).await;
        let addr = msg
            .lines()
            .find_map(|l| l.strip_prefix("STATUS=serving on "))
            .unwrap_or_else(|| panic!("READY without the address: {msg:?}"));
        format!("http://{addr}")
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit; returns its success and how long that took.
    async fn exit(&mut self, within: Duration) -> (bool, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.success(), started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "still running {within:?} after SIGTERM\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn outbox_code(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("outbox.jsonl")).unwrap();
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        last["code"].as_str().unwrap().to_owned()
    }
}

fn credentials(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let creds = dir.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    for (name, value) in files {
        std::fs::write(creds.join(name), format!("{value}\n")).unwrap();
    }
    creds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_ready_watchdog_and_stopping() {
    let mut s = Service::start("", "", &[("WATCHDOG_USEC", "200000")], &[]);
    let base = s.ready().await;
    // READY comes after the bind: the port answers at once.
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let starting = &s.seen[0];
    assert!(starting.starts_with("STATUS=starting"), "{starting:?}");
    // Pings at half the 200 ms period: two arrive well within a second.
    s.expect("WATCHDOG=1", Duration::from_secs(2)).await;
    let pings_before = s.seen.iter().filter(|m| *m == "WATCHDOG=1").count();
    s.seen.retain(|m| m != "WATCHDOG=1");
    s.expect("WATCHDOG=1", Duration::from_secs(2)).await;
    assert!(pings_before >= 1);

    s.sigterm();
    let stopping = s.expect("STOPPING=1", Duration::from_secs(5)).await;
    assert!(stopping.contains("STATUS="), "{stopping:?}");
    let (ok, _) = s.exit(Duration::from_secs(12)).await;
    assert!(ok, "exit status\n{}", s.logs());
    // Human format, but no colour codes when stderr is not a terminal (journald).
    let logs = s.logs();
    assert!(logs.contains("verifyd listening"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in {logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_watchdog_there_are_no_pings() {
    let mut s = Service::start("", "", &[], &[]);
    s.ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.sigterm();
    s.expect("STOPPING=1", Duration::from_secs(5)).await;
    assert!(s.exit(Duration::from_secs(12)).await.0);
    assert!(
        !s.seen.iter().any(|m| m.contains("WATCHDOG=1")),
        "{:?}",
        s.seen
    );
}

/// A daemon whose SMS gateway (a fake Aliyun) takes `stall` to answer; the AccessKey secret
/// comes from a systemd credential, so every accepted send also proves credentials work.
async fn slow_gateway(stall: Duration, grace: u64) -> (Service, FakeAliyun, String) {
    let fake = FakeAliyun::start(ALIYUN_ID, ALIYUN_SECRET).await;
    fake.set_mode(Mode::Stall(stall));
    let extra = format!(
        "[provider]\nkind = \"aliyun\"\n[provider.aliyun]\naccess_key_id = \"{ALIYUN_ID}\"\n\
         sign_name = \"test\"\ntemplate_code = \"SMS_1\"\nendpoint = \"{}\"\n\
         timeout = 8\nmax_total = 9\n\
         [challenge]\nmode = \"off\"\n",
        fake.url()
    );
    let mut s = Service::start(
        &format!("shutdown_grace = {grace}"),
        &extra,
        &[],
        &[("provider.aliyun.access_key_secret", ALIYUN_SECRET)],
    );
    let base = s.ready().await;
    (s, fake, base)
}

/// Starts `n` sends (one browser each, distinct numbers) and waits until the gateway holds all.
async fn sends_in_flight(
    base: &str,
    fake: &FakeAliyun,
    n: usize,
) -> Vec<tokio::task::JoinHandle<reqwest::StatusCode>> {
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let req = client
                .post(format!("{base}/v1/verifications"))
                .json(&serde_json::json!({ "phone": format!("+86138001{i:05}") }));
            tokio::spawn(async move { req.send().await.map(|r| r.status()).unwrap_or_default() })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.requests_seen().len() < n {
        assert!(
            Instant::now() < deadline,
            "the sends never reached the gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_in_flight_requests() {
    let (mut s, fake, base) = slow_gateway(Duration::from_millis(1500), 5).await;
    let tasks = sends_in_flight(&base, &fake, 16).await;
    s.sigterm();
    s.expect("STOPPING=1", Duration::from_secs(5)).await;
    // New connections are refused at once; the ones in flight go on.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = base.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after SIGTERM"
    );
    for t in tasks {
        assert_eq!(t.await.unwrap(), reqwest::StatusCode::ACCEPTED);
    }
    let (ok, took) = s.exit(Duration::from_secs(10)).await;
    assert!(ok, "exit status after SIGTERM\n{}", s.logs());
    assert!(took < Duration::from_secs(5), "took {took:?}, grace is 5 s");
    assert_eq!(
        fake.messages().len(),
        16,
        "every send was signed with the credential"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_up_on_requests_at_the_grace_period() {
    let (mut s, fake, base) = slow_gateway(Duration::from_secs(6), 1).await;
    let tasks = sends_in_flight(&base, &fake, 4).await;
    let started = Instant::now();
    s.sigterm();
    let (ok, _) = s.exit(Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert!(ok, "exit status\n{}", s.logs());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(3000),
        "stopped after {took:?} with a 1 s grace period"
    );
    assert!(
        s.logs()
            .contains("did not finish within the shutdown grace period")
    );
    for t in tasks {
        assert_ne!(t.await.unwrap(), reqwest::StatusCode::ACCEPTED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_one_object_per_line_and_nothing_secret() {
    let mut s = Service::start(
        "",
        "[log]\nformat = \"json\"\nlevel = \"debug\"\n",
        &[],
        &[("verification.secret", "mac-key-from-a-credential")],
    );
    let base = s.ready().await;
    let client = reqwest::Client::new();
    let post = |path: &str, id: &str, cookie: Option<&str>, body: Value| {
        let mut req = client
            .post(format!("{base}{path}"))
            .header("x-request-id", id)
            .json(&body);
        if let Some(c) = cookie {
            req = req.header("cookie", format!("sessionid={c}"));
        }
        req.send()
    };
    let resp = post(
        "/v1/verifications",
        "flow-send",
        None,
        serde_json::json!({ "phone": PHONE }),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["x-request-id"], "flow-send");
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = set_cookie
        .strip_prefix("sessionid=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_owned();
    let code = s.outbox_code();
    let resp = post(
        "/v1/verifications/check",
        "flow-check",
        Some(&session),
        serde_json::json!({ "phone": PHONE, "code": code }),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let new_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    // No X-Request-Id: the daemon makes one and sends it back.
    let resp = client.get(format!("{base}/healthz")).send().await.unwrap();
    let made_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made_id.len(), 16, "{made_id}");
    s.sigterm();
    assert!(s.exit(Duration::from_secs(12)).await.0);

    let logs = s.logs();
    let lines: Vec<Value> = logs
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect();
    let request = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no request line for {id} in\n{logs}"))
    };
    let send = request("flow-send");
    assert_eq!(send["route"], "/v1/verifications");
    assert_eq!(send["method"], "POST");
    assert_eq!(send["status"], 202);
    assert!(send["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(send["timestamp"].is_string() && send["level"] == "INFO");
    let check = request("flow-check");
    assert_eq!(check["route"], "/v1/verifications/check");
    assert_eq!(check["status"], 200);
    assert_eq!(request(&made_id)["route"], "/healthz");

    // The number appears only masked; the code, the MAC key and session keys never. Timestamps,
    // latencies and made-up request ids are random digits that could contain the code by
    // chance, so they are left out of the search.
    assert!(logs.contains("+86138****8000"), "{logs}");
    let searched: String = lines
        .iter()
        .map(|l| {
            let mut l = l.as_object().unwrap().clone();
            for noise in ["timestamp", "latency_ms", "elapsed_ms", "request_id"] {
                l.remove(noise);
            }
            format!("{}\n", Value::Object(l))
        })
        .collect();
    let new_session = new_cookie
        .strip_prefix("sessionid=")
        .and_then(|v| v.split(';').next())
        .unwrap();
    for secret in [
        "8613800138000",
        "13800138000",
        code.as_str(),
        "mac-key-from-a-credential",
        session.as_str(),
        new_session,
    ] {
        assert!(
            !searched.contains(secret),
            "{secret:?} is in the logs:\n{logs}"
        );
    }
}
