//! The millisecond keys of older releases (`timeout_ms = 5000`), still read so that no working
//! configuration breaks: each is converted to the seconds its successor takes (`timeout = 5`),
//! and noted so the operator is told, once, which key to write instead. Setting both the old
//! and the new key is refused, since it is not clear which one the operator meant.
//!
//! The conversion happens on the figment, before serde sees the values; each new field carries
//! `#[serde(alias = "…_ms")]` only so that the converted value is accepted under its old name.
//! A `Config` deserialized without [`super::Config::from_figment`] would therefore read an old
//! key's milliseconds as seconds.

use figment::Figment;
use figment::providers::Serialized;
use figment::value::{Dict, Value};

use super::ConfigError;
use crate::seconds::Seconds;

/// Every deprecated key as `table.pattern.old_leaf` (`*` is one provider name), with the new
/// leaf that replaces it.
const RENAMED: &[(&str, &str)] = &[
    ("store.sqlite.busy_timeout_ms", "busy_timeout"),
    ("store.postgres.acquire_timeout_ms", "acquire_timeout"),
    ("store.postgres.statement_timeout_ms", "statement_timeout"),
    ("challenge.timeout_ms", "timeout"),
    ("events.first_retry_ms", "first_retry"),
    ("events.timeout_ms", "timeout"),
    ("events.poll_interval_ms", "poll_interval"),
    ("provider.timeout_ms", "timeout"),
    ("providers.*.timeout_ms", "timeout"),
];

/// The per-kind provider tables, each under `provider` and under every `providers.<name>`.
const PROVIDER_RENAMED: &[(&str, &str, &str)] = &[
    ("aliyun", "timeout_ms", "timeout"),
    ("aliyun", "max_total_ms", "max_total"),
    ("tencent", "timeout_ms", "timeout"),
    ("tencent", "max_total_ms", "max_total"),
    ("http", "timeout_ms", "timeout"),
    ("http", "max_total_ms", "max_total"),
    ("hook", "timeout_ms", "timeout"),
    ("hook", "max_total_ms", "max_total"),
    ("sns", "timeout_ms", "timeout"),
];

/// The new leaf name when `path` is a deprecated key.
fn successor(path: &[&str]) -> Option<&'static str> {
    let matches = |pattern: &str| {
        let segments: Vec<&str> = pattern.split('.').collect();
        segments.len() == path.len() && segments.iter().zip(path).all(|(s, p)| *s == "*" || s == p)
    };
    if let Some((_, new)) = RENAMED.iter().find(|(old, _)| matches(old)) {
        return Some(new);
    }
    let (table, leaf) = match path {
        ["provider", table, leaf] | ["providers", _, table, leaf] => (*table, *leaf),
        _ => return None,
    };
    PROVIDER_RENAMED
        .iter()
        .find(|(t, old, _)| *t == table && *old == leaf)
        .map(|(_, _, new)| *new)
}

/// The deprecated key that stands for `key` (`provider.timeout` → `provider.timeout_ms`),
/// when `fig` sets it; for naming where a value came from.
pub(super) fn predecessor(fig: &Figment, key: &str) -> Option<String> {
    let (table, leaf) = key.rsplit_once('.')?;
    let old = format!("{table}.{leaf}_ms");
    let path: Vec<&str> = old.split('.').collect();
    (successor(&path) == Some(leaf) && fig.contains(&old)).then_some(old)
}

/// `fig` with every deprecated key's value turned into seconds, and one note per such key for
/// the operator. The serde field behind each new key also answers to its old name.
pub(super) fn convert(fig: &Figment) -> Result<(Figment, Vec<String>), ConfigError> {
    let data: Dict = fig
        .extract()
        .map_err(|e| super::sources::describe(fig, e))?;
    let mut found = Vec::new();
    collect(&mut Vec::new(), &data, &mut found);
    let mut converted = fig.clone();
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    for (path, value) in found {
        let old = path.join(".");
        let new_leaf = successor(&path.iter().map(String::as_str).collect::<Vec<_>>())
            .expect("collect keeps deprecated keys only");
        let new = format!("{}.{new_leaf}", path[..path.len() - 1].join("."));
        let old_source = super::explain::source_of(fig, &path);
        if fig.contains(&new) {
            let new_path: Vec<String> = new.split('.').map(str::to_owned).collect();
            problems.push(format!(
                "both `{old}` (from {old_source}) and `{new}` (from {}) are set; keep only `{new}`, in seconds",
                super::explain::source_of(fig, &new_path)
            ));
            continue;
        }
        let secs = match milliseconds(&value) {
            Ok(s) => s,
            Err(msg) => {
                problems.push(format!(
                    "invalid value for key `{old}` (from {old_source}): {msg}"
                ));
                continue;
            }
        };
        notes.push(format!(
            "`{old}` (from {old_source}) is deprecated: write `{new} = {secs}` (seconds) instead"
        ));
        converted = converted.merge(Serialized::default(&old, secs));
    }
    if problems.is_empty() {
        Ok((converted, notes))
    } else {
        Err(ConfigError(problems.join("\n")))
    }
}

/// A deprecated key's value: whole milliseconds, as the old key always took them.
fn milliseconds(value: &Value) -> Result<Seconds, String> {
    // TOML integers arrive signed, environment values unsigned.
    let ms = match value {
        Value::Num(_, n) => n
            .to_u128()
            .or(n.to_i128().and_then(|i| u128::try_from(i).ok())),
        _ => None,
    };
    let ms = ms.ok_or("expected a whole, non-negative number of milliseconds")?;
    Seconds::parse(ms as f64 / 1000.0)
}

fn collect(path: &mut Vec<String>, dict: &Dict, out: &mut Vec<(Vec<String>, Value)>) {
    for (key, value) in dict {
        path.push(key.clone());
        if let Value::Dict(_, inner) = value {
            collect(path, inner, out);
        } else if successor(&path.iter().map(String::as_str).collect::<Vec<_>>()).is_some() {
            out.push((path.clone(), value.clone()));
        }
        path.pop();
    }
}

#[cfg(test)]
// figment's `Jail` closures return its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use crate::config::Config;
    use figment::Jail;
    use std::path::Path;

    fn load(jail_setup: impl FnOnce(&mut Jail) -> figment::Result<()>) -> Result<Config, String> {
        let mut out = None;
        Jail::expect_with(|jail| {
            jail_setup(jail)?;
            out = Some(Config::load(Some(Path::new("c.toml")), false).map_err(|e| e.to_string()));
            Ok(())
        });
        out.expect("the jail ran")
    }

    fn file(text: &'static str) -> impl FnOnce(&mut Jail) -> figment::Result<()> {
        move |jail| jail.create_file("c.toml", text).map(drop)
    }

    #[test]
    fn old_keys_still_work_and_each_says_what_to_write_instead() {
        let c = load(|jail| {
            jail.create_file(
                "c.toml",
                "[store.sqlite]\nbusy_timeout_ms = 250\n\
                 [providers.cn]\nkind = \"mock\"\ntimeout_ms = 3000\n[routes]\n\"*\" = [\"cn\"]\n",
            )?;
            jail.set_env("VERIFYD_EVENTS__POLL_INTERVAL_MS", "1500");
            Ok(())
        })
        .unwrap();
        assert_eq!(c.store.sqlite.busy_timeout, Seconds::from_millis(250));
        assert_eq!(c.providers["cn"].timeout, Seconds::from_secs(3));
        assert_eq!(c.events.poll_interval, Seconds::from_millis(1500));
        let notes = c.deprecations.join("\n");
        assert_eq!(c.deprecations.len(), 3, "{notes}");
        for expected in [
            "`store.sqlite.busy_timeout_ms` (from file c.toml) is deprecated: write `store.sqlite.busy_timeout = 0.25`",
            "`providers.cn.timeout_ms` (from file c.toml) is deprecated: write `providers.cn.timeout = 3`",
            "`events.poll_interval_ms` (from environment VERIFYD_EVENTS__POLL_INTERVAL_MS) is deprecated: write `events.poll_interval = 1.5`",
        ] {
            assert!(notes.contains(expected), "{expected} not in:\n{notes}");
        }
    }

    #[test]
    fn new_keys_take_seconds_and_fractions_without_a_note() {
        let c = load(|jail| {
            jail.create_file(
                "c.toml",
                "[store.sqlite]\nbusy_timeout = 0.25\n[provider.aliyun]\nmax_total = 7\n",
            )?;
            jail.set_env("VERIFYD_EVENTS__POLL_INTERVAL", "2");
            jail.set_env("VERIFYD_CHALLENGE__TIMEOUT", "0.5");
            Ok(())
        })
        .unwrap();
        assert_eq!(c.store.sqlite.busy_timeout, Seconds::from_millis(250));
        assert_eq!(c.provider.aliyun.max_total, Seconds::from_secs(7));
        assert_eq!(c.events.poll_interval, Seconds::from_secs(2));
        assert_eq!(c.challenge.timeout, Seconds::from_millis(500));
        assert!(c.deprecations.is_empty(), "{:?}", c.deprecations);
    }

    #[test]
    fn old_and_new_key_together_are_refused_naming_both() {
        let err = load(file(
            "[store.postgres]\nstatement_timeout_ms = 5000\nstatement_timeout = 5\n",
        ))
        .unwrap_err();
        assert!(
            err.contains("both `store.postgres.statement_timeout_ms` (from file c.toml) and `store.postgres.statement_timeout` (from file c.toml)"),
            "{err}"
        );
        let err = load(|jail| {
            jail.create_file("c.toml", "[provider.http]\nmax_total_ms = 9000\n")?;
            jail.set_env("VERIFYD_PROVIDER__HTTP__MAX_TOTAL", "9");
            Ok(())
        })
        .unwrap_err();
        assert!(
            err.contains("`provider.http.max_total_ms` (from file c.toml)"),
            "{err}"
        );
        assert!(
            err.contains(
                "`provider.http.max_total` (from environment VERIFYD_PROVIDER__HTTP__MAX_TOTAL)"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key_as_written_and_its_source() {
        for (text, key) in [
            (
                "[events]\ntimeout_ms = -5\n",
                "value for key `events.timeout_ms`",
            ),
            (
                "[events]\ntimeout_ms = 1.5\n",
                "value for key `events.timeout_ms`",
            ),
            (
                "[events]\ntimeout_ms = \"soon\"\n",
                "value for key `events.timeout_ms`",
            ),
            (
                "[events]\ntimeout = \"soon\"\n",
                "value for key `events.timeout`",
            ),
            ("[events]\ntimeout = -1\n", "value for key `events.timeout`"),
            (
                "[events]\ntimeout = 1e12\n",
                "value for key `events.timeout`",
            ),
            ("[events]\ntimeout = 61\n", "value for key `events.timeout`"),
            // A range check after conversion still points at the line the operator wrote.
            (
                "[events]\ntimeout_ms = 120000\n",
                "written as `events.timeout_ms`",
            ),
            // Only the listed tables had millisecond keys; elsewhere `_ms` stays unknown.
            ("[http]\ntimeout_ms = 5\n", "unknown key `http.timeout_ms`"),
        ] {
            let err = load(file(text)).unwrap_err();
            assert!(err.contains(key) && err.contains("c.toml"), "{text}: {err}");
        }
    }

    #[test]
    fn explain_shows_the_new_key_and_where_its_old_name_was_set() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[challenge]\ntimeout_ms = 700\n")?;
            let fig =
                Config::figment(Some(Path::new("c.toml")), true).map_err(|e| e.to_string())?;
            let config = Config::from_figment(fig.clone()).map_err(|e| e.to_string())?;
            let text = crate::config::explain(&fig, &config);
            assert!(
                text.contains(
                    "challenge.timeout = 0.7  # file c.toml as deprecated `challenge.timeout_ms`"
                ),
                "{text}"
            );
            assert!(!text.contains("timeout_ms ="), "{text}");
            Ok(())
        });
    }

    #[test]
    fn only_the_listed_keys_are_deprecated() {
        assert_eq!(successor(&["provider", "timeout_ms"]), Some("timeout"));
        assert_eq!(
            successor(&["providers", "cn", "aliyun", "max_total_ms"]),
            Some("max_total")
        );
        assert_eq!(
            successor(&["store", "postgres", "statement_timeout_ms"]),
            Some("statement_timeout")
        );
        assert_eq!(successor(&["http", "timeout_ms"]), None);
        assert_eq!(successor(&["provider", "mock", "timeout_ms"]), None);
        assert_eq!(successor(&["events", "endpoints", "timeout_ms"]), None);
    }
}
