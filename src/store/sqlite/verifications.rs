//! [`VerificationStore`] on SQLite: the same rules as the PostgreSQL functions, written out in
//! Rust inside one IMMEDIATE transaction per send or check.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;

use super::{Row, SqliteStore, deliveries, duration_millis, duration_ms, expires_at, limits, save};
use crate::code::{CodeMac, CodeNonce};
use crate::delivery::{Delivery, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::phone::PhoneNumber;
use crate::quota::{CheckGuard, PumpingState, Refusal, SendGuard};
use crate::store::{
    CheckOutcome, CheckVerification, LiveCode, StartOutcome, StartVerification, StoreError,
    StoreResult, VerificationStore, retry_after,
};
use crate::time::{from_millis, to_millis};

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

#[async_trait]
impl VerificationStore for SqliteStore {
    async fn start_send(
        &self,
        req: &StartVerification<'_>,
        guard: &SendGuard,
    ) -> StoreResult<StartOutcome> {
        let (session_id, phone, mac) =
            (req.session_id, req.phone.as_str().to_owned(), req.code_mac);
        let (ttl, resend) = (duration_ms(req.ttl), duration_ms(req.resend_interval));
        let (max_attempts, new_session) = (req.max_attempts, req.new_session);
        let guard = guard.clone();
        self.transaction(move |tx, now, policy| {
            let current: Option<(i64, u32, i64, i64)> = tx
                .prepare_cached(
                    "SELECT state, attempts, sent_at, expires_at FROM verifications
                     WHERE session_id = ?1 AND phone = ?2",
                )?
                .query_row(params![session_id, phone], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let expires = now.saturating_add(ttl);
            let live = current.filter(|&(state, _, _, exp)| exp > now && state != APPROVED);
            match live {
                Some((state, attempts, _, _)) if state == EXHAUSTED || attempts >= max_attempts => {
                }
                Some((_, _, sent_at, _)) if now < sent_at.saturating_add(resend) => {}
                // The verification's own rules allow a send: now the limits decide.
                _ => {
                    if let Some(refused) = limits_refuse(tx, &guard, now)? {
                        return Ok(refused);
                    }
                    limits::bump_all(tx, guard.all_quotas(), now)?;
                    if let Some(rule) = &guard.pumping {
                        if limits::record_send(tx, rule, now)? {
                            tracing::warn!(country = %rule.country, "SMS pumping breaker tripped");
                        }
                    }
                    if let Some(new) = new_session {
                        let (kind, idle) = new.expiry.to_parts();
                        let expires = expires_at(policy, new.expiry, now, now);
                        tx.prepare_cached(
                            "INSERT INTO sessions (id, key_hash, data, expiry_kind, idle_secs,
                                                   created_at, touched_at, expires_at)
                             VALUES (?1, ?2, '{}', ?3, ?4, ?5, ?5, ?6)",
                        )?
                        .execute(params![
                            session_id,
                            &new.key.0[..],
                            kind,
                            idle,
                            now,
                            expires
                        ])?;
                    }
                }
            }
            match live {
                Some((state, attempts, _, exp))
                    if state == EXHAUSTED || attempts >= max_attempts =>
                {
                    Ok(StartOutcome::Exhausted {
                        retry_after: retry_after_ms(exp, now),
                    })
                }
                Some((_, _, sent_at, _)) if now < sent_at.saturating_add(resend) => {
                    let ready = sent_at.saturating_add(resend);
                    Ok(StartOutcome::TooSoon {
                        retry_after: retry_after_ms(ready, now),
                    })
                }
                Some((_, attempts, _, _)) => {
                    tx.prepare_cached(
                        "UPDATE verifications SET code_mac = ?3, sent_at = ?4, expires_at = ?5
                         WHERE session_id = ?1 AND phone = ?2",
                    )?
                    .execute(params![
                        session_id,
                        phone,
                        &mac.0[..],
                        now,
                        expires
                    ])?;
                    Ok(StartOutcome::Issued {
                        resend: true,
                        attempts,
                    })
                }
                // Never sent, or the previous verification is over: start afresh.
                None => {
                    tx.prepare_cached(
                        "INSERT INTO verifications
                             (session_id, phone, code_mac, state, attempts, created_at, sent_at,
                              expires_at)
                         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5, ?6)
                         ON CONFLICT (session_id, phone) DO UPDATE SET
                             code_mac = excluded.code_mac, state = excluded.state, attempts = 0,
                             created_at = excluded.created_at, sent_at = excluded.sent_at,
                             expires_at = excluded.expires_at",
                    )?
                    .execute(params![
                        session_id,
                        phone,
                        &mac.0[..],
                        PENDING,
                        now,
                        expires
                    ])?;
                    Ok(StartOutcome::Issued {
                        resend: false,
                        attempts: 0,
                    })
                }
            }
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

    async fn live_code(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        margin: Duration,
        min_keep: Duration,
    ) -> StoreResult<Option<LiveCode>> {
        let phone = phone.as_str().to_owned();
        let (margin, min_keep) = (duration_millis(margin), duration_millis(min_keep));
        self.blocking(move |conn| {
            let now = to_millis(SystemTime::now());
            let row = conn
                .prepare_cached(
                    "SELECT code_nonce, keep_until FROM verifications
                     WHERE session_id = ?1 AND phone = ?2 AND state = ?3
                       AND nonce_mac = code_mac AND expires_at >= ?4 AND keep_until >= ?5",
                )?
                .query_row(
                    params![
                        session_id,
                        phone,
                        PENDING,
                        now.saturating_add(margin),
                        now.saturating_add(min_keep)
                    ],
                    |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
                )
                .optional()?;
            row.map(|(nonce, keep_until)| {
                let nonce = nonce.try_into().map_err(|_| {
                    StoreError::Internal("a stored code nonce is not 16 bytes".into())
                })?;
                Ok(LiveCode {
                    nonce: CodeNonce(nonce),
                    keep_left: Duration::from_millis(
                        u64::try_from(keep_until.saturating_sub(now)).unwrap_or(0),
                    ),
                })
            })
            .transpose()
        })
        .await
    }

    async fn bind_code(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        mac: &CodeMac,
        new_mac: &CodeMac,
        nonce: &CodeNonce,
        keep_for: Option<Duration>,
    ) -> StoreResult<bool> {
        let (phone, mac, new_mac, nonce) = (phone.as_str().to_owned(), *mac, *new_mac, *nonce);
        self.blocking(move |conn| {
            let now = to_millis(SystemTime::now());
            let keep_until = keep_for.map(|k| now.saturating_add(duration_millis(k)));
            let n = conn
                .prepare_cached(
                    "UPDATE verifications
                     SET code_mac = ?4, code_nonce = ?5, nonce_mac = ?4,
                         keep_until = coalesce(?6, keep_until)
                     WHERE session_id = ?1 AND phone = ?2 AND code_mac = ?3",
                )?
                .execute(params![
                    session_id,
                    phone,
                    &mac.0[..],
                    &new_mac.0[..],
                    &nonce.0[..],
                    keep_until
                ])?;
            Ok(n > 0)
        })
        .await
    }

    async fn check_guarded(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
    ) -> StoreResult<CheckOutcome> {
        let (session_id, phone, mac) =
            (req.session_id, req.phone.as_str().to_owned(), req.code_mac);
        let max_attempts = req.max_attempts;
        let (new_key, approval) = (req.on_approve.new_key, req.on_approve.data.clone());
        let guard = guard.clone();
        self.transaction(move |tx, now, policy| {
            if let Some((scope, end)) = limits::take_quotas(tx, &guard.quotas, now)? {
                return Ok(CheckOutcome::Refused {
                    by: Refusal::Quota(scope),
                    retry_after: retry_after_ms(end, now),
                });
            }
            let counters = limits::failure_counters(&phone, &guard);
            let mut locked: Option<i64> = None;
            for f in &counters {
                if let Some(end) = limits::locked_until(tx, f, now)? {
                    locked = Some(locked.map_or(end, |l| l.max(end)));
                }
            }
            let current: Option<(Vec<u8>, i64, u32, i64)> = tx
                .prepare_cached(
                    "SELECT code_mac, state, attempts, expires_at FROM verifications
                     WHERE session_id = ?1 AND phone = ?2",
                )?
                .query_row(params![session_id, phone], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            // A session that died after its code was sent has no code to check (right or wrong).
            let session = load_by_id(tx, session_id, now)?;
            // Every answer that is not about a live code the session holds: the lock on the
            // number is not revealed, and the counter write a wrong code makes is made anyway.
            let settled = match &current {
                _ if session.is_none() => Some(CheckOutcome::NotFound),
                None => Some(CheckOutcome::NotFound),
                Some((_, state, _, _)) if *state == APPROVED => Some(CheckOutcome::NotFound),
                Some((_, _, _, expires)) if *expires <= now => Some(CheckOutcome::Expired),
                Some((_, state, attempts, _))
                    if *state == EXHAUSTED || *attempts >= max_attempts =>
                {
                    Some(CheckOutcome::Exhausted)
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
            let Some((_, _, attempts, _)) = current.filter(|_| settled.is_none()) else {
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
                let session = save(tx, &new_key, row, now, policy)?;
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
