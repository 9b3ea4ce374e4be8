//! The provider settings: `[provider]` (one instance) or `[providers.<name>]` with `[routes]`
//! (several, routed by destination), each kind's own table living with its provider.

use crate::seconds::Seconds;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::aliyun::AliyunConfig;
use super::breaker::BreakerConfig;
use super::hook::HookConfig;
use super::http::HttpConfig as HttpProviderConfig;
use super::sns::SnsConfig;
use super::tencent::TencentConfig;
use crate::delivery::receipts::{Auth, Format};

/// Default cap on one send through one provider, its own retries included.
pub const DEFAULT_TIMEOUT: Seconds = Seconds::from_secs(10);

fn default_timeout() -> Seconds {
    DEFAULT_TIMEOUT
}

/// `[providers.<name>]`: one provider instance. `kind` is required; the table of that kind
/// (`[providers.<name>.aliyun]`, `.sns`, `.mock`) holds its settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedProvider {
    pub kind: ProviderKind,
    /// Seconds one send through this provider may take before the router moves on.
    #[serde(default = "default_timeout", alias = "timeout_ms")]
    pub timeout: Seconds,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aliyun: Option<AliyunConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<SnsConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tencent: Option<TencentConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProviderConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<HookConfig>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Mock,
    Aliyun,
    Sns,
    Tencent,
    Http,
    Hook,
}

impl ProviderKind {
    /// The kind as written in the configuration, which is also the single `[provider]`'s name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Mock => "mock",
            ProviderKind::Aliyun => "aliyun",
            ProviderKind::Sns => "sns",
            ProviderKind::Tencent => "tencent",
            ProviderKind::Http => "http",
            ProviderKind::Hook => "hook",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Seconds one send may take, the provider's own retries included.
    #[serde(alias = "timeout_ms")]
    pub timeout: Seconds,
    pub breaker: BreakerConfig,
    pub mock: MockConfig,
    pub aliyun: AliyunConfig,
    pub sns: SnsConfig,
    pub tencent: TencentConfig,
    pub http: HttpProviderConfig,
    pub hook: HookConfig,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Mock,
            timeout: DEFAULT_TIMEOUT,
            breaker: BreakerConfig::default(),
            mock: MockConfig::default(),
            aliyun: AliyunConfig::default(),
            sns: SnsConfig::default(),
            tencent: TencentConfig::default(),
            http: HttpProviderConfig::default(),
            hook: HookConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Also append each message as a JSON line to this file.
    pub outbox: Option<PathBuf>,
    /// Do not print messages on stdout (the outbox still gets them).
    pub quiet: bool,
}

/// The provider part of the configuration, borrowed: what the router is built from and what
/// decides which instance may push receipts.
#[derive(Debug, Clone, Copy)]
pub struct ProviderSet<'a> {
    /// `[provider]`, used when `named` is empty.
    pub single: &'a ProviderConfig,
    /// `[providers.<name>]`.
    pub named: &'a BTreeMap<String, NamedProvider>,
    /// `[routes]`: E.164 prefix (or `*`) → provider names, tried in order.
    pub routes: &'a BTreeMap<super::routing::RouteKey, Vec<String>>,
}

impl<'a> ProviderSet<'a> {
    /// The receipt endpoint of instance `name`, if it has one: its push format and how pushes
    /// authenticate. The single `[provider]` is named after its kind.
    pub fn receipt_source(&self, name: &str) -> Option<(Format, Auth<'a>)> {
        let (kind, aliyun, tencent, http) = if self.named.is_empty() {
            let p = self.single;
            if name != p.kind.as_str() {
                return None;
            }
            (p.kind, Some(&p.aliyun), Some(&p.tencent), Some(&p.http))
        } else {
            let p = self.named.get(name)?;
            (
                p.kind,
                p.aliyun.as_ref(),
                p.tencent.as_ref(),
                p.http.as_ref(),
            )
        };
        let (format, token) = match kind {
            ProviderKind::Aliyun => (Format::Aliyun, &aliyun?.receipt_token),
            ProviderKind::Tencent => (Format::Tencent, &tencent?.receipt_token),
            ProviderKind::Http => {
                let h = http?;
                let url = h.twilio_status_callback.as_deref()?;
                return (!h.secret.is_empty()).then_some((
                    Format::Twilio,
                    Auth::Twilio {
                        url,
                        auth_token: &h.secret,
                    },
                ));
            }
            _ => return None,
        };
        // No token configured: no endpoint (an empty token must never match an empty segment).
        (!token.is_empty()).then_some((format, Auth::Token(token)))
    }
}
