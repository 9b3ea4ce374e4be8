-- verifyd embedded schema, version 2: the tables of migrations/postgres/0002_abuse_limits.sql.
-- The rules themselves live in crate::store::sqlite (one IMMEDIATE transaction per send or
-- check); times are Unix milliseconds.

-- Events per (scope, key) in the window ending at `expires_at`.
CREATE TABLE quota_counters (
    scope      TEXT    NOT NULL,
    key        TEXT    NOT NULL,
    count      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX quota_counters_expires_at ON quota_counters (expires_at);

-- Sends and approvals per country calling code in the current breaker window.
CREATE TABLE pumping (
    country    TEXT    PRIMARY KEY,
    sends      INTEGER NOT NULL,
    approvals  INTEGER NOT NULL,
    tripped    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE INDEX pumping_expires_at ON pumping (expires_at);

-- `Idempotency-Key` records; `status` NULL while the first request runs; `headers` a JSON
-- array of [name, value] pairs a replay repeats.
CREATE TABLE idempotency_keys (
    owner       TEXT    NOT NULL,
    key         TEXT    NOT NULL,
    fingerprint BLOB    NOT NULL,
    status      INTEGER NULL,
    body        TEXT    NULL,
    headers     TEXT    NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, key)
);

CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
