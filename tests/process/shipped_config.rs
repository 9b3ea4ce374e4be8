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

/// The packaged `/etc/verifyd/config.toml` loads, and its commented examples for a reverse
/// proxy on the same host and for the `__Host-` cookie are correct once uncommented.
#[test]
fn packaged_proxy_and_cookie_examples_work_when_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/config.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let packaged = Config::load(Some(&path), true).expect("the packaged config is valid");
    assert!(packaged.http.trusted_proxies.is_empty());
    let mut uncommented = 0;
    let edited: String = text
        .lines()
        .map(|l| {
            for key in ["# trusted_proxies = ", "# cookie_host_prefix = "] {
                if let Some(rest) = l.strip_prefix(key) {
                    uncommented += 1;
                    return format!("{}{rest}\n", &key[2..]);
                }
            }
            format!("{l}\n")
        })
        .collect();
    assert_eq!(uncommented, 2, "both examples are in the packaged file");
    let dir = tempfile::tempdir().unwrap();
    let edited_path = dir.path().join("config.toml");
    std::fs::write(&edited_path, edited).unwrap();
    let c = Config::load(Some(&edited_path), true).expect("the uncommented examples are valid");
    assert!(c.session.cookie_host_prefix);
    let trusted = &c.http.trusted_proxies;
    for local in ["127.0.0.1", "::1"] {
        let ip = local.parse().unwrap();
        assert!(trusted.iter().any(|c| c.contains(ip)), "{local} is trusted");
        // A client behind that proxy is told apart by the proxy's X-Forwarded-For.
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.50:61000".parse().unwrap());
        let client = verifyd::http::client_ip::client_ip(ip, &h, trusted, c.http.forwarded_header);
        assert_eq!(client, "203.0.113.50".parse::<std::net::IpAddr>().unwrap());
    }
}
