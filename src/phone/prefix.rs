//! `Prefix`: the start of a number in E.164 form (`+86`, `+8613`), as message templates and
//! provider routes name a group of numbers; read once with the configuration.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::PhoneNumber;

/// `+` and 1 to 15 digits: E.164 numbers have at most 15.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Prefix(String);

impl Prefix {
    /// `None` unless `s` is exactly `+` and 1 to 15 ASCII digits.
    pub fn parse(s: &str) -> Option<Prefix> {
        let digits = s.strip_prefix('+')?;
        ((1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Prefix(s.to_owned()))
    }

    /// Whether `phone` begins with this prefix.
    pub fn matches(&self, phone: &PhoneNumber) -> bool {
        phone.as_str().starts_with(&self.0)
    }

    /// How many digits it has: a longer prefix names fewer numbers, and wins over a shorter one.
    pub fn digits(&self) -> usize {
        self.0.len() - 1
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Prefix {
    type Error = String;
    fn try_from(s: String) -> Result<Prefix, String> {
        Prefix::parse(&s).ok_or_else(|| format!("{s:?} is not an E.164 prefix such as \"+86\""))
    }
}

impl From<Prefix> for String {
    fn from(p: Prefix) -> String {
        p.0
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plus_and_up_to_fifteen_digits() {
        let phone = PhoneNumber::parse_e164("+8613800138000").unwrap();
        for (written, matches) in [
            ("+8", true),
            ("+86", true),
            ("+8613", true),
            ("+852", false),
        ] {
            let p = Prefix::parse(written).unwrap_or_else(|| panic!("{written}"));
            assert_eq!(p.matches(&phone), matches, "{written}");
            assert_eq!(p.as_str(), written);
        }
        assert!(Prefix::parse(&format!("+{}", "1".repeat(15))).is_some());
        for bad in ["86", "+", "+86a", "+86 ", "*", "zh", "+1234567890123456"] {
            let err = Prefix::try_from(bad.to_owned()).unwrap_err();
            assert!(err.contains("E.164 prefix"), "{bad:?}: {err}");
        }
    }
}
