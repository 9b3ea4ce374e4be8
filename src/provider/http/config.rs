//! `[provider.http]` / `[providers.<name>.http]`: a gateway described in configuration instead
//! of code. [`HttpConfig::compile`] parses every template, header name, JSON pointer and rule
//! at start-up, so a mistake stops the daemon with the key's name rather than failing a send.

use crate::seconds::Seconds;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::template::{Template, Var};
use crate::secret::Secret;

/// How the body is encoded.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `application/json`: the body table as a JSON object.
    #[default]
    Json,
    /// `application/x-www-form-urlencoded`: string fields only.
    Form,
    /// No body (the URL carries everything).
    None,
}

/// How verifyd proves who it is.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Basic base64(username:secret)`.
    Basic,
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `<auth_header>: <secret>`.
    Header,
}

/// What a matching error rule makes of the answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// The number cannot be served; no failover.
    Recipient,
    /// The gateway's quota for this number or account; no failover, the client is told to wait.
    RateLimited,
    /// The operator must fix something; the next provider is tried.
    Configuration,
    /// Retried within `max_total`, then the next provider.
    Transient,
}

/// `[[…http.errors]]`: the first rule whose status and field both match classifies the answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorRule {
    /// HTTP statuses this rule applies to; empty: any.
    pub status: Vec<u16>,
    /// A JSON pointer (RFC 6901) into the answer, e.g. `/code`.
    pub pointer: Option<String>,
    /// Values of that field (numbers and booleans compare as their JSON text); empty: any value,
    /// as long as the field exists.
    pub values: Vec<String>,
    pub class: Option<Class>,
}

/// `[provider.http]`. `Debug` and serialization redact the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The HTTP method, `POST` unless set.
    pub method: String,
    /// The gateway's URL; a template whose inserted values are percent-encoded.
    pub url: String,
    /// Extra headers, name → template.
    pub headers: BTreeMap<String, String>,
    pub encoding: Encoding,
    /// The body fields: strings are templates; numbers, booleans, arrays and tables are kept
    /// (JSON only).
    pub body: BTreeMap<String, serde_json::Value>,
    pub auth: Auth,
    /// The user name of `auth = "basic"` (Twilio: the Account SID).
    pub username: String,
    /// The header of `auth = "header"`, e.g. `X-API-Key`.
    pub auth_header: String,
    /// The password, token or key; also `{secret}` in headers and body.
    pub secret: Secret,
    /// A file holding the secret, read once at start-up.
    pub secret_file: Option<PathBuf>,
    /// Statuses that may mean success; empty: any 2xx.
    pub success_status: Vec<u16>,
    /// A JSON pointer that must hold `success_value` for the answer to be a success.
    pub success_pointer: Option<String>,
    pub success_value: Option<String>,
    /// A JSON pointer to the gateway's message id (kept for delivery receipts).
    pub message_id_pointer: Option<String>,
    /// Rules for answers that are not a success, in order.
    pub errors: Vec<ErrorRule>,
    /// Twilio only: the public URL given to Twilio as `StatusCallback`
    /// (`https://…/v1/receipts/<instance>/<any segment>`). Set, it opens that receipt endpoint,
    /// authenticated by `X-Twilio-Signature` with `secret` (the Auth Token) as the key.
    pub twilio_status_callback: Option<String>,
    /// Seconds one attempt may take.
    #[serde(alias = "timeout_ms")]
    pub timeout: Seconds,
    /// Seconds all attempts of one send may take together, pauses included.
    #[serde(alias = "max_total_ms")]
    pub max_total: Seconds,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            method: "POST".into(),
            url: String::new(),
            headers: BTreeMap::new(),
            encoding: Encoding::Json,
            body: BTreeMap::new(),
            auth: Auth::None,
            username: String::new(),
            auth_header: String::new(),
            secret: Secret::default(),
            secret_file: None,
            success_status: Vec::new(),
            success_pointer: None,
            success_value: None,
            message_id_pointer: None,
            errors: Vec::new(),
            twilio_status_callback: None,
            timeout: Seconds::from_secs(5),
            max_total: Seconds::from_secs(10),
        }
    }
}

/// A body value ready to render.
#[derive(Debug, Clone)]
pub enum BodyValue {
    Text(Template),
    Fixed(serde_json::Value),
    List(Vec<BodyValue>),
    Table(Vec<(String, BodyValue)>),
}

/// An error rule, checked.
#[derive(Debug, Clone)]
pub struct Rule {
    pub status: Vec<u16>,
    pub pointer: Option<String>,
    pub values: Vec<String>,
    pub class: Class,
}

/// Everything a send needs, parsed once.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub method: Method,
    pub url: Template,
    pub headers: Vec<(HeaderName, Template)>,
    pub encoding: Encoding,
    pub body: Vec<(String, BodyValue)>,
    /// The fixed `Authorization` (or `auth_header`) header, secret included.
    pub auth: Option<(HeaderName, Secret)>,
    pub secret: Secret,
    pub success_status: Vec<u16>,
    pub success: Option<(String, String)>,
    pub message_id_pointer: Option<String>,
    pub rules: Vec<Rule>,
    pub timeout: Seconds,
    pub max_total: Seconds,
}

type Invalid = (String, String);

fn pointer(key: String, p: &Option<String>) -> Result<Option<String>, Invalid> {
    match p {
        None => Ok(None),
        Some(p) if p.starts_with('/') => Ok(Some(p.clone())),
        Some(_) => Err((
            key,
            "must be a JSON pointer starting with '/', e.g. \"/messages/0/status\"".into(),
        )),
    }
}

fn status_list(key: String, list: &[u16]) -> Result<Vec<u16>, Invalid> {
    match list.iter().find(|s| !(100..=599).contains(*s)) {
        Some(s) => Err((key, format!("{s} is not an HTTP status"))),
        None => Ok(list.to_vec()),
    }
}

impl HttpConfig {
    /// The offending key (under `table`, e.g. `providers.twilio.http`) and why.
    pub fn validate(&self, table: &str) -> Result<(), Invalid> {
        self.compile(table).map(|_| ())
    }

    /// Parses and checks every setting.
    pub fn compile(&self, table: &str) -> Result<Compiled, Invalid> {
        let key = |k: &str| format!("{table}.{k}");
        let method = Method::from_bytes(self.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| (key("method"), "not an HTTP method".to_owned()))?;
        if self.url.trim().is_empty() {
            return Err((key("url"), "must be set when kind = \"http\"".into()));
        }
        let url = Template::parse(&self.url).map_err(|e| (key("url"), e))?;
        if url.uses(Var::Secret) {
            return Err((
                key("url"),
                "{secret} may not appear in the URL (URLs end up in logs); use a header or the body"
                    .into(),
            ));
        }
        // The URL must stay a URL whatever the values are; check its fixed shape with samples.
        let sample = url.render_url(&super::template::Vars {
            msg: &sample_message(),
            request_id: "00000000-0000-0000-0000-000000000000",
            secret: &Secret::default(),
        });
        // Scheme and host must be written out: a value may never choose where the code goes.
        let fixed_authority = url
            .fixed_prefix()
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains(['/', '?', '#']));
        match reqwest::Url::parse(&sample) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && (fixed_authority || url.fixed_prefix() == self.url) => {}
            _ => {
                return Err((
                    key("url"),
                    "must be an http:// or https:// URL (placeholders may not form the scheme or host)"
                        .into(),
                ));
            }
        }
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let k = key(&format!("headers.{name}"));
            let hn = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| (k.clone(), "not a valid header name".to_owned()))?;
            let t = Template::parse(value).map_err(|e| (k.clone(), e))?;
            HeaderValue::from_str(&t.render(&super::template::Vars {
                msg: &sample_message(),
                request_id: "r",
                secret: &Secret::default(),
            }))
            .map_err(|_| (k, "not a valid header value".to_owned()))?;
            headers.push((hn, t));
        }
        if self.encoding == Encoding::None && !self.body.is_empty() {
            return Err((
                key("body"),
                "encoding = \"none\" sends no body; remove the body or choose \"json\" or \"form\""
                    .into(),
            ));
        }
        if matches!(method, Method::GET | Method::HEAD) && !self.body.is_empty() {
            return Err((
                key("body"),
                format!("a {method} request carries no body; put the fields in the url"),
            ));
        }
        let mut body = Vec::new();
        for (name, value) in &self.body {
            let k = key(&format!("body.{name}"));
            if self.encoding == Encoding::Form && !value.is_string() {
                return Err((
                    k,
                    "a form body holds text fields only (this value cannot be form-encoded)".into(),
                ));
            }
            body.push((name.clone(), body_value(&k, value)?));
        }
        let secret_needed = self.auth != Auth::None
            || headers.iter().any(|(_, t)| t.uses(Var::Secret))
            || body.iter().any(|(_, v)| body_uses_secret(v));
        if secret_needed && self.secret.is_empty() {
            return Err((
                key("secret"),
                format!(
                    "must be set (or {}) for this auth or the {{secret}} placeholder",
                    key("secret_file")
                ),
            ));
        }
        let auth = match self.auth {
            Auth::None => None,
            Auth::Basic => {
                if self.username.is_empty() {
                    return Err((key("username"), "must be set when auth = \"basic\"".into()));
                }
                use base64::Engine;
                let pair = format!("{}:{}", self.username, self.secret.expose());
                let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
                Some((
                    reqwest::header::AUTHORIZATION,
                    Secret::new(format!("Basic {b64}")),
                ))
            }
            Auth::Bearer => Some((
                reqwest::header::AUTHORIZATION,
                Secret::new(format!("Bearer {}", self.secret.expose())),
            )),
            Auth::Header => {
                let hn = HeaderName::from_bytes(self.auth_header.as_bytes()).map_err(|_| {
                    (
                        key("auth_header"),
                        "must be a header name when auth = \"header\"".to_owned(),
                    )
                })?;
                Some((hn, self.secret.clone()))
            }
        };
        if let Some((name, value)) = &auth {
            HeaderValue::from_str(value.expose())
                .map_err(|_| (key("secret"), "cannot be sent in a header".to_owned()))?;
            if headers.iter().any(|(h, _)| h == name) {
                return Err((
                    key(&format!("headers.{name}")),
                    "is already set by auth".into(),
                ));
            }
        }
        let success_status = status_list(key("success_status"), &self.success_status)?;
        let success = match (
            pointer(key("success_pointer"), &self.success_pointer)?,
            &self.success_value,
        ) {
            (None, None) => None,
            (Some(p), Some(v)) => Some((p, v.clone())),
            (Some(_), None) => {
                return Err((
                    key("success_value"),
                    "must be set with success_pointer".into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    key("success_pointer"),
                    "must be set with success_value".into(),
                ));
            }
        };
        let message_id_pointer = pointer(key("message_id_pointer"), &self.message_id_pointer)?;
        let mut rules = Vec::new();
        for (i, r) in self.errors.iter().enumerate() {
            let k = |f: &str| format!("{table}.errors[{i}].{f}");
            let class = r.class.ok_or_else(|| {
                (
                    k("class"),
                    "must be one of recipient, rate_limited, configuration, transient".to_owned(),
                )
            })?;
            let p = pointer(k("pointer"), &r.pointer)?;
            if r.status.is_empty() && p.is_none() {
                return Err((
                    format!("{table}.errors[{i}]"),
                    "a rule needs a status list, a pointer, or both".into(),
                ));
            }
            if p.is_none() && !r.values.is_empty() {
                return Err((k("values"), "values need a pointer".into()));
            }
            rules.push(Rule {
                status: status_list(k("status"), &r.status)?,
                pointer: p,
                values: r.values.clone(),
                class,
            });
        }
        if self.timeout.is_zero() {
            return Err((key("timeout"), "must be positive".into()));
        }
        if self.max_total < self.timeout {
            return Err((
                key("max_total"),
                format!("must be at least {} ({} s)", key("timeout"), self.timeout),
            ));
        }
        Ok(Compiled {
            method,
            url,
            headers,
            encoding: self.encoding,
            body,
            auth,
            secret: self.secret.clone(),
            success_status,
            success,
            message_id_pointer,
            rules,
            timeout: self.timeout,
            max_total: self.max_total,
        })
    }
}

fn body_value(key: &str, v: &serde_json::Value) -> Result<BodyValue, Invalid> {
    use serde_json::Value;
    Ok(match v {
        Value::String(s) => BodyValue::Text(Template::parse(s).map_err(|e| (key.to_owned(), e))?),
        Value::Array(items) => BodyValue::List(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| body_value(&format!("{key}[{i}]"), item))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => BodyValue::Table(
            map.iter()
                .map(|(k, item)| Ok((k.clone(), body_value(&format!("{key}.{k}"), item)?)))
                .collect::<Result<_, Invalid>>()?,
        ),
        other => BodyValue::Fixed(other.clone()),
    })
}

fn body_uses_secret(v: &BodyValue) -> bool {
    match v {
        BodyValue::Text(t) => t.uses(Var::Secret),
        BodyValue::Fixed(_) => false,
        BodyValue::List(items) => items.iter().any(body_uses_secret),
        BodyValue::Table(items) => items.iter().any(|(_, v)| body_uses_secret(v)),
    }
}

/// A message with every value present, to check that templates render into valid URLs and
/// header values.
fn sample_message() -> crate::provider::OutgoingCode {
    crate::provider::OutgoingCode {
        to: crate::phone::PhoneNumber::parse_e164("+8613800138000").expect("a valid number"),
        code: crate::code::Code::parse("0123456789").expect("a valid code"),
        lifetime: std::time::Duration::from_secs(300),
        locale: Some("zh-CN".into()),
        text: "Your code is 0123456789".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Compiled, Invalid> {
        let c: HttpConfig = toml::from_str(toml_text).unwrap();
        c.compile("providers.gw.http")
    }

    #[test]
    fn a_complete_config_compiles_and_hides_its_secret() {
        let text = r#"
url = "https://gw.example/send/{national}"
encoding = "form"
auth = "basic"
username = "AC1"
secret = "hunter2"
body = { To = "{to}", Body = "{text}" }
success_status = [201]
message_id_pointer = "/sid"
errors = [{ status = [400], pointer = "/code", values = ["21211"], class = "recipient" }]
"#;
        let c: HttpConfig = toml::from_str(text).unwrap();
        let compiled = c.compile("providers.gw.http").unwrap();
        assert_eq!(compiled.method, Method::POST);
        assert_eq!(compiled.rules.len(), 1);
        for shown in [
            format!("{c:?}"),
            format!("{compiled:?}"),
            toml::to_string(&c).unwrap(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
            // base64("AC1:hunter2")
            assert!(!shown.contains("QUMxOmh1bnRlcjI"), "{shown}");
        }
    }

    #[test]
    fn mistakes_name_their_key() {
        for (text, key, why) in [
            ("", "providers.gw.http.url", "must be set"),
            (
                "url = \"https://x/{phone}\"",
                "providers.gw.http.url",
                "{phone}",
            ),
            ("url = \"{to}\"", "providers.gw.http.url", "http://"),
            ("url = \"https://{to}/\"", "providers.gw.http.url", "host"),
            (
                "url = \"https://x/?k={secret}\"\nsecret = \"s\"",
                "providers.gw.http.url",
                "{secret}",
            ),
            (
                "url = \"https://x/\"\nbody = { text = \"{txt}\" }",
                "providers.gw.http.body.text",
                "{txt}",
            ),
            (
                "url = \"https://x/\"\nbody = { a = { b = \"{nope}\" } }",
                "providers.gw.http.body.a.b",
                "{nope}",
            ),
            (
                "url = \"https://x/\"\nencoding = \"form\"\nbody = { a = { b = \"c\" } }",
                "providers.gw.http.body.a",
                "cannot be form-encoded",
            ),
            (
                "url = \"https://x/\"\nencoding = \"form\"\nbody = { n = 5 }",
                "providers.gw.http.body.n",
                "cannot be form-encoded",
            ),
            (
                "url = \"https://x/\"\nencoding = \"none\"\nbody = { a = \"b\" }",
                "providers.gw.http.body",
                "no body",
            ),
            (
                "url = \"https://x/\"\nmethod = \"GET\"\nbody = { a = \"b\" }",
                "providers.gw.http.body",
                "no body",
            ),
            (
                "url = \"https://x/\"\nmethod = \"P O\"",
                "providers.gw.http.method",
                "method",
            ),
            (
                "url = \"https://x/\"\nheaders = { \"X Y\" = \"1\" }",
                "providers.gw.http.headers.X Y",
                "header name",
            ),
            (
                "url = \"https://x/\"\nheaders = { X = \"{bad}\" }",
                "providers.gw.http.headers.X",
                "{bad}",
            ),
            (
                "url = \"https://x/\"\nauth = \"bearer\"",
                "providers.gw.http.secret",
                "secret_file",
            ),
            (
                "url = \"https://x/\"\nbody = { k = \"{secret}\" }",
                "providers.gw.http.secret",
                "must be set",
            ),
            (
                "url = \"https://x/\"\nauth = \"basic\"\nsecret = \"s\"",
                "providers.gw.http.username",
                "basic",
            ),
            (
                "url = \"https://x/\"\nauth = \"header\"\nsecret = \"s\"",
                "providers.gw.http.auth_header",
                "header",
            ),
            (
                "url = \"https://x/\"\nsuccess_pointer = \"status\"\nsuccess_value = \"0\"",
                "providers.gw.http.success_pointer",
                "JSON pointer",
            ),
            (
                "url = \"https://x/\"\nsuccess_pointer = \"/status\"",
                "providers.gw.http.success_value",
                "success_pointer",
            ),
            (
                "url = \"https://x/\"\nmessage_id_pointer = \"sid\"",
                "providers.gw.http.message_id_pointer",
                "JSON pointer",
            ),
            (
                "url = \"https://x/\"\nsuccess_status = [20]",
                "providers.gw.http.success_status",
                "20",
            ),
            (
                "url = \"https://x/\"\nerrors = [{ status = [400] }]",
                "providers.gw.http.errors[0].class",
                "recipient",
            ),
            (
                "url = \"https://x/\"\nerrors = [{ class = \"transient\" }]",
                "providers.gw.http.errors[0]",
                "status",
            ),
            (
                "url = \"https://x/\"\nerrors = [{ pointer = \"code\", class = \"transient\" }]",
                "providers.gw.http.errors[0].pointer",
                "JSON pointer",
            ),
            (
                "url = \"https://x/\"\nerrors = [{ status = [400], values = [\"1\"], class = \"transient\" }]",
                "providers.gw.http.errors[0].values",
                "pointer",
            ),
            (
                "url = \"https://x/\"\ntimeout = 0",
                "providers.gw.http.timeout",
                "positive",
            ),
            (
                "url = \"https://x/\"\nmax_total = 0.01",
                "providers.gw.http.max_total",
                "timeout",
            ),
        ] {
            let (k, msg) = parse(text).unwrap_err();
            assert_eq!(k, key, "{text}");
            assert!(msg.contains(why), "{text}: {msg}");
        }
    }

    #[test]
    fn unknown_keys_and_classes_are_refused() {
        assert!(toml::from_str::<HttpConfig>("url = \"https://x/\"\nbdy = {}").is_err());
        assert!(
            toml::from_str::<HttpConfig>("errors = [{ status = [400], class = \"fatal\" }]")
                .is_err()
        );
    }
}
