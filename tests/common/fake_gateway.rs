//! A tiny HTTP server on 127.0.0.1:0 that records every request and answers through a handler:
//! the transport under the fakes of Twilio, Vonage and the plain JSON gateway
//! (`fake_sms_apis`). The handlers check requests the way each API documents them; nothing here
//! shares code with verifyd's HTTP provider.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{HeaderMap, Request, Response};
use serde_json::Value;
use std::sync::{Arc, Mutex};

use super::fake_server::FakeServer;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as form fields; `None` unless it is exactly a form body.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }
}

/// The handler: the request → (status, JSON answer).
pub type Handler = Arc<dyn Fn(&Seen) -> (u16, Value) + Send + Sync>;

pub struct FakeGateway {
    server: FakeServer,
    seen: Arc<Mutex<Vec<(Seen, u16)>>>,
}

/// The handler and the log of what it answered.
struct State {
    handler: Handler,
    seen: Arc<Mutex<Vec<(Seen, u16)>>>,
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> super::fake_server::Answer {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    let (status, answer) = (state.handler)(&seen);
    state.seen.lock().unwrap().push((seen, status));
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap())
}

impl FakeGateway {
    pub async fn start(handler: Handler) -> FakeGateway {
        let seen: Arc<Mutex<Vec<(Seen, u16)>>> = Arc::default();
        let state = Arc::new(State {
            handler,
            seen: seen.clone(),
        });
        FakeGateway {
            server: FakeServer::start(state, handle).await,
            seen,
        }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Every request with the status it was answered, oldest first.
    pub fn seen(&self) -> Vec<(Seen, u16)> {
        self.seen.lock().unwrap().clone()
    }
}
