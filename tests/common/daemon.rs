//! Test daemons: a real verifyd on port 0 with its own store (SQLite file in a temp dir, or a
//! fresh PostgreSQL database) and the mock provider writing to an outbox file; plus a tiny
//! browser-like client that keeps the `sessionid` cookie.

use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;
use verifyd::config::{Backend, Config};
use verifyd::daemon::Daemon;

use super::pg::TestDb;

/// The backend API key configured on every test daemon.
pub const API_KEY: &str = "test-api-key-0123456789";

pub struct TestDaemon {
    pub daemon: Option<Daemon>,
    pub base: String,
    pub outbox: PathBuf,
    pub config: Config,
    pub http: reqwest::Client,
    pub dir: TempDir,
    pub db: Option<TestDb>,
}

/// A store for a test: SQLite in `dir`, or a fresh PostgreSQL database.
pub async fn store_config(backend: Backend, dir: &TempDir) -> Option<(Config, Option<TestDb>)> {
    let mut c = Config::default();
    c.store.backend = backend;
    let mut db = None;
    match backend {
        Backend::Sqlite => c.store.sqlite.path = dir.path().join("verifyd.db"),
        Backend::Postgres => {
            let t = TestDb::create().await?;
            c.store.postgres.url = verifyd::secret::Secret::new(t.url.clone());
            c.store.postgres.pool_size = 8;
            db = Some(t);
        }
    }
    Some((c, db))
}

impl TestDaemon {
    /// Starts a daemon; `None` when PostgreSQL is wanted but unreachable outside CI.
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestDaemon> {
        let dir = tempfile::tempdir().unwrap();
        let (mut config, db) = store_config(backend, &dir).await?;
        config.http.listen = "127.0.0.1:0".parse().unwrap();
        config.session.cookie_secure = false;
        config.provider.mock.outbox = Some(dir.path().join("outbox.jsonl"));
        config.provider.mock.quiet = true;
        config
            .api
            .keys
            .insert("test".into(), verifyd::app::hash_api_key(API_KEY));
        config.compat.seed_routes = true;
        tweak(&mut config);
        Some(Self::with_config(config, dir, db).await)
    }

    /// Starts another daemon on the same store and outbox (several daemons, one database).
    pub async fn sibling(&self) -> TestDaemon {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Self::with_config(self.config.clone(), dir, None).await;
        d.outbox = self.outbox.clone();
        d
    }

    async fn with_config(config: Config, dir: TempDir, db: Option<TestDb>) -> TestDaemon {
        let daemon = Daemon::start(config.clone()).await.expect("daemon starts");
        let base = format!("http://{}", daemon.addr);
        let outbox = config.provider.mock.outbox.clone().unwrap_or_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        TestDaemon {
            daemon: Some(daemon),
            base,
            outbox,
            config,
            http,
            dir,
            db,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Every message the mock provider delivered, oldest first. A line the daemon is still
    /// writing (no newline yet) is not delivered yet: a read can see half of it.
    pub fn messages(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.outbox).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).expect("outbox lines are JSON"))
            .collect()
    }

    /// The newest code sent to `phone`.
    pub fn last_code(&self, phone: &str) -> Option<String> {
        self.messages()
            .iter()
            .rev()
            .find(|m| m["to"] == phone)
            .map(|m| m["code"].as_str().unwrap().to_owned())
    }

    /// The newest code sent to `phone`; panics when none was.
    pub fn code_for(&self, phone: &str) -> String {
        self.last_code(phone)
            .unwrap_or_else(|| panic!("no code was sent to {phone}"))
    }

    /// A request with the backend API key.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(API_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        into_json(resp).await
    }

    /// A browser-like client for this daemon.
    pub fn browser(&self) -> Browser {
        Browser {
            base: self.base.clone(),
            http: self.http.clone(),
            cookie: None,
            cookie_name: self.config.session.full_cookie_name(),
        }
    }

    pub async fn stop(mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop().await;
        }
    }
}

/// A digit code of the same length that is certainly not `code`.
pub fn wrong_code(code: &str) -> String {
    let last = code.as_bytes()[code.len() - 1];
    let other = if last == b'2' { '3' } else { '2' };
    format!("{}{other}", &code[..code.len() - 1])
}

/// Status and JSON body of a response (`Value::Null` for an empty or non-JSON body).
pub async fn into_json(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Keeps the session cookie across requests, like a browser would (for one site).
#[derive(Clone)]
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    /// The current `sessionid` value, if any.
    pub cookie: Option<String>,
    pub cookie_name: String,
}

impl Browser {
    /// Sends a request with the cookie; remembers any `Set-Cookie` for the session.
    pub async fn request(&mut self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            req = req.header(COOKIE, format!("{}={c}", self.cookie_name));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        for v in resp.headers().get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let first = v.split(';').next().unwrap();
            if let Some((name, value)) = first.split_once('=') {
                if name == self.cookie_name {
                    self.cookie =
                        (!value.is_empty() && !v.contains("Max-Age=0")).then(|| value.to_owned());
                }
            }
        }
        resp
    }

    pub async fn post(&mut self, path: &str, body: Value) -> (StatusCode, Value) {
        into_json(self.request(Method::POST, path, Some(body)).await).await
    }

    /// `POST /v1/verifications`.
    pub async fn send_code(&mut self, phone: &str) -> (StatusCode, Value) {
        self.post("/v1/verifications", serde_json::json!({ "phone": phone }))
            .await
    }

    /// The end of the README's flow: a wrong code leaves the check pending, the right one
    /// approves the number.
    pub async fn wrong_then_right(&mut self, phone: &str, code: &str) {
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let (status, body) = self.check_code(phone, wrong).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "pending", "{body}");
        let (status, body) = self.check_code(phone, code).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "approved");
        assert_eq!(body["verified_phone"], phone);
    }

    /// `POST /v1/verifications/check`.
    pub async fn check_code(&mut self, phone: &str, code: &str) -> (StatusCode, Value) {
        self.post(
            "/v1/verifications/check",
            serde_json::json!({ "phone": phone, "code": code }),
        )
        .await
    }
}

/// Generates one test per store from `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_stores {
    ($(async fn $name:ident($b:ident: Backend) $body:block)*) => {
        $(
            async fn $name($b: verifyd::config::Backend) $body
        )*
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(verifyd::config::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() { super::$name(verifyd::config::Backend::Postgres).await }
            )*
        }
    };
}
