//! Verification codes: generated uniformly from the OS generator and stored only as an HMAC.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

use crate::phone::PhoneNumber;

/// A one-time code as typed by a person: 4 to 10 ASCII digits. `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

impl Code {
    /// `len` uniform decimal digits (rejection sampling: bytes ≥ 250 are discarded).
    pub fn generate(len: usize) -> Self {
        let mut out = String::with_capacity(len);
        let mut buf = [0u8; 16];
        while out.len() < len {
            getrandom::fill(&mut buf).expect("the OS random generator is unavailable");
            for &b in &buf {
                if b < 250 && out.len() < len {
                    out.push((b'0' + b % 10) as char);
                }
            }
        }
        Self(out)
    }

    /// Accepts what a person might type: digits only, 4–10 of them, surrounding spaces trimmed.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        ((4..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(s.to_owned()))
    }

    /// The digits, for the provider that delivers them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

/// `HMAC-SHA256(secret, session id ‖ phone ‖ 0x00 ‖ code)`: what the store keeps instead of a code.
///
/// Checks compare two such MACs. Because the attacker never sees or chooses a MAC (it is keyed by
/// the server secret), how long an equality test takes reveals nothing about the code — the
/// "double HMAC" construction for constant-time verification.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CodeMac(pub [u8; 32]);

impl fmt::Debug for CodeMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeMac(..)")
    }
}

/// The server secret that keys code MACs.
#[derive(Clone)]
pub struct CodeKey(Vec<u8>);

impl CodeKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn mac(&self, session_id: i64, phone: &PhoneNumber, code: &Code) -> CodeMac {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(&session_id.to_be_bytes());
        m.update(phone.as_str().as_bytes());
        m.update(&[0]);
        m.update(code.0.as_bytes());
        CodeMac(m.finalize().into_bytes().into())
    }
}

impl fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_requested_length_and_are_digits() {
        for len in 4..=10 {
            let c = Code::generate(len);
            assert_eq!(c.expose().len(), len);
            assert!(Code::parse(c.expose()).is_some());
        }
    }

    #[test]
    fn digits_are_roughly_uniform() {
        let mut counts = [0u32; 10];
        for _ in 0..2000 {
            for b in Code::generate(10).expose().bytes() {
                counts[(b - b'0') as usize] += 1;
            }
        }
        // 20 000 digits, 2 000 expected each; 6 sigma is about ±255.
        for (d, &n) in counts.iter().enumerate() {
            assert!((1700..=2300).contains(&n), "digit {d} appeared {n} times");
        }
    }

    #[test]
    fn parse_rejects_non_codes() {
        for bad in ["", "123", "12345678901", "12a456", "١٢٣٤٥٦", "12 34"] {
            assert!(Code::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(Code::parse(" 123456 ").unwrap().expose(), "123456");
    }

    #[test]
    fn mac_binds_session_phone_and_code() {
        let k = CodeKey::new(b"k".to_vec());
        let p1 = PhoneNumber::parse_e164("+8613800138000").unwrap();
        let p2 = PhoneNumber::parse_e164("+8613800138001").unwrap();
        let c = Code::parse("123456").unwrap();
        let base = k.mac(1, &p1, &c);
        assert_eq!(base, k.mac(1, &p1, &c));
        assert_ne!(base, k.mac(2, &p1, &c));
        assert_ne!(base, k.mac(1, &p2, &c));
        assert_ne!(base, k.mac(1, &p1, &Code::parse("123457").unwrap()));
        assert_ne!(base, CodeKey::new(b"other".to_vec()).mac(1, &p1, &c));
        assert!(!format!("{c:?}").contains("123456"));
    }
}
