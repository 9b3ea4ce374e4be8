//! An application's send-hook endpoint, written with the `standardwebhooks` Python package (the
//! specification's reference library), so verifyd's signatures are checked by code that is not
//! ours. Each POST is verified as received and, as a negative control, with its body tampered;
//! the verdicts are printed as JSON lines. The process stops when its stdin closes.
//!
//! Without the package the tests that need it are skipped, except with `CI` set, where that is
//! a failure (`.ci/run` installs it).

use serde_json::Value;
use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

const RECEIVER: &str = r#"
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from standardwebhooks import Webhook, WebhookVerificationError

hook = Webhook(sys.argv[1])
answers = [int(s) for s in sys.argv[2].split(",") if s]  # statuses to answer first
lock = threading.Lock()

def verifies(body, headers):
    try:
        return True, hook.verify(body, headers)
    except WebhookVerificationError as e:
        return False, str(e)

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        ok, payload = verifies(body, headers)
        # The same headers over a body with one character changed must not verify.
        tampered = body.replace(b'"code":"', b'"code":"9', 1)
        if tampered == body:
            tampered = body.replace(b'"', b"'", 1)
        tampered_ok, _ = verifies(tampered, headers) if tampered != body else (None, None)
        with lock:
            status = answers.pop(0) if answers else (204 if ok else 401)
            print(json.dumps({
                "path": self.path,
                "content_type": headers.get("content-type"),
                "webhook_id": headers.get("webhook-id"),
                "webhook_timestamp": headers.get("webhook-timestamp"),
                "webhook_signature": headers.get("webhook-signature"),
                "verified": ok,
                "payload": payload if ok else None,
                "error": None if ok else payload,
                "tampered_verified": tampered_ok,
                "answered": status,
            }), flush=True)
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[3])), Handler)
print(json.dumps({"port": server.server_address[1]}), flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
sys.stdin.read()
server.shutdown()
"#;

/// The running receiver.
pub struct HookReceiver {
    child: Child,
    pub url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

fn installed() -> bool {
    Command::new("python3")
        .args(["-c", "import standardwebhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl HookReceiver {
    /// Starts a receiver that verifies with `secret` and answers `first` statuses before its
    /// own verdict (204 when verified, 401 otherwise). `None` outside CI without the package.
    pub fn start(secret: &str, first: &[u16]) -> Option<HookReceiver> {
        Self::start_on(secret, first, 0)
    }

    /// [`HookReceiver::start`] on a given port (0 picks one), so that a test can bring a
    /// receiver up at an address a daemon already posts to.
    pub fn start_on(secret: &str, first: &[u16], port: u16) -> Option<HookReceiver> {
        if !installed() {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "standardwebhooks is not installed (pip install standardwebhooks==1.1.0); CI requires it"
                );
            }
            eprintln!(
                "skipping: standardwebhooks is not installed (pip install standardwebhooks==1.1.0)"
            );
            return None;
        }
        let answers: Vec<String> = first.iter().map(u16::to_string).collect();
        let mut child = Command::new("python3")
            .args([
                "-c",
                RECEIVER,
                secret,
                &answers.join(","),
                &port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 starts");
        let mut lines: Lines<BufReader<ChildStdout>> =
            BufReader::new(child.stdout.take().unwrap()).lines();
        let first_line = lines.next().expect("the receiver prints its port").unwrap();
        let port = serde_json::from_str::<Value>(&first_line).unwrap()["port"]
            .as_u64()
            .unwrap();
        let received: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = received.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Some(HookReceiver {
            child,
            url: format!("http://127.0.0.1:{port}/hooks/sms"),
            received,
        })
    }

    /// Every delivery with the receiver's verdicts, oldest first. The verdict line of a
    /// request may still be on its way through the pipe when verifyd has its answer, so this
    /// waits until `at_least` lines are in (or two seconds have passed).
    pub fn received(&self, at_least: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= at_least || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

impl Drop for HookReceiver {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
