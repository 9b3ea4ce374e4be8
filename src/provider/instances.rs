//! From configuration to a [`Router`]: either the single `[provider]` (one instance named after
//! its kind, routed for every number) or named `[providers.<name>]` tables with `[routes]`.
//! Both shapes are checked here at start-up, naming the offending key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::seconds::Seconds;

use super::Provider;
use super::aliyun::{AliyunConfig, AliyunProvider};
use super::breaker::BreakerConfig;
use super::config::{MockConfig, ProviderKind, ProviderSet};
use super::hook::{HookConfig, HookProvider};
use super::http::{HttpConfig, HttpProvider};
use super::metered::Metered;
use super::mock::MockProvider;
use super::routing::{Instance, RouteKey, Router};
use super::sns::SnsConfig;
#[cfg(feature = "sns")]
use super::sns::SnsProvider;
use super::tencent::{TencentConfig, TencentProvider};
use crate::metrics::Metrics;

/// One instance as configured, whichever shape it came from.
struct Spec<'a> {
    name: String,
    /// The config table, e.g. `provider` or `providers.cn`, for error messages.
    table: String,
    kind: ProviderKind,
    timeout: Seconds,
    breaker: BreakerConfig,
    mock: Option<&'a MockConfig>,
    aliyun: Option<&'a AliyunConfig>,
    sns: Option<&'a SnsConfig>,
    tencent: Option<&'a TencentConfig>,
    http: Option<&'a HttpConfig>,
    hook: Option<&'a HookConfig>,
}

/// The instances and routes the configuration describes.
fn specs<'a>(set: ProviderSet<'a>) -> (Vec<Spec<'a>>, Vec<(RouteKey, Vec<String>)>) {
    if set.named.is_empty() {
        let p = set.single;
        let name = p.kind.as_str().to_owned();
        let spec = Spec {
            name: name.clone(),
            table: "provider".into(),
            kind: p.kind,
            timeout: p.timeout,
            breaker: p.breaker,
            mock: Some(&p.mock),
            aliyun: Some(&p.aliyun),
            sns: Some(&p.sns),
            tencent: Some(&p.tencent),
            http: Some(&p.http),
            hook: Some(&p.hook),
        };
        return (vec![spec], vec![(RouteKey::Default, vec![name])]);
    }
    let specs = set
        .named
        .iter()
        .map(|(name, p)| Spec {
            name: name.clone(),
            table: format!("providers.{name}"),
            kind: p.kind,
            timeout: p.timeout,
            breaker: p.breaker,
            mock: p.mock.as_ref(),
            aliyun: p.aliyun.as_ref(),
            sns: p.sns.as_ref(),
            tencent: p.tencent.as_ref(),
            http: p.http.as_ref(),
            hook: p.hook.as_ref(),
        })
        .collect();
    let routes = set
        .routes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (specs, routes)
}

/// Checks providers and routes: names, kinds and their tables, each kind's own settings, route
/// keys and lists, and that a route's providers can all be tried within `http.request_timeout`.
pub fn validate(set: ProviderSet<'_>, request_timeout_secs: u64) -> Result<(), (String, String)> {
    let named = !set.named.is_empty();
    if !named && !set.routes.is_empty() {
        return Err((
            "routes".into(),
            "routes need named providers ([providers.<name>] tables)".into(),
        ));
    }
    let (specs, routes) = specs(set);
    for s in &specs {
        validate_spec(s, named)?;
    }
    if named {
        validate_routes(set.routes, &specs)?;
    }
    let budget = Duration::from_secs(request_timeout_secs);
    for (route, names) in &routes {
        let route = route.to_string();
        let total: Duration = names
            .iter()
            .filter_map(|n| specs.iter().find(|s| &s.name == n))
            .map(|s| s.timeout.duration())
            .sum();
        if total >= budget {
            let key = if named { "routes" } else { "provider.timeout" };
            return Err((
                key.into(),
                format!(
                    "the timeouts of route {route:?} add up to {} s, not below http.request_timeout ({request_timeout_secs} s): failover could not finish",
                    total.as_secs_f64()
                ),
            ));
        }
    }
    Ok(())
}

fn validate_spec(s: &Spec<'_>, named: bool) -> Result<(), (String, String)> {
    let t = &s.table;
    if named {
        if !crate::credentials::is_table_name(&s.name) {
            return Err((
                t.clone(),
                "provider names are 1 to 32 of a-z, 0-9, '_' and '-'".into(),
            ));
        }
        let tables = [
            (ProviderKind::Mock, s.mock.is_some()),
            (ProviderKind::Aliyun, s.aliyun.is_some()),
            (ProviderKind::Sns, s.sns.is_some()),
            (ProviderKind::Tencent, s.tencent.is_some()),
            (ProviderKind::Http, s.http.is_some()),
            (ProviderKind::Hook, s.hook.is_some()),
        ];
        for (kind, present) in tables {
            let name = kind.as_str();
            if present && kind != s.kind {
                return Err((
                    format!("{t}.{name}"),
                    format!("this provider is kind = {:?}", s.kind.as_str()),
                ));
            }
            if !present && kind == s.kind && kind != ProviderKind::Mock {
                return Err((
                    format!("{t}.{name}"),
                    format!("a [{t}.{name}] table is required for kind = {name:?}"),
                ));
            }
        }
    }
    if s.timeout.is_zero() {
        return Err((format!("{t}.timeout"), "must be positive".into()));
    }
    if s.breaker.failures > 0 && s.breaker.cooldown == 0 {
        return Err((
            format!("{t}.breaker.cooldown"),
            "must be positive (or set breaker.failures = 0 to disable the breaker)".into(),
        ));
    }
    match s.kind {
        ProviderKind::Mock => {}
        ProviderKind::Aliyun => {
            let a = s.aliyun.ok_or_else(|| (t.clone(), "missing".to_owned()))?;
            // In the single-provider form `Config::validate` checks `[provider.aliyun]` itself.
            if named {
                // Its keys and messages name the single-provider table; point them at this one.
                let here = |text: &str| {
                    text.replace("provider.aliyun", &format!("{t}.aliyun"))
                        .replace("provider.kind", &format!("{t}.kind"))
                };
                a.validate().map_err(|(key, msg)| (here(key), here(&msg)))?;
            }
            within_timeout(t, "aliyun", a.max_total, s.timeout)?;
        }
        ProviderKind::Sns => {
            if !cfg!(feature = "sns") {
                return Err((
                    format!("{t}.kind"),
                    "\"sns\" needs the AWS SDK, which this build of verifyd leaves out (cargo \
                     feature `sns`)"
                        .into(),
                ));
            }
            let c = s.sns.ok_or_else(|| (t.clone(), "missing".to_owned()))?;
            c.validate(&format!("{t}.sns"))?;
        }
        ProviderKind::Tencent => {
            let c = s.tencent.ok_or_else(|| (t.clone(), "missing".to_owned()))?;
            c.validate(&format!("{t}.tencent"))?;
            within_timeout(t, "tencent", c.max_total, s.timeout)?;
        }
        ProviderKind::Http => {
            let c = s.http.ok_or_else(|| (t.clone(), "missing".to_owned()))?;
            c.validate(&format!("{t}.http"))?;
            if let Some(url) = &c.twilio_status_callback {
                crate::delivery::twilio::check_config(url, &s.name, c.secret.is_empty())
                    .map_err(|e| (format!("{t}.http.twilio_status_callback"), e))?;
            }
            within_timeout(t, "http", c.max_total, s.timeout)?;
        }
        ProviderKind::Hook => {
            let c = s.hook.ok_or_else(|| (t.clone(), "missing".to_owned()))?;
            c.validate(&format!("{t}.hook"))?;
            within_timeout(t, "hook", c.max_total, s.timeout)?;
        }
    }
    Ok(())
}

/// A provider's own retry budget must end before the router gives up on it, or retries are
/// cut off mid-attempt.
fn within_timeout(
    t: &str,
    kind: &str,
    max_total: Seconds,
    timeout: Seconds,
) -> Result<(), (String, String)> {
    if max_total > timeout {
        return Err((
            format!("{t}.{kind}.max_total"),
            format!("must be at most {t}.timeout ({timeout} s)"),
        ));
    }
    Ok(())
}

fn validate_routes(
    routes: &BTreeMap<RouteKey, Vec<String>>,
    specs: &[Spec<'_>],
) -> Result<(), (String, String)> {
    if !routes.contains_key(&RouteKey::Default) {
        return Err((
            "routes".into(),
            "a \"*\" route is required: it serves every number no other route matches".into(),
        ));
    }
    for (route, names) in routes {
        let key = format!("routes.{:?}", route.to_string());
        if names.is_empty() {
            return Err((key, "must list at least one provider".into()));
        }
        for (i, name) in names.iter().enumerate() {
            if !specs.iter().any(|s| &s.name == name) {
                return Err((
                    key,
                    format!("provider {name:?} is not configured (no [providers.{name}] table)"),
                ));
            }
            if names[..i].contains(name) {
                return Err((key, format!("provider {name:?} is listed twice")));
            }
        }
    }
    Ok(())
}

/// Why the providers could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(String);

/// Builds every provider instance and the router over them.
pub async fn build(set: ProviderSet<'_>, metrics: &Arc<Metrics>) -> Result<Router, BuildError> {
    let (specs, routes) = specs(set);
    let mut instances = Vec::new();
    for s in specs {
        let missing = || {
            BuildError(format!(
                "{}: no [{}.{}] table",
                s.table,
                s.table,
                s.kind.as_str()
            ))
        };
        let provider: Arc<dyn Provider> = match s.kind {
            ProviderKind::Mock => {
                let default = MockConfig::default();
                let m = s.mock.unwrap_or(&default);
                Arc::new(
                    MockProvider::new(m.outbox.as_ref(), m.quiet)
                        .map_err(|e| BuildError(format!("{}.mock.outbox: {e}", s.table)))?,
                )
            }
            ProviderKind::Aliyun => Arc::new(
                AliyunProvider::new(s.aliyun.ok_or_else(missing)?)
                    .map_err(|e| BuildError(format!("{}: {e}", s.table)))?,
            ),
            ProviderKind::Tencent => Arc::new(
                TencentProvider::new(s.tencent.ok_or_else(missing)?)
                    .map_err(|e| BuildError(format!("{}.tencent.{e}", s.table)))?,
            ),
            #[cfg(feature = "sns")]
            ProviderKind::Sns => Arc::new(
                SnsProvider::new(s.sns.ok_or_else(missing)?, &format!("{}.sns", s.table))
                    .await
                    .map_err(|e| BuildError(e.to_string()))?,
            ),
            // Refused by `validate` already.
            #[cfg(not(feature = "sns"))]
            ProviderKind::Sns => {
                return Err(BuildError(format!(
                    "{}.kind: \"sns\" is not built in",
                    s.table
                )));
            }
            ProviderKind::Http => Arc::new(
                HttpProvider::new(s.http.ok_or_else(missing)?, &format!("{}.http", s.table))
                    .map_err(|e| BuildError(e.to_string()))?,
            ),
            ProviderKind::Hook => Arc::new(
                HookProvider::new(s.hook.ok_or_else(missing)?, &format!("{}.hook", s.table))
                    .map_err(|e| BuildError(e.to_string()))?,
            ),
        };
        // Counted and timed per instance, whichever route picks it.
        let provider = Arc::new(Metered::new(s.name.clone(), provider, metrics.clone()));
        instances.push(Instance {
            name: s.name,
            provider,
            timeout: s.timeout.duration(),
            breaker: s.breaker,
        });
    }
    Router::new(instances, &routes).map_err(|e| BuildError(e.to_string()))
}
