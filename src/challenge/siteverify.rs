//! Cloudflare Turnstile and hCaptcha: the widget on the page gives the person a token, and the
//! server asks the provider's `siteverify` endpoint whether it is good (form POST of `secret`,
//! `response` and `remoteip`; hCaptcha also `sitekey`). Both providers spend a token at its first
//! verification, so replay protection is theirs; ours is to check `success`, the hostname the
//! token was solved on, and to tell a bad token from a provider we cannot use.

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

use super::config::ChallengeKind;
use crate::secret::Secret;

/// Longest token sent on: Turnstile documents 2048 characters; hCaptcha's are shorter.
const MAX_TOKEN: usize = 4096;

/// What `siteverify` said, or why it could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteverifyError {
    /// The token is not valid (wrong, expired, already used, for another site or host).
    #[error("{0}")]
    Rejected(String),
    /// The provider refused our own request (bad secret, bad site key): an operator problem.
    #[error("{0}")]
    Misconfigured(String),
    /// The provider did not answer usefully in time.
    #[error("{0}")]
    Unavailable(String),
}

/// A client for one provider's `siteverify`.
pub struct Siteverify {
    kind: ChallengeKind,
    http: reqwest::Client,
    url: reqwest::Url,
    secret: Secret,
    site_key: String,
    hostnames: Vec<String>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Answer {
    success: bool,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

impl Siteverify {
    pub fn new(
        kind: ChallengeKind,
        url: &str,
        secret: Secret,
        site_key: String,
        hostnames: Vec<String>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            kind,
            http,
            url,
            secret,
            site_key,
            hostnames,
            timeout,
        })
    }

    /// Asks the provider about `token`, solved by a person at `client`.
    pub async fn verify(&self, token: &str, client: Option<IpAddr>) -> Result<(), SiteverifyError> {
        if token.is_empty() || token.len() > MAX_TOKEN {
            return Err(SiteverifyError::Rejected(
                "the challenge token is empty or too long".into(),
            ));
        }
        let body = self.form(token, client);
        let exchange = async {
            let resp = self
                .http
                .post(self.url.clone())
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ACCEPT, "application/json")
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.bytes().await?))
        };
        let (status, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                return Err(self.unavailable(format!("request failed: {}", without_url(&e))));
            }
            Err(_) => return Err(self.unavailable("no answer in time".into())),
        };
        if !status.is_success() {
            return Err(self.unavailable(format!("HTTP {status}")));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| self.unavailable("the answer is not siteverify JSON".into()))?;
        self.judge(answer)
    }

    /// The form `siteverify` takes (built apart: the serializer is not `Send`).
    fn form(&self, token: &str, client: Option<IpAddr>) -> String {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("secret", self.secret.expose());
        form.append_pair("response", token);
        if let Some(ip) = client {
            form.append_pair("remoteip", &ip.to_string());
        }
        if self.kind == ChallengeKind::Hcaptcha {
            // hCaptcha then also refuses tokens solved for another of the account's sites.
            form.append_pair("sitekey", &self.site_key);
        }
        form.finish()
    }

    fn judge(&self, answer: Answer) -> Result<(), SiteverifyError> {
        let name = self.kind.as_str();
        if !answer.success {
            let codes = answer.error_codes.join(", ");
            if answer.error_codes.iter().any(|c| c == "internal-error") {
                // The provider's own failure: retrying later may work.
                return Err(self.unavailable(format!("it reported {codes}")));
            }
            // The secret or site key is wrong, or our request malformed: no token could
            // pass, so this is the operator's problem, not the person's.
            let ours = answer.error_codes.iter().any(|c| {
                matches!(
                    c.as_str(),
                    "missing-input-secret"
                        | "invalid-input-secret"
                        | "sitekey-secret-mismatch"
                        | "invalid-sitekey"
                        | "bad-request"
                )
            });
            return Err(if ours {
                tracing::error!(provider = name, error_codes = %codes, "siteverify refused our request");
                SiteverifyError::Misconfigured(format!("{name} refused the server's request"))
            } else {
                SiteverifyError::Rejected(format!("{name} did not accept the token ({codes})"))
            });
        }
        if !self.hostnames.is_empty() {
            let host = answer.hostname.unwrap_or_default();
            if !self.hostnames.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
                return Err(SiteverifyError::Rejected(format!(
                    "the {name} token was solved on another site"
                )));
            }
        }
        Ok(())
    }

    fn unavailable(&self, why: String) -> SiteverifyError {
        tracing::warn!(provider = self.kind.as_str(), reason = %why, "siteverify unavailable");
        SiteverifyError::Unavailable(format!("{} could not be asked: {why}", self.kind.as_str()))
    }
}

/// reqwest's error text without the URL (a configured URL could carry credentials).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        "broken exchange".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(kind: ChallengeKind, hostnames: &[&str]) -> Siteverify {
        Siteverify::new(
            kind,
            "http://127.0.0.1:9/siteverify",
            Secret::new("s"),
            "site".into(),
            hostnames.iter().map(|h| h.to_string()).collect(),
            Duration::from_secs(1),
        )
        .unwrap()
    }

    fn answer(json: &str) -> Answer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn answers_are_judged_by_success_hostname_and_error_codes() {
        let c = client(ChallengeKind::Turnstile, &["shop.example"]);
        assert_eq!(
            c.judge(answer(
                r#"{"success":true,"hostname":"shop.example","error-codes":[]}"#
            )),
            Ok(())
        );
        assert!(matches!(
            c.judge(answer(
                r#"{"success":true,"hostname":"evil.example","error-codes":[]}"#
            )),
            Err(SiteverifyError::Rejected(_))
        ));
        assert!(matches!(
            c.judge(answer(r#"{"success":true,"error-codes":[]}"#)),
            Err(SiteverifyError::Rejected(_))
        ));
        assert!(matches!(
            c.judge(answer(r#"{"success":false,"error-codes":["timeout-or-duplicate"]}"#)),
            Err(SiteverifyError::Rejected(m)) if m.contains("timeout-or-duplicate")
        ));
        assert!(matches!(
            c.judge(answer(
                r#"{"success":false,"error-codes":["invalid-input-secret"]}"#
            )),
            Err(SiteverifyError::Misconfigured(_))
        ));
        assert!(matches!(
            c.judge(answer(
                r#"{"success":false,"error-codes":["internal-error"]}"#
            )),
            Err(SiteverifyError::Unavailable(_))
        ));
        let any = client(ChallengeKind::Hcaptcha, &[]);
        assert_eq!(
            any.judge(answer(r#"{"success":true,"hostname":"x"}"#)),
            Ok(())
        );
    }
}
