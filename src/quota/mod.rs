//! Abuse limits as the store sees them: named counters with a limit and a window, the
//! failed-check lock-out and the SMS-pumping breaker. The verification flow builds them from the
//! configuration for each request; the store enforces them atomically with the send or check, so
//! they hold across every daemon sharing one database.

use std::time::{Duration, SystemTime};

use crate::country::CallingCode;

pub mod config;
pub use config::{
    ChallengeMode, CountriesConfig, GlobalConfig, Limits, OnTrip, PerIpConfig, PerPhoneConfig,
    PumpingConfig,
};

/// What a counter counts. The string form is the `scope` column of `quota_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Sends to one number in `per_phone.window`, across all sessions (soft: a solved
    /// challenge passes a spent one).
    PhoneSends,
    /// Sends to one number per day, across all sessions (soft).
    PhoneDaily,
    /// Sends from one client address (IPv4 address or IPv6 /64).
    IpSends,
    /// Checks from one client address.
    IpChecks,
    /// Sends of the whole deployment per hour.
    Global,
    /// Sends to one country calling code per hour.
    Country,
    /// Wrong codes typed for one number, across codes, sessions and networks.
    PhoneFailedChecks,
    /// Sends from one client network (IPv4 /24, IPv6 /48).
    PrefixSends,
    /// Sends to one number from one client network in `per_phone.window`.
    PhoneNetSends,
    /// Sends to one number from one client network per day.
    PhoneNetDaily,
    /// Sends to one number in `per_phone.window`, challenge or not: never exceeded.
    PhoneHardSends,
    /// Sends to one number per day, challenge or not: never exceeded.
    PhoneHardDaily,
    /// Wrong codes typed for one number from one client network.
    PhoneNetFailedChecks,
}

const SCOPES: [Scope; 13] = [
    Scope::PhoneSends,
    Scope::PhoneDaily,
    Scope::IpSends,
    Scope::IpChecks,
    Scope::Global,
    Scope::Country,
    Scope::PhoneFailedChecks,
    Scope::PrefixSends,
    Scope::PhoneNetSends,
    Scope::PhoneNetDaily,
    Scope::PhoneHardSends,
    Scope::PhoneHardDaily,
    Scope::PhoneNetFailedChecks,
];

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::PhoneSends => "phone_sends",
            Scope::PhoneDaily => "phone_daily",
            Scope::IpSends => "ip_sends",
            Scope::IpChecks => "ip_checks",
            Scope::Global => "global",
            Scope::Country => "country",
            Scope::PhoneFailedChecks => "phone_failed_checks",
            Scope::PrefixSends => "prefix_sends",
            Scope::PhoneNetSends => "phone_net_sends",
            Scope::PhoneNetDaily => "phone_net_daily",
            Scope::PhoneHardSends => "phone_hard_sends",
            Scope::PhoneHardDaily => "phone_hard_daily",
            Scope::PhoneNetFailedChecks => "phone_net_failed_checks",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        SCOPES.into_iter().find(|sc| sc.as_str() == s)
    }

    /// Whether a nearly full counter of this scope makes a send suspicious
    /// ([`ChallengeRule::when_suspicious`]): the client's own address and network counters at
    /// three quarters of their limit, the deployment's hourly budget past half.
    pub fn suspicious_at(self, count: u32, limit: u32) -> bool {
        let (count, limit) = (u64::from(count), u64::from(limit));
        match self {
            Scope::IpSends | Scope::PrefixSends => count * 4 >= limit * 3,
            Scope::Global => count * 2 > limit,
            _ => false,
        }
    }
}

/// One counter a request must fit under: at most `limit` events per window. A window starts at
/// the first event after the previous one ended (so its length is exact, not aligned to a clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub scope: Scope,
    pub key: String,
    pub limit: u32,
    pub window: Duration,
}

/// Wrong codes allowed before checks are refused for `lockout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    pub max: u32,
    pub window: Duration,
    pub lockout: Duration,
}

/// The pumping breaker for the destination's country calling code.
#[derive(Debug, Clone, PartialEq)]
pub struct PumpingRule {
    /// Calling code with `+`, e.g. `+86`.
    pub country: String,
    pub window: Duration,
    /// Sends in the window before the conversion rate is judged.
    pub min_sample: u32,
    /// Approvals per send below which the breaker trips.
    pub min_conversion: f64,
}

/// When a send needs a solved challenge. The store decides, in the send's transaction, from
/// the counters it locks anyway, so the answer is exact across daemons. `Default` asks for
/// none and lets a tripped breaker refuse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChallengeRule {
    /// The caller solved one (or is a backend, which is never asked).
    pub passed: bool,
    /// Every send needs one (`challenge.mode = "always"`).
    pub always: bool,
    /// A send needs one when a counter is near its limit ([`Scope::suspicious_at`]) or the
    /// country's breaker is tripped (`challenge.mode = "when_suspicious"`).
    pub when_suspicious: bool,
    /// A tripped breaker asks for one instead of refusing (`pumping.on_trip = "challenge"`).
    pub on_trip: bool,
}

/// Limits a send must pass, all or nothing: a refusal by one consumes none of the others.
///
/// Order: a tripped breaker refuses (unless `challenge.on_trip`); then a full hard quota
/// refuses; then, unless `challenge.passed`, a challenge is required when the rule asks for
/// one or a soft quota is full; then every quota, soft ones included, is taken.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendGuard {
    /// Hard quotas: full means refused. No two (in both lists) with the same (scope, key).
    pub quotas: Vec<Quota>,
    /// Soft quotas: full means a challenge is required; a solved one passes them (they count
    /// on past their limit, bounded by the hard quotas).
    pub soft: Vec<Quota>,
    pub pumping: Option<PumpingRule>,
    pub challenge: ChallengeRule,
}

impl SendGuard {
    /// Every quota the send takes, hard then soft (what a failed delivery gives back).
    pub fn all_quotas(&self) -> impl Iterator<Item = &Quota> {
        self.quotas.iter().chain(&self.soft)
    }
}

/// Limits a check must pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckGuard {
    pub quotas: Vec<Quota>,
    /// Wrong codes for the number from anywhere.
    pub failures: Option<FailureLimit>,
    /// Wrong codes for the number from the client's network (the key of [`net_key`]): a
    /// lock here shuts out only that network. Browsers only. Its window and lock-out are
    /// those of `failures` when both are set.
    pub network_failures: Option<(String, FailureLimit)>,
    /// Approvals are counted for this country's breaker.
    pub pumping: Option<PumpingRule>,
}

/// The state of one country's breaker, for operators and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PumpingState {
    pub country: String,
    pub sends: u32,
    pub approvals: u32,
    pub tripped: bool,
    /// End of the current window; the counts start over after it.
    pub window_ends: SystemTime,
}

impl<'a> From<&'a PumpingState> for crate::metrics::PumpingSample<'a> {
    fn from(p: &'a PumpingState) -> Self {
        crate::metrics::PumpingSample {
            country: &p.country,
            sends: p.sends,
            approvals: p.approvals,
            tripped: p.tripped,
        }
    }
}

/// Why a request was refused by a limit, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A counter is full.
    Quota(Scope),
    /// The number is locked after too many wrong codes.
    Locked,
    /// The pumping breaker is open for the destination's country.
    Breaker,
    /// The send needs a solved challenge (see [`ChallengeRule`]).
    Challenge,
}

impl Refusal {
    /// The stable `error` code a client sees (and the metrics' `reason` label).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Quota(
                Scope::PhoneSends
                | Scope::PhoneDaily
                | Scope::IpSends
                | Scope::PrefixSends
                | Scope::PhoneNetSends
                | Scope::PhoneNetDaily
                | Scope::PhoneHardSends
                | Scope::PhoneHardDaily,
            ) => "too_many_sends",
            Refusal::Quota(Scope::Global | Scope::Country) => "budget_exhausted",
            Refusal::Quota(
                Scope::IpChecks | Scope::PhoneFailedChecks | Scope::PhoneNetFailedChecks,
            )
            | Refusal::Locked => "too_many_checks",
            Refusal::Breaker => "destination_blocked",
            Refusal::Challenge => "challenge_required",
        }
    }
}

/// The counter key of a client address: an IPv4 address on its own, an IPv6 address by its
/// /64 (one subscriber usually holds a whole /64, so single addresses would be free to rotate).
pub fn ip_key(ip: std::net::IpAddr) -> String {
    prefix_key(ip, 32, 64)
}

/// The counter key of a client's network: its IPv4 /24 or IPv6 /48. One household, office or
/// small hosting customer usually holds a whole one (a /48 holds 65,536 /64s), so this is the
/// unit an attacker cannot cheaply leave.
pub fn net_key(ip: std::net::IpAddr) -> String {
    prefix_key(ip, 24, 48)
}

fn prefix_key(ip: std::net::IpAddr, v4_bits: u32, v6_bits: u32) -> String {
    match crate::net::canonical(ip) {
        std::net::IpAddr::V4(v4) if v4_bits >= 32 => v4.to_string(),
        std::net::IpAddr::V4(v4) => {
            let net = std::net::Ipv4Addr::from(u32::from(v4) & (u32::MAX << (32 - v4_bits)));
            format!("{net}/{v4_bits}")
        }
        std::net::IpAddr::V6(v6) => {
            let net = std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << (128 - v6_bits)));
            format!("{net}/{v6_bits}")
        }
    }
}

/// A quota of `limit` per `window` seconds, or nothing when the limit is 0 (off).
fn quota(scope: Scope, key: impl Into<String>, limit: u32, window: u64) -> Option<Quota> {
    (limit > 0).then(|| Quota {
        scope,
        key: key.into(),
        limit,
        window: Duration::from_secs(window),
    })
}

fn pumping_rule(limits: &Limits<'_>, country: CallingCode) -> Option<PumpingRule> {
    let p = limits.pumping;
    p.enabled.then(|| PumpingRule {
        country: country.to_string(),
        window: Duration::from_secs(p.window),
        min_sample: p.min_sample,
        min_conversion: p.min_conversion,
    })
}

/// The counter key of a number as seen from one network.
fn phone_net(phone: &str, net: &str) -> String {
    format!("{phone} {net}")
}

impl SendGuard {
    /// The limits of a send to `phone` (calling code `country`) from `client` (browsers only;
    /// `None` for backends). `challenge_passed`: the caller solved a challenge, or is a backend.
    pub fn build(
        limits: &Limits<'_>,
        phone: &str,
        country: CallingCode,
        client: Option<std::net::IpAddr>,
        challenge_passed: bool,
    ) -> SendGuard {
        let (pp, ip) = (limits.per_phone, limits.per_ip);
        let net = client.map(net_key);
        let hard = [
            quota(Scope::PhoneHardSends, phone, pp.hard_max_sends, pp.window),
            quota(Scope::PhoneHardDaily, phone, pp.hard_daily_max, 86_400),
            client.and_then(|a| quota(Scope::IpSends, ip_key(a), ip.max_sends, ip.window)),
            net.as_ref()
                .and_then(|n| quota(Scope::PrefixSends, n, ip.prefix_max_sends, ip.window)),
            net.as_ref().and_then(|n| {
                quota(
                    Scope::PhoneNetSends,
                    phone_net(phone, n),
                    pp.network_max_sends,
                    pp.window,
                )
            }),
            net.as_ref().and_then(|n| {
                quota(
                    Scope::PhoneNetDaily,
                    phone_net(phone, n),
                    pp.network_daily_max,
                    86_400,
                )
            }),
            quota(Scope::Global, "*", limits.global.max_sends_per_hour, 3600),
            limits
                .country_cap(country)
                .and_then(|n| quota(Scope::Country, country.to_string(), n, 3600)),
        ];
        let soft = [
            quota(Scope::PhoneSends, phone, pp.max_sends, pp.window),
            quota(Scope::PhoneDaily, phone, pp.daily_max, 86_400),
        ];
        let mode = limits.challenge;
        let mut quotas: Vec<Quota> = hard.into_iter().flatten().collect();
        let mut soft: Vec<Quota> = soft.into_iter().flatten().collect();
        if mode == ChallengeMode::Off {
            // Without challenges a spent budget has nothing to offer but a refusal.
            quotas.append(&mut soft);
        }
        SendGuard {
            quotas,
            soft,
            pumping: pumping_rule(limits, country),
            challenge: ChallengeRule {
                passed: challenge_passed,
                always: mode == ChallengeMode::Always,
                when_suspicious: mode == ChallengeMode::WhenSuspicious,
                on_trip: limits.pumping.on_trip == OnTrip::Challenge,
            },
        }
    }
}

impl CheckGuard {
    /// The limits of a check for a number of calling code `country` from `client` (browsers
    /// only).
    pub fn build(
        limits: &Limits<'_>,
        country: CallingCode,
        client: Option<std::net::IpAddr>,
    ) -> CheckGuard {
        let (pp, ip) = (limits.per_phone, limits.per_ip);
        let limit = |max| {
            (max > 0).then(|| FailureLimit {
                max,
                window: Duration::from_secs(pp.failed_checks_window),
                lockout: Duration::from_secs(pp.lockout),
            })
        };
        CheckGuard {
            quotas: client
                .and_then(|a| quota(Scope::IpChecks, ip_key(a), ip.max_checks, ip.window))
                .into_iter()
                .collect(),
            failures: limit(pp.max_failed_checks),
            network_failures: client
                .and_then(|a| Some((net_key(a), limit(pp.network_max_failed_checks)?))),
            pumping: pumping_rule(limits, country),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::country::CountryKey;

    #[test]
    fn ipv6_clients_are_grouped_by_slash_64() {
        let k = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(k("2001:db8:1:2:ffff:ffff:ffff:ffff"), k("2001:db8:1:2::"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("203.0.113.7"), "203.0.113.7");
        assert_ne!(k("203.0.113.7"), k("203.0.113.8"));
        assert_eq!(k("::ffff:203.0.113.7"), "203.0.113.7");
    }

    #[test]
    fn networks_are_ipv4_slash_24_and_ipv6_slash_48() {
        let k = |s: &str| net_key(s.parse().unwrap());
        assert_eq!(k("203.0.113.7"), "203.0.113.0/24");
        assert_eq!(k("::ffff:203.0.113.200"), "203.0.113.0/24");
        assert_ne!(k("203.0.113.7"), k("203.0.114.7"));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), "2001:db8:1::/48");
        assert_eq!(k("2001:db8:1:ffff::1"), k("2001:db8:1::"));
        assert_ne!(k("2001:db8:1::1"), k("2001:db8:2::1"));
    }

    #[test]
    fn suspicion_starts_at_three_quarters_of_a_client_limit_and_half_the_budget() {
        assert!(!Scope::IpSends.suspicious_at(14, 20));
        assert!(Scope::IpSends.suspicious_at(15, 20));
        assert!(Scope::PrefixSends.suspicious_at(150, 200));
        assert!(!Scope::Global.suspicious_at(500, 1000));
        assert!(Scope::Global.suspicious_at(501, 1000));
        assert!(!Scope::PhoneSends.suspicious_at(5, 5));
    }

    fn code(s: &str) -> CallingCode {
        s.parse().unwrap()
    }

    #[test]
    fn guards_follow_the_configuration() {
        let (per_phone, global) = (PerPhoneConfig::default(), GlobalConfig::default());
        let per_ip = PerIpConfig {
            max_sends: 0,
            ..PerIpConfig::default()
        };
        let mut countries = CountriesConfig::default();
        countries.limits.insert(CountryKey::Rest, 7);
        countries.limits.insert("+86".parse().unwrap(), 9);
        let (pumping, blocking) = (
            PumpingConfig::default(),
            PumpingConfig {
                on_trip: OnTrip::Block,
                ..PumpingConfig::default()
            },
        );
        let mut c = Limits {
            per_phone: &per_phone,
            per_ip: &per_ip,
            global: &global,
            countries: &countries,
            pumping: &pumping,
            challenge: ChallengeMode::default(),
        };
        let g = SendGuard::build(
            &c,
            "+8613800138000",
            code("+86"),
            Some("1.2.3.4".parse().unwrap()),
            false,
        );
        let scopes: Vec<_> = g.quotas.iter().map(|q| (q.scope, q.limit)).collect();
        assert_eq!(
            scopes,
            [
                (Scope::PhoneHardSends, 10),
                (Scope::PhoneHardDaily, 20),
                (Scope::PrefixSends, 200),
                (Scope::PhoneNetSends, 3),
                (Scope::PhoneNetDaily, 5),
                (Scope::Global, 1000),
                (Scope::Country, 9)
            ]
        );
        assert_eq!(g.quotas[3].key, "+8613800138000 1.2.3.0/24");
        let soft: Vec<_> = g.soft.iter().map(|q| (q.scope, q.limit)).collect();
        assert_eq!(soft, [(Scope::PhoneSends, 5), (Scope::PhoneDaily, 10)]);
        assert!(g.challenge.when_suspicious && g.challenge.on_trip && !g.challenge.passed);
        let g = SendGuard::build(&c, "+447400123456", code("+44"), None, true);
        assert_eq!(g.quotas.last().map(|q| q.limit), Some(7));
        assert_eq!(
            g.quotas.len(),
            4,
            "backends have no address or network quotas"
        );
        assert_eq!(g.pumping.map(|p| p.country), Some("+44".into()));
        assert!(g.challenge.passed);
        c.challenge = ChallengeMode::Off;
        c.pumping = &blocking;
        let g = SendGuard::build(&c, "+447400123456", code("+44"), None, false);
        assert!(
            g.soft.is_empty() && g.quotas.len() == 6,
            "without challenges, budgets are hard"
        );
        assert_eq!(g.challenge, ChallengeRule::default());
        let g = CheckGuard::build(&c, code("+44"), Some("::1".parse().unwrap()));
        assert_eq!(g.quotas[0].key, "::/64");
        assert_eq!(g.failures.map(|f| f.max), Some(50));
        assert_eq!(
            g.network_failures.map(|(net, f)| (net, f.max)),
            Some(("::/48".into(), 5))
        );
    }
}
