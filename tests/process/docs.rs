//! The documentation is tested like code: its runnable examples run against a real daemon, its
//! reference tables are checked against what the daemon accepts and answers, and its links lead
//! somewhere. A wrong example or a missing key fails CI instead of a reader.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use verifyd::config::Config;
use verifyd::daemon::Daemon;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The documents a reader is sent to: the README, CONTRIBUTING.md and everything in `docs/`.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("CONTRIBUTING.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn name(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().display().to_string()
}

/// A fenced code block: its language, whether it is marked `runnable` (run it) or `fragment`
/// (a piece of an example before it, not complete on its own), where it starts.
struct Block {
    lang: String,
    runnable: bool,
    fragment: bool,
    line: usize,
    text: String,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                let words: Vec<&str> = info.split_whitespace().collect();
                open = Some(Block {
                    lang: words.first().copied().unwrap_or_default().to_owned(),
                    runnable: words.contains(&"runnable"),
                    fragment: words.contains(&"fragment"),
                    line: i + 1,
                    text: String::new(),
                });
            }
            (Some(_), Some("")) => out.push(open.take().unwrap()),
            (Some(b), _) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    out
}

/// Text outside code blocks, so that `#` lines and links in examples are not taken for prose.
fn prose(text: &str) -> String {
    let mut inside = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            inside = !inside;
        } else if !inside {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Runnable examples

/// Whether `program` runs here; a missing tool skips the examples outside CI and fails under it.
fn have(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = format!("`{program} {}` does not run", args.join(" "));
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}; .ci/run installs what the documentation's examples need"
        );
        eprintln!("SKIPPED documentation examples: {why}");
    }
    ok
}

/// +1 for a line that opens a shell loop or `if`, -1 for one that closes it.
fn nesting(line: &str) -> i32 {
    match line.split_whitespace().next().unwrap_or_default() {
        "for" | "while" | "until" | "if" => 1,
        "done" | "fi" | "done;" | "fi;" => -1,
        _ => 0,
    }
}

/// One file's shell blocks as one bash script: blocks run in order and share variables; a
/// command followed by `# <output>` comment lines must print that output (`…` matches any text).
fn shell_script(file: &str, blocks: &[&Block]) -> String {
    let mut script = String::from(
        "set -euo pipefail\nwhere=start\n\
         trap 'echo \"docs example failed: the block at $where\" >&2' ERR\n",
    );
    for b in blocks {
        script.push_str(&format!("where='{file}:{}'\n", b.line));
        let lines: Vec<&str> = b.text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            // A command runs on over `\` line ends and to the end of a loop or `if` it opens.
            let mut depth = nesting(lines[i]);
            let mut command = vec![lines[i]];
            while (command.last().unwrap().ends_with('\\') || depth > 0) && i + 1 < lines.len() {
                i += 1;
                depth += nesting(lines[i]);
                command.push(lines[i]);
            }
            i += 1;
            let mut expected = Vec::new();
            let is_command = !command[0].trim().is_empty() && !command[0].starts_with('#');
            while is_command && i < lines.len() && lines[i].starts_with("# ") {
                expected.push(&lines[i][2..]);
                i += 1;
            }
            let command = command.join("\n");
            if expected.is_empty() {
                script.push_str(&command);
                script.push('\n');
                continue;
            }
            let pattern = expected
                .join("\n")
                .split('…')
                .map(|piece| format!("'{}'", piece.replace('\'', r"'\''")))
                .collect::<Vec<_>>()
                .join("*");
            let shown = expected.join("\n").replace('\'', r"'\''");
            script.push_str(&format!(
                "out=$(\n{command}\n)\nif [[ \"$out\" != {pattern} ]]; then\n  \
                 printf '%s\\n' \"docs example at $where printed:\" \"$out\" 'instead of:' '{shown}' >&2\n  \
                 exit 1\nfi\n"
            ));
        }
    }
    script
}

/// The daemon `cargo run` starts (the shipped `config.toml`), on a free port, in `dir`, with the
/// mock provider's outbox at `dir/outbox.jsonl` and `api_key` configured.
async fn development_daemon(dir: &Path, api_key: &str) -> Daemon {
    let mut c = Config::load(Some(&root().join("config.toml")), true).unwrap();
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.metrics.listen = None;
    c.store.sqlite.path = dir.join("verifyd.db");
    c.provider.mock.outbox = Some(dir.join("outbox.jsonl"));
    c.provider.mock.quiet = true;
    c.api
        .keys
        .insert("docs".into(), verifyd::app::hash_api_key(api_key));
    Daemon::start(c).await.expect("daemon starts")
}

fn run(program: &str, args: &[&str], dir: &Path, base: &str, api_key: &str) -> Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_verifyd")).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    // A hung example (a curl waiting on a stuck daemon) fails after two minutes, not never.
    Command::new("timeout")
        .arg("120")
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("BASE", base)
        .env("API", api_key)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Runs every runnable block of one document, each language as one program, against a fresh
/// development daemon; answers the failures, if any.
async fn run_examples(path: &Path) -> Vec<String> {
    let file = name(path);
    let all = blocks(&read(path));
    let runnable: Vec<&Block> = all.iter().filter(|b| b.runnable).collect();
    if runnable.is_empty() {
        return Vec::new();
    }
    let dir = tempfile::tempdir().unwrap();
    let api_key = verifyd::session::SessionKey::generate().as_str().to_owned();
    let daemon = development_daemon(dir.path(), &api_key).await;
    let base = format!("http://{}", daemon.addr);
    let mut failures = Vec::new();
    for (lang, source, program) in [
        ("sh", "example.sh", "bash"),
        ("python", "example.py", "python3"),
        ("js", "example.mjs", "node"),
    ] {
        let of_lang: Vec<&Block> = runnable
            .iter()
            .copied()
            .filter(|b| b.lang == lang)
            .collect();
        if of_lang.is_empty() {
            continue;
        }
        let text = if lang == "sh" {
            shell_script(&file, &of_lang)
        } else {
            of_lang.iter().map(|b| b.text.as_str()).collect()
        };
        std::fs::write(dir.path().join(source), text).unwrap();
        let (dir, base, api_key) = (dir.path().to_owned(), base.clone(), api_key.clone());
        let out =
            tokio::task::spawn_blocking(move || run(program, &[source], &dir, &base, &api_key))
                .await
                .unwrap();
        if !out.status.success() {
            let lines: Vec<_> = of_lang.iter().map(|b| b.line.to_string()).collect();
            failures.push(format!(
                "{file}: the {lang} blocks at lines {} failed ({}):\n{}{}",
                lines.join(", "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    daemon.stop().await;
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runnable_example_runs_against_a_real_daemon() {
    if !(have("bash", &["--version"])
        && have("curl", &["--version"])
        && have("python3", &["-c", "import requests"])
        && have(
            "node",
            &["-e", "if (typeof fetch !== 'function') process.exit(1)"],
        ))
    {
        return;
    }
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in documents() {
        if blocks(&read(&path)).iter().any(|b| b.runnable) {
            ran += 1;
        }
        failures.extend(run_examples(&path).await);
    }
    assert!(
        ran >= 2,
        "the README and the backend guide have runnable examples"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The harness itself: a wrong expected output and a failing command are both caught.
#[tokio::test]
async fn a_wrong_example_fails() {
    if !have("bash", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (text, passes) in [
        ("echo '{\"a\":1,\"b\":2}'\n# {\"a\":1,…}\n", true),
        ("echo '{\"a\":1}'\n# {\"a\":2}\n", false),
        ("false\necho never\n", false),
        ("x=$(false)\n", false),
        ("echo \"it's\" \\\n  fine\n# it's fine\n", true),
        ("for i in 1 2; do\n  printf '%s ' $i\ndone\n# 1 2 \n", true),
        (
            "for i in 1 2; do\n  printf '%s ' $i\ndone\n# 1 2 3 \n",
            false,
        ),
    ] {
        let block = Block {
            lang: "sh".into(),
            runnable: true,
            fragment: false,
            line: 1,
            text: text.into(),
        };
        std::fs::write(dir.path().join("t.sh"), shell_script("t.md", &[&block])).unwrap();
        let out = run("bash", &["t.sh"], dir.path(), "", "");
        assert_eq!(out.status.success(), passes, "{text}: {out:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Reference tables

/// The names in backticks in the first cell of each table row of `text`; a short name in a row
/// that began with a dotted one (`per_phone.max_failed_checks` / `lockout`) is in its section.
fn first_column_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for line in prose(text).lines().filter(|l| l.starts_with("| `")) {
        let cell = line[1..].split(" | ").next().unwrap();
        let names: Vec<&str> = cell.split('`').skip(1).step_by(2).collect();
        let section = names[0]
            .rsplit_once('.')
            .map(|(s, _)| s)
            .unwrap_or_default();
        for n in names {
            if n.contains('.') || section.is_empty() {
                keys.insert(n.to_owned());
            } else {
                keys.insert(format!("{section}.{n}"));
            }
        }
    }
    keys
}

/// Every key of the configuration, as `section.key` (maps of user-chosen names count as one key).
fn config_keys(v: &toml::Value, path: &str, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, child) in t {
                let full = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                config_keys(child, &full, out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

#[test]
fn the_configuration_reference_names_every_key() {
    let documented = first_column_keys(&read(&root().join("docs/configuration.md")));
    let mut keys = Vec::new();
    config_keys(
        &toml::Value::try_from(Config::default()).unwrap(),
        "",
        &mut keys,
    );
    assert!(keys.len() > 100, "the walk found the keys: {keys:?}");
    let missing: Vec<_> = keys
        .iter()
        // A table that is empty by default (`metrics`, `providers`) is named by its keys.
        .filter(|k| {
            !documented.contains(*k) && !documented.iter().any(|d| d.starts_with(&format!("{k}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not name: {missing:?}"
    );
}

/// The stable `error` codes the daemon can answer: every literal given to an `ApiError`
/// constructor, and the abuse limits' codes.
fn error_codes_in_source() -> BTreeSet<String> {
    const CONSTRUCTORS: [&str; 6] = [
        "::new(",
        "::bad_request(",
        "::unprocessable(",
        "::not_found(",
        "::precondition_failed(",
        "::too_many(",
    ];
    let mut codes = BTreeSet::new();
    let mut files = vec![root().join("src/quota/mod.rs")];
    let mut dirs = vec![root().join("src/http")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    let snake = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    for file in files {
        let text = read(&file);
        let quota = file.ends_with("quota/mod.rs");
        for call in ["ApiError", "Self"]
            .iter()
            .flat_map(|who| CONSTRUCTORS.iter().map(move |c| format!("{who}{c}")))
        {
            for (at, _) in text.match_indices(&call) {
                let args = &text[at + call.len()..];
                let literal = args.split('"').nth(1).unwrap_or_default();
                if snake(literal) && args.find('"') < args.find(')') {
                    codes.insert(literal.to_owned());
                }
            }
        }
        if quota {
            let body = &text[text.find("pub fn code(self)").expect("Refusal::code")..];
            let body = &body[..body.find("\n    }\n").unwrap()];
            for (at, _) in body.match_indices("=> \"") {
                let literal = body[at + 4..].split('"').next().unwrap();
                codes.insert(literal.to_owned());
            }
        }
    }
    codes
}

#[test]
fn the_errors_table_lists_every_error_code() {
    let api = read(&root().join("docs/api.md"));
    let section = &api[api.find("\n## Errors").expect("docs/api.md has ## Errors")..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |e| e + 1)];
    let documented: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| status "))
        .filter_map(|l| l.split(" | ").nth(1))
        .flat_map(|cell| cell.split('`').skip(1).step_by(2).map(str::to_owned))
        .collect();
    let produced = error_codes_in_source();
    for sure in [
        "unauthorized",
        "origin_not_allowed",
        "too_many_sends",
        "invalid_field",
    ] {
        assert!(
            produced.contains(sure),
            "the scan finds {sure}: {produced:?}"
        );
    }
    let undocumented: Vec<_> = produced.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "docs/api.md's Errors table lacks: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&produced).collect();
    assert!(
        stale.is_empty(),
        "docs/api.md's Errors table lists codes the daemon never answers: {stale:?}"
    );
}

/// A stand-in for a secret the documents leave to a credential, in the shape its key needs.
fn example_secret(key: &str) -> &'static str {
    if key.ends_with("hook.secret") || key.starts_with("events.endpoints.") {
        "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
    } else {
        "docs-example-secret-0123456789"
    }
}

fn set_dotted(table: &mut toml::Table, key: &str, value: &str) {
    let (parents, leaf) = key.rsplit_once('.').unwrap_or(("", key));
    let mut t = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        t = t
            .entry(part)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .unwrap();
    }
    t.insert(leaf.to_owned(), value.into());
}

/// Every TOML example is a configuration the daemon accepts as it is, once given the secrets
/// the documents keep in credentials; only a block marked `fragment` is exempt.
#[test]
fn every_toml_example_loads_as_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let mut failures = Vec::new();
    let mut loaded = 0;
    for path in documents() {
        for b in blocks(&read(&path))
            .iter()
            .filter(|b| b.lang == "toml" && !b.fragment)
        {
            let at = format!("{}:{}", name(&path), b.line);
            let mut table: toml::Table = match toml::from_str(&b.text) {
                Ok(t) => t,
                Err(e) => {
                    failures.push(format!("{at}: not TOML: {e}"));
                    continue;
                }
            };
            let mut given = BTreeSet::new();
            loop {
                std::fs::write(&file, toml::to_string(&table).unwrap()).unwrap();
                let Err(e) = Config::load(Some(&file), true) else {
                    loaded += 1;
                    break;
                };
                let message = e.to_string();
                let key = message.split('`').nth(1).unwrap_or_default().to_owned();
                if !verifyd::credentials::is_secret_key(&key) || !given.insert(key.clone()) {
                    failures.push(format!("{at}: {message}"));
                    break;
                }
                set_dotted(&mut table, &key, example_secret(&key));
            }
        }
    }
    assert!(loaded >= 10, "only {loaded} TOML examples were found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Links

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    let mut out = BTreeSet::new();
    for line in prose(text).lines() {
        let Some(heading) = line.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        if !line.starts_with('#') {
            continue;
        }
        let a = anchor(heading);
        let n = seen.entry(a.clone()).or_default();
        out.insert(if *n == 0 {
            a.clone()
        } else {
            format!("{a}-{n}")
        });
        *n += 1;
    }
    out
}

#[test]
fn every_link_between_documents_leads_somewhere() {
    let mut broken = Vec::new();
    for path in documents() {
        let text = read(&path);
        let dir = path.parent().unwrap();
        let body = prose(&text);
        let targets = body
            .split("](")
            .skip(1)
            .filter_map(|s| s.split(')').next())
            .chain(
                body.split("src=\"")
                    .skip(1)
                    .filter_map(|s| s.split('"').next()),
            );
        for target in targets {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let resolved = if file.is_empty() {
                path.clone()
            } else {
                dir.join(file)
            };
            if !resolved.exists() {
                broken.push(format!("{}: {target} (no such file)", name(&path)));
                continue;
            }
            if !fragment.is_empty() && !anchors(&read(&resolved)).contains(fragment) {
                broken.push(format!("{}: {target} (no such heading)", name(&path)));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
