//! Who the client is, by address: the socket peer, or — only when the peer is one of
//! `http.trusted_proxies` — the nearest untrusted address in `X-Forwarded-For` (or in RFC 7239
//! `Forwarded`, when `http.forwarded_header` says the proxy writes that).

use http::HeaderMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::{ForwardedHeader, HttpConfig};
pub use crate::net::{Cidr, canonical};

/// The socket peer of a connection, put into each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// The address the per-client limits apply to: the browser's, `None` for backends (their
/// address is the backend's own; the per-number and budget limits still apply to them).
pub fn browser(
    app: &crate::app::App,
    parts: &http::request::Parts,
    backend: bool,
) -> Option<IpAddr> {
    if backend {
        return None;
    }
    let Peer(peer) = *parts.extensions.get::<Peer>()?;
    let http = &app.config.http;
    Some(client_ip(
        peer.ip(),
        &parts.headers,
        &http.trusted_proxies,
        http.forwarded_header,
    ))
}

/// The client address of a request that came from `peer`.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[Cidr],
    header: ForwardedHeader,
) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // Only the header our proxy writes counts: a client could send the other one, and a proxy
    // that does not know it passes it on untouched.
    let values = headers
        .get_all(header.name())
        .iter()
        .filter_map(|v| v.to_str().ok());
    let hops: Vec<Option<IpAddr>> = match header {
        ForwardedHeader::XForwardedFor => {
            values.flat_map(|v| v.split(',')).map(hop_address).collect()
        }
        ForwardedHeader::Forwarded => values
            .flat_map(|v| v.split(','))
            .map(forwarded_for)
            .collect(),
    };
    // Proxies append: walk from the right, skipping our own proxies; the first address they
    // did not add is the client. Anything unparsable ends the walk at the last good hop.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) => {
                client = canonical(*ip);
                if !is_trusted(client) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// One hop's address as proxies write it: `203.0.113.9`, `203.0.113.9:4711`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:4711`. The port is the client's, not part of who it is.
fn hop_address(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = hop.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The `for=` node of one RFC 7239 `Forwarded` element (`for=192.0.2.60;proto=https`);
/// `None` for an element without one or with an obfuscated node (`unknown`, `_hidden`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("for")
            .then(|| hop_address(value))?
    })
}

/// Remembers, per listener, whether the proxy warning was already logged.
#[derive(Debug, Default)]
pub struct ProxyWarning(AtomicBool);

impl ProxyWarning {
    /// Logs a warning the first time a request carries forwarding headers while no proxy is
    /// trusted: behind a proxy every client then counts as the proxy's address, so one client
    /// spends everyone's per-address allowance. Once only, so that clients cannot fill the log.
    pub fn check(&self, cfg: &HttpConfig, peer: IpAddr, headers: &HeaderMap) {
        if !cfg.trusted_proxies.is_empty() || self.0.load(Ordering::Relaxed) {
            return;
        }
        let Some((name, value)) = ["x-forwarded-for", "forwarded"]
            .into_iter()
            .find_map(|name| Some((name, headers.get(name)?)))
        else {
            return;
        };
        if self.0.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(
            %peer,
            header = name,
            value = %super::echo::header(value.as_bytes()),
            "a request carries {name} but http.trusted_proxies is empty: if verifyd is behind a \
             reverse proxy, every client counts as the proxy's address and shares its per-address \
             limits; list the proxy in http.trusted_proxies (logged once)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.0.0.2"),
        );
        let xff = ForwardedHeader::XForwardedFor;
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &trusted, xff),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted, xff),
            ip("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted, xff),
            ip("10.0.0.1")
        );
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("junk, 10.0.0.3"),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted, xff), ip("10.0.0.3"));
    }

    #[test]
    fn forwarded_entries_with_ports_name_the_client() {
        let trusted = [Cidr::parse("127.0.0.0/8").unwrap()];
        let xff = ForwardedHeader::XForwardedFor;
        for (value, want) in [
            ("203.0.113.9:51234", "203.0.113.9"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("2001:db8::7", "2001:db8::7"),
            ("6.6.6.6, 198.51.100.4:1, 127.0.0.1:80", "198.51.100.4"),
            ("\"[2001:db8::8]:1\"", "2001:db8::8"),
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static(value));
            assert_eq!(
                client_ip(ip("127.0.0.1"), &h, &trusted, xff),
                ip(want),
                "{value}"
            );
        }
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("[::1:80"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, xff),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn rfc7239_forwarded_when_configured() {
        let trusted = [Cidr::parse("127.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "forwarded",
            HeaderValue::from_static(
                "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https;by=127.0.0.1",
            ),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        let fwd = ForwardedHeader::Forwarded;
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, fwd),
            ip("2001:db8:cafe::17")
        );
        // The other header is not read: a client could have written it.
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                &h,
                &trusted,
                ForwardedHeader::XForwardedFor
            ),
            ip("192.0.2.1")
        );
        h.insert(
            "forwarded",
            HeaderValue::from_static("for=unknown;proto=http"),
        );
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, fwd),
            ip("127.0.0.1")
        );
        h.insert("forwarded", HeaderValue::from_static("For=198.51.100.2:99"));
        assert_eq!(
            client_ip(ip("127.0.0.1"), &h, &trusted, fwd),
            ip("198.51.100.2")
        );
    }
}
