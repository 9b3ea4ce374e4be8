//! moto, the AWS emulator, in server mode on 127.0.0.1:0 with SigV4 checking on. One small
//! Python process per test: it starts the server with `INITIAL_NO_AUTH_ACTION_COUNT=3`, spends
//! those three unauthenticated calls on an IAM user, its access key and a policy allowing
//! `sns:Publish`, prints the key, and stops when its stdin closes (so a crashed test binary leaves
//! nothing behind). From then on moto checks every signature and the user's policy. (One patch to
//! werkzeug keeps the raw body for moto's signature check; see the script.)
//!
//! Without moto installed the tests that need it are skipped, except with `CI` set, where that is
//! a failure (`.ci/run` installs it).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const SERVER: &str = r#"
import json, sys
import werkzeug.wrappers
from moto.server import ThreadedMotoServer
import boto3

# moto recomputes SigV4 over the request body, but in server mode werkzeug has already consumed a
# form body into `request.form`, so moto re-encodes the form with Python's rules (space as '+')
# and any client that encodes differently (aws-sdk-rust: '%20') fails the check. Reading the raw
# bytes without parsing the form first keeps them; werkzeug then parses the form from the cache.
werkzeug.wrappers.Request.data = property(
    lambda self: self.get_data(cache=True, parse_form_data=False))

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
url = "http://127.0.0.1:%d" % server._server.server_port
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")
iam.create_user(UserName="verifyd")
key = iam.create_access_key(UserName="verifyd")["AccessKey"]
iam.put_user_policy(UserName="verifyd", PolicyName="sns-publish", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": "*"}],
}))
print(json.dumps({"url": url, "access_key_id": key["AccessKeyId"],
                  "secret_access_key": key["SecretAccessKey"]}), flush=True)
sys.stdin.read()
server.stop()
"#;

/// A running moto server and the IAM user's key.
pub struct Moto {
    child: Child,
    pub url: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// One SMS moto accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Sms {
    pub phone_number: String,
    pub message: String,
    pub message_id: String,
}

fn moto_installed() -> bool {
    Command::new("python3")
        .args(["-c", "import moto.server, boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Moto {
    /// Starts moto; `None` (with a note on stderr) when it is not installed outside CI.
    pub async fn start() -> Option<Moto> {
        if !moto_installed() {
            if std::env::var_os("CI").is_some() {
                panic!("moto is not installed (pip install \"moto[server]\"); CI requires it");
            }
            eprintln!("skipping: moto is not installed (pip install \"moto[server]\")");
            return None;
        }
        let moto = tokio::task::spawn_blocking(|| {
            let mut child = Command::new("python3")
                .args(["-c", SERVER])
                .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("python3 starts");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .expect("moto prints its address");
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("moto did not start ({e}): {line:?}"));
            let field = |k: &str| v[k].as_str().unwrap().to_owned();
            Moto {
                url: field("url"),
                access_key_id: field("access_key_id"),
                secret_access_key: field("secret_access_key"),
                child,
            }
        });
        Some(
            tokio::time::timeout(Duration::from_secs(90), moto)
                .await
                .expect("moto starts within 90 s")
                .unwrap(),
        )
    }

    /// Every SMS moto accepted, from `GET /moto-api/data.json`.
    pub async fn sms(&self) -> Vec<Sms> {
        let data: Value = reqwest::get(format!("{}/moto-api/data.json", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        data["sns"]["SMS"]
            .as_array()
            .unwrap_or_else(|| panic!("no sns.SMS in moto's data: {data}"))
            .iter()
            .map(|m| Sms {
                phone_number: m["phone_number"].as_str().unwrap().to_owned(),
                message: m["message"].as_str().unwrap().to_owned(),
                message_id: m["message_id"].as_str().unwrap().to_owned(),
            })
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing stdin lets the server stop cleanly; the kill covers a hung interpreter.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
