//! [`VerificationStore`] on PostgreSQL: a send, a check or an abandoned send is one call of a
//! function from migrations/postgres, which applies every rule and limit in one transaction.

use async_trait::async_trait;
use postgres_types::Json;
use std::time::{Duration, Instant, SystemTime};

use super::budget::{Grant, Seen, SendPlan, SendResult};
use super::{PgStore, count, db_error, session_from};
use crate::code::{CodeMac, CodeNonce};
use crate::delivery::{Delivery, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::phone::PhoneNumber;
use crate::quota::{CheckGuard, PumpingState, Quota, Refusal, Scope, SendGuard};
use crate::store::{
    CheckOutcome, CheckVerification, Checked, KeptCode, StartOutcome, StartVerification, Started,
    StoreError, StoreResult, VerificationStore, retry_after,
};

/// Lifts the cooldown of a failed send and gives back what it took (see migrations/postgres/0008).
const ABANDON_SEND: &str = "SELECT verifyd_abandon_send($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// One send: the caller's session (resolved and slid, or created with an issued code), the
/// verification rules, the same-code decision, every abuse limit and the challenge, with this
/// daemon's leases and breaker counts (see migrations/postgres/0010 and 0013). The session
/// columns are renamed for [`session_from`].
const START_SEND: &str = "
    SELECT o_outcome, o_attempts, o_resend, o_retry_at, o_refused, o_tripped, o_now, o_nonce,
           o_ttl, o_created, o_refreshed,
           o_id AS id, o_data AS data, o_expiry_kind AS expiry_kind, o_idle_secs AS idle_secs,
           o_created_at AS created_at, o_expires_at AS expires_at, o_data_json AS data_json,
           o_version AS version, o_lease_scopes, o_lease_keys, o_lease_ends, o_lease_pos,
           o_lease_counts, o_pump_end, o_pump_sends, o_pump_approvals, o_pump_tripped
    FROM verifyd_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                      $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32,
                      $33, $34, $35, $36)";

/// Adds breaker counts this daemon holds (see [`budget`](super::budget)).
const PUMPING_FLUSH: &str = "SELECT verifyd_pumping_flush($1, $2, $3)";

/// Gives back the unspent slots of a lease.
const QUOTA_RELEASE: &str = "SELECT verifyd_quota_release($1, $2, $3, $4)";

/// One check, its caller's session resolved and slid in it; the session columns are renamed
/// for [`session_from`].
const CHECK: &str = "
    SELECT o_outcome, o_attempts, o_retry_at, o_refused, o_now, o_refreshed,
           o_id AS id, o_data AS data, o_expiry_kind AS expiry_kind, o_idle_secs AS idle_secs,
           o_created_at AS created_at, o_expires_at AS expires_at, o_data_json AS data_json,
           o_version AS version, o_lease_scopes, o_lease_keys, o_lease_ends, o_lease_pos,
           o_lease_counts
    FROM verifyd_check_leased($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                              $16, $17, $18, $19, $20, $21)";

/// The counts are the sums of the window's shards (migrations/postgres/0008).
const PUMPING_STATES: &str = "
    SELECT p.country,
           least(coalesce(sum(s.sends), 0), 2147483647)::integer AS sends,
           least(coalesce(sum(s.approvals), 0), 2147483647)::integer AS approvals,
           p.tripped, p.expires_at
    FROM pumping p
        LEFT JOIN pumping_shards s ON s.country = p.country AND s.window_ends = p.expires_at
    WHERE p.expires_at > now()
    GROUP BY p.country, p.tripped, p.expires_at
    ORDER BY p.country";

/// Ends the window: the next send to the country starts a fresh one.
const PUMPING_RESET: &str = "
    UPDATE pumping SET sends = 0, approvals = 0, tripped = false, expires_at = now()
    WHERE country = $1";

#[async_trait]
impl VerificationStore for PgStore {
    async fn start_send(
        &self,
        req: &StartVerification<'_>,
        guard: &SendGuard,
    ) -> StoreResult<Started> {
        let pending = self.budgets.plan(guard, Instant::now());
        let asked_at = Instant::now();
        match self
            .pg_start_send(req, guard, pending.plan(), asked_at)
            .await
        {
            Ok((started, result)) => {
                pending.settle(Ok(&result));
                Ok(started)
            }
            Err(e) => {
                pending.settle(Err(()));
                Err(e)
            }
        }
    }

    async fn abandon_send(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        code_mac: &CodeMac,
        guard: &SendGuard,
    ) -> StoreResult<()> {
        let all: Vec<Quota> = guard.all_quotas().cloned().collect();
        let (scopes, keys, limits, _) = quota_arrays(&all);
        let pumping = guard.pumping.as_ref();
        // A send this daemon still counts in memory is taken back there.
        let country = pumping
            .map(|p| p.country.as_str())
            .filter(|c| !self.budgets.unsend(c));
        let pump_sample = pumping.map_or(0, |p| i32::try_from(p.min_sample).unwrap_or(i32::MAX));
        let pump_conversion = pumping.map_or(0.0, |p| p.min_conversion);
        self.execute(
            ABANDON_SEND,
            &[
                &session_id,
                &phone.as_str(),
                &code_mac.0.as_slice(),
                &scopes,
                &keys,
                &limits,
                &country,
                &pump_sample,
                &pump_conversion,
            ],
        )
        .await
        .map(drop)
    }

    async fn check_guarded(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
    ) -> StoreResult<Checked> {
        let pending = self.budgets.plan_check(&guard.quotas, Instant::now());
        let asked_at = Instant::now();
        match self.pg_check(req, guard, pending.plan(), asked_at).await {
            Ok((checked, result)) => {
                pending.settle(Ok(&result));
                Ok(checked)
            }
            Err(e) => {
                pending.settle(Err(()));
                Err(e)
            }
        }
    }

    async fn pumping_states(&self) -> StoreResult<Vec<PumpingState>> {
        self.flush_breakers().await?;
        let rows = self
            .bounded(async {
                let c = self.lease().await?;
                let client = c.client();
                let r = match client.prepare_cached(PUMPING_STATES).await {
                    Ok(stmt) => client.query(&stmt, &[]).await,
                    Err(e) => Err(e),
                };
                c.settle(r)
            })
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PumpingState {
                    country: r.try_get("country").map_err(db_error)?,
                    sends: count(r.try_get("sends").map_err(db_error)?),
                    approvals: count(r.try_get("approvals").map_err(db_error)?),
                    tripped: r.try_get("tripped").map_err(db_error)?,
                    window_ends: r.try_get("expires_at").map_err(db_error)?,
                })
            })
            .collect()
    }

    async fn pumping_reset(&self, country: &str) -> StoreResult<bool> {
        self.budgets.forget_breaker(country);
        Ok(self.execute(PUMPING_RESET, &[&country]).await? > 0)
    }

    async fn record_delivery(&self, d: &NewDelivery<'_>) -> StoreResult<()> {
        self.pg_record_delivery(d).await
    }

    async fn apply_receipt(&self, r: &ReceiptUpdate) -> StoreResult<ReceiptOutcome> {
        self.pg_apply_receipt(r).await
    }

    async fn delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        self.pg_delivery(id).await
    }
}

impl PgStore {
    /// The send itself, under `plan`: what it answers, and what the budgets learn from it.
    async fn pg_start_send(
        &self,
        req: &StartVerification<'_>,
        guard: &SendGuard,
        plan: &SendPlan<'_>,
        asked_at: Instant,
    ) -> StoreResult<(Started, SendResult)> {
        let (scopes, keys, limits, windows) = quota_arrays(plan.hard.iter().copied());
        let (soft_scopes, soft_keys, soft_limits, soft_windows) =
            quota_arrays(plan.soft.iter().copied());
        let pump = plan.pump;
        let c = guard.challenge;
        let key = req.key.0.as_slice();
        let new_key = req.new_session.map(|n| n.key.0.to_vec());
        let (kind, idle) = req.new_session.map_or((0, None), |n| n.expiry.to_parts());
        let (age, cap) = (self.default_age(), self.max_lifetime());
        let refresh = i64::from(self.policy.refresh_interval);
        let nonce = req.code_nonce.map(|n| n.0.to_vec());
        let margin = req.keep_margin.map(|m| m.as_secs_f64());
        let pumping = guard.pumping.as_ref();
        let country = pumping.map(|p| p.country.as_str());
        let pump_window = pumping.map_or(0.0, |p| p.window.as_secs_f64());
        let pump_sample = pumping.map_or(0, |p| i32::try_from(p.min_sample).unwrap_or(i32::MAX));
        let pump_conversion = pumping.map_or(0.0, |p| p.min_conversion);
        let row = self
            .query_opt(
                START_SEND,
                &[
                    &key,
                    &new_key,
                    &refresh,
                    &req.phone.as_str(),
                    &req.code_mac.0.as_slice(),
                    &nonce,
                    &margin,
                    &req.code_cap.as_secs_f64(),
                    &req.ttl.as_secs_f64(),
                    &req.resend_interval.as_secs_f64(),
                    &i32::try_from(req.max_attempts).unwrap_or(i32::MAX),
                    &scopes,
                    &keys,
                    &limits,
                    &windows,
                    &soft_scopes,
                    &soft_keys,
                    &soft_limits,
                    &soft_windows,
                    &country,
                    &pump_window,
                    &pump_sample,
                    &pump_conversion,
                    &c.passed,
                    &c.always,
                    &c.when_suspicious,
                    &c.on_trip,
                    &kind,
                    &idle,
                    &age,
                    &cap,
                    &plan.blocks,
                    &plan.covered_challenge,
                    &pump.local,
                    &pump.flush,
                    &pump.flush_end,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("verifyd_send returned no row".into()))?;
        let outcome: String = row.try_get("o_outcome").map_err(db_error)?;
        let now: SystemTime = row.try_get("o_now").map_err(db_error)?;
        let wait = || -> StoreResult<Duration> {
            let at: SystemTime = row.try_get("o_retry_at").map_err(db_error)?;
            Ok(retry_after(at, now))
        };
        let mut kept = None;
        let outcome = match outcome.as_str() {
            "issued" => {
                if row.try_get::<_, bool>("o_tripped").map_err(db_error)? {
                    if let Some(p) = pumping {
                        tracing::warn!(country = %p.country, "SMS pumping breaker tripped");
                    }
                }
                if let Some(nonce) = row
                    .try_get::<_, Option<Vec<u8>>>("o_nonce")
                    .map_err(db_error)?
                {
                    let ttl: f64 = row.try_get("o_ttl").map_err(db_error)?;
                    kept = Some(KeptCode {
                        nonce: CodeNonce(nonce.try_into().map_err(|_| {
                            StoreError::Internal("a stored code nonce is not 16 bytes".into())
                        })?),
                        ttl: Duration::try_from_secs_f64(ttl).unwrap_or(Duration::ZERO),
                    });
                }
                StartOutcome::Issued {
                    resend: row.try_get("o_resend").map_err(db_error)?,
                    attempts: count(row.try_get("o_attempts").map_err(db_error)?),
                }
            }
            "too_soon" => StartOutcome::TooSoon {
                retry_after: wait()?,
            },
            "exhausted" => StartOutcome::Exhausted {
                retry_after: wait()?,
            },
            "challenge" => StartOutcome::Refused {
                by: Refusal::Challenge,
                retry_after: Duration::ZERO,
            },
            "no_session" => StartOutcome::NoSession,
            other => StartOutcome::Refused {
                by: refusal(other, row.try_get("o_refused").map_err(db_error)?)?,
                retry_after: wait()?,
            },
        };
        let session = session_from(&row, row.try_get("o_refreshed").map_err(db_error)?)?;
        let result = SendResult {
            issued: matches!(outcome, StartOutcome::Issued { .. }),
            grants: grants(&row)?,
            seen: seen(&row)?,
            db_now: now,
            asked_at,
        };
        let started = Started {
            outcome,
            kept,
            session,
            created: row.try_get("o_created").map_err(db_error)?,
        };
        Ok((started, result))
    }

    /// The check itself, under `plan` (its quotas' leases): what it answers, and what the
    /// budgets learn from it.
    async fn pg_check(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
        plan: &SendPlan<'_>,
        asked_at: Instant,
    ) -> StoreResult<(Checked, SendResult)> {
        let key = req.key.0.as_slice();
        let refresh = i64::from(self.policy.refresh_interval);
        let max_attempts = i32::try_from(req.max_attempts).unwrap_or(i32::MAX);
        let (age, cap) = (self.default_age(), self.max_lifetime());
        let patch = Json(req.on_approve.data);
        let (scopes, keys, limits, windows) = quota_arrays(plan.hard.iter().copied());
        let failures = guard.failures;
        let fail_max = failures.map_or(0, |f| i32::try_from(f.max).unwrap_or(i32::MAX));
        // Both failure limits share one window and lock-out (see `CheckGuard`).
        let timing = failures.or(guard.network_failures.as_ref().map(|(_, f)| *f));
        let fail_window = timing.map_or(3600.0, |f| f.window.as_secs_f64());
        let lockout = timing.map_or(0.0, |f| f.lockout.as_secs_f64());
        let country = guard.pumping.as_ref().map(|p| p.country.as_str());
        let conversion = guard.pumping.as_ref().map_or(0.0, |p| p.min_conversion);
        let net = guard.network_failures.as_ref().map(|(n, _)| n.as_str());
        let net_fail_max = guard
            .network_failures
            .as_ref()
            .map_or(0, |(_, f)| i32::try_from(f.max).unwrap_or(i32::MAX));
        let row = self
            .query_opt(
                CHECK,
                &[
                    &key,
                    &refresh,
                    &req.phone.as_str(),
                    &req.code_mac.0.as_slice(),
                    &max_attempts,
                    &req.on_approve.new_key.0.as_slice(),
                    &patch,
                    &age,
                    &cap,
                    &scopes,
                    &keys,
                    &limits,
                    &windows,
                    &fail_max,
                    &fail_window,
                    &lockout,
                    &country,
                    &conversion,
                    &net,
                    &net_fail_max,
                    &plan.blocks,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("verifyd_check_leased returned no row".into()))?;
        let outcome: String = row.try_get("o_outcome").map_err(db_error)?;
        let now: SystemTime = row.try_get("o_now").map_err(db_error)?;
        let refreshed: bool = row.try_get("o_refreshed").map_err(db_error)?;
        let session = session_from(&row, outcome == "approved" || refreshed)?;
        let outcome = match outcome.as_str() {
            // The session died after the code was sent: the code is spent, nothing to approve.
            "approved" => match session.clone() {
                Some(session) => CheckOutcome::Approved { session },
                None => CheckOutcome::NotFound,
            },
            "no_session" => CheckOutcome::NoSession,
            "wrong" => {
                let attempts = count(row.try_get("o_attempts").map_err(db_error)?);
                CheckOutcome::Wrong {
                    attempts_left: req.max_attempts.saturating_sub(attempts).max(1),
                }
            }
            "exhausted" => CheckOutcome::Exhausted,
            "expired" => CheckOutcome::Expired,
            "not_found" => CheckOutcome::NotFound,
            other => {
                let at: SystemTime = row.try_get("o_retry_at").map_err(db_error)?;
                CheckOutcome::Refused {
                    by: refusal(other, row.try_get("o_refused").map_err(db_error)?)?,
                    retry_after: retry_after(at, now),
                }
            }
        };
        let result = SendResult {
            // A check that found its session and was not refused by a quota took them all.
            issued: !matches!(
                outcome,
                CheckOutcome::NoSession
                    | CheckOutcome::Refused {
                        by: Refusal::Quota(_),
                        ..
                    }
            ),
            grants: grants(&row)?,
            seen: None,
            db_now: now,
            asked_at,
        };
        Ok((Checked { outcome, session }, result))
    }

    /// Adds the breaker counts this daemon holds to the database (before the sums are read,
    /// and when it stops).
    async fn flush_breakers(&self) -> StoreResult<()> {
        for (country, end, sends) in self.budgets.take_unflushed() {
            self.execute(PUMPING_FLUSH, &[&country, &end, &sends])
                .await?;
        }
        Ok(())
    }

    /// Gives back what this daemon holds and has not spent: the slots of its leases, and its
    /// breaker counts go to the database. Called when the daemon stops.
    pub(super) async fn hand_back_budgets(&self) -> StoreResult<()> {
        self.flush_breakers().await?;
        for (scope, key, end, n) in self.budgets.take_unspent() {
            self.execute(QUOTA_RELEASE, &[&scope.as_str(), &key, &end, &n])
                .await?;
        }
        Ok(())
    }
}

/// The blocks a send was granted (`o_lease_*`).
fn grants(row: &tokio_postgres::Row) -> StoreResult<Vec<Grant>> {
    let get = |c: &str| row.try_get::<_, Option<Vec<String>>>(c).map_err(db_error);
    let (Some(scopes), Some(keys)) = (get("o_lease_scopes")?, get("o_lease_keys")?) else {
        return Ok(vec![]);
    };
    let ends: Vec<SystemTime> = row.try_get("o_lease_ends").map_err(db_error)?;
    let pos: Vec<i32> = row.try_get("o_lease_pos").map_err(db_error)?;
    let counts: Vec<i32> = row.try_get("o_lease_counts").map_err(db_error)?;
    let mut out = Vec::with_capacity(scopes.len());
    for (i, (scope, key)) in scopes.into_iter().zip(keys).enumerate() {
        let scope = Scope::parse(&scope)
            .ok_or_else(|| StoreError::Internal(format!("unknown quota scope {scope:?}")))?;
        let (Some(end), Some(pos), Some(n)) = (ends.get(i), pos.get(i), counts.get(i)) else {
            return Err(StoreError::Internal(
                "verifyd_send's grants do not line up".into(),
            ));
        };
        out.push(Grant {
            scope,
            key,
            end: *end,
            pos: count(*pos),
            count: count(*n),
        });
    }
    Ok(out)
}

/// The breaker window as a send left it (`o_pump_*`), when the database judged the breaker.
fn seen(row: &tokio_postgres::Row) -> StoreResult<Option<Seen>> {
    let Some(end) = row
        .try_get::<_, Option<SystemTime>>("o_pump_end")
        .map_err(db_error)?
    else {
        return Ok(None);
    };
    Ok(Some(Seen {
        end,
        sends: count(row.try_get("o_pump_sends").map_err(db_error)?),
        approvals: count(row.try_get("o_pump_approvals").map_err(db_error)?),
        tripped: row.try_get("o_pump_tripped").map_err(db_error)?,
    }))
}

/// The quotas as the four parallel arrays the functions take.
fn quota_arrays<'q>(
    quotas: impl IntoIterator<Item = &'q Quota>,
) -> (Vec<&'q str>, Vec<&'q str>, Vec<i32>, Vec<f64>) {
    let mut arrays = (vec![], vec![], vec![], vec![]);
    for q in quotas {
        arrays.0.push(q.scope.as_str());
        arrays.1.push(q.key.as_str());
        arrays.2.push(i32::try_from(q.limit).unwrap_or(i32::MAX));
        arrays.3.push(q.window.as_secs_f64());
    }
    arrays
}

/// Reads a refusal the functions report as an outcome name (plus the scope for quotas).
fn refusal(outcome: &str, scope: Option<String>) -> StoreResult<Refusal> {
    match outcome {
        "breaker" => Ok(Refusal::Breaker),
        "locked" => Ok(Refusal::Locked),
        "quota" => scope
            .as_deref()
            .and_then(Scope::parse)
            .map(Refusal::Quota)
            .ok_or_else(|| StoreError::Internal(format!("unknown quota scope {scope:?}"))),
        other => Err(StoreError::Internal(format!("unknown outcome {other:?}"))),
    }
}
