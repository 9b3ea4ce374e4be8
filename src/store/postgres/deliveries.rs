//! Delivery records on PostgreSQL: one statement per operation. The receipt update carries the
//! rank rule in its `WHERE`, which PostgreSQL re-checks against the newest row version when two
//! receipts race, so the state can only move forward whatever the interleaving.

use std::time::SystemTime;
use tokio_postgres::Row;

use super::{PgStore, db_error};
use crate::delivery::{Delivery, DeliveryState, NewDelivery, ReceiptOutcome, ReceiptUpdate};
use crate::store::{StoreError, StoreResult};

const RECORD: &str = "
    INSERT INTO deliveries (id, session_id, provider, message_id, country)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (provider, message_id) DO NOTHING";

const APPLY: &str = "
    UPDATE deliveries SET state = $3, error_code = $4,
        sent_at = CASE WHEN $3 = 1 THEN now() ELSE sent_at END,
        final_at = CASE WHEN $3 >= 2 THEN now() ELSE final_at END
    WHERE provider = $1 AND message_id = $2 AND LEAST(state, 2) < LEAST($3::smallint, 2)
    RETURNING id, provider, message_id, country, state, error_code, queued_at, sent_at, final_at";

const CURRENT: &str = "SELECT state FROM deliveries WHERE provider = $1 AND message_id = $2";

const GET: &str = "
    SELECT id, provider, message_id, country, state, error_code, queued_at, sent_at, final_at
    FROM deliveries WHERE id = $1";

fn delivery(row: &Row) -> StoreResult<Delivery> {
    let code: i16 = row.try_get("state").map_err(db_error)?;
    let state = DeliveryState::from_code(code.into())
        .ok_or_else(|| StoreError::Internal(format!("delivery state {code}")))?;
    let at = |name: &str| row.try_get::<_, SystemTime>(name).map_err(db_error);
    let maybe = |name: &str| row.try_get::<_, Option<SystemTime>>(name).map_err(db_error);
    Ok(Delivery {
        id: row.try_get("id").map_err(db_error)?,
        provider: row.try_get("provider").map_err(db_error)?,
        message_id: row.try_get("message_id").map_err(db_error)?,
        country: row.try_get("country").map_err(db_error)?,
        state,
        error_code: row.try_get("error_code").map_err(db_error)?,
        queued_at: at("queued_at")?,
        sent_at: maybe("sent_at")?,
        final_at: maybe("final_at")?,
    })
}

impl PgStore {
    pub(super) async fn pg_record_delivery(&self, d: &NewDelivery<'_>) -> StoreResult<()> {
        self.execute(
            RECORD,
            &[&d.id, &d.session_id, &d.provider, &d.message_id, &d.country],
        )
        .await?;
        Ok(())
    }

    pub(super) async fn pg_apply_receipt(&self, r: &ReceiptUpdate) -> StoreResult<ReceiptOutcome> {
        let new = r.state.code();
        if let Some(row) = self
            .query_opt(APPLY, &[&r.provider, &r.message_id, &new, &r.error_code])
            .await?
        {
            return Ok(ReceiptOutcome::Applied {
                delivery: delivery(&row)?,
            });
        }
        // Nothing moved: say why (a second round trip only for receipts that change nothing).
        let Some(row) = self
            .query_opt(CURRENT, &[&r.provider, &r.message_id])
            .await?
        else {
            return Ok(ReceiptOutcome::Unknown);
        };
        let current: i16 = row.try_get("state").map_err(db_error)?;
        Ok(if current == new {
            ReceiptOutcome::Duplicate
        } else {
            ReceiptOutcome::Stale
        })
    }

    pub(super) async fn pg_delivery(&self, id: &str) -> StoreResult<Option<Delivery>> {
        match self.query_opt(GET, &[&id]).await? {
            Some(row) => Ok(Some(delivery(&row)?)),
            None => Ok(None),
        }
    }
}
