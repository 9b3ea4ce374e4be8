//! `Region`: the ISO 3166-1 alpha-2 region (`CN`) that `verification.default_region` names, read
//! once with the configuration so that the phone parser is built from a value that cannot be
//! wrong. A build without libphonenumber's metadata has no regions at all: there the type has no
//! values, and any setting of the key is refused as it is read.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A region libphonenumber's metadata knows, for numbers typed without `+`.
#[cfg(feature = "national-numbers")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(pub(super) phonenumber::country::Id);

/// No region can be named without the metadata, so this type has no values.
#[cfg(not(feature = "national-numbers"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Region {}

impl TryFrom<String> for Region {
    type Error = String;

    #[cfg(feature = "national-numbers")]
    fn try_from(s: String) -> Result<Region, String> {
        s.to_ascii_uppercase()
            .parse::<phonenumber::country::Id>()
            .map(Region)
            .map_err(|_| {
                format!("unknown region code {s:?} (expected ISO 3166-1 alpha-2, e.g. \"CN\")")
            })
    }

    #[cfg(not(feature = "national-numbers"))]
    fn try_from(_: String) -> Result<Region, String> {
        Err(format!("must be unset: {}", super::NEEDS_METADATA))
    }
}

impl std::str::FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Region, String> {
        Region::try_from(s.to_owned())
    }
}

impl From<Region> for String {
    fn from(r: Region) -> String {
        r.to_string()
    }
}

impl fmt::Display for Region {
    #[cfg(feature = "national-numbers")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_ref())
    }

    #[cfg(not(feature = "national-numbers"))]
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

#[cfg(all(test, feature = "national-numbers"))]
mod tests {
    use super::*;

    #[test]
    fn regions_are_read_in_any_case_and_written_in_capitals() {
        for (written, read) in [("CN", "CN"), ("cn", "CN"), ("Gb", "GB")] {
            let region: Region = written.parse().unwrap_or_else(|e| panic!("{written}: {e}"));
            assert_eq!(region.to_string(), read, "{written}");
        }
        for bad in ["", "XX", "CHN", "C N", "+86"] {
            let err = bad.parse::<Region>().unwrap_err();
            assert!(err.contains("ISO 3166-1"), "{bad:?}: {err}");
        }
    }
}
