//! `[events]` and `[events.endpoints.<name>]`: where verification events are posted, which
//! ones each endpoint wants, the secret each is signed with, and how long failures are retried.

use crate::seconds::Seconds;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::EventKind;
use crate::secret::Secret;
use crate::secret_file::Slot;
use crate::standard_webhooks::{SECRET_SHAPE, key_bytes};

/// `[events]`. With no endpoints nothing is recorded and no worker runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Seconds an event is retried for, from its creation, before it is marked dead.
    pub retry_for: u64,
    /// Seconds a dead event is kept for `verifyd events redrive` before the sweeper deletes it,
    /// so that an endpoint that stays down cannot grow the outbox without bound.
    pub keep_dead: Seconds,
    /// Seconds before the first retry; each later one waits twice as long.
    #[serde(alias = "first_retry_ms")]
    pub first_retry: Seconds,
    /// Seconds the wait between two retries grows to at most.
    pub max_retry_interval: u64,
    /// Seconds one POST may take.
    #[serde(alias = "timeout_ms")]
    pub timeout: Seconds,
    /// Seconds between two looks for due events while the outbox is empty.
    #[serde(alias = "poll_interval_ms")]
    pub poll_interval: Seconds,
    pub endpoints: BTreeMap<String, EndpointConfig>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            retry_for: 86_400,
            keep_dead: Seconds::from_secs(7 * 86_400),
            first_retry: Seconds::from_secs(5),
            max_retry_interval: 3_600,
            timeout: Seconds::from_secs(10),
            poll_interval: Seconds::from_secs(1),
            endpoints: BTreeMap::new(),
        }
    }
}

/// `[events.endpoints.<name>]`. `Debug` and serialization redact the secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointConfig {
    /// Where events are POSTed, `https://` in production.
    pub url: String,
    /// `whsec_` and the base64 of the signing key, as Standard Webhooks libraries generate it.
    pub secret: Secret,
    /// A file holding the secret, read once at start-up.
    pub secret_file: Option<PathBuf>,
    /// The event types this endpoint receives; all of them when left out.
    pub events: Option<Vec<EventKind>>,
    /// Send phone numbers in full instead of masked (`+86138****8000`).
    pub full_numbers: bool,
}

impl EndpointConfig {
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&kind))
    }
}

impl EventsConfig {
    /// Each endpoint's secret with its `_file` twin (see [`crate::secret_file`]).
    pub fn secret_slots(&mut self) -> Vec<Slot<'_>> {
        self.endpoints
            .iter_mut()
            .map(|(name, e)| {
                Slot::new(
                    &format!("events.endpoints.{name}.secret"),
                    &mut e.secret,
                    &e.secret_file,
                )
            })
            .collect()
    }

    /// The offending key and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let positive = [
            ("events.retry_for", Seconds::from_secs(self.retry_for)),
            // Zero would delete an event the moment it dies, before anyone could redrive it.
            ("events.keep_dead", self.keep_dead),
            ("events.first_retry", self.first_retry),
            (
                "events.max_retry_interval",
                Seconds::from_secs(self.max_retry_interval),
            ),
            ("events.timeout", self.timeout),
            ("events.poll_interval", self.poll_interval),
        ];
        for (key, value) in positive {
            if value.is_zero() {
                return Err((key.into(), "must be positive".into()));
            }
        }
        if self.timeout > Seconds::from_secs(60) {
            return Err(("events.timeout".into(), "must be at most 60 seconds".into()));
        }
        if self.retry_for > 30 * 86_400 {
            return Err((
                "events.retry_for".into(),
                "must be at most 2592000 seconds (30 days)".into(),
            ));
        }
        for (name, e) in &self.endpoints {
            let key = |k: &str| format!("events.endpoints.{name}.{k}");
            if !crate::credentials::is_table_name(name) {
                return Err((
                    format!("events.endpoints.{name}"),
                    "endpoint names are 1 to 32 of a-z, 0-9, _ and -".into(),
                ));
            }
            match reqwest::Url::parse(&e.url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return Err((key("url"), "must be an http:// or https:// URL".into())),
            }
            if e.secret.is_empty() {
                return Err((
                    key("secret"),
                    format!("must be set (or {})", key("secret_file")),
                ));
            }
            if key_bytes(&e.secret).is_none() {
                return Err((key("secret"), SECRET_SHAPE.into()));
            }
            if e.events.as_ref().is_some_and(Vec::is_empty) {
                return Err((
                    key("events"),
                    "lists no event; leave it out to receive every event".into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> EndpointConfig {
        EndpointConfig {
            url: "https://app.example/events".into(),
            secret: Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ..EndpointConfig::default()
        }
    }

    fn with(f: impl FnOnce(&mut EventsConfig)) -> Result<(), (String, String)> {
        let mut c = EventsConfig::default();
        c.endpoints.insert("crm".into(), endpoint());
        f(&mut c);
        c.validate()
    }

    #[test]
    fn a_complete_endpoint_is_valid_and_redacted() {
        assert_eq!(with(|_| {}), Ok(()));
        let c = endpoint();
        assert!(!format!("{c:?}").contains("MfKQ9r8"));
        assert!(!toml::to_string(&c).unwrap().contains("MfKQ9r8"));
    }

    fn ep(c: &mut EventsConfig) -> &mut EndpointConfig {
        c.endpoints.get_mut("crm").unwrap()
    }

    #[test]
    fn mistakes_name_their_key() {
        let key = |f: fn(&mut EventsConfig)| with(f).unwrap_err().0;
        assert_eq!(
            key(|c| ep(c).url = "ftp://x/".into()),
            "events.endpoints.crm.url"
        );
        assert_eq!(key(|c| ep(c).url.clear()), "events.endpoints.crm.url");
        assert_eq!(
            key(|c| ep(c).secret = Secret::default()),
            "events.endpoints.crm.secret"
        );
        assert_eq!(
            key(|c| ep(c).secret = Secret::new("whsec_c2hvcnQ=")),
            "events.endpoints.crm.secret"
        );
        assert_eq!(
            key(|c| ep(c).events = Some(vec![])),
            "events.endpoints.crm.events"
        );
        assert_eq!(key(|c| c.retry_for = 0), "events.retry_for");
        assert_eq!(
            key(|c| c.keep_dead = Seconds::default()),
            "events.keep_dead"
        );
        assert_eq!(
            key(|c| c.timeout = Seconds::from_secs(120)),
            "events.timeout"
        );
        let bad_name = with(|c| {
            let e = c.endpoints.remove("crm").unwrap();
            c.endpoints.insert("CRM!".into(), e);
        });
        assert_eq!(bad_name.unwrap_err().0, "events.endpoints.CRM!");
    }

    #[test]
    fn an_endpoint_without_a_filter_wants_everything() {
        let mut e = endpoint();
        assert!(e.wants(EventKind::PumpingReset));
        e.events = Some(vec![EventKind::VerificationApproved]);
        assert!(e.wants(EventKind::VerificationApproved));
        assert!(!e.wants(EventKind::VerificationSent));
    }
}
