//! ALTCHA proof-of-work, self-hosted: the challenge JSON the ALTCHA widget fetches and the
//! base64 payload it posts back, both in the widget's (v1) format, so a page may use the widget
//! or solve the search itself (the demo page does, with WebCrypto).
//!
//! The server picks a secret number `n` in `0..=maxnumber` and a random salt that carries its
//! expiry (`<hex>?expires=<unix seconds>&`), and publishes `challenge = hex(SHA-256(salt + n))`
//! with `signature = hex(HMAC-SHA256(key, challenge))`. The client finds `n` by trying numbers.
//! Nothing is stored at issue time: the signature proves the server made the challenge, the salt
//! its expiry (the challenge hash covers the salt, the signature covers the hash), and the store
//! records each challenge once it is spent so that it cannot be used twice.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// The only algorithm issued and accepted.
pub const ALGORITHM: &str = "SHA-256";

/// Random bytes of salt (hex-encoded in the salt).
const SALT_BYTES: usize = 12;

/// Longest payload accepted, in base64 characters: a real one is about 300.
const MAX_PAYLOAD: usize = 2048;

/// The HMAC key that signs challenges; every daemon of a deployment must hold the same one.
#[derive(Clone)]
pub struct AltchaKey(Vec<u8>);

impl AltchaKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// A key for ALTCHA derived from the code-MAC key, so deployments that never configure one
    /// still share it across daemons (it lives in the store, like the code-MAC key). HMAC with
    /// a fixed label keeps the two uses apart: knowing one derived value reveals nothing else.
    pub fn derive(code_key_bytes: &[u8]) -> Self {
        let mut m =
            Hmac::<Sha256>::new_from_slice(code_key_bytes).expect("HMAC takes keys of any length");
        m.update(b"verifyd altcha challenge signing key v1");
        Self(m.finalize().into_bytes().to_vec())
    }

    fn sign(&self, challenge_hex: &str) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(challenge_hex.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }
}

impl fmt::Debug for AltchaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AltchaKey(<redacted>)")
    }
}

/// A challenge as `GET /v1/challenge` answers it (the widget's field names).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Challenge {
    pub algorithm: &'static str,
    pub challenge: String,
    pub maxnumber: u64,
    pub salt: String,
    pub signature: String,
}

/// Makes a challenge whose number is uniform in `0..=max_number` and which expires at
/// `now + lifetime` (whole seconds).
pub fn issue(key: &AltchaKey, max_number: u64, lifetime: Duration, now: SystemTime) -> Challenge {
    let mut salt_bytes = [0u8; SALT_BYTES];
    getrandom::fill(&mut salt_bytes).expect("the OS random generator is unavailable");
    let expires = unix_secs(now) + lifetime.as_secs();
    // The trailing `&` ends the salt, so that digits of the number can never be read as more
    // digits of `expires` (salt `…expires=1` + number `23` vs `…expires=12` + `3`).
    let salt = format!("{}?expires={expires}&", hex::encode(salt_bytes));
    let number = uniform_up_to(max_number);
    let challenge = hash_hex(&salt, number);
    Challenge {
        algorithm: ALGORITHM,
        signature: key.sign(&challenge),
        challenge,
        maxnumber: max_number,
        salt,
    }
}

/// A payload that passed every check but the single-use one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Identifies the challenge for the spent-challenge record: SHA-256 of the challenge hash.
    pub id: [u8; 32],
    /// When the challenge stops being accepted; the spent record may be forgotten after it.
    pub expires_at: SystemTime,
}

/// Why a payload was refused. The texts are for the client: they say what is wrong without
/// helping to forge anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AltchaError {
    #[error("the altcha payload is not base64-encoded JSON with the ALTCHA fields")]
    Malformed,
    #[error("the altcha payload uses an algorithm other than SHA-256")]
    Algorithm,
    #[error("the altcha challenge was not issued by this server")]
    Forged,
    #[error("the altcha number does not solve the challenge")]
    WrongNumber,
    #[error("the altcha challenge has expired; fetch a new one")]
    Expired,
}

#[derive(Deserialize)]
struct Payload {
    algorithm: String,
    challenge: String,
    number: u64,
    salt: String,
    signature: String,
}

/// Checks a widget payload (base64 of `{"algorithm","challenge","number","salt","signature"}`):
/// the signature over the challenge, that the number solves it, and the expiry in the salt.
pub fn verify(
    key: &AltchaKey,
    payload_b64: &str,
    now: SystemTime,
) -> Result<Verified, AltchaError> {
    if payload_b64.len() > MAX_PAYLOAD {
        return Err(AltchaError::Malformed);
    }
    let raw = STANDARD
        .decode(payload_b64.trim())
        .map_err(|_| AltchaError::Malformed)?;
    let p: Payload = serde_json::from_slice(&raw).map_err(|_| AltchaError::Malformed)?;
    if p.algorithm != ALGORITHM {
        return Err(AltchaError::Algorithm);
    }
    let expires = expiry_of(&p.salt).ok_or(AltchaError::Forged)?;
    let expected = key.sign(&p.challenge);
    if !bool::from(expected.as_bytes().ct_eq(p.signature.as_bytes())) {
        return Err(AltchaError::Forged);
    }
    if !bool::from(
        hash_hex(&p.salt, p.number)
            .as_bytes()
            .ct_eq(p.challenge.as_bytes()),
    ) {
        return Err(AltchaError::WrongNumber);
    }
    let expires_at = UNIX_EPOCH + Duration::from_secs(expires);
    if expires_at <= now {
        return Err(AltchaError::Expired);
    }
    Ok(Verified {
        id: Sha256::digest(p.challenge.as_bytes()).into(),
        expires_at,
    })
}

/// The expiry of a salt in the form [`issue`] writes: `<hex>?expires=<digits>&`. Any other
/// shape (no expiry, extra parameters, no closing `&`) was not issued here.
fn expiry_of(salt: &str) -> Option<u64> {
    let (nonce, rest) = salt.split_once("?expires=")?;
    let digits = rest.strip_suffix('&')?;
    let hex_ok = nonce.len() == SALT_BYTES * 2 && nonce.bytes().all(|b| b.is_ascii_hexdigit());
    let digits_ok =
        !digits.is_empty() && digits.len() <= 12 && digits.bytes().all(|b| b.is_ascii_digit());
    (hex_ok && digits_ok).then(|| digits.parse().ok()).flatten()
}

fn hash_hex(salt: &str, number: u64) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(number.to_string().as_bytes());
    hex::encode(h.finalize())
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A uniform number in `0..=max` (rejection sampling: no bias towards small numbers).
fn uniform_up_to(max: u64) -> u64 {
    let span = max.saturating_add(1);
    let zone = u64::MAX - (u64::MAX % span);
    loop {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the OS random generator is unavailable");
        let x = u64::from_le_bytes(b);
        if x < zone {
            return x % span;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solve(c: &Challenge) -> u64 {
        (0..=c.maxnumber)
            .find(|n| hash_hex(&c.salt, *n) == c.challenge)
            .expect("every issued challenge has a solution")
    }

    fn payload(c: &Challenge, number: u64) -> String {
        STANDARD.encode(
            serde_json::json!({
                "algorithm": c.algorithm, "challenge": c.challenge, "number": number,
                "salt": c.salt, "signature": c.signature,
            })
            .to_string(),
        )
    }

    #[test]
    fn a_solved_challenge_verifies_until_it_expires() {
        let key = AltchaKey::new(b"k".to_vec());
        let now = SystemTime::now();
        let c = issue(&key, 2000, Duration::from_secs(60), now);
        assert!(
            c.salt.ends_with('&') && c.salt.contains("?expires="),
            "{}",
            c.salt
        );
        let p = payload(&c, solve(&c));
        let v = verify(&key, &p, now).unwrap();
        assert_eq!(verify(&key, &p, now + Duration::from_secs(59)).unwrap(), v);
        assert_eq!(
            verify(&key, &p, now + Duration::from_secs(61)),
            Err(AltchaError::Expired)
        );
    }

    #[test]
    fn forged_and_wrong_payloads_are_refused() {
        let key = AltchaKey::new(b"k".to_vec());
        let now = SystemTime::now();
        let c = issue(&key, 500, Duration::from_secs(60), now);
        let n = solve(&c);
        assert_eq!(
            verify(&AltchaKey::new(b"other".to_vec()), &payload(&c, n), now),
            Err(AltchaError::Forged)
        );
        assert_eq!(
            verify(&key, &payload(&c, n + 1), now),
            Err(AltchaError::WrongNumber)
        );
        // A later expiry written into the salt breaks the hash the signature covers.
        let mut longer = c.clone();
        longer.salt = longer.salt.replace("expires=", "expires=9");
        assert_eq!(
            verify(&key, &payload(&longer, n), now),
            Err(AltchaError::WrongNumber)
        );
        // A self-made challenge with a matching hash still lacks the signature.
        let mut own = c.clone();
        let other = if n == 0 { 1 } else { 0 };
        own.challenge = hash_hex(&c.salt, other);
        assert_eq!(
            verify(&key, &payload(&own, other), now),
            Err(AltchaError::Forged)
        );
        for bad in ["", "not base64!", &STANDARD.encode("{}"), &"A".repeat(5000)] {
            assert_eq!(
                verify(&key, bad, now),
                Err(AltchaError::Malformed),
                "{bad:?}"
            );
        }
        let mut sha1 = payload(&c, n);
        sha1 = STANDARD.encode(
            String::from_utf8(STANDARD.decode(sha1).unwrap())
                .unwrap()
                .replace("SHA-256", "SHA-1"),
        );
        assert_eq!(verify(&key, &sha1, now), Err(AltchaError::Algorithm));
    }

    #[test]
    fn salts_without_our_expiry_are_not_ours() {
        assert_eq!(
            expiry_of("0123456789abcdef01234567?expires=1700000000&"),
            Some(1_700_000_000)
        );
        for bad in [
            "0123456789abcdef01234567",
            "0123456789abcdef01234567?expires=1700000000",
            "0123456789abcdef01234567?expires=&",
            "0123456789abcdef01234567?expires=17&x=1&",
            "short?expires=1700000000&",
        ] {
            assert_eq!(expiry_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn derived_keys_differ_from_their_source_and_agree_across_daemons() {
        let a = AltchaKey::derive(b"store secret");
        assert_eq!(a.0, AltchaKey::derive(b"store secret").0);
        assert_ne!(a.0, b"store secret".to_vec());
        assert_ne!(a.0, AltchaKey::derive(b"other secret").0);
    }

    #[test]
    fn numbers_cover_the_whole_range() {
        let seen: std::collections::HashSet<u64> = (0..400).map(|_| uniform_up_to(3)).collect();
        assert_eq!(seen.len(), 4);
        assert!((0..1000).all(|_| uniform_up_to(0) == 0));
    }
}
