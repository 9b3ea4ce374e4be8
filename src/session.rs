//! Session vocabulary: the secret `SessionKey`, its stored `KeyHash`, the `Expiry` policy and the
//! `Session` record the stores hand back.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::SystemTime;

/// Length of a session key: 32 characters of `[a-z0-9]`, about 165 bits, like Django's.
pub const KEY_LEN: usize = 32;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The bearer secret a browser holds in its `sessionid` cookie. Never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey(String);

impl SessionKey {
    /// A fresh key from the operating system's random generator (rejection sampling, no bias).
    pub fn generate() -> Self {
        let mut out = String::with_capacity(KEY_LEN);
        let mut buf = [0u8; 64];
        while out.len() < KEY_LEN {
            getrandom::fill(&mut buf).expect("the OS random generator is unavailable");
            for &b in &buf {
                // 252 = 7 * 36: bytes above it would favour the first letters.
                if b < 252 && out.len() < KEY_LEN {
                    out.push(ALPHABET[(b % 36) as usize] as char);
                }
            }
        }
        Self(out)
    }

    /// Accepts exactly the shape `generate` produces; anything else cannot name a session.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == KEY_LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the database stores in place of the key.
    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// SHA-256 of a session key: the only form in which a key reaches the database.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyHash({}…)", hex::encode(&self.0[..4]))
    }
}

/// How a session expires, as set with `PUT /v1/sessions/{key}/expiry`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The global policy: `session.default_age` seconds of inactivity.
    Default,
    /// `N > 0` seconds of inactivity, sliding.
    Idle(u32),
    /// A browser-session cookie (no Max-Age); the server still expires after the default age.
    Browser,
    /// Never expires (the seed's reading of `set_expiry(None)`), bounded only by `max_lifetime`.
    Never,
    /// Dies at this moment whatever the activity (Django's `set_expiry(<datetime>)`); a past
    /// moment means dead at once. Still bounded by `max_lifetime`.
    At(SystemTime),
}

impl Expiry {
    /// Storage encoding: (kind, idle seconds for `Idle`).
    pub fn to_parts(self) -> (i16, Option<i32>) {
        match self {
            Expiry::Default => (0, None),
            Expiry::Idle(n) => (1, Some(n as i32)),
            Expiry::Browser => (2, None),
            Expiry::Never => (3, None),
            Expiry::At(_) => (4, None),
        }
    }

    /// Like [`Expiry::from_parts`], for a row whose `expires_at` is known: an absolute expiry
    /// is stored as kind 4 and its moment is the row's `expires_at`.
    pub fn from_row(kind: i16, idle: Option<i32>, expires_at: Option<SystemTime>) -> Self {
        match (kind, expires_at) {
            (4, Some(at)) => Expiry::At(at),
            _ => Self::from_parts(kind, idle),
        }
    }

    pub fn from_parts(kind: i16, idle: Option<i32>) -> Self {
        match (kind, idle) {
            (1, Some(n)) if n > 0 => Expiry::Idle(n as u32),
            (2, _) => Expiry::Browser,
            (3, _) => Expiry::Never,
            _ => Expiry::Default,
        }
    }
}

/// JSON form: `N`, `0`, `null`, `"default"` or `{"at": "<RFC 3339>"}`.
impl Serialize for Expiry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Expiry::Default => s.serialize_str("default"),
            Expiry::Idle(n) => s.serialize_u32(*n),
            Expiry::Browser => s.serialize_u32(0),
            Expiry::Never => s.serialize_none(),
            Expiry::At(t) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("at", &crate::time::rfc3339_millis(*t))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match Value::deserialize(d)? {
            Value::Null => Ok(Expiry::Never),
            Value::String(s) if s == "default" => Ok(Expiry::Default),
            Value::Number(n) => match n.as_u64() {
                Some(0) => Ok(Expiry::Browser),
                Some(n) if n <= i32::MAX as u64 => Ok(Expiry::Idle(n as u32)),
                _ => Err(D::Error::custom(
                    "expiry must be a whole number of seconds between 0 and 2147483647",
                )),
            },
            Value::Object(m) => match (m.len(), m.get("at")) {
                (1, Some(Value::String(t))) => crate::time::parse_rfc3339(t)
                    .map(Expiry::At)
                    .ok_or_else(|| {
                        D::Error::custom(
                            "expiry.at must be an RFC 3339 date-time with an offset, \
                             between years 1970 and 9999",
                        )
                    }),
                _ => Err(D::Error::custom(
                    "an object expiry must be exactly {\"at\": \"<RFC 3339 date-time>\"}",
                )),
            },
            _ => Err(D::Error::custom(
                "expiry must be a number of seconds, 0, null, \"default\" or {\"at\": …}",
            )),
        }
    }
}

/// A live session as a store returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// Stable internal id; survives key cycling and binds verifications to the session.
    pub id: i64,
    pub data: Map<String, Value>,
    pub expiry: Expiry,
    pub created_at: SystemTime,
    /// `None` for a session that never expires.
    pub expires_at: Option<SystemTime>,
    /// True when this call moved the expiry (the cookie should be sent again).
    pub refreshed: bool,
    /// Grows whenever the data or the expiry policy changes: the `ETag` of the session API.
    pub version: i64,
}

/// Settings the stores need to compute expiry timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    /// Seconds of inactivity for `Expiry::Default` and `Expiry::Browser`.
    pub default_age: u32,
    /// Absolute cap in seconds since creation, if any.
    pub max_lifetime: Option<u32>,
    /// A read slides the expiry only once this many seconds passed since the last slide.
    pub refresh_interval: u32,
    /// Most bytes of compact JSON one session's data may take (`session.max_data_bytes`).
    pub max_data_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_parse_back() {
        let a = SessionKey::generate();
        let b = SessionKey::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), KEY_LEN);
        assert_eq!(SessionKey::parse(a.as_str()), Some(a.clone()));
        assert_ne!(a.hash(), b.hash());
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn forged_keys_do_not_parse() {
        for bad in [
            "",
            "short",
            &"A".repeat(32),
            &"a".repeat(33),
            &format!("{}-", "a".repeat(31)),
        ] {
            assert!(SessionKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn expiry_json_forms() {
        let parse = |s: &str| serde_json::from_str::<Expiry>(s);
        assert_eq!(parse("300").unwrap(), Expiry::Idle(300));
        assert_eq!(parse("0").unwrap(), Expiry::Browser);
        assert_eq!(parse("null").unwrap(), Expiry::Never);
        assert_eq!(parse("\"default\"").unwrap(), Expiry::Default);
        for bad in ["-1", "1.5", "\"soon\"", "true", "[]", "99999999999"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for e in [
            Expiry::Idle(5),
            Expiry::Browser,
            Expiry::Never,
            Expiry::Default,
        ] {
            let (k, i) = e.to_parts();
            assert_eq!(Expiry::from_parts(k, i), e);
            assert_eq!(parse(&serde_json::to_string(&e).unwrap()).unwrap(), e);
        }
        let at = crate::time::from_millis(1_700_000_000_250);
        let e = parse(r#"{"at": "2023-11-14T22:13:20.250Z"}"#).unwrap();
        assert_eq!(e, Expiry::At(at));
        assert_eq!(Expiry::from_row(4, None, Some(at)), e);
        assert_eq!(parse(&serde_json::to_string(&e).unwrap()).unwrap(), e);
        for bad in [
            r#"{"at": "tomorrow"}"#,
            r#"{"at": 1700000000}"#,
            r#"{"at": "2023-11-14T22:13:20Z", "x": 1}"#,
            r#"{}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
