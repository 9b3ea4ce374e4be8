//! [`VerificationStore`] on SQLite: the same rules as the PostgreSQL functions, written out in
//! Rust inside one IMMEDIATE transaction per send or check.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};
use std::time::Duration;
use subtle::ConstantTimeEq;

use super::{Row, SqliteStore, deliveries, duration_ms, expires_at, limits, save, sessions};
use crate::code::{CodeMac, CodeNonce, MAC_SCHEME};
use crate::delivery::{Delivery, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::phone::PhoneNumber;
use crate::quota::{CheckGuard, PumpingState, Refusal, SendGuard};
use crate::session::{KeyHash, Session, SessionPolicy};
use crate::store::{
    CheckOutcome, CheckVerification, Checked, KeptCode, NewSession, StartOutcome,
    StartVerification, Started, StoreError, StoreResult, VerificationStore, retry_after,
};
use crate::time::from_millis;

/// `verifications.state` values.
const PENDING: i64 = 0;
const APPROVED: i64 = 1;
const EXHAUSTED: i64 = 2;

/// The live session with this id.
fn load_by_id(tx: &Transaction<'_>, id: i64, now: i64) -> StoreResult<Option<Row>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, data, expiry_kind, idle_secs, created_at, touched_at, expires_at, version
         FROM sessions WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
    )?;
    Ok(stmt.query_row(params![id, now], Row::read).optional()?)
}

/// `Retry-After` for an instant in milliseconds.
fn retry_after_ms(t: i64, now: i64) -> Duration {
    retry_after(from_millis(t), from_millis(now))
}

/// What the abuse limits say about a send the verification's rules allow, in the order of
/// [`VerificationStore::start_send`]: `None` when it may go out. Reads only; the caller takes
/// the quotas.
fn limits_refuse(
    tx: &Transaction<'_>,
    guard: &SendGuard,
    now: i64,
) -> StoreResult<Option<StartOutcome>> {
    let refused = |by, end| StartOutcome::Refused {
        by,
        retry_after: retry_after_ms(end, now),
    };
    let breaker = match &guard.pumping {
        Some(rule) => limits::breaker_open(tx, rule, now)?,
        None => None,
    };
    let challenge = guard.challenge;
    if let Some(end) = breaker.filter(|_| !challenge.on_trip) {
        return Ok(Some(refused(Refusal::Breaker, end)));
    }
    let hard = limits::live_counts(tx, &guard.quotas, now)?;
    if let Some((scope, end)) = limits::fullest(&guard.quotas, &hard) {
        return Ok(Some(refused(Refusal::Quota(scope), end)));
    }
    if challenge.passed {
        return Ok(None);
    }
    let soft = limits::live_counts(tx, &guard.soft, now)?;
    let suspicious = || {
        guard
            .all_quotas()
            .zip(hard.iter().chain(&soft))
            .any(|(q, &(count, _))| q.scope.suspicious_at(count, q.limit))
    };
    let needed = challenge.always
        || breaker.is_some()
        || (challenge.when_suspicious && suspicious())
        || limits::fullest(&guard.soft, &soft).is_some();
    Ok(needed.then_some(StartOutcome::Refused {
        by: Refusal::Challenge,
        retry_after: Duration::ZERO,
    }))
}

/// The check's decision for the session `session_id`, in the order of
/// [`VerificationStore::check_guarded`]: quotas, the number's lock, the code.
#[allow(clippy::too_many_arguments)]
fn decide_check(
    tx: &Transaction<'_>,
    session_id: i64,
    phone: &str,
    mac: &CodeMac,
    max_attempts: u32,
    new_key: &KeyHash,
    approval: serde_json::Map<String, serde_json::Value>,
    guard: &CheckGuard,
    now: i64,
    policy: &SessionPolicy,
) -> StoreResult<CheckOutcome> {
    if let Some((scope, end)) = limits::take_quotas(tx, &guard.quotas, now)? {
        return Ok(CheckOutcome::Refused {
            by: Refusal::Quota(scope),
            retry_after: retry_after_ms(end, now),
        });
    }
    let counters = limits::failure_counters(phone, guard);
    let mut locked: Option<i64> = None;
    for f in &counters {
        if let Some(end) = limits::locked_until(tx, f, now)? {
            locked = Some(locked.map_or(end, |l| l.max(end)));
        }
    }
    let current: Option<(Vec<u8>, i64, u32, i64, i64)> = tx
        .prepare_cached(
            "SELECT code_mac, state, attempts, expires_at, mac_scheme FROM verifications
                 WHERE session_id = ?1 AND phone = ?2",
        )?
        .query_row(params![session_id, phone], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    // A session that died after its code was sent has no code to check (right or wrong).
    let session = load_by_id(tx, session_id, now)?;
    // Every answer that is not about a live code the session holds: the lock on the
    // number is not revealed, and the counter write a wrong code makes is made anyway.
    let settled = match &current {
        _ if session.is_none() => Some(CheckOutcome::NotFound),
        None => Some(CheckOutcome::NotFound),
        Some((_, state, _, _, _)) if *state == APPROVED => Some(CheckOutcome::NotFound),
        Some((_, _, _, expires, _)) if *expires <= now => Some(CheckOutcome::Expired),
        Some((_, state, attempts, _, _)) if *state == EXHAUSTED || *attempts >= max_attempts => {
            Some(CheckOutcome::Exhausted)
        }
        // A code of the first MAC scheme cannot be compared: neither approved nor charged.
        Some((_, _, _, _, scheme)) if *scheme != i64::from(MAC_SCHEME) => {
            Some(CheckOutcome::Expired)
        }
        Some(_) => locked.map(|end| CheckOutcome::Refused {
            by: Refusal::Locked,
            retry_after: retry_after_ms(end, now),
        }),
    };
    // The comparison runs on every path (against nothing when there is no live code), so
    // the time it takes does not tell the paths apart either.
    let stored = current.as_ref().map_or(&[0u8; 32][..], |c| c.0.as_slice());
    let matches = bool::from(stored.ct_eq(&mac.0[..]));
    let Some((_, _, attempts, _, _)) = current.filter(|_| settled.is_none()) else {
        for f in &counters {
            limits::touch_failures(tx, f, now)?;
        }
        return Ok(settled.unwrap_or(CheckOutcome::NotFound));
    };
    if matches {
        let Some(mut row) = session else {
            return Ok(CheckOutcome::NotFound);
        };
        row.data.extend(approval);
        let session = save(tx, new_key, row, now, policy)?;
        tx.prepare_cached(
            "UPDATE verifications SET state = ?3 WHERE session_id = ?1 AND phone = ?2",
        )?
        .execute(params![session_id, phone, APPROVED])?;
        if let Some(rule) = &guard.pumping {
            limits::record_approval(tx, rule, now)?;
        }
        return Ok(CheckOutcome::Approved { session });
    }
    let attempts = attempts + 1;
    let state = if attempts >= max_attempts {
        EXHAUSTED
    } else {
        PENDING
    };
    tx.prepare_cached(
        "UPDATE verifications SET attempts = ?3, state = ?4
             WHERE session_id = ?1 AND phone = ?2",
    )?
    .execute(params![session_id, phone, attempts, state])?;
    for f in &counters {
        limits::record_failure(tx, f, now)?;
    }
    Ok(if state == EXHAUSTED {
        CheckOutcome::Exhausted
    } else {
        CheckOutcome::Wrong {
            attempts_left: max_attempts - attempts,
        }
    })
}

/// The stored code of (session, phone), as a send needs it.
struct StoredCode {
    state: i64,
    attempts: u32,
    sent_at: i64,
    expires_at: i64,
    mac: Vec<u8>,
    nonce: Option<Vec<u8>>,
    nonce_mac: Option<Vec<u8>>,
    keep_until: Option<i64>,
    mac_scheme: i64,
}

fn stored_code(
    tx: &Transaction<'_>,
    session_id: i64,
    phone: &str,
) -> StoreResult<Option<StoredCode>> {
    Ok(tx
        .prepare_cached(
            "SELECT state, attempts, sent_at, expires_at, code_mac, code_nonce, nonce_mac,
                    keep_until, mac_scheme
             FROM verifications WHERE session_id = ?1 AND phone = ?2",
        )?
        .query_row(params![session_id, phone], |r| {
            Ok(StoredCode {
                state: r.get(0)?,
                attempts: r.get(1)?,
                sent_at: r.get(2)?,
                expires_at: r.get(3)?,
                mac: r.get(4)?,
                nonce: r.get(5)?,
                nonce_mac: r.get(6)?,
                keep_until: r.get(7)?,
                mac_scheme: r.get(8)?,
            })
        })
        .optional()?)
}

/// A browser's first session, born with its first issued code: empty data, a fresh id.
fn create_empty(
    tx: &Transaction<'_>,
    new: &NewSession,
    now: i64,
    policy: &SessionPolicy,
) -> StoreResult<Session> {
    let (kind, idle) = new.expiry.to_parts();
    let expires = expires_at(policy, new.expiry, now, now);
    let id = sessions::random_session_id()?;
    tx.prepare_cached(
        "INSERT INTO sessions (id, key_hash, data, expiry_kind, idle_secs, created_at,
                               touched_at, expires_at)
         VALUES (?1, ?2, '{}', ?3, ?4, ?5, ?5, ?6)",
    )?
    .execute(params![id, &new.key.0[..], kind, idle, now, expires])?;
    Ok(Session {
        id,
        data: Default::default(),
        expiry: new.expiry,
        created_at: from_millis(now),
        expires_at: expires.map(from_millis),
        refreshed: true,
        version: 1,
    })
}

#[async_trait]
impl VerificationStore for SqliteStore {
    async fn start_send(
        &self,
        req: &StartVerification<'_>,
        guard: &SendGuard,
    ) -> StoreResult<Started> {
        let (key, phone) = (req.key, req.phone.as_str().to_owned());
        let (fresh_mac, fresh_nonce) = (req.code_mac, req.code_nonce);
        let (ttl, resend) = (duration_ms(req.ttl), duration_ms(req.resend_interval));
        let (margin, code_cap) = (req.keep_margin.map(duration_ms), duration_ms(req.code_cap));
        let (max_attempts, new_session) = (req.max_attempts, req.new_session);
        let guard = guard.clone();
        self.transaction(move |tx, now, policy| {
            let mut session = sessions::touch(tx, &key, now, policy)?;
            let known_id = session.as_ref().map(|s| s.id);
            let answer = |outcome, session| Started {
                outcome,
                kept: None,
                session,
                created: false,
            };
            if known_id.is_none() && new_session.is_none() {
                return Ok(answer(StartOutcome::NoSession, None));
            }
            let current = match known_id {
                Some(id) => stored_code(tx, id, &phone)?,
                None => None,
            };
            let live = current.filter(|c| c.expires_at > now && c.state != APPROVED);
            if let Some(c) = &live {
                if c.state == EXHAUSTED || c.attempts >= max_attempts {
                    return Ok(answer(
                        StartOutcome::Exhausted {
                            retry_after: retry_after_ms(c.expires_at, now),
                        },
                        session,
                    ));
                }
                let ready = c.sent_at.saturating_add(resend);
                if now < ready {
                    return Ok(answer(
                        StartOutcome::TooSoon {
                            retry_after: retry_after_ms(ready, now),
                        },
                        session,
                    ));
                }
            }
            // The verification's own rules allow a send: now the limits decide.
            if let Some(refused) = limits_refuse(tx, &guard, now)? {
                return Ok(answer(refused, session));
            }
            limits::bump_all(tx, guard.all_quotas(), now)?;
            if let Some(rule) = &guard.pumping {
                if limits::record_send(tx, rule, now)? {
                    tracing::warn!(country = %rule.country, "SMS pumping breaker tripped");
                }
            }
            let mut created = false;
            let session_id = match (known_id, new_session) {
                (Some(id), _) => id,
                (None, Some(new)) => {
                    let s = create_empty(tx, &new, now, policy)?;
                    let id = s.id;
                    session = Some(s);
                    created = true;
                    id
                }
                (None, None) => unreachable!("answered NoSession above"),
            };
            // Same-code resends keep the live code while it may be sent again (one transaction:
            // it is the live code of this very verification).
            let kept = live
                .as_ref()
                .zip(margin)
                .filter(|(c, margin)| {
                    c.mac_scheme == i64::from(MAC_SCHEME)
                        && c.nonce.is_some()
                        && c.nonce_mac.as_deref() == Some(&c.mac[..])
                        && c.expires_at >= now.saturating_add(*margin)
                        && c.keep_until
                            .is_some_and(|k| k >= now.saturating_add(ttl / 2))
                })
                .map(|(c, _)| c);
            let (mac, nonce, keep_until, life) = match kept {
                Some(c) => {
                    let keep_until = c.keep_until.unwrap_or(now);
                    (
                        c.mac.clone(),
                        c.nonce.clone(),
                        keep_until,
                        ttl.min(keep_until.saturating_sub(now)),
                    )
                }
                None => (
                    fresh_mac.0.to_vec(),
                    fresh_nonce.map(|n| n.0.to_vec()),
                    now.saturating_add(code_cap),
                    ttl,
                ),
            };
            let kept = match (kept, &nonce) {
                (Some(_), Some(n)) => Some(KeptCode {
                    nonce: CodeNonce(n.as_slice().try_into().map_err(|_| {
                        StoreError::Internal("a stored code nonce is not 16 bytes".into())
                    })?),
                    ttl: Duration::from_millis(u64::try_from(life).unwrap_or(0)),
                }),
                _ => None,
            };
            let nonce_mac = nonce.as_ref().map(|_| mac.clone());
            let expires = now.saturating_add(life);
            let outcome = match &live {
                Some(c) => {
                    tx.prepare_cached(
                        "UPDATE verifications
                         SET code_mac = ?3, sent_at = ?4, expires_at = ?5, code_nonce = ?6,
                             nonce_mac = ?7, keep_until = ?8, mac_scheme = ?9
                         WHERE session_id = ?1 AND phone = ?2",
                    )?
                    .execute(params![
                        session_id, phone, mac, now, expires, nonce, nonce_mac, keep_until,
                        MAC_SCHEME
                    ])?;
                    StartOutcome::Issued {
                        resend: true,
                        attempts: c.attempts,
                    }
                }
                // Never sent, or the previous verification is over: start afresh.
                None => {
                    tx.prepare_cached(
                        "INSERT INTO verifications
                             (session_id, phone, code_mac, state, attempts, created_at, sent_at,
                              expires_at, code_nonce, nonce_mac, keep_until, mac_scheme)
                         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?6, ?7, ?8, ?9, ?10)
                         ON CONFLICT (session_id, phone) DO UPDATE SET
                             code_mac = excluded.code_mac, state = excluded.state, attempts = 0,
                             created_at = excluded.created_at, sent_at = excluded.sent_at,
                             expires_at = excluded.expires_at, code_nonce = excluded.code_nonce,
                             nonce_mac = excluded.nonce_mac, keep_until = excluded.keep_until,
                             mac_scheme = excluded.mac_scheme",
                    )?
                    .execute(params![
                        session_id, phone, mac, PENDING, now, expires, nonce, nonce_mac,
                        keep_until, MAC_SCHEME
                    ])?;
                    StartOutcome::Issued {
                        resend: false,
                        attempts: 0,
                    }
                }
            };
            Ok(Started {
                outcome,
                kept,
                session,
                created,
            })
        })
        .await
    }

    async fn abandon_send(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        code_mac: &CodeMac,
        guard: &SendGuard,
    ) -> StoreResult<()> {
        let (phone, mac, guard) = (phone.as_str().to_owned(), *code_mac, guard.clone());
        self.transaction(move |tx, now, _| {
            // A send at the epoch is as good as no send: the cooldown is over at once.
            tx.prepare_cached(
                "UPDATE verifications SET sent_at = 0
                 WHERE session_id = ?1 AND phone = ?2 AND code_mac = ?3 AND state = ?4",
            )?
            .execute(params![session_id, phone, &mac.0[..], PENDING])?;
            if let Some(rule) = &guard.pumping {
                limits::unrecord_send(tx, rule, now)?;
            }
            limits::give_back(tx, guard.all_quotas(), now)
        })
        .await
    }

    async fn check_guarded(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
    ) -> StoreResult<Checked> {
        let (key, phone, mac) = (req.key, req.phone.as_str().to_owned(), req.code_mac);
        let max_attempts = req.max_attempts;
        let (new_key, approval) = (req.on_approve.new_key, req.on_approve.data.clone());
        let guard = guard.clone();
        self.transaction(move |tx, now, policy| {
            let Some(resolved) = sessions::touch(tx, &key, now, policy)? else {
                return Ok(Checked {
                    outcome: CheckOutcome::NoSession,
                    session: None,
                });
            };
            let session_id = resolved.id;
            let outcome = decide_check(
                tx,
                session_id,
                &phone,
                &mac,
                max_attempts,
                &new_key,
                approval,
                &guard,
                now,
                policy,
            )?;
            let session = match &outcome {
                CheckOutcome::Approved { session } => Some(session.clone()),
                _ => Some(resolved),
            };
            Ok(Checked { outcome, session })
        })
        .await
    }

    async fn pumping_states(&self) -> StoreResult<Vec<PumpingState>> {
        self.transaction(|tx, now, _| {
            let mut stmt = tx.prepare_cached(
                "SELECT country, sends, approvals, tripped, expires_at FROM pumping
                 WHERE expires_at > ?1 ORDER BY country",
            )?;
            let rows = stmt.query_map([now], |r| {
                Ok(PumpingState {
                    country: r.get(0)?,
                    sends: r.get(1)?,
                    approvals: r.get(2)?,
                    tripped: r.get(3)?,
                    window_ends: from_millis(r.get(4)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn pumping_reset(&self, country: &str) -> StoreResult<bool> {
        let country = country.to_owned();
        self.transaction(move |tx, now, _| {
            // Ends the window: the next send starts a fresh one.
            let n = tx
                .prepare_cached(
                    "UPDATE pumping SET sends = 0, approvals = 0, tripped = 0, expires_at = ?2
                     WHERE country = ?1",
                )?
                .execute(params![country, now])?;
            Ok(n > 0)
        })
        .await
    }

    async fn record_delivery(&self, d: &NewDelivery<'_>) -> StoreResult<()> {
        let row = deliveries::Owned::from(d);
        self.transaction(move |tx, now, _| deliveries::record(tx, &row, now))
            .await
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> StoreResult<ReceiptOutcome> {
        let r = r.clone();
        self.transaction(move |tx, now, _| deliveries::apply(tx, &r, now))
            .await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        let id = id.to_owned();
        self.blocking(move |conn| deliveries::get(conn, &id)).await
    }
}
