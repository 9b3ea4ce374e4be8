//! `PhoneNumber`: a destination parsed once at the edge, so everything inside handles E.164 only.

use std::fmt;

/// A phone number in E.164 form (`+` then 8 to 15 digits, no leading zero).
///
/// `Display` and `Debug` mask the middle digits so that a number that slips into a log line does
/// not identify anybody; [`PhoneNumber::as_str`] gives the full number to the code that needs it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number must be in E.164 form: '+' followed by 8 to 15 digits")]
    NotE164,
    #[error("phone number is not valid for region {0}")]
    InvalidForRegion(String),
}

/// How national numbers are read: with a default region, `18434288349` becomes `+8618434288349`.
#[derive(Debug, Clone, Default)]
pub struct PhoneParser {
    default_region: Option<phonenumber::country::Id>,
}

impl PhoneParser {
    /// `region` is an ISO 3166-1 alpha-2 code such as `CN`; `None` accepts E.164 only.
    pub fn new(region: Option<&str>) -> Result<Self, String> {
        let default_region = match region {
            None => None,
            Some(r) => Some(
                r.to_ascii_uppercase()
                    .parse::<phonenumber::country::Id>()
                    .map_err(|_| {
                        format!(
                            "unknown region code {r:?} (expected ISO 3166-1 alpha-2, e.g. \"CN\")"
                        )
                    })?,
            ),
        };
        Ok(Self { default_region })
    }

    /// Parses user input. Spaces and hyphens between digits are tolerated as visual grouping.
    pub fn parse(&self, input: &str) -> Result<PhoneNumber, PhoneError> {
        let trimmed = input.trim();
        if trimmed.starts_with('+') {
            return PhoneNumber::parse_e164(trimmed);
        }
        let Some(region) = self.default_region else {
            return Err(PhoneError::NotE164);
        };
        let compact = compact(trimmed).ok_or(PhoneError::NotE164)?;
        let parsed = phonenumber::parse(Some(region), &compact)
            .map_err(|_| PhoneError::InvalidForRegion(region.as_ref().to_string()))?;
        if !phonenumber::is_valid(&parsed) {
            return Err(PhoneError::InvalidForRegion(region.as_ref().to_string()));
        }
        let e164 = parsed.format().mode(phonenumber::Mode::E164).to_string();
        PhoneNumber::parse_e164(&e164)
    }
}

/// Strips visual separators; `None` when anything but digits, spaces and hyphens is present.
fn compact(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '0'..='9' => out.push(c),
            ' ' | '-' => {}
            _ => return None,
        }
    }
    Some(out)
}

impl PhoneNumber {
    /// Parses `+` followed by 8–15 digits (separators allowed), first digit non-zero.
    pub fn parse_e164(input: &str) -> Result<Self, PhoneError> {
        let rest = input.trim().strip_prefix('+').ok_or(PhoneError::NotE164)?;
        let digits = compact(rest).ok_or(PhoneError::NotE164)?;
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(PhoneError::NotE164);
        }
        Ok(Self(format!("+{digits}")))
    }

    /// The full number, `+` and digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number with its middle digits hidden, e.g. `+86138****8000`, for logs.
    pub fn masked(&self) -> String {
        // Four digits hidden before the last four; at most the country code and a few
        // leading digits stay visible (`+` plus 8 to 15 digits, so the head is 1 to 8 chars).
        let s = &self.0;
        let head = s.len() - 8;
        format!("{}****{}", &s[..head], &s[s.len() - 4..])
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_and_grouping() {
        let p = PhoneNumber::parse_e164("+86 138-0013-8000").unwrap();
        assert_eq!(p.as_str(), "+8613800138000");
        assert_eq!(
            PhoneNumber::parse_e164("+15555550100").unwrap().as_str(),
            "+15555550100"
        );
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "+",
            "8613800138000",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+86abc13800",
            "++8613800138000",
            "+86\u{0663}13800138000",
            "+86 138 0013 8000x",
            "+86(138)00138000",
        ] {
            assert_eq!(
                PhoneNumber::parse_e164(bad),
                Err(PhoneError::NotE164),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn masks_the_middle() {
        let p = PhoneNumber::parse_e164("+8613800138000").unwrap();
        assert_eq!(p.masked(), "+86138****8000");
        assert_eq!(format!("{p}"), "+86138****8000");
        assert!(!format!("{p:?}").contains("13800138000"));
        let short = PhoneNumber::parse_e164("+12345678").unwrap();
        assert!(!short.masked().contains("2345678"));
    }

    #[test]
    fn national_numbers_need_a_region() {
        assert_eq!(
            PhoneParser::new(None).unwrap().parse("18434288349"),
            Err(PhoneError::NotE164)
        );
        let cn = PhoneParser::new(Some("cn")).unwrap();
        assert_eq!(cn.parse("18434288349").unwrap().as_str(), "+8618434288349");
        assert_eq!(
            cn.parse("+8613800138000").unwrap().as_str(),
            "+8613800138000"
        );
        assert!(matches!(
            cn.parse("12345"),
            Err(PhoneError::InvalidForRegion(_))
        ));
        assert!(PhoneParser::new(Some("XX")).is_err());
    }
}
