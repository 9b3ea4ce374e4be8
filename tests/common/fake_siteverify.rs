//! A fake of Cloudflare Turnstile's and hCaptcha's `siteverify` on 127.0.0.1:0, answering as
//! their documentation says: a form POST of `secret` and `response` (and optional `remoteip`;
//! hCaptcha also `sitekey`), checked in that order, answered with `success`, `challenge_ts`,
//! `hostname` and `error-codes`. Tokens are issued by the test (as if a person had solved the
//! widget on some host name), expire after five minutes and are spent at their first
//! verification, like the real services' tokens.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fake_server::FakeServer;

/// Which provider the fake plays; they differ in field and error-code names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Turnstile,
    Hcaptcha,
}

/// How the fake answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Judges every request as the real service does.
    Normal,
    /// `503` with an HTML body, like a provider outage behind a CDN.
    Down,
    /// Holds every request this long before answering normally.
    Stall(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub content_type: Option<String>,
    pub params: BTreeMap<String, String>,
}

struct Token {
    hostname: String,
    issued: Instant,
    used: bool,
}

struct State {
    mode: Mode,
    tokens: HashMap<String, Token>,
    seen: Vec<Seen>,
}

struct Shared {
    provider: Provider,
    secret: String,
    site_key: String,
    state: Mutex<State>,
}

pub struct FakeSiteverify {
    server: FakeServer,
    shared: Arc<Shared>,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// Tokens live five minutes at both providers.
const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

impl FakeSiteverify {
    pub async fn start(provider: Provider, secret: &str, site_key: &str) -> FakeSiteverify {
        let shared = Arc::new(Shared {
            provider,
            secret: secret.to_owned(),
            site_key: site_key.to_owned(),
            state: Mutex::new(State {
                mode: Mode::Normal,
                tokens: HashMap::new(),
                seen: Vec::new(),
            }),
        });
        let server = FakeServer::start(shared.clone(), handle).await;
        FakeSiteverify { server, shared }
    }

    /// The URL to configure as `challenge.siteverify_url`.
    pub fn url(&self) -> String {
        format!("http://{}/siteverify", self.server.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.state.lock().unwrap().mode = mode;
    }

    /// A token as the widget would hand a person who solved it on `hostname`.
    pub fn solve(&self, hostname: &str) -> String {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let token = format!("0.fake-{n:08}-{}", "x".repeat(200));
        self.shared.state.lock().unwrap().tokens.insert(
            token.clone(),
            Token {
                hostname: hostname.to_owned(),
                issued: Instant::now(),
                used: false,
            },
        );
        token
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let mode = {
        let mut st = shared.state.lock().unwrap();
        st.seen.push(Seen {
            method: method.clone(),
            content_type: content_type.clone(),
            params: params.clone(),
        });
        st.mode
    };
    let (status, body) = match mode {
        Mode::Down => (
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><body>503 Service Temporarily Unavailable</body></html>".to_owned(),
        ),
        Mode::Stall(d) => {
            tokio::time::sleep(d).await;
            (
                StatusCode::OK,
                shared
                    .judge(&method, content_type.as_deref(), &params)
                    .to_string(),
            )
        }
        Mode::Normal => (
            StatusCode::OK,
            shared
                .judge(&method, content_type.as_deref(), &params)
                .to_string(),
        ),
    };
    let resp = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    Ok(resp)
}

impl Shared {
    fn fail(&self, codes: &[&str]) -> Value {
        json!({ "success": false, "error-codes": codes })
    }

    /// The documented checks, in order: the request's shape, the secret, the response token
    /// (present, known, fresh, unused), hCaptcha's optional site key.
    fn judge(
        &self,
        method: &str,
        content_type: Option<&str>,
        p: &BTreeMap<String, String>,
    ) -> Value {
        let form = content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if method != "POST" || !form {
            return self.fail(&["bad-request"]);
        }
        match p.get("secret").map(String::as_str) {
            None | Some("") => return self.fail(&["missing-input-secret"]),
            Some(s) if s != self.secret => return self.fail(&["invalid-input-secret"]),
            Some(_) => {}
        }
        let Some(response) = p.get("response").filter(|r| !r.is_empty()) else {
            return self.fail(&["missing-input-response"]);
        };
        if let Some(ip) = p.get("remoteip") {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return self.fail(&[match self.provider {
                    Provider::Turnstile => "bad-request",
                    Provider::Hcaptcha => "invalid-remoteip",
                }]);
            }
        }
        if self.provider == Provider::Hcaptcha {
            if let Some(k) = p.get("sitekey") {
                if *k != self.site_key {
                    return self.fail(&["sitekey-secret-mismatch"]);
                }
            }
        }
        let mut st = self.state.lock().unwrap();
        let Some(token) = st.tokens.get_mut(response) else {
            return self.fail(&["invalid-input-response"]);
        };
        let replayed = match self.provider {
            Provider::Turnstile => "timeout-or-duplicate",
            Provider::Hcaptcha => "already-seen-response",
        };
        if token.used {
            return self.fail(&[replayed]);
        }
        if token.issued.elapsed() > TOKEN_LIFETIME {
            return self.fail(&[match self.provider {
                Provider::Turnstile => "timeout-or-duplicate",
                Provider::Hcaptcha => "expired-input-response",
            }]);
        }
        token.used = true;
        let mut answer = json!({
            "success": true,
            "challenge_ts": "2026-11-30T05:00:00.000Z",
            "hostname": token.hostname,
        });
        match self.provider {
            Provider::Turnstile => {
                answer["error-codes"] = json!([]);
                answer["action"] = json!("");
                answer["cdata"] = json!("");
            }
            Provider::Hcaptcha => answer["credit"] = json!(false),
        }
        answer
    }
}
