//! A fake Tencent Cloud SMS API (`SendSms`, 2021-01-11) on 127.0.0.1:0. It checks what the real
//! API documents — the `X-TC-*` headers, a 5-minute timestamp window, the SecretId, the
//! TC3-HMAC-SHA256 signature over the headers it actually received, the SmsSdkAppId and the
//! body's shape — and answers in Tencent's `{"Response": …}` envelope. The signature is
//! recomputed here from the raw request with its own hashing and date code, sharing nothing
//! with verifyd's signer; the official Python SDK is held against this fake too.

use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use super::fake_server::FakeServer;

/// How the fake answers requests that pass every check.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `SendStatusSet[0].Code = "Ok"` with a fresh `SerialNo`; the message is recorded.
    Ok,
    /// HTTP 200 whose `SendStatusSet[0].Code` is this error code.
    PerNumber(String),
    /// HTTP 200 with a request-level `Response.Error.Code`.
    RequestError(String),
    /// `502` every time.
    ServerError,
    /// `InternalError.Timeout` this many more times, then Ok.
    FailThenOk(u32),
}

/// One request as received, accepted or not.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub authorization: String,
    pub timestamp: String,
    pub host: String,
    pub content_type: String,
    pub action: String,
    pub version: String,
    pub region: String,
    pub body: String,
    /// The code the fake answered (`Ok` or an error code).
    pub code: String,
}

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMessage {
    pub phone: String,
    pub sign_name: Option<String>,
    pub template_id: String,
    pub params: Vec<String>,
    pub serial_no: String,
}

struct Shared {
    id: String,
    key: String,
    app_id: String,
    serial: AtomicU64,
    state: Mutex<(Mode, Vec<SeenRequest>, Vec<FakeMessage>)>,
}

pub struct FakeTencent {
    server: FakeServer,
    shared: Arc<Shared>,
}

impl FakeTencent {
    /// A fake that knows one key pair and one SMS application.
    pub async fn start(id: &str, key: &str, app_id: &str) -> FakeTencent {
        let shared = Arc::new(Shared {
            id: id.into(),
            key: key.into(),
            app_id: app_id.into(),
            serial: AtomicU64::new(1),
            state: Mutex::new((Mode::Ok, Vec::new(), Vec::new())),
        });
        let server = FakeServer::start(shared.clone(), handle).await;
        FakeTencent { server, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.server.addr)
    }

    /// `127.0.0.1:PORT`, the endpoint form the Python SDK takes.
    pub fn host(&self) -> String {
        self.server.addr.to_string()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.state.lock().unwrap().0 = mode;
    }

    pub fn requests_seen(&self) -> Vec<SeenRequest> {
        self.shared.state.lock().unwrap().1.clone()
    }

    pub fn messages(&self) -> Vec<FakeMessage> {
        self.shared.state.lock().unwrap().2.clone()
    }
}

fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut seen = SeenRequest {
        authorization: header(&req, "authorization"),
        timestamp: header(&req, "x-tc-timestamp"),
        host: header(&req, "host"),
        content_type: header(&req, "content-type"),
        action: header(&req, "x-tc-action"),
        version: header(&req, "x-tc-version"),
        region: header(&req, "x-tc-region"),
        body: String::new(),
        code: String::new(),
    };
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.body = String::from_utf8_lossy(&body).into_owned();
    let (status, code, answer) = if method != hyper::Method::POST || path != "/" {
        (StatusCode::NOT_FOUND, "-".to_owned(), json!({}))
    } else {
        shared.decide(&seen, &body)
    };
    seen.code = code;
    shared.state.lock().unwrap().1.push(seen);
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap())
}

fn request_id() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("fake-{n:x}")
}

fn error(code: &str) -> (StatusCode, String, Value) {
    let body = json!({"Response": {"Error": {"Code": code, "Message": "refused by the fake"}, "RequestId": request_id()}});
    (StatusCode::OK, code.to_owned(), body)
}

impl Shared {
    fn decide(&self, r: &SeenRequest, body: &[u8]) -> (StatusCode, String, Value) {
        if r.action != "SendSms" {
            return error("InvalidAction");
        }
        if r.version != "2021-01-11" {
            return error("NoSuchVersion");
        }
        if r.region.is_empty() {
            return error("MissingParameter");
        }
        let Ok(ts) = r.timestamp.parse::<i64>() else {
            return error("InvalidParameter");
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if (now - ts).abs() > 300 {
            return error("AuthFailure.SignatureExpire");
        }
        if let Err(code) = self.check_signature(r, ts, body) {
            return error(code);
        }
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return error("FailedOperation.FailResolvePacket");
        };
        if req["SmsSdkAppId"] != self.app_id.as_str() {
            return error("UnauthorizedOperation.SmsSdkAppIdVerifyFail");
        }
        let Some(template_id) = req["TemplateId"].as_str().filter(|t| !t.is_empty()) else {
            return error("MissingParameter");
        };
        let params: Option<Vec<String>> = match &req["TemplateParamSet"] {
            Value::Null => Some(Vec::new()),
            Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
            _ => None,
        };
        let Some(params) = params else {
            return error("InvalidParameterValue.TemplateParameterFormatError");
        };
        let phones: Vec<String> = req["PhoneNumberSet"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if phones.len() != 1 {
            return error("InvalidParameterValue.IncorrectPhoneNumber");
        }
        let phone = phones[0].clone();
        let mut state = self.state.lock().unwrap();
        let per_number = |code: &str, serial: &str| {
            json!({"Response": {"SendStatusSet": [{
                "SerialNo": serial, "PhoneNumber": phone, "Fee": if code == "Ok" { 1 } else { 0 },
                "SessionContext": "", "Code": code, "Message": "fake", "IsoCode": "CN"
            }], "RequestId": request_id()}})
        };
        // A number without `+` is not E.164: the real API refuses it per number.
        let code = if !phone.starts_with('+') || phone.len() < 8 {
            "InvalidParameterValue.IncorrectPhoneNumber".to_owned()
        } else {
            match &mut state.0 {
                Mode::Ok => "Ok".to_owned(),
                Mode::PerNumber(c) => c.clone(),
                Mode::RequestError(c) => {
                    let c = c.clone();
                    drop(state);
                    return error(&c);
                }
                Mode::ServerError => {
                    return (StatusCode::BAD_GATEWAY, "502".into(), json!({}));
                }
                Mode::FailThenOk(n) if *n > 0 => {
                    *n -= 1;
                    "InternalError.Timeout".to_owned()
                }
                Mode::FailThenOk(_) => "Ok".to_owned(),
            }
        };
        let serial = if code == "Ok" {
            let n = self.serial.fetch_add(1, Ordering::Relaxed);
            let serial = format!("2433:{n:020}");
            state.2.push(FakeMessage {
                phone: phone.clone(),
                sign_name: req["SignName"].as_str().map(str::to_owned),
                template_id: template_id.to_owned(),
                params,
                serial_no: serial.clone(),
            });
            serial
        } else {
            String::new()
        };
        (StatusCode::OK, code.clone(), per_number(&code, &serial))
    }

    /// Parses the `Authorization` header and recomputes its signature from the raw request.
    fn check_signature(&self, r: &SeenRequest, ts: i64, body: &[u8]) -> Result<(), &'static str> {
        let rest = r
            .authorization
            .strip_prefix("TC3-HMAC-SHA256 ")
            .ok_or("AuthFailure.InvalidAuthorization")?;
        let mut credential = None;
        let mut signed = None;
        let mut signature = None;
        for part in rest.split(", ") {
            match part.split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed = Some(v),
                Some(("Signature", v)) => signature = Some(v),
                _ => return Err("AuthFailure.InvalidAuthorization"),
            }
        }
        let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature)
        else {
            return Err("AuthFailure.InvalidAuthorization");
        };
        let scope: Vec<&str> = credential.split('/').collect();
        if scope.len() != 4 || scope[3] != "tc3_request" {
            return Err("AuthFailure.InvalidAuthorization");
        }
        if scope[0] != self.id {
            return Err("AuthFailure.SecretIdNotFound");
        }
        let date = date_of(ts);
        if scope[1] != date || scope[2] != "sms" {
            return Err("AuthFailure.SignatureFailure");
        }
        // Only the headers the client named are signed; every one must be present.
        let mut canonical_headers = String::new();
        for name in signed.split(';') {
            let value = match name {
                "content-type" => &r.content_type,
                "host" => &r.host,
                "x-tc-action" => &r.action,
                _ => return Err("AuthFailure.SignatureFailure"),
            };
            canonical_headers.push_str(&format!("{name}:{}\n", value.to_lowercase()));
        }
        if !signed.contains("content-type") || !signed.contains("host") {
            return Err("AuthFailure.SignatureFailure");
        }
        let payload_hash = hex::encode(Sha256::digest(body));
        let canonical = ["POST", "/", "", &canonical_headers, signed, &payload_hash].join("\n");
        let to_sign = format!(
            "TC3-HMAC-SHA256\n{ts}\n{date}/sms/tc3_request\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut key = format!("TC3{}", self.key).into_bytes();
        for part in [date.as_str(), "sms", "tc3_request"] {
            key = mac(&key, part.as_bytes());
        }
        let expected = hex::encode(mac(&key, to_sign.as_bytes()));
        let given = signature.as_bytes();
        // Constant-time comparison, as a real verifier would do.
        let same = given.len() == expected.len()
            && given
                .iter()
                .zip(expected.as_bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0;
        if same {
            Ok(())
        } else {
            Err("AuthFailure.SignatureFailure")
        }
    }
}

fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// UTC date of a Unix time, by walking years and months (a different method from verifyd's).
pub fn date_of(ts: i64) -> String {
    let mut days = ts.div_euclid(86_400);
    let mut year = 1970;
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    loop {
        let len = if leap(year) { 366 } else { 365 };
        if days < len {
            break;
        }
        days -= len;
        year += 1;
    }
    let months = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 1;
    for len in months {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    format!("{year:04}-{month:02}-{:02}", days + 1)
}
