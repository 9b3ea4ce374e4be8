//! The millisecond keys of older releases (`timeout_ms = 5000`), still read so that no working
//! configuration breaks: each is converted to the seconds its successor takes (`timeout = 5`),
//! and noted so the operator is told, once, which key to write instead. Setting both the old
//! and the new key is refused, since it is not clear which one the operator meant.

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
    let ms = match value {
        Value::Num(_, n) => n.to_u128(),
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
mod tests {
    use super::*;

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
