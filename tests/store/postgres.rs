//! PostgreSQL-specific behaviour of `PgStore` that the generic conformance suite cannot see:
//! concurrent migrations, the sweep lock and batches, races decided by the database, and how
//! the store behaves when the database is away.

use crate::common;

use common::pg::{TestDb, client as sql, store};
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};
use verifyd::code::CodeMac;
use verifyd::phone::PhoneNumber;
use verifyd::quota::{CheckGuard, SendGuard};
use verifyd::session::{Expiry, KeyHash, SessionPolicy};
use verifyd::store::postgres::{PgOptions, PgStore};
use verifyd::store::{
    Approval, CheckOutcome, CheckVerification, Maintenance, SessionStore, StartOutcome,
    StartVerification, StoreError, VerificationStore,
};

/// Must match the sweep lock key in `src/store/postgres.rs`.
const SWEEP_LOCK: i64 = 0x7665_7269_6679_6402;

/// How long the sweeps here keep dead events: the default, a week.
const KEEP_DEAD: Duration = Duration::from_secs(7 * 86_400);

fn key(n: u8) -> KeyHash {
    KeyHash([n; 32])
}

fn phone() -> PhoneNumber {
    PhoneNumber::parse_e164("+8613800138000").unwrap()
}

fn send(key: KeyHash, phone: &PhoneNumber, mac: u8) -> StartVerification<'_> {
    StartVerification {
        key,
        phone,
        code_mac: CodeMac([mac; 32]),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl: Duration::from_secs(300),
        resend_interval: Duration::from_secs(60),
        max_attempts: 5,
        new_session: None,
    }
}

/// The rules the counters and the verification state are held to (migration 0018 moved them
/// from table checks onto domains): each write of a negative count or an unknown state is
/// refused as a check violation, in every column that had a check, and the bounds still pass.
#[tokio::test]
async fn counts_and_states_out_of_range_are_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let c = sql(&db.url).await;
    let session = "WITH s AS (INSERT INTO sessions (key_hash, expiry_kind, created_at, touched_at)
                              VALUES (sha256(random()::text::bytea), 0, now(), now()) RETURNING id)";
    let verification = |state: i32, attempts: i32| {
        format!(
            "{session} INSERT INTO verifications
                 (session_id, phone, code_mac, state, attempts, created_at, sent_at, expires_at)
             SELECT id, '+15550100', '\\x00', {state}, {attempts}, now(), now(), now() FROM s"
        )
    };
    let writes = |n: i32| {
        vec![
            format!(
                "INSERT INTO number_counters (key, short_n, short_end, day_n, day_end)
                     VALUES ('a{n}', {n}, now(), 0, now())"
            ),
            format!(
                "INSERT INTO number_counters (key, short_n, short_end, day_n, day_end)
                     VALUES ('b{n}', 0, now(), {n}, now())"
            ),
            format!("INSERT INTO quota_counters VALUES ('s', 'k{n}', {n}, now())"),
            format!("INSERT INTO quota_shards VALUES ('s', 'k{n}', 1, now(), {n})"),
            format!("INSERT INTO pumping VALUES ('+{n}', {n}, 0, false, now())"),
            format!("INSERT INTO pumping VALUES ('+9{n}', 0, {n}, false, now())"),
            format!("INSERT INTO pumping_shards VALUES ('+{n}', 1, now(), {n}, 0)"),
            format!("INSERT INTO pumping_shards VALUES ('+{n}', 2, now(), 0, {n})"),
            verification(0, n),
        ]
    };
    for statement in writes(-1)
        .into_iter()
        .chain([verification(-1, 0), verification(3, 0)])
    {
        let err = c.batch_execute(&statement).await.expect_err(&statement);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
            "{statement}: {err}"
        );
    }
    for statement in writes(0)
        .into_iter()
        .chain([verification(2, 0), verification(1, 7)])
    {
        c.batch_execute(&statement).await.expect(&statement);
    }
}

#[tokio::test]
async fn concurrent_migrations_on_a_fresh_database_apply_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // Start from an empty schema rather than the migrated template.
    sql(&db.url)
        .await
        .batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .await
        .unwrap();

    let stores: Vec<_> = (0..8)
        .map(|_| std::sync::Arc::new(store(&db.url)))
        .collect();
    let tasks: Vec<_> = stores
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.migrate().await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("concurrent migrate");
    }
    stores[0].migrate().await.expect("migrate again");

    let c = sql(&db.url).await;
    let applied: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(applied as usize, files);
    let s = stores[0]
        .create_session(&key(1), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    assert!(s.expires_at.is_some());
}

/// A daemon starting on a migrated database (every start but the first) logs nothing from
/// PostgreSQL: the driver logs server NOTICEs at INFO, and "relation already exists" on each
/// start was noise in every operator's journal.
#[tokio::test]
async fn migrating_a_migrated_database_logs_no_notice() {
    let logs = common::logs::capture("info");
    let Some(db) = TestDb::create().await else {
        return;
    };
    store(&db.url).migrate().await.expect("migrate again");
    assert!(
        !logs.text().contains("schema_migrations\" already exists"),
        "{}",
        logs.text()
    );
    // The capture does see notices: the statement the migration no longer runs logs one.
    sql(&db.url)
        .await
        .batch_execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER)")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logs.text().contains("schema_migrations\" already exists") {
        assert!(
            Instant::now() < deadline,
            "no NOTICE captured: {}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sweep_steps_aside_while_another_sweeper_holds_the_lock() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = store(&db.url);
    let other = sql(&db.url).await;
    other
        .execute("SELECT pg_advisory_lock($1)", &[&SWEEP_LOCK])
        .await
        .unwrap();
    let report = st.sweep(100, KEEP_DEAD).await.unwrap();
    assert!(!report.ran);
    assert_eq!((report.sessions, report.verifications), (0, 0));

    other
        .execute("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK])
        .await
        .unwrap();
    assert!(st.sweep(100, KEEP_DEAD).await.unwrap().ran);
    // The store released its lock: someone else can take it now.
    let free: bool = other
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK])
        .await
        .unwrap()
        .get(0);
    assert!(free);
}

#[tokio::test]
async fn sweep_deletes_expired_rows_in_batches_and_spares_live_ones() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = store(&db.url);
    st.create_session(&key(1), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let forever = st
        .create_session(&key(2), &Map::new(), Expiry::Never)
        .await
        .unwrap();
    let p = phone();
    st.start_send(&send(key(1), &p, 7), &SendGuard::default())
        .await
        .unwrap();

    let c = sql(&db.url).await;
    c.batch_execute(
        "INSERT INTO sessions (key_hash, expiry_kind, created_at, touched_at, expires_at)
         SELECT sha256(i::text::bytea), 0, now() - interval '2 days', now() - interval '2 days',
                now() - interval '1 hour'
         FROM generate_series(1, 2500) AS i;
         INSERT INTO verifications
             (session_id, phone, code_mac, state, attempts, created_at, sent_at, expires_at)
         SELECT s.id, '+15555550100', '\\x00', 0, 0, now(), now(), now() - interval '1 minute'
         FROM sessions s WHERE s.id IN (SELECT id FROM sessions WHERE expires_at < now() LIMIT 10)
            OR s.key_hash = '\\x0101010101010101010101010101010101010101010101010101010101010101';",
    )
    .await
    .unwrap();

    let report = st.sweep(1000, KEEP_DEAD).await.unwrap();
    assert!(report.ran);
    assert_eq!(report.sessions, 2500);
    // Verifications of expired sessions go with them; only the live session's expired one counts.
    assert_eq!(report.verifications, 1);
    assert!(st.touch_session(&key(1)).await.unwrap().is_some());
    assert!(
        st.touch_session(&key(2))
            .await
            .unwrap()
            .is_some_and(|s| s.id == forever.id)
    );
    let left: i64 = c
        .query_one("SELECT count(*) FROM verifications", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "the live verification stays");

    let again = st.sweep(1000, KEEP_DEAD).await.unwrap();
    assert_eq!(
        (again.sessions, again.verifications, again.ran),
        (0, 0, true)
    );
}

#[tokio::test]
async fn concurrent_right_codes_approve_exactly_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = std::sync::Arc::new(store(&db.url));
    st.create_session(&key(1), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let p = phone();
    st.start_send(&send(key(1), &p, 7), &SendGuard::default())
        .await
        .unwrap();

    let tasks: Vec<_> = (0..16u8)
        .map(|i| {
            let st = st.clone();
            let p = p.clone();
            tokio::spawn(async move {
                let data: Map<String, Value> = [("verified_phone".to_owned(), json!(p.as_str()))]
                    .into_iter()
                    .collect();
                st.check_guarded(
                    &CheckVerification {
                        key: key(1),
                        phone: &p,
                        code_mac: CodeMac([7; 32]),
                        max_attempts: 5,
                        on_approve: Approval {
                            new_key: key(100 + i),
                            data: &data,
                        },
                    },
                    &CheckGuard::default(),
                )
                .await
                .unwrap()
                .outcome
            })
        })
        .collect();
    let mut approved = 0;
    for task in tasks {
        match task.await.unwrap() {
            CheckOutcome::Approved { session } => {
                approved += 1;
                assert_eq!(session.data["verified_phone"], json!(p.as_str()));
            }
            // A loser that resolved the old key before the approval committed finds the code
            // spent; one that came after finds the key moved away from it.
            other => assert!(
                matches!(other, CheckOutcome::NotFound | CheckOutcome::NoSession),
                "{other:?}"
            ),
        }
    }
    assert_eq!(approved, 1);
    assert!(
        st.touch_session(&key(1)).await.unwrap().is_none(),
        "the old key stopped working"
    );
}

#[tokio::test]
async fn concurrent_wrong_codes_all_count() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = std::sync::Arc::new(store(&db.url));
    st.create_session(&key(1), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let p = phone();
    st.start_send(&send(key(1), &p, 7), &SendGuard::default())
        .await
        .unwrap();

    let data = Map::new();
    let check = |st: std::sync::Arc<PgStore>, p: PhoneNumber, data: Map<String, Value>| async move {
        st.check_guarded(
            &CheckVerification {
                key: key(1),
                phone: &p,
                code_mac: CodeMac([8; 32]),
                max_attempts: 5,
                on_approve: Approval {
                    new_key: key(9),
                    data: &data,
                },
            },
            &CheckGuard::default(),
        )
        .await
        .unwrap()
        .outcome
    };
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(check(st.clone(), p.clone(), data.clone())))
        .collect();
    let mut left: Vec<u32> = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            CheckOutcome::Wrong { attempts_left } => left.push(attempts_left),
            other => panic!("expected Wrong, got {other:?}"),
        }
    }
    left.sort();
    assert_eq!(
        left,
        [1, 2, 3, 4],
        "every concurrent wrong attempt counted once"
    );
    let tasks: Vec<_> = (0..4)
        .map(|_| tokio::spawn(check(st.clone(), p.clone(), data.clone())))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), CheckOutcome::Exhausted);
    }
    assert!(matches!(
        st.start_send(&send(key(1), &p, 9), &SendGuard::default())
            .await
            .unwrap()
            .outcome,
        StartOutcome::Exhausted { .. }
    ));
}

#[tokio::test]
async fn concurrent_sends_issue_one_code() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = std::sync::Arc::new(store(&db.url));
    st.create_session(&key(1), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..12u8)
        .map(|i| {
            let st = st.clone();
            tokio::spawn(async move {
                let p = phone();
                st.start_send(&send(key(1), &p, i), &SendGuard::default())
                    .await
                    .unwrap()
                    .outcome
            })
        })
        .collect();
    let mut issued = 0;
    for task in tasks {
        match task.await.unwrap() {
            StartOutcome::Issued {
                resend: false,
                attempts: 0,
            } => issued += 1,
            StartOutcome::TooSoon { retry_after } => {
                assert!((1..=61).contains(&retry_after.as_secs()), "{retry_after:?}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(issued, 1);
}

#[tokio::test]
async fn broken_connections_are_replaced() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = store(&db.url);
    st.ping().await.unwrap();
    // What a database restart does to the pool: every server process goes away.
    let admin = sql(&db.url).await;
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    st.ping()
        .await
        .expect("a new connection replaces the broken one");
    assert_eq!(st.pool_usage().map(|p| p.waiting), Some(0));
}

#[tokio::test]
async fn unreachable_database_is_unavailable_fast() {
    let opts = PgOptions {
        pool_size: 2,
        connect_timeout: Duration::from_millis(500),
        acquire_timeout: Duration::from_millis(500),
        statement_timeout: Duration::from_secs(1),
    };
    let policy = SessionPolicy {
        default_age: 60,
        max_lifetime: None,
        refresh_interval: 0,
        max_data_bytes: 64 * 1024,
    };
    let st = PgStore::new("postgres://postgres@127.0.0.1:1/verifyd", &opts, policy)
        .expect("building the store does not connect");
    let started = Instant::now();
    let err = st.touch_session(&key(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(matches!(st.ping().await, Err(StoreError::Unavailable(_))));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    let bad = PgStore::new("postgres://[::1", &opts, policy);
    assert!(matches!(bad, Err(StoreError::Internal(m)) if m.contains("invalid PostgreSQL URL")));
}

/// Counts `count` in one shard of the running hour of (`scope`, "192.0.2.7").
async fn prefill_shard(url: &str, scope: &str, count: i32) {
    sql(url)
        .await
        .execute(
            "WITH w AS (
                 INSERT INTO quota_counters VALUES ($1, '192.0.2.7', 0, now() + interval '1 hour')
                 RETURNING expires_at)
             INSERT INTO quota_shards SELECT $1, '192.0.2.7', 3, expires_at, $2::integer FROM w",
            &[&scope, &count],
        )
        .await
        .unwrap();
}

/// The count of an exact counter and whether its window is running, if it has a row.
/// The number's quotas count in its rows of `number_counters` (migration 0014), a window and a
/// day in each; every other quota in `quota_counters`.
async fn counter(url: &str, scope: &str, key: &str) -> Option<(i32, bool)> {
    sql(url)
        .await
        .query_opt(
            "SELECT count, expires_at > now() FROM quota_counters WHERE scope = $1 AND key = $2
             UNION ALL
             SELECT CASE WHEN verifyd_number_slot($1) % 2 = 1 THEN short_n ELSE day_n END,
                    CASE WHEN verifyd_number_slot($1) % 2 = 1 THEN short_end ELSE day_end END
                        > now()
             FROM number_counters WHERE key = $2 AND verifyd_number_slot($1) IS NOT NULL",
            &[&scope, &key],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
}

/// A check with a wrong code (`i`) for key 1's verification of `phone()`, on a task of its own.
fn spawn_check(
    st: &std::sync::Arc<PgStore>,
    guard: &CheckGuard,
    i: u8,
) -> tokio::task::JoinHandle<CheckOutcome> {
    let (st, guard) = (st.clone(), guard.clone());
    tokio::spawn(async move {
        let (p, data) = (phone(), Map::new());
        let req = CheckVerification {
            key: key(1),
            phone: &p,
            code_mac: CodeMac([i; 32]),
            max_attempts: 5,
            on_approve: Approval {
                new_key: key(100 + i),
                data: &data,
            },
        };
        st.check_guarded(&req, &guard).await.unwrap().outcome
    })
}

/// Runs `n` wrong checks at once and counts those the address budget let through (they find
/// no code: key 1 has none); every other one must be refused by the budget.
async fn racing_checks_answered(st: &std::sync::Arc<PgStore>, guard: &CheckGuard, n: u8) -> usize {
    let tasks: Vec<_> = (0..n).map(|i| spawn_check(st, guard, i)).collect();
    let mut answered = 0;
    for task in tasks {
        match task.await.unwrap() {
            CheckOutcome::NotFound => answered += 1,
            CheckOutcome::Refused {
                by: verifyd::quota::Refusal::Quota(verifyd::quota::Scope::IpChecks),
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    answered
}

/// A large per-address budget is sharded (migration 0008) and still exact: 1 020 of 1 024 are
/// already counted (in one shard, as earlier sends on one connection would leave them), and 24
/// sends racing through the pool's connections get exactly the 4 that are left.
#[tokio::test]
async fn a_large_address_budget_is_sharded_and_exact_near_its_limit() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = std::sync::Arc::new(store(&db.url));
    prefill_shard(&db.url, "ip_sends", 1020).await;
    let guard = verifyd::quota::SendGuard {
        quotas: vec![verifyd::quota::Quota {
            scope: verifyd::quota::Scope::IpSends,
            key: "192.0.2.7".into(),
            limit: 1024,
            window: Duration::from_secs(3600),
        }],
        ..Default::default()
    };
    let mut sessions = vec![];
    for n in 0..24u8 {
        let s = st
            .create_session(&key(n), &Map::new(), Expiry::Default)
            .await;
        s.unwrap();
        sessions.push(key(n));
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(sessions.len()));
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|sid| {
            let (st, guard, barrier) = (st.clone(), guard.clone(), barrier.clone());
            tokio::spawn(async move {
                let p = phone();
                barrier.wait().await;
                st.start_send(&send(sid, &p, 1), &guard)
                    .await
                    .unwrap()
                    .outcome
            })
        })
        .collect();
    let mut issued = 0;
    for task in tasks {
        match task.await.unwrap() {
            StartOutcome::Issued { .. } => issued += 1,
            StartOutcome::Refused {
                by: verifyd::quota::Refusal::Quota(verifyd::quota::Scope::IpSends),
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(issued, 4);
    let counted: i64 = sql(&db.url)
        .await
        .query_one("SELECT sum(count)::bigint FROM quota_shards", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 1024, "refused sends gave their counts back");
}

/// The check's side: a large per-address check budget is sharded too, and exact near its limit.
#[tokio::test]
async fn a_large_address_check_budget_is_sharded_and_exact_near_its_limit() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = std::sync::Arc::new(store(&db.url));
    prefill_shard(&db.url, "ip_checks", 1022).await;
    let guard = verifyd::quota::CheckGuard {
        quotas: vec![verifyd::quota::Quota {
            scope: verifyd::quota::Scope::IpChecks,
            key: "192.0.2.7".into(),
            limit: 1024,
            window: Duration::from_secs(3600),
        }],
        ..Default::default()
    };
    st.create_session(&key(1), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let answered = racing_checks_answered(&st, &guard, 12).await;
    assert_eq!(answered, 2, "the two checks left in the budget");
}

/// Exact counters are counted by an upsert that returns the count (migration 0012), before the
/// send knows whether it passes. Racing sends to one number still get exactly its limit, and a
/// refused send takes its counts back: the number's counter holds only the sends that went
/// out, and a counter the refused send was the first to touch has no window running.
#[tokio::test]
async fn exact_counters_are_exact_under_racing_sends_and_refusals_leave_no_trace() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = std::sync::Arc::new(store(&db.url));
    let quota = |scope, key: &str, limit| verifyd::quota::Quota {
        scope,
        key: key.into(),
        limit,
        window: Duration::from_secs(600),
    };
    use verifyd::quota::Scope::{IpSends, PhoneHardSends};
    let racer = SendGuard {
        quotas: vec![quota(PhoneHardSends, "+8613800138000", 3)],
        ..Default::default()
    };
    let mut tasks = vec![];
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
    for n in 0..16u8 {
        st.create_session(&key(n), &Map::new(), Expiry::Default)
            .await
            .unwrap();
        let (st, guard, barrier) = (st.clone(), racer.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let p = phone();
            barrier.wait().await;
            st.start_send(&send(key(n), &p, 1), &guard)
                .await
                .unwrap()
                .outcome
        }));
    }
    let mut issued = 0;
    for task in tasks {
        match task.await.unwrap() {
            StartOutcome::Issued { .. } => issued += 1,
            StartOutcome::Refused {
                by: verifyd::quota::Refusal::Quota(PhoneHardSends),
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(issued, 3);
    assert_eq!(
        counter(&db.url, "phone_hard_sends", "+8613800138000").await,
        Some((3, true))
    );

    // A full address refuses a send to a number never seen: the number's counter, opened by
    // the refused send's upsert, is closed again, so its first real send starts a full window.
    let other = PhoneNumber::parse_e164("+12015550123").unwrap();
    let full = SendGuard {
        quotas: vec![
            quota(PhoneHardSends, "+12015550123", 3),
            quota(IpSends, "192.0.2.9", 1),
        ],
        ..Default::default()
    };
    st.create_session(&key(100), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    st.create_session(&key(101), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let first = SendGuard {
        quotas: vec![quota(IpSends, "192.0.2.9", 1)],
        ..Default::default()
    };
    let p = phone();
    let out = st.start_send(&send(key(100), &p, 2), &first).await.unwrap();
    assert!(
        matches!(out.outcome, StartOutcome::Issued { .. }),
        "{out:?}"
    );
    let out = st
        .start_send(&send(key(101), &other, 3), &full)
        .await
        .unwrap();
    assert!(
        matches!(
            out.outcome,
            StartOutcome::Refused {
                by: verifyd::quota::Refusal::Quota(IpSends),
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        counter(&db.url, "phone_hard_sends", "+12015550123").await,
        Some((0, false))
    );
    assert_eq!(
        counter(&db.url, "ip_sends", "192.0.2.9").await,
        Some((1, true))
    );
}

/// The check's exact quotas are counted the same way (migration 0012): racing checks get exactly
/// a small address budget, and a refused check leaves a counter it was first to touch with no
/// count and no window.
#[tokio::test]
async fn exact_check_budgets_are_exact_under_racing_checks_and_refusals_leave_no_trace() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = std::sync::Arc::new(store(&db.url));
    let quota = |key: &str, limit| verifyd::quota::Quota {
        scope: verifyd::quota::Scope::IpChecks,
        key: key.into(),
        limit,
        window: Duration::from_secs(3600),
    };
    st.create_session(&key(1), &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let small = CheckGuard {
        quotas: vec![quota("192.0.2.7", 5)],
        ..Default::default()
    };
    let answered = racing_checks_answered(&st, &small, 12).await;
    assert_eq!(answered, 5);
    assert_eq!(
        counter(&db.url, "ip_checks", "192.0.2.7").await,
        Some((5, true))
    );

    let both = CheckGuard {
        quotas: vec![quota("192.0.2.7", 5), quota("192.0.2.8", 5)],
        ..Default::default()
    };
    let out = spawn_check(&st, &both, 50).await.unwrap();
    assert!(
        matches!(
            out,
            CheckOutcome::Refused {
                by: verifyd::quota::Refusal::Quota(verifyd::quota::Scope::IpChecks),
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        counter(&db.url, "ip_checks", "192.0.2.7").await,
        Some((5, true))
    );
    assert_eq!(
        counter(&db.url, "ip_checks", "192.0.2.8").await,
        Some((0, false))
    );
}
