//! `Seconds`: the one unit every duration in the configuration is written in. Whole numbers
//! (`30`) and fractions (`0.25`) are both accepted, so sub-second timeouts need no second unit;
//! a value that exists is finite, non-negative and at most a year.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// The longest duration any setting may hold; larger values are typing mistakes (a
/// millisecond count written into a seconds key, say) and would overflow deadlines.
const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// A configured duration, in seconds with millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seconds(Duration);

impl Seconds {
    pub const fn from_secs(secs: u64) -> Seconds {
        Seconds(Duration::from_secs(secs))
    }

    pub const fn from_millis(ms: u64) -> Seconds {
        Seconds(Duration::from_millis(ms))
    }

    /// A number of seconds as written in a file or variable; the error says what is wrong,
    /// the caller adds the key.
    pub fn parse(secs: f64) -> Result<Seconds, String> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!(
                "{secs} is not a duration: expected a non-negative number of seconds"
            ));
        }
        let d = Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?;
        if d > MAX {
            return Err(format!(
                "{secs} seconds is longer than a year; durations are in seconds"
            ));
        }
        // Millisecond precision: what every consumer (timers, SQLite's busy timeout, Postgres's
        // statement_timeout) can honour, and what keeps `0.1` from printing as 0.1000000001.
        let ms = (d.as_secs_f64() * 1000.0).round() as u64;
        if ms == 0 && secs > 0.0 {
            return Err(format!("{secs} seconds is shorter than a millisecond"));
        }
        Ok(Seconds::from_millis(ms))
    }

    pub const fn duration(self) -> Duration {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn as_millis(self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl From<Seconds> for Duration {
    fn from(s: Seconds) -> Duration {
        s.0
    }
}

/// As an operator would write it: `5`, `0.25`.
impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_millis() == 0 {
            write!(f, "{}", self.0.as_secs())
        } else {
            write!(f, "{}", self.0.as_secs_f64())
        }
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_millis() == 0 {
            s.serialize_u64(self.0.as_secs())
        } else {
            s.serialize_f64(self.0.as_secs_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds, such as 5 or 0.25")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Seconds::parse(v as f64).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                Seconds::parse(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                Seconds::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_fractional_seconds_parse_to_milliseconds() {
        assert_eq!(Seconds::parse(5.0), Ok(Seconds::from_secs(5)));
        assert_eq!(Seconds::parse(0.25), Ok(Seconds::from_millis(250)));
        assert_eq!(Seconds::parse(0.1).map(Seconds::as_millis), Ok(100));
        assert_eq!(Seconds::parse(0.0), Ok(Seconds::default()));
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for bad in [-1.0, f64::NAN, f64::INFINITY, 0.0001, 40_000_000.0] {
            assert!(Seconds::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn prints_and_serializes_as_written() {
        assert_eq!(Seconds::from_millis(250).to_string(), "0.25");
        assert_eq!(Seconds::from_secs(10).to_string(), "10");
        let v = toml::Value::try_from(Seconds::from_millis(1500)).unwrap();
        assert_eq!(v, toml::Value::Float(1.5));
        let v = toml::Value::try_from(Seconds::from_secs(2)).unwrap();
        assert_eq!(v, toml::Value::Integer(2));
    }
}
