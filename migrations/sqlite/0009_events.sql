-- verifyd embedded schema, version 9: the transactional outbox behind signed webhooks
-- (crate::events), as in migrations/postgres/0009_events.sql: triggers write each event in the
-- transaction of the change it reports. Times are Unix milliseconds.

-- Whether anybody consumes events: a daemon with endpoints keeps `record_until` in the future.
-- While it is in the past, every trigger's WHEN clause is false and nothing is written.
CREATE TABLE outbox_state (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    record_until INTEGER NOT NULL
);

-- One row while events are being recorded; the triggers' WHEN clauses ask it.
CREATE VIEW outbox_recording AS
    SELECT 1 FROM outbox_state
    WHERE id = 1 AND record_until > CAST(unixepoch('subsec') * 1000 AS INTEGER);

-- See the PostgreSQL table for what each column is for.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT    NOT NULL UNIQUE DEFAULT ('evt_' || lower(hex(randomblob(16)))),
    type       TEXT    NOT NULL,
    data       TEXT    NOT NULL,
    created_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    retry_from INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    -- A JSON array of the endpoint names that already answered 2xx.
    done       TEXT    NOT NULL DEFAULT '[]',
    dead_at    INTEGER NULL,
    last_error TEXT    NULL
);

CREATE INDEX outbox_due ON outbox (next_at) WHERE dead_at IS NULL;

-- The verification triggers mirror the PostgreSQL function's IF chain: a send (new row, or a
-- later `sent_at`) first, else an approval, else a wrong attempt.
CREATE TRIGGER verifications_sent_new AFTER INSERT ON verifications
WHEN EXISTS (SELECT 1 FROM outbox_recording)
BEGIN
    INSERT INTO outbox (type, data) VALUES ('verification.sent', json_object(
        'session_id', NEW.session_id, 'phone', NEW.phone, 'attempts', NEW.attempts,
        'expires_at', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.expires_at / 1000.0, 'unixepoch'),
        'resend', json('false')));
END;

CREATE TRIGGER verifications_sent_again AFTER UPDATE ON verifications
WHEN NEW.sent_at > OLD.sent_at AND EXISTS (SELECT 1 FROM outbox_recording)
BEGIN
    INSERT INTO outbox (type, data)
    SELECT 'verification.expired', json_object(
        'session_id', OLD.session_id, 'phone', OLD.phone, 'attempts', OLD.attempts,
        'expires_at', strftime('%Y-%m-%dT%H:%M:%fZ', OLD.expires_at / 1000.0, 'unixepoch'))
    WHERE OLD.state = 0 AND OLD.expires_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER);
    INSERT INTO outbox (type, data) VALUES ('verification.sent', json_object(
        'session_id', NEW.session_id, 'phone', NEW.phone, 'attempts', NEW.attempts,
        'expires_at', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.expires_at / 1000.0, 'unixepoch'),
        'resend', json(CASE WHEN OLD.state = 0
                             AND OLD.expires_at > CAST(unixepoch('subsec') * 1000 AS INTEGER)
                            THEN 'true' ELSE 'false' END)));
END;

CREATE TRIGGER verifications_checked AFTER UPDATE ON verifications
WHEN NOT NEW.sent_at > OLD.sent_at
     AND ((NEW.state = 1 AND OLD.state <> 1) OR NEW.attempts > OLD.attempts)
     AND EXISTS (SELECT 1 FROM outbox_recording)
BEGIN
    INSERT INTO outbox (type, data) VALUES (
        CASE WHEN NEW.state = 1 AND OLD.state <> 1 THEN 'verification.approved'
             WHEN NEW.state = 2 THEN 'verification.max_attempts'
             ELSE 'verification.failed' END,
        json_object(
            'session_id', NEW.session_id, 'phone', NEW.phone, 'attempts', NEW.attempts,
            'expires_at', strftime('%Y-%m-%dT%H:%M:%fZ', NEW.expires_at / 1000.0, 'unixepoch')));
END;

CREATE TRIGGER verifications_expired AFTER DELETE ON verifications
WHEN OLD.state = 0 AND OLD.expires_at <= CAST(unixepoch('subsec') * 1000 AS INTEGER)
     AND EXISTS (SELECT 1 FROM outbox_recording)
BEGIN
    INSERT INTO outbox (type, data) VALUES ('verification.expired', json_object(
        'session_id', OLD.session_id, 'phone', OLD.phone, 'attempts', OLD.attempts,
        'expires_at', strftime('%Y-%m-%dT%H:%M:%fZ', OLD.expires_at / 1000.0, 'unixepoch')));
END;

CREATE TRIGGER pumping_tripped_new AFTER INSERT ON pumping
WHEN NEW.tripped AND EXISTS (SELECT 1 FROM outbox_recording)
BEGIN
    INSERT INTO outbox (type, data) VALUES ('pumping.tripped', json_object(
        'country', NEW.country, 'sends', NEW.sends, 'approvals', NEW.approvals));
END;

CREATE TRIGGER pumping_changed AFTER UPDATE ON pumping
WHEN NEW.tripped <> OLD.tripped AND EXISTS (SELECT 1 FROM outbox_recording)
BEGIN
    INSERT INTO outbox (type, data) VALUES (
        CASE WHEN NEW.tripped THEN 'pumping.tripped' ELSE 'pumping.reset' END,
        json_object('country', NEW.country, 'sends', NEW.sends, 'approvals', NEW.approvals));
END;

CREATE TRIGGER deliveries_changed AFTER UPDATE ON deliveries
WHEN NEW.state <> OLD.state AND EXISTS (SELECT 1 FROM outbox_recording)
BEGIN
    INSERT INTO outbox (type, data) VALUES ('delivery.updated', json_object(
        'delivery_id', NEW.id, 'session_id', NEW.session_id, 'provider', NEW.provider,
        'country', NEW.country,
        'state', CASE NEW.state WHEN 0 THEN 'queued' WHEN 1 THEN 'sent'
                                WHEN 2 THEN 'delivered' ELSE 'failed' END,
        'error_code', NEW.error_code));
END;
