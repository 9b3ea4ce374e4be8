//! The `verifyd` binary itself: configuration checks, key helpers, migrations, the one-off sweep,
//! and `serve` under SIGTERM — each run as a real subprocess in a temporary directory.

use crate::common;

use common::pg::TestDb;
use serde_json::Map;
use sha2::{Digest, Sha256};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use verifyd::config::{Backend, Config};
use verifyd::session::{Expiry, SessionKey};

const BIN: &str = env!("CARGO_BIN_EXE_verifyd");

// ---------------------------------------------------------------------------------------------
// Helpers

/// `verifyd` in `dir`, with no `VERIFYD_*` variables inherited from the test environment.
fn verifyd(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir).env_remove("RUST_LOG");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("VERIFYD_") {
            c.env_remove(k);
        }
    }
    c
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out: Output = cmd.output().expect("run verifyd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TOML for a daemon on `port` with a store of its own.
fn store_toml(store: &StoreSpec, port: u16) -> String {
    let store = match store {
        StoreSpec::Sqlite(path) => format!(
            "[store]\nbackend = \"sqlite\"\n[store.sqlite]\npath = {:?}\n",
            path.display().to_string()
        ),
        StoreSpec::Postgres(url) => {
            format!("[store]\nbackend = \"postgres\"\n[store.postgres]\nurl = {url:?}\n")
        }
    };
    format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\nshutdown_grace = 5\n{store}\
         [session]\ncookie_secure = false\n[provider.mock]\nquiet = true\n\
         [api.keys]\ntest = \"{}\"\n[log]\nlevel = \"warn\"\n",
        sha256_hex("cli-test-key")
    )
}

enum StoreSpec {
    Sqlite(PathBuf),
    Postgres(String),
}

/// Kills a spawned daemon if a test fails before it stops on its own.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn wait_healthy(port: u16, child: &mut Child, log: &Path) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            assert_eq!(r.status(), reqwest::StatusCode::OK);
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "verifyd exited early ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "verifyd did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM and waits for the exit; returns whether it succeeded and how long it took.
async fn terminate(child: &mut Child) -> (bool, Duration) {
    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "verifyd ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Guard {
    let out = std::fs::File::create(log).unwrap();
    Guard(
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn verifyd"),
    )
}

// ---------------------------------------------------------------------------------------------
// check-config

#[test]
fn check_config_names_an_unknown_key_and_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.toml",
        "[http]\nlisten_addr = \"127.0.0.1:9000\"\n",
    );
    let (ok, stdout, stderr) = run(verifyd(dir.path())
        .arg("--config")
        .arg(&path)
        .arg("check-config"));
    assert!(!ok, "accepted an unknown key: {stdout}");
    // Exactly the key, in backticks: not `http.listen_addr.listen_addr` or a bare field name.
    assert!(stderr.contains("`http.listen_addr`"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    // The default ./config.toml is read when present, with the same strictness.
    write(dir.path(), "config.toml", "[sesion]\ndefault_age = 5\n");
    let (ok, _, stderr) = run(verifyd(dir.path()).arg("check-config"));
    assert!(!ok);
    assert!(stderr.contains("`sesion`"), "{stderr}");
    assert!(stderr.contains("config.toml"), "{stderr}");
}

#[test]
fn check_config_names_a_wrongly_typed_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    // (why, variable, value, the key the error must name)
    for (why, var, value, key) in [
        (
            "wrong type",
            "VERIFYD_SESSION__DEFAULT_AGE",
            "abc",
            "session.default_age",
        ),
        (
            "right type, out of range",
            "VERIFYD_VERIFICATION__CODE_LENGTH",
            "3",
            "verification.code_length",
        ),
        (
            "a list entry that is not an assigned calling code",
            "VERIFYD_COUNTRIES__DENY",
            "[\"+7\", \"+999\"]",
            "countries.deny.1",
        ),
    ] {
        let (ok, stdout, stderr) = run(verifyd(dir.path()).arg("check-config").env(var, value));
        assert!(!ok, "{why}: accepted {var}={value}: {stdout}");
        assert!(stderr.contains(&format!("`{key}`")), "{why}: {stderr}");
        assert!(
            stderr.contains(&format!("environment {var}")),
            "{why}: the source (environment variable) is not named: {stderr}"
        );
    }
}

/// `pumping-reset` takes a calling code as limits name it; anything else is refused before the
/// store is opened, saying what was expected.
#[test]
fn pumping_reset_refuses_what_is_not_a_calling_code() {
    let dir = tempfile::tempdir().unwrap();
    for (why, bad) in [
        ("no +", "86"),
        ("unassigned", "+999"),
        ("a space", "+86 "),
        ("the limits' wildcard", "*"),
    ] {
        let (ok, stdout, stderr) = run(verifyd(dir.path()).args(["pumping-reset", bad]));
        assert!(!ok, "{why}: {bad:?} accepted: {stdout}");
        assert!(
            stderr.contains("is not an assigned calling code like \"+86\""),
            "{why}: {stderr}"
        );
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no store was created"
    );
}

#[test]
fn check_config_prints_the_configuration_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "good.toml",
        "[session]\ndefault_age = 777\n\
         [verification]\nsecret = \"s3cret\"\n\
         [store.postgres]\nurl = \"postgres://verifyd:pa55word@db.internal/verifyd\"\n",
    );
    let (ok, stdout, stderr) = run(verifyd(dir.path())
        .args(["check-config", "--config"])
        .arg(&path)
        .env("VERIFYD_HTTP__MAX_BODY_BYTES", "4321"));
    assert!(ok, "{stderr}");
    for secret in ["s3cret", "pa55word", "db.internal"] {
        assert!(!stdout.contains(secret), "{secret} printed: {stdout}");
        assert!(!stderr.contains(secret), "{secret} printed: {stderr}");
    }
    let printed: toml::Value = toml::from_str(&stdout).expect("stdout is TOML");
    assert_eq!(printed["session"]["default_age"].as_integer(), Some(777));
    assert_eq!(printed["http"]["max_body_bytes"].as_integer(), Some(4321));
    assert_eq!(
        printed["verification"]["secret"].as_str(),
        Some("<redacted>")
    );
    // What it prints is itself a valid configuration (the redacted URL aside).
    let back: Config = toml::from_str(&stdout).expect("the output parses as a Config");
    assert_eq!(back.session.default_age, 777);
}

/// Millisecond keys of older releases still start the daemon; each is logged once, naming
/// the old key, where it was set and the key in seconds to write instead.
#[test]
fn deprecated_millisecond_keys_work_and_are_warned_about_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "old.toml",
        "[store.sqlite]\npath = \"old.db\"\nbusy_timeout_ms = 250\n",
    );
    let old_keys = |cmd: &mut Command| {
        cmd.arg("--config")
            .arg(&path)
            .env("VERIFYD_EVENTS__POLL_INTERVAL_MS", "1500");
    };
    let warnings = [
        format!(
            "`store.sqlite.busy_timeout_ms` (from file {}) is deprecated: write `store.sqlite.busy_timeout = 0.25`",
            path.display()
        ),
        "`events.poll_interval_ms` (from environment VERIFYD_EVENTS__POLL_INTERVAL_MS) is deprecated: write `events.poll_interval = 1.5`".to_owned(),
    ];
    for command in ["migrate", "check-config"] {
        let mut cmd = verifyd(dir.path());
        old_keys(&mut cmd);
        let (ok, stdout, stderr) = run(cmd.arg(command));
        assert!(ok, "{command}: {stderr}");
        for w in &warnings {
            assert_eq!(
                stderr.matches(w.as_str()).count(),
                1,
                "{command}: {w}\n{stderr}"
            );
        }
        if command == "check-config" {
            let printed: toml::Value = toml::from_str(&stdout).expect("stdout is TOML");
            assert_eq!(
                printed["store"]["sqlite"]["busy_timeout"].as_float(),
                Some(0.25)
            );
            assert!(!stdout.contains("_ms"), "{stdout}");
        }
    }

    // Old and new name together: refused, naming both and where each was set.
    let mut cmd = verifyd(dir.path());
    old_keys(&mut cmd);
    let (ok, _, stderr) = run(cmd
        .arg("check-config")
        .env("VERIFYD_STORE__SQLITE__BUSY_TIMEOUT", "1"));
    assert!(!ok);
    assert!(
        stderr.contains("`store.sqlite.busy_timeout_ms` (from file"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "`store.sqlite.busy_timeout` (from environment VERIFYD_STORE__SQLITE__BUSY_TIMEOUT)"
        ),
        "{stderr}"
    );
}

#[test]
fn check_config_explain_names_the_source_of_every_value_and_hides_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "good.toml",
        "[session]\ndefault_age = 777\n\
         [store.postgres]\nurl = \"postgres://verifyd:pa55word@db.internal/verifyd\"\n\
         [http]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
    );
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    write(&creds, "verification.secret", "cr3dential-secret");
    let (ok, stdout, stderr) = run(verifyd(dir.path())
        .args(["check-config", "--explain", "--config"])
        .arg(&path)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("VERIFYD_HTTP__MAX_BODY_BYTES", "4321"));
    assert!(ok, "{stderr}");
    for secret in ["pa55word", "db.internal", "cr3dential"] {
        assert!(!stdout.contains(secret), "{secret} printed: {stdout}");
        assert!(!stderr.contains(secret), "{secret} printed: {stderr}");
    }
    let line = |key: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in\n{stdout}"))
            .to_owned()
    };
    let file = path.display().to_string();
    assert_eq!(
        line("session.default_age"),
        format!("session.default_age = 777  # file {file}")
    );
    assert_eq!(
        line("http.trusted_proxies"),
        format!("http.trusted_proxies = [\"10.0.0.0/8\"]  # file {file}")
    );
    assert_eq!(
        line("store.postgres.url"),
        format!("store.postgres.url = \"<redacted>\"  # file {file}")
    );
    assert_eq!(
        line("http.max_body_bytes"),
        "http.max_body_bytes = 4321  # environment VERIFYD_HTTP__MAX_BODY_BYTES"
    );
    assert_eq!(
        line("verification.secret"),
        format!(
            "verification.secret = \"<redacted>\"  # credential {}",
            creds.join("verification.secret").display()
        )
    );
    assert_eq!(
        line("http.request_timeout"),
        "http.request_timeout = 30  # default"
    );
    // Every setting has a line with a source.
    assert!(
        stdout
            .lines()
            .all(|l| l.contains(" = ") && l.contains("  # ")),
        "{stdout}"
    );
    assert!(stdout.lines().count() > 100, "{stdout}");
}

#[test]
fn a_missing_config_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere").join("verifyd.toml");
    for args in [vec!["check-config"], vec!["migrate"], vec!["serve"], vec![]] {
        let (ok, stdout, stderr) = run(verifyd(dir.path())
            .arg("--config")
            .arg(&missing)
            .args(&args));
        assert!(!ok, "{args:?}: {stdout}");
        assert!(
            stderr.contains(&missing.display().to_string()),
            "{args:?}: {stderr}"
        );
    }
    // The same through VERIFYD_CONFIG.
    let (ok, _, stderr) = run(verifyd(dir.path())
        .arg("check-config")
        .env("VERIFYD_CONFIG", &missing));
    assert!(!ok);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// API key helpers

#[test]
fn hash_api_key_prints_the_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = run(verifyd(dir.path()).args(["hash-api-key", "abc"]));
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );

    // From stdin, for keys that should not appear in `ps` or shell history.
    let mut child = verifyd(dir.path())
        .arg("hash-api-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"my-key\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        sha256_hex("my-key")
    );

    let (ok, _, _) = run(verifyd(dir.path()).arg("hash-api-key").stdin(Stdio::null()));
    assert!(!ok, "an empty key is refused");
}

#[test]
fn gen_api_key_prints_a_key_and_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = Vec::new();
    for _ in 0..2 {
        let (ok, stdout, stderr) = run(verifyd(dir.path()).arg("gen-api-key"));
        assert!(ok, "{stderr}");
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} line: {stdout}"))
        };
        let (key, hash) = (field("key:"), field("sha256:"));
        assert!(key.len() >= 32, "{key}");
        assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()), "{key}");
        assert_eq!(hash, sha256_hex(&key));
        // And the daemon's own hashing agrees.
        let (_, again, _) = run(verifyd(dir.path()).args(["hash-api-key", &key]));
        assert_eq!(again.trim(), hash);
        keys.push(key);
    }
    assert_ne!(keys[0], keys[1]);
}

// ---------------------------------------------------------------------------------------------
// migrate

fn sqlite_tables(path: &Path) -> (Vec<String>, i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut st = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let applied = c
        .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    (tables, applied)
}

#[test]
fn migrate_sqlite_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let cfg = write(
        dir.path(),
        "c.toml",
        &store_toml(&StoreSpec::Sqlite(db.clone()), 0),
    );
    assert!(!db.exists());
    let mut first = None;
    for round in 0..2 {
        let (ok, stdout, stderr) =
            run(verifyd(dir.path()).arg("--config").arg(&cfg).arg("migrate"));
        assert!(ok, "round {round}: {stderr}");
        assert!(stdout.contains("migrations applied"), "{stdout}");
        let (tables, applied) = sqlite_tables(&db);
        for t in [
            "sessions",
            "verifications",
            "verifyd_meta",
            "schema_migrations",
        ] {
            assert!(tables.iter().any(|x| x == t), "no table {t}: {tables:?}");
        }
        assert!(applied >= 1);
        match first {
            None => first = Some(applied),
            Some(n) => assert_eq!(applied, n, "a second migrate applied something again"),
        }
    }
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_postgres_is_idempotent() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let client = pg(&db.url).await;
    // Start from an empty schema rather than the migrated template.
    client
        .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "c.toml",
        &store_toml(&StoreSpec::Postgres(db.url.clone()), 0),
    );
    let mut first = None;
    for round in 0..2 {
        let (ok, stdout, stderr) =
            run(verifyd(dir.path()).arg("--config").arg(&cfg).arg("migrate"));
        assert!(ok, "round {round}: {stderr}");
        assert!(stdout.contains("migrations applied"), "{stdout}");
        let tables: Vec<String> = client
            .query(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        for t in [
            "sessions",
            "verifications",
            "verifyd_meta",
            "schema_migrations",
        ] {
            assert!(tables.iter().any(|x| x == t), "no table {t}: {tables:?}");
        }
        let applied: i64 = client
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0);
        assert!(applied >= 1);
        match first {
            None => first = Some(applied),
            Some(n) => assert_eq!(applied, n, "a second migrate applied something again"),
        }
    }
    assert!(
        !std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "db")),
        "the postgres backend created a SQLite file"
    );
}

// ---------------------------------------------------------------------------------------------
// clear-sessions

async fn clear_sessions(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((mut config, db)) = common::daemon::store_config(backend, &dir).await else {
        return;
    };
    config.sweeper.enabled = false;
    let spec = match backend {
        Backend::Sqlite => StoreSpec::Sqlite(config.store.sqlite.path.clone()),
        Backend::Postgres => StoreSpec::Postgres(db.as_ref().unwrap().url.clone()),
    };
    let store = verifyd::app::open_store(&config).unwrap();
    store.migrate().await.unwrap();
    let data = Map::new();
    for _ in 0..3 {
        let key = SessionKey::generate();
        store
            .create_session(&key.hash(), &data, Expiry::Idle(1))
            .await
            .unwrap();
    }
    let live = SessionKey::generate();
    store
        .create_session(&live.hash(), &data, Expiry::Default)
        .await
        .unwrap();
    store
        .create_session(&SessionKey::generate().hash(), &data, Expiry::Never)
        .await
        .unwrap();
    drop(store);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let cfg = write(dir.path(), "c.toml", &store_toml(&spec, 0));
    let cmd = || {
        let mut c = verifyd(dir.path());
        c.arg("--config").arg(&cfg).arg("clear-sessions");
        c
    };
    let (ok, stdout, stderr) = run(&mut cmd());
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("deleted 3 expired sessions"),
        "{stdout}\n{stderr}"
    );
    let (ok, stdout, stderr) = run(&mut cmd());
    assert!(ok, "{stderr}");
    assert!(stdout.contains("deleted 0 expired sessions"), "{stdout}");

    let store = verifyd::app::open_store(&config).unwrap();
    assert!(
        store.touch_session(&live.hash()).await.unwrap().is_some(),
        "a live session was deleted"
    );
    let left = match &spec {
        StoreSpec::Sqlite(p) => rusqlite::Connection::open(p)
            .unwrap()
            .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
            .unwrap(),
        StoreSpec::Postgres(url) => pg(url)
            .await
            .query_one("SELECT count(*) FROM sessions", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
    };
    assert_eq!(left, 2);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_sessions_sqlite() {
    clear_sessions(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_sessions_postgres() {
    clear_sessions(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------
// serve

async fn serve_until_sigterm(dir: &TempDir, args: &[&str], explicit_serve: bool) {
    let port = free_port();
    let cfg = write(
        dir.path(),
        "serve.toml",
        &store_toml(&StoreSpec::Sqlite(dir.path().join("s.db")), port),
    );
    let log = dir.path().join("serve.log");
    let mut cmd = verifyd(dir.path());
    cmd.args(args).arg("--config").arg(&cfg);
    if explicit_serve {
        cmd.arg("serve");
    }
    let mut guard = spawn(&mut cmd, &log);
    wait_healthy(port, &mut guard.0, &log).await;

    // It runs with this configuration: our API key works, a wrong one does not.
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/sessions");
    let r = client
        .post(&url)
        .bearer_auth("cli-test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let r = client.post(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(dir.path().join("s.db").exists());

    let (ok, took) = terminate(&mut guard.0).await;
    assert!(
        ok,
        "exit status after SIGTERM: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(took < Duration::from_secs(4), "took {took:?} to stop");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    serve_until_sigterm(&dir, &[], true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_is_the_default_command() {
    let dir = tempfile::tempdir().unwrap();
    serve_until_sigterm(&dir, &[], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = write(
        dir.path(),
        "c.toml",
        &store_toml(&StoreSpec::Sqlite(dir.path().join("s.db")), port),
    );
    let started = Instant::now();
    let (ok, _, stderr) = run(verifyd(dir.path()).arg("--config").arg(&cfg));
    assert!(!ok);
    assert!(stderr.contains(&port.to_string()), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(taken);
}
