//! Delivery records of the embedded store: the insert at send time and the receipt update,
//! each inside the caller's IMMEDIATE transaction so that the rank check and the write are one
//! step. Same rules as the PostgreSQL statements (migrations/*/0005_deliveries.sql).

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::delivery::{Delivery, DeliveryState, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::store::{StoreError, StoreResult};
use crate::time::from_millis;

/// A [`NewDelivery`] that can cross into the blocking pool.
pub(super) struct Owned {
    id: String,
    session_id: i64,
    provider: String,
    message_id: String,
    country: String,
}

impl From<&NewDelivery<'_>> for Owned {
    fn from(d: &NewDelivery<'_>) -> Self {
        Owned {
            id: d.id.to_owned(),
            session_id: d.session_id,
            provider: d.provider.to_owned(),
            message_id: d.message_id.to_owned(),
            country: d.country.to_owned(),
        }
    }
}

const COLUMNS: &str =
    "id, provider, message_id, country, state, error_code, queued_at, sent_at, final_at";

fn row(r: &Row<'_>) -> rusqlite::Result<(Delivery, i64)> {
    let state: i64 = r.get(4)?;
    let d = Delivery {
        id: r.get(0)?,
        provider: r.get(1)?,
        message_id: r.get(2)?,
        country: r.get(3)?,
        state: DeliveryState::from_code(state).unwrap_or(DeliveryState::Queued),
        error_code: r.get(5)?,
        queued_at: from_millis(r.get(6)?),
        sent_at: r.get::<_, Option<i64>>(7)?.map(from_millis),
        final_at: r.get::<_, Option<i64>>(8)?.map(from_millis),
    };
    Ok((d, state))
}

pub(super) fn record(tx: &Connection, d: &Owned, now: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO deliveries (id, session_id, provider, message_id, country, state, queued_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)
         ON CONFLICT (provider, message_id) DO NOTHING",
    )?
    .execute(params![
        d.id,
        d.session_id,
        d.provider,
        d.message_id,
        d.country,
        now
    ])?;
    Ok(())
}

pub(super) fn apply(tx: &Connection, r: &ReceiptUpdate, now: i64) -> StoreResult<ReceiptOutcome> {
    let new = i64::from(r.state.code());
    let current: Option<i64> = tx
        .prepare_cached("SELECT state FROM deliveries WHERE provider = ?1 AND message_id = ?2")?
        .query_row(params![r.provider, r.message_id], |row| row.get(0))
        .optional()?;
    let Some(current) = current else {
        return Ok(ReceiptOutcome::Unknown);
    };
    if current == new {
        return Ok(ReceiptOutcome::Duplicate);
    }
    if current.min(2) >= new.min(2) {
        return Ok(ReceiptOutcome::Stale);
    }
    tx.prepare_cached(
        "UPDATE deliveries SET state = ?3, error_code = ?4,
             sent_at = CASE WHEN ?3 = 1 THEN ?5 ELSE sent_at END,
             final_at = CASE WHEN ?3 >= 2 THEN ?5 ELSE final_at END
         WHERE provider = ?1 AND message_id = ?2",
    )?
    .execute(params![r.provider, r.message_id, new, r.error_code, now])?;
    let (delivery, _) = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries WHERE provider = ?1 AND message_id = ?2"
        ))?
        .query_row(params![r.provider, r.message_id], row)?;
    Ok(ReceiptOutcome::Applied { delivery })
}

pub(super) fn get(conn: &Connection, id: &str) -> StoreResult<Option<Delivery>> {
    let found = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM deliveries WHERE id = ?1"))?
        .query_row(params![id], row)
        .optional()?;
    match found {
        Some((d, code)) if DeliveryState::from_code(code).is_some() => Ok(Some(d)),
        Some((_, code)) => Err(StoreError::Internal(format!("delivery state {code}"))),
        None => Ok(None),
    }
}
