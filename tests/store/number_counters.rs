//! A number's send quotas on PostgreSQL count in one row per number, and one per number and
//! client network (migrations/postgres/0014): racing daemons sending to one number from many
//! networks get exactly its caps and never deadlock, a refused send leaves the rows as they were,
//! and the counts of running windows survive the upgrade from schema 13.

use crate::common;

use common::pg::{TestDb, client as sql, store};
use serde_json::Map;
use std::sync::Arc;
use std::time::Duration;
use verifyd::code::CodeMac;
use verifyd::phone::PhoneNumber;
use verifyd::quota::{Quota, Refusal, Scope, SendGuard};
use verifyd::session::{Expiry, KeyHash};
use verifyd::store::postgres::PgStore;
use verifyd::store::{
    Maintenance, SessionStore, StartOutcome, StartVerification, VerificationStore,
};

const NUMBER: &str = "+8613800138000";

fn quota(scope: Scope, key: &str, limit: u32, window: u64) -> Quota {
    Quota {
        scope,
        key: key.into(),
        limit,
        window: Duration::from_secs(window),
    }
}

/// The quotas the daemon builds for a browser's send to NUMBER from network `net`, as
/// `SendGuard::build` does: the number's hard caps, its caps from that network, and its soft
/// thresholds (challenges are not asked here: `soft` is empty unless given).
fn guard(net: &str, hard: u32, hard_daily: u32, net_max: u32, soft: Vec<Quota>) -> SendGuard {
    let from_net = format!("{NUMBER} {net}");
    SendGuard {
        quotas: vec![
            quota(Scope::PhoneHardSends, NUMBER, hard, 600),
            quota(Scope::PhoneHardDaily, NUMBER, hard_daily, 86_400),
            quota(Scope::PhoneNetSends, &from_net, net_max, 600),
            quota(Scope::PhoneNetDaily, &from_net, net_max, 86_400),
        ],
        soft,
        ..Default::default()
    }
}

/// A send to NUMBER for the session of key `n` (created first), with a resend interval of 0 so
/// that one session may send again.
async fn send(st: &PgStore, n: u32, guard: &SendGuard) -> StartOutcome {
    let mut k = [0x6e; 32];
    k[..4].copy_from_slice(&n.to_be_bytes());
    let key = KeyHash(k);
    st.create_session(&key, &Map::new(), Expiry::Default)
        .await
        .unwrap();
    let phone = PhoneNumber::parse_e164(NUMBER).unwrap();
    let req = StartVerification {
        key,
        phone: &phone,
        code_mac: CodeMac([3; 32]),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl: Duration::from_secs(300),
        resend_interval: Duration::from_secs(0),
        max_attempts: 5,
        new_session: None,
    };
    st.start_send(&req, guard).await.unwrap().outcome
}

/// The row of `key`: (count in the window, window running; count in the day, day running).
async fn row(url: &str, key: &str) -> Option<(i32, bool, i32, bool)> {
    sql(url)
        .await
        .query_opt(
            "SELECT short_n, short_end > now(), day_n, day_end > now()
             FROM number_counters WHERE key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
}

/// Three daemons send to one number from eight networks at once, 48 sends for a cap of 10 and 2
/// per network: exactly 10 go out, no network gets more than 2, every other send is refused by
/// one of those caps, and no send fails (two rows per send, locked in one order by every send:
/// no deadlock).
#[tokio::test]
async fn racing_daemons_from_many_networks_get_exactly_a_numbers_caps() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let daemons: Vec<Arc<PgStore>> = (0..3).map(|_| Arc::new(store(&db.url))).collect();
    let barrier = Arc::new(tokio::sync::Barrier::new(48));
    let mut tasks = vec![];
    for n in 0..48u32 {
        let st = daemons[n as usize % 3].clone();
        let net = format!("198.51.{}.0/24", n % 8);
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let g = guard(&net, 10, 20, 2, vec![]);
            barrier.wait().await;
            (net, send(&st, n, &g).await)
        }));
    }
    let mut per_net = std::collections::HashMap::<String, u32>::new();
    for task in tasks {
        match task.await.unwrap() {
            (net, StartOutcome::Issued { .. }) => *per_net.entry(net).or_default() += 1,
            (
                _,
                StartOutcome::Refused {
                    by:
                        Refusal::Quota(
                            Scope::PhoneHardSends | Scope::PhoneNetSends | Scope::PhoneNetDaily,
                        ),
                    ..
                },
            ) => {}
            (_, other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(per_net.values().sum::<u32>(), 10, "{per_net:?}");
    assert!(per_net.values().all(|&n| n <= 2), "{per_net:?}");
    assert_eq!(row(&db.url, NUMBER).await, Some((10, true, 10, true)));
    let mut from_nets = 0;
    for net in 0..8 {
        let r = row(&db.url, &format!("{NUMBER} 198.51.{net}.0/24")).await;
        from_nets += r.map_or(0, |(n, _, d, _)| {
            assert_eq!(n, d, "a network's window and day count the same sends");
            n
        });
    }
    assert_eq!(from_nets, 10, "each send counted in its network's row");
}

/// A refused or challenged send counts nowhere: refused by its network's cap, the number's row
/// keeps its counts; asked for a challenge by a soft threshold, both rows keep theirs; and a
/// network's row the refused send was first to open has no window running afterwards.
#[tokio::test]
async fn refused_and_challenged_sends_leave_the_numbers_rows_as_they_were() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let st = store(&db.url);
    let net = "203.0.113.0/24";
    let from_net = format!("{NUMBER} {net}");
    for n in 0..2 {
        let out = send(&st, n, &guard(net, 10, 20, 2, vec![])).await;
        assert!(matches!(out, StartOutcome::Issued { .. }), "{out:?}");
    }
    let out = send(&st, 2, &guard(net, 10, 20, 2, vec![])).await;
    assert!(
        matches!(
            out,
            StartOutcome::Refused {
                by: Refusal::Quota(Scope::PhoneNetSends | Scope::PhoneNetDaily),
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(row(&db.url, NUMBER).await, Some((2, true, 2, true)));
    assert_eq!(row(&db.url, &from_net).await, Some((2, true, 2, true)));

    // A soft threshold of 2 on the number: the third send needs a challenge, counted nowhere.
    let soft = vec![quota(Scope::PhoneSends, NUMBER, 2, 600)];
    let other = "192.0.2.0/24";
    let out = send(&st, 3, &guard(other, 10, 20, 2, soft)).await;
    assert!(
        matches!(
            out,
            StartOutcome::Refused {
                by: Refusal::Challenge,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(row(&db.url, NUMBER).await, Some((2, true, 2, true)));
    assert_eq!(
        row(&db.url, &format!("{NUMBER} {other}")).await,
        Some((0, false, 0, false)),
        "the window the challenged send opened is closed again"
    );
}

/// A rolling upgrade from schema 13: the number's counts in `quota_counters` move to its rows, so
/// a number at its cap stays at its cap across the upgrade; ended windows are left behind.
#[tokio::test]
async fn running_windows_move_over_from_schema_13() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let c = sql(&db.url).await;
    c.batch_execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        .await
        .unwrap();
    // Schema 13 as a daemon of that version leaves it, with the bookkeeping migrate() reads.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    c.batch_execute(
        "CREATE TABLE schema_migrations (
             version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .unwrap();
    for (i, path) in files.iter().take(13).enumerate() {
        c.batch_execute(&std::fs::read_to_string(path).unwrap())
            .await
            .unwrap();
        let name = path.file_stem().unwrap().to_str().unwrap();
        c.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&(i as i32 + 1), &name],
        )
        .await
        .unwrap();
    }
    let from_net = format!("{NUMBER} 203.0.113.0/24");
    c.execute(
        "INSERT INTO quota_counters VALUES
             ('phone_hard_sends', $1, 3, now() + interval '5 minutes'),
             ('phone_sends', $1, 3, now() + interval '5 minutes'),
             ('phone_hard_daily', $1, 7, now() + interval '20 hours'),
             ('phone_net_sends', $2, 1, now() - interval '1 minute'),
             ('phone_net_daily', $2, 2, now() + interval '20 hours'),
             ('ip_sends', '203.0.113.9', 4, now() + interval '30 minutes')",
        &[&NUMBER, &from_net],
    )
    .await
    .unwrap();

    let st = store(&db.url);
    st.migrate().await.unwrap();

    assert_eq!(row(&db.url, NUMBER).await, Some((3, true, 7, true)));
    assert_eq!(
        row(&db.url, &from_net).await,
        Some((0, false, 2, true)),
        "the ended window is not carried"
    );
    let left: Vec<String> = c
        .query("SELECT scope FROM quota_counters ORDER BY scope", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["ip_sends"], "only the number's counters moved");
    // The number's cap of 3 per window is still full.
    let out = send(&st, 1, &guard("203.0.113.0/24", 3, 20, 5, vec![])).await;
    assert!(
        matches!(
            out,
            StartOutcome::Refused {
                by: Refusal::Quota(Scope::PhoneHardSends),
                ..
            }
        ),
        "{out:?}"
    );
}

/// The sweeper removes a number's row once both its windows have ended, and not before: a row
/// whose short window ended while its day runs keeps counting the day.
#[tokio::test]
async fn the_sweeper_removes_a_row_once_both_windows_have_ended() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    sql(&db.url)
        .await
        .batch_execute(
            "INSERT INTO number_counters (key, short_n, short_end, day_n, day_end) VALUES
                 ('+12015550100', 2, now() - interval '1 minute', 4, now() - interval '1 second'),
                 ('+12015550101', 2, now() - interval '1 minute', 4, now() + interval '1 hour'),
                 ('+12015550102', 0, '-infinity', 1, now() - interval '1 hour')",
        )
        .await
        .unwrap();
    let report = store(&db.url)
        .sweep(1000, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(report.limits, 2);
    assert_eq!(row(&db.url, "+12015550100").await, None);
    assert_eq!(row(&db.url, "+12015550102").await, None);
    assert_eq!(
        row(&db.url, "+12015550101").await,
        Some((2, false, 4, true))
    );
}
