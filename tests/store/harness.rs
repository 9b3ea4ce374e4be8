//! A fresh, migrated store of either kind per test, and what the store tests need around it: a
//! second store on the same data, and a raw SQL connection to look at or reshape its rows.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use verifyd::session::SessionPolicy;
use verifyd::store::Store;
use verifyd::store::postgres::{PgOptions, PgStore};
use verifyd::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};

use crate::common;

/// Where a test's data lives; dropping it removes the file or the database.
pub enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(common::pg::TestDb),
}

impl Place {
    /// The SQLite file; `None` for PostgreSQL.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match self {
            Place::Sqlite(dir) => Some(dir.path().join("data").join("verifyd.db")),
            Place::Postgres(_) => None,
        }
    }

    /// A raw connection beside the store's own, for SQL the `Store` trait does not offer.
    pub async fn sql(&self) -> Sql {
        match self {
            Place::Sqlite(_) => {
                let path = self.sqlite_path().expect("a SQLite place");
                let c = rusqlite::Connection::open(path).expect("open the SQLite file");
                c.busy_timeout(Duration::from_secs(5))
                    .expect("busy timeout");
                Sql::Sqlite(c)
            }
            Place::Postgres(db) => Sql::Postgres(common::pg::client(&db.url).await),
        }
    }
}

/// A raw SQL connection to a test store's data.
pub enum Sql {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

pub struct Harness {
    pub store: Arc<dyn Store>,
    pub place: Place,
    pub policy: SessionPolicy,
}

impl Harness {
    /// A second store on the same data, as after a daemon restart.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        open(&self.place, self.policy).await
    }
}

/// A harness on the same backend as `h` but with another policy.
pub async fn with_policy(h: &Harness, policy: SessionPolicy) -> Harness {
    let place = match &h.place {
        Place::Sqlite(_) => Place::Sqlite(tempfile::tempdir().expect("temp dir")),
        Place::Postgres(_) => Place::Postgres(
            common::pg::TestDb::create()
                .await
                .expect("a second test database"),
        ),
    };
    Harness {
        store: open(&place, policy).await,
        place,
        policy,
    }
}

/// A store on `place`, migrated.
pub async fn open(place: &Place, policy: SessionPolicy) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = match place {
        Place::Sqlite(_) => {
            // A missing parent directory is created by `open`.
            let path = place.sqlite_path().expect("a SQLite place");
            let opts = SqliteOptions {
                synchronous: Synchronous::Normal,
                busy_timeout: Duration::from_secs(5),
            };
            Arc::new(SqliteStore::open(&path, &opts, policy).expect("open the SQLite store"))
        }
        Place::Postgres(db) => {
            let opts = PgOptions {
                pool_size: 8,
                connect_timeout: Duration::from_secs(5),
                acquire_timeout: Duration::from_secs(5),
                statement_timeout: Duration::from_secs(5),
            };
            Arc::new(PgStore::new(&db.url, &opts, policy).expect("connect the PostgreSQL store"))
        }
    };
    store.migrate().await.expect("migrate");
    store
}

pub async fn make_sqlite(policy: SessionPolicy) -> Option<Harness> {
    let place = Place::Sqlite(tempfile::tempdir().expect("temp dir"));
    Some(Harness {
        store: open(&place, policy).await,
        place,
        policy,
    })
}

/// `None` (after a loud SKIPPED message from `TestDb`) when PostgreSQL is unreachable outside CI.
pub async fn make_pg(policy: SessionPolicy) -> Option<Harness> {
    let place = Place::Postgres(common::pg::TestDb::create().await?);
    Some(Harness {
        store: open(&place, policy).await,
        place,
        policy,
    })
}
