//! Where a setting came from: the environment layer, and figment's errors turned into one line
//! per problem naming the key and the file, credential or variable that set it.

use figment::providers::Env;
use figment::{Figment, Metadata};

use super::ConfigError;

/// `VERIFYD_SECTION__KEY=value`; variables without `__` (such as `VERIFYD_CONFIG`) are not keys.
pub(super) fn env_provider() -> Env {
    Env::prefixed("VERIFYD_")
        .filter(|k| k.as_str().contains("__"))
        .split("__")
}

/// The variable `env_provider` reads `keys` from: `VERIFYD_HTTP__LISTEN` for `http.listen`.
pub(super) fn env_var(keys: &[String]) -> String {
    format!("VERIFYD_{}", keys.join("__").to_ascii_uppercase())
}

/// Where the value at `path` came from: for the environment the variable itself, the longest
/// prefix of `path` that names one that is set (`countries.allow.1` was set by
/// `VERIFYD_COUNTRIES__ALLOW`); otherwise the layer's name.
fn origin(md: &Metadata, path: &[String]) -> String {
    if md.source.is_none() && md.name.contains("environment") {
        let set = (1..=path.len())
            .rev()
            .map(|n| env_var(&path[..n]))
            .find(|var| std::env::var_os(var).is_some());
        if let Some(var) = set {
            return format!("environment {var}");
        }
    }
    source_name(md)
}

pub(super) fn source_name(md: &Metadata) -> String {
    match &md.source {
        Some(figment::Source::File(p)) => format!("{} {}", md.name, p.display()),
        Some(src) => format!("{} ({src})", md.name),
        None => md.name.to_string(),
    }
}

/// `path` as TOML writes it: segments that are not bare keys (`+86`, `*`) in quotes, so that
/// `routes."+86"` names the key the way the file spells it.
fn toml_path(path: &[String]) -> String {
    let bare = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    let segments: Vec<String> = path
        .iter()
        .map(|s| if bare(s) { s.clone() } else { format!("{s:?}") })
        .collect();
    segments.join(".")
}

/// Turns figment's errors into one message per problem, each naming key and source.
pub(super) fn describe(fig: &Figment, err: figment::Error) -> ConfigError {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .or_else(|| fig.find_metadata(&key))
                .map(|md| origin(md, &e.path))
                .unwrap_or_else(|| "the defaults".into());
            let what = match &e.kind {
                figment::error::Kind::UnknownField(field, _) => {
                    // figment's path sometimes already ends with the field, sometimes not.
                    let full = if key.is_empty() {
                        field.clone()
                    } else if key == *field || key.ends_with(&format!(".{field}")) {
                        key.clone()
                    } else {
                        format!("{key}.{field}")
                    };
                    return format!("unknown key `{full}` in {source}");
                }
                kind => kind.to_string(),
            };
            if key.is_empty() {
                format!("{what} (in {source})")
            } else {
                let key = toml_path(&e.path);
                format!("invalid value for key `{key}` (from {source}): {what}")
            }
        })
        .collect();
    ConfigError(lines.join("\n"))
}

/// A value serde accepted but a later check refused, reported with the source of the nearest
/// key figment knows (`routes."+86"` is found as `routes`).
pub(super) fn invalid(fig: &Figment, key: &str, msg: String) -> ConfigError {
    // A value set under its deprecated name is blamed on that name, where the operator wrote it.
    let old = super::renamed::predecessor(fig, key);
    let mut probe = old.as_deref().unwrap_or(key);
    let mut source = loop {
        if let Some(md) = fig.find_metadata(probe) {
            let path: Vec<String> = probe.split('.').map(str::to_owned).collect();
            break origin(md, &path);
        }
        match probe.rfind('.') {
            Some(i) => probe = &probe[..i],
            None => break "the defaults".into(),
        }
    };
    if let Some(old) = old {
        source = format!("{source}, written as `{old}`");
    }
    ConfigError(format!(
        "invalid value for key `{key}` (from {source}): {msg}"
    ))
}
