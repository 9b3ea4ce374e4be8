//! The abuse-limit sections of the configuration (`[per_phone]`, `[per_ip]`, `[global]`,
//! `[countries]`, `[pumping]`) and `challenge.mode`: the settings this module turns into guards.
//! They live here, not in `config`, so that the limits own their settings and import nothing
//! above them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::country::{CallingCode, CountryKey};

/// `challenge.mode`: when a browser send must carry a solved challenge. Whatever the mode, a
/// tripped breaker with `pumping.on_trip = "challenge"` asks for a challenge, and so does a spent
/// per-number budget unless the mode is `off`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeMode {
    /// No challenge beyond the breaker's; spent per-number budgets refuse outright.
    Off,
    /// Every browser send.
    Always,
    /// Browser sends that look like abuse (see [`super::ChallengeRule`]).
    #[default]
    WhenSuspicious,
}

/// The limit settings a guard is built from, borrowed from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits<'a> {
    pub per_phone: &'a PerPhoneConfig,
    pub per_ip: &'a PerIpConfig,
    pub global: &'a GlobalConfig,
    pub countries: &'a CountriesConfig,
    pub pumping: &'a PumpingConfig,
    pub challenge: ChallengeMode,
}

impl Limits<'_> {
    /// Whether `countries.allow` / `countries.deny` let codes go to calling code `country`.
    pub fn serves(&self, country: CallingCode) -> bool {
        let c = self.countries;
        (c.allow.is_empty() || c.allow.contains(&country)) && !c.deny.contains(&country)
    }

    /// `countries.limits` for `country`: its own entry, else the `*` entry, else none.
    pub fn country_cap(&self, country: CallingCode) -> Option<u32> {
        let limits = &self.countries.limits;
        limits
            .get(&CountryKey::Code(country))
            .or_else(|| limits.get(&CountryKey::Rest))
            .copied()
    }

    /// Ranges and relations serde cannot check; returns the key at fault and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let p = self.per_phone;
        if p.window == 0 {
            return Err(("per_phone.window", "must be positive".into()));
        }
        if p.failed_checks_window == 0 {
            return Err(("per_phone.failed_checks_window", "must be positive".into()));
        }
        if self.per_ip.window == 0 {
            return Err(("per_ip.window", "must be positive".into()));
        }
        for (key, soft_key, soft, hard) in [
            (
                "per_phone.hard_max_sends",
                "max_sends",
                p.max_sends,
                p.hard_max_sends,
            ),
            (
                "per_phone.hard_daily_max",
                "daily_max",
                p.daily_max,
                p.hard_daily_max,
            ),
        ] {
            if hard > 0 && hard < soft {
                return Err((
                    key,
                    format!("must be 0 (off) or at least per_phone.{soft_key} ({soft})"),
                ));
            }
        }
        let pu = self.pumping;
        if pu.window == 0 {
            return Err(("pumping.window", "must be positive".into()));
        }
        if !(0.0..=1.0).contains(&pu.min_conversion) {
            return Err(("pumping.min_conversion", "must be between 0 and 1".into()));
        }
        Ok(())
    }
}

/// Limits per destination number, across all sessions (0 turns a limit off).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PerPhoneConfig {
    /// Sends per `window` seconds.
    pub max_sends: u32,
    pub window: u64,
    /// Sends per day.
    pub daily_max: u32,
    /// Caps on sends per `window` and per day that even a solved challenge cannot pass
    /// (`max_sends` and `daily_max` are the budgets past which a challenge is asked for).
    pub hard_max_sends: u32,
    pub hard_daily_max: u32,
    /// Sends per `window` and per day to one number from one client network (IPv4 /24,
    /// IPv6 /48), so that a stranger's network cannot spend the number's whole budget.
    pub network_max_sends: u32,
    pub network_daily_max: u32,
    /// Wrong codes per `failed_checks_window` seconds before checks are refused for `lockout`:
    /// from anywhere, and from one client network (which locks only that network).
    pub max_failed_checks: u32,
    pub network_max_failed_checks: u32,
    pub failed_checks_window: u64,
    pub lockout: u64,
}

impl Default for PerPhoneConfig {
    fn default() -> Self {
        Self {
            max_sends: 5,
            window: 600,
            daily_max: 10,
            hard_max_sends: 10,
            hard_daily_max: 20,
            network_max_sends: 3,
            network_daily_max: 5,
            max_failed_checks: 50,
            network_max_failed_checks: 5,
            failed_checks_window: 3600,
            lockout: 3600,
        }
    }
}

/// Limits per browser client address (IPv4 address, IPv6 /64) and network (IPv4 /24, IPv6
/// /48); 0 turns a limit off.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PerIpConfig {
    pub max_sends: u32,
    pub max_checks: u32,
    /// Sends per client network (IPv4 /24, IPv6 /48), beside the per-address `max_sends`.
    pub prefix_max_sends: u32,
    /// Seconds.
    pub window: u64,
}

impl Default for PerIpConfig {
    fn default() -> Self {
        Self {
            max_sends: 20,
            max_checks: 100,
            prefix_max_sends: 200,
            window: 3600,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    /// SMS per hour for the whole deployment; 0 means no cap.
    pub max_sends_per_hour: u32,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            max_sends_per_hour: 1000,
        }
    }
}

/// Destinations by country calling code (`+86`), each parsed as the configuration is read: a
/// code that is not assigned is refused there, naming the key.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CountriesConfig {
    /// SMS per hour per calling code; `"*"` applies to codes not listed.
    pub limits: BTreeMap<CountryKey, u32>,
    /// When not empty, only these calling codes are served.
    pub allow: Vec<CallingCode>,
    /// Calling codes never served.
    pub deny: Vec<CallingCode>,
}

/// The SMS-pumping breaker, per calling code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PumpingConfig {
    pub enabled: bool,
    /// Seconds of one observation window.
    pub window: u64,
    /// Sends in a window before the conversion is judged.
    pub min_sample: u32,
    /// Approvals per send below which sends to the country stop.
    pub min_conversion: f64,
    /// What a tripped breaker does to browser sends: ask for a solved challenge, or refuse.
    pub on_trip: OnTrip,
}

impl Default for PumpingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 3600,
            min_sample: 50,
            min_conversion: 0.2,
            on_trip: OnTrip::Challenge,
        }
    }
}

/// `pumping.on_trip`: a tripped breaker makes browser sends to the country solve a challenge
/// (backends, never challenged, go through), or refuses every send with `destination_blocked`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnTrip {
    #[default]
    Challenge,
    Block,
}
