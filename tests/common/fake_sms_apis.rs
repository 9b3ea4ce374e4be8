//! Fakes of three SMS APIs as their documentation describes them, for the README's `kind =
//! "http"` recipes. Each checks what the real API requires (path, method, authentication,
//! encoding, required fields and their formats) and answers with the API's documented success
//! and error bodies. Anything the documentation would not accept is also recorded as a
//! violation, so a test can insist there were none.

use base64::Engine;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

use super::fake_gateway::{FakeGateway, Handler, Seen};

/// What a fake was told to answer instead of success, once its checks pass.
#[derive(Debug, Clone, Default)]
struct State {
    /// Forced answers, used one per request, front first; empty: success.
    forced: Vec<(u16, Value)>,
    /// Forced answer for every request once `forced` is empty.
    always: Option<(u16, Value)>,
    violations: Vec<String>,
    /// Accepted messages: (to, text, message id).
    messages: Vec<(String, String, String)>,
}

/// A running fake API.
pub struct FakeApi {
    pub gateway: FakeGateway,
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    async fn start(state: Arc<Mutex<State>>, check: fn(&Seen, &mut State) -> (u16, Value)) -> Self {
        let s = state.clone();
        let handler: Handler = Arc::new(move |r: &Seen| check(r, &mut s.lock().unwrap()));
        FakeApi {
            gateway: FakeGateway::start(handler).await,
            state,
        }
    }

    /// The next answers after the checks pass (one per request), then success again.
    pub fn answer_next(&self, answers: Vec<(u16, Value)>) {
        self.state.lock().unwrap().forced = answers;
    }

    /// This answer for every request that passes the checks.
    pub fn answer_always(&self, status: u16, body: Value) {
        self.state.lock().unwrap().always = Some((status, body));
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// (to, text, message id) of every accepted message.
    pub fn messages(&self) -> Vec<(String, String, String)> {
        self.state.lock().unwrap().messages.clone()
    }

    pub fn requests(&self) -> usize {
        self.gateway.seen().len()
    }
}

fn forced(st: &mut State) -> Option<(u16, Value)> {
    if !st.forced.is_empty() {
        return Some(st.forced.remove(0));
    }
    st.always.clone()
}

fn e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (2..=15).contains(&d.len()) && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit())
    })
}

fn basic(r: &Seen) -> Option<(String, String)> {
    let b64 = r.header("authorization")?.strip_prefix("Basic ")?;
    let pair = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let pair = String::from_utf8(pair).ok()?;
    let (u, p) = pair.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

fn counter_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:032x}")
}

// ---------------------------------------------------------------------------------------------
// Twilio Programmable Messaging: POST /2010-04-01/Accounts/{AccountSid}/Messages.json

pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "twilio-auth-token-0123456789abcd";
pub const TWILIO_FROM: &str = "+15017122661";

/// Twilio's error body: `{code, message, more_info, status}`.
pub fn twilio_error(status: u16, code: u32, message: &str) -> (u16, Value) {
    (
        status,
        json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

fn twilio(r: &Seen, st: &mut State) -> (u16, Value) {
    let path = format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json");
    if r.path != path {
        st.violations.push(format!("path {}", r.path));
        return twilio_error(404, 20404, "The requested resource was not found");
    }
    if r.method != "POST" {
        st.violations.push(format!("method {}", r.method));
        return twilio_error(405, 20004, "Method not allowed");
    }
    if basic(r) != Some((TWILIO_SID.into(), TWILIO_TOKEN.into())) {
        return twilio_error(401, 20003, "Authenticate");
    }
    if r.header("content-type") != Some("application/x-www-form-urlencoded") {
        st.violations
            .push(format!("content-type {:?}", r.header("content-type")));
        return twilio_error(400, 21602, "Message body is required.");
    }
    let form = r.form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for (k, _) in &form {
        let known = [
            "To",
            "From",
            "MessagingServiceSid",
            "Body",
            "StatusCallback",
            "ValidityPeriod",
        ];
        if !known.contains(&k.as_str()) {
            st.violations.push(format!("unknown parameter {k}"));
        }
    }
    let Some(to) = get("To") else {
        st.violations.push("no To".into());
        return twilio_error(400, 21604, "A 'To' phone number is required.");
    };
    if get("From").is_some() == get("MessagingServiceSid").is_some() {
        st.violations
            .push("From or MessagingServiceSid: exactly one".into());
        return twilio_error(
            400,
            21603,
            "A 'From' or 'MessagingServiceSid' parameter is required.",
        );
    }
    let Some(body) = get("Body").filter(|b| !b.is_empty()) else {
        st.violations.push("no Body".into());
        return twilio_error(400, 21602, "Message body is required.");
    };
    if !e164(&to) {
        st.violations.push(format!("To not E.164: {to}"));
        return twilio_error(
            400,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    if let Some(answer) = forced(st) {
        return answer;
    }
    let sid = counter_id("SM", st.messages.len() + 1);
    st.messages.push((to.clone(), body.clone(), sid.clone()));
    (
        201,
        json!({
            "account_sid": TWILIO_SID,
            "api_version": "2010-04-01",
            "body": body,
            "direction": "outbound-api",
            "error_code": null,
            "error_message": null,
            "from": get("From"),
            "messaging_service_sid": get("MessagingServiceSid"),
            "num_segments": "1",
            "sid": sid,
            "status": "queued",
            "to": to,
            "uri": format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages/{sid}.json"),
        }),
    )
}

pub async fn start_twilio() -> FakeApi {
    FakeApi::start(Arc::default(), twilio).await
}

// ---------------------------------------------------------------------------------------------
// Vonage SMS API: POST https://rest.nexmo.com/sms/json

pub const VONAGE_KEY: &str = "a1b2c3d4";
pub const VONAGE_SECRET: &str = "V0nageSecret123";

/// Vonage's answer for one message with a non-zero status.
pub fn vonage_error(status: &str, text: &str) -> (u16, Value) {
    (
        200,
        json!({"message-count": "1", "messages": [{"status": status, "error-text": text}]}),
    )
}

fn vonage(r: &Seen, st: &mut State) -> (u16, Value) {
    if r.path != "/sms/json" || r.method != "POST" {
        st.violations.push(format!("{} {}", r.method, r.path));
        return (404, json!({}));
    }
    // The API takes form or JSON bodies; the recipe uses form.
    if r.header("content-type") != Some("application/x-www-form-urlencoded") {
        st.violations
            .push(format!("content-type {:?}", r.header("content-type")));
    }
    let form = r.form();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    for k in ["api_key", "api_secret", "from", "to", "text"] {
        if get(k).is_none_or(|v| v.is_empty()) {
            st.violations.push(format!("missing {k}"));
            return vonage_error("2", &format!("Missing {k}"));
        }
    }
    if get("api_key").as_deref() != Some(VONAGE_KEY)
        || get("api_secret").as_deref() != Some(VONAGE_SECRET)
    {
        return vonage_error("4", "Bad Credentials");
    }
    let to = get("to").unwrap_or_default();
    // "The recipient number in E.164 format. Omit the leading + or 00."
    if !e164(&format!("+{to}")) {
        st.violations
            .push(format!("to not E.164 digits without +: {to}"));
        return vonage_error("3", "Invalid to address");
    }
    if let Some(answer) = forced(st) {
        return answer;
    }
    let id = format!(
        "{:016X}",
        0x0C00_0000_0000_0000u64 + st.messages.len() as u64 + 1
    );
    st.messages
        .push((to.clone(), get("text").unwrap_or_default(), id.clone()));
    (
        200,
        json!({"message-count": "1", "messages": [{
            "to": to, "message-id": id, "status": "0",
            "remaining-balance": "15.53590000", "message-price": "0.03330000", "network": "23410"
        }]}),
    )
}

pub async fn start_vonage() -> FakeApi {
    FakeApi::start(Arc::default(), vonage).await
}

// ---------------------------------------------------------------------------------------------
// A plain JSON gateway: POST /v1/messages, `Authorization: Bearer <token>`,
// `{"to": E.164, "text": …, "reference": …}` → 202 `{"id": …, "status": "queued"}`;
// errors `{"error": {"type": …}}`.

pub const JSON_TOKEN: &str = "json-gateway-token-42";

pub fn json_error(status: u16, kind: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"type": kind, "message": "see type"}}),
    )
}

fn json_gateway(r: &Seen, st: &mut State) -> (u16, Value) {
    if r.path != "/v1/messages" || r.method != "POST" {
        st.violations.push(format!("{} {}", r.method, r.path));
        return json_error(404, "not_found");
    }
    if r.header("authorization") != Some(&format!("Bearer {JSON_TOKEN}")) {
        return json_error(401, "unauthorized");
    }
    if r.header("content-type") != Some("application/json") {
        st.violations
            .push(format!("content-type {:?}", r.header("content-type")));
        return json_error(415, "unsupported_media_type");
    }
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&r.body) else {
        st.violations.push("body is not a JSON object".into());
        return json_error(400, "invalid_json");
    };
    let mut keys: Vec<&str> = body.keys().map(String::as_str).collect();
    keys.sort();
    if keys != ["reference", "text", "to"] {
        st.violations.push(format!("fields {keys:?}"));
        return json_error(400, "invalid_request");
    }
    let (Some(to), Some(text), Some(_)) = (
        body["to"].as_str(),
        body["text"].as_str(),
        body["reference"].as_str(),
    ) else {
        st.violations.push("a field is not a string".into());
        return json_error(400, "invalid_request");
    };
    if !e164(to) {
        st.violations.push(format!("to {to}"));
        return json_error(400, "invalid_recipient");
    }
    if let Some(answer) = forced(st) {
        return answer;
    }
    let id = counter_id("msg_", st.messages.len() + 1);
    st.messages
        .push((to.to_owned(), text.to_owned(), id.clone()));
    (202, json!({"id": id, "status": "queued"}))
}

pub async fn start_json_gateway() -> FakeApi {
    FakeApi::start(Arc::default(), json_gateway).await
}
