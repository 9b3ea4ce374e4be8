//! `RouteKey`: a key of `[routes]`, the `*` fallback or an E.164 prefix, read once with the
//! configuration so that the router only compares typed keys.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::phone::{PhoneNumber, Prefix};

/// Which numbers a route serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RouteKey {
    /// Numbers that start with this prefix.
    Prefix(Prefix),
    /// `*`: every number no other route matches.
    Default,
}

impl RouteKey {
    /// Whether this route serves `phone` (the fallback serves every number).
    pub fn matches(&self, phone: &PhoneNumber) -> bool {
        match self {
            Self::Prefix(p) => p.matches(phone),
            Self::Default => true,
        }
    }

    /// The order in which the router tries routes for a number: longer prefixes first, then
    /// shorter ones, the fallback last.
    pub fn precedence(&self) -> (bool, std::cmp::Reverse<usize>) {
        match self {
            Self::Prefix(p) => (false, std::cmp::Reverse(p.digits())),
            Self::Default => (true, std::cmp::Reverse(0)),
        }
    }
}

impl TryFrom<String> for RouteKey {
    type Error = String;
    fn try_from(s: String) -> Result<RouteKey, String> {
        if s == "*" {
            return Ok(Self::Default);
        }
        Prefix::parse(&s).map(Self::Prefix).ok_or_else(|| {
            format!("{s:?}: route keys are \"*\" or an E.164 prefix such as \"+86\"")
        })
    }
}

impl std::str::FromStr for RouteKey {
    type Err = String;
    fn from_str(s: &str) -> Result<RouteKey, String> {
        RouteKey::try_from(s.to_owned())
    }
}

impl From<RouteKey> for String {
    fn from(k: RouteKey) -> String {
        k.to_string()
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Prefix(p) => p.fmt(f),
            Self::Default => f.write_str("*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_or_a_prefix_tried_longest_first() {
        let phone = PhoneNumber::parse_e164("+8613800138000").unwrap();
        let mut keys: Vec<RouteKey> = ["*", "+8", "+86", "+852"]
            .iter()
            .map(|k| k.parse().unwrap_or_else(|e| panic!("{k}: {e}")))
            .collect();
        keys.sort_by_key(RouteKey::precedence);
        let order: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(order, ["+852", "+86", "+8", "*"]);
        let serving: Vec<bool> = keys.iter().map(|k| k.matches(&phone)).collect();
        assert_eq!(serving, [false, true, true, true]);
        for bad in ["86", "**", "+86a", "", "+1234567890123456"] {
            let err = bad.parse::<RouteKey>().unwrap_err();
            assert!(err.contains("route keys are"), "{bad:?}: {err}");
        }
    }
}
