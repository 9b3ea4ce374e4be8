//! A fake Aliyun dysmsapi on 127.0.0.1:0 (hyper 1). It checks requests the way the real gateway
//! does — common parameters, AccessKeyId, a 15-minute timestamp window, single-use nonces and the
//! V2 signature — and answers like it. The signature is recomputed here with its own
//! percent-encoding, SHA-1 and HMAC, sharing no code with verifyd's signer, so a bug there cannot
//! hide itself by being repeated here.

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fake_server::FakeServer;

/// How the fake answers requests that pass every check.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `200 {"Code":"OK","BizId":…}`; the message is recorded.
    Ok,
    /// HTTP 200 with this business `Code` (`isv.*`, `isp.*`, `Throttling.User`).
    Business(String),
    /// `400 SignatureDoesNotMatch` even for a correct signature.
    SignatureError,
    /// `503` every time.
    ServerError,
    /// Records the message, then answers OK only after this long (a slow gateway).
    Stall(Duration),
    /// `503` this many more times, then OK.
    FailThenOk(u32),
}

/// One request as received, accepted or not.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub content_type: Option<String>,
    /// The decoded form fields.
    pub params: BTreeMap<String, String>,
    pub status: u16,
    /// The `Code` the fake answered.
    pub code: String,
}

/// A message the fake accepted for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeMessage {
    pub phone: String,
    pub sign_name: String,
    pub template_code: String,
    /// `TemplateParam`, parsed; the fake refuses non-string values like Aliyun does.
    pub template_param: BTreeMap<String, String>,
}

struct State {
    mode: Mode,
    nonces: HashSet<String>,
    seen: Vec<SeenRequest>,
    messages: Vec<FakeMessage>,
}

struct Shared {
    id: String,
    secret: String,
    state: Mutex<State>,
}

pub struct FakeAliyun {
    server: FakeServer,
    shared: Arc<Shared>,
}

impl FakeAliyun {
    /// Starts a fake that knows one AccessKey (`id`, `secret`), in [`Mode::Ok`].
    pub async fn start(id: &str, secret: &str) -> FakeAliyun {
        let shared = Arc::new(Shared {
            id: id.to_owned(),
            secret: secret.to_owned(),
            state: Mutex::new(State {
                mode: Mode::Ok,
                nonces: HashSet::new(),
                seen: Vec::new(),
                messages: Vec::new(),
            }),
        });
        let server = FakeServer::start(shared.clone(), handle).await;
        FakeAliyun { server, shared }
    }

    /// The endpoint to configure: `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.server.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.state.lock().unwrap().mode = mode;
    }

    /// Messages accepted for delivery, oldest first.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.shared.state.lock().unwrap().messages.clone()
    }

    /// Every request received, oldest first.
    pub fn requests_seen(&self) -> Vec<SeenRequest> {
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
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let (status, answer, delay) = shared.decide(&method, &params);
    shared.state.lock().unwrap().seen.push(SeenRequest {
        method,
        content_type,
        params,
        status: status.as_u16(),
        code: answer["Code"].as_str().unwrap_or_default().to_owned(),
    });
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let resp = Response::builder()
        .status(status)
        .header(
            hyper::header::CONTENT_TYPE,
            "application/json;charset=utf-8",
        )
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap();
    Ok(resp)
}

fn error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value, Option<Duration>) {
    let body = json!({
        "RequestId": request_id(),
        "HostId": "dysmsapi.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}"),
    });
    (status, body, None)
}

fn request_id() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("FAKE-{n:X}")
}

impl Shared {
    /// The gateway's checks, in the order the real one seems to apply them, then the mode.
    fn decide(
        &self,
        method: &str,
        p: &BTreeMap<String, String>,
    ) -> (StatusCode, Value, Option<Duration>) {
        let bad = StatusCode::BAD_REQUEST;
        if method != "POST" {
            return error(bad, "UnsupportedHTTPMethod", "verifyd must POST");
        }
        for (name, want) in [
            ("Action", "SendSms"),
            ("Version", "2017-05-25"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
        ] {
            match p.get(name) {
                None => return error(bad, &format!("Missing{name}"), name),
                Some(v) if v != want => {
                    return error(bad, &format!("InvalidParameter.{name}"), v);
                }
                Some(_) => {}
            }
        }
        for name in [
            "AccessKeyId",
            "SignatureNonce",
            "Timestamp",
            "Signature",
            "RegionId",
            "PhoneNumbers",
            "SignName",
            "TemplateCode",
        ] {
            if p.get(name).is_none_or(|v| v.is_empty()) {
                return error(bad, &format!("Missing{name}"), name);
            }
        }
        if p["AccessKeyId"] != self.id {
            return error(
                StatusCode::NOT_FOUND,
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            );
        }
        let Some(ts) = parse_timestamp(&p["Timestamp"]) else {
            return error(bad, "InvalidTimeStamp.Format", "bad timestamp");
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if (now - ts).abs() > 15 * 60 {
            return error(
                bad,
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
            );
        }
        let unsigned: BTreeMap<String, String> = p
            .iter()
            .filter(|(k, _)| *k != "Signature")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (expected, string_to_sign) = signature(method, &unsigned, &self.secret);
        let mut st = self.state.lock().unwrap();
        if expected != p["Signature"] || st.mode == Mode::SignatureError {
            return error(
                bad,
                "SignatureDoesNotMatch",
                &format!(
                    "Specified signature is not matched with our calculation. \
                     server string to sign is:{string_to_sign}"
                ),
            );
        }
        if !st.nonces.insert(p["SignatureNonce"].clone()) {
            return error(
                bad,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            );
        }
        let template_param = p
            .get("TemplateParam")
            .and_then(|t| serde_json::from_str::<BTreeMap<String, Value>>(t).ok())
            .and_then(|m| {
                m.into_iter()
                    .map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                    .collect::<Option<BTreeMap<_, _>>>()
            });
        let Some(template_param) = template_param else {
            return business("isv.INVALID_JSON_PARAM");
        };
        let message = FakeMessage {
            phone: p["PhoneNumbers"].clone(),
            sign_name: p["SignName"].clone(),
            template_code: p["TemplateCode"].clone(),
            template_param,
        };
        let mut delay = None;
        match st.mode.clone() {
            Mode::Ok | Mode::SignatureError | Mode::FailThenOk(0) => {}
            Mode::Business(code) => return business(&code),
            Mode::ServerError => return unavailable(),
            Mode::FailThenOk(n) => {
                st.mode = Mode::FailThenOk(n - 1);
                return unavailable();
            }
            Mode::Stall(d) => delay = Some(d),
        }
        st.messages.push(message);
        let biz_id = format!("{}^0", 900_000_000_000 + st.messages.len());
        let body =
            json!({"RequestId": request_id(), "Code": "OK", "Message": "OK", "BizId": biz_id});
        (StatusCode::OK, body, delay)
    }
}

fn business(code: &str) -> (StatusCode, Value, Option<Duration>) {
    let body = json!({"RequestId": request_id(), "Code": code, "Message": format!("fake {code}")});
    (StatusCode::OK, body, None)
}

fn unavailable() -> (StatusCode, Value, Option<Duration>) {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    )
}

/// `(Signature, StringToSign)` for `params` (everything but `Signature`), computed from scratch.
pub fn signature(
    method: &str,
    params: &BTreeMap<String, String>,
    secret: &str,
) -> (String, String) {
    // Parameter names are ASCII letters, so sorting the raw names (BTreeMap order) is sorting
    // the encoded ones.
    let canonical = params
        .iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&");
    let string_to_sign = format!("{method}&{}&{}", pct("/"), pct(&canonical));
    let mac = hmac_sha1(format!("{secret}&").as_bytes(), string_to_sign.as_bytes());
    (
        base64::engine::general_purpose::STANDARD.encode(mac),
        string_to_sign,
    )
}

/// RFC 3986 encoding: unreserved bytes stay, every other byte is `%XY`.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// RFC 2104 HMAC over SHA-1.
fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..20].copy_from_slice(&sha1(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg);
    let mut outer: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&sha1(&inner));
    sha1(&outer)
}

/// FIPS 180-4 SHA-1.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (slot, word) in w.iter_mut().zip(chunk.chunks(4)) {
            *slot = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for t in 16..80 {
            w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (t, wt) in w.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let tmp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wt);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = tmp;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, x) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// `YYYY-MM-DDThh:mm:ssZ` to Unix seconds.
fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| s.get(from..to)?.parse::<i64>().ok();
    let (y, m, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hh, mm, ss) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}
