//! Failover of the PostgreSQL primary under send/check traffic, on a private primary and a
//! streaming standby made with `pg_basebackup -R`. The daemon's URL names both hosts with
//! `target_session_attrs=read-write`, as the README's deployment guide says. Measured: time from
//! the promotion to the first success, the 503s in between, and what acknowledged work the new
//! primary holds.

use super::{daemon_on, phone};
use crate::common::cluster::Cluster;
use crate::common::daemon::TestDaemon;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use verifyd::config::{ChallengeMode, Config};
use verifyd::seconds::Seconds;

/// Store limits of the daemons here. One store call may take at most acquire + connect per
/// host (two hosts) + statement + the one-second margin `PgStore` adds before it must answer.
/// A request makes several store calls (a send with same-code resends makes four) and the
/// deadline is per call, so the calls before the one the freeze catches count too: they
/// answered normally, which on a loaded 2-core CI machine has taken up to a second (a 5.5 s
/// send was seen with a 0.5 s allowance). Hence the 1.5 s allowance; one deadline for the
/// whole request would make it unnecessary.
const CONNECT_S: u64 = 1;
const ACQUIRE_MS: u64 = 500;
const STATEMENT_MS: u64 = 1000;
const BOUND: Duration =
    Duration::from_millis(ACQUIRE_MS + STATEMENT_MS + 2 * CONNECT_S * 1000 + 1000 + 1500);
/// The target: requests succeed again at most this long after the promotion.
const RECOVERY: Duration = Duration::from_secs(5);

/// A running primary and a standby streaming from it; synchronous (`synchronous_standby_names
/// = '*'`) when asked, so that a commit is acknowledged only once the standby has it.
fn pair(synchronous: bool) -> Option<(Cluster, Cluster)> {
    let primary = Cluster::init()?;
    if synchronous {
        primary.conf("synchronous_standby_names = '*'");
    }
    primary.start();
    let standby = Cluster::standby_of(&primary);
    // The standby copies the primary's settings; once promoted it has no standby of its own,
    // and a synchronous commit would wait for one forever.
    standby.conf("synchronous_standby_names = ''");
    standby.start();
    let want = if synchronous { "sync" } else { "async" };
    primary.wait_for(
        "SELECT string_agg(sync_state, ',') FROM pg_stat_replication WHERE state = 'streaming'",
        want,
    );
    Some((primary, standby))
}

fn both(primary: &Cluster, standby: &Cluster) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    )
}

/// Short store limits, and no per-address, per-network or global quota and no challenge: the
/// traffic all comes from 127.0.0.1 and would hit them (or be asked to solve a challenge once
/// its network has used most of its allowance).
fn limits(c: &mut Config) {
    c.store.postgres.connect_timeout = CONNECT_S;
    c.store.postgres.acquire_timeout = Seconds::from_millis(ACQUIRE_MS);
    c.store.postgres.statement_timeout = Seconds::from_millis(STATEMENT_MS);
    c.per_ip.max_sends = 0;
    c.per_ip.max_checks = 0;
    c.per_ip.prefix_max_sends = 0;
    c.per_phone.network_max_sends = 0;
    c.per_phone.network_daily_max = 0;
    c.per_phone.network_max_failed_checks = 0;
    c.global.max_sends_per_hour = 0;
    c.pumping.enabled = false;
    // Over its per-number budget a browser is then refused (429), not asked for a challenge.
    c.challenge.mode = ChallengeMode::Off;
}

/// One request as the client saw it.
#[derive(Debug)]
struct Seen {
    at: Instant,
    took: Duration,
    status: StatusCode,
    error: Value,
    phone: String,
    /// A check repeated after a 503: the first try may have approved the number (and so
    /// replaced the session key) before its answer was lost.
    retry: bool,
}

impl Seen {
    fn done(&self) -> Instant {
        self.at + self.took
    }
}

/// Send/check traffic from a few concurrent clients, each a fresh browser per number.
struct Traffic {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Numbers whose send was answered 202, and those whose check was answered "approved".
    sent: Arc<Mutex<Vec<String>>>,
    approved: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(d: &Arc<TestDaemon>, workers: u32, prefix: u32) -> Traffic {
        let t = Traffic {
            stop: Arc::default(),
            seen: Arc::default(),
            sent: Arc::default(),
            approved: Arc::default(),
            tasks: Vec::new(),
        };
        let tasks = (0..workers)
            .map(|w| {
                let (d, stop, seen) = (d.clone(), t.stop.clone(), t.seen.clone());
                let (sent, approved) = (t.sent.clone(), t.approved.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let number = phone(prefix, w * 1000 + n);
                        n += 1;
                        client(&d, &number, &stop, &seen, &sent, &approved).await;
                    }
                })
            })
            .collect();
        Traffic { tasks, ..t }
    }

    /// When the first request that started at or after `t` succeeded.
    fn first_success_after(&self, t: Instant) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at >= t && s.status.is_success())
            .map(Seen::done)
            .min()
    }

    /// Waits (at most `limit`) for a success that started at or after `t`.
    async fn recovered_after(&self, t: Instant, limit: Duration) -> Duration {
        loop {
            if let Some(ok) = self.first_success_after(t) {
                return ok - t;
            }
            assert!(
                t.elapsed() < limit + BOUND,
                "no request succeeded within {:?} of {limit:?}",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn finish(self) -> (Vec<Seen>, Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let take = |m: &Arc<Mutex<Vec<String>>>| std::mem::take(&mut *m.lock().unwrap());
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (seen, take(&self.sent), take(&self.approved))
    }
}

/// One number: send, then check the code until the check gets an answer other than 503.
async fn client(
    d: &TestDaemon,
    number: &str,
    stop: &AtomicBool,
    seen: &Mutex<Vec<Seen>>,
    sent: &Mutex<Vec<String>>,
    approved: &Mutex<Vec<String>>,
) {
    let mut b = d.browser();
    let record = |at: Instant, status: StatusCode, body: &Value, retry: bool| {
        seen.lock().unwrap().push(Seen {
            at,
            took: at.elapsed(),
            status,
            error: body["error"].clone(),
            phone: number.to_owned(),
            retry,
        });
    };
    let at = Instant::now();
    let (status, body) = b.send_code(number).await;
    record(at, status, &body, false);
    if status != StatusCode::ACCEPTED {
        tokio::time::sleep(Duration::from_millis(20)).await;
        return;
    }
    sent.lock().unwrap().push(number.to_owned());
    let code = d
        .last_code(number)
        .expect("an acknowledged send delivered a code");
    let mut retried = false;
    loop {
        let at = Instant::now();
        let (status, body) = b.check_code(number, &code).await;
        record(at, status, &body, retried);
        match status {
            StatusCode::OK if body["status"] == "approved" => {
                approved.lock().unwrap().push(number.to_owned());
                return;
            }
            StatusCode::SERVICE_UNAVAILABLE if !stop.load(Ordering::Relaxed) => {
                retried = true;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            StatusCode::SERVICE_UNAVAILABLE => return,
            // A check whose answer was lost may have approved the number already.
            _ if retried && status.is_client_error() => return,
            _ => panic!("checking an acknowledged send of {number} answered {status} {body}"),
        }
    }
}

/// Every request answered within [`BOUND`], with success or 503 `store_unavailable` — or,
/// for a check repeated after a 503, `not_found` (the first try approved and cycled the key).
fn assert_fast_and_clean(seen: &[Seen]) -> usize {
    let mut unavailable = 0;
    for s in seen {
        assert!(s.took < BOUND, "a request took {:?}: {s:?}", s.took);
        if s.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(s.error, "store_unavailable", "{s:?}");
            unavailable += 1;
        } else if s.retry && s.status == StatusCode::NOT_FOUND {
            assert_eq!(s.error, "not_found", "{s:?}");
        } else {
            assert!(s.status.is_success(), "unexpected answer {s:?}");
        }
    }
    unavailable
}

/// Numbers whose repeated check found the session gone: approved by a try whose answer was lost.
fn approved_unanswered(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.retry && s.status == StatusCode::NOT_FOUND)
        .map(|s| s.phone.clone())
        .collect()
}

/// Numbers from `want` that `sql` (one phone per row) does not return on `c`.
fn missing(c: &Cluster, sql: &str, want: &[String]) -> Vec<String> {
    let have: HashSet<String> = c.psql(sql).lines().map(str::to_owned).collect();
    want.iter()
        .filter(|p| !have.contains(*p))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_synchronous_standby_takes_over_with_nothing_acknowledged_lost() {
    let Some((primary, standby)) = pair(true) else {
        return;
    };
    let d = Arc::new(daemon_on(&both(&primary, &standby), limits).await);
    let traffic = Traffic::start(&d, 3, 10);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // A crash of the primary: no shutdown, no goodbye to clients or the standby.
    primary.stop("immediate");
    let crashed = Instant::now();
    // The standby is still read-only: the daemon must not write there, only answer 503.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let promoting = Instant::now();
    standby.promote();
    let promoted = Instant::now();
    let recovery = traffic.recovered_after(promoted, RECOVERY).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (seen, sent, approved) = traffic.finish().await;

    let unavailable = assert_fast_and_clean(&seen);
    let before = seen.iter().filter(|s| s.done() < crashed).count();
    assert!(before >= 10, "only {before} requests before the crash");
    let between: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > crashed && s.done() < promoting)
        .collect();
    assert!(
        !between.is_empty(),
        "no request while the standby was unpromoted"
    );
    assert!(
        between
            .iter()
            .all(|s| s.status == StatusCode::SERVICE_UNAVAILABLE),
        "a request succeeded with no primary: {between:?}"
    );
    let log = std::fs::read_to_string(standby.dir().join("postgres.log")).unwrap();
    assert!(
        !log.contains("read-only transaction"),
        "a write reached the unpromoted standby:\n{log}"
    );
    assert!(
        recovery <= RECOVERY,
        "requests succeeded again only {recovery:?} after the promotion"
    );
    let lost_sends = missing(&standby, "SELECT phone FROM verifications", &sent);
    let lost_approvals = missing(
        &standby,
        "SELECT phone FROM verifications WHERE state = 1",
        &approved,
    );
    assert!(
        lost_sends.is_empty() && lost_approvals.is_empty(),
        "acknowledged but missing on the new primary: sends {lost_sends:?}, approvals \
         {lost_approvals:?}"
    );
    let unanswered = approved_unanswered(&seen);
    let unexplained = missing(
        &standby,
        "SELECT phone FROM verifications WHERE state = 1",
        &unanswered,
    );
    assert!(
        unexplained.is_empty(),
        "a repeated check found no session, yet the number is not approved: {unexplained:?}"
    );
    eprintln!(
        "synchronous failover: {} requests, {unavailable} answered 503; {} sends and {} \
         approvals acknowledged, none lost ({} more approved with the answer lost); promotion \
         took {:?}; first success {recovery:?} after it",
        seen.len(),
        sent.len(),
        approved.len(),
        unanswered.len(),
        promoted - promoting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_to_a_demoted_read_only_primary_are_dropped_for_the_new_one() {
    let Some((primary, standby)) = pair(false) else {
        return;
    };
    let d = Arc::new(daemon_on(&both(&primary, &standby), limits).await);
    // Fill the pool with connections to the primary.
    let traffic = Traffic::start(&d, 4, 20);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (seen, _, _) = traffic.finish().await;
    assert_eq!(assert_fast_and_clean(&seen), 0);
    let on_old = |c: &Cluster| -> u32 {
        c.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'verifyd'")
            .parse()
            .unwrap()
    };
    assert!(
        on_old(&primary) > 1,
        "the pool holds connections to the primary"
    );

    // The old primary turns read-only without dropping its sessions, as a fenced or demoted
    // node may; the standby becomes the primary.
    primary.psql("ALTER SYSTEM SET default_transaction_read_only = on");
    primary.psql("SELECT pg_reload_conf()");
    standby.promote();
    let promoted = Instant::now();
    let traffic = Traffic::start(&d, 2, 21);
    let recovery = traffic.recovered_after(promoted, RECOVERY).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let late = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (seen, sent, _) = traffic.finish().await;

    let unavailable = assert_fast_and_clean(&seen);
    assert!(
        seen.iter()
            .filter(|s| s.at >= late)
            .all(|s| s.status.is_success()),
        "requests still fail once the pool has moved"
    );
    assert!(recovery <= RECOVERY, "recovered only after {recovery:?}");
    assert_eq!(
        on_old(&primary),
        0,
        "connections to the read-only node remain"
    );
    let lost = missing(&standby, "SELECT phone FROM verifications", &sent);
    assert!(lost.is_empty(), "sends not on the new primary: {lost:?}");
    eprintln!(
        "read-only old primary: {unavailable} requests answered 503 before the pool moved; first \
         success {recovery:?} after the promotion"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_primary_gets_fast_503s_and_then_the_promoted_standby_serves() {
    let Some((primary, standby)) = pair(false) else {
        return;
    };
    let d = Arc::new(daemon_on(&both(&primary, &standby), limits).await);
    let traffic = Traffic::start(&d, 3, 30);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The host stops answering but its sockets stay open: nothing tells the client.
    primary.freeze();
    let frozen = Instant::now();
    // Long enough for the requests caught in flight to reach their deadline, and for later
    // ones to fail on their own (the frozen host's connect timeout, then a read-only standby).
    tokio::time::sleep(BOUND + Duration::from_millis(1500)).await;
    let promoting = Instant::now();
    standby.promote();
    let promoted = Instant::now();
    let recovery = traffic.recovered_after(promoted, RECOVERY).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (seen, _, _) = traffic.finish().await;

    let unavailable = assert_fast_and_clean(&seen);
    let during: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.at > frozen && s.done() < promoting)
        .collect();
    assert!(!during.is_empty(), "no request answered while frozen");
    assert!(
        during
            .iter()
            .all(|s| s.status == StatusCode::SERVICE_UNAVAILABLE),
        "{during:?}"
    );
    assert!(recovery <= RECOVERY, "recovered only after {recovery:?}");
    let slowest = seen.iter().map(|s| s.took).max().unwrap();
    eprintln!(
        "frozen primary: {} requests, {unavailable} answered 503 (slowest answer {slowest:?}, \
         bound {BOUND:?}); first success {recovery:?} after the promotion",
        seen.len()
    );
}

/// Retries `op` while it answers 503 (the failover still settling), at most for [`BOUND`] × 2.
async fn past_503<F, Fut>(mut op: F) -> (StatusCode, Value)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Value)>,
{
    let start = Instant::now();
    loop {
        let (status, body) = op().await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return (status, body);
        }
        assert!(
            start.elapsed() < BOUND * 2,
            "still 503 after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_daemons_keep_quotas_and_single_use_approval_exact_across_a_failover() {
    let Some((primary, standby)) = pair(true) else {
        return;
    };
    let d1 = daemon_on(&both(&primary, &standby), |c| {
        limits(c);
        c.per_phone.max_sends = 5;
    })
    .await;
    let d2 = d1.sibling().await;
    let quota_number = phone(40, 0);
    for d in [&d1, &d2] {
        assert_eq!(
            d.browser().send_code(&quota_number).await.0,
            StatusCode::ACCEPTED
        );
    }
    // Codes sent before the crash, each to be checked after it from both daemons at once.
    let mut pending = Vec::new();
    for n in 1..=6 {
        let number = phone(40, n);
        let d = if n % 2 == 0 { &d1 } else { &d2 };
        let mut b = d.browser();
        assert_eq!(b.send_code(&number).await.0, StatusCode::ACCEPTED);
        let code = d.last_code(&number).unwrap();
        pending.push((number, code, b));
    }

    primary.stop("immediate");
    standby.promote();

    // 20 fresh browsers, half on each daemon, race for the 3 sends the quota has left.
    let racers: Vec<_> = (0..20)
        .map(|i| {
            let b = if i % 2 == 0 {
                d1.browser()
            } else {
                d2.browser()
            };
            let number = quota_number.clone();
            tokio::spawn(async move {
                past_503(|| {
                    let (mut b, number) = (b.clone(), number.clone());
                    async move { b.send_code(&number).await }
                })
                .await
            })
        })
        .collect();
    let mut accepted = 0;
    for r in racers {
        let (status, body) = r.await.unwrap();
        match status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(body["error"], "too_many_sends"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(accepted, 3, "the per-number quota across the failover");

    // One code, one cookie, two daemons at once: exactly one approval.
    for (number, code, b1) in pending {
        let mut b2 = b1.clone();
        b2.base = d2.base.clone();
        let mut b1 = b1;
        b1.base = d1.base.clone();
        let (c1, c2) = (code.clone(), code);
        let (n1, n2) = (number.clone(), number.clone());
        let one = tokio::spawn(async move {
            past_503(|| {
                let (mut b, n, c) = (b1.clone(), n1.clone(), c1.clone());
                async move { b.check_code(&n, &c).await }
            })
            .await
        });
        let two = tokio::spawn(async move {
            past_503(|| {
                let (mut b, n, c) = (b2.clone(), n2.clone(), c2.clone());
                async move { b.check_code(&n, &c).await }
            })
            .await
        });
        let answers = [one.await.unwrap(), two.await.unwrap()];
        let approvals = answers
            .iter()
            .filter(|(s, b)| *s == StatusCode::OK && b["status"] == "approved")
            .count();
        assert_eq!(approvals, 1, "{number}: {answers:?}");
        assert!(
            answers
                .iter()
                .all(|(s, b)| s.is_success() || s.is_client_error() && b["error"].is_string()),
            "{answers:?}"
        );
    }
    d2.stop().await;
    d1.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_synchronous_replication_commits_within_the_lag_are_lost() {
    let Some((primary, standby)) = pair(false) else {
        return;
    };
    let d = Arc::new(daemon_on(&both(&primary, &standby), limits).await);
    let traffic = Traffic::start(&d, 2, 60);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A standby that lags (here: is down for half a second) while the asynchronous primary
    // goes on acknowledging commits, then the primary crashes and the standby is promoted.
    let lag_from = traffic.sent.lock().unwrap().len();
    // Sends acknowledged until now are in the WAL up to here; the standby gets that far first.
    let lsn = primary.psql("SELECT pg_current_wal_lsn()");
    standby.wait_for(
        &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"),
        "t",
    );
    standby.stop("fast");
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.stop("immediate");
    standby.start();
    standby.promote();
    traffic.recovered_after(Instant::now(), RECOVERY).await;
    let (_, sent, _) = traffic.finish().await;

    let lost = missing(&standby, "SELECT phone FROM verifications", &sent);
    let (before, during) = sent.split_at(lag_from);
    assert!(
        !lost.is_empty(),
        "no acknowledged send was lost with the standby {} sends behind",
        during.len()
    );
    assert!(
        lost.iter().all(|p| !before.contains(p)),
        "a send acknowledged before the lag began was lost: {lost:?}"
    );
    eprintln!(
        "asynchronous failover: {} of the {} sends acknowledged while the standby lagged are \
         missing on the new primary",
        lost.len(),
        during.len()
    );
}
