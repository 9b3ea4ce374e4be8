//! Files and secrets: the SQLite database, its `-wal`/`-shm` and the mock outbox are owner-only
//! even when verifyd starts under umask 022 outside systemd (and older, looser files are
//! tightened); every secret setting reaches its user when it comes from a systemd credential or a
//! `*_file` setting — checked where it counts, by moto and the Aliyun fake verifying signatures
//! made with it, and by codes checked against the MAC key; an unusable file stops the daemon.

use crate::common;

use common::daemon::TestDaemon;
use common::fake_aliyun::FakeAliyun;
use common::moto::Moto;
use common::process::{Proc, free_port};
use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::StatusCode;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use verifyd::config::{Backend, Config};

const US_PHONE: &str = "+12015550123";
const CN_PHONE: &str = "+8613800138000";
const ALIYUN_ID: &str = "LTAI5tSecretSourcesTest";
const ALIYUN_SECRET: &str = "AliyunSecretFromSomewhere0123";

/// Where a secret comes from in a test.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A file in `$CREDENTIALS_DIRECTORY` named after the key.
    Credential,
    /// The key's `*_file` setting.
    File,
}

/// Loads `toml` as the daemon does, with `secret` set for `key` from `source`.
fn load(toml: &str, key: &str, secret: &str, source: Source) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let mut text = toml.to_owned();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    match source {
        Source::Credential => std::fs::write(creds.join(key), format!("{secret}\n")).unwrap(),
        Source::File => {
            let file = dir.path().join("secret");
            std::fs::write(&file, format!("{secret}\n")).unwrap();
            // The key's table is the last one `toml` opens; its `_file` setting goes there.
            let (table, leaf) = key.rsplit_once('.').unwrap();
            assert!(
                text.contains(&format!("[{table}]")),
                "{table} not in {toml}"
            );
            text.push_str(&format!("[{table}]\n{leaf}_file = {file:?}\n"));
            text = dedupe_table(&text, table);
        }
    }
    let mut fig = Figment::from(Toml::string(&text));
    for c in verifyd::credentials::from_dir(&creds).unwrap() {
        fig = fig.merge(c);
    }
    Config::from_figment(fig).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Merges a table appended at the end back into its first occurrence (TOML forbids two).
fn dedupe_table(text: &str, table: &str) -> String {
    let header = format!("[{table}]\n");
    let last = text.rfind(&header).unwrap();
    let first = text.find(&header).unwrap();
    if first == last {
        return text.to_owned();
    }
    let extra = text[last + header.len()..].to_owned();
    let mut out = text[..last].to_owned();
    out.insert_str(first + header.len(), &extra);
    out
}

/// A daemon on SQLite with the providers (and MAC key) of `loaded`.
async fn daemon_with(loaded: Config) -> TestDaemon {
    TestDaemon::start(Backend::Sqlite, move |c| {
        c.provider = loaded.provider;
        c.providers = loaded.providers;
        c.routes = loaded.routes;
        c.verification.secret = loaded.verification.secret;
    })
    .await
    .expect("SQLite daemons always start")
}

fn sns_single(url: &str, id: &str) -> String {
    format!(
        "[provider]\nkind = \"sns\"\n[provider.sns]\nregion = \"us-east-1\"\n\
         access_key_id = {id:?}\nendpoint_url = {url:?}\ntimeout_ms = 3000\n"
    )
}

fn sns_named(url: &str, id: &str) -> String {
    format!(
        "[routes]\n\"*\" = [\"global\"]\n[providers.global]\nkind = \"sns\"\n\
         [providers.global.sns]\nregion = \"us-east-1\"\naccess_key_id = {id:?}\n\
         endpoint_url = {url:?}\ntimeout_ms = 3000\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_secrets_from_credentials_and_files_sign_what_moto_accepts() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let shapes = [
        (
            sns_single(&moto.url, &moto.access_key_id),
            "provider.sns.secret_access_key",
        ),
        (
            sns_named(&moto.url, &moto.access_key_id),
            "providers.global.sns.secret_access_key",
        ),
    ];
    let mut sent = 0;
    for (toml, key) in &shapes {
        for source in [Source::Credential, Source::File] {
            let d = daemon_with(load(toml, key, &moto.secret_access_key, source)).await;
            let (status, body) = d.browser().send_code(US_PHONE).await;
            assert_eq!(
                status,
                StatusCode::ACCEPTED,
                "{key} from {source:?}: {body}"
            );
            sent += 1;
            assert_eq!(moto.sms().await.len(), sent, "{key} from {source:?}");
            d.stop().await;

            // The secret is really the one used: another one from the same place is refused.
            let d = daemon_with(load(toml, key, "not-the-secret", source)).await;
            let (status, body) = d.browser().send_code(US_PHONE).await;
            assert_eq!(
                status,
                StatusCode::BAD_GATEWAY,
                "{key} from {source:?}: {body}"
            );
            assert_eq!(moto.sms().await.len(), sent);
            d.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliyun_secrets_from_credentials_and_files_sign_what_the_fake_accepts() {
    let fake = FakeAliyun::start(ALIYUN_ID, ALIYUN_SECRET).await;
    let table = |t: &str| {
        format!(
            "[{t}]\naccess_key_id = {ALIYUN_ID:?}\nsign_name = \"验证码测试\"\n\
             template_code = \"SMS_154950909\"\nendpoint = {:?}\ntimeout_ms = 500\n\
             max_total = 3\n",
            fake.url()
        )
    };
    let shapes = [
        (
            format!(
                "[provider]\nkind = \"aliyun\"\n{}",
                table("provider.aliyun")
            ),
            "provider.aliyun.access_key_secret",
        ),
        (
            format!(
                "[routes]\n\"*\" = [\"cn\"]\n[providers.cn]\nkind = \"aliyun\"\n{}",
                table("providers.cn.aliyun")
            ),
            "providers.cn.aliyun.access_key_secret",
        ),
    ];
    let mut sent = 0;
    for (toml, key) in &shapes {
        for source in [Source::Credential, Source::File] {
            let d = daemon_with(load(toml, key, ALIYUN_SECRET, source)).await;
            let (status, body) = d.browser().send_code(CN_PHONE).await;
            assert_eq!(
                status,
                StatusCode::ACCEPTED,
                "{key} from {source:?}: {body}"
            );
            sent += 1;
            assert_eq!(fake.messages().len(), sent, "{key} from {source:?}");
            d.stop().await;

            let d = daemon_with(load(toml, key, "WrongSecret", source)).await;
            let (status, body) = d.browser().send_code(CN_PHONE).await;
            assert_eq!(
                status,
                StatusCode::BAD_GATEWAY,
                "{key} from {source:?}: {body}"
            );
            assert_eq!(fake.messages().len(), sent);
            d.stop().await;
        }
    }
}

/// A code sent by a daemon whose MAC key came from a file is accepted by a daemon on the same
/// store whose key came from a credential with the same text, and refused by one with another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mac_key_from_a_file_or_a_credential_is_the_one_codes_are_checked_with() {
    let toml = "[verification]\ncode_length = 6\n";
    let key = "verification.secret";
    let loaded = load(toml, key, "shared-mac-key", Source::File);
    let sender = TestDaemon::start(Backend::Sqlite, move |c| {
        c.verification.secret = loaded.verification.secret;
    })
    .await
    .unwrap();
    let db = sender.config.store.sqlite.path.clone();
    let on_same_store = |loaded: Config| {
        let db = db.clone();
        async move {
            TestDaemon::start(Backend::Sqlite, move |c| {
                c.store.sqlite.path = db;
                c.verification.secret = loaded.verification.secret;
            })
            .await
            .unwrap()
        }
    };
    let other = on_same_store(load(toml, key, "another-mac-key", Source::Credential)).await;
    let same = on_same_store(load(toml, key, "shared-mac-key", Source::Credential)).await;

    let mut browser = sender.browser();
    let (status, body) = browser.send_code(US_PHONE).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let code = sender
        .last_code(US_PHONE)
        .expect("the mock provider got the code");

    browser.base = other.base.clone();
    let (status, body) = browser.check_code(US_PHONE, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["status"], "pending",
        "another key must not verify the code: {body}"
    );

    browser.base = same.base.clone();
    let (status, body) = browser.check_code(US_PHONE, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved", "{body}");
    for d in [sender, other, same] {
        d.stop().await;
    }
}

/// The real binary under `$CREDENTIALS_DIRECTORY`, as systemd starts it: the database URL and a
/// named provider's secret come from credentials, another secret from a `*_file` setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_secrets_from_credentials_and_files() {
    let Some(db) = common::pg::TestDb::create().await else {
        return;
    };
    let fake = FakeAliyun::start(ALIYUN_ID, ALIYUN_SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("store.postgres.url"), format!("{}\n", db.url)).unwrap();
    std::fs::write(
        creds.join("providers.cn.aliyun.access_key_secret"),
        ALIYUN_SECRET,
    )
    .unwrap();
    let mac_file = dir.path().join("mac-key");
    std::fs::write(&mac_file, "mac-key-from-a-file\n").unwrap();
    let port = free_port();
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[store]\nbackend = \"postgres\"\n\
         [session]\ncookie_secure = false\n[verification]\nsecret_file = {mac_file:?}\n\
         [routes]\n\"*\" = [\"cn\"]\n[providers.cn]\nkind = \"aliyun\"\n\
         [providers.cn.aliyun]\naccess_key_id = {ALIYUN_ID:?}\nsign_name = \"验证码测试\"\n\
         template_code = \"SMS_154950909\"\nendpoint = {:?}\ntimeout_ms = 500\n\
         max_total = 3\n",
        fake.url()
    );
    let creds = creds.display().to_string();
    let p = Proc::spawn_with(
        dir.path(),
        "v",
        port,
        &toml,
        &[("CREDENTIALS_DIRECTORY", &creds)],
        None,
    )
    .await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", p.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "the store URL came through");
    let resp = http
        .post(format!("{}/v1/verifications", p.base()))
        .json(&json!({ "phone": CN_PHONE }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(
        fake.messages().len(),
        1,
        "signed with the credential's secret"
    );
    let log = p.log_text();
    for secret in [ALIYUN_SECRET, "mac-key-from-a-file", db.url.as_str()] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    drop(p);

    // The database URL from `store.postgres.url_file` instead, nothing in the environment: the
    // daemon migrates the fresh database the file names, so that is the one it reached.
    let fresh = common::pg::TestDb::create()
        .await
        .expect("a second test database");
    let url_file = dir.path().join("db-url");
    std::fs::write(&url_file, format!("{}\n", fresh.url)).unwrap();
    let port = free_port();
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[store]\nbackend = \"postgres\"\n\
         [store.postgres]\nurl_file = {url_file:?}\n"
    );
    let p = Proc::spawn_with(dir.path(), "w", port, &toml, &[], None).await;
    let ready = http
        .get(format!("{}/readyz", p.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK, "the URL file was read");
    let (client, conn) = tokio_postgres::connect(&fresh.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let migrated: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert!(migrated > 0);
}

#[test]
fn an_unusable_secret_file_stops_the_binary_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file");
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[provider]\nkind = \"sns\"\n[provider.sns]\nregion = \"us-east-1\"\n\
             access_key_id = \"AKIA\"\nsecret_access_key_file = {missing:?}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_verifyd"))
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("provider.sns.secret_access_key_file")
            && err.contains(&missing.display().to_string())
            && err.contains("c.toml"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// File modes

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A daemon on SQLite with the mock outbox, started by a shell with `umask 022`, after one send.
async fn start_under_umask_022(dir: &Path) -> Proc {
    let port = free_port();
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:{port}\"\n[store.sqlite]\npath = \"data/verifyd.db\"\n\
         [session]\ncookie_secure = false\n[provider.mock]\noutbox = \"outbox.jsonl\"\n\
         quiet = true\n"
    );
    let p = Proc::spawn_with(dir, "v", port, &toml, &[], Some(0o022)).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/verifications", p.base()))
        .json(&json!({ "phone": US_PHONE }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    p
}

const FILES: [&str; 4] = [
    "data/verifyd.db",
    "data/verifyd.db-wal",
    "data/verifyd.db-shm",
    "outbox.jsonl",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_its_wal_and_shm_and_the_outbox_are_owner_only_under_umask_022() {
    let dir = tempfile::tempdir().unwrap();
    let p = start_under_umask_022(dir.path()).await;
    // The umask really was 022: a file the daemon does not protect (its log) is world-readable.
    assert_eq!(mode(&dir.path().join("v.log")) & 0o044, 0o044);
    for f in FILES {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    assert!(
        std::fs::read_to_string(dir.path().join("outbox.jsonl"))
            .unwrap()
            .contains(US_PHONE)
    );
    p.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looser_files_from_before_are_tightened_at_start_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    start_under_umask_022(dir.path()).await.kill9();
    for f in FILES {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644))
            .unwrap();
    }
    let p = start_under_umask_022(dir.path()).await;
    for f in FILES {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    let log = p.log_text();
    assert!(
        log.contains("tightened") && log.contains("verifyd.db"),
        "{log}"
    );
    p.kill9();
}
