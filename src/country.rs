//! Countries as abuse limits name them: a calling code such as `+86`. A number's country is the
//! code libphonenumber parsed it under, never a prefix of its digits, so `+86` followed by a Hong
//! Kong number is not a Chinese number (it is invalid, and refused before any limit sees it).
//! Settings that name countries hold [`CallingCode`]s parsed when the configuration is read, so
//! that a request compares numbers, not spellings.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::phone::PhoneNumber;

/// `+86` for `+8613800138000`, `+1` for `+12015550123`, `+353` for an Irish number.
pub fn calling_code(phone: &PhoneNumber) -> &str {
    phone.country()
}

/// A country calling code libphonenumber knows (assigned to a country or to a non-geographic
/// service), written `+` and 1 to 3 digits without a leading zero: `+86`, `+1`, `+881`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CallingCode(u16);

impl CallingCode {
    /// The code `phone` was parsed under; a parsed number's code is always assigned.
    pub fn of(phone: &PhoneNumber) -> CallingCode {
        CallingCode(phone.calling_code())
    }

    /// `None` unless `s` is exactly `+` and an assigned code (no spaces, no leading zero).
    pub fn parse(s: &str) -> Option<CallingCode> {
        let digits = s.strip_prefix('+')?;
        let syntax = (1..=3).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        let code = digits.parse::<u16>().ok().filter(|_| syntax)?;
        crate::phone::is_assigned_calling_code(code).then_some(CallingCode(code))
    }
}

impl TryFrom<String> for CallingCode {
    type Error = String;
    fn try_from(s: String) -> Result<CallingCode, String> {
        CallingCode::parse(&s)
            .ok_or_else(|| format!("{s:?} is not an assigned calling code like \"+86\""))
    }
}

impl std::str::FromStr for CallingCode {
    type Err = String;
    fn from_str(s: &str) -> Result<CallingCode, String> {
        CallingCode::try_from(s.to_owned())
    }
}

impl From<CallingCode> for String {
    fn from(c: CallingCode) -> String {
        c.to_string()
    }
}

impl fmt::Display for CallingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

/// A key of `countries.limits`: one calling code, or `*` for every code not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CountryKey {
    Code(CallingCode),
    Rest,
}

impl TryFrom<String> for CountryKey {
    type Error = String;
    fn try_from(s: String) -> Result<CountryKey, String> {
        if s == "*" {
            return Ok(CountryKey::Rest);
        }
        CallingCode::parse(&s)
            .map(CountryKey::Code)
            .ok_or_else(|| format!("{s:?} is not an assigned calling code like \"+86\", or \"*\""))
    }
}

impl std::str::FromStr for CountryKey {
    type Err = String;
    fn from_str(s: &str) -> Result<CountryKey, String> {
        CountryKey::try_from(s.to_owned())
    }
}

impl From<CountryKey> for String {
    fn from(k: CountryKey) -> String {
        match k {
            CountryKey::Code(c) => c.to_string(),
            CountryKey::Rest => "*".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(n: &str) -> PhoneNumber {
        PhoneNumber::parse_e164(n).unwrap()
    }

    #[test]
    fn one_two_and_three_digit_codes() {
        for (number, code) in [
            ("+12015550123", "+1"),
            ("+74951234567", "+7"),
            ("+8613800138000", "+86"),
            ("+447400123456", "+44"),
            ("+353861234567", "+353"),
            ("+85291234567", "+852"),
            ("+2348012345678", "+234"),
        ] {
            assert_eq!(calling_code(&phone(number)), code, "{number}");
            let typed = CallingCode::of(&phone(number));
            assert_eq!(typed.to_string(), code, "{number}");
            assert_eq!(code.parse::<CallingCode>(), Ok(typed), "{number}");
        }
    }

    #[test]
    fn calling_code_syntax_and_assignment() {
        for good in ["+86", "+1", "+353", "+881"] {
            let code: CallingCode = good.parse().unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(code.to_string(), good, "written back as read");
        }
        for (bad, why) in [
            ("86", "no +"),
            ("+", "no digits"),
            ("+1234", "four digits"),
            ("+0", "leading zero"),
            ("+086", "leading zero"),
            ("+8a", "not a digit"),
            (" +86", "space"),
            ("+86 ", "space"),
            ("+999", "unassigned"),
            ("+28", "unassigned"),
            ("*", "a limit key, not a code"),
        ] {
            let err = bad.parse::<CallingCode>().unwrap_err();
            assert!(err.contains("calling code"), "{bad:?} ({why}): {err}");
        }
    }

    #[test]
    fn limit_keys_are_a_code_or_a_star() {
        assert_eq!("*".parse(), Ok(CountryKey::Rest));
        assert_eq!(
            "+86".parse(),
            Ok(CountryKey::Code(CallingCode::parse("+86").unwrap()))
        );
        for bad in ["**", "+28", "86", ""] {
            assert!(bad.parse::<CountryKey>().is_err(), "{bad:?}");
        }
        for key in ["*", "+1", "+881"] {
            assert_eq!(String::from(key.parse::<CountryKey>().unwrap()), key);
        }
    }
}
