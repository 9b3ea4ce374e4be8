//! Verification codes: derived from a random nonce under the server secret, in the configured
//! alphabet, and stored only as a nonce and an HMAC (so a resend can send the same code again).

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

use crate::phone::PhoneNumber;

/// The characters a code is made of (`verification.alphabet`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Alphabet {
    /// `0`–`9`: what every keypad offers.
    #[default]
    Digits,
    /// Digits and capital letters without the look-alikes `0`/`O` and `1`/`I`/`L`: 31 symbols.
    Alphanumeric,
}

/// The unambiguous set: 2–9 and A–Z minus I, L, O.
const ALPHANUMERIC: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";

impl Alphabet {
    fn symbols(self) -> &'static [u8] {
        match self {
            Alphabet::Digits => b"0123456789",
            Alphabet::Alphanumeric => ALPHANUMERIC,
        }
    }

    /// Bits of entropy of a uniformly drawn code of `len` symbols: `len × log2(size)`.
    pub fn entropy_bits(self, len: usize) -> f64 {
        len as f64 * (self.symbols().len() as f64).log2()
    }

    /// What codes look like, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Alphabet::Digits => "codes are 4 to 10 digits",
            Alphabet::Alphanumeric => {
                "codes are 4 to 10 characters from 2-9 and A-Z without I, L and O"
            }
        }
    }
}

/// A one-time code as typed by a person: 4 to 10 symbols of its alphabet, letters upper-case.
/// `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Code(String);

/// The random value a code is derived from; stored with the code's MAC so that a resend can
/// derive the same code again. Useless without the server secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CodeNonce(pub [u8; 16]);

impl CodeNonce {
    /// 128 bits from the OS generator.
    pub fn generate() -> Self {
        let mut n = [0u8; 16];
        getrandom::fill(&mut n).expect("the OS random generator is unavailable");
        Self(n)
    }
}

impl fmt::Debug for CodeNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CodeNonce(..)")
    }
}

impl Code {
    /// Digits only: [`Code::parse_in`] with [`Alphabet::Digits`] (test numbers' fixed codes, tests).
    pub fn parse(s: &str) -> Option<Self> {
        Self::parse_in(s, Alphabet::Digits)
    }

    /// Accepts what a person might type: 4–10 symbols of `alphabet`, in either case, surrounding
    /// spaces trimmed. Letters are upper-cased, so `k7m2p9` and `K7M2P9` are the same code.
    pub fn parse_in(s: &str, alphabet: Alphabet) -> Option<Self> {
        let s = s.trim();
        ((4..=10).contains(&s.len())
            && s.bytes()
                .all(|b| alphabet.symbols().contains(&b.to_ascii_uppercase())))
        .then(|| Self(s.to_ascii_uppercase()))
    }

    /// The symbols, for the provider that delivers them.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}

/// `HMAC-SHA256(secret, "verifyd mac 2" ‖ phone ‖ 0x00 ‖ code)`: what the store keeps instead of
/// a code. It names no session: the row it is stored in belongs to one, and a check compares it
/// only with that row (docs/codes.md says why this is as strong as binding the session id). The
/// tag tells this scheme ([`MAC_SCHEME`]) apart from the first one, which began with the id.
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

/// The version of [`CodeMac`] this build writes and checks (`verifications.mac_scheme`). Rows
/// of scheme 1 (MACs over the session id, before schema version 10) can no longer be compared:
/// a check answers them as expired, without using an attempt, and the next send replaces them.
pub const MAC_SCHEME: i16 = 2;

/// Starts every scheme-2 MAC: a scheme-1 MAC began with 8 bytes of session id, so no input of
/// one scheme is an input of the other.
const MAC_TAG: &[u8] = b"verifyd mac 2";

/// The server secret that keys code MACs.
#[derive(Clone)]
pub struct CodeKey(Vec<u8>);

impl CodeKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The code for `nonce`: symbols drawn by rejection sampling from the stream
    /// `HMAC-SHA256(secret, "verifyd code 2" ‖ block ‖ phone ‖ 0x00 ‖ nonce)`, block = 0, 1, ….
    /// A PRF output, so as uniform as a code drawn from the OS generator to anyone without the
    /// secret; and the same nonce always gives the same code. The nonce is fresh per
    /// verification, so no session id is needed to tell two verifications' codes apart.
    pub fn derive(
        &self,
        phone: &PhoneNumber,
        nonce: &CodeNonce,
        len: usize,
        alphabet: Alphabet,
    ) -> Code {
        let symbols = alphabet.symbols();
        // Bytes at or above the largest multiple of the alphabet size would bias the draw.
        let limit = 256 - 256 % symbols.len();
        let mut out = String::with_capacity(len);
        let mut block = 0u32;
        while out.len() < len {
            let mut m =
                Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
            m.update(b"verifyd code 2");
            m.update(&block.to_be_bytes());
            m.update(phone.as_str().as_bytes());
            m.update(&[0]);
            m.update(&nonce.0);
            for b in m.finalize().into_bytes() {
                if usize::from(b) < limit && out.len() < len {
                    out.push(symbols[usize::from(b) % symbols.len()] as char);
                }
            }
            block += 1;
        }
        Code(out)
    }

    pub fn mac(&self, phone: &PhoneNumber, code: &Code) -> CodeMac {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(MAC_TAG);
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

    fn phone() -> PhoneNumber {
        PhoneNumber::parse_e164("+8613800138000").unwrap()
    }

    #[test]
    fn derived_codes_have_the_requested_length_and_alphabet() {
        let k = CodeKey::new(b"k".to_vec());
        for alphabet in [Alphabet::Digits, Alphabet::Alphanumeric] {
            for len in 4..=10 {
                let c = k.derive(&phone(), &CodeNonce::generate(), len, alphabet);
                assert_eq!(c.expose().len(), len);
                assert_eq!(Code::parse_in(c.expose(), alphabet), Some(c.clone()));
            }
        }
    }

    #[test]
    fn the_same_nonce_gives_the_same_code_and_nothing_else_does() {
        let k = CodeKey::new(b"k".to_vec());
        let n = CodeNonce([7; 16]);
        let base = k.derive(&phone(), &n, 10, Alphabet::Digits);
        assert_eq!(base, k.derive(&phone(), &n, 10, Alphabet::Digits));
        assert_ne!(
            base,
            k.derive(&phone(), &CodeNonce([8; 16]), 10, Alphabet::Digits)
        );
        let other = PhoneNumber::parse_e164("+8613800138001").unwrap();
        assert_ne!(base, k.derive(&other, &n, 10, Alphabet::Digits));
        let stranger = CodeKey::new(b"other".to_vec());
        assert_ne!(base, stranger.derive(&phone(), &n, 10, Alphabet::Digits));
    }

    /// Counts each symbol over 2 000 derived 10-symbol codes; every count must be within about
    /// 6 standard deviations of the uniform expectation.
    fn assert_uniform(alphabet: Alphabet) {
        let k = CodeKey::new(b"k".to_vec());
        let symbols = alphabet.symbols();
        let mut counts = vec![0u32; symbols.len()];
        for _ in 0..2000 {
            let c = k.derive(&phone(), &CodeNonce::generate(), 10, alphabet);
            for b in c.expose().bytes() {
                counts[symbols.iter().position(|&s| s == b).unwrap()] += 1;
            }
        }
        let expected = 20_000.0 / symbols.len() as f64;
        let spread = 6.0 * expected.sqrt();
        for (i, &n) in counts.iter().enumerate() {
            assert!(
                (f64::from(n) - expected).abs() < spread,
                "{} appeared {n} times, expected {expected}",
                symbols[i] as char
            );
        }
    }

    #[test]
    fn symbols_are_roughly_uniform() {
        assert_uniform(Alphabet::Digits);
        assert_uniform(Alphabet::Alphanumeric);
    }

    #[test]
    fn the_alphanumeric_set_has_no_look_alikes_and_any_case_parses() {
        assert_eq!(ALPHANUMERIC.len(), 31);
        for b in b"01OIL" {
            assert!(!ALPHANUMERIC.contains(b), "{}", *b as char);
        }
        let c = Code::parse_in(" k7m2p9 ", Alphabet::Alphanumeric).unwrap();
        assert_eq!(c.expose(), "K7M2P9");
        assert_eq!(Code::parse_in("K7m2P9", Alphabet::Alphanumeric), Some(c));
        for bad in [
            "K7M2P0", "K7M2PO", "K7M2PI", "k7m2pl", "K7M2P1", "K7M", "K7-M2P9",
        ] {
            assert!(
                Code::parse_in(bad, Alphabet::Alphanumeric).is_none(),
                "{bad}"
            );
        }
        assert!(Code::parse_in("K7M2P9", Alphabet::Digits).is_none());
        assert!((Alphabet::Digits.entropy_bits(6) - 19.93).abs() < 0.01);
        assert!((Alphabet::Alphanumeric.entropy_bits(6) - 29.72).abs() < 0.01);
    }

    #[test]
    fn parse_rejects_non_codes() {
        for bad in ["", "123", "12345678901", "12a456", "١٢٣٤٥٦", "12 34"] {
            assert!(Code::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(Code::parse(" 123456 ").unwrap().expose(), "123456");
    }

    /// The vector bench/seed.py reproduces in Python (it seeds codes straight into the store).
    #[test]
    fn mac_matches_the_documented_construction() {
        let k = CodeKey::new(b"bench-secret-not-for-production".to_vec());
        let p = PhoneNumber::parse_e164("+12017000001").unwrap();
        let m = k.mac(&p, &Code::parse("123456").unwrap());
        assert_eq!(
            hex::encode(m.0),
            "f11d00dbd99183ffde434358e442c12e91d398daed02111774be90cc37217b56"
        );
    }

    #[test]
    fn mac_binds_phone_and_code_under_its_tag() {
        let k = CodeKey::new(b"k".to_vec());
        let p1 = PhoneNumber::parse_e164("+8613800138000").unwrap();
        let p2 = PhoneNumber::parse_e164("+8613800138001").unwrap();
        let c = Code::parse("123456").unwrap();
        let base = k.mac(&p1, &c);
        assert_eq!(base, k.mac(&p1, &c));
        assert_ne!(base, k.mac(&p2, &c));
        assert_ne!(base, k.mac(&p1, &Code::parse("123457").unwrap()));
        assert_ne!(base, CodeKey::new(b"other".to_vec()).mac(&p1, &c));
        // Not the first scheme's MAC (session id first, no tag) for any session id.
        for id in [0i64, 1, 7] {
            let mut m = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
            m.update(&id.to_be_bytes());
            m.update(p1.as_str().as_bytes());
            m.update(&[0]);
            m.update(c.0.as_bytes());
            assert_ne!(base.0, <[u8; 32]>::from(m.finalize().into_bytes()));
        }
        assert!(!format!("{c:?}").contains("123456"));
    }
}
