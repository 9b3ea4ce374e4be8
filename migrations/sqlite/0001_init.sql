-- verifyd embedded schema, version 1: the same tables as migrations/postgres/0001_init.sql.
-- SQLite has no timestamp type, so every time is an INTEGER of Unix milliseconds
-- (crate::time::to_millis / from_millis); NULL `expires_at` means "never expires".

-- One row per session. The key itself is never stored, only its SHA-256, so a copy of this
-- file holds no usable session.
CREATE TABLE sessions (
    -- Stable internal id: survives key cycling and binds verifications to the session.
    id           INTEGER PRIMARY KEY,
    key_hash     BLOB    NOT NULL UNIQUE,
    -- The session data: always a JSON object.
    data         TEXT    NOT NULL DEFAULT '{}',
    -- 0 default, 1 idle (idle_secs set), 2 browser, 3 never (crate::session::Expiry::to_parts).
    expiry_kind  INTEGER NOT NULL,
    idle_secs    INTEGER NULL,
    created_at   INTEGER NOT NULL,
    -- When the expiry last slid; reads slide again only after `refresh_interval`.
    touched_at   INTEGER NOT NULL,
    expires_at   INTEGER NULL
);

-- The sweeper deletes along this index in bounded batches.
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- One row per (session, phone): the live code's MAC and the attempts used against it.
CREATE TABLE verifications (
    session_id  INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- E.164 text, as crate::phone::PhoneNumber::as_str gives it.
    phone       TEXT    NOT NULL,
    -- HMAC of the code (crate::code::CodeMac); the code itself is never stored.
    code_mac    BLOB    NOT NULL,
    -- 0 pending, 1 approved, 2 exhausted.
    state       INTEGER NOT NULL,
    -- Wrong attempts, carried across resends of the same verification.
    attempts    INTEGER NOT NULL,
    -- Start of the verification; `sent_at` is the latest send (the resend cooldown's origin).
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER NOT NULL,
    -- End of the current code's lifetime.
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (session_id, phone)
);

CREATE INDEX verifications_expires_at ON verifications (expires_at);

-- Small named values shared by every daemon on this file (the server secret that keys code MACs).
CREATE TABLE verifyd_meta (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);
