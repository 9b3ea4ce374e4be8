//! Abuse limits as the store sees them: named counters with a limit and a window, the
//! failed-check lock-out and the SMS-pumping breaker. The verification flow builds them from the
//! configuration for each request; the store enforces them atomically with the send or check, so
//! they hold across every daemon sharing one database.

use std::time::{Duration, SystemTime};

/// What a counter counts. The string form is the `scope` column of `quota_counters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Sends to one number in `per_phone.window`, across all sessions.
    PhoneSends,
    /// Sends to one number per day, across all sessions.
    PhoneDaily,
    /// Sends from one client address (IPv4 address or IPv6 /64).
    IpSends,
    /// Checks from one client address.
    IpChecks,
    /// Sends of the whole deployment per hour.
    Global,
    /// Sends to one country calling code per hour.
    Country,
    /// Wrong codes typed for one number, across codes and sessions.
    PhoneFailedChecks,
}

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
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        [
            Scope::PhoneSends,
            Scope::PhoneDaily,
            Scope::IpSends,
            Scope::IpChecks,
            Scope::Global,
            Scope::Country,
            Scope::PhoneFailedChecks,
        ]
        .into_iter()
        .find(|sc| sc.as_str() == s)
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

/// Wrong codes allowed per number before checks for it are refused for `lockout`.
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

/// Limits a send must pass, all or nothing: a refusal by one consumes none of the others.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SendGuard {
    /// No two with the same (scope, key).
    pub quotas: Vec<Quota>,
    pub pumping: Option<PumpingRule>,
}

/// Limits a check must pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckGuard {
    pub quotas: Vec<Quota>,
    pub failures: Option<FailureLimit>,
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

/// Why a request was refused by a limit, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A counter is full.
    Quota(Scope),
    /// The number is locked after too many wrong codes.
    Locked,
    /// The pumping breaker is open for the destination's country.
    Breaker,
}

impl Refusal {
    /// The stable `error` code a client sees (and the metrics' `reason` label).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::Quota(Scope::PhoneSends | Scope::PhoneDaily | Scope::IpSends) => {
                "too_many_sends"
            }
            Refusal::Quota(Scope::Global | Scope::Country) => "budget_exhausted",
            Refusal::Quota(Scope::IpChecks | Scope::PhoneFailedChecks) | Refusal::Locked => {
                "too_many_checks"
            }
            Refusal::Breaker => "destination_blocked",
        }
    }
}

/// The counter key of a client address: an IPv4 address on its own, an IPv6 address by its
/// /64 (one subscriber usually holds a whole /64, so single addresses would be free to rotate).
pub fn ip_key(ip: std::net::IpAddr) -> String {
    match crate::http::client_ip::canonical(ip) {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
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

fn pumping_rule(config: &crate::config::Config, country: &str) -> Option<PumpingRule> {
    let p = &config.pumping;
    p.enabled.then(|| PumpingRule {
        country: country.to_owned(),
        window: Duration::from_secs(p.window),
        min_sample: p.min_sample,
        min_conversion: p.min_conversion,
    })
}

impl SendGuard {
    /// The limits of a send to `phone` (calling code `country`) from `client` (browsers only).
    pub fn build(
        config: &crate::config::Config,
        phone: &str,
        country: &str,
        client: Option<std::net::IpAddr>,
    ) -> SendGuard {
        let (pp, ip, c) = (&config.per_phone, &config.per_ip, &config.countries);
        let per_country = c.limits.get(country).or_else(|| c.limits.get("*"));
        let quotas = [
            quota(Scope::PhoneSends, phone, pp.max_sends, pp.window),
            quota(Scope::PhoneDaily, phone, pp.daily_max, 86_400),
            client.and_then(|a| quota(Scope::IpSends, ip_key(a), ip.max_sends, ip.window)),
            quota(Scope::Global, "*", config.global.max_sends_per_hour, 3600),
            per_country.and_then(|&n| quota(Scope::Country, country, n, 3600)),
        ];
        SendGuard {
            quotas: quotas.into_iter().flatten().collect(),
            pumping: pumping_rule(config, country),
        }
    }
}

impl CheckGuard {
    /// The limits of a check for `phone` from `client` (browsers only).
    pub fn build(
        config: &crate::config::Config,
        country: &str,
        client: Option<std::net::IpAddr>,
    ) -> CheckGuard {
        let (pp, ip) = (&config.per_phone, &config.per_ip);
        CheckGuard {
            quotas: client
                .and_then(|a| quota(Scope::IpChecks, ip_key(a), ip.max_checks, ip.window))
                .into_iter()
                .collect(),
            failures: (pp.max_failed_checks > 0).then(|| FailureLimit {
                max: pp.max_failed_checks,
                window: Duration::from_secs(pp.failed_checks_window),
                lockout: Duration::from_secs(pp.lockout),
            }),
            pumping: pumping_rule(config, country),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn guards_follow_the_configuration() {
        let mut c = crate::config::Config::default();
        c.countries.limits.insert("*".into(), 7);
        c.countries.limits.insert("+86".into(), 9);
        c.per_ip.max_sends = 0;
        let g = SendGuard::build(
            &c,
            "+8613800138000",
            "+86",
            Some("1.2.3.4".parse().unwrap()),
        );
        let scopes: Vec<_> = g.quotas.iter().map(|q| (q.scope, q.limit)).collect();
        assert_eq!(
            scopes,
            [
                (Scope::PhoneSends, 5),
                (Scope::PhoneDaily, 10),
                (Scope::Global, 1000),
                (Scope::Country, 9)
            ]
        );
        let g = SendGuard::build(&c, "+447400123456", "+44", None);
        assert_eq!(g.quotas.last().map(|q| q.limit), Some(7));
        assert_eq!(g.pumping.map(|p| p.country), Some("+44".into()));
        let g = CheckGuard::build(&c, "+44", Some("::1".parse().unwrap()));
        assert_eq!(g.quotas[0].key, "::/64");
        assert_eq!(g.failures.map(|f| f.max), Some(10));
    }
}
