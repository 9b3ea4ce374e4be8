-- verifyd schema, version 2: abuse limits (quota counters, the SMS-pumping breaker) and
-- idempotency records. The send and the check each become one function call, so that the
-- verification's own rules and every limit are decided in one transaction and one round trip.

-- One row per (scope, key): events counted in the window that ends at `expires_at`. A window
-- starts at the first event after the previous one ended. Refused requests create a row with
-- count 0 that expires at once; the sweeper removes ended windows along the index.
CREATE TABLE quota_counters (
    scope      TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    count      INTEGER     NOT NULL CHECK (count >= 0),
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE INDEX quota_counters_expires_at_idx ON quota_counters (expires_at);

-- The pumping breaker: sends and approvals per country calling code in the current window.
CREATE TABLE pumping (
    country    TEXT        PRIMARY KEY,
    sends      INTEGER     NOT NULL CHECK (sends >= 0),
    approvals  INTEGER     NOT NULL CHECK (approvals >= 0),
    tripped    BOOLEAN     NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

CREATE INDEX pumping_expires_at_idx ON pumping (expires_at);

-- `Idempotency-Key` records: `owner` is "s:<session id>" or "k:<API key name>"; `fingerprint`
-- the SHA-256 of the request; `status` NULL while the first request is still running;
-- `headers` the response headers a replay repeats, as a JSON array of [name, value] pairs.
CREATE TABLE idempotency_keys (
    owner       TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    fingerprint BYTEA       NOT NULL,
    status      SMALLINT    NULL,
    body        TEXT        NULL,
    headers     TEXT        NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner, key)
);

CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- Takes one unit from every counter named by the arrays (same length, no duplicate pair), or
-- from none: rows are locked in (scope, key) order, so concurrent callers never deadlock, and
-- the first full counter (the one that frees up last) is returned as `refused` with its end.
CREATE FUNCTION verifyd_take_quotas(
    p_scopes  TEXT[],
    p_keys    TEXT[],
    p_limits  INTEGER[],
    p_windows FLOAT8[],
    OUT o_refused  TEXT,
    OUT o_retry_at TIMESTAMPTZ
)
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(cardinality(p_scopes), 0) = 0 THEN
        RETURN;
    END IF;
    INSERT INTO quota_counters (scope, key, count, expires_at)
    SELECT q.s, q.k, 0, now() FROM unnest(p_scopes, p_keys) AS q (s, k) ORDER BY q.s, q.k
    ON CONFLICT (scope, key) DO NOTHING;
    PERFORM 1 FROM quota_counters c
        JOIN unnest(p_scopes, p_keys) AS q (s, k) ON c.scope = q.s AND c.key = q.k
        ORDER BY c.scope, c.key
        FOR UPDATE OF c;
    SELECT c.scope, c.expires_at INTO o_refused, o_retry_at
    FROM quota_counters c
        JOIN unnest(p_scopes, p_keys, p_limits) AS q (s, k, l) ON c.scope = q.s AND c.key = q.k
    WHERE c.expires_at > now() AND c.count >= q.l
    ORDER BY c.expires_at DESC
    LIMIT 1;
    IF o_refused IS NOT NULL THEN
        RETURN;
    END IF;
    UPDATE quota_counters c
    SET count = CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END,
        expires_at = CASE WHEN c.expires_at > now() THEN c.expires_at
                          ELSE now() + make_interval(secs => q.w) END
    FROM unnest(p_scopes, p_keys, p_windows) AS q (s, k, w)
    WHERE c.scope = q.s AND c.key = q.k;
END
$$;

-- A send: the resend rules of version 1, the pumping breaker, the quotas, then the code.
-- Outcomes: issued, too_soon, exhausted, breaker, quota (with o_refused naming the scope).
-- Sends for one (session, phone) are serialised by a transaction-level advisory lock, since the
-- verification row may not exist yet; the row itself is locked when it does.
CREATE FUNCTION verifyd_start_send(
    p_session         BIGINT,
    p_phone           TEXT,
    p_mac             BYTEA,
    p_ttl             FLOAT8,
    p_resend          FLOAT8,
    p_scopes          TEXT[],
    p_keys            TEXT[],
    p_limits          INTEGER[],
    p_windows         FLOAT8[],
    p_country         TEXT,
    p_pump_window     FLOAT8,
    p_pump_sample     INTEGER,
    p_pump_conversion FLOAT8,
    OUT o_outcome  TEXT,
    OUT o_attempts INTEGER,
    OUT o_resend   BOOLEAN,
    OUT o_retry_at TIMESTAMPTZ,
    OUT o_refused  TEXT,
    OUT o_tripped  BOOLEAN,
    OUT o_now      TIMESTAMPTZ
)
LANGUAGE plpgsql AS $$
DECLARE
    r_ver       verifications%ROWTYPE;
    v_live      BOOLEAN;
    v_sends     INTEGER;
    v_approvals INTEGER;
    v_tripped   BOOLEAN;
BEGIN
    o_tripped := false;
    PERFORM pg_advisory_xact_lock(hashtextextended(p_session::text || ' ' || p_phone, 0));
    -- After waiting for the lock, the transaction's now() may predate the winner's sent_at:
    -- waits are reported from the current clock so that they never exceed the cooldown.
    o_now := clock_timestamp();
    SELECT * INTO r_ver FROM verifications
    WHERE session_id = p_session AND phone = p_phone
    FOR UPDATE;
    v_live := FOUND AND r_ver.state <> 1 AND r_ver.expires_at > now();
    IF v_live AND r_ver.state = 2 THEN
        o_outcome := 'exhausted';
        o_retry_at := r_ver.expires_at;
        RETURN;
    END IF;
    IF v_live AND r_ver.sent_at > now() - make_interval(secs => p_resend) THEN
        o_outcome := 'too_soon';
        o_retry_at := r_ver.sent_at + make_interval(secs => p_resend);
        RETURN;
    END IF;
    -- The breaker's row is created if need be (as an ended window) and locked before it is
    -- read, so the decision and the count below are one step: concurrent sends to a country
    -- queue here, and none passes a breaker that an earlier send has tripped.
    IF p_country IS NOT NULL THEN
        INSERT INTO pumping (country, sends, approvals, tripped, expires_at)
        VALUES (p_country, 0, 0, false, now())
        ON CONFLICT (country) DO NOTHING;
        SELECT p.tripped AND p.expires_at > now(), p.expires_at INTO v_tripped, o_retry_at
        FROM pumping p WHERE p.country = p_country
        FOR UPDATE;
        -- As above: the lock may have been waited for, behind a send that opened the window.
        o_now := clock_timestamp();
        IF v_tripped THEN
            o_outcome := 'breaker';
            RETURN;
        END IF;
        o_retry_at := NULL;
    END IF;
    SELECT q.o_refused, q.o_retry_at INTO o_refused, o_retry_at
    FROM verifyd_take_quotas(p_scopes, p_keys, p_limits, p_windows) q;
    IF o_refused IS NOT NULL THEN
        o_now := clock_timestamp();
        o_outcome := 'quota';
        RETURN;
    END IF;
    o_resend := v_live;
    o_attempts := CASE WHEN v_live THEN r_ver.attempts ELSE 0 END;
    INSERT INTO verifications AS v
        (session_id, phone, code_mac, state, attempts, created_at, sent_at, expires_at)
    VALUES (p_session, p_phone, p_mac, 0, o_attempts, now(), now(),
            now() + make_interval(secs => p_ttl))
    ON CONFLICT (session_id, phone) DO UPDATE SET
        code_mac = excluded.code_mac,
        state = 0,
        attempts = excluded.attempts,
        created_at = CASE WHEN v_live THEN v.created_at ELSE now() END,
        sent_at = now(),
        expires_at = excluded.expires_at;
    IF p_country IS NOT NULL THEN
        INSERT INTO pumping AS p (country, sends, approvals, tripped, expires_at)
        VALUES (p_country, 1, 0, false, now() + make_interval(secs => p_pump_window))
        ON CONFLICT (country) DO UPDATE SET
            sends = CASE WHEN p.expires_at > now() THEN p.sends + 1 ELSE 1 END,
            approvals = CASE WHEN p.expires_at > now() THEN p.approvals ELSE 0 END,
            tripped = p.tripped AND p.expires_at > now(),
            expires_at = CASE WHEN p.expires_at > now() THEN p.expires_at
                              ELSE excluded.expires_at END
        RETURNING p.sends, p.approvals INTO v_sends, v_approvals;
        IF v_sends >= p_pump_sample AND v_approvals < p_pump_conversion * v_sends THEN
            UPDATE pumping SET tripped = true WHERE country = p_country AND NOT tripped;
            o_tripped := FOUND;
        END IF;
    END IF;
    o_outcome := 'issued';
END
$$;

-- A send whose delivery failed: its resend cooldown is lifted (while its code is still the
-- stored one) and what it took is given back — one unit of every quota named by the arrays
-- whose window is still running, and its count in the country's breaker window (which closes
-- again when the send was what tripped it). Rows are locked in the order a send locks them.
CREATE FUNCTION verifyd_abandon_send(
    p_session         BIGINT,
    p_phone           TEXT,
    p_mac             BYTEA,
    p_scopes          TEXT[],
    p_keys            TEXT[],
    p_country         TEXT,
    p_pump_sample     INTEGER,
    p_pump_conversion FLOAT8
)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- The epoch, not `-infinity`, so that `sent_at` still converts to a `SystemTime`.
    UPDATE verifications SET sent_at = 'epoch'
    WHERE session_id = p_session AND phone = p_phone AND code_mac = p_mac;
    IF p_country IS NOT NULL THEN
        UPDATE pumping p
        SET sends = p.sends - 1,
            tripped = p.tripped AND p.sends - 1 >= p_pump_sample
                      AND p.approvals < p_pump_conversion * (p.sends - 1)
        WHERE p.country = p_country AND p.expires_at > now() AND p.sends > 0;
    END IF;
    IF coalesce(cardinality(p_scopes), 0) = 0 THEN
        RETURN;
    END IF;
    PERFORM 1 FROM quota_counters c
        JOIN unnest(p_scopes, p_keys) AS q (s, k) ON c.scope = q.s AND c.key = q.k
        ORDER BY c.scope, c.key
        FOR UPDATE OF c;
    UPDATE quota_counters c
    SET count = c.count - 1
    FROM unnest(p_scopes, p_keys) AS q (s, k)
    WHERE c.scope = q.s AND c.key = q.k AND c.expires_at > now() AND c.count > 0;
END
$$;

-- A check: the quotas, the number's lock-out, then the version 1 rules. Outcomes: approved
-- (with the session's new row), wrong, exhausted, expired, not_found, quota, locked. Every path
-- past the quotas writes the number's failure counter twice — an upsert that locks and reads
-- it (an insert for a number never seen, an update otherwise: one row write either way), then
-- the count — so the database work of a check does not depend on the number's history
-- elsewhere, and a check for a code that does not exist costs what a wrong one costs.
CREATE FUNCTION verifyd_check(
    p_session         BIGINT,
    p_phone           TEXT,
    p_mac             BYTEA,
    p_max_attempts    INTEGER,
    p_new_key         BYTEA,
    p_patch           JSONB,
    p_default_age     BIGINT,
    p_max_lifetime    BIGINT,
    p_scopes          TEXT[],
    p_keys            TEXT[],
    p_limits          INTEGER[],
    p_windows         FLOAT8[],
    p_fail_max        INTEGER,
    p_fail_window     FLOAT8,
    p_lockout         FLOAT8,
    p_country         TEXT,
    p_pump_conversion FLOAT8,
    OUT o_outcome     TEXT,
    OUT o_attempts    INTEGER,
    OUT o_retry_at    TIMESTAMPTZ,
    OUT o_refused     TEXT,
    OUT o_now         TIMESTAMPTZ,
    OUT o_id          BIGINT,
    OUT o_data        JSONB,
    OUT o_expiry_kind SMALLINT,
    OUT o_idle_secs   INTEGER,
    OUT o_created_at  TIMESTAMPTZ,
    OUT o_expires_at  TIMESTAMPTZ
)
LANGUAGE plpgsql AS $$
DECLARE
    r_ver   verifications%ROWTYPE;
    r_fail  quota_counters%ROWTYPE;
    v_known BOOLEAN;
BEGIN
    SELECT q.o_refused, q.o_retry_at INTO o_refused, o_retry_at
    FROM verifyd_take_quotas(p_scopes, p_keys, p_limits, p_windows) q;
    -- Waits are reported from the current clock (a lock may have been waited for behind the
    -- request that opened the window), so that they never exceed the window.
    o_now := clock_timestamp();
    IF o_refused IS NOT NULL THEN
        o_outcome := 'quota';
        RETURN;
    END IF;
    INSERT INTO quota_counters AS c (scope, key, count, expires_at)
    VALUES ('phone_failed_checks', p_phone, 0, now())
    ON CONFLICT (scope, key) DO UPDATE SET count = c.count
    RETURNING * INTO r_fail;
    o_now := clock_timestamp();
    SELECT * INTO r_ver FROM verifications
    WHERE session_id = p_session AND phone = p_phone
    FOR UPDATE;
    v_known := FOUND AND r_ver.state <> 1 AND EXISTS (
        SELECT 1 FROM sessions s
        WHERE s.id = p_session AND (s.expires_at IS NULL OR s.expires_at > now()));
    IF NOT v_known THEN
        o_outcome := 'not_found';
    ELSIF r_ver.expires_at <= now() THEN
        o_outcome := 'expired';
    ELSIF r_ver.state = 2 THEN
        o_outcome := 'exhausted';
    ELSIF p_fail_max > 0 AND r_fail.expires_at > now() AND r_fail.count >= p_fail_max THEN
        o_outcome := 'locked';
        o_retry_at := r_fail.expires_at;
    END IF;
    IF o_outcome IS NOT NULL THEN
        -- The write a wrong code makes, without its effect.
        UPDATE quota_counters SET count = count
        WHERE scope = 'phone_failed_checks' AND key = p_phone;
        RETURN;
    END IF;
    IF r_ver.code_mac = p_mac THEN
        UPDATE verifications SET state = 1 WHERE session_id = p_session AND phone = p_phone;
        UPDATE sessions s
        SET key_hash = p_new_key,
            data = s.data || p_patch,
            touched_at = now(),
            expires_at = verifyd_session_expiry(s.expiry_kind, s.idle_secs, s.created_at,
                                                p_default_age, p_max_lifetime)
        WHERE s.id = p_session
        RETURNING s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at
        INTO o_id, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at;
        -- Last, after the session: a send takes the breaker row after its verification row
        -- too, and the quota counters it takes while holding it are ones checks never take.
        IF p_country IS NOT NULL THEN
            UPDATE pumping p
            SET approvals = p.approvals + 1,
                tripped = p.tripped AND p.approvals + 1 < p_pump_conversion * p.sends
            WHERE p.country = p_country AND p.expires_at > now();
        END IF;
        o_outcome := 'approved';
        RETURN;
    END IF;
    o_attempts := r_ver.attempts + 1;
    UPDATE verifications
    SET attempts = o_attempts,
        state = CASE WHEN o_attempts >= p_max_attempts THEN 2 ELSE 0 END
    WHERE session_id = p_session AND phone = p_phone;
    UPDATE quota_counters c
    SET count = CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END,
        expires_at = CASE
            WHEN p_fail_max > 0
                 AND (CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END) >= p_fail_max
                THEN greatest(c.expires_at, now() + make_interval(secs => p_lockout))
            WHEN c.expires_at > now() THEN c.expires_at
            ELSE now() + make_interval(secs => p_fail_window) END
    WHERE c.scope = 'phone_failed_checks' AND c.key = p_phone;
    o_outcome := CASE WHEN o_attempts >= p_max_attempts THEN 'exhausted' ELSE 'wrong' END;
END
$$;
