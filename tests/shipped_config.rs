//! The shipped `config.toml` loads, runs the embedded store with the mock provider on
//! 127.0.0.1:8080, and mentions every option (it is the commented reference).

use std::path::Path;
use verifyd::config::{Backend, Config, ProviderKind};

fn shipped() -> (String, Config) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = Config::load(Some(&path), true).expect("the shipped config.toml is valid");
    (text, config)
}

#[test]
fn runs_the_development_daemon() {
    let (_, c) = shipped();
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.store.backend, Backend::Sqlite);
    assert_eq!(c.provider.kind, ProviderKind::Mock);
    assert!(c.compat.seed_routes && c.http.demo_page && !c.session.cookie_secure);
}

/// Every leaf key of the configuration appears in the file, set or commented out, under its
/// section header.
#[test]
fn mentions_every_option() {
    let (text, _) = shipped();
    let value = toml::Value::try_from(Config::default()).unwrap();
    let mut missing = Vec::new();
    walk(&value, "", &text, &mut missing);
    assert!(
        missing.is_empty(),
        "config.toml does not mention: {missing:?}"
    );
}

fn walk(v: &toml::Value, path: &str, text: &str, missing: &mut Vec<String>) {
    let toml::Value::Table(t) = v else { return };
    for (k, child) in t {
        let full = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match child {
            // Maps of user-chosen names (api.keys, test_numbers, limits) are sections or
            // inline tables; their own keys are examples, not options.
            toml::Value::Table(inner) if !inner.is_empty() || is_section(text, &full) => {
                walk(child, &full, text, missing)
            }
            _ => {
                // Set or commented out, on its own line or inside an inline table.
                let mentioned = text.lines().any(|l| {
                    [format!("{k} ="), format!("{k}=")].iter().any(|needle| {
                        l.match_indices(needle.as_str())
                            .any(|(at, _)| at == 0 || l[..at].ends_with(['#', ' ', '{', ',']))
                    })
                });
                if !mentioned && !is_section(text, &full) {
                    missing.push(full);
                }
            }
        }
    }
}

/// A table is mentioned by its header, or by a comment naming it (`[providers.<name>]`).
fn is_section(text: &str, path: &str) -> bool {
    text.lines()
        .any(|l| l.contains(&format!("[{path}]")) || l.contains(&format!("[{path}.")))
}
