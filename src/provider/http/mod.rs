//! `kind = "http"`: any SMS gateway with an HTTP API, described in configuration (method, URL,
//! headers, body, auth, success and error rules) rather than in code. Retries follow the Aliyun
//! provider's policy: transient failures are retried with backoff within `max_total`.

mod config;
pub(crate) mod rules;
pub(crate) mod template;

pub use config::{Auth, Class, Encoding, ErrorRule, HttpConfig};

use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use std::time::Duration;

use super::retry::{self, Attempt, Budget};
use super::{OutgoingCode, Provider, ProviderError, Receipt};
use config::{BodyValue, Compiled};
use template::Vars;

/// Why the provider could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}: {1}")]
    Config(String, String),
    #[error("{0}: cannot build the HTTP client: {1}")]
    Client(String, reqwest::Error),
}

/// Sends codes through a configured HTTP gateway.
pub struct HttpProvider {
    http: reqwest::Client,
    plan: Compiled,
    timeout: Duration,
    max_total: Duration,
}

impl HttpProvider {
    /// `table` names the config table (`providers.twilio.http`) in errors.
    pub fn new(cfg: &HttpConfig, table: &str) -> Result<Self, SetupError> {
        let plan = cfg
            .compile(table)
            .map_err(|(k, m)| SetupError::Config(k, m))?;
        let timeout = plan.timeout.duration();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            // A redirect would replay the credentials and the code to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("verifyd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SetupError::Client(table.to_owned(), e))?;
        Ok(Self {
            http,
            max_total: plan.max_total.duration(),
            plan,
            timeout,
        })
    }

    /// The request of one send (the same bytes for each attempt). Errors are configuration
    /// errors: a value that cannot go where the template put it.
    fn request(&self, vars: &Vars<'_>) -> Result<reqwest::RequestBuilder, ProviderError> {
        let p = &self.plan;
        let url = reqwest::Url::parse(&p.url.render_url(vars)).map_err(|_| {
            ProviderError::Configuration("http: the rendered url is not a URL".into())
        })?;
        let mut req = self
            .http
            .request(p.method.clone(), url)
            .header(ACCEPT, "application/json");
        match p.encoding {
            config::Encoding::Json => {
                let body: serde_json::Map<_, _> = p
                    .body
                    .iter()
                    .map(|(k, v)| (k.clone(), json_value(v, vars)))
                    .collect();
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(serde_json::Value::Object(body).to_string());
            }
            config::Encoding::Form => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (k, v) in &p.body {
                    if let BodyValue::Text(t) = v {
                        form.append_pair(k, &t.render(vars));
                    }
                }
                req = req
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(form.finish());
            }
            config::Encoding::None => {}
        }
        for (name, t) in &p.headers {
            let value = HeaderValue::from_str(&t.render(vars)).map_err(|_| {
                ProviderError::Configuration(format!(
                    "http: header {name} would hold characters a header cannot carry"
                ))
            })?;
            req = req.header(name.clone(), value);
        }
        if let Some((name, secret)) = &p.auth {
            let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| {
                ProviderError::Configuration("http: the secret cannot go in a header".into())
            })?;
            value.set_sensitive(true);
            req = req.header(name.clone(), value);
        }
        Ok(req)
    }

    async fn attempt(&self, req: reqwest::RequestBuilder, budget: Duration) -> Attempt {
        let exchange = async {
            let resp = req.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.bytes().await?))
        };
        match tokio::time::timeout(budget, exchange).await {
            Err(_) => Attempt::Retry(format!("no answer within {} ms", budget.as_millis())),
            // Without the URL: a template may have put the number in it.
            Ok(Err(e)) => Attempt::Retry(format!(
                "network error: {}",
                super::error_chain(&e.without_url())
            )),
            Ok(Ok((status, bytes))) => rules::classify("http", &self.plan, status.as_u16(), &bytes),
        }
    }
}

fn json_value(v: &BodyValue, vars: &Vars<'_>) -> serde_json::Value {
    use serde_json::Value;
    match v {
        BodyValue::Text(t) => Value::String(t.render(vars)),
        BodyValue::Fixed(f) => f.clone(),
        BodyValue::List(items) => Value::Array(items.iter().map(|i| json_value(i, vars)).collect()),
        BodyValue::Table(items) => Value::Object(
            items
                .iter()
                .map(|(k, i)| (k.clone(), json_value(i, vars)))
                .collect(),
        ),
    }
}

#[async_trait]
impl Provider for HttpProvider {
    /// Retries transient failures while `max_total` lasts, with the same `{request_id}` each
    /// time so a gateway that deduplicates on it can. Like Aliyun's SendSms, most gateways have
    /// no idempotency key: a retry after a timeout may deliver twice, with the same code.
    async fn send(&self, msg: &OutgoingCode) -> Result<Receipt, ProviderError> {
        let request_id = super::nonce();
        let vars = &Vars {
            msg,
            request_id: &request_id,
            secret: &self.plan.secret,
        };
        let budget = Budget {
            per_attempt: self.timeout,
            total: self.max_total,
        };
        // The request is built again for each attempt: time-dependent fields are fresh.
        let message_id = retry::until_sent("http gateway", &msg.to, budget, |limit| async move {
            match self.request(vars) {
                Ok(req) => self.attempt(req, limit).await,
                Err(e) => Attempt::Failed(e),
            }
        })
        .await?;
        Ok(Receipt {
            provider: "http".into(),
            message_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::template::tests::message;
    use super::*;

    fn provider(text: &str) -> HttpProvider {
        let c: HttpConfig = toml::from_str(text).unwrap();
        HttpProvider::new(&c, "provider.http").unwrap()
    }

    fn built(p: &HttpProvider, text: &str) -> reqwest::Request {
        let msg = message("+12015550123", text);
        let vars = Vars {
            msg: &msg,
            request_id: "rid",
            secret: &p.plan.secret,
        };
        p.request(&vars).unwrap().build().unwrap()
    }

    fn body(r: &reqwest::Request) -> String {
        String::from_utf8(r.body().unwrap().as_bytes().unwrap().to_vec()).unwrap()
    }

    #[cfg(feature = "national-numbers")]
    #[test]
    fn json_bodies_escape_what_they_insert() {
        let p = provider(
            r#"url = "https://gw/x"
body = { to = "{to}", text = "{text}", n = 1, meta = { id = "{request_id}", tags = ["{country}", true] } }"#,
        );
        let tricky = "\"}, \"to\": \"+1999\", \"x\": {\"\\\n\u{0}";
        let r = built(&p, tricky);
        let v: serde_json::Value = serde_json::from_str(&body(&r)).unwrap();
        assert_eq!(v["text"], tricky);
        assert_eq!(v["to"], "+12015550123");
        assert_eq!(v["n"], 1);
        assert_eq!(v["meta"]["id"], "rid");
        assert_eq!(v["meta"]["tags"], serde_json::json!(["US", true]));
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn form_bodies_escape_what_they_insert() {
        let p = provider(
            r#"url = "https://gw/x"
encoding = "form"
auth = "bearer"
secret = "tok"
headers = { X-Request-Id = "{request_id}" }
body = { To = "{to}", Body = "{text}" }"#,
        );
        let tricky = "a&To=+1999 b=c+d%";
        let r = built(&p, tricky);
        let pairs: Vec<(String, String)> = form_urlencoded::parse(body(&r).as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("Body".to_owned(), tricky.to_owned()),
                ("To".to_owned(), "+12015550123".to_owned())
            ]
        );
        assert_eq!(r.headers()["authorization"], "Bearer tok");
        assert!(r.headers()["authorization"].is_sensitive());
        assert_eq!(r.headers()["x-request-id"], "rid");
    }
}
