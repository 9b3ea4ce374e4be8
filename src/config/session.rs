//! `[session]`: the session cookie and how long a session lives.

use serde::{Deserialize, Serialize};

use crate::session::SessionPolicy;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub cookie_path: String,
    /// Send the cookie with `Secure`; turn off only for plain-HTTP development.
    pub cookie_secure: bool,
    /// Name the cookie `__Host-<cookie_name>`: browsers then accept it only with `Secure`,
    /// `Path=/` and no `Domain`, so no sibling subdomain can set or shadow it.
    pub cookie_host_prefix: bool,
    /// Seconds of inactivity before a session expires (Django's `SESSION_COOKIE_AGE`).
    pub default_age: u32,
    /// Absolute cap in seconds since creation; 0 means no cap.
    pub max_lifetime: u32,
    /// A read slides the expiry at most once per this many seconds.
    pub refresh_interval: u32,
    /// Most bytes one session's data may take as compact JSON; writes beyond it are 413.
    pub max_data_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            cookie_name: "sessionid".into(),
            cookie_domain: None,
            cookie_path: "/".into(),
            cookie_secure: true,
            cookie_host_prefix: false,
            default_age: 1_209_600,
            max_lifetime: 0,
            refresh_interval: 60,
            max_data_bytes: 64 * 1024,
        }
    }
}

impl SessionConfig {
    /// The cookie's name as browsers see it, with the `__Host-` prefix when it is on.
    pub fn full_cookie_name(&self) -> String {
        if self.cookie_host_prefix {
            format!("__Host-{}", self.cookie_name)
        } else {
            self.cookie_name.clone()
        }
    }

    pub fn policy(&self) -> SessionPolicy {
        SessionPolicy {
            default_age: self.default_age,
            max_lifetime: (self.max_lifetime > 0).then_some(self.max_lifetime),
            refresh_interval: self.refresh_interval,
            max_data_bytes: self.max_data_bytes,
        }
    }

    /// The cookie's attributes and the session's sizes; returns the key at fault and why.
    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let s = self;
        if s.cookie_name.is_empty()
            || !s
                .cookie_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err((
                "session.cookie_name",
                "must be letters, digits, '_' or '-'".into(),
            ));
        }
        let lower = s.cookie_name.to_ascii_lowercase();
        if lower.starts_with("__host-") {
            return Err((
                "session.cookie_name",
                "give the name without \"__Host-\" and set session.cookie_host_prefix = true"
                    .into(),
            ));
        }
        if lower.starts_with("__secure-") && !s.cookie_secure {
            return Err((
                "session.cookie_name",
                "a \"__Secure-\" name needs session.cookie_secure = true".into(),
            ));
        }
        if s.cookie_host_prefix
            && (!s.cookie_secure || s.cookie_path != "/" || s.cookie_domain.is_some())
        {
            return Err((
                "session.cookie_host_prefix",
                "a \"__Host-\" cookie needs session.cookie_secure = true, \
                 session.cookie_path = \"/\" and no session.cookie_domain"
                    .into(),
            ));
        }
        if !s.cookie_path.starts_with('/') || s.cookie_path.contains([';', ' ']) {
            return Err((
                "session.cookie_path",
                "must start with '/' and hold no ';' or spaces".into(),
            ));
        }
        if let Some(d) = &s.cookie_domain {
            if d.is_empty() || d.contains([';', ' ', '/']) {
                return Err(("session.cookie_domain", "must be a host name".into()));
            }
        }
        if s.default_age == 0 || s.default_age > i32::MAX as u32 {
            return Err((
                "session.default_age",
                "must be between 1 and 2147483647".into(),
            ));
        }
        if s.max_lifetime > i32::MAX as u32 {
            return Err(("session.max_lifetime", "must be at most 2147483647".into()));
        }
        // Room for verifyd's own `verified_phone` entry, and no more than a jsonb row holds well.
        if !(256..=16 * 1024 * 1024).contains(&s.max_data_bytes) {
            return Err((
                "session.max_data_bytes",
                "must be between 256 and 16777216".into(),
            ));
        }
        Ok(())
    }
}
