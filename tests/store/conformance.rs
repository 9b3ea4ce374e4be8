//! One conformance suite for every `Store`: each rule of the trait docs is a test, and the
//! `conformance!` macro runs the whole suite against SQLite and against PostgreSQL.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use verifyd::code::{Code, CodeKey, CodeMac, CodeNonce};
use verifyd::delivery::{DeliveryState, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use verifyd::phone::PhoneNumber;
use verifyd::quota::{CheckGuard, FailureLimit, PumpingRule, Quota, Refusal, Scope, SendGuard};
use verifyd::session::{Expiry, KeyHash, Session, SessionKey, SessionPolicy};
use verifyd::store::events::{Failure, Redrive, Refused};
use verifyd::store::{
    Approval, CheckOutcome, CheckVerification, DeleteOutcome, IdempotencyBegin, ReplaceOutcome,
    StartOutcome, StartVerification, Store, StoreError, SweepReport,
};

use super::harness::{Harness, Place, Sql, make_pg, make_sqlite, open, with_policy};

/// How long sweeps keep dead events unless a test says otherwise: the default, a week.
const KEEP_DEAD: Duration = Duration::from_secs(7 * 86_400);

/// Runs every rule below as its own test against the store `$make` builds.
macro_rules! conformance {
    ($backend:ident, $make:ident) => {
        conformance!(@rules $backend, $make;
            creates_and_reads_sessions,
            unknown_keys_find_nothing,
            expired_sessions_are_never_returned,
            reads_slide_only_after_refresh_interval,
            writes_always_slide,
            expiry_kinds_set_expires_at,
            max_lifetime_caps_every_kind,
            set_expiry_recomputes_from_now,
            set_and_delete_values,
            data_limit_is_enforced_by_the_store,
            clear_keeps_key_and_expiry,
            flush_deletes_the_session_and_its_verifications,
            cycle_moves_the_key_and_keeps_the_rest,
            wrong_codes_count_down_to_exhaustion,
            right_code_approves_once,
            approval_merges_data_and_moves_the_key,
            codes_are_bound_to_session_and_phone,
            concurrent_right_checks_approve_exactly_once,
            concurrent_wrong_checks_count_every_attempt,
            concurrent_sends_within_cooldown_issue_one_code,
            resend_within_cooldown_is_too_soon,
            resend_after_cooldown_keeps_attempts,
            expired_code_is_expired_and_costs_nothing,
            abandon_send_lifts_the_cooldown,
            exhausted_verification_refuses_sends_until_expiry,
            sweep_removes_only_expired_rows,
            server_secret_is_stable,
            migrate_is_idempotent,
            quotas_are_all_or_nothing,
            refused_sends_record_nothing,
            failed_checks_lock_the_number,
            pumping_breaker_trips_and_resets,
            pumping_breaker_is_exact_under_concurrent_sends,
            abandoned_sends_give_back_quotas_and_breaker_counts,
            checks_write_the_same_whatever_the_number_history,
            wrong_and_missing_codes_take_comparable_time,
            idempotency_records,
            replace_is_whole_ordered_and_versioned,
            replace_if_version_lets_one_racer_win,
            absolute_expiry_never_slides_and_the_past_is_dead,
            key_order_survives_every_write,
            delivery_receipts_only_move_forward,
            delivery_receipts_for_unknown_ids_change_nothing,
            concurrent_final_receipts_settle_on_one_state,
            deliveries_go_with_their_session,
            challenges_are_spent_once_until_swept,
            challenges_are_decided_in_the_send,
            soft_quotas_ask_for_a_challenge_up_to_the_hard_cap,
            tripped_breaker_asks_for_a_challenge_or_refuses,
            sessions_are_born_only_with_an_issued_code,
            network_failures_lock_out_that_network_only,
            live_codes_are_kept_only_while_they_may_be_resent,
            a_kept_code_lives_no_longer_than_its_cap,
            codes_of_the_old_mac_scheme_expire_without_costing_attempts,
            sends_and_checks_resolve_their_session_by_key_as_a_read_does,
            a_lowered_max_attempts_exhausts_sends_and_checks_alike,
            abandon_send_leaves_a_finished_code_alone,
            a_dead_sessions_code_is_out_of_reach_right_or_wrong,
            the_secret_has_one_name_in_both_stores,
            a_send_for_a_flushed_session_finds_it_gone,
            events_dead_longer_than_kept_are_swept,
        );
    };
    (@rules $backend:ident, $make:ident; $($rule:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $rule() {
                    if let Some(h) = super::$make(super::policy()).await {
                        super::$rule(h).await;
                    }
                }
            )*
        }
    };
}

conformance!(sqlite, make_sqlite);
conformance!(postgres, make_pg);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Policy of most tests: long default age, no cap, lazy refresh once a minute.
pub(super) fn policy() -> SessionPolicy {
    SessionPolicy {
        default_age: 3600,
        max_lifetime: None,
        refresh_interval: 60,
        max_data_bytes: 64 * 1024,
    }
}

pub(super) fn key() -> KeyHash {
    SessionKey::generate().hash()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn phone() -> PhoneNumber {
    PhoneNumber::parse_e164("+8613800138000").unwrap()
}

fn other_phone() -> PhoneNumber {
    PhoneNumber::parse_e164("+12015550123").unwrap()
}

pub(super) fn mac(phone: &PhoneNumber, code: &str) -> CodeMac {
    CodeKey::new(b"conformance".to_vec()).mac(phone, &Code::parse(code).unwrap())
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Asserts `a` and `b` are within `slack` of each other (clocks and rounding differ per store).
#[track_caller]
fn assert_near(a: SystemTime, b: SystemTime, slack: Duration) {
    let gap = a
        .duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap();
    assert!(
        gap <= slack,
        "{a:?} and {b:?} are {gap:?} apart (allowed {slack:?})"
    );
}

/// `expires_at` is exactly `after` past creation, give or take a second.
#[track_caller]
fn assert_expires_after(s: &Session, after: Duration) {
    let at = s.expires_at.expect("the session should expire");
    assert_near(at, s.created_at + after, secs(1));
}

async fn new_session(store: &Arc<dyn Store>, expiry: Expiry) -> (KeyHash, Session) {
    let k = key();
    let s = store
        .create_session(&k, &obj(json!({"seed": 1})), expiry)
        .await
        .unwrap();
    (k, s)
}

/// Sends `code` for (the session of `key`, phone).
async fn send(
    store: &Arc<dyn Store>,
    key: KeyHash,
    phone: &PhoneNumber,
    code: &str,
    ttl: Duration,
    resend_interval: Duration,
    max_attempts: u32,
) -> StartOutcome {
    let req = StartVerification {
        key,
        phone,
        code_mac: mac(phone, code),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl,
        resend_interval,
        max_attempts,
        new_session: None,
    };
    store
        .start_send(&req, &SendGuard::default())
        .await
        .unwrap()
        .outcome
}

/// Sends with a 60 s lifetime, a 60 s cooldown and 3 attempts.
async fn send_default(store: &Arc<dyn Store>, key: KeyHash, code: &str) -> StartOutcome {
    send(store, key, &phone(), code, secs(60), secs(60), 3).await
}

pub(super) fn approval_data() -> Map<String, Value> {
    obj(json!({"verified_phone": "+8613800138000", "verified_at": "2026-11-26T04:03:53Z"}))
}

/// Checks `code` for (the session of `key`, phone); an approval moves the session to `new_key`.
async fn check_with(
    store: &Arc<dyn Store>,
    key: KeyHash,
    phone: &PhoneNumber,
    code: &str,
    max_attempts: u32,
    new_key: KeyHash,
) -> CheckOutcome {
    let data = approval_data();
    let req = CheckVerification {
        key,
        phone,
        code_mac: mac(phone, code),
        max_attempts,
        on_approve: Approval {
            new_key,
            data: &data,
        },
    };
    store
        .check_guarded(&req, &CheckGuard::default())
        .await
        .unwrap()
        .outcome
}

/// Checks `code` for the default phone with 3 attempts. An approval leaves the session under
/// `key`, so that a test goes on reaching it by the same key (moving the key is asserted by
/// `approval_merges_data_and_moves_the_key`).
async fn check(store: &Arc<dyn Store>, key: KeyHash, code: &str) -> CheckOutcome {
    check_with(store, key, &phone(), code, 3, key).await
}

fn issued(attempts: u32, resend: bool) -> StartOutcome {
    StartOutcome::Issued { resend, attempts }
}

// ---------------------------------------------------------------------------------------------
// Sessions.

async fn creates_and_reads_sessions(h: Harness) {
    let s = &h.store;
    let before = SystemTime::now();
    let k = key();
    let created = s
        .create_session(&k, &obj(json!({"a": 1, "b": [true]})), Expiry::Default)
        .await;
    let created = created.unwrap();
    assert_eq!(created.data, obj(json!({"a": 1, "b": [true]})));
    assert_eq!(created.expiry, Expiry::Default);
    assert!(created.refreshed, "a new session needs its cookie");
    assert_near(created.created_at, before, secs(2));

    let read = s
        .touch_session(&k)
        .await
        .unwrap()
        .expect("the session just created");
    assert_eq!(read.id, created.id);
    assert_eq!(read.data, created.data);
    assert_eq!(read.expiry, Expiry::Default);
    assert_eq!(read.created_at, created.created_at);
    assert_eq!(read.expires_at, created.expires_at);
    assert!(!read.refreshed, "no slide within refresh_interval");

    let (_, other) = new_session(s, Expiry::Default).await;
    assert_ne!(other.id, created.id);
}

async fn unknown_keys_find_nothing(h: Harness) {
    let s = &h.store;
    let k = key();
    assert_eq!(s.touch_session(&k).await.unwrap(), None);
    assert_eq!(s.set_value(&k, "a", &json!(1)).await.unwrap(), None);
    assert_eq!(
        s.delete_value(&k, "a").await.unwrap(),
        DeleteOutcome::NoSession
    );
    assert_eq!(s.clear(&k).await.unwrap(), None);
    assert_eq!(s.cycle(&k, &key()).await.unwrap(), None);
    assert_eq!(s.set_expiry(&k, Expiry::Never).await.unwrap(), None);
    assert!(!s.flush(&k).await.unwrap());
}

async fn expired_sessions_are_never_returned(h: Harness) {
    let s = &h.store;
    let (k, _) = new_session(s, Expiry::Idle(1)).await;
    let (live, _) = new_session(s, Expiry::Default).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // The row is still there (nobody swept), but no operation may see it.
    assert_eq!(s.touch_session(&k).await.unwrap(), None);
    assert_eq!(s.set_value(&k, "a", &json!(1)).await.unwrap(), None);
    assert_eq!(
        s.delete_value(&k, "seed").await.unwrap(),
        DeleteOutcome::NoSession
    );
    assert_eq!(s.clear(&k).await.unwrap(), None);
    assert_eq!(s.cycle(&k, &key()).await.unwrap(), None);
    assert_eq!(s.set_expiry(&k, Expiry::Never).await.unwrap(), None);
    assert!(
        !s.flush(&k).await.unwrap(),
        "an expired session does not count as flushed"
    );
    assert!(s.touch_session(&live).await.unwrap().is_some());
}

async fn reads_slide_only_after_refresh_interval(h: Harness) {
    // Lazy: within the interval a read changes nothing.
    let lazy = &h.store;
    let (k, created) = new_session(lazy, Expiry::Idle(600)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let read = lazy.touch_session(&k).await.unwrap().unwrap();
    assert!(!read.refreshed);
    assert_eq!(read.expires_at, created.expires_at);

    // Eager: with an interval of 0 every read slides.
    let eager = with_policy(
        &h,
        SessionPolicy {
            refresh_interval: 0,
            ..policy()
        },
    )
    .await;
    let (k, created) = new_session(&eager.store, Expiry::Idle(600)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let read = eager.store.touch_session(&k).await.unwrap().unwrap();
    assert!(read.refreshed);
    assert!(
        read.expires_at.unwrap() > created.expires_at.unwrap(),
        "the expiry slid forward"
    );
    assert_near(
        read.expires_at.unwrap(),
        SystemTime::now() + secs(600),
        secs(2),
    );
    assert_eq!(read.created_at, created.created_at);
}

async fn writes_always_slide(h: Harness) {
    let s = &h.store;
    let (k, created) = new_session(s, Expiry::Idle(600)).await;
    let mut last = created.expires_at.unwrap();
    for step in 0..4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = match step {
            0 => s.set_value(&k, "a", &json!(1)).await.unwrap().unwrap(),
            1 => match s.delete_value(&k, "a").await.unwrap() {
                DeleteOutcome::Deleted(s) => s,
                other => panic!("{other:?}"),
            },
            2 => s.clear(&k).await.unwrap().unwrap(),
            _ => s.set_expiry(&k, Expiry::Idle(600)).await.unwrap().unwrap(),
        };
        assert!(after.refreshed, "write {step} must report refreshed");
        let at = after.expires_at.unwrap();
        assert!(at > last, "write {step} must slide the expiry");
        last = at;
    }
}

async fn expiry_kinds_set_expires_at(h: Harness) {
    let s = &h.store;
    let (_, default) = new_session(s, Expiry::Default).await;
    assert_expires_after(&default, secs(3600));
    let (_, browser) = new_session(s, Expiry::Browser).await;
    assert_eq!(browser.expiry, Expiry::Browser);
    assert_expires_after(&browser, secs(3600));
    let (_, idle) = new_session(s, Expiry::Idle(90)).await;
    assert_eq!(idle.expiry, Expiry::Idle(90));
    assert_expires_after(&idle, secs(90));
    let (k, never) = new_session(s, Expiry::Never).await;
    assert_eq!(never.expiry, Expiry::Never);
    assert_eq!(never.expires_at, None, "no cap: never expires");
    let read = s.set_value(&k, "a", &json!(1)).await.unwrap().unwrap();
    assert_eq!(
        read.expires_at, None,
        "a write leaves a Never session without expiry"
    );
}

async fn max_lifetime_caps_every_kind(h: Harness) {
    let capped = SessionPolicy {
        max_lifetime: Some(100),
        refresh_interval: 0,
        ..policy()
    };
    let h = with_policy(&h, capped).await;
    let s = &h.store;
    for (expiry, after) in [
        (Expiry::Default, 100),
        (Expiry::Browser, 100),
        (Expiry::Idle(50), 50),
        (Expiry::Idle(500), 100),
        (Expiry::Never, 100),
    ] {
        let (k, created) = new_session(s, expiry).await;
        assert_expires_after(&created, secs(after));
        // Sliding never passes the cap, neither on reads nor on writes.
        let read = s.touch_session(&k).await.unwrap().unwrap();
        assert!(
            read.expires_at.unwrap() <= created.created_at + secs(100),
            "{expiry:?}"
        );
        let written = s.set_value(&k, "a", &json!(1)).await.unwrap().unwrap();
        assert!(
            written.expires_at.unwrap() <= created.created_at + secs(100),
            "{expiry:?}"
        );
        let reset = s.set_expiry(&k, Expiry::Idle(1000)).await.unwrap().unwrap();
        assert_expires_after(&reset, secs(100));
    }
}

async fn set_expiry_recomputes_from_now(h: Harness) {
    let s = &h.store;
    let (k, _) = new_session(s, Expiry::Default).await;
    let idle = s.set_expiry(&k, Expiry::Idle(60)).await.unwrap().unwrap();
    assert_eq!(idle.expiry, Expiry::Idle(60));
    assert_near(
        idle.expires_at.unwrap(),
        SystemTime::now() + secs(60),
        secs(2),
    );
    let never = s.set_expiry(&k, Expiry::Never).await.unwrap().unwrap();
    assert_eq!((never.expiry, never.expires_at), (Expiry::Never, None));
    let back = s.set_expiry(&k, Expiry::Default).await.unwrap().unwrap();
    assert_near(
        back.expires_at.unwrap(),
        SystemTime::now() + secs(3600),
        secs(2),
    );
    let read = s.touch_session(&k).await.unwrap().unwrap();
    assert_eq!(read.expiry, Expiry::Default);
    assert_eq!(read.expires_at, back.expires_at);
}

/// `max_data_bytes` bounds the compact JSON of a session's data on create and on every write
/// that grows it; a write that shrinks a session left over a lowered limit still goes through.
async fn data_limit_is_enforced_by_the_store(h: Harness) {
    let limited = with_policy(
        &h,
        SessionPolicy {
            max_data_bytes: 300,
            ..policy()
        },
    )
    .await;
    let s = &limited.store;
    let too_big = obj(json!({"a": "x".repeat(300)}));
    let err = s
        .create_session(&key(), &too_big, Expiry::Default)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DataTooLarge(300)), "{err:?}");

    let k = key();
    let start = obj(json!({"a": "x".repeat(200)}));
    s.create_session(&k, &start, Expiry::Default).await.unwrap();
    let err = s
        .set_value(&k, "b", &json!("y".repeat(100)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DataTooLarge(300)), "{err:?}");
    assert_eq!(s.touch_session(&k).await.unwrap().unwrap().data, start);
    // Exactly at the limit is allowed: {"a":"x…x","b":"…"} takes 300 bytes.
    let fits = "y".repeat(300 - 2 - 206 - 1 - 6);
    let at_limit = s.set_value(&k, "b", &json!(fits)).await.unwrap().unwrap();
    assert_eq!(serde_json::to_vec(&at_limit.data).unwrap().len(), 300);

    // The operator lowers the limit: growing is refused, shrinking is not.
    let lowered = open(
        &limited.place,
        SessionPolicy {
            max_data_bytes: 256,
            ..policy()
        },
    )
    .await;
    let err = lowered.set_value(&k, "c", &json!(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::DataTooLarge(256)), "{err:?}");
    let shrunk = lowered
        .set_value(&k, "b", &json!("y".repeat(50)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::to_vec(&shrunk.data).unwrap().len(),
        265,
        "still over 256"
    );
}

async fn set_and_delete_values(h: Harness) {
    let s = &h.store;
    let (k, created) = new_session(s, Expiry::Default).await;
    let set = s
        .set_value(&k, "cart", &json!({"items": [1, 2]}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set.id, created.id);
    assert_eq!(set.data, obj(json!({"seed": 1, "cart": {"items": [1, 2]}})));
    let replaced = s
        .set_value(&k, "cart", &json!(null))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replaced.data, obj(json!({"seed": 1, "cart": null})));
    // Names are data, not paths or SQL.
    let odd = "a.b'; DROP TABLE sessions; --$[0]";
    s.set_value(&k, odd, &json!("x")).await.unwrap().unwrap();
    let read = s.touch_session(&k).await.unwrap().unwrap();
    assert_eq!(read.data.get(odd), Some(&json!("x")));

    match s.delete_value(&k, "cart").await.unwrap() {
        DeleteOutcome::Deleted(after) => {
            assert_eq!(after.data, obj(json!({"seed": 1, odd: "x"})));
        }
        other => panic!("expected Deleted, got {other:?}"),
    }
    assert_eq!(
        s.delete_value(&k, "cart").await.unwrap(),
        DeleteOutcome::NoSuchKey
    );
    assert_eq!(
        s.touch_session(&k).await.unwrap().unwrap().data,
        obj(json!({"seed": 1, odd: "x"}))
    );
}

async fn clear_keeps_key_and_expiry(h: Harness) {
    let s = &h.store;
    let (k, created) = new_session(s, Expiry::Idle(300)).await;
    let cleared = s.clear(&k).await.unwrap().unwrap();
    assert_eq!(cleared.id, created.id);
    assert!(cleared.data.is_empty());
    assert_eq!(cleared.expiry, Expiry::Idle(300));
    let read = s
        .touch_session(&k)
        .await
        .unwrap()
        .expect("the key still works");
    assert!(read.data.is_empty());
    assert_eq!(read.expiry, Expiry::Idle(300));
}

async fn flush_deletes_the_session_and_its_verifications(h: Harness) {
    let s = &h.store;
    let (k, _) = new_session(s, Expiry::Default).await;
    assert_eq!(send_default(s, k, "123456").await, issued(0, false));
    assert!(s.flush(&k).await.unwrap());
    assert_eq!(s.touch_session(&k).await.unwrap(), None);
    assert!(!s.flush(&k).await.unwrap(), "nothing left to flush");
    assert_eq!(check(s, k, "123456").await, CheckOutcome::NoSession);
    // The verification went with the session (cascade), so the sweeper finds nothing.
    let report = s.sweep(100, KEEP_DEAD).await.unwrap();
    assert_eq!((report.sessions, report.verifications), (0, 0));
}

async fn cycle_moves_the_key_and_keeps_the_rest(h: Harness) {
    let s = &h.store;
    let (old, created) = new_session(s, Expiry::Idle(300)).await;
    assert_eq!(send_default(s, old, "123456").await, issued(0, false));
    let new = key();
    let cycled = s.cycle(&old, &new).await.unwrap().unwrap();
    assert_eq!(cycled.id, created.id);
    assert_eq!(cycled.data, created.data);
    assert_eq!(cycled.expiry, Expiry::Idle(300));
    assert_eq!(cycled.created_at, created.created_at);
    assert!(cycled.refreshed);
    assert_eq!(
        s.touch_session(&old).await.unwrap(),
        None,
        "the old key is dead at once"
    );
    assert_eq!(s.touch_session(&new).await.unwrap().unwrap().id, created.id);
    // The pending verification is bound to the id, so it survives the new key.
    assert!(matches!(
        check(s, new, "123456").await,
        CheckOutcome::Approved { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Verifications.

async fn wrong_codes_count_down_to_exhaustion(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    assert_eq!(
        check(s, sess_key, "123456").await,
        CheckOutcome::NotFound,
        "nothing sent yet"
    );
    assert_eq!(send_default(s, sess_key, "123456").await, issued(0, false));
    assert_eq!(
        check(s, sess_key, "000000").await,
        CheckOutcome::Wrong { attempts_left: 2 }
    );
    assert_eq!(
        check(s, sess_key, "000001").await,
        CheckOutcome::Wrong { attempts_left: 1 }
    );
    assert_eq!(
        check(s, sess_key, "000002").await,
        CheckOutcome::Exhausted,
        "the last try"
    );
    assert_eq!(
        check(s, sess_key, "123456").await,
        CheckOutcome::Exhausted,
        "dead code never approves"
    );
    assert_eq!(check(s, sess_key, "000003").await, CheckOutcome::Exhausted);
}

async fn right_code_approves_once(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    assert_eq!(send_default(s, sess_key, "123456").await, issued(0, false));
    assert_eq!(
        check(s, sess_key, "000000").await,
        CheckOutcome::Wrong { attempts_left: 2 }
    );
    assert!(matches!(
        check(s, sess_key, "123456").await,
        CheckOutcome::Approved { .. }
    ));
    assert_eq!(
        check(s, sess_key, "123456").await,
        CheckOutcome::NotFound,
        "used codes are spent"
    );
    assert_eq!(check(s, sess_key, "000000").await, CheckOutcome::NotFound);
    // The verification is over, so the next send starts a fresh one at once.
    assert_eq!(send_default(s, sess_key, "654321").await, issued(0, false));
}

async fn approval_merges_data_and_moves_the_key(h: Harness) {
    let s = &h.store;
    let (old, created) = new_session(s, Expiry::Idle(300)).await;
    s.set_value(&old, "verified_phone", &json!("stale"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(send_default(s, old, "123456").await, issued(0, false));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let new = key();
    let approved = match check_with(s, old, &phone(), "123456", 3, new).await {
        CheckOutcome::Approved { session } => session,
        other => panic!("expected Approved, got {other:?}"),
    };
    let mut expected = obj(json!({"seed": 1}));
    expected.extend(approval_data());
    assert_eq!(approved.id, created.id);
    assert_eq!(
        approved.data, expected,
        "approval data merged over the old values"
    );
    assert_eq!(approved.expiry, Expiry::Idle(300));
    assert!(approved.refreshed);
    assert!(
        approved.expires_at.unwrap() > created.expires_at.unwrap(),
        "the write slid"
    );

    assert_eq!(
        s.touch_session(&old).await.unwrap(),
        None,
        "the old key stopped working"
    );
    let read = s
        .touch_session(&new)
        .await
        .unwrap()
        .expect("the session under its new key");
    assert_eq!((read.id, &read.data), (created.id, &expected));
    assert_eq!(read.expires_at, approved.expires_at);
}

async fn codes_are_bound_to_session_and_phone(h: Harness) {
    let s = &h.store;
    let (a_key, _) = new_session(s, Expiry::Default).await;
    let (b_key, _) = new_session(s, Expiry::Default).await;
    assert_eq!(send_default(s, a_key, "123456").await, issued(0, false));
    // Same code, other phone or other session: nothing was sent there.
    let other = check_with(s, a_key, &other_phone(), "123456", 3, key()).await;
    assert_eq!(other, CheckOutcome::NotFound);
    assert_eq!(check(s, b_key, "123456").await, CheckOutcome::NotFound);
    // Each (session, phone) has its own cooldown.
    let to_other = send(s, a_key, &other_phone(), "222222", secs(60), secs(60), 3).await;
    assert_eq!(to_other, issued(0, false));
    assert_eq!(send_default(s, b_key, "333333").await, issued(0, false));
    assert!(matches!(
        check(s, a_key, "123456").await,
        CheckOutcome::Approved { .. }
    ));
    let approved_other = check_with(s, a_key, &other_phone(), "222222", 3, key()).await;
    assert!(matches!(approved_other, CheckOutcome::Approved { .. }));
}

async fn concurrent_right_checks_approve_exactly_once(h: Harness) {
    let s = &h.store;
    let (sess_key, sess) = new_session(s, Expiry::Default).await;
    assert_eq!(send_default(s, sess_key, "123456").await, issued(0, false));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(s);
            let new_key = key();
            tokio::spawn(async move {
                let outcome = check_with(&store, sess_key, &phone(), "123456", 3, new_key).await;
                (new_key, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (new_key, CheckOutcome::Approved { .. }) => winners.push(new_key),
            // A loser that resolved the old key before the approval committed finds the code
            // spent; one that came after finds the key moved away from it.
            (_, other) => assert!(
                matches!(other, CheckOutcome::NotFound | CheckOutcome::NoSession),
                "losers find the code spent or the key moved: {other:?}"
            ),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one approval");
    assert_eq!(
        s.touch_session(&winners[0]).await.unwrap().unwrap().id,
        sess.id
    );
}

async fn concurrent_wrong_checks_count_every_attempt(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    let max = 100;
    let sent = send(s, sess_key, &phone(), "123456", secs(60), secs(60), max).await;
    assert_eq!(sent, issued(0, false));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(s);
            tokio::spawn(async move {
                check_with(&store, sess_key, &phone(), &format!("{i:06}"), max, key()).await
            })
        })
        .collect();
    let mut left = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            CheckOutcome::Wrong { attempts_left } => left.push(attempts_left),
            other => panic!("expected Wrong, got {other:?}"),
        }
    }
    left.sort_unstable();
    assert_eq!(
        left,
        (84..=99).collect::<Vec<u32>>(),
        "each attempt counted exactly once"
    );
    let next = check_with(s, sess_key, &phone(), "999999", max, key()).await;
    assert_eq!(next, CheckOutcome::Wrong { attempts_left: 83 });
}

async fn concurrent_sends_within_cooldown_issue_one_code(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = Arc::clone(s);
            tokio::spawn(async move { send_default(&store, sess_key, &format!("{i:06}")).await })
        })
        .collect();
    let mut issued_codes = 0;
    for task in tasks {
        match task.await.unwrap() {
            StartOutcome::Issued {
                resend: false,
                attempts: 0,
            } => issued_codes += 1,
            StartOutcome::TooSoon { retry_after } => {
                assert!(
                    retry_after >= secs(1) && retry_after <= secs(60),
                    "{retry_after:?}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(issued_codes, 1, "one send wins the cooldown");
}

async fn resend_within_cooldown_is_too_soon(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    assert_eq!(send_default(s, sess_key, "123456").await, issued(0, false));
    match send_default(s, sess_key, "654321").await {
        StartOutcome::TooSoon { retry_after } => {
            assert!(
                retry_after >= secs(58) && retry_after <= secs(60),
                "{retry_after:?}"
            );
        }
        other => panic!("expected TooSoon, got {other:?}"),
    }
    // Nothing changed: the first code is still the live one.
    assert_eq!(
        check(s, sess_key, "654321").await,
        CheckOutcome::Wrong { attempts_left: 2 }
    );
    assert!(matches!(
        check(s, sess_key, "123456").await,
        CheckOutcome::Approved { .. }
    ));
}

async fn resend_after_cooldown_keeps_attempts(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    let id = sess_key;
    let resend = |code| async move { send(s, id, &phone(), code, secs(60), secs(0), 5).await };
    let check5 = |code| async move { check_with(s, id, &phone(), code, 5, key()).await };
    assert_eq!(resend("111111").await, issued(0, false));
    assert_eq!(
        check5("000000").await,
        CheckOutcome::Wrong { attempts_left: 4 }
    );
    assert_eq!(
        check5("000001").await,
        CheckOutcome::Wrong { attempts_left: 3 }
    );
    assert_eq!(
        resend("222222").await,
        issued(2, true),
        "attempts carry over"
    );
    // The replaced code is dead; trying it costs an attempt like any wrong code.
    assert_eq!(
        check5("111111").await,
        CheckOutcome::Wrong { attempts_left: 2 }
    );
    assert_eq!(resend("333333").await, issued(3, true));
    assert!(matches!(
        check5("333333").await,
        CheckOutcome::Approved { .. }
    ));
}

async fn expired_code_is_expired_and_costs_nothing(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    assert_eq!(
        send(s, sess_key, &phone(), "123456", secs(1), secs(60), 2).await,
        issued(0, false)
    );
    let id = sess_key;
    let check2 = |code| async move { check_with(s, id, &phone(), code, 2, key()).await };
    assert_eq!(
        check2("000000").await,
        CheckOutcome::Wrong { attempts_left: 1 }
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Were these counted, the second would exhaust the code.
    assert_eq!(check2("000000").await, CheckOutcome::Expired);
    assert_eq!(check2("000001").await, CheckOutcome::Expired);
    assert_eq!(
        check2("123456").await,
        CheckOutcome::Expired,
        "an expired code never approves"
    );
    // The verification is over: a send starts a fresh one, cooldown and attempts reset.
    assert_eq!(
        send(s, sess_key, &phone(), "654321", secs(60), secs(60), 2).await,
        issued(0, false)
    );
    assert_eq!(
        check2("000000").await,
        CheckOutcome::Wrong { attempts_left: 1 }
    );
}

async fn abandon_send_lifts_the_cooldown(h: Harness) {
    let s = &h.store;
    let (sess_key, sess) = new_session(s, Expiry::Default).await;
    assert_eq!(send_default(s, sess_key, "111111").await, issued(0, false));
    s.abandon_send(
        sess.id,
        &phone(),
        &mac(&phone(), "111111"),
        &SendGuard::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        send_default(s, sess_key, "222222").await,
        issued(0, true),
        "retry at once"
    );
    // A stale abandon (its code was already replaced) leaves the newer send's cooldown alone.
    s.abandon_send(
        sess.id,
        &phone(),
        &mac(&phone(), "111111"),
        &SendGuard::default(),
    )
    .await
    .unwrap();
    assert!(matches!(
        send_default(s, sess_key, "333333").await,
        StartOutcome::TooSoon { .. }
    ));
    assert!(matches!(
        check(s, sess_key, "222222").await,
        CheckOutcome::Approved { .. }
    ));
}

async fn exhausted_verification_refuses_sends_until_expiry(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    assert_eq!(
        send(s, sess_key, &phone(), "123456", secs(60), secs(0), 1).await,
        issued(0, false)
    );
    let id = sess_key;
    let check1 = |code| async move { check_with(s, id, &phone(), code, 1, key()).await };
    assert_eq!(check1("000000").await, CheckOutcome::Exhausted);
    match send(s, sess_key, &phone(), "654321", secs(60), secs(0), 1).await {
        StartOutcome::Exhausted { retry_after } => {
            assert!(
                retry_after >= secs(1) && retry_after <= secs(60),
                "{retry_after:?}"
            );
        }
        other => panic!("expected Exhausted, got {other:?}"),
    }
    assert_eq!(check1("123456").await, CheckOutcome::Exhausted);
    assert_eq!(
        check1("654321").await,
        CheckOutcome::Exhausted,
        "the refused code was not stored"
    );
}

// ---------------------------------------------------------------------------------------------
// Same-code resends: the nonce kept with a code, and when it may be read back.

/// A `same_code` send (2 s margin) of a fresh code `code` drawn from nonce `n`, with a lifetime
/// of `ttl` seconds, no cooldown and the cap `cap` seconds: the store's answer.
async fn resend_same(
    s: &Arc<dyn Store>,
    key: KeyHash,
    code: &str,
    n: u8,
    ttl: u64,
    cap: u64,
) -> verifyd::store::Started {
    let p = phone();
    let req = StartVerification {
        key,
        phone: &p,
        code_mac: mac(&p, code),
        code_nonce: Some(CodeNonce([n; 16])),
        keep_margin: Some(secs(2)),
        code_cap: secs(cap),
        ttl: secs(ttl),
        resend_interval: secs(0),
        max_attempts: 3,
        new_session: None,
    };
    s.start_send(&req, &SendGuard::default()).await.unwrap()
}

/// The nonce a same-code send kept, if it kept one.
fn kept(started: &verifyd::store::Started) -> Option<CodeNonce> {
    started.kept.map(|k| k.nonce)
}

async fn live_codes_are_kept_only_while_they_may_be_resent(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    let first = resend_same(s, sess_key, "111111", 7, 60, 600).await;
    assert_eq!(first.outcome, issued(0, false));
    assert_eq!(kept(&first), None, "no verification to keep a code of");
    let again = resend_same(s, sess_key, "999999", 8, 60, 600).await;
    assert_eq!(again.outcome, issued(0, true));
    assert_eq!(kept(&again), Some(CodeNonce([7; 16])));
    assert_eq!(again.kept.unwrap().ttl, secs(60), "the cap is far");
    // The kept code is the one in force: it approves, the fresh one offered is a wrong code.
    assert!(matches!(
        check(s, sess_key, "999999").await,
        CheckOutcome::Wrong { attempts_left: 2 }
    ));
    // A wrong code leaves it resendable; the attempts carry over.
    let third = resend_same(s, sess_key, "888888", 9, 60, 600).await;
    assert_eq!(third.outcome, issued(1, true));
    assert_eq!(kept(&third), Some(CodeNonce([7; 16])));
    assert!(matches!(
        check(s, sess_key, "111111").await,
        CheckOutcome::Approved { .. }
    ));
    // An approved code is never resent: the next send starts a verification with its own code.
    let after = resend_same(s, sess_key, "222222", 10, 60, 600).await;
    assert_eq!(
        (after.outcome.clone(), kept(&after)),
        (issued(0, false), None)
    );

    // Not for another session or number.
    let (other_key, _) = new_session(s, Expiry::Default).await;
    let o = resend_same(s, other_key, "333333", 11, 60, 600).await;
    assert_eq!(kept(&o), None);
    let elsewhere = PhoneNumber::parse_e164("+8613800138001").unwrap();
    let req = StartVerification {
        key: other_key,
        phone: &elsewhere,
        code_mac: mac(&elsewhere, "444444"),
        code_nonce: Some(CodeNonce([12; 16])),
        keep_margin: Some(secs(2)),
        code_cap: secs(600),
        ttl: secs(60),
        resend_interval: secs(0),
        max_attempts: 3,
        new_session: None,
    };
    assert_eq!(
        s.start_send(&req, &SendGuard::default())
            .await
            .unwrap()
            .kept,
        None
    );

    // An exhausted code is never resent (the send is refused).
    let (tired_key, _) = new_session(s, Expiry::Default).await;
    resend_same(s, tired_key, "555555", 13, 60, 600).await;
    for _ in 0..3 {
        check(s, tired_key, "000000").await;
    }
    let t = resend_same(s, tired_key, "555556", 14, 60, 600).await;
    assert!(matches!(t.outcome, StartOutcome::Exhausted { .. }), "{t:?}");

    // Within the margin of its expiry the code is replaced.
    let (expiring_key, _) = new_session(s, Expiry::Default).await;
    resend_same(s, expiring_key, "666666", 15, 3, 600).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = resend_same(s, expiring_key, "777777", 16, 3, 600).await;
    assert_eq!((e.outcome.clone(), kept(&e)), (issued(0, true), None));
    assert!(matches!(
        check(s, expiring_key, "777777").await,
        CheckOutcome::Approved { .. }
    ));
}

async fn a_kept_code_lives_no_longer_than_its_cap(h: Harness) {
    let s = &h.store;
    // Cap 40 s, lifetime 60 s: at least 30 s (half a lifetime) left, so the code is kept, with
    // what is left of the cap.
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    resend_same(s, sess_key, "111111", 1, 60, 40).await;
    let k = resend_same(s, sess_key, "222222", 2, 60, 40).await;
    let left = k.kept.expect("kept").ttl;
    assert!(left > secs(38) && left <= secs(40), "{left:?}");
    // Cap 20 s: less than half a lifetime left, so a fresh code with a fresh cap replaces it.
    let (near_key, _) = new_session(s, Expiry::Default).await;
    resend_same(s, near_key, "333333", 3, 60, 20).await;
    let f = resend_same(s, near_key, "444444", 4, 60, 600).await;
    assert_eq!(kept(&f), None);
    // The replacement is bound to its own nonce: the next resend keeps it.
    let g = resend_same(s, near_key, "555555", 5, 60, 600).await;
    assert_eq!(kept(&g), Some(CodeNonce([4; 16])));
    // A new_code send (no margin) replaces the code; the stale nonce is never used again.
    let fresh = send(s, near_key, &phone(), "666666", secs(60), secs(0), 3).await;
    assert_eq!(fresh, issued(0, true));
    let h2 = resend_same(s, near_key, "777777", 6, 60, 600).await;
    assert_eq!(
        kept(&h2),
        None,
        "a code stored without a nonce is never resent"
    );
    // A test number's fixed code (no nonce) neither.
    assert!(matches!(
        check(s, near_key, "777777").await,
        CheckOutcome::Approved { .. }
    ));
}

/// A check of `code` by key under `guard`.
async fn check_by_key(
    s: &Arc<dyn Store>,
    k: KeyHash,
    code: &str,
    guard: &CheckGuard,
) -> verifyd::store::Checked {
    let (p, data) = (phone(), approval_data());
    let check = CheckVerification {
        key: k,
        phone: &p,
        code_mac: mac(&p, code),
        max_attempts: 3,
        on_approve: Approval {
            new_key: key(),
            data: &data,
        },
    };
    s.check_guarded(&check, guard).await.unwrap()
}

/// A send of `code` by key, then a check of a wrong code by key.
async fn by_key(
    s: &Arc<dyn Store>,
    k: KeyHash,
    code: &str,
) -> (verifyd::store::Started, verifyd::store::Checked) {
    let p = phone();
    let send = StartVerification {
        key: k,
        phone: &p,
        code_mac: mac(&p, code),
        code_nonce: Some(CodeNonce([1; 16])),
        keep_margin: None,
        code_cap: secs(600),
        ttl: secs(60),
        resend_interval: secs(0),
        max_attempts: 3,
        new_session: None,
    };
    let started = s.start_send(&send, &SendGuard::default()).await.unwrap();
    let checked = check_by_key(s, k, "000000", &CheckGuard::default()).await;
    (started, checked)
}

async fn sends_and_checks_resolve_their_session_by_key_as_a_read_does(h: Harness) {
    // Within the refresh interval the session comes back as it is, not slid.
    let (k, created) = new_session(&h.store, Expiry::Idle(600)).await;
    let (sent, checked) = by_key(&h.store, k, "111111").await;
    assert_eq!(sent.outcome, issued(0, false));
    let s = sent.session.expect("the caller's session");
    assert_eq!(
        (s.id, s.refreshed, s.expires_at),
        (created.id, false, created.expires_at)
    );
    assert_eq!(s.data, created.data);
    assert!(!sent.created);
    assert!(matches!(
        checked.outcome,
        CheckOutcome::Wrong { attempts_left: 2 }
    ));
    let c = checked.session.expect("the caller's session");
    assert_eq!((c.id, c.refreshed), (created.id, false));
    // With an interval of 0 each of them slides it, and says so (the cookie goes out again).
    let eager = with_policy(
        &h,
        SessionPolicy {
            refresh_interval: 0,
            ..policy()
        },
    )
    .await;
    let (k, created) = new_session(&eager.store, Expiry::Idle(600)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (sent, checked) = by_key(&eager.store, k, "111111").await;
    let s = sent.session.unwrap();
    assert!(s.refreshed);
    assert!(
        s.expires_at.unwrap() > created.expires_at.unwrap(),
        "slid forward"
    );
    assert!(checked.session.unwrap().refreshed);
    // A key that names no live session: the check answers so before taking anything.
    install_write_audit(&h).await;
    let (sent, checked) = by_key(&h.store, key(), "111111").await;
    assert_eq!(
        (sent.outcome, sent.session),
        (StartOutcome::NoSession, None)
    );
    assert_eq!(
        (checked.outcome, checked.session),
        (CheckOutcome::NoSession, None)
    );
    let limited = CheckGuard {
        quotas: vec![q(Scope::IpChecks, "198.51.100.7", 1)],
        ..Default::default()
    };
    for _ in 0..3 {
        let r = check_by_key(&h.store, key(), "000000", &limited).await;
        assert_eq!(r.outcome, CheckOutcome::NoSession, "no quota is taken");
    }
    let writes = take_writes(&h).await;
    assert!(writes.is_empty(), "{writes:?}");
    // An approval by key comes back with the session as it changed.
    let (k, created) = new_session(&h.store, Expiry::Default).await;
    by_key(&h.store, k, "222222").await;
    let r = check_by_key(&h.store, k, "222222", &CheckGuard::default()).await;
    let CheckOutcome::Approved { session } = &r.outcome else {
        panic!("{r:?}");
    };
    assert_eq!(r.session.as_ref(), Some(session));
    assert_eq!(session.id, created.id);
    assert_eq!(session.data["verified_phone"], "+8613800138000");
}

/// Sets every stored code of `session_id` to the first MAC scheme, as rows written before
/// schema version 10 are.
async fn make_scheme_one(h: &Harness, session_id: i64) {
    match h.place.sql().await {
        Sql::Sqlite(c) => {
            c.execute(
                "UPDATE verifications SET mac_scheme = 1 WHERE session_id = ?1",
                [session_id],
            )
            .unwrap();
        }
        Sql::Postgres(c) => {
            c.execute(
                "UPDATE verifications SET mac_scheme = 1 WHERE session_id = $1",
                &[&session_id],
            )
            .await
            .unwrap();
        }
    }
}

async fn codes_of_the_old_mac_scheme_expire_without_costing_attempts(h: Harness) {
    let s = &h.store;
    let (sess_key, sess) = new_session(s, Expiry::Default).await;
    resend_same(s, sess_key, "111111", 1, 60, 600).await;
    make_scheme_one(&h, sess.id).await;
    // Neither the stored MAC itself nor anything else approves, and no attempt is used.
    for _ in 0..5 {
        assert_eq!(check(s, sess_key, "111111").await, CheckOutcome::Expired);
    }
    // The next send (past its cooldown) replaces it with a code of the current scheme, in the
    // same verification: the attempts were not touched.
    let r = resend_same(s, sess_key, "222222", 2, 60, 600).await;
    assert_eq!((r.outcome.clone(), kept(&r)), (issued(0, true), None));
    assert!(matches!(
        check(s, sess_key, "111111").await,
        CheckOutcome::Wrong { attempts_left: 2 }
    ));
    assert!(matches!(
        check(s, sess_key, "222222").await,
        CheckOutcome::Approved { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Maintenance.

/// Moves an outbox event's times `days` into the past, as if it had been recorded (and, if
/// dead, had died) that long ago.
async fn make_older(h: &Harness, id: &str, days: i32) {
    match h.place.sql().await {
        Sql::Sqlite(c) => {
            c.execute(
                "UPDATE outbox SET created_at = created_at - ?2, retry_from = retry_from - ?2,
                     next_at = next_at - ?2, dead_at = dead_at - ?2
                 WHERE id = ?1",
                rusqlite::params![id, i64::from(days) * 86_400_000],
            )
            .unwrap();
        }
        Sql::Postgres(c) => {
            c.execute(
                "UPDATE outbox SET created_at = created_at - make_interval(days => $2),
                     retry_from = retry_from - make_interval(days => $2),
                     next_at = next_at - make_interval(days => $2),
                     dead_at = dead_at - make_interval(days => $2)
                 WHERE id = $1",
                &[&id, &days],
            )
            .await
            .unwrap();
        }
    }
}

async fn events_dead_longer_than_kept_are_swept(h: Harness) {
    let s = &h.store;
    s.events_keepalive(Duration::from_secs(600)).await.unwrap();
    for session_id in 0..7 {
        let refused = Refused {
            session_id,
            phone: "+8613800138000",
            operation: "send",
            limit: "phone_sends",
            error: "too_many_sends",
        };
        s.record_refusal(&refused).await.unwrap();
    }
    let events = s.claim_events(10, secs(60)).await.unwrap();
    assert_eq!(events.len(), 7);
    let dies = |seq| s.event_failed(seq, &[], Failure::Dead, "crm: HTTP 503");
    // Four died eight days ago: more than a week, in two batches of at most three.
    for e in &events[..4] {
        dies(e.seq).await.unwrap();
        make_older(&h, &e.id, 8).await;
    }
    // One died six days ago, within the week.
    let young = &events[4];
    dies(young.seq).await.unwrap();
    make_older(&h, &young.id, 6).await;
    // One died as long ago as the first four, then was redriven: pending again.
    let redriven = &events[5];
    dies(redriven.seq).await.unwrap();
    make_older(&h, &redriven.id, 8).await;
    assert_eq!(
        s.redrive_events(&Redrive::Id(redriven.id.clone()))
            .await
            .unwrap(),
        1
    );
    // One still retried, recorded a month ago: old, but never dead.
    let pending = &events[6];
    s.event_failed(
        pending.seq,
        &[],
        Failure::RetryAfter(secs(60)),
        "crm: timeout",
    )
    .await
    .unwrap();
    make_older(&h, &pending.id, 30).await;

    let report = s.sweep(3, KEEP_DEAD).await.unwrap();
    assert_eq!((report.dead_events, report.ran), (4, true), "{report:?}");
    let ids = |list: Vec<verifyd::store::events::EventSummary>| {
        list.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(s.list_events(true, 100).await.unwrap()),
        [young.id.as_str()]
    );
    assert_eq!(
        ids(s.list_events(false, 100).await.unwrap()),
        [redriven.id.as_str(), pending.id.as_str()]
    );
    assert_eq!(s.sweep(3, KEEP_DEAD).await.unwrap().dead_events, 0);

    // Kept for five days only, the one dead for six goes too; the pending ones still stay.
    let report = s.sweep(3, Duration::from_secs(5 * 86_400)).await.unwrap();
    assert_eq!(report.dead_events, 1, "{report:?}");
    assert!(s.list_events(true, 100).await.unwrap().is_empty());
    assert_eq!(s.outbox_counts().await.unwrap().pending, 2);
}

async fn sweep_removes_only_expired_rows(h: Harness) {
    let s = &h.store;
    // Three expired sessions, one with a live verification that must go with it.
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(new_session(s, Expiry::Idle(1)).await);
    }
    assert_eq!(send_default(s, dead[0].0, "123456").await, issued(0, false));
    // A live session with one expiring and one live verification; a session that never expires.
    let (live, _) = new_session(s, Expiry::Default).await;
    let (never, _) = new_session(s, Expiry::Never).await;
    let short = send(s, live, &phone(), "111111", secs(1), secs(60), 3).await;
    assert_eq!(short, issued(0, false));
    let long = send(s, live, &other_phone(), "222222", secs(60), secs(60), 3).await;
    assert_eq!(long, issued(0, false));
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let report = s.sweep(2, KEEP_DEAD).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            sessions: 3,
            verifications: 1,
            limits: 0,
            dead_events: 0,
            ran: true
        }
    );
    assert_eq!(
        s.sweep(2, KEEP_DEAD).await.unwrap(),
        SweepReport {
            sessions: 0,
            verifications: 0,
            limits: 0,
            dead_events: 0,
            ran: true
        }
    );
    assert!(s.touch_session(&live).await.unwrap().is_some());
    assert!(s.touch_session(&never).await.unwrap().is_some());
    assert_eq!(
        check(s, live, "111111").await,
        CheckOutcome::NotFound,
        "swept"
    );
    let kept = check_with(s, live, &other_phone(), "222222", 3, key()).await;
    assert!(
        matches!(kept, CheckOutcome::Approved { .. }),
        "live verifications stay"
    );
}

async fn server_secret_is_stable(h: Harness) {
    // Racing first callers all get the one stored value.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move { store.server_secret().await.unwrap() })
        })
        .collect();
    let first = h.store.server_secret().await.unwrap();
    assert!(first.len() >= 32, "at least 256 bits");
    assert!(first.iter().any(|&b| b != 0));
    for task in tasks {
        assert_eq!(task.await.unwrap(), first);
    }
    assert_eq!(h.store.server_secret().await.unwrap(), first);
    let reopened = h.reopen().await;
    assert_eq!(
        reopened.server_secret().await.unwrap(),
        first,
        "survives a restart"
    );
}

async fn migrate_is_idempotent(h: Harness) {
    let (k, created) = new_session(&h.store, Expiry::Default).await;
    h.store.migrate().await.unwrap();
    let again = h.reopen().await;
    again.migrate().await.unwrap();
    again.ping().await.unwrap();
    h.store.ping().await.unwrap();
    assert_eq!(
        again.touch_session(&k).await.unwrap().unwrap().id,
        created.id,
        "data kept"
    );
}

// ---------------------------------------------------------------------------------------------
// Abuse limits.

pub(super) fn q(scope: Scope, key: &str, limit: u32) -> Quota {
    Quota {
        scope,
        key: key.into(),
        limit,
        window: secs(600),
    }
}

async fn guarded_send(h: &Harness, phone: &PhoneNumber, guard: &SendGuard) -> StartOutcome {
    guarded_send_on(&h.store, phone, guard).await
}

/// A send from a fresh session under `guard`.
async fn guarded_send_on(
    store: &Arc<dyn Store>,
    phone: &PhoneNumber,
    guard: &SendGuard,
) -> StartOutcome {
    let (sess_key, _) = new_session(store, Expiry::Default).await;
    let req = StartVerification {
        key: sess_key,
        phone,
        code_mac: mac(phone, "123456"),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl: secs(60),
        resend_interval: secs(60),
        max_attempts: 3,
        new_session: None,
    };
    store.start_send(&req, guard).await.unwrap().outcome
}

async fn quotas_are_all_or_nothing(h: Harness) {
    let small = SendGuard {
        quotas: vec![q(Scope::PhoneSends, "a", 1), q(Scope::Global, "*", 3)],
        pumping: None,
        ..Default::default()
    };
    assert_eq!(guarded_send(&h, &phone(), &small).await, issued(0, false));
    // The per-number quota is full: the global one must not move.
    for _ in 0..3 {
        match guarded_send(&h, &phone(), &small).await {
            StartOutcome::Refused {
                by: Refusal::Quota(Scope::PhoneSends),
                retry_after,
            } => assert!(retry_after <= secs(600) && retry_after >= secs(598)),
            other => panic!("{other:?}"),
        }
    }
    let other = SendGuard {
        quotas: vec![q(Scope::PhoneSends, "b", 5), q(Scope::Global, "*", 3)],
        pumping: None,
        ..Default::default()
    };
    assert_eq!(guarded_send(&h, &phone(), &other).await, issued(0, false));
    assert_eq!(guarded_send(&h, &phone(), &other).await, issued(0, false));
    assert!(matches!(
        guarded_send(&h, &phone(), &other).await,
        StartOutcome::Refused {
            by: Refusal::Quota(Scope::Global),
            ..
        }
    ));
}

async fn refused_sends_record_nothing(h: Harness) {
    let full = SendGuard {
        quotas: vec![q(Scope::PhoneSends, "x", 1)],
        pumping: None,
        ..Default::default()
    };
    assert_eq!(guarded_send(&h, &phone(), &full).await, issued(0, false));
    let (sess_key, _) = new_session(&h.store, Expiry::Default).await;
    let req = StartVerification {
        key: sess_key,
        phone: &phone(),
        code_mac: mac(&phone(), "123456"),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl: secs(60),
        resend_interval: secs(60),
        max_attempts: 3,
        new_session: None,
    };
    assert!(matches!(
        h.store.start_send(&req, &full).await.unwrap().outcome,
        StartOutcome::Refused { .. }
    ));
    assert_eq!(
        check(&h.store, sess_key, "123456").await,
        CheckOutcome::NotFound
    );
}

async fn failed_checks_lock_the_number(h: Harness) {
    let guard = CheckGuard {
        quotas: vec![],
        failures: Some(FailureLimit {
            max: 2,
            window: secs(600),
            lockout: secs(3600),
        }),
        pumping: None,
        ..Default::default()
    };
    let data = approval_data();
    let mut sessions = vec![];
    for _ in 0..3 {
        let (sess_key, _) = new_session(&h.store, Expiry::Default).await;
        assert_eq!(
            send_default(&h.store, sess_key, "111111").await,
            issued(0, false)
        );
        sessions.push(sess_key);
    }
    let checking = |sid: KeyHash, code: &'static str| {
        let store = h.store.clone();
        let (guard, data) = (guard.clone(), data.clone());
        async move {
            let p = phone();
            let req = CheckVerification {
                key: sid,
                phone: &p,
                code_mac: mac(&p, code),
                max_attempts: 3,
                on_approve: Approval {
                    new_key: key(),
                    data: &data,
                },
            };
            store.check_guarded(&req, &guard).await.unwrap().outcome
        }
    };
    assert_eq!(
        checking(sessions[0], "222222").await,
        CheckOutcome::Wrong { attempts_left: 2 }
    );
    assert_eq!(
        checking(sessions[1], "222222").await,
        CheckOutcome::Wrong { attempts_left: 2 }
    );
    // Locked: even the right code is refused, in any session holding a code.
    match checking(sessions[2], "111111").await {
        CheckOutcome::Refused {
            by: Refusal::Locked,
            retry_after,
        } => assert!(retry_after > secs(3500)),
        other => panic!("{other:?}"),
    }
    // A session without a code for the number sees what it would see without the lock.
    let (stranger_key, _) = new_session(&h.store, Expiry::Default).await;
    assert_eq!(
        checking(stranger_key, "111111").await,
        CheckOutcome::NotFound
    );
}

async fn pumping_breaker_trips_and_resets(h: Harness) {
    let rule = PumpingRule {
        country: "+86".into(),
        window: secs(600),
        min_sample: 3,
        min_conversion: 0.5,
    };
    let guard = SendGuard {
        quotas: vec![],
        pumping: Some(rule.clone()),
        ..Default::default()
    };
    for _ in 0..3 {
        assert_eq!(guarded_send(&h, &phone(), &guard).await, issued(0, false));
    }
    assert!(matches!(
        guarded_send(&h, &phone(), &guard).await,
        StartOutcome::Refused {
            by: Refusal::Breaker,
            ..
        }
    ));
    let states = h.store.pumping_states().await.unwrap();
    assert_eq!(states.len(), 1);
    assert!(states[0].tripped && states[0].sends == 3 && states[0].approvals == 0);
    assert!(h.store.pumping_reset("+86").await.unwrap());
    assert!(!h.store.pumping_reset("+44").await.unwrap());
    assert_eq!(guarded_send(&h, &phone(), &guard).await, issued(0, false));
    // Approvals count towards the conversion.
    let (sess_key, _) = new_session(&h.store, Expiry::Default).await;
    assert_eq!(
        send_default(&h.store, sess_key, "111111").await,
        issued(0, false)
    );
    let data = approval_data();
    let req = CheckVerification {
        key: sess_key,
        phone: &phone(),
        code_mac: mac(&phone(), "111111"),
        max_attempts: 3,
        on_approve: Approval {
            new_key: key(),
            data: &data,
        },
    };
    let cg = CheckGuard {
        quotas: vec![],
        failures: None,
        pumping: Some(rule),
        ..Default::default()
    };
    assert!(matches!(
        h.store.check_guarded(&req, &cg).await.unwrap().outcome,
        CheckOutcome::Approved { .. }
    ));
    let states = h.store.pumping_states().await.unwrap();
    assert_eq!((states[0].sends, states[0].approvals), (1, 1));
}

async fn pumping_breaker_is_exact_under_concurrent_sends(h: Harness) {
    let guard = SendGuard {
        quotas: vec![],
        pumping: Some(PumpingRule {
            country: "+86".into(),
            window: secs(600),
            min_sample: 5,
            min_conversion: 0.5,
        }),
        ..Default::default()
    };
    // Sessions first, created concurrently so that a pooled store has all its connections
    // open: the sends themselves then race as closely as they can.
    let creating: Vec<_> = (0..24)
        .map(|_| {
            let store = h.store.clone();
            tokio::spawn(async move { new_session(&store, Expiry::Default).await.0 })
        })
        .collect();
    let mut sessions = vec![];
    for t in creating {
        sessions.push(t.await.unwrap());
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(sessions.len()));
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|sid| {
            let (store, guard, barrier) = (h.store.clone(), guard.clone(), barrier.clone());
            tokio::spawn(async move {
                let p = phone();
                let req = StartVerification {
                    key: sid,
                    phone: &p,
                    code_mac: mac(&p, "123456"),
                    code_nonce: None,
                    keep_margin: None,
                    code_cap: Duration::from_secs(86_400),
                    ttl: secs(60),
                    resend_interval: secs(60),
                    max_attempts: 3,
                    new_session: None,
                };
                barrier.wait().await;
                store.start_send(&req, &guard).await.unwrap().outcome
            })
        })
        .collect();
    let mut issued_sends = 0;
    for t in tasks {
        match t.await.unwrap() {
            StartOutcome::Issued { .. } => issued_sends += 1,
            StartOutcome::Refused {
                by: Refusal::Breaker,
                retry_after,
            } => assert!(retry_after <= secs(600), "{retry_after:?}"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        issued_sends, 5,
        "the send that trips the breaker is the last one"
    );
    let states = h.store.pumping_states().await.unwrap();
    assert_eq!(states.len(), 1);
    assert!(states[0].tripped && states[0].sends == 5, "{states:?}");
    // Another country is not affected.
    let mut uk = guard.clone();
    if let Some(p) = uk.pumping.as_mut() {
        p.country = "+44".into();
    }
    assert_eq!(
        guarded_send(&h, &other_phone(), &uk).await,
        issued(0, false)
    );
}

async fn abandoned_sends_give_back_quotas_and_breaker_counts(h: Harness) {
    let guard = SendGuard {
        quotas: vec![
            q(Scope::PhoneSends, "+8613800138000", 1),
            q(Scope::Global, "*", 1),
        ],
        pumping: Some(PumpingRule {
            country: "+86".into(),
            window: secs(600),
            min_sample: 1,
            min_conversion: 0.5,
        }),
        ..Default::default()
    };
    // Each send fills both quotas and trips the breaker; each failed delivery undoes all that.
    for round in 0..3 {
        let (sess_key, sess) = new_session(&h.store, Expiry::Default).await;
        let code_mac = mac(&phone(), "123456");
        let req = StartVerification {
            key: sess_key,
            phone: &phone(),
            code_mac,
            code_nonce: None,
            keep_margin: None,
            code_cap: Duration::from_secs(86_400),
            ttl: secs(60),
            resend_interval: secs(60),
            max_attempts: 3,
            new_session: None,
        };
        assert_eq!(
            h.store.start_send(&req, &guard).await.unwrap().outcome,
            issued(0, false),
            "round {round}"
        );
        let states = h.store.pumping_states().await.unwrap();
        assert!(states[0].tripped && states[0].sends == 1, "{states:?}");
        assert!(matches!(
            guarded_send(&h, &phone(), &guard).await,
            StartOutcome::Refused {
                by: Refusal::Breaker,
                ..
            }
        ));
        h.store
            .abandon_send(sess.id, &phone(), &code_mac, &guard)
            .await
            .unwrap();
        let states = h.store.pumping_states().await.unwrap();
        assert!(!states[0].tripped && states[0].sends == 0, "{states:?}");
        // The cooldown is lifted too: the same session may retry at once.
        assert_eq!(
            h.store.start_send(&req, &guard).await.unwrap().outcome,
            issued(0, true)
        );
        h.store
            .abandon_send(sess.id, &phone(), &code_mac, &guard)
            .await
            .unwrap();
    }
    // Without the breaker the quotas are what refuses: a delivered send keeps its unit.
    let quotas_only = SendGuard {
        quotas: guard.quotas.clone(),
        pumping: None,
        ..Default::default()
    };
    assert_eq!(
        guarded_send(&h, &phone(), &quotas_only).await,
        issued(0, false)
    );
    assert!(matches!(
        guarded_send(&h, &phone(), &quotas_only).await,
        StartOutcome::Refused {
            by: Refusal::Quota(_),
            ..
        }
    ));
    // Giving back never goes below zero, nor touches counters the send did not take.
    let (_, sess) = new_session(&h.store, Expiry::Default).await;
    let other = SendGuard {
        quotas: vec![q(Scope::PhoneSends, "+447400123456", 1)],
        pumping: None,
        ..Default::default()
    };
    for _ in 0..3 {
        h.store
            .abandon_send(
                sess.id,
                &other_phone(),
                &mac(&other_phone(), "0000"),
                &other,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        guarded_send(&h, &other_phone(), &other).await,
        issued(0, false)
    );
    assert!(matches!(
        guarded_send(&h, &other_phone(), &other).await,
        StartOutcome::Refused { .. }
    ));
}

/// Triggers that log every row the store writes to the tables a check touches. They are the
/// test's own (installed over a separate connection), so the store runs unchanged; row counts
/// are exact where timings would be noisy.
async fn install_write_audit(h: &Harness) {
    const TABLES: [&str; 3] = ["quota_counters", "verifications", "sessions"];
    match h.place.sql().await {
        Sql::Sqlite(c) => {
            let mut sql = String::from("CREATE TABLE write_audit (tbl TEXT, op TEXT);");
            for t in TABLES {
                for op in ["INSERT", "UPDATE", "DELETE"] {
                    sql += &format!(
                        "CREATE TRIGGER audit_{t}_{op} AFTER {op} ON {t} BEGIN
                             INSERT INTO write_audit VALUES ('{t}', '{op}'); END;"
                    );
                }
            }
            c.execute_batch(&sql).unwrap();
        }
        Sql::Postgres(c) => {
            let mut sql = String::from(
                "CREATE TABLE write_audit (tbl TEXT, op TEXT);
                 CREATE FUNCTION write_audit() RETURNS trigger LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO write_audit VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$;",
            );
            for t in TABLES {
                sql += &format!(
                    "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON {t}
                     FOR EACH ROW EXECUTE FUNCTION write_audit();"
                );
            }
            c.batch_execute(&sql).await.unwrap();
        }
    }
}

/// The rows written since the last call, as ("table", "OP") -> count; empties the log.
async fn take_writes(h: &Harness) -> BTreeMap<(String, String), i64> {
    const SQL: &str = "SELECT tbl, op, count(*) FROM write_audit GROUP BY tbl, op";
    let rows: Vec<(String, String, i64)> = match h.place.sql().await {
        Sql::Sqlite(c) => {
            let rows = c
                .prepare(SQL)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            c.execute("DELETE FROM write_audit", []).unwrap();
            rows
        }
        Sql::Postgres(c) => {
            let rows = c.query(SQL, &[]).await.unwrap();
            c.execute("DELETE FROM write_audit", &[]).await.unwrap();
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        }
    };
    rows.into_iter().map(|(t, op, n)| ((t, op), n)).collect()
}

/// Rows written per table.
fn per_table(w: &BTreeMap<(String, String), i64>) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for ((t, _), n) in w {
        *out.entry(t.clone()).or_default() += n;
    }
    out
}

async fn checks_write_the_same_whatever_the_number_history(h: Harness) {
    let limit = FailureLimit {
        max: 3,
        window: secs(600),
        lockout: secs(3600),
    };
    // Both failure counters, the number's and the number's from the client's network.
    let guard = CheckGuard {
        quotas: vec![],
        failures: Some(limit),
        network_failures: Some(("203.0.113.0/24".into(), FailureLimit { max: 50, ..limit })),
        pumping: None,
    };
    let (owner_key, _) = new_session(&h.store, Expiry::Default).await;
    let (stranger_key, _) = new_session(&h.store, Expiry::Default).await;
    let sent = send(
        &h.store,
        owner_key,
        &phone(),
        "111111",
        secs(60),
        secs(60),
        100,
    )
    .await;
    assert_eq!(sent, issued(0, false));
    install_write_audit(&h).await;
    let data = approval_data();
    let check = |sid: KeyHash, p: PhoneNumber, code: &'static str| {
        let (store, guard, data) = (h.store.clone(), guard.clone(), data.clone());
        async move {
            let req = CheckVerification {
                key: sid,
                phone: &p,
                code_mac: mac(&p, code),
                max_attempts: 100,
                on_approve: Approval {
                    new_key: key(),
                    data: &data,
                },
            };
            store.check_guarded(&req, &guard).await.unwrap().outcome
        }
    };
    // A number nobody ever checked, then one with a wrong guess behind it, then a locked one:
    // a session without a code gets the same answer and costs the same writes every time.
    assert_eq!(
        check(stranger_key, other_phone(), "222222").await,
        CheckOutcome::NotFound
    );
    let never_seen = take_writes(&h).await;
    assert_eq!(
        check(owner_key, phone(), "222222").await,
        CheckOutcome::Wrong { attempts_left: 99 }
    );
    let first_wrong = take_writes(&h).await;
    assert_eq!(
        check(stranger_key, phone(), "222222").await,
        CheckOutcome::NotFound
    );
    let with_history = take_writes(&h).await;
    assert_eq!(
        check(owner_key, phone(), "333333").await,
        CheckOutcome::Wrong { attempts_left: 98 }
    );
    let second_wrong = take_writes(&h).await;
    assert_eq!(
        check(owner_key, phone(), "444444").await,
        CheckOutcome::Wrong { attempts_left: 97 }
    );
    assert!(matches!(
        check(owner_key, phone(), "111111").await,
        CheckOutcome::Refused {
            by: Refusal::Locked,
            ..
        }
    ));
    take_writes(&h).await;
    assert_eq!(
        check(stranger_key, phone(), "222222").await,
        CheckOutcome::NotFound
    );
    let locked = take_writes(&h).await;

    assert_eq!(
        with_history, locked,
        "a lock costs nothing extra to look at"
    );
    let not_found = per_table(&with_history);
    assert!(not_found["quota_counters"] >= 1, "{with_history:?}");
    assert_eq!(
        per_table(&never_seen),
        not_found,
        "{never_seen:?} vs {with_history:?}"
    );
    // A wrong code writes what a missing one writes, plus the attempt on the verification row
    // that the session itself holds (and so already knows about).
    for wrong in [&first_wrong, &second_wrong] {
        let mut w = per_table(wrong);
        assert_eq!(w.remove("verifications"), Some(1), "{wrong:?}");
        assert_eq!(w, not_found, "{wrong:?} vs {with_history:?}");
    }
}

/// A coarse guard beside the exact one above: it would catch a not-found path that skipped the
/// transaction or the round trip (an order of magnitude), not a single row write. Checks
/// alternate, so load on the machine hits both kinds alike; medians drop the outliers.
async fn wrong_and_missing_codes_take_comparable_time(h: Harness) {
    let (owner_key, _) = new_session(&h.store, Expiry::Default).await;
    let (stranger_key, _) = new_session(&h.store, Expiry::Default).await;
    let sent = send(
        &h.store,
        owner_key,
        &phone(),
        "111111",
        secs(60),
        secs(60),
        1000,
    )
    .await;
    assert_eq!(sent, issued(0, false));
    let guard = CheckGuard {
        quotas: vec![],
        failures: Some(FailureLimit {
            max: 1000,
            window: secs(600),
            lockout: secs(3600),
        }),
        pumping: None,
        ..Default::default()
    };
    let data = approval_data();
    let timed = |sid: KeyHash| {
        let (store, guard, data) = (h.store.clone(), guard.clone(), data.clone());
        async move {
            let p = phone();
            let req = CheckVerification {
                key: sid,
                phone: &p,
                code_mac: mac(&p, "222222"),
                max_attempts: 1000,
                on_approve: Approval {
                    new_key: key(),
                    data: &data,
                },
            };
            let t = std::time::Instant::now();
            let outcome = store.check_guarded(&req, &guard).await.unwrap().outcome;
            (t.elapsed(), outcome)
        }
    };
    let (mut wrong, mut missing) = (vec![], vec![]);
    for _ in 0..60 {
        let (t, o) = timed(owner_key).await;
        assert!(matches!(o, CheckOutcome::Wrong { .. }), "{o:?}");
        wrong.push(t);
        let (t, o) = timed(stranger_key).await;
        assert_eq!(o, CheckOutcome::NotFound);
        missing.push(t);
    }
    wrong.sort_unstable();
    missing.sort_unstable();
    let (w, m) = (wrong[30].as_secs_f64(), missing[30].as_secs_f64());
    assert!(
        w / m < 4.0 && m / w < 4.0,
        "median wrong {w:.6} s, median not found {m:.6} s"
    );
}

async fn idempotency_records(h: Harness) {
    let s = &h.store;
    let (a, b) = ([1u8; 32], [2u8; 32]);
    let ttl = secs(60);
    assert_eq!(
        s.idempotency_begin("s:1", "k", &a, ttl).await.unwrap(),
        IdempotencyBegin::Started
    );
    assert_eq!(
        s.idempotency_begin("s:1", "k", &a, ttl).await.unwrap(),
        IdempotencyBegin::InFlight
    );
    assert_eq!(
        s.idempotency_begin("s:1", "k", &b, ttl).await.unwrap(),
        IdempotencyBegin::Mismatch
    );
    assert_eq!(
        s.idempotency_begin("s:2", "k", &b, ttl).await.unwrap(),
        IdempotencyBegin::Started
    );
    let headers = vec![("retry-at".to_owned(), "1764134400".to_owned())];
    s.idempotency_finish("s:1", "k", 429, "{}", &headers)
        .await
        .unwrap();
    assert_eq!(
        s.idempotency_begin("s:1", "k", &a, ttl).await.unwrap(),
        IdempotencyBegin::Done {
            status: 429,
            body: "{}".into(),
            headers,
        }
    );
    // A finished record is final: a second finish does not overwrite it.
    s.idempotency_finish("s:1", "k", 202, "{\"x\":1}", &[])
        .await
        .unwrap();
    assert!(matches!(
        s.idempotency_begin("s:1", "k", &a, ttl).await.unwrap(),
        IdempotencyBegin::Done { status: 429, .. }
    ));
    s.idempotency_abandon("s:2", "k").await.unwrap();
    assert_eq!(
        s.idempotency_begin("s:2", "k", &a, ttl).await.unwrap(),
        IdempotencyBegin::Started
    );
    // Expired records are swept, and the key can be used afresh.
    assert_eq!(
        s.idempotency_begin("s:3", "k", &a, Duration::from_millis(1))
            .await
            .unwrap(),
        IdempotencyBegin::Started
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = s.sweep(100, KEEP_DEAD).await.unwrap();
    assert!(report.limits >= 1, "{report:?}");
    assert_eq!(
        s.idempotency_begin("s:3", "k", &b, ttl).await.unwrap(),
        IdempotencyBegin::Started
    );
}

// ---------------------------------------------------------------------------------------------
// Whole-session replace, versions, absolute expiry, key order (issue 16).

fn keys(data: &Map<String, Value>) -> Vec<&str> {
    data.keys().map(String::as_str).collect()
}

/// Keys in an order `jsonb` would not keep (it sorts by length, then bytes).
fn unsorted() -> Map<String, Value> {
    obj(
        json!({"zeta": 1, "a": {"y": 1, "b": 2}, "mm": [1.5, "x"], "b": null, "_session_expiry": 9}),
    )
}

async fn replace_is_whole_ordered_and_versioned(h: Harness) {
    let s = &h.store;
    let (k, created) = new_session(s, Expiry::Default).await;
    assert_eq!(created.version, 1);
    let replaced = match s
        .replace_session(&k, &unsorted(), Expiry::Idle(60), None)
        .await
        .unwrap()
    {
        ReplaceOutcome::Replaced(r) => r,
        other => panic!("expected Replaced, got {other:?}"),
    };
    assert_eq!(keys(&replaced.data), keys(&unsorted()), "order as given");
    assert!(
        !replaced.data.contains_key("seed"),
        "a replace drops keys it does not name"
    );
    assert_eq!(replaced.expiry, Expiry::Idle(60));
    assert_expires_after_now(&replaced, secs(60));
    assert_eq!(replaced.version, 2);
    let read = s.touch_session(&k).await.unwrap().unwrap();
    assert_eq!(keys(&read.data), keys(&unsorted()));
    assert_eq!(read.version, 2, "a read does not move the version");
    let nested: Vec<&str> = read.data["a"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(nested, ["y", "b"], "nested objects keep their order too");

    // The same data again changes nothing the version covers.
    let same = s
        .replace_session(&k, &unsorted(), Expiry::Idle(60), None)
        .await
        .unwrap();
    assert!(
        matches!(same, ReplaceOutcome::Replaced(ref r) if r.version == 2),
        "{same:?}"
    );
    // Per-name writes and expiry changes move it.
    let v = s
        .set_value(&k, "n", &json!(1))
        .await
        .unwrap()
        .unwrap()
        .version;
    assert_eq!(v, 3);
    let v = s
        .set_expiry(&k, Expiry::Never)
        .await
        .unwrap()
        .unwrap()
        .version;
    assert_eq!(v, 4);

    assert!(matches!(
        s.replace_session(&key(), &unsorted(), Expiry::Default, None)
            .await
            .unwrap(),
        ReplaceOutcome::NoSession
    ));
    assert!(s.flush(&k).await.unwrap());
    assert!(
        matches!(
            s.replace_session(&k, &unsorted(), Expiry::Default, Some(4))
                .await
                .unwrap(),
            ReplaceOutcome::NoSession
        ),
        "a flushed session is gone, whatever version is asked for"
    );

    let big = obj(json!({"x": "y".repeat(h.policy.max_data_bytes)}));
    let (k2, _) = new_session(s, Expiry::Default).await;
    assert!(matches!(
        s.replace_session(&k2, &big, Expiry::Default, None).await,
        Err(StoreError::DataTooLarge(_))
    ));
    assert_eq!(
        s.touch_session(&k2).await.unwrap().unwrap().data,
        obj(json!({"seed": 1}))
    );
}

#[track_caller]
fn assert_expires_after_now(s: &Session, after: Duration) {
    assert_near(
        s.expires_at.expect("expires"),
        SystemTime::now() + after,
        secs(2),
    );
}

async fn replace_if_version_lets_one_racer_win(h: Harness) {
    let s = &h.store;
    let (k, created) = new_session(s, Expiry::Default).await;
    let mut racers = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(s);
        let version = created.version;
        racers.push(tokio::spawn(async move {
            store
                .replace_session(
                    &k,
                    &obj(json!({ "writer": i })),
                    Expiry::Default,
                    Some(version),
                )
                .await
                .unwrap()
        }));
    }
    let mut won = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            ReplaceOutcome::Replaced(r) => won.push(r),
            ReplaceOutcome::VersionMismatch(v) => assert_eq!(v, created.version + 1),
            ReplaceOutcome::NoSession => panic!("the session is alive"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one writer holding version 1 wins");
    let read = s.touch_session(&k).await.unwrap().unwrap();
    assert_eq!(
        read.data, won[0].data,
        "the winner's data is what is stored"
    );
    assert_eq!(read.version, created.version + 1);
}

async fn absolute_expiry_never_slides_and_the_past_is_dead(h: Harness) {
    let s = &h.store;
    let at = SystemTime::now() + secs(600);
    let k = key();
    let created = s
        .create_session(&k, &obj(json!({})), Expiry::At(at))
        .await
        .unwrap();
    assert_near(created.expires_at.unwrap(), at, Duration::from_millis(2));
    assert!(matches!(created.expiry, Expiry::At(_)));
    let written = s.set_value(&k, "a", &json!(1)).await.unwrap().unwrap();
    assert_near(written.expires_at.unwrap(), at, Duration::from_millis(2));
    let read = h.reopen().await.touch_session(&k).await.unwrap().unwrap();
    assert_eq!(
        read.expiry, written.expiry,
        "the moment reads back after a restart"
    );

    // A moment in the past: the session is dead at once, through every door.
    let past = SystemTime::now() - secs(1);
    let r = s
        .replace_session(&k, &obj(json!({"a": 2})), Expiry::At(past), None)
        .await
        .unwrap();
    assert!(matches!(r, ReplaceOutcome::Replaced(_)), "{r:?}");
    assert_eq!(s.touch_session(&k).await.unwrap(), None);
    assert!(s.set_value(&k, "b", &json!(1)).await.unwrap().is_none());
    assert!(
        matches!(
            s.replace_session(&k, &obj(json!({})), Expiry::Default, None)
                .await
                .unwrap(),
            ReplaceOutcome::NoSession
        ),
        "a dead session cannot be revived by a replace"
    );

    let k2 = key();
    s.create_session(&k2, &obj(json!({})), Expiry::At(past))
        .await
        .unwrap();
    assert_eq!(s.touch_session(&k2).await.unwrap(), None, "born dead");
    let (k3, _) = new_session(s, Expiry::Default).await;
    s.set_expiry(&k3, Expiry::At(past)).await.unwrap().unwrap();
    assert_eq!(s.touch_session(&k3).await.unwrap(), None);

    // `max_lifetime` still caps an absolute moment.
    let capped = with_policy(
        &h,
        SessionPolicy {
            max_lifetime: Some(60),
            ..h.policy
        },
    )
    .await;
    let far = SystemTime::now() + secs(86_400);
    let c = capped
        .store
        .create_session(&key(), &obj(json!({})), Expiry::At(far))
        .await
        .unwrap();
    assert_near(c.expires_at.unwrap(), c.created_at + secs(60), secs(1));
}

async fn key_order_survives_every_write(h: Harness) {
    let s = &h.store;
    let k = key();
    s.create_session(&k, &unsorted(), Expiry::Default)
        .await
        .unwrap();
    assert_eq!(
        keys(&s.touch_session(&k).await.unwrap().unwrap().data),
        keys(&unsorted())
    );
    s.set_value(&k, "c", &json!(3)).await.unwrap().unwrap();
    s.set_value(&k, "zeta", &json!(2)).await.unwrap().unwrap();
    let d = s.delete_value(&k, "a").await.unwrap();
    assert!(matches!(d, DeleteOutcome::Deleted(_)));
    let read = s.touch_session(&k).await.unwrap().unwrap();
    assert_eq!(
        keys(&read.data),
        ["zeta", "mm", "b", "_session_expiry", "c"]
    );
    assert_eq!(
        read.data["zeta"],
        json!(2),
        "overwriting a key keeps its place"
    );
    let cycled = key();
    s.cycle(&k, &cycled).await.unwrap().unwrap();
    let read = h
        .reopen()
        .await
        .touch_session(&cycled)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        keys(&read.data),
        ["zeta", "mm", "b", "_session_expiry", "c"]
    );
}

// ---------------------------------------------------------------------------------------------
// Delivery receipts: the state only moves forward (queued → sent → delivered | failed), the
// first final receipt wins, repeats change nothing, unknown ids are reported as such.

async fn new_delivery(
    store: &Arc<dyn Store>,
    session_id: i64,
    provider: &str,
    mid: &str,
) -> String {
    let id = verifyd::delivery::new_id();
    store
        .record_delivery(&NewDelivery {
            id: &id,
            session_id,
            provider,
            message_id: mid,
            country: "86",
        })
        .await
        .unwrap();
    id
}

fn receipt(provider: &str, mid: &str, state: DeliveryState, code: &str) -> ReceiptUpdate {
    ReceiptUpdate {
        provider: provider.into(),
        message_id: mid.into(),
        state,
        error_code: Some(code.into()),
    }
}

async fn delivery_receipts_only_move_forward(h: Harness) {
    let s = &h.store;
    let (_, session) = new_session(s, Expiry::Default).await;
    let id = new_delivery(s, session.id, "cn", "BIZ-1").await;
    let d = s.delivery(&id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Queued);
    assert_eq!(
        (
            d.provider.as_str(),
            d.message_id.as_str(),
            d.country.as_str()
        ),
        ("cn", "BIZ-1", "86")
    );
    assert!(d.sent_at.is_none() && d.final_at.is_none() && d.error_code.is_none());
    assert_near(d.queued_at, SystemTime::now(), secs(5));

    let sent = receipt("cn", "BIZ-1", DeliveryState::Sent, "ACCEPTD");
    let ReceiptOutcome::Applied { delivery } = s.apply_receipt(&sent).await.unwrap() else {
        panic!("queued → sent applies")
    };
    assert_eq!(delivery.state, DeliveryState::Sent);
    assert!(delivery.sent_at.is_some());
    assert_eq!(
        s.apply_receipt(&sent).await.unwrap(),
        ReceiptOutcome::Duplicate
    );

    let delivered = receipt("cn", "BIZ-1", DeliveryState::Delivered, "DELIVRD");
    let ReceiptOutcome::Applied { delivery } = s.apply_receipt(&delivered).await.unwrap() else {
        panic!("sent → delivered applies")
    };
    assert_eq!(delivery.state, DeliveryState::Delivered);
    assert_eq!(delivery.error_code.as_deref(), Some("DELIVRD"));
    assert!(delivery.final_at.is_some());
    assert_eq!(
        s.apply_receipt(&delivered).await.unwrap(),
        ReceiptOutcome::Duplicate
    );
    // Late and contradicting receipts are stale: the final state stays.
    for late in [
        receipt("cn", "BIZ-1", DeliveryState::Sent, "ACCEPTD"),
        receipt("cn", "BIZ-1", DeliveryState::Queued, "-"),
        receipt("cn", "BIZ-1", DeliveryState::Failed, "MK:0001"),
    ] {
        assert_eq!(
            s.apply_receipt(&late).await.unwrap(),
            ReceiptOutcome::Stale,
            "{late:?}"
        );
    }
    let d = s.delivery(&id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!(d.error_code.as_deref(), Some("DELIVRD"));

    // A final receipt may skip `sent`; a later `sent` is stale.
    let id2 = new_delivery(s, session.id, "cn", "BIZ-2").await;
    let failed = receipt("cn", "BIZ-2", DeliveryState::Failed, "MK:0012");
    assert!(matches!(
        s.apply_receipt(&failed).await.unwrap(),
        ReceiptOutcome::Applied { .. }
    ));
    let stale = receipt("cn", "BIZ-2", DeliveryState::Sent, "x");
    assert_eq!(
        s.apply_receipt(&stale).await.unwrap(),
        ReceiptOutcome::Stale
    );
    let d2 = s.delivery(&id2).await.unwrap().unwrap();
    assert_eq!((d2.state, d2.sent_at), (DeliveryState::Failed, None));
    // The state survives a restart.
    let again = h.reopen().await;
    assert_eq!(
        again.delivery(&id).await.unwrap().unwrap().state,
        DeliveryState::Delivered
    );
}

async fn delivery_receipts_for_unknown_ids_change_nothing(h: Harness) {
    let s = &h.store;
    let (_, session) = new_session(s, Expiry::Default).await;
    let id = new_delivery(s, session.id, "cn", "BIZ-1").await;
    // Same message id from another instance, another id from the same instance.
    for r in [
        receipt("other", "BIZ-1", DeliveryState::Delivered, "DELIVRD"),
        receipt("cn", "BIZ-2", DeliveryState::Delivered, "DELIVRD"),
        receipt("cn", "biz-1", DeliveryState::Delivered, "DELIVRD"),
    ] {
        assert_eq!(
            s.apply_receipt(&r).await.unwrap(),
            ReceiptOutcome::Unknown,
            "{r:?}"
        );
    }
    assert_eq!(
        s.delivery(&id).await.unwrap().unwrap().state,
        DeliveryState::Queued
    );
    assert!(
        s.delivery(&verifyd::delivery::new_id())
            .await
            .unwrap()
            .is_none()
    );
    // Recording the same (provider, message id) twice keeps the first record.
    let dup = new_delivery(s, session.id, "cn", "BIZ-1").await;
    assert!(s.delivery(&dup).await.unwrap().is_none());
    assert!(s.delivery(&id).await.unwrap().is_some());
}

async fn concurrent_final_receipts_settle_on_one_state(h: Harness) {
    let s = &h.store;
    let (_, session) = new_session(s, Expiry::Default).await;
    let id = new_delivery(s, session.id, "cn", "RACE").await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = s.clone();
        let state = if i % 2 == 0 {
            DeliveryState::Delivered
        } else {
            DeliveryState::Failed
        };
        tasks.push(tokio::spawn(async move {
            s.apply_receipt(&receipt("cn", "RACE", state, &format!("C{i}")))
                .await
                .unwrap()
        }));
    }
    let mut applied = Vec::new();
    for t in tasks {
        if let ReceiptOutcome::Applied { delivery } = t.await.unwrap() {
            applied.push(delivery);
        }
    }
    assert_eq!(
        applied.len(),
        1,
        "exactly one final receipt wins: {applied:?}"
    );
    let d = s.delivery(&id).await.unwrap().unwrap();
    assert_eq!(d.state, applied[0].state);
    assert_eq!(d.error_code, applied[0].error_code);
}

async fn deliveries_go_with_their_session(h: Harness) {
    let s = &h.store;
    let (key, session) = new_session(s, Expiry::Default).await;
    let id = new_delivery(s, session.id, "cn", "GONE").await;
    assert!(s.flush(&key).await.unwrap());
    assert!(s.delivery(&id).await.unwrap().is_none());
    let r = receipt("cn", "GONE", DeliveryState::Delivered, "DELIVRD");
    assert_eq!(s.apply_receipt(&r).await.unwrap(), ReceiptOutcome::Unknown);
}

// ---------------------------------------------------------------------------------------------
// Challenges, soft quotas, per-network lock-outs and sessions born with a send.

/// Session rows in the store, counted directly.
async fn session_rows(h: &Harness) -> i64 {
    const SQL: &str = "SELECT count(*) FROM sessions";
    match h.place.sql().await {
        Sql::Sqlite(c) => c.query_row(SQL, [], |r| r.get(0)).unwrap(),
        Sql::Postgres(c) => c.query_one(SQL, &[]).await.unwrap().get(0),
    }
}

fn challenge(passed: bool) -> verifyd::quota::ChallengeRule {
    verifyd::quota::ChallengeRule {
        passed,
        ..Default::default()
    }
}

fn is_challenge(o: &StartOutcome) -> bool {
    matches!(
        o,
        StartOutcome::Refused {
            by: Refusal::Challenge,
            ..
        }
    )
}

async fn challenges_are_decided_in_the_send(h: Harness) {
    // `always`: nothing goes out without a solved challenge, and asking costs no quota.
    let mut guard = SendGuard {
        quotas: vec![q(Scope::Global, "*", 100)],
        challenge: verifyd::quota::ChallengeRule {
            always: true,
            ..Default::default()
        },
        ..Default::default()
    };
    for _ in 0..3 {
        assert!(is_challenge(&guarded_send(&h, &phone(), &guard).await));
    }
    guard.challenge.passed = true;
    assert_eq!(guarded_send(&h, &phone(), &guard).await, issued(0, false));
    // `when_suspicious`: an address at three quarters of its limit (3 of 4) must solve one; a
    // global budget past half (6 of 10) too; below, nothing is asked.
    let suspicious = |passed| SendGuard {
        quotas: vec![q(Scope::IpSends, "192.0.2.1", 4)],
        challenge: verifyd::quota::ChallengeRule {
            passed,
            when_suspicious: true,
            ..Default::default()
        },
        ..Default::default()
    };
    for _ in 0..3 {
        assert_eq!(
            guarded_send(&h, &phone(), &suspicious(false)).await,
            issued(0, false)
        );
    }
    assert!(is_challenge(
        &guarded_send(&h, &phone(), &suspicious(false)).await
    ));
    assert_eq!(
        guarded_send(&h, &phone(), &suspicious(true)).await,
        issued(0, false)
    );
    // Full: a solved challenge does not pass a hard quota.
    assert!(matches!(
        guarded_send(&h, &phone(), &suspicious(true)).await,
        StartOutcome::Refused {
            by: Refusal::Quota(Scope::IpSends),
            ..
        }
    ));
    let budget = |passed| SendGuard {
        quotas: vec![q(Scope::Global, "budget", 10)],
        challenge: verifyd::quota::ChallengeRule {
            passed,
            when_suspicious: true,
            ..Default::default()
        },
        ..Default::default()
    };
    for _ in 0..5 {
        assert_eq!(
            guarded_send(&h, &phone(), &budget(false)).await,
            issued(0, false)
        );
    }
    assert_eq!(
        guarded_send(&h, &phone(), &budget(false)).await,
        issued(0, false)
    );
    assert!(is_challenge(
        &guarded_send(&h, &phone(), &budget(false)).await
    ));
}

async fn soft_quotas_ask_for_a_challenge_up_to_the_hard_cap(h: Harness) {
    let guard = |passed| SendGuard {
        quotas: vec![q(Scope::PhoneHardSends, "n", 4)],
        soft: vec![q(Scope::PhoneSends, "n", 2)],
        challenge: challenge(passed),
        ..Default::default()
    };
    assert_eq!(
        guarded_send(&h, &phone(), &guard(false)).await,
        issued(0, false)
    );
    assert_eq!(
        guarded_send(&h, &phone(), &guard(false)).await,
        issued(0, false)
    );
    // Spent by whoever: a person who solved a challenge still gets codes, others are asked.
    assert!(is_challenge(
        &guarded_send(&h, &phone(), &guard(false)).await
    ));
    assert_eq!(
        guarded_send(&h, &phone(), &guard(true)).await,
        issued(0, false)
    );
    assert!(is_challenge(
        &guarded_send(&h, &phone(), &guard(false)).await
    ));
    assert_eq!(
        guarded_send(&h, &phone(), &guard(true)).await,
        issued(0, false)
    );
    // The hard cap holds for everyone.
    for passed in [true, false] {
        assert!(matches!(
            guarded_send(&h, &phone(), &guard(passed)).await,
            StartOutcome::Refused {
                by: Refusal::Quota(Scope::PhoneHardSends),
                ..
            }
        ));
    }
    // A failed delivery gives the soft quota back too: with nothing sent, nothing is asked.
    let other = |passed| SendGuard {
        quotas: vec![],
        soft: vec![q(Scope::PhoneSends, "m", 1)],
        challenge: challenge(passed),
        ..Default::default()
    };
    let (sess_key, sess) = new_session(&h.store, Expiry::Default).await;
    let req = StartVerification {
        key: sess_key,
        phone: &phone(),
        code_mac: mac(&phone(), "123456"),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl: secs(60),
        resend_interval: secs(60),
        max_attempts: 3,
        new_session: None,
    };
    assert_eq!(
        h.store
            .start_send(&req, &other(false))
            .await
            .unwrap()
            .outcome,
        issued(0, false)
    );
    h.store
        .abandon_send(sess.id, &phone(), &req.code_mac, &other(false))
        .await
        .unwrap();
    assert_eq!(
        guarded_send(&h, &phone(), &other(false)).await,
        issued(0, false)
    );
    assert!(is_challenge(
        &guarded_send(&h, &phone(), &other(false)).await
    ));
}

async fn tripped_breaker_asks_for_a_challenge_or_refuses(h: Harness) {
    let rule = PumpingRule {
        country: "+86".into(),
        window: secs(600),
        min_sample: 2,
        min_conversion: 0.5,
    };
    let guard = |passed, on_trip| SendGuard {
        pumping: Some(rule.clone()),
        challenge: verifyd::quota::ChallengeRule {
            passed,
            on_trip,
            ..Default::default()
        },
        ..Default::default()
    };
    for _ in 0..2 {
        assert_eq!(
            guarded_send(&h, &phone(), &guard(false, true)).await,
            issued(0, false)
        );
    }
    assert!(h.store.pumping_states().await.unwrap()[0].tripped);
    // `on_trip = "challenge"`: the country is not shut; a solved challenge gets through.
    assert!(is_challenge(
        &guarded_send(&h, &phone(), &guard(false, true)).await
    ));
    assert_eq!(
        guarded_send(&h, &phone(), &guard(true, true)).await,
        issued(0, false)
    );
    // `on_trip = "block"`: refused, challenge or not.
    for passed in [false, true] {
        assert!(matches!(
            guarded_send(&h, &phone(), &guard(passed, false)).await,
            StartOutcome::Refused {
                by: Refusal::Breaker,
                ..
            }
        ));
    }
    let s = &h.store.pumping_states().await.unwrap()[0];
    assert_eq!(
        (s.sends, s.tripped),
        (3, true),
        "refusals are not counted as sends"
    );
}

async fn sessions_are_born_only_with_an_issued_code(h: Harness) {
    let full = SendGuard {
        quotas: vec![q(Scope::IpSends, "198.51.100.7", 1)],
        ..Default::default()
    };
    let p = phone();
    // A browser presents `presented` (no cookie: a key nobody has; or a stale cookie), and a
    // session under `new` is to be born with the code.
    let first = |presented: KeyHash, new: KeyHash| StartVerification {
        key: presented,
        phone: &p,
        code_mac: mac(&p, "123456"),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl: secs(60),
        resend_interval: secs(60),
        max_attempts: 3,
        new_session: Some(verifyd::store::NewSession {
            key: new,
            expiry: Expiry::Default,
        }),
    };
    let before = session_rows(&h).await;
    let (stale, k) = (key(), key());
    let started = h.store.start_send(&first(stale, k), &full).await.unwrap();
    assert_eq!(started.outcome, issued(0, false));
    assert!(started.created);
    let made = started.session.expect("the session born with the code");
    assert!(made.refreshed, "its cookie is to be set");
    let born = h
        .store
        .touch_session(&k)
        .await
        .unwrap()
        .expect("the new session");
    assert_eq!((born.id, born.data.len()), (made.id, 0));
    assert_eq!(born.expires_at, made.expires_at);
    assert_eq!(
        h.store.touch_session(&stale).await.unwrap(),
        None,
        "never the presented key"
    );
    assert_eq!(session_rows(&h).await, before + 1);
    assert!(matches!(
        check(&h.store, k, "123456").await,
        CheckOutcome::Approved { .. }
    ));
    // Refused sends (a full quota, a challenge) leave no session behind, however many.
    install_write_audit(&h).await;
    let asking = SendGuard {
        challenge: verifyd::quota::ChallengeRule {
            always: true,
            ..Default::default()
        },
        ..Default::default()
    };
    for n in 0..20 {
        let k = key();
        let guard = if n % 2 == 0 { &full } else { &asking };
        let r = h.store.start_send(&first(key(), k), guard).await.unwrap();
        assert!(matches!(r.outcome, StartOutcome::Refused { .. }), "{r:?}");
        assert_eq!((r.session, r.created), (None, false));
        assert_eq!(h.store.touch_session(&k).await.unwrap(), None);
    }
    // Without a session to create, an unknown key is answered as such, writing nothing.
    let mut alone = first(key(), key());
    alone.new_session = None;
    let r = h
        .store
        .start_send(&alone, &SendGuard::default())
        .await
        .unwrap();
    assert_eq!(
        (r.outcome, r.session, r.created),
        (StartOutcome::NoSession, None, false)
    );
    assert_eq!(session_rows(&h).await, before + 1);
    let writes = per_table(&take_writes(&h).await);
    assert_eq!(writes.get("sessions"), None, "{writes:?}");
    assert_eq!(writes.get("verifications"), None, "{writes:?}");
    // A live session's key is resolved: no second session, whatever `new_session` says.
    let (live_key, live) = new_session(&h.store, Expiry::Default).await;
    let r = h
        .store
        .start_send(&first(live_key, key()), &SendGuard::default())
        .await
        .unwrap();
    assert_eq!(r.outcome, issued(0, false));
    assert!(!r.created);
    assert_eq!(r.session.map(|s| s.id), Some(live.id));
    // Ids the store gives are distinct.
    let (_, other) = new_session(&h.store, Expiry::Default).await;
    assert!(other.id != made.id && other.id != live.id);
}

async fn network_failures_lock_out_that_network_only(h: Harness) {
    let limit = |max| FailureLimit {
        max,
        window: secs(600),
        lockout: secs(3600),
    };
    let from = |net: &str| CheckGuard {
        failures: Some(limit(5)),
        network_failures: Some((net.to_owned(), limit(2))),
        ..Default::default()
    };
    let data = approval_data();
    let checking = |sid: KeyHash, code: &'static str, guard: CheckGuard| {
        let (store, data) = (h.store.clone(), data.clone());
        async move {
            let p = phone();
            let req = CheckVerification {
                key: sid,
                phone: &p,
                code_mac: mac(&p, code),
                max_attempts: 3,
                on_approve: Approval {
                    new_key: key(),
                    data: &data,
                },
            };
            store.check_guarded(&req, &guard).await.unwrap().outcome
        }
    };
    let session_with_code = || async {
        let (sess_key, _) = new_session(&h.store, Expiry::Default).await;
        assert_eq!(
            send_default(&h.store, sess_key, "111111").await,
            issued(0, false)
        );
        sess_key
    };
    let locked = |o: &CheckOutcome| {
        matches!(
            o,
            CheckOutcome::Refused {
                by: Refusal::Locked,
                ..
            }
        )
    };
    // The attacker's network uses up its own wrong-code budget and is locked out…
    let attacker = session_with_code().await;
    assert_eq!(
        checking(attacker, "222222", from("203.0.113.0/24")).await,
        CheckOutcome::Wrong { attempts_left: 2 }
    );
    assert_eq!(
        checking(attacker, "333333", from("203.0.113.0/24")).await,
        CheckOutcome::Wrong { attempts_left: 1 }
    );
    let again = session_with_code().await;
    assert!(locked(
        &checking(again, "111111", from("203.0.113.0/24")).await
    ));
    // …while the owner, on another network, still checks their code.
    let owner = session_with_code().await;
    assert!(matches!(
        checking(owner, "111111", from("2001:db8:1::/48")).await,
        CheckOutcome::Approved { .. }
    ));
    // Across many networks the number's own cap still bounds the guesses: 5 in all.
    let mut judged = 2;
    for n in 0..6 {
        let net = format!("198.51.{n}.0/24");
        let s = session_with_code().await;
        for guess in ["444444", "555555"] {
            match checking(s, guess, from(&net)).await {
                CheckOutcome::Wrong { .. } => judged += 1,
                o if locked(&o) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(judged, 5);
    let late = session_with_code().await;
    assert!(locked(
        &checking(late, "111111", from("192.0.2.0/24")).await
    ));
}

// ---------------------------------------------------------------------------------------------
// Spent challenges.

async fn challenges_are_spent_once_until_swept(h: Harness) {
    let s = &h.store;
    let now = SystemTime::now();
    let (live, dead) = ([7u8; 32], [8u8; 32]);
    assert!(s.spend_challenge(&live, now + secs(60)).await.unwrap());
    assert!(
        !s.spend_challenge(&live, now + secs(60)).await.unwrap(),
        "second use"
    );
    assert!(s.spend_challenge(&dead, now - secs(1)).await.unwrap());
    // Racing spends of one fresh challenge: exactly one wins.
    let fresh = [9u8; 32];
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.spend_challenge(&fresh, now + secs(60)).await.unwrap() })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    // The sweeper forgets only the record whose challenge has expired anyway.
    let report = s.sweep(100, KEEP_DEAD).await.unwrap();
    assert_eq!(report.limits, 1, "{report:?}");
    assert!(!s.spend_challenge(&live, now + secs(60)).await.unwrap());
    assert!(
        s.spend_challenge(&dead, now - secs(1)).await.unwrap(),
        "its record was swept"
    );
}

// ---------------------------------------------------------------------------------------------
// The twins agree (issue 11 item 5): rules where the PL/pgSQL functions and the Rust of the
// embedded store once differed.

/// One integer from the raw tables (`pg` on PostgreSQL, `sqlite` on SQLite), for rules that no
/// trait method shows.
async fn raw_int(h: &Harness, pg: &str, sqlite: &str) -> i64 {
    match &h.place {
        Place::Sqlite(dir) => {
            let path = dir.path().join("data").join("verifyd.db");
            let c = rusqlite::Connection::open(path).expect("open the SQLite file");
            c.query_row(sqlite, [], |r| r.get(0)).expect(sqlite)
        }
        Place::Postgres(db) => {
            let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            c.query_one(pg, &[]).await.expect(pg).get(0)
        }
    }
}

async fn a_lowered_max_attempts_exhausts_sends_and_checks_alike(h: Harness) {
    let s = &h.store;
    let (sess_key, _) = new_session(s, Expiry::Default).await;
    let p = phone();
    assert_eq!(
        send(s, sess_key, &p, "111111", secs(60), secs(0), 5).await,
        issued(0, false)
    );
    for left in [4, 3] {
        assert_eq!(
            check_with(s, sess_key, &p, "999999", 5, key()).await,
            CheckOutcome::Wrong {
                attempts_left: left
            }
        );
    }
    // The operator lowers `max_attempts` to 2: the two wrong tries used it up.
    assert!(matches!(
        send(s, sess_key, &p, "222222", secs(60), secs(0), 2).await,
        StartOutcome::Exhausted { .. }
    ));
    assert_eq!(
        check_with(s, sess_key, &p, "111111", 2, key()).await,
        CheckOutcome::Exhausted,
        "even the right code"
    );
    // Raised again, the verification goes on where it was.
    assert!(matches!(
        check_with(s, sess_key, &p, "111111", 5, key()).await,
        CheckOutcome::Approved { .. }
    ));
}

async fn abandon_send_leaves_a_finished_code_alone(h: Harness) {
    let s = &h.store;
    let (sess_key, sess) = new_session(s, Expiry::Default).await;
    assert_eq!(send_default(s, sess_key, "111111").await, issued(0, false));
    for _ in 0..3 {
        check(s, sess_key, "999999").await;
    }
    // A delivery failure reported after the code was exhausted changes nothing.
    s.abandon_send(
        sess.id,
        &phone(),
        &mac(&phone(), "111111"),
        &SendGuard::default(),
    )
    .await
    .unwrap();
    let epoch_sends = raw_int(
        &h,
        "SELECT count(*) FROM verifications WHERE sent_at = 'epoch'",
        "SELECT count(*) FROM verifications WHERE sent_at = 0",
    )
    .await;
    assert_eq!(epoch_sends, 0, "the exhausted code's send time stays");
    assert!(matches!(
        send_default(s, sess_key, "222222").await,
        StartOutcome::Exhausted { .. }
    ));
}

async fn a_dead_sessions_code_is_out_of_reach_right_or_wrong(h: Harness) {
    let s = &h.store;
    // The first number parsed in a process loads the phone metadata, about a second in a debug
    // build: done before the session's one idle second starts, not between it and the send.
    phone();
    let (sess_key, _) = new_session(s, Expiry::Idle(1)).await;
    assert_eq!(send_default(s, sess_key, "111111").await, issued(0, false));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The expired session's key names nothing any more, whatever the code.
    assert_eq!(check(s, sess_key, "999999").await, CheckOutcome::NoSession);
    assert_eq!(check(s, sess_key, "111111").await, CheckOutcome::NoSession);
    let attempts = raw_int(
        &h,
        "SELECT attempts::bigint FROM verifications",
        "SELECT attempts FROM verifications",
    )
    .await;
    assert_eq!(
        attempts, 0,
        "no attempt was counted against the dead session's code"
    );
}

async fn the_secret_has_one_name_in_both_stores(h: Harness) {
    let secret = h.store.server_secret().await.unwrap();
    assert_eq!(h.reopen().await.server_secret().await.unwrap(), secret);
    let named = raw_int(
        &h,
        "SELECT count(*) FROM verifyd_meta WHERE name = 'code_mac_key'",
        "SELECT count(*) FROM verifyd_meta WHERE name = 'code_mac_key'",
    )
    .await;
    assert_eq!(named, 1);
}

/// A send whose session was flushed between the caller's lookup and the send (a racing
/// `flush`) finds its key naming nothing on both stores, and records nothing.
async fn a_send_for_a_flushed_session_finds_it_gone(h: Harness) {
    let s = &h.store;
    let (k, _) = new_session(s, Expiry::Default).await;
    assert!(s.flush(&k).await.unwrap());
    let p = phone();
    let req = StartVerification {
        key: k,
        phone: &p,
        code_mac: mac(&p, "111111"),
        code_nonce: None,
        keep_margin: None,
        code_cap: Duration::from_secs(86_400),
        ttl: secs(60),
        resend_interval: secs(60),
        max_attempts: 3,
        new_session: None,
    };
    let r = s.start_send(&req, &SendGuard::default()).await.unwrap();
    assert_eq!(r.outcome, StartOutcome::NoSession);
    assert_eq!(verification_rows(&h).await, 0, "nothing was recorded");
}

async fn verification_rows(h: &Harness) -> i64 {
    const SQL: &str = "SELECT count(*) FROM verifications";
    match h.place.sql().await {
        Sql::Sqlite(c) => c.query_row(SQL, [], |r| r.get(0)).unwrap(),
        Sql::Postgres(c) => c.query_one(SQL, &[]).await.unwrap().get(0),
    }
}
