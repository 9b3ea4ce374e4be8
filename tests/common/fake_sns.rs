//! A capturing SNS endpoint on 127.0.0.1:0: it records each awsQuery form the SDK sends and answers
//! from a script (a Publish result, an AWS error document, or silence). moto checks signatures and
//! stores messages but drops message attributes and never fails on its own; this fills both gaps.
//! It does not check signatures.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::fake_server::FakeServer;

/// How the fake answers one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// `200 PublishResponse` with a message id.
    Ok,
    /// An AWS error document: HTTP status, `Code`, `Message`.
    Error(u16, &'static str, &'static str),
    /// No answer for this long.
    Stall(Duration),
}

#[derive(Default)]
struct State {
    /// Answers still to give; the last one repeats.
    script: Vec<Answer>,
    seen: Vec<BTreeMap<String, String>>,
}

pub struct FakeSns {
    server: FakeServer,
    state: Arc<Mutex<State>>,
}

impl FakeSns {
    /// Starts a fake that answers with `script` in order, repeating the last answer.
    pub async fn start(script: Vec<Answer>) -> FakeSns {
        assert!(!script.is_empty());
        let state = Arc::new(Mutex::new(State {
            script,
            seen: Vec::new(),
        }));
        let server = FakeServer::start(state.clone(), handle).await;
        FakeSns { server, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// The decoded form of every request, oldest first.
    pub fn requests(&self) -> Vec<BTreeMap<String, String>> {
        self.state.lock().unwrap().seen.clone()
    }

    /// The `MessageAttributes.entry.N.*` fields of a request as name → (DataType, StringValue).
    pub fn attributes(form: &BTreeMap<String, String>) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        for n in 1.. {
            let field = |f: &str| {
                form.get(&format!("MessageAttributes.entry.{n}.{f}"))
                    .cloned()
            };
            let Some(name) = field("Name") else { break };
            out.insert(
                name,
                (
                    field("Value.DataType").unwrap_or_default(),
                    field("Value.StringValue").unwrap_or_default(),
                ),
            );
        }
        out
    }
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let answer = {
        let mut s = state.lock().unwrap();
        s.seen.push(form);
        if s.script.len() > 1 {
            s.script.remove(0)
        } else {
            s.script[0].clone()
        }
    };
    let n = state.lock().unwrap().seen.len();
    let (status, xml) = match answer {
        Answer::Ok => (
            200,
            format!(
                r#"<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult><MessageId>fake-msg-{n}</MessageId></PublishResult><ResponseMetadata><RequestId>fake-req-{n}</RequestId></ResponseMetadata></PublishResponse>"#
            ),
        ),
        Answer::Error(status, code, message) => (
            status,
            format!(
                r#"<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fake-req-{n}</RequestId></ErrorResponse>"#
            ),
        ),
        Answer::Stall(d) => {
            tokio::time::sleep(d).await;
            (500, String::new())
        }
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .body(Full::new(Bytes::from(xml)))
        .unwrap())
}
