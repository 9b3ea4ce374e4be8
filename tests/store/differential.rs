//! The send and check rules exist twice — PL/pgSQL for PostgreSQL and Rust for SQLite, so that
//! each is one round trip — and nothing but running them side by side keeps the twins alike.
//! Random sequences of operations go through the `Store` trait of both stores at once, and every
//! step must get the same answer from both.

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

use verifyd::code::CodeNonce;
use verifyd::phone::PhoneNumber;
use verifyd::quota::{CheckGuard, FailureLimit, PumpingRule, Refusal, Scope, SendGuard};
use verifyd::session::{Expiry, KeyHash, SessionPolicy};
use verifyd::store::{
    Approval, CheckOutcome, CheckVerification, Checked, StartOutcome, StartVerification, Started,
    Store, StoreError,
};

use super::conformance::{approval_data, key, mac, policy, q, secs};
use super::harness::{Sql, make_pg, make_sqlite};

/// Sessions die after ten idle minutes, so that a long enough `Advance` outlives them.
const SESSION_AGE: u32 = 600;

/// Codes a sequence sends; checks also try `000000`, which is never sent.
const CODES: [&str; 3] = ["111111", "222222", "333333"];
const NEVER_SENT: &str = "000000";

const PHONES: [&str; 2] = ["+8613800138000", "+447400123456"];

/// One step of a sequence. Indexes pick among the sequence's sessions, phones and codes modulo
/// their number, so that any generated value means something whatever came before it.
#[derive(Debug, Clone)]
enum Op {
    NewSession,
    Send {
        session: usize,
        phone: usize,
        code: usize,
        ttl: u64,
        cooldown: u64,
        max_attempts: u32,
        /// `same_code`: the live code may be kept (the fresh one is drawn from nonce `code`).
        same: bool,
    },
    /// `code` beyond the sent ones is a code that was never sent.
    Check {
        session: usize,
        phone: usize,
        code: usize,
        max_attempts: u32,
    },
    /// A failed delivery gives the send back; the code may be the live one or a stale one.
    Abandon {
        session: usize,
        phone: usize,
        code: usize,
    },
    /// The clock moves on: every timestamp of the sequence's rows moves this far into the past.
    Advance {
        secs: u64,
    },
    Cycle {
        session: usize,
    },
    Flush {
        session: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let attempts = 1..=4u32;
    prop_oneof![
        1 => Just(Op::NewSession),
        6 => (0..8usize, 0..PHONES.len(), 0..CODES.len(), prop_oneof![Just(30u64), Just(300)],
              prop_oneof![Just(0u64), Just(60)], attempts.clone(), any::<bool>())
            .prop_map(|(session, phone, code, ttl, cooldown, max_attempts, same)| Op::Send {
                session, phone, code, ttl, cooldown, max_attempts, same,
            }),
        6 => (0..8usize, 0..PHONES.len(), 0..=CODES.len(), attempts)
            .prop_map(|(session, phone, code, max_attempts)| Op::Check {
                session, phone, code, max_attempts,
            }),
        2 => (0..8usize, 0..PHONES.len(), 0..CODES.len())
            .prop_map(|(session, phone, code)| Op::Abandon { session, phone, code }),
        3 => prop_oneof![Just(1u64), Just(31), Just(61), Just(301), Just(u64::from(SESSION_AGE) + 1)]
            .prop_map(|secs| Op::Advance { secs }),
        1 => (0..8usize).prop_map(|session| Op::Cycle { session }),
        1 => (0..8usize).prop_map(|session| Op::Flush { session }),
    ]
}

/// A session as both stores know it: its id in each, and its current key (the same in both).
struct Twin {
    ids: [i64; 2],
    key: KeyHash,
}

/// What one step answered, in the terms both stores must agree on. Waits are compared apart,
/// to the second: the stores read different clocks a few milliseconds apart.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The outcome, a wait, the kept code (its nonce, and its lifetime apart like waits), and
    /// whether a session came back (and slid).
    Send(
        String,
        Option<Duration>,
        Option<(CodeNonce, Duration)>,
        Option<bool>,
    ),
    /// The outcome, and an approved session's data and expiry policy; whether a session came
    /// back (and slid).
    Check(String, Option<(Map<String, Value>, Expiry)>, Option<bool>),
    Done(String),
}

fn send_answer(o: &Started) -> Answer {
    let wait = match &o.outcome {
        StartOutcome::TooSoon { retry_after }
        | StartOutcome::Exhausted { retry_after }
        | StartOutcome::Refused { retry_after, .. } => Some(*retry_after),
        StartOutcome::Issued { .. } | StartOutcome::NoSession => None,
    };
    Answer::Send(
        send_shape(&o.outcome),
        wait,
        o.kept.map(|k| (k.nonce, k.ttl)),
        o.session.as_ref().map(|s| s.refreshed),
    )
}

fn check_answer(o: &Checked) -> Answer {
    let approved = match &o.outcome {
        CheckOutcome::Approved { session } => Some((session.data.clone(), session.expiry)),
        _ => None,
    };
    Answer::Check(
        check_shape(&o.outcome),
        approved,
        o.session.as_ref().map(|s| s.refreshed),
    )
}

/// A store error, by kind: the messages are each database's own.
fn failed(e: &StoreError) -> Answer {
    Answer::Done(match e {
        StoreError::Unavailable(_) => "store unavailable".into(),
        StoreError::Internal(_) => "store error".into(),
        StoreError::DataTooLarge(n) => format!("data over {n} bytes"),
        StoreError::SessionGone => "session gone".into(),
    })
}

/// Equal answers, with waits allowed to differ by the one second that rounding may add.
fn alike(a: &Answer, b: &Answer) -> bool {
    match (a, b) {
        (Answer::Send(x, wx, kx, sx), Answer::Send(y, wy, ky, sy)) => {
            let near = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_secs(1);
            x == y
                && sx == sy
                && match (wx, wy) {
                    (Some(a), Some(b)) => near(*a, *b),
                    (a, b) => a == b,
                }
                && match (kx, ky) {
                    (Some((na, ta)), Some((nb, tb))) => na == nb && near(*ta, *tb),
                    (a, b) => a == b,
                }
        }
        _ => a == b,
    }
}

/// Moves every timestamp of the given sessions and their verifications `secs` into the past:
/// to the store, the clock has moved on by that much.
async fn advance(sql: &Sql, session_ids: &[i64], secs: u64) -> Result<(), String> {
    match sql {
        Sql::Sqlite(c) => {
            let ms = i64::try_from(secs * 1000).unwrap();
            for id in session_ids {
                c.execute(
                    "UPDATE verifications SET created_at = created_at - ?1,
                         sent_at = sent_at - ?1, expires_at = expires_at - ?1,
                         keep_until = keep_until - ?1
                     WHERE session_id = ?2",
                    rusqlite::params![ms, id],
                )
                .map_err(|e| e.to_string())?;
                c.execute(
                    "UPDATE sessions SET created_at = created_at - ?1,
                         touched_at = touched_at - ?1, expires_at = expires_at - ?1
                     WHERE id = ?2",
                    rusqlite::params![ms, id],
                )
                .map_err(|e| e.to_string())?;
            }
        }
        Sql::Postgres(c) => {
            let by = secs as f64;
            let ids = session_ids.to_vec();
            c.execute(
                "UPDATE verifications SET created_at = created_at - make_interval(secs => $1),
                     sent_at = sent_at - make_interval(secs => $1),
                     expires_at = expires_at - make_interval(secs => $1),
                     keep_until = keep_until - make_interval(secs => $1)
                 WHERE session_id = ANY($2)",
                &[&by, &ids],
            )
            .await
            .map_err(|e| e.to_string())?;
            c.execute(
                "UPDATE sessions SET created_at = created_at - make_interval(secs => $1),
                     touched_at = touched_at - make_interval(secs => $1),
                     expires_at = expires_at - make_interval(secs => $1)
                 WHERE id = ANY($2)",
                &[&by, &ids],
            )
            .await
            .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Both stores, and a raw connection to each for moving the clock.
struct Pair {
    stores: [Arc<dyn Store>; 2],
    sql: [Sql; 2],
}

impl Pair {
    /// Runs one sequence on fresh sessions of both stores; `Err` names the first step whose
    /// answers differ.
    async fn run(&self, ops: &[Op]) -> Result<(), TestCaseError> {
        let phones = PHONES.map(|p| PhoneNumber::parse_e164(p).unwrap());
        let data = approval_data();
        let mut twins: Vec<Twin> = vec![];
        // Every session ever made, live or not: the clock moves for all of them.
        let mut all_ids: [Vec<i64>; 2] = [vec![], vec![]];
        let fail = |step: usize, e: String| TestCaseError::fail(format!("step {step}: {e}"));
        for (step, op) in std::iter::once(&Op::NewSession).chain(ops).enumerate() {
            let pick = |n: usize| (!twins.is_empty()).then(|| n % twins.len());
            let answers: [Answer; 2] =
                match *op {
                    Op::NewSession => {
                        let k = key();
                        let mut ids = [0; 2];
                        for (i, store) in self.stores.iter().enumerate() {
                            let s = store
                                .create_session(&k, &Map::new(), Expiry::Default)
                                .await
                                .map_err(|e| fail(step, e.to_string()))?;
                            ids[i] = s.id;
                            all_ids[i].push(s.id);
                        }
                        twins.push(Twin { ids, key: k });
                        continue;
                    }
                    Op::Send {
                        session,
                        phone,
                        code,
                        ttl,
                        cooldown,
                        max_attempts,
                        same,
                    } => {
                        let Some(t) = pick(session) else { continue };
                        let mut out = vec![];
                        for store in &self.stores {
                            let req = StartVerification {
                                key: twins[t].key,
                                phone: &phones[phone],
                                code_mac: mac(&phones[phone], CODES[code]),
                                code_nonce: Some(CodeNonce([code as u8; 16])),
                                keep_margin: same.then(|| Duration::from_secs(2)),
                                code_cap: Duration::from_secs(400),
                                ttl: Duration::from_secs(ttl),
                                resend_interval: Duration::from_secs(cooldown),
                                max_attempts,
                                new_session: None,
                            };
                            let o = store.start_send(&req, &SendGuard::default()).await;
                            out.push(o.as_ref().map_or_else(failed, send_answer));
                        }
                        out.try_into().unwrap()
                    }
                    Op::Check {
                        session,
                        phone,
                        code,
                        max_attempts,
                    } => {
                        let Some(t) = pick(session) else { continue };
                        let written = CODES.get(code).copied().unwrap_or(NEVER_SENT);
                        let new_key = key();
                        let mut out = vec![];
                        for store in &self.stores {
                            let req = CheckVerification {
                                key: twins[t].key,
                                phone: &phones[phone],
                                code_mac: mac(&phones[phone], written),
                                max_attempts,
                                on_approve: Approval {
                                    new_key,
                                    data: &data,
                                },
                            };
                            let o = store.check_guarded(&req, &CheckGuard::default()).await;
                            out.push(o.as_ref().map_or_else(failed, check_answer));
                        }
                        if matches!(out[0], Answer::Check(_, Some(_), _)) {
                            twins[t].key = new_key;
                        }
                        out.try_into().unwrap()
                    }
                    Op::Abandon {
                        session,
                        phone,
                        code,
                    } => {
                        let Some(t) = pick(session) else { continue };
                        let mut out = vec![];
                        for (i, store) in self.stores.iter().enumerate() {
                            let id = twins[t].ids[i];
                            let m = mac(&phones[phone], CODES[code]);
                            let done = store
                                .abandon_send(id, &phones[phone], &m, &SendGuard::default())
                                .await;
                            out.push(
                                done.as_ref()
                                    .map_or_else(failed, |()| Answer::Done("ok".into())),
                            );
                        }
                        out.try_into().unwrap()
                    }
                    Op::Advance { secs } => {
                        for (i, sql) in self.sql.iter().enumerate() {
                            advance(sql, &all_ids[i], secs)
                                .await
                                .map_err(|e| fail(step, e))?;
                        }
                        continue;
                    }
                    Op::Cycle { session } => {
                        let Some(t) = pick(session) else { continue };
                        let new_key = key();
                        let mut out = vec![];
                        for store in &self.stores {
                            let s = store.cycle(&twins[t].key, &new_key).await;
                            out.push(s.as_ref().map_or_else(failed, |s| {
                                Answer::Done(format!("cycled: {}", s.is_some()))
                            }));
                        }
                        if out[0] == Answer::Done("cycled: true".into()) {
                            twins[t].key = new_key;
                        }
                        out.try_into().unwrap()
                    }
                    Op::Flush { session } => {
                        let Some(t) = pick(session) else { continue };
                        let mut out = vec![];
                        for store in &self.stores {
                            let gone = store.flush(&twins[t].key).await;
                            out.push(gone.as_ref().map_or_else(failed, |gone| {
                                Answer::Done(format!("flushed: {gone}"))
                            }));
                        }
                        out.try_into().unwrap()
                    }
                };
            prop_assert!(
                alike(&answers[0], &answers[1]),
                "step {step} ({op:?}): SQLite {:?}, PostgreSQL {:?}",
                answers[0],
                answers[1]
            );
        }
        Ok(())
    }
}

/// The number's own quotas alone, as the daemon passes them once its leases cover the shared
/// ones, take PostgreSQL's numbers-only path: judged in PL/pgSQL without a query, and since
/// schema 15 only once a count reaches the least limit of its window. Sends to one number from
/// three networks, some with a challenge passed, cross its soft thresholds, its hard caps and
/// the networks' caps, and every send gets the same answer from both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_judge_a_numbers_own_quotas_alike() {
    let Some(pg) = make_pg(policy()).await else {
        return;
    };
    let lite = make_sqlite(policy()).await.unwrap();
    let stores = [&lite.store, &pg.store];
    let phone = PhoneNumber::parse_e164("+8613800138000").unwrap();
    let nets = ["203.0.113.0/24", "2001:db8:1::/48", "198.51.100.0/24"];
    let quota = |scope, key: &str, limit, window| verifyd::quota::Quota {
        scope,
        key: key.into(),
        limit,
        window: secs(window),
    };
    let mut seen = std::collections::BTreeSet::new();
    for seed in [7_u64, 0x5DEE_CE66_D1CE_4E5B, 0x2545_F491_4F6C_DD1D] {
        let mut rng = Rng(seed);
        // Counter keys are per seed, so that each sequence starts from empty rows.
        let number = format!("{seed:x} {}", phone.as_str());
        for step in 0..40 {
            let from_net = format!("{number} {}", nets[rng.below(3) as usize]);
            let guard = SendGuard {
                quotas: vec![
                    quota(Scope::PhoneHardSends, &number, 8, 600),
                    quota(Scope::PhoneHardDaily, &number, 11, 86_400),
                    quota(Scope::PhoneNetSends, &from_net, 3, 600),
                    quota(Scope::PhoneNetDaily, &from_net, 4, 86_400),
                ],
                soft: vec![
                    quota(Scope::PhoneSends, &number, 4, 600),
                    quota(Scope::PhoneDaily, &number, 6, 86_400),
                ],
                pumping: None,
                challenge: verifyd::quota::ChallengeRule {
                    passed: rng.below(3) == 0,
                    always: false,
                    when_suspicious: true,
                    on_trip: false,
                },
            };
            let mut shapes = vec![];
            // Every send is a browser's first: a session is born with the code.
            let (presented, new) = (key(), key());
            for store in stores {
                let req = StartVerification {
                    key: presented,
                    phone: &phone,
                    code_mac: mac(&phone, "123456"),
                    code_nonce: None,
                    keep_margin: None,
                    code_cap: Duration::from_secs(86_400),
                    ttl: secs(600),
                    resend_interval: Duration::ZERO,
                    max_attempts: 3,
                    new_session: Some(verifyd::store::NewSession {
                        key: new,
                        expiry: Expiry::Default,
                    }),
                };
                let started = store.start_send(&req, &guard).await.unwrap();
                shapes.push(send_shape(&started.outcome));
            }
            assert_eq!(
                shapes[0], shapes[1],
                "seed {seed:#x}, step {step}: send {guard:?}"
            );
            seen.insert(
                shapes
                    .swap_remove(0)
                    .split(' ')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    // The sequences reached every kind of answer these quotas give.
    for kind in ["refused quota", "refused Challenge"] {
        assert!(seen.contains(kind), "{kind} never answered: {seen:?}");
    }
    assert!(seen.iter().any(|s| s.starts_with("Issued")), "{seen:?}");
}

/// A small deterministic generator (xorshift64*), so that a failing sequence can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// An outcome as both stores must agree on it (waits and sessions left out). When several
/// quotas are full, which one is named depends on which window ends last, and the stores' clocks
/// differ in resolution (milliseconds, microseconds): only "a quota" is compared.
fn send_shape(o: &StartOutcome) -> String {
    match o {
        StartOutcome::Refused {
            by: Refusal::Quota(_),
            ..
        } => "refused quota".into(),
        StartOutcome::Refused { by, .. } => format!("refused {by:?}"),
        StartOutcome::TooSoon { .. } => "too_soon".into(),
        StartOutcome::Exhausted { .. } => "exhausted".into(),
        issued => format!("{issued:?}"),
    }
}

fn check_shape(o: &CheckOutcome) -> String {
    match o {
        CheckOutcome::Approved { .. } => "approved".into(),
        CheckOutcome::Refused { by, .. } => format!("refused {by:?}"),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_decide_random_sequences_alike() {
    let Some(pg) = make_pg(policy()).await else {
        return;
    };
    let lite = make_sqlite(policy()).await.unwrap();
    let stores = [&lite.store, &pg.store];
    let phones = ["+8613800138000", "+8613900139000", "+447400900123"]
        .map(|p| PhoneNumber::parse_e164(p).unwrap());
    let nets = ["203.0.113.0/24", "2001:db8:1::/48", "198.51.100.0/24"];
    let rule = PumpingRule {
        country: "+86".into(),
        window: secs(600),
        min_sample: 10,
        min_conversion: 0.25,
    };
    let data = approval_data();
    for seed in [0x9E37_79B9_7F4A_7C15_u64, 0xD1B5_4A32_D192_ED03, 42] {
        let mut rng = Rng(seed);
        // Each session's key, the same in both stores.
        let mut sessions: Vec<KeyHash> = vec![];
        for step in 0..160 {
            let p = rng.below(3) as usize;
            let (phone, net) = (&phones[p], nets[rng.below(3) as usize]);
            if rng.below(3) > 0 {
                // Counter keys are per seed, so that each sequence starts from empty ones.
                let k = |s: &str| format!("{seed:x} {s}");
                let guard = SendGuard {
                    quotas: vec![
                        q(Scope::PhoneHardSends, &k(phone.as_str()), 14),
                        q(Scope::IpSends, &k(net), 16),
                        q(
                            Scope::PhoneNetSends,
                            &k(&format!("{} {net}", phone.as_str())),
                            6,
                        ),
                        q(Scope::Global, &k("*"), 60),
                    ],
                    soft: vec![q(Scope::PhoneSends, &k(phone.as_str()), 4)],
                    pumping: (p < 2).then(|| rule.clone()),
                    challenge: verifyd::quota::ChallengeRule {
                        passed: rng.below(2) == 0,
                        always: rng.below(10) == 0,
                        when_suspicious: rng.below(2) == 0,
                        on_trip: rng.below(2) == 0,
                    },
                };
                let fresh = sessions.is_empty() || rng.below(3) == 0;
                let pick = (!fresh).then(|| rng.below(sessions.len() as u64) as usize);
                let mut shapes = vec![];
                // A fresh session is a browser's first: a key nobody has, and one to be born.
                let (presented, new) = (key(), key());
                for store in stores {
                    let (by, new_session) = match pick {
                        Some(s) => (sessions[s], None),
                        None => {
                            let born = verifyd::store::NewSession {
                                key: new,
                                expiry: Expiry::Default,
                            };
                            (presented, Some(born))
                        }
                    };
                    let req = StartVerification {
                        key: by,
                        phone,
                        code_mac: mac(phone, "123456"),
                        code_nonce: None,
                        keep_margin: None,
                        code_cap: Duration::from_secs(86_400),
                        ttl: secs(600),
                        resend_interval: Duration::ZERO,
                        max_attempts: 3,
                        new_session,
                    };
                    let started = store.start_send(&req, &guard).await.unwrap();
                    shapes.push(send_shape(&started.outcome));
                }
                assert_eq!(
                    shapes[0], shapes[1],
                    "seed {seed:#x}, step {step}: send {guard:?}"
                );
                if pick.is_none() && shapes[0].starts_with("Issued") {
                    sessions.push(new);
                }
            } else if !sessions.is_empty() {
                let s = rng.below(sessions.len() as u64) as usize;
                let code = if rng.below(3) == 0 {
                    "123456"
                } else {
                    "000000"
                };
                let guard = CheckGuard {
                    failures: Some(FailureLimit {
                        max: 6,
                        window: secs(600),
                        lockout: secs(600),
                    }),
                    network_failures: Some((
                        net.to_owned(),
                        FailureLimit {
                            max: 3,
                            window: secs(600),
                            lockout: secs(600),
                        },
                    )),
                    pumping: (p < 2).then(|| rule.clone()),
                    ..Default::default()
                };
                let mut shapes = vec![];
                let new_key = key();
                for store in stores {
                    let req = CheckVerification {
                        key: sessions[s],
                        phone,
                        code_mac: mac(phone, code),
                        max_attempts: 3,
                        on_approve: Approval {
                            new_key,
                            data: &data,
                        },
                    };
                    shapes.push(check_shape(
                        &store.check_guarded(&req, &guard).await.unwrap().outcome,
                    ));
                }
                assert_eq!(shapes[0], shapes[1], "seed {seed:#x}, step {step}: check");
                // An approval moved the session to its new key in both stores.
                if shapes[0] == "approved" {
                    sessions[s] = new_key;
                }
            }
        }
        let breaker = |s: Vec<verifyd::quota::PumpingState>| {
            s.into_iter()
                .map(|p| (p.country, p.sends, p.approvals, p.tripped))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            breaker(lite.store.pumping_states().await.unwrap()),
            breaker(pg.store.pumping_states().await.unwrap()),
            "seed {seed:#x}"
        );
        for store in stores {
            store.pumping_reset("+86").await.unwrap();
        }
    }
}

/// Sequences per run; `PROPTEST_CASES` overrides.
const CASES: u32 = 64;

#[test]
fn both_stores_answer_random_sequences_alike() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let policy = SessionPolicy {
        default_age: SESSION_AGE,
        max_lifetime: None,
        refresh_interval: 60,
        max_data_bytes: 64 * 1024,
    };
    let Some(pg) = rt.block_on(make_pg(policy)) else {
        return;
    };
    let lite = rt.block_on(make_sqlite(policy)).unwrap();
    let pair = Pair {
        stores: [lite.store.clone(), pg.store.clone()],
        sql: [rt.block_on(lite.place.sql()), rt.block_on(pg.place.sql())],
    };
    let mut config = proptest::test_runner::Config {
        // Failures are reported with their shrunk sequence; no regression file in tests/.
        failure_persistence: None,
        ..Default::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    let mut runner = TestRunner::new(config);
    let ops = proptest::collection::vec(op(), 1..40);
    let result = runner.run(&ops, |ops| rt.block_on(pair.run(&ops)));
    if let Err(e) = result {
        panic!("{e}");
    }
}
