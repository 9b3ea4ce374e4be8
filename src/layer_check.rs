//! The layer check: reads `src/**/*.rs`, collects the crate-internal imports of non-test code
//! and fails when one points up the table below, or when modules of one layer import each other
//! in a cycle. It exists so that the architecture in ARCHITECTURE.md stays true as code changes;
//! run it with `cargo test --lib layer_check`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every top-level module and its layer; a module may import only modules of a lower layer, or
/// of its own layer without forming a cycle. A new module must be added here.
const LAYERS: &[(u8, &[&str])] = &[
    (8, &["main"]),
    (7, &["cli"]),
    (6, &["daemon"]),
    (5, &["http"]),
    (4, &["app"]),
    (3, &["verify", "resend", "sweeper", "logging"]),
    (2, &["config"]),
    (
        1,
        &[
            "store",
            "provider",
            "quota",
            "challenge",
            "delivery",
            "events",
        ],
    ),
    (
        0,
        &[
            "code",
            "country",
            "metrics",
            "credentials",
            "net",
            "phone",
            "private_file",
            "secret",
            "seconds",
            "secret_file",
            "session",
            "session_data",
            "standard_webhooks",
            "systemd",
            "time",
        ],
    ),
];

fn layer_of(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(_, names)| names.contains(&module))
        .map(|(layer, _)| *layer)
}

/// The top-level module a source file belongs to (`src/provider/sns/config.rs` → `provider`).
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_owned()
}

/// The source with comments, string and char literals blanked and `#[cfg(test)]` items
/// removed, so that only code that ships is looked at.
fn shipped_code(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && !ident_before(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            i += 2 + hashes;
            while i < chars.len() {
                if chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&h| h == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&chars, i) {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    drop_test_items(&out)
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// `'x'`, `'\n'`, `'{'`: a char literal; `'a` in `&'a str`: a lifetime.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    matches!(
        (chars.get(i + 1), chars.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// Attributes that compile the item after them only into tests: `all(test, …)` narrows a test
/// item further (a feature-gated test module), so it is test code too.
const TEST_ONLY: [&str; 2] = ["#[cfg(test)]", "#[cfg(all(test,"];

/// Removes each item that follows a [`TEST_ONLY`] attribute: up to its matching `}` or its `;`.
fn drop_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = TEST_ONLY.iter().filter_map(|a| rest.find(a)).min() {
        out.push_str(&rest[..at]);
        let attribute_end = rest[at..].find(']').map_or(rest.len(), |j| at + j + 1);
        rest = &rest[attribute_end..];
        let mut depth = 0usize;
        let mut end = rest.len();
        for (j, ch) in rest.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = j + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The top-level modules a piece of shipped code names through `crate::` (or `verifyd::`, in
/// the binary), including each name of a `crate::{a, b::c}` group.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for root in ["crate::", "verifyd::"] {
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().next_back();
            rest = &rest[at + root.len()..];
            if before.is_some_and(|b| b.is_alphanumeric() || b == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 1usize;
                let mut start = 0;
                for (j, ch) in group.char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 1 => {}
                        _ => continue,
                    }
                    if depth <= 1 {
                        if let Some(name) = leading_ident(&group[start..j]) {
                            found.insert(name);
                        }
                        start = j + 1;
                    }
                    if depth == 0 {
                        break;
                    }
                }
            } else if let Some(name) = leading_ident(rest) {
                found.insert(name);
            }
        }
    }
    found
}

fn leading_ident(text: &str) -> Option<String> {
    let name: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Module → modules it imports, over every `.rs` file under `src`.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src is readable") {
            let path = entry.expect("src entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(src).expect("under src");
                let module = module_of(relative);
                if module == "lib" || module == "layer_check" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source is UTF-8");
                let imports = imported_modules(&shipped_code(&text));
                let entry = graph.entry(module.clone()).or_default();
                entry.extend(imports.into_iter().filter(|m| *m != module));
            }
        }
    }
    graph
}

/// Every arrow that breaks the table: unknown modules, arrows up, and cycles within a layer.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut problems = Vec::new();
    for (from, targets) in graph {
        let Some(from_layer) = layer_of(from) else {
            problems.push(format!("module `{from}` is not in the layer table"));
            continue;
        };
        for to in targets {
            match layer_of(to) {
                None => problems.push(format!("`{from}` imports `{to}`, not in the layer table")),
                Some(to_layer) if to_layer > from_layer => problems.push(format!(
                    "`{from}` (layer {from_layer}) imports `{to}` (layer {to_layer}): arrow points up"
                )),
                _ => {}
            }
        }
    }
    // Same-layer arrows are allowed only while they form no cycle.
    let same_layer = |from: &str, to: &str| layer_of(from) == layer_of(to);
    for start in graph.keys() {
        let mut stack: Vec<Vec<String>> = vec![vec![start.clone()]];
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty path");
            for to in graph.get(last).into_iter().flatten() {
                if !same_layer(last, to) {
                    continue;
                }
                if to == start {
                    let cycle = format!("{} -> {start}", path.join(" -> "));
                    // Report each cycle once, from its smallest module.
                    if path.iter().all(|m| m >= start) {
                        problems.push(format!("cycle within a layer: {cycle}"));
                    }
                } else if !path.contains(to) {
                    let mut longer = path.clone();
                    longer.push(to.clone());
                    stack.push(longer);
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            g.entry(from.to_string())
                .or_default()
                .insert(to.to_string());
            g.entry(to.to_string()).or_default();
        }
        g
    }

    #[test]
    fn every_import_points_down_the_layer_table() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let problems = violations(&import_graph(&src));
        assert!(
            problems.is_empty(),
            "layer violations (see ARCHITECTURE.md):\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn an_upward_arrow_is_reported() {
        let problems = violations(&graph(&[("phone", "http"), ("http", "phone")]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("`phone` (layer 0) imports `http`"));
    }

    #[test]
    fn a_cycle_within_one_layer_is_reported_once() {
        let problems = violations(&graph(&[
            ("store", "quota"),
            ("quota", "challenge"),
            ("challenge", "store"),
            ("provider", "quota"),
        ]));
        assert_eq!(
            problems,
            ["cycle within a layer: challenge -> store -> quota -> challenge"]
        );
    }

    #[test]
    fn unknown_modules_are_reported() {
        let problems = violations(&graph(&[("gadget", "phone")]));
        assert_eq!(problems, ["module `gadget` is not in the layer table"]);
    }

    #[test]
    fn test_code_comments_and_strings_are_not_imports() {
        let code = shipped_code(
            "use crate::phone::PhoneNumber;\n\
             // use crate::http::x;\n\
             const S: &str = \"crate::app\";\n\
             const R: &str = r#\"crate::daemon\"#;\n\
             fn f<'a>(c: char) -> bool { c == '{' }\n\
             use crate::{code::Code, time::{now, Clock}};\n\
             let x = crate::secret::Secret::new(\"x\");\n\
             #[cfg(test)]\nuse crate::config::Config;\n\
             #[cfg(test)]\nmod tests { use crate::cli; fn g() { if true { crate::daemon::x(); } } }\n\
             #[cfg(all(test, feature = \"sns\"))]\nmod gated { use crate::config::C; }\n\
             #[cfg(any(test, unix))]\nuse crate::net::Cidr;\n",
        );
        let found: Vec<String> = imported_modules(&code).into_iter().collect();
        assert_eq!(found, ["code", "net", "phone", "secret", "time"]);
    }
}
