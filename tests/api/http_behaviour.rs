//! HTTP behaviour every route shares: JSON errors, limits, standard headers, health and
//! readiness (also with the database gone), robustness against garbage, graceful shutdown.

use crate::common;
use verifyd::seconds::Seconds;

use common::daemon::{API_KEY, TestDaemon};
use reqwest::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use verifyd::config::Backend;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Headers every response carries.
fn assert_standard_headers(h: &HeaderMap, what: &str) {
    assert_eq!(
        h.get(CACHE_CONTROL).map(|v| v.to_str().unwrap()),
        Some("no-store"),
        "{what}"
    );
    assert_eq!(
        h.get("x-content-type-options").map(|v| v.to_str().unwrap()),
        Some("nosniff"),
        "{what}"
    );
    assert!(
        h.get("x-request-id")
            .is_some_and(|v| !v.to_str().unwrap().is_empty()),
        "{what}: no X-Request-Id"
    );
}

/// Checks a JSON error response and returns its body.
async fn assert_error(resp: Response, status: StatusCode, code: &str, what: &str) -> Value {
    let headers = resp.headers().clone();
    let got = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    assert_eq!(
        headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "{what}"
    );
    assert_standard_headers(&headers, what);
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"));
    assert_eq!(body["error"], code, "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
    body
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

fn host_port(d: &TestDaemon) -> String {
    d.base.trim_start_matches("http://").to_owned()
}

/// Writes `request` as-is (write errors ignored: the server may answer early and close) and
/// reads until the server closes. `None` when no HTTP response came back.
async fn raw(addr: &str, request: &[u8]) -> Option<RawResponse> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(request).await;
    read_response(&mut stream).await
}

async fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed within 10 s"
    );
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(RawResponse {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
    })
}

/// Reads one keep-alive response (headers and a `Content-Length` body); returns its status.
async fn read_one_response(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return head.split(' ').nth(1).unwrap().parse().unwrap();
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A tiny deterministic generator (xorshift64*), so a failing run can be replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Up to `max` random bytes.
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// 1 to `max` bytes of visible ASCII and obs-text: what a header value may hold.
    fn header_text(&mut self, max: usize) -> Vec<u8> {
        let n = 1 + self.below(max);
        (0..n)
            .map(|_| match self.next() as u8 {
                b @ 0x21..=0x7e | b @ 0x80..=0xff => b,
                _ => b'x',
            })
            .collect()
    }

    /// A path segment of 1 to `max` random bytes, percent-encoded where needed.
    fn segment(&mut self, max: usize) -> String {
        let n = 1 + self.below(max);
        let raw: Vec<u8> = (0..n).map(|_| self.next() as u8).collect();
        percent_encoding::percent_encode(&raw, percent_encoding::NON_ALPHANUMERIC).to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Both stores

on_both_stores! {
    async fn health_and_readiness(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        for path in ["/healthz", "/readyz"] {
            let resp = d.http.get(d.url(path)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_standard_headers(resp.headers(), path);
            assert_eq!(
                resp.headers().get(CONTENT_TYPE).unwrap(),
                "application/json"
            );
            let body: Value = resp.json().await.unwrap();
            assert!(body["status"].is_string(), "{path}: {body}");
        }
        let body: Value = d.http.get(d.url("/readyz")).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            body,
            json!({"status": "ready", "store": "ok", "delivery": "ok", "providers": {"mock": "closed"}})
        );
        // Health checks take no API key, but a wrong method is still refused.
        let resp = d.http.post(d.url("/readyz")).send().await.unwrap();
        assert_eq!(resp.headers().get(ALLOW).unwrap(), "GET");
        assert_error(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "POST /readyz").await;
        d.stop().await;
    }

    async fn success_responses_carry_the_standard_headers(backend: Backend) {
        let Some(d) = TestDaemon::start(backend, |_| {}).await else { return };
        let resp = d
            .http
            .post(d.url("/v1/sessions"))
            .bearer_auth(API_KEY)
            .header("x-request-id", "my-trace-42")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_standard_headers(resp.headers(), "POST /v1/sessions");
        assert_eq!(resp.headers().get("x-request-id").unwrap(), "my-trace-42");
        assert_eq!(resp.headers().get(CONTENT_TYPE).unwrap(), "application/json");
        let s: Value = resp.json().await.unwrap();
        let key = s["key"].as_str().unwrap();
        let resp = d
            .http
            .get(d.url(&format!("/v1/sessions/{key}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_standard_headers(resp.headers(), "GET /v1/sessions/{key}");
        d.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite is enough: nothing below depends on the store.

async fn sqlite_daemon(tweak: impl FnOnce(&mut verifyd::config::Config)) -> TestDaemon {
    TestDaemon::start(Backend::Sqlite, tweak)
        .await
        .expect("SQLite daemons always start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json() {
    let d = sqlite_daemon(|c| c.http.max_body_bytes = 64).await;
    let key = "k".repeat(32);
    let http = &d.http;
    let authed = |m: Method, p: &str| http.request(m, d.url(p)).bearer_auth(API_KEY);

    let cases: Vec<(
        reqwest::RequestBuilder,
        StatusCode,
        &str,
        Option<&str>,
        &str,
    )> = vec![
        (
            http.get(d.url("/nope")),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
            "unknown route",
        ),
        (
            http.get(d.url("/")),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
            "root",
        ),
        (
            http.get(d.url("/v1/sessions/a/b/c/d/e")),
            StatusCode::NOT_FOUND,
            "not_found",
            None,
            "deep",
        ),
        (
            http.get(d.url("/v1/verifications")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("POST"),
            "GET verifications",
        ),
        (
            http.get(d.url("/v1/verifications/check")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("POST"),
            "GET check",
        ),
        (
            authed(Method::PATCH, &format!("/v1/sessions/{key}/data/x")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET, PUT, DELETE"),
            "PATCH data",
        ),
        (
            http.delete(d.url("/healthz")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET"),
            "DELETE healthz",
        ),
        (
            authed(Method::GET, "/v1/sessions"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("POST"),
            "GET sessions",
        ),
        (
            authed(Method::DELETE, &format!("/v1/sessions/{key}")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("GET, PUT"),
            "DELETE session",
        ),
        (
            authed(Method::GET, &format!("/v1/sessions/{key}/flush")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("POST"),
            "GET flush",
        ),
        (
            authed(Method::POST, &format!("/v1/sessions/{key}/expiry")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            Some("PUT"),
            "POST expiry",
        ),
        (
            authed(Method::POST, "/v1/sessions")
                .header(CONTENT_TYPE, "text/plain")
                .body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
            "text/plain",
        ),
        (
            authed(Method::POST, "/v1/sessions").body("{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
            "no content type",
        ),
        (
            http.post(d.url("/v1/verifications"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body("phone=1"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
            "form to JSON route",
        ),
        (
            authed(Method::POST, "/v1/sessions")
                .header(CONTENT_TYPE, "application/json")
                .body(r#"{"data":"#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
            "truncated JSON",
        ),
        (
            http.post(d.url("/v1/verifications"))
                .header(CONTENT_TYPE, "application/json")
                .body("{nope"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
            "garbage JSON",
        ),
        (
            http.post(d.url("/v1/verifications"))
                .header(CONTENT_TYPE, "application/json")
                .body(vec![0xff, 0xfe, b'{']),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
            "non-UTF-8 JSON",
        ),
        (
            authed(Method::PUT, &format!("/v1/sessions/{key}/data/x"))
                .header(CONTENT_TYPE, "application/json"),
            StatusCode::BAD_REQUEST,
            "malformed_json",
            None,
            "empty body where one is required",
        ),
        (
            authed(Method::GET, &format!("/v1/sessions/{key}/data/%FF")),
            StatusCode::BAD_REQUEST,
            "invalid_path",
            None,
            "non-UTF-8 name",
        ),
        (
            authed(Method::POST, "/v1/sessions").json(&json!({"data": {"pad": "x".repeat(200)}})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
            "413 with Content-Length",
        ),
        (
            http.post(d.url("/v1/sessions")),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            None,
            "no API key",
        ),
        (
            http.post(d.url("/v1/verifications"))
                .json(&json!({"phone": "+8613800138000", "session": "abc"})),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            None,
            "browser naming a session",
        ),
        (
            http.post(d.url("/v1/verifications"))
                .json(&json!({"phone": "not a phone"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_phone",
            None,
            "bad phone",
        ),
        (
            http.post(d.url("/v1/verifications"))
                .json(&json!({"phone": "+8613800138000", "x": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            None,
            "unknown field",
        ),
    ];
    for (req, status, code, allow, what) in cases {
        let resp = req.send().await.unwrap();
        let got_allow = resp
            .headers()
            .get(ALLOW)
            .map(|v| v.to_str().unwrap().to_owned());
        assert_error(resp, status, code, what).await;
        if let Some(allow) = allow {
            assert_eq!(got_allow.as_deref(), Some(allow), "{what}: Allow");
        }
    }

    // The limit is exact: 64 bytes pass, 65 do not.
    let body = |n: usize| {
        let b = format!(r#"{{"data":{{"p":"{}"}}}}"#, "x".repeat(n - 17));
        assert_eq!(b.len(), n);
        b
    };
    let resp = authed(Method::POST, "/v1/sessions")
        .header(CONTENT_TYPE, "application/json")
        .body(body(64))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = authed(Method::POST, "/v1/sessions")
        .header(CONTENT_TYPE, "application/json")
        .body(body(65))
        .send()
        .await
        .unwrap();
    assert_error(
        resp,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "65 bytes",
    )
    .await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_limited_too() {
    let d = sqlite_daemon(|c| c.http.max_body_bytes = 64).await;
    let addr = host_port(&d);
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );

    // Small enough, in chunks: accepted.
    let mut small = head.clone().into_bytes();
    for part in [r#"{"data":"#, r#"{"a":1}"#, "}"] {
        small.extend(format!("{:x}\r\n{part}\r\n", part.len()).into_bytes());
    }
    small.extend(b"0\r\n\r\n");
    let resp = raw(&addr, &small).await.expect("a response");
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_eq!(resp.json()["data"], json!({"a": 1}));

    // 4 × 50 bytes with no Content-Length: 413 all the same.
    let mut big = head.into_bytes();
    for _ in 0..4 {
        big.extend(format!("32\r\n{}\r\n", "x".repeat(50)).into_bytes());
    }
    big.extend(b"0\r\n\r\n");
    let resp = raw(&addr, &big).await.expect("a response");
    assert_eq!(resp.status, 413, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("cache-control"), Some("no-store"));
    assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    let body = resp.json();
    assert_eq!(body["error"], "body_too_large", "{resp:?}");
    assert!(body["message"].is_string());

    // A lying Content-Length larger than the limit is refused before the body is read.
    let lying = format!(
        "POST /v1/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000000\r\nConnection: close\r\n\r\n{{}}"
    );
    let resp = raw(&addr, lying.as_bytes()).await.expect("a response");
    assert_eq!(resp.status, 413, "{resp:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let d = sqlite_daemon(|_| {}).await;
    let id = |resp: &Response| {
        resp.headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    for path in ["/healthz", "/nope"] {
        let resp = d
            .http
            .get(d.url(path))
            .header("x-request-id", "abc-123_XYZ")
            .send()
            .await
            .unwrap();
        assert_eq!(id(&resp).as_deref(), Some("abc-123_XYZ"), "{path}");
    }
    let a = id(&d.http.get(d.url("/healthz")).send().await.unwrap()).unwrap();
    let b = id(&d.http.get(d.url("/nope")).send().await.unwrap()).unwrap();
    assert!(a.len() >= 8 && b.len() >= 8, "{a} {b}");
    assert_ne!(a, b, "generated ids are unique");
    // Unusable ids (too long, with spaces) are replaced, not echoed.
    for bad in ["x".repeat(500), "has space".to_owned()] {
        let resp = d
            .http
            .get(d.url("/healthz"))
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .unwrap();
        let got = id(&resp).unwrap();
        assert!(!got.is_empty() && got != bad, "{got}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_gets_a_server_error() {
    let d = sqlite_daemon(|c| c.http.max_body_bytes = 1024).await;
    let addr = host_port(&d);
    let (_, s) = d.api(Method::POST, "/v1/sessions", None).await;
    let real_key = s["key"].as_str().unwrap().to_owned();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("fuzz seed: {seed}");
    let mut rng = Rng(seed);

    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FROB",
    ];
    let content_types = [
        "application/json",
        "application/json; charset=utf-8",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/problem+json",
        "multipart/form-data; boundary=zz",
        "",
    ];
    let mut answered = 0;
    for i in 0..200 {
        let k = match rng.below(4) {
            0 => real_key.clone(),
            1 => rng.segment(32),
            2 => "a".repeat(rng.below(70)),
            _ => "..".into(),
        };
        let seg = rng.segment(40);
        let path = match rng.below(16) {
            0 => "/../../etc/passwd".to_owned(),
            1 => format!("/v1/sessions/{k}/data/{seg}"),
            2 => format!("/v1/sessions/{k}"),
            3 => format!(
                "/v1/sessions/{k}/{}",
                rng.pick(&["clear", "flush", "cycle", "expiry", "data"])
            ),
            4 => format!("/v1/sessions/%00/data/%00{seg}"),
            5 => format!("/v1/sessions/{}", "z".repeat(5000 + rng.below(20_000))),
            6 => format!("/v1/sessions/{k}/data/{}", "%E2%82%AC".repeat(300)),
            7 => "/v1/verifications".into(),
            8 => "/v1/verifications/check".into(),
            9 => format!("/sms_send/?phone={seg}"),
            10 => format!("/sms_check/?phone=%2B8613800138000&code={seg}"),
            11 => format!("/v1/sessions/{k}/data/x?default={seg}"),
            12 => format!("/{seg}/{seg}/..%2F..%2F{seg}"),
            13 => "/v1/sessions".into(),
            14 => format!("/v1/sessions/{k}/data/%2e%2e%2f%2e%2e?{seg}"),
            _ => format!("/healthz?{seg}"),
        };
        let method = *rng.pick(&methods);
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n")
            .into_bytes();
        let mut header = |name: &str, value: &[u8]| {
            req.extend(name.as_bytes());
            req.extend(b": ");
            req.extend(value);
            req.extend(b"\r\n");
        };
        match rng.below(6) {
            0 => header("Authorization", format!("Bearer {API_KEY}").as_bytes()),
            1 => {
                let junk = rng.header_text(100);
                header("Authorization", &[b"Bearer ".as_slice(), &junk].concat());
            }
            2 => header("Authorization", &rng.header_text(300)),
            3 => header("Authorization", b"Basic"),
            _ => {}
        }
        match rng.below(5) {
            0 => header("Cookie", format!("sessionid={real_key}").as_bytes()),
            1 => {
                let junk = rng.header_text(200);
                header("Cookie", &[b"sessionid=".as_slice(), &junk].concat());
            }
            2 => header("Cookie", b"sessionid=\"; sessionid=../../x; =; ;;"),
            3 => header("Cookie", &rng.header_text(4000)),
            _ => {}
        }
        if rng.below(3) == 0 {
            header("X-Request-Id", &rng.header_text(200));
        }
        let ct = *rng.pick(&content_types);
        if !ct.is_empty() {
            header("Content-Type", ct.as_bytes());
        }
        let body = match rng.below(5) {
            0 => Vec::new(),
            1 => rng.bytes(2000),
            2 => format!(
                r#"{{"value": {seg:?}, "phone": "+86138{}", "code": "{}", "expiry": {}}}"#,
                rng.below(1_000_000_000),
                rng.below(1_000_000),
                rng.next() as i64
            )
            .into_bytes(),
            3 => format!(
                r#"{{"data": {{"{seg}": [{}]}}, "expiry": "{seg}"}}"#,
                "[".repeat(rng.below(200))
            )
            .into_bytes(),
            _ => format!("phone={seg}&code={seg}").into_bytes(),
        };
        header("Content-Length", body.len().to_string().as_bytes());
        req.extend(b"\r\n");
        req.extend(&body);

        let resp = raw(&addr, &req).await;
        let shown = String::from_utf8_lossy(&req[..req.len().min(300)]).into_owned();
        let resp =
            resp.unwrap_or_else(|| panic!("request {i} (seed {seed}) got no response: {shown}"));
        assert!(
            resp.status < 500,
            "request {i} (seed {seed}) got {}: {shown}\n{:?}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
        answered += 1;
    }
    assert_eq!(answered, 200);

    // Requests that are not HTTP at all: closed or 4xx, never 5xx.
    let junk: Vec<Vec<u8>> = vec![
        rng.bytes(500),
        b"GET\r\n\r\n".to_vec(),
        b"GET /healthz HTTP/9.9\r\n\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100_000)).into_bytes(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n".to_vec(),
        [b"GET /healthz HTTP/1.1\r\nX: ".as_slice(), &[0u8, 1, 2], b"\r\n\r\n"].concat(),
    ];
    for (i, j) in junk.iter().enumerate() {
        if let Some(resp) = raw(&addr, j).await {
            assert!(resp.status < 500, "junk {i} got {}", resp.status);
        }
    }

    // Still up and still correct. `real_key` itself may be gone: with the API key the fuzz can
    // delete, flush, cycle or expire it, as any backend may. A new session is written and read.
    let resp = d.http.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, s) = d.api(Method::POST, "/v1/sessions", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let key = s["key"].as_str().unwrap();
    let (status, s) = d
        .api(Method::GET, &format!("/v1/sessions/{key}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let d = sqlite_daemon(|c| c.http.shutdown_grace = 5).await;
    let addr = host_port(&d);
    // Idle keep-alive connections in the client's pool must not hold the shutdown up.
    for _ in 0..3 {
        let (status, _) = d.api(Method::GET, "/healthz", None).await;
        assert_eq!(status, StatusCode::OK);
    }

    // Requests whose bodies arrive slowly: in flight when the stop comes.
    const N: usize = 8;
    let body = r#"{"data": {"slow": true}}"#;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(N);
    let mut tasks = Vec::new();
    for _ in 0..N {
        let addr = addr.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            // A first request proves the server has accepted this connection.
            s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            assert_eq!(read_one_response(&mut s).await, 200);
            let head = format!(
                "POST /v1/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {API_KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                &body[..5]
            );
            s.write_all(head.as_bytes()).await.unwrap();
            ready.send(()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(800)).await;
            s.write_all(&body.as_bytes()[5..]).await.unwrap();
            read_response(&mut s).await
        }));
    }
    for _ in 0..N {
        ready_rx.recv().await.unwrap();
    }
    // Let the server parse the slow requests' headers.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let common::daemon::TestDaemon {
        daemon,
        dir,
        config,
        ..
    } = d;
    let started = Instant::now();
    daemon.unwrap().stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "stop took {took:?} (grace is 5 s)"
    );

    for t in tasks {
        let resp = t
            .await
            .unwrap()
            .expect("an in-flight request got its answer");
        assert_eq!(resp.status, 201, "{resp:?}");
        assert_eq!(resp.json()["data"], json!({"slow": true}));
    }
    assert!(
        took >= Duration::from_millis(300),
        "stop returned after {took:?}, before the in-flight requests could finish"
    );
    // Nothing listens any more, and every answered request was stored.
    assert!(
        TcpStream::connect(&addr).await.is_err(),
        "still accepting after stop"
    );
    let n: i64 = rusqlite::Connection::open(&config.store.sqlite.path)
        .unwrap()
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, N as i64);
    drop(dir);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL going away

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_gone_means_503_quickly() {
    let Some(d) = TestDaemon::start(Backend::Postgres, |c| {
        c.store.postgres.connect_timeout = 1;
        c.store.postgres.acquire_timeout = Seconds::from_millis(1000);
        c.store.postgres.statement_timeout = Seconds::from_millis(2000);
        c.sweeper.enabled = false;
    })
    .await
    else {
        return;
    };
    let (status, s) = d.api(Method::POST, "/v1/sessions", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let key = s["key"].as_str().unwrap().to_owned();
    let resp = d.http.get(d.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let admin_url = std::env::var("VERIFYD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (admin, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(conn);
    let name = &d.db.as_ref().unwrap().name;
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop the daemon's database");

    // Readiness notices within a few seconds; every answer comes quickly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let t = Instant::now();
        let resp = d.http.get(d.url("/readyz")).send().await.unwrap();
        let status = resp.status();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "/readyz took {:?}",
            t.elapsed()
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_error(
                resp,
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "/readyz",
            )
            .await;
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            Instant::now() < deadline,
            "/readyz still 200 with the database gone"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let routes: [(Method, String, Option<Value>); 5] = [
        (Method::POST, "/v1/sessions".into(), None),
        (Method::GET, format!("/v1/sessions/{key}"), None),
        (
            Method::PUT,
            format!("/v1/sessions/{key}/data/x"),
            Some(json!({"value": 1})),
        ),
        (Method::POST, format!("/v1/sessions/{key}/flush"), None),
        (
            Method::PUT,
            format!("/v1/sessions/{key}/expiry"),
            Some(json!({"expiry": 5})),
        ),
    ];
    // Every answer is collected first, so that a failure shows all of them.
    let mut answers = Vec::new();
    for (m, p, b) in routes {
        let t = Instant::now();
        let mut req = d.http.request(m.clone(), d.url(&p)).bearer_auth(API_KEY);
        if let Some(b) = b {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let took = t.elapsed();
        let status = resp.status();
        let ct = resp.headers().get(CONTENT_TYPE).cloned();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        answers.push((format!("{m} {p}"), status, ct, body, took));
    }
    for (what, status, ct, body, took) in &answers {
        assert!(
            *status == StatusCode::SERVICE_UNAVAILABLE
                && body["error"] == "store_unavailable"
                && body["message"].is_string()
                && ct.as_ref().is_some_and(|v| v == "application/json")
                && *took < Duration::from_secs(6),
            "{what}: expected a quick 503 store_unavailable; all answers: {answers:#?}"
        );
    }
    // Liveness does not depend on the database.
    let resp = d.http.get(d.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let t = Instant::now();
    d.stop().await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
}

/// Bodies are JSON objects: a positional array must not fill a request's fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_bodies_are_refused() {
    let d = sqlite_daemon(|_| {}).await;
    let (status, body) = d
        .api(Method::POST, "/v1/sessions", Some(json!([{"x": 1}, 300])))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_field");
    let (status, created) = d.api(Method::POST, "/v1/sessions", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let key = created["key"].as_str().unwrap();
    let path = format!("/v1/sessions/{key}/data/n");
    let (status, body) = d.api(Method::PUT, &path, Some(json!([5]))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = d.api(Method::GET, &path, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored: {body}");
    let mut browser = d.browser();
    let (status, body) = browser
        .post("/v1/verifications", json!(["+8613800138000"]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(browser.cookie.is_none() && d.messages().is_empty());
}
