//! One response as API tests look at it: status, headers, the exact body bytes and the body as
//! JSON, with the cookie and `Retry-After` readers every test of them needs.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER, SET_COOKIE};
use serde_json::Value;

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    /// The body as JSON; `Null` when it is empty or not JSON.
    pub body: Value,
}

impl Reply {
    pub async fn from(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_default().to_vec();
        Reply {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            bytes,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The stable error name of an error body; empty when there is none.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap())
    }

    /// Every `Set-Cookie` header, as text.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The value the response gives the `sessionid` cookie, if it sets it (empty: deleted).
    pub fn session_cookie(&self) -> Option<String> {
        self.set_cookies().iter().find_map(|c| {
            let first = c.split(';').next().unwrap();
            let (name, value) = first.split_once('=')?;
            (name == "sessionid").then(|| value.to_owned())
        })
    }

    /// `Retry-After` as whole seconds; panics when absent or not an integer.
    pub fn retry_after(&self) -> u64 {
        let v = self
            .headers
            .get(RETRY_AFTER)
            .unwrap_or_else(|| panic!("Retry-After missing: {self:?}"));
        v.to_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("Retry-After is not an integer: {v:?}"))
    }
}
