//! `verifyd check-config --explain`: every effective setting with where it came from — the
//! default, a file, a systemd credential or an environment variable — so that an operator can
//! see why a value is what it is. Secrets print as `<redacted>`.

use figment::Figment;
use std::fmt::Write;
use toml::Value;

use super::Config;

/// One line per setting: `key = value  # source`, in the order of the configuration's sections.
pub fn explain(fig: &Figment, config: &Config) -> String {
    // Secrets serialize redacted, so the table never holds one.
    let table = Value::try_from(config).expect("the configuration serializes to TOML");
    let mut settings = Vec::new();
    flatten(&mut Vec::new(), &table, &mut settings);
    let mut out = String::new();
    for (path, value) in settings {
        let key = path
            .iter()
            .map(|k| display_key(k))
            .collect::<Vec<_>>()
            .join(".");
        let _ = writeln!(out, "{key} = {value}  # {}", source_of(fig, &path));
    }
    out
}

/// Leaf settings as (key path, value in TOML); arrays are one setting, tables are walked.
fn flatten(path: &mut Vec<String>, value: &Value, out: &mut Vec<(Vec<String>, String)>) {
    match value {
        Value::Table(t) if !t.is_empty() || path.is_empty() => {
            for (k, v) in t {
                path.push(k.clone());
                flatten(path, v, out);
                path.pop();
            }
        }
        Value::Table(_) => out.push((path.clone(), "{}".into())),
        other => out.push((path.clone(), other.to_string())),
    }
}

/// A key as TOML writes it: bare when it can be, quoted otherwise (`routes."+86"`).
fn display_key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { k.to_owned() } else { format!("{k:?}") }
}

/// The provider that set `path`, named for an operator. Only the key itself counts: a table
/// that some other layer touched says nothing about the keys it left alone.
pub(super) fn source_of(fig: &Figment, path: &[String]) -> String {
    let key = path.join(".");
    let Some(md) = fig.find_metadata(&key) else {
        if let Some(old) = super::renamed::predecessor(fig, &key) {
            let old_path: Vec<String> = old.split('.').map(str::to_owned).collect();
            return format!("{} as deprecated `{old}`", source_of(fig, &old_path));
        }
        // A secret read from its `_file` twin is in no layer itself.
        if fig.contains(&format!("{key}_file")) {
            return format!("the file named by {key}_file");
        }
        return "default".into();
    };
    match &md.source {
        None if md.name.contains("environment") => {
            format!("environment {}", super::sources::env_var(path))
        }
        Some(figment::Source::File(p)) if md.name.contains("credential") => {
            format!("credential {}", p.display())
        }
        Some(figment::Source::File(p)) => format!("file {}", p.display()),
        _ => super::sources::source_name(md),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;
    use std::path::Path;

    #[test]
    fn each_value_names_its_source_and_secrets_stay_hidden() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[session]\ndefault_age = 10\n[verification]\nsecret = \"s3cr3t-value\"\n\
                 [countries]\nlimits = { \"+86\" = 5 }\n",
            )?;
            jail.set_env("VERIFYD_HTTP__MAX_BODY_BYTES", "2048");
            let fig =
                Config::figment(Some(Path::new("c.toml")), true).map_err(|e| e.to_string())?;
            let config = Config::from_figment(fig.clone()).map_err(|e| e.to_string())?;
            let text = explain(&fig, &config);
            let line = |key: &str| {
                text.lines()
                    .find(|l| l.starts_with(&format!("{key} = ")))
                    .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
                    .to_owned()
            };
            assert!(line("session.default_age").ends_with("= 10  # file c.toml"));
            assert_eq!(
                line("http.max_body_bytes"),
                "http.max_body_bytes = 2048  # environment VERIFYD_HTTP__MAX_BODY_BYTES"
            );
            assert_eq!(
                line("http.request_timeout"),
                "http.request_timeout = 30  # default"
            );
            assert_eq!(
                line("countries.limits.\"+86\""),
                "countries.limits.\"+86\" = 5  # file c.toml"
            );
            assert!(line("verification.secret").contains("<redacted>"));
            assert!(!text.contains("s3cr3t"), "{text}");
            Ok(())
        });
    }
}
