//! Running the Node scenarios in `tests/browser/` (playwright-core driving Debian's headless
//! Chromium) from `cargo test`. Without the tools a test prints `SKIPPED` and passes, except
//! under `CI=true`, where that is a failure: `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where Debian's package puts Chromium; `CHROMIUM` overrides.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_CHROMIUM.into())
}

/// Screenshots land here: `target/browser-artifacts/` (or under `CARGO_TARGET_DIR`).
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("browser-artifacts")
}

/// What is missing to run a browser scenario, if anything.
fn missing() -> Option<String> {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    if !node.is_ok_and(|s| s.success()) {
        return Some("node is not installed".into());
    }
    if !scripts_dir().join("node_modules/playwright-core").is_dir() {
        return Some("playwright-core is not installed (npm ci in tests/browser)".into());
    }
    if !chromium().exists() {
        return Some(format!(
            "{} is missing (apt-get install chromium)",
            chromium().display()
        ));
    }
    None
}

/// True when the scenarios can run; prints `SKIPPED` outside CI, panics under `CI=true`.
pub fn available(test: &str) -> bool {
    let Some(why) = missing() else { return true };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}; .ci/run installs it");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

/// Runs `tests/browser/<scenario>.mjs` with `env` and fails the test unless it passes. Its
/// output (screenshot paths, the reason of a failure) is printed for `cargo test` to show.
pub async fn run_scenario(scenario: &str, env: &[(&str, String)]) {
    let mut cmd = Command::new("node");
    cmd.arg(format!("{scenario}.mjs"))
        .current_dir(scripts_dir())
        .env("SCENARIO", scenario)
        .env("ARTIFACTS", artifacts_dir())
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // The scenario talks to a daemon on this runtime, so wait for it off the runtime's threads.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("the waiting thread does not panic")
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "browser scenario {scenario} failed ({}):\n{stderr}",
        out.status
    );
    assert!(stdout.contains("scenario passed"), "{stdout}");
}
