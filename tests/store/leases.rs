//! Several daemons on one PostgreSQL database, each holding leases of the shared budgets and
//! counting the breaker in memory (migrations/postgres/0013): a cap is never exceeded, what it
//! refuses early is bounded and handed back when a daemon stops, and the breaker never trips
//! early and trips late by at most 64 sends per daemon.

use crate::common;

use common::pg::{TestDb, client as sql, store, store_waiting};
use serde_json::Map;
use std::sync::Arc;
use std::time::Duration;
use verifyd::code::CodeMac;
use verifyd::phone::PhoneNumber;
use verifyd::quota::{CheckGuard, PumpingRule, Quota, Refusal, Scope, SendGuard};
use verifyd::session::{Expiry, KeyHash};
use verifyd::store::postgres::PgStore;
use verifyd::store::{
    Approval, CheckOutcome, CheckVerification, Maintenance, NewSession, SessionStore, StartOutcome,
    StartVerification, VerificationStore,
};

/// The largest block a daemon asks for, and how many sends of a country it judges in memory at
/// most (src/store/postgres/budget.rs).
const BLOCK: i64 = 256;
const HELD: u32 = 64;

/// A daemon of the races here, which queue hundreds of requests on each one's pool: what they
/// test is the leases, not how long the last request waits for a connection.
fn racer(url: &str) -> PgStore {
    store_waiting(url, Duration::from_secs(120))
}

/// Opens the running hour of the shared counter (`scope`, `key`) with `count` already counted
/// in one of its shards.
async fn counted(url: &str, scope: &str, key: &str, count: i32) {
    sql(url)
        .await
        .execute(
            "WITH w AS (
                 INSERT INTO quota_counters VALUES ($1, $2, 0, now() + interval '1 hour')
                 RETURNING expires_at)
             INSERT INTO quota_shards SELECT $1, $2, 5, expires_at, $3::integer FROM w",
            &[&scope, &key, &count],
        )
        .await
        .unwrap();
}

/// A browser's first send (`n` names its session and number): a new session with the code.
async fn first_send(st: &PgStore, n: u32, guard: &SendGuard) -> StartOutcome {
    let mut k = [0x5a; 32];
    k[..4].copy_from_slice(&n.to_be_bytes());
    let key = KeyHash(k);
    let phone = PhoneNumber::parse_e164(&format!("+86138{n:08}")).unwrap();
    let req = StartVerification {
        key,
        phone: &phone,
        code_mac: CodeMac([7; 32]),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl: Duration::from_secs(300),
        resend_interval: Duration::from_secs(60),
        max_attempts: 5,
        new_session: Some(NewSession {
            key,
            expiry: Expiry::Default,
        }),
    };
    st.start_send(&req, guard).await.unwrap().outcome
}

/// `per_daemon` sends on each daemon at once (numbers from `first`); how many were issued, and
/// every other outcome must be a refusal `by`.
async fn race(
    daemons: &[Arc<PgStore>],
    first: u32,
    per_daemon: u32,
    guard: &SendGuard,
    by: Refusal,
) -> u32 {
    let mut tasks = vec![];
    for (d, st) in daemons.iter().enumerate() {
        for i in 0..per_daemon {
            let (st, guard) = (st.clone(), guard.clone());
            let n = first + d as u32 * per_daemon + i;
            tasks.push(tokio::spawn(
                async move { first_send(&st, n, &guard).await },
            ));
        }
    }
    let mut issued = 0;
    for t in tasks {
        match t.await.unwrap() {
            StartOutcome::Issued { .. } => issued += 1,
            StartOutcome::Refused { by: b, .. } if b == by => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    issued
}

/// The breaker of +86 alone: it trips at `min_sample` sends with under one approval per two.
fn breaker(min_sample: u32) -> SendGuard {
    SendGuard {
        pumping: Some(PumpingRule {
            country: "+86".into(),
            window: Duration::from_secs(3600),
            min_sample,
            min_conversion: 0.5,
        }),
        ..Default::default()
    }
}

fn global(limit: u32) -> SendGuard {
    SendGuard {
        quotas: vec![Quota {
            scope: Scope::Global,
            key: "*".into(),
            limit,
            window: Duration::from_secs(3600),
        }],
        ..Default::default()
    }
}

/// Three daemons race 1,200 sends for the last 1,000 of a cap of 100,000 an hour (the rest
/// counted already). Blocks are a sixty-fourth of what is left, so at most 15 here, and a
/// daemon holds at most a block and a half: the cap is never exceeded, the race refuses early
/// by at most the slots the daemons still hold (22 each), and once they stop and hand those
/// back, exactly the cap has gone out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_daemons_never_exceed_a_leased_cap_and_hand_back_what_they_hold() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    counted(&db.url, "global", "*", 99_000).await;
    let guard = global(100_000);
    let daemons: Vec<_> = (0..3).map(|_| Arc::new(racer(&db.url))).collect();
    let issued = race(&daemons, 0, 400, &guard, Refusal::Quota(Scope::Global)).await;
    eprintln!("the race issued {issued} of the last 1000");
    let held = 1000 / 64 * 3 / 2;
    assert!(
        issued <= 1000,
        "{issued} sends went out: the cap was exceeded"
    );
    assert!(
        issued >= 1000 - 3 * held,
        "{issued} sends went out: more refused early than the daemons can hold"
    );

    // A daemon that stops hands back its unspent slots; the other daemons can then spend them,
    // and not one more.
    for st in &daemons[1..] {
        st.hand_back().await.unwrap();
    }
    let mut late = 0;
    for n in 0..100 {
        match first_send(&daemons[0], 10_000 + n, &guard).await {
            StartOutcome::Issued { .. } => late += 1,
            StartOutcome::Refused {
                by: Refusal::Quota(Scope::Global),
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    daemons[0].hand_back().await.unwrap();
    let kept = 1000 - issued - late;
    assert!(
        kept <= held,
        "{issued} + {late} sends went out: daemon 0 held {kept} slots, more than a block and a half"
    );
    let counted: i64 = sql(&db.url)
        .await
        .query_one(
            "SELECT sum(count)::bigint FROM quota_shards WHERE scope = 'global'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        counted,
        99_000 + i64::from(issued + late),
        "after every daemon handed back, the count is the sends that went out"
    );
}

/// A cap as large as the bench's (10^9): blocks of 256, the next one asked for when half of
/// the last is left, so a daemon holds at most a block and a half; what it holds is counted
/// until it hands it back.
#[tokio::test]
async fn a_daemon_holds_a_block_and_a_half_of_a_counter_at_most() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let guard = global(1_000_000_000);
    let (a, b) = (store(&db.url), store(&db.url));
    let counted = || async {
        let c: i64 = sql(&db.url)
            .await
            .query_one(
                "SELECT sum(count)::bigint FROM quota_shards WHERE scope = 'global'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        c
    };
    for n in 0..300 {
        assert!(matches!(
            first_send(&a, n, &guard).await,
            StartOutcome::Issued { .. }
        ));
        // The first block, then the second once half of the first is spent (the 128th send).
        let blocks = if n < 127 { 1 } else { 2 };
        assert_eq!(counted().await, blocks * BLOCK, "after send {n}");
        assert!(counted().await - i64::from(n + 1) <= BLOCK * 3 / 2);
    }
    assert!(matches!(
        first_send(&b, 300, &guard).await,
        StartOutcome::Issued { .. }
    ));
    assert_eq!(counted().await, 3 * BLOCK, "the second daemon's own block");
    a.hand_back().await.unwrap();
    b.hand_back().await.unwrap();
    assert_eq!(counted().await, 301, "what they held is handed back");
}

/// The breaker of a country (trip at 200 sends with under one approval per two): three daemons
/// race 600 sends with no approvals. The breaker never trips before the 200th send, and trips
/// late by at most what the daemons judged in memory and had not added (64 each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_daemons_trip_the_breaker_late_by_at_most_the_bound() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let guard = breaker(200);
    let daemons: Vec<_> = (0..3).map(|_| Arc::new(racer(&db.url))).collect();
    // One send each first: a daemon judges in memory only once it has seen the window.
    for (n, st) in daemons.iter().enumerate() {
        let n = 10_000 + n as u32;
        assert!(matches!(
            first_send(st, n, &guard).await,
            StartOutcome::Issued { .. }
        ));
    }
    let issued = 3 + race(&daemons, 0, 200, &guard, Refusal::Breaker).await;
    eprintln!("the breaker tripped after {issued} sends (200 exactly)");
    assert!(
        issued >= 200,
        "only {issued} sends went out: the breaker tripped early"
    );
    assert!(
        issued <= 200 + 3 * HELD,
        "{issued} sends went out: the breaker tripped later than the bound"
    );
    let states = daemons[0].pumping_states().await.unwrap();
    assert!(states[0].tripped, "{states:?}");
    for st in &daemons {
        st.hand_back().await.unwrap();
    }
    let states = daemons[0].pumping_states().await.unwrap();
    assert_eq!(
        states[0].sends, issued,
        "every send counted once all are added"
    );
}

/// Approvals a daemon has not seen (made on another daemon since it last asked) never make it
/// trip the breaker: near the trip point a send is judged by the database, on every approval.
#[tokio::test]
async fn approvals_a_daemon_has_not_seen_never_trip_the_breaker() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let guard = breaker(20);
    let st = store(&db.url);
    for n in 0..10 {
        assert!(matches!(
            first_send(&st, n, &guard).await,
            StartOutcome::Issued { .. }
        ));
    }
    // Another daemon's users typed 100 right codes meanwhile.
    sql(&db.url)
        .await
        .execute(
            "INSERT INTO pumping_shards SELECT '+86', 9, expires_at, 0, 100 FROM pumping
             ON CONFLICT (country, shard) DO UPDATE SET approvals = 100",
            &[],
        )
        .await
        .unwrap();
    for n in 10..60 {
        let out = first_send(&st, n, &guard).await;
        assert!(
            matches!(out, StartOutcome::Issued { .. }),
            "send {n}: {out:?}"
        );
    }
    let states = st.pumping_states().await.unwrap();
    assert_eq!(
        (states[0].sends, states[0].approvals, states[0].tripped),
        (60, 100, false)
    );
}

/// A send whose delivery failed is taken back from the daemon's own count, so the breaker
/// counts only sends that went out.
#[tokio::test]
async fn an_abandoned_send_counted_in_memory_is_taken_back() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let guard = breaker(1000);
    let st = store(&db.url);
    for n in 0..3 {
        assert!(matches!(
            first_send(&st, n, &guard).await,
            StartOutcome::Issued { .. }
        ));
    }
    let phone = PhoneNumber::parse_e164("+8613800000002").unwrap();
    let mut k = [0x5a; 32];
    k[..4].copy_from_slice(&2u32.to_be_bytes());
    let session = st.touch_session(&KeyHash(k)).await.unwrap().unwrap();
    st.abandon_send(session.id, &phone, &CodeMac([7; 32]), &guard)
        .await
        .unwrap();
    let states = st.pumping_states().await.unwrap();
    assert_eq!(states[0].sends, 2);
}

/// A check's large address budget is leased the same way: three daemons race 2,400 checks (each
/// finds no code, so each one the budget lets through counts) for the last 2,000 of a budget of
/// a million. Blocks are 31 here: never more than 2,000 are answered, at most 3 × 46 fewer
/// while the daemons hold slots, and exactly 2,000 once they hand those back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_daemons_never_exceed_a_leased_check_budget() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    counted(&db.url, "ip_checks", "192.0.2.7", 998_000).await;
    let guard = CheckGuard {
        quotas: vec![Quota {
            scope: Scope::IpChecks,
            key: "192.0.2.7".into(),
            limit: 1_000_000,
            window: Duration::from_secs(3600),
        }],
        ..Default::default()
    };
    let daemons: Vec<_> = (0..3).map(|_| Arc::new(racer(&db.url))).collect();
    let session = KeyHash([0x33; 32]);
    daemons[0]
        .create_session(&session, &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let check = |st: Arc<PgStore>, guard: CheckGuard| async move {
        let (phone, data) = (
            PhoneNumber::parse_e164("+8613800138000").unwrap(),
            Map::new(),
        );
        let req = CheckVerification {
            key: session,
            phone: &phone,
            code_mac: CodeMac([1; 32]),
            max_attempts: 5,
            on_approve: Approval {
                new_key: KeyHash([0x34; 32]),
                data: &data,
            },
        };
        match st.check_guarded(&req, &guard).await.unwrap().outcome {
            CheckOutcome::NotFound => 1,
            CheckOutcome::Refused {
                by: Refusal::Quota(Scope::IpChecks),
                ..
            } => 0,
            other => panic!("unexpected {other:?}"),
        }
    };
    let mut tasks = vec![];
    for st in &daemons {
        for _ in 0..800 {
            tasks.push(tokio::spawn(check(st.clone(), guard.clone())));
        }
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    eprintln!("the race answered {answered} of the last 2000 checks");
    let held = 2000 / 64 * 3 / 2;
    assert!(
        answered <= 2000,
        "{answered} checks answered: the budget was exceeded"
    );
    assert!(
        answered >= 2000 - 3 * held,
        "{answered} checks answered: too many refused early"
    );
    for st in &daemons {
        st.hand_back().await.unwrap();
    }
    let mut late = 0;
    for _ in 0..200 {
        late += check(daemons[0].clone(), guard.clone()).await;
    }
    daemons[0].hand_back().await.unwrap();
    assert!(answered + late <= 2000);
    assert!(
        2000 - answered - late <= held,
        "daemon 0 held more than a block and a half"
    );
}

/// A daemon of an earlier version (10 to 12) calls `verifyd_start_send`, which counts per send
/// on the shards. During a rolling upgrade it races two leasing daemons for the last 1,000 of a
/// cap: together they never exceed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_of_the_previous_version_and_leasing_ones_share_a_cap_exactly() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    counted(&db.url, "global", "*", 99_000).await;
    let guard = global(100_000);
    let daemons: Vec<_> = (0..2).map(|_| Arc::new(racer(&db.url))).collect();
    // The earlier daemon: four connections, each sending for a new browser session.
    let mut old = vec![];
    for c in 0..4u32 {
        let url = db.url.clone();
        old.push(tokio::spawn(async move {
            let client = sql(&url).await;
            let mut issued = 0;
            for i in 0..150u32 {
                let n = 50_000 + c * 1000 + i;
                let mut key = [0x6b; 32];
                key[..4].copy_from_slice(&n.to_be_bytes());
                let row = client
                    .query_one(
                        "SELECT o_outcome FROM verifyd_start_send(
                             $1, $1, 60, $2, $3, NULL, NULL, 86400, 300, 60, 5,
                             '{global}', '{*}', '{100000}', '{3600}', '{}', '{}', '{}', '{}',
                             NULL, 0, 0, 0, false, false, false, false,
                             0::smallint, NULL, 1209600, NULL)",
                        &[
                            &key.as_slice(),
                            &format!("+86139{n:08}"),
                            &[7u8; 32].as_slice(),
                        ],
                    )
                    .await
                    .unwrap();
                match row.get::<_, String>(0).as_str() {
                    "issued" => issued += 1,
                    "quota" => {}
                    other => panic!("unexpected {other}"),
                }
            }
            issued
        }));
    }
    let leased = race(&daemons, 0, 400, &guard, Refusal::Quota(Scope::Global)).await;
    let mut earlier = 0;
    for t in old {
        earlier += t.await.unwrap();
    }
    let issued = leased + earlier;
    eprintln!("leasing daemons issued {leased}, the earlier one {earlier}");
    assert!(
        issued <= 1000,
        "{issued} sends went out: the cap was exceeded"
    );
    assert!(
        issued >= 1000 - 2 * (1000 / 64 * 3 / 2),
        "{issued} sends went out"
    );
    for st in &daemons {
        st.hand_back().await.unwrap();
    }
    let counted: i64 = sql(&db.url)
        .await
        .query_one(
            "SELECT sum(count)::bigint FROM quota_shards WHERE scope = 'global'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 99_000 + i64::from(issued));
}
