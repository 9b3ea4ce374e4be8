//! [`VerificationStore`] on PostgreSQL: a send, a check or an abandoned send is one call of a
//! function from migrations/postgres, which applies every rule and limit in one transaction.

use async_trait::async_trait;
use postgres_types::Json;
use std::time::{Duration, SystemTime};

use super::{PgStore, count, db_error, session_from};
use crate::code::{CodeMac, CodeNonce};
use crate::delivery::{Delivery, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::phone::PhoneNumber;
use crate::quota::{CheckGuard, PumpingState, Quota, Refusal, Scope, SendGuard};
use crate::store::{
    CheckOutcome, CheckVerification, LiveCode, StartOutcome, StartVerification, StoreError,
    StoreResult, VerificationStore, retry_after,
};

/// Lifts the cooldown of a failed send and gives back what it took (see migrations/postgres/0008).
const ABANDON_SEND: &str = "SELECT verifyd_abandon_send($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// One send: the verification rules, every abuse limit and the challenge, and a browser's
/// first session (see migrations/postgres/0008).
const START_SEND: &str = "
    SELECT * FROM verifyd_start_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                     $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24,
                                     $25, $26, $27)";

/// One check; the session columns are renamed for [`session_from`].
const CHECK: &str = "
    SELECT o_outcome, o_attempts, o_retry_at, o_refused, o_now,
           o_id AS id, o_data AS data, o_expiry_kind AS expiry_kind, o_idle_secs AS idle_secs,
           o_created_at AS created_at, o_expires_at AS expires_at
    FROM verifyd_check($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                       $18, $19)";

/// The pending code a resend may send again, if its nonce is the one of the stored code;
/// `keep_until` comes back with the clock it is measured by.
const LIVE_CODE: &str = "
    SELECT code_nonce, keep_until, now() AS now FROM verifications
    WHERE session_id = $1 AND phone = $2 AND state = 0 AND nonce_mac = code_mac
      AND expires_at >= now() + make_interval(secs => $3::float8)
      AND keep_until >= now() + make_interval(secs => $4::float8)";

/// Records the code a row holds, while its MAC is still `$3`.
const BIND_CODE: &str = "
    UPDATE verifications
    SET code_mac = $4, code_nonce = $5, nonce_mac = $4,
        keep_until = coalesce(now() + make_interval(secs => $6::float8), keep_until)
    WHERE session_id = $1 AND phone = $2 AND code_mac = $3";

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
    ) -> StoreResult<StartOutcome> {
        let (scopes, keys, limits, windows) = quota_arrays(&guard.quotas);
        let (soft_scopes, soft_keys, soft_limits, soft_windows) = quota_arrays(&guard.soft);
        let c = guard.challenge;
        let new_key = req.new_session.map(|n| n.key.0.to_vec());
        let (kind, idle) = req.new_session.map_or((0, None), |n| n.expiry.to_parts());
        let (age, cap) = (self.default_age(), self.max_lifetime());
        let pumping = guard.pumping.as_ref();
        let country = pumping.map(|p| p.country.as_str());
        let pump_window = pumping.map_or(0.0, |p| p.window.as_secs_f64());
        let pump_sample = pumping.map_or(0, |p| i32::try_from(p.min_sample).unwrap_or(i32::MAX));
        let pump_conversion = pumping.map_or(0.0, |p| p.min_conversion);
        let row = self
            .query_opt(
                START_SEND,
                &[
                    &req.session_id,
                    &req.phone.as_str(),
                    &req.code_mac.0.as_slice(),
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
                    &new_key,
                    &kind,
                    &idle,
                    &age,
                    &cap,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("verifyd_start_send returned no row".into()))?;
        let outcome: String = row.try_get("o_outcome").map_err(db_error)?;
        let now: SystemTime = row.try_get("o_now").map_err(db_error)?;
        let wait = || -> StoreResult<Duration> {
            let at: SystemTime = row.try_get("o_retry_at").map_err(db_error)?;
            Ok(retry_after(at, now))
        };
        Ok(match outcome.as_str() {
            "issued" => {
                if row.try_get::<_, bool>("o_tripped").map_err(db_error)? {
                    if let Some(p) = pumping {
                        tracing::warn!(country = %p.country, "SMS pumping breaker tripped");
                    }
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
            other => StartOutcome::Refused {
                by: refusal(other, row.try_get("o_refused").map_err(db_error)?)?,
                retry_after: wait()?,
            },
        })
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
        let country = pumping.map(|p| p.country.as_str());
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

    async fn live_code(
        &self,
        session_id: i64,
        phone: &PhoneNumber,
        margin: Duration,
        min_keep: Duration,
    ) -> StoreResult<Option<LiveCode>> {
        let row = self
            .query_opt(
                LIVE_CODE,
                &[
                    &session_id,
                    &phone.as_str(),
                    &margin.as_secs_f64(),
                    &min_keep.as_secs_f64(),
                ],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let nonce: Vec<u8> = row.try_get("code_nonce").map_err(db_error)?;
        let keep_until: SystemTime = row.try_get("keep_until").map_err(db_error)?;
        let now: SystemTime = row.try_get("now").map_err(db_error)?;
        let nonce = nonce
            .try_into()
            .map_err(|_| StoreError::Internal("a stored code nonce is not 16 bytes".into()))?;
        Ok(Some(LiveCode {
            nonce: CodeNonce(nonce),
            keep_left: keep_until.duration_since(now).unwrap_or(Duration::ZERO),
        }))
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
        let n = self
            .execute(
                BIND_CODE,
                &[
                    &session_id,
                    &phone.as_str(),
                    &mac.0.as_slice(),
                    &new_mac.0.as_slice(),
                    &nonce.0.as_slice(),
                    &keep_for.map(|k| k.as_secs_f64()),
                ],
            )
            .await?;
        Ok(n > 0)
    }

    async fn check_guarded(
        &self,
        req: &CheckVerification<'_>,
        guard: &CheckGuard,
    ) -> StoreResult<CheckOutcome> {
        let max_attempts = i32::try_from(req.max_attempts).unwrap_or(i32::MAX);
        let (age, cap) = (self.default_age(), self.max_lifetime());
        let patch = Json(req.on_approve.data);
        let (scopes, keys, limits, windows) = quota_arrays(&guard.quotas);
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
                    &req.session_id,
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
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Internal("verifyd_check returned no row".into()))?;
        let outcome: String = row.try_get("o_outcome").map_err(db_error)?;
        Ok(match outcome.as_str() {
            // The session died after the code was sent: the code is spent, nothing to approve.
            "approved" => match session_from(&row, true)? {
                Some(session) => CheckOutcome::Approved { session },
                None => CheckOutcome::NotFound,
            },
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
                let now: SystemTime = row.try_get("o_now").map_err(db_error)?;
                let at: SystemTime = row.try_get("o_retry_at").map_err(db_error)?;
                CheckOutcome::Refused {
                    by: refusal(other, row.try_get("o_refused").map_err(db_error)?)?,
                    retry_after: retry_after(at, now),
                }
            }
        })
    }

    async fn pumping_states(&self) -> StoreResult<Vec<PumpingState>> {
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

/// The quotas as the four parallel arrays `verifyd_take_quotas` takes.
fn quota_arrays(quotas: &[Quota]) -> (Vec<&str>, Vec<&str>, Vec<i32>, Vec<f64>) {
    (
        quotas.iter().map(|q| q.scope.as_str()).collect(),
        quotas.iter().map(|q| q.key.as_str()).collect(),
        quotas
            .iter()
            .map(|q| i32::try_from(q.limit).unwrap_or(i32::MAX))
            .collect(),
        quotas.iter().map(|q| q.window.as_secs_f64()).collect(),
    )
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
