//! The abuse-limit rows of the embedded store, read and written inside the caller's IMMEDIATE
//! transaction (so the check and the increment are one atomic step): quota counters, the
//! failed-check counters of a number and the pumping breaker. Same rules as the PostgreSQL
//! functions in migrations/postgres/0002_abuse_limits.sql and 0003_challenge_and_networks.sql.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::quota::{FailureLimit, PumpingRule, Quota, Scope};
use crate::store::StoreResult;

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Count and end of a live window (`None`: no row, or its window is over).
fn live_counter(
    tx: &Transaction<'_>,
    scope: &str,
    key: &str,
    now: i64,
) -> StoreResult<Option<(u32, i64)>> {
    Ok(tx
        .prepare_cached(
            "SELECT count, expires_at FROM quota_counters
             WHERE scope = ?1 AND key = ?2 AND expires_at > ?3",
        )?
        .query_row(params![scope, key, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Adds one event; a window that is over starts afresh. Returns the new count and window end.
fn bump(
    tx: &Transaction<'_>,
    scope: &str,
    key: &str,
    window: i64,
    now: i64,
) -> StoreResult<(u32, i64)> {
    Ok(tx
        .prepare_cached(
            "INSERT INTO quota_counters (scope, key, count, expires_at) VALUES (?1, ?2, 1, ?4)
             ON CONFLICT (scope, key) DO UPDATE SET
                 count = CASE WHEN expires_at > ?3 THEN count + 1 ELSE 1 END,
                 expires_at = CASE WHEN expires_at > ?3 THEN expires_at ELSE ?4 END
             RETURNING count, expires_at",
        )?
        .query_row(params![scope, key, now, now.saturating_add(window)], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?)
}

/// The live count of each quota's counter (0 for none or an ended window) and its end.
pub fn live_counts(
    tx: &Transaction<'_>,
    quotas: &[Quota],
    now: i64,
) -> StoreResult<Vec<(u32, i64)>> {
    quotas
        .iter()
        .map(|q| Ok(live_counter(tx, q.scope.as_str(), &q.key, now)?.unwrap_or((0, now))))
        .collect()
}

/// The full quota that frees up last, given [`live_counts`]; of several ending together, the
/// first by (scope, key), as PostgreSQL orders them.
pub fn fullest(quotas: &[Quota], counts: &[(u32, i64)]) -> Option<(Scope, i64)> {
    let order = |q: &Quota, end: i64| (std::cmp::Reverse(end), q.scope.as_str(), q.key.clone());
    quotas
        .iter()
        .zip(counts)
        .filter(|(q, (count, _))| *count >= q.limit && *count > 0)
        .min_by_key(|(q, (_, end))| order(q, *end))
        .map(|(q, (_, end))| (q.scope, *end))
}

/// Adds one event to every quota.
pub fn bump_all<'q>(
    tx: &Transaction<'_>,
    quotas: impl IntoIterator<Item = &'q Quota>,
    now: i64,
) -> StoreResult<()> {
    for q in quotas {
        bump(tx, q.scope.as_str(), &q.key, ms(q.window), now)?;
    }
    Ok(())
}

/// Takes one unit from every quota, or from none: returns the full quota that frees up last.
pub fn take_quotas(
    tx: &Transaction<'_>,
    quotas: &[Quota],
    now: i64,
) -> StoreResult<Option<(Scope, i64)>> {
    let refused = fullest(quotas, &live_counts(tx, quotas, now)?);
    if refused.is_none() {
        bump_all(tx, quotas, now)?;
    }
    Ok(refused)
}

/// Returns one unit to every quota whose window is still running (a failed delivery's).
pub fn give_back<'q>(
    tx: &Transaction<'_>,
    quotas: impl IntoIterator<Item = &'q Quota>,
    now: i64,
) -> StoreResult<()> {
    for q in quotas {
        tx.prepare_cached(
            "UPDATE quota_counters SET count = count - 1
             WHERE scope = ?1 AND key = ?2 AND expires_at > ?3 AND count > 0",
        )?
        .execute(params![q.scope.as_str(), q.key, now])?;
    }
    Ok(())
}

/// A failure counter: the number's own (`phone_failed_checks`, keyed by the number) or the
/// number's as seen from one client network (`phone_net_failed_checks`, "<phone> <network>").
#[derive(Debug, Clone)]
pub struct Failures {
    pub scope: Scope,
    pub key: String,
    pub limit: Option<FailureLimit>,
}

/// The failure counters a check of `phone` under `guard` touches, in the order PostgreSQL
/// locks them.
pub fn failure_counters(phone: &str, guard: &crate::quota::CheckGuard) -> Vec<Failures> {
    let mut all = vec![Failures {
        scope: Scope::PhoneFailedChecks,
        key: phone.to_owned(),
        limit: guard.failures,
    }];
    if let Some((net, limit)) = &guard.network_failures {
        all.push(Failures {
            scope: Scope::PhoneNetFailedChecks,
            key: format!("{phone} {net}"),
            limit: Some(*limit),
        });
    }
    all
}

/// The end of the lock of a failure counter, when it is locked.
pub fn locked_until(tx: &Transaction<'_>, f: &Failures, now: i64) -> StoreResult<Option<i64>> {
    let (phone, limit) = (f.key.as_str(), f.limit);
    let counter = live_counter(tx, f.scope.as_str(), phone, now)?;
    Ok(match (limit, counter) {
        (Some(l), Some((count, end))) if l.max > 0 && count >= l.max => Some(end),
        _ => None,
    })
}

/// Counts a wrong code against a failure counter; reaching the maximum locks it for `lockout`.
pub fn record_failure(tx: &Transaction<'_>, f: &Failures, now: i64) -> StoreResult<()> {
    let (phone, limit) = (f.key.as_str(), f.limit);
    let window = limit.map_or(3_600_000, |l| ms(l.window));
    let scope = f.scope.as_str();
    let (count, end) = bump(tx, scope, phone, window, now)?;
    if let Some(l) = limit.filter(|l| l.max > 0 && count >= l.max) {
        let until = end.max(now.saturating_add(ms(l.lockout)));
        tx.prepare_cached(
            "UPDATE quota_counters SET expires_at = ?3 WHERE scope = ?1 AND key = ?2",
        )?
        .execute(params![scope, phone, until])?;
    }
    Ok(())
}

/// The write a wrong code makes to the number's failure counter, without its effect, so that
/// checks for codes that do not exist cost the same: one row written, inserted (as an ended
/// window) for a number never seen, updated in place otherwise — like [`record_failure`]'s
/// upsert, and whatever the number's history.
pub fn touch_failures(tx: &Transaction<'_>, f: &Failures, now: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO quota_counters (scope, key, count, expires_at) VALUES (?1, ?2, 0, ?3)
         ON CONFLICT (scope, key) DO UPDATE SET count = count",
    )?
    .execute(params![f.scope.as_str(), f.key, now])?;
    Ok(())
}

/// The end of the breaker's window when it is open for the rule's country. Read under the
/// caller's IMMEDIATE transaction, which also records the send: no other send can pass between
/// this read and [`record_send`], so the breaker trips after exactly `min_sample` sends.
pub fn breaker_open(
    tx: &Transaction<'_>,
    rule: &PumpingRule,
    now: i64,
) -> StoreResult<Option<i64>> {
    Ok(tx
        .prepare_cached(
            "SELECT expires_at FROM pumping WHERE country = ?1 AND tripped AND expires_at > ?2",
        )?
        .query_row(params![rule.country, now], |r| r.get(0))
        .optional()?)
}

/// Counts a send; returns true when this send tripped the breaker.
pub fn record_send(tx: &Transaction<'_>, rule: &PumpingRule, now: i64) -> StoreResult<bool> {
    let (sends, approvals, tripped): (u32, u32, bool) = tx
        .prepare_cached(
            "INSERT INTO pumping (country, sends, approvals, tripped, expires_at)
             VALUES (?1, 1, 0, 0, ?3)
             ON CONFLICT (country) DO UPDATE SET
                 sends = CASE WHEN expires_at > ?2 THEN sends + 1 ELSE 1 END,
                 approvals = CASE WHEN expires_at > ?2 THEN approvals ELSE 0 END,
                 tripped = tripped AND expires_at > ?2,
                 expires_at = CASE WHEN expires_at > ?2 THEN expires_at ELSE ?3 END
             RETURNING sends, approvals, tripped",
        )?
        .query_row(
            params![rule.country, now, now.saturating_add(ms(rule.window))],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
    let low =
        sends >= rule.min_sample && f64::from(approvals) < rule.min_conversion * f64::from(sends);
    if low && !tripped {
        tx.prepare_cached("UPDATE pumping SET tripped = 1 WHERE country = ?1")?
            .execute([&rule.country])?;
        return Ok(true);
    }
    Ok(false)
}

/// Takes back a send counted by [`record_send`] whose delivery failed; the breaker closes again
/// when the window no longer meets the tripping condition without it.
pub fn unrecord_send(tx: &Transaction<'_>, rule: &PumpingRule, now: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "UPDATE pumping SET sends = sends - 1,
                tripped = tripped AND sends - 1 >= ?3 AND approvals < ?4 * (sends - 1)
         WHERE country = ?1 AND expires_at > ?2 AND sends > 0",
    )?
    .execute(params![
        rule.country,
        now,
        rule.min_sample,
        rule.min_conversion
    ])?;
    Ok(())
}

/// Counts an approval; the breaker closes once the conversion is back above the minimum.
pub fn record_approval(tx: &Transaction<'_>, rule: &PumpingRule, now: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "UPDATE pumping SET approvals = approvals + 1,
                tripped = tripped AND (approvals + 1) < ?3 * sends
         WHERE country = ?1 AND expires_at > ?2",
    )?
    .execute(params![rule.country, now, rule.min_conversion])?;
    Ok(())
}
