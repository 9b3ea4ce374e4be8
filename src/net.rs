//! Network values that configuration and requests share — address blocks, browser origins, the
//! client network a limit counts — parsed once, in a leaf module that imports nothing above it.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

/// An address block such as `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        match s.parse::<IpNet>() {
            Ok(net) => Some(Cidr(net)),
            Err(_) if !s.contains('/') => s.parse::<IpAddr>().ok().map(|a| Cidr(IpNet::from(a))),
            Err(_) => None,
        }
    }

    /// Whether `ip` lies in the block; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr, String> {
        Cidr::parse(&s).ok_or_else(|| format!("{s:?} is not a CIDR block like \"10.0.0.0/8\""))
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        Cidr::try_from(s.to_owned())
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) are the IPv4 addresses they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `scheme://host[:port]` with no path: the form browsers send in `Origin`.
pub fn is_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

/// A browser origin such as `https://shop.example`, as configured in `http.cors.allowed_origins`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Origin(String);

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Origin {
    type Error = String;
    fn try_from(s: String) -> Result<Origin, String> {
        if is_origin(&s) {
            Ok(Origin(s))
        } else {
            Err(format!(
                "{s:?} is not an origin like \"https://shop.example\""
            ))
        }
    }
}

impl std::str::FromStr for Origin {
    type Err = String;
    fn from_str(s: &str) -> Result<Origin, String> {
        Origin::try_from(s.to_owned())
    }
}

impl PartialEq<str> for Origin {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl From<Origin> for String {
    fn from(o: Origin) -> String {
        o.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_parse_and_match_both_families() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.1.2.3")) && !c.contains(ip("11.0.0.1")));
        assert!(
            c.contains(ip("::ffff:10.9.9.9")),
            "IPv4-mapped counts as IPv4"
        );
        let c6 = Cidr::parse("2001:db8::/33").unwrap();
        assert!(c6.contains(ip("2001:db8:7fff::1")) && !c6.contains(ip("2001:db8:8000::1")));
        assert!(
            Cidr::parse(" 127.0.0.1 ")
                .unwrap()
                .contains(ip("127.0.0.1"))
        );
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        assert_eq!(Cidr::parse("fd00::1").unwrap().to_string(), "fd00::1/128");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host/8",
            "10.0.0.0/",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn serde_refuses_what_parse_refuses() {
        let ok: Cidr = serde_json::from_str("\"192.168.0.0/16\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"192.168.0.0/16\"");
        let err = serde_json::from_str::<Cidr>("\"192.168.0.0/40\"").unwrap_err();
        assert!(err.to_string().contains("not a CIDR block"), "{err}");
    }

    #[test]
    fn origins_have_scheme_and_host_only() {
        assert!(is_origin("https://shop.example") && is_origin("http://127.0.0.1:8080"));
        for bad in [
            "shop.example",
            "https://",
            "https://shop.example/",
            "ftp://shop.example",
            "https://user@shop.example",
            "null",
        ] {
            assert!(!is_origin(bad), "{bad}");
            assert!(Origin::try_from(bad.to_owned()).is_err(), "{bad}");
        }
        let o = Origin::try_from("https://shop.example".to_owned()).unwrap();
        assert_eq!(o.as_str(), "https://shop.example");
    }
}
