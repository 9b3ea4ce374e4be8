//! PostgreSQL for integration tests: every test gets a database of its own, cloned from a
//! migrated template (cheaper than migrating each time) and dropped when the test ends.

use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};
use verifyd::session::SessionPolicy;
use verifyd::store::Maintenance;
use verifyd::store::postgres::{PgOptions, PgStore};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Serializes template creation across test binaries, which run as parallel processes.
const TEMPLATE_LOCK: i64 = 0x7665_7269_6679_7401;

/// A fresh, migrated database; dropped (connections and all) with the value.
pub struct TestDb {
    /// Connection URL of this database.
    pub url: String,
    /// Its name, `t_<random hex>`.
    pub name: String,
    admin_url: String,
}

impl TestDb {
    /// A fresh, migrated database of its own. When PostgreSQL is unreachable: panics if
    /// `CI=true`, otherwise prints a loud SKIPPED line and returns `None`.
    pub async fn create() -> Option<TestDb> {
        let admin_url = admin_url();
        let admin = match connect(&admin_url).await {
            Ok(admin) => admin,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("PostgreSQL unreachable at {admin_url} (set VERIFYD_TEST_DATABASE_URL): {e}")
            }
            Err(e) => {
                eprintln!(
                    "\n*** SKIPPED: PostgreSQL unreachable at {admin_url} ({e}); \
                     set VERIFYD_TEST_DATABASE_URL to run this test ***\n"
                );
                return None;
            }
        };
        let template = ensure_template(&admin, &admin_url).await;
        let name = format!("t_{}", random_hex(8));
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} TEMPLATE {template}: {e}"));
        Some(TestDb {
            url: with_dbname(&admin_url, &name),
            name,
            admin_url,
        })
    }
}

impl Drop for TestDb {
    /// Runs on a thread of its own with its own runtime, so that it works inside async tests
    /// (whose runtime cannot be blocked on) and while a failed test unwinds.
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let admin = connect(&admin_url).await?;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
            .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: test database {} was not dropped: {dropped:?}",
                self.name
            );
        }
    }
}

fn admin_url() -> String {
    std::env::var("VERIFYD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// A plain connection to `url`, for SQL a test runs beside the store.
pub async fn client(url: &str) -> Client {
    connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let mut cfg: tokio_postgres::Config = url.parse()?;
    cfg.connect_timeout(Duration::from_secs(3));
    let (client, connection) = cfg.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Name of the template for the current migration files, creating it if needed. It is built
/// under another name and renamed when complete, so an existing template is always whole.
async fn ensure_template(admin: &Client, admin_url: &str) -> String {
    let template = format!("verifyd_tpl_{}", schema_hash());
    if database_exists(admin, &template).await {
        return template;
    }
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("template lock");
    if !database_exists(admin, &template).await {
        let building = format!("{template}_build");
        for sql in [
            format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
            format!("CREATE DATABASE {building}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let store = store(&with_dbname(admin_url, &building));
        store
            .migrate()
            .await
            .expect("migrating the template database");
        drop(store);
        // Nobody may be connected to a database that is renamed or used as a template; the
        // pool's connections close asynchronously, so make sure they are gone.
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                &[&building],
            )
            .await
            .expect("terminating template connections");
        let rename = format!("ALTER DATABASE {building} RENAME TO {template}");
        admin
            .batch_execute(&rename)
            .await
            .unwrap_or_else(|e| panic!("{rename}: {e}"));
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("template unlock");
    template
}

async fn database_exists(admin: &Client, name: &str) -> bool {
    admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("reading pg_database")
        .is_some()
}

/// A store on `url` with test-friendly settings.
pub fn store(url: &str) -> PgStore {
    store_waiting(url, Duration::from_secs(5))
}

/// A store whose requests wait up to `acquire` for one of its 4 connections: races that queue
/// hundreds of requests on one store wait longer than 5 s for the last ones on a loaded machine.
pub fn store_waiting(url: &str, acquire: Duration) -> PgStore {
    let opts = PgOptions {
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        acquire_timeout: acquire,
        statement_timeout: Duration::from_secs(30),
    };
    let policy = SessionPolicy {
        default_age: 1_209_600,
        max_lifetime: None,
        refresh_interval: 60,
        max_data_bytes: 64 * 1024,
    };
    PgStore::new(url, &opts, policy).expect("valid test database URL")
}

/// Short hash of the migration files, so a changed schema gets a new template.
fn schema_hash() -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("reading migrations/postgres")
        .map(|entry| entry.expect("listing migrations/postgres").path())
        .collect();
    files.sort();
    let mut hash = Sha256::new();
    for path in files {
        hash.update(path.file_name().expect("file name").as_encoded_bytes());
        hash.update(std::fs::read(&path).expect("reading a migration file"));
    }
    hex::encode(&hash.finalize()[..6])
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random generator is unavailable");
    hex::encode(buf)
}

/// `url` pointing at database `name`: the path of a `postgres://` URL is replaced (its query
/// kept); a key/value connection string gets a trailing `dbname=` (the last one wins).
fn with_dbname(url: &str, name: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return format!("{url} dbname={name}");
    };
    let (location, query) = match rest.split_once('?') {
        Some((location, query)) => (location, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = location
        .split_once('/')
        .map_or(location, |(authority, _)| authority);
    format!("{scheme}://{authority}/{name}{query}")
}
