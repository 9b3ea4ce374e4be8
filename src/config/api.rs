//! `[api]`: the backends' API keys, kept as SHA-256 hashes parsed when the file is read.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Backend API keys by name, each given as the hex SHA-256 of the key
    /// (`verifyd hash-api-key` prints it).
    pub keys: BTreeMap<String, ApiKeyHash>,
}

impl ApiConfig {
    /// The name of the API key `presented`, comparing against every hash in constant time.
    /// The key is taken exactly as presented: a request's key is not tidied up.
    pub fn key_name(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, hash) in &self.keys {
            if bool::from(hash.0.ct_eq(&digest)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The SHA-256 of a backend API key, written in the configuration as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApiKeyHash([u8; 32]);

impl ApiKeyHash {
    /// The hash of a key typed by an operator (surrounding white space is not part of a key).
    pub fn of(key: &str) -> ApiKeyHash {
        ApiKeyHash(Sha256::digest(key.trim().as_bytes()).into())
    }
}

impl TryFrom<String> for ApiKeyHash {
    type Error = String;
    fn try_from(hex_hash: String) -> Result<ApiKeyHash, String> {
        let mut h = [0u8; 32];
        match hex::decode_to_slice(&hex_hash, &mut h) {
            Ok(()) => Ok(ApiKeyHash(h)),
            Err(_) => Err(
                "must be the 64-hex-digit SHA-256 of the API key (`verifyd hash-api-key`)".into(),
            ),
        }
    }
}

impl From<ApiKeyHash> for String {
    fn from(h: ApiKeyHash) -> String {
        h.to_string()
    }
}

impl fmt::Display for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ApiKeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeyHash({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_once_and_match_in_constant_time() {
        let mut api = ApiConfig::default();
        let hash = ApiKeyHash::of("k3y");
        let parsed = ApiKeyHash::try_from(hash.to_string()).unwrap();
        assert_eq!(parsed, hash);
        api.keys.insert("shop".into(), parsed);
        assert_eq!(ApiKeyHash::of(" k3y\n"), hash, "typed keys are trimmed");
        assert_eq!(api.key_name("k3y"), Some("shop"));
        assert_eq!(api.key_name(" k3y"), None, "presented keys are not");
        assert_eq!(api.key_name("k3y2"), None);
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(63), &"a".repeat(66)] {
            assert!(ApiKeyHash::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
