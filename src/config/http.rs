//! `[http]`: the API listener, its limits and timeouts, the proxies in front of it and the
//! origins allowed to call it from a browser.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use crate::net::{Cidr, Origin};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Seconds a client may take to send its request headers.
    pub header_timeout: u64,
    /// Seconds a request may take end to end before the client gets 503.
    pub request_timeout: u64,
    /// Open connections beyond this are refused at accept time.
    pub max_connections: usize,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace: u64,
    /// Serve the demo page at `GET /` (a development aid; off unless asked for).
    pub demo_page: bool,
    /// Peers (CIDR, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
    /// Which header the trusted proxies write the client's address into.
    pub forwarded_header: ForwardedHeader,
    pub cors: CorsConfig,
}

/// The header a trusted proxy names the client in. Only one is read: the other could come
/// from the client itself, passed on untouched by a proxy that does not know it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1` (nginx, HAProxy, most load balancers).
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=proxy1`.
    #[serde(rename = "forwarded")]
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// Browser access from other origins to the browser-facing routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Exact origins (`https://shop.example`) allowed to call with credentials.
    pub allowed_origins: Vec<Origin>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            max_body_bytes: 16 * 1024,
            header_timeout: 10,
            request_timeout: 30,
            max_connections: 10_000,
            shutdown_grace: 10,
            demo_page: false,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::default(),
            cors: CorsConfig::default(),
        }
    }
}

impl HttpConfig {
    /// Ranges serde cannot check; returns the key at fault and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive: [(&'static str, u64); 4] = [
            ("http.max_body_bytes", self.max_body_bytes as u64),
            ("http.max_connections", self.max_connections as u64),
            ("http.header_timeout", self.header_timeout),
            ("http.request_timeout", self.request_timeout),
        ];
        match positive.into_iter().find(|(_, v)| *v == 0) {
            Some((key, _)) => Err((key, "must be positive".into())),
            None => Ok(()),
        }
    }
}
