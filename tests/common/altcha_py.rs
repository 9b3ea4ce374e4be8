//! The `altcha` package from PyPI (ALTCHA's own Python library, pinned in `.ci/run`) as an
//! independent implementation of the ALTCHA v1 protocol: it solves verifyd's challenges, checks
//! verifyd's signatures with the same key, and makes challenges of its own (signed with verifyd's
//! key or another), so that verifyd is tested against code it shares nothing with.
//!
//! Without the package the tests that need it are skipped, except with `CI` set, where that is a
//! failure (`.ci/run` installs it).

use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// The version `.ci/run` installs.
pub const VERSION: &str = "2.3.0";

/// Reads one JSON request on stdin, answers one JSON line. Only the library's public v1 API.
const SCRIPT: &str = r#"
import datetime, json, sys
import altcha

req = json.load(sys.stdin)
op = req["op"]
if op == "solve":
    c = req["challenge"]
    sol = altcha.solve_challenge_v1(c["challenge"], c["salt"], c["algorithm"], c["maxnumber"])
    payload = altcha.PayloadV1(c["algorithm"], c["challenge"], sol.number, c["salt"], c["signature"])
    out = {"number": sol.number, "payload": payload.to_base64()}
elif op == "payload":
    c = req["challenge"]
    payload = altcha.PayloadV1(c["algorithm"], c["challenge"], req["number"], c["salt"], c["signature"])
    out = {"payload": payload.to_base64()}
elif op == "verify":
    ok, err = altcha.verify_solution_v1(req["payload"], req["key"], True)
    out = {"ok": ok, "error": err}
elif op == "create":
    expires = None
    if req.get("expires_in") is not None:
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=req["expires_in"])
    c = altcha.create_challenge_v1(altcha.ChallengeOptionsV1(
        hmac_key=req["key"], max_number=req["max_number"], expires=expires))
    out = {"algorithm": c.algorithm, "challenge": c.challenge, "maxnumber": c.max_number,
           "salt": c.salt, "signature": c.signature}
print(json.dumps(out), flush=True)
"#;

fn installed() -> bool {
    Command::new("python3")
        .args([
            "-c",
            &format!(
                "import importlib.metadata as m, altcha; assert m.version('altcha') == '{VERSION}'"
            ),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when the library is there; prints `SKIPPED` outside CI, panics under `CI`.
pub fn available(test: &str) -> bool {
    if installed() {
        return true;
    }
    let why = format!(
        "the altcha Python package {VERSION} is not installed (pip install altcha=={VERSION})"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why}; .ci/run installs it");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

async fn run(request: Value) -> Value {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .args(["-c", SCRIPT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(request.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "altcha script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the script prints JSON")
    })
    .await
    .unwrap()
}

/// Solves a challenge (the JSON of `GET /v1/challenge`); returns the number and the payload.
pub async fn solve(challenge: &Value) -> (u64, String) {
    let v = run(json!({ "op": "solve", "challenge": challenge })).await;
    (
        v["number"].as_u64().unwrap(),
        v["payload"].as_str().unwrap().to_owned(),
    )
}

/// The widget's payload for `challenge` with any `number`, right or wrong.
pub async fn payload(challenge: &Value, number: u64) -> String {
    let v = run(json!({ "op": "payload", "challenge": challenge, "number": number })).await;
    v["payload"].as_str().unwrap().to_owned()
}

/// What the library's own verifier says about `payload` under `key`.
pub async fn verifies(payload: &str, key: &str) -> bool {
    let v = run(json!({ "op": "verify", "payload": payload, "key": key })).await;
    v["ok"].as_bool().unwrap()
}

/// A challenge the library makes itself, signed with `key`; `expires_in` seconds from now
/// (negative: already expired; `None`: no expiry at all).
pub async fn create(key: &str, max_number: u64, expires_in: Option<i64>) -> Value {
    run(json!({ "op": "create", "key": key, "max_number": max_number, "expires_in": expires_in }))
        .await
}
