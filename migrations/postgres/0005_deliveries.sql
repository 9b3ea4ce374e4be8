-- verifyd schema, version 5: delivery receipts (the same table as
-- migrations/sqlite/0005_deliveries.sql).

-- One row per send a gateway accepted. Receipts find it by (provider, message_id); backends by
-- its public id. It goes with its session.
CREATE TABLE deliveries (
    id          TEXT        PRIMARY KEY,
    session_id  BIGINT      NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- The provider instance name and the gateway's message id (BizId, SerialNo, MessageId).
    provider    TEXT        NOT NULL,
    message_id  TEXT        NOT NULL,
    -- Calling code of the destination, for metrics by country; never the number itself.
    country     TEXT        NOT NULL,
    -- 0 queued, 1 sent, 2 delivered, 3 failed (crate::delivery::DeliveryState::code). The rank
    -- LEAST(state, 2) only grows: a receipt that would lower it, or change a final state, is stale.
    state       SMALLINT    NOT NULL DEFAULT 0,
    error_code  TEXT        NULL,
    queued_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ NULL,
    final_at    TIMESTAMPTZ NULL,
    UNIQUE (provider, message_id)
);

CREATE INDEX deliveries_session_idx ON deliveries (session_id);
