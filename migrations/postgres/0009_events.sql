-- verifyd schema, version 9: the transactional outbox behind signed webhooks (crate::events).
-- Triggers write an event in the same transaction as the change it reports, so the send and
-- check functions stay as they are, and an event exists exactly when its change committed. The
-- same tables and triggers exist on SQLite (migrations/sqlite/0009_events.sql).

-- Whether anybody consumes events: a daemon with endpoints keeps `record_until` in the future
-- (crate::events::worker). While it is in the past, every trigger below is skipped by its WHEN
-- clause before its function is called. The triggers themselves are created only by the first
-- daemon with endpoints (verifyd_events_keepalive), so a database that never had webhooks pays
-- nothing at all on the send and check path.
CREATE TABLE outbox_state (
    id           SMALLINT    PRIMARY KEY CHECK (id = 1),
    record_until TIMESTAMPTZ NOT NULL
);

-- One row per event until every configured endpoint has it (then it is deleted) or its retry
-- period is over (then `dead_at` is set and it waits for `verifyd events redrive`).
CREATE TABLE outbox (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The `webhook-id`: the same on every attempt, so receivers can drop repeats.
    id         TEXT        NOT NULL UNIQUE
                           DEFAULT 'evt_' || replace(gen_random_uuid()::text, '-', ''),
    type       TEXT        NOT NULL,
    -- The facts as stored, phone numbers in full: masking depends on the endpoint, so it is
    -- applied when the payload is built for it.
    data       JSONB       NOT NULL,
    -- Close to the commit (the clock, not the transaction's start): latency counts from here.
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- Start of the retry period; a redrive starts a new one.
    retry_from TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    attempts   INTEGER     NOT NULL DEFAULT 0,
    -- Due from here. A worker that claims the row moves it past its lease, so a crashed
    -- worker's claim falls due again by itself.
    next_at    TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    -- Endpoint names that already answered 2xx; retries go to the others only.
    done       TEXT[]      NOT NULL DEFAULT '{}',
    dead_at    TIMESTAMPTZ NULL,
    last_error TEXT        NULL
);

CREATE INDEX outbox_due_idx ON outbox (next_at) WHERE dead_at IS NULL;

CREATE FUNCTION verifyd_events_on() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM outbox_state WHERE id = 1 AND record_until > now())
$$;

-- Times inside payloads, in the format the SQLite triggers write too.
CREATE FUNCTION verifyd_event_time(t TIMESTAMPTZ) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE FUNCTION verifyd_verification_data(v verifications) RETURNS JSONB
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('session_id', v.session_id, 'phone', v.phone,
                              'attempts', v.attempts,
                              'expires_at', verifyd_event_time(v.expires_at))
$$;

-- Names the states the same way the SQLite triggers do: a code that died unused is reported
-- when it is removed (by the sweeper) or replaced by a new send, whichever comes first.
CREATE FUNCTION verifyd_verification_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.state = 0 AND OLD.expires_at <= now() THEN
            INSERT INTO outbox (type, data)
            VALUES ('verification.expired', verifyd_verification_data(OLD));
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.sent_at > OLD.sent_at THEN
        IF TG_OP = 'UPDATE' AND OLD.state = 0 AND OLD.expires_at <= now() THEN
            INSERT INTO outbox (type, data)
            VALUES ('verification.expired', verifyd_verification_data(OLD));
        END IF;
        INSERT INTO outbox (type, data)
        VALUES ('verification.sent', verifyd_verification_data(NEW) || jsonb_build_object(
            'resend', TG_OP = 'UPDATE' AND OLD.state = 0 AND OLD.expires_at > now()));
    ELSIF NEW.state = 1 AND OLD.state <> 1 THEN
        INSERT INTO outbox (type, data)
        VALUES ('verification.approved', verifyd_verification_data(NEW));
    ELSIF NEW.attempts > OLD.attempts THEN
        INSERT INTO outbox (type, data)
        VALUES (CASE WHEN NEW.state = 2 THEN 'verification.max_attempts'
                     ELSE 'verification.failed' END,
                verifyd_verification_data(NEW));
    END IF;
    RETURN NULL;
END
$$;


CREATE FUNCTION verifyd_pumping_events() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    was_tripped BOOLEAN := TG_OP = 'UPDATE' AND OLD.tripped;
BEGIN
    IF NEW.tripped <> was_tripped THEN
        INSERT INTO outbox (type, data)
        VALUES (CASE WHEN NEW.tripped THEN 'pumping.tripped' ELSE 'pumping.reset' END,
                jsonb_build_object('country', NEW.country, 'sends', NEW.sends,
                                   'approvals', NEW.approvals));
    END IF;
    RETURN NULL;
END
$$;


CREATE FUNCTION verifyd_delivery_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (type, data)
    VALUES ('delivery.updated', jsonb_build_object(
        'delivery_id', NEW.id, 'session_id', NEW.session_id, 'provider', NEW.provider,
        'country', NEW.country,
        'state', CASE NEW.state WHEN 0 THEN 'queued' WHEN 1 THEN 'sent'
                                WHEN 2 THEN 'delivered' ELSE 'failed' END,
        'error_code', NEW.error_code));
    RETURN NULL;
END
$$;

-- Turns recording on for `p_secs` from now, creating the triggers the first time. The advisory
-- lock (MIGRATE_LOCK of store/postgres.rs: this is schema work) keeps two daemons starting
-- together from both creating them.
CREATE FUNCTION verifyd_events_keepalive(p_secs FLOAT8) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'deliveries_events'
                                              AND tgrelid = 'deliveries'::regclass) THEN
        PERFORM pg_advisory_xact_lock(8531350866139636737);
        IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'deliveries_events'
                                                  AND tgrelid = 'deliveries'::regclass) THEN
            CREATE TRIGGER verifications_events
            AFTER INSERT OR UPDATE OR DELETE ON verifications
            FOR EACH ROW WHEN (verifyd_events_on())
            EXECUTE FUNCTION verifyd_verification_events();
            CREATE TRIGGER pumping_events
            AFTER INSERT OR UPDATE ON pumping
            FOR EACH ROW WHEN (verifyd_events_on())
            EXECUTE FUNCTION verifyd_pumping_events();
            -- Last: its presence says all three exist.
            CREATE TRIGGER deliveries_events
            AFTER UPDATE ON deliveries
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state AND verifyd_events_on())
            EXECUTE FUNCTION verifyd_delivery_events();
        END IF;
    END IF;
    INSERT INTO outbox_state (id, record_until)
    VALUES (1, now() + make_interval(secs => p_secs))
    ON CONFLICT (id) DO UPDATE SET record_until = greatest(outbox_state.record_until,
                                                           excluded.record_until);
END
$$;
