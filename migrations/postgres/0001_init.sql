-- verifyd schema, version 1: sessions, the verifications bound to them, and server metadata.
-- Applied by PgStore::migrate in one transaction under an advisory lock.

-- One row per browser session. The key itself is never stored: only its SHA-256 (`key_hash`),
-- so a dump of this table cannot be replayed as cookies. `id` is the stable identity that
-- survives key cycling and that verifications point to.
CREATE TABLE sessions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- UNIQUE gives the index every request looks sessions up by.
    key_hash    BYTEA       NOT NULL UNIQUE,
    data        JSONB       NOT NULL DEFAULT '{}',
    -- Expiry policy as `Expiry::to_parts` encodes it: 0 default, 1 idle N seconds,
    -- 2 browser session, 3 never. `idle_secs` is set only for kind 1.
    expiry_kind SMALLINT    NOT NULL CHECK (expiry_kind BETWEEN 0 AND 3),
    idle_secs   INTEGER     NULL CHECK (idle_secs > 0),
    created_at  TIMESTAMPTZ NOT NULL,
    -- When the expiry last slid: reads slide it again only after the refresh interval.
    touched_at  TIMESTAMPTZ NOT NULL,
    -- NULL for a session that never expires.
    expires_at  TIMESTAMPTZ NULL
);

-- The sweeper deletes expired sessions in batches ordered by expiry; without this index each
-- batch would scan the whole table. Never-expiring rows are never swept, so they stay out.
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at) WHERE expires_at IS NOT NULL;

-- One verification per (session, phone): the current code's MAC and the wrong-attempt count,
-- which survives resends within the same verification.
CREATE TABLE verifications (
    session_id BIGINT      NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    phone      TEXT        NOT NULL,
    -- HMAC-SHA256 of the code (see code.rs); the code itself is never stored.
    code_mac   BYTEA       NOT NULL,
    -- 0 pending, 1 approved, 2 exhausted (too many wrong attempts).
    state      SMALLINT    NOT NULL CHECK (state BETWEEN 0 AND 2),
    attempts   INTEGER     NOT NULL CHECK (attempts >= 0),
    -- When this verification started (a resend keeps it; a fresh verification resets it).
    created_at TIMESTAMPTZ NOT NULL,
    -- When the current code was sent: the resend cooldown counts from here.
    sent_at    TIMESTAMPTZ NOT NULL,
    -- When the current code dies.
    expires_at TIMESTAMPTZ NOT NULL,
    -- Also the lookup index for send and check.
    PRIMARY KEY (session_id, phone)
);

-- The sweeper deletes finished verifications in batches ordered by expiry.
CREATE INDEX verifications_expires_at_idx ON verifications (expires_at);

-- Small named values the daemons share, such as the secret that keys code MACs.
CREATE TABLE verifyd_meta (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);

-- The expiry a session gets when it is used at `now()`, from its policy and the operator's
-- (current, not creation-time) settings: `now + idle`, capped at `created_at + max_lifetime`
-- when a cap is set. Kind 3 (never) has no idle time, so it gets exactly the cap, or NULL
-- without one; LEAST ignores NULL arguments, which is what makes one expression cover all four.
-- Kept here so that every statement in the store applies the same formula.
CREATE FUNCTION verifyd_session_expiry(
    kind         SMALLINT,
    idle_secs    INTEGER,
    created_at   TIMESTAMPTZ,
    default_age  BIGINT,
    max_lifetime BIGINT
) RETURNS TIMESTAMPTZ
LANGUAGE sql STABLE
AS $$
    SELECT LEAST(
        now() + make_interval(secs => CASE kind WHEN 1 THEN idle_secs
                                                WHEN 3 THEN NULL
                                                ELSE default_age END),
        created_at + make_interval(secs => max_lifetime)
    )
$$;
