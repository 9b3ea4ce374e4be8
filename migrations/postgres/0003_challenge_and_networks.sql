-- verifyd schema, version 3: the send asks for a solved challenge when its rule says so, takes
-- soft quotas (a challenge passes them) beside hard ones, and creates a browser's first session
-- only when the send is accepted; the check counts wrong codes per (number, client network)
-- beside the per-number count. The same rules run on SQLite in crate::store::sqlite.

-- Creates the counters named by the arrays that do not exist yet (as ended windows) and locks
-- them all in (scope, key) order, so that concurrent callers never deadlock.
CREATE FUNCTION verifyd_lock_quotas(p_scopes TEXT[], p_keys TEXT[])
RETURNS void
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
END
$$;

-- Whether a nearly full counter makes a send suspicious: the client's address or network at
-- three quarters of its limit, the deployment's hourly budget past half. The same rule as
-- crate::quota::Scope::suspicious_at.
CREATE FUNCTION verifyd_suspicious_at(p_scope TEXT, p_count INTEGER, p_limit INTEGER)
RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_scope IN ('ip_sends', 'prefix_sends') THEN p_count::bigint * 4 >= p_limit::bigint * 3
        WHEN p_scope = 'global' THEN p_count::bigint * 2 > p_limit::bigint
        ELSE false
    END
$$;

DROP FUNCTION verifyd_start_send(BIGINT, TEXT, BYTEA, FLOAT8, FLOAT8, TEXT[], TEXT[], INTEGER[],
                                 FLOAT8[], TEXT, FLOAT8, INTEGER, FLOAT8);

-- A send. After the verification's own rules: a tripped breaker refuses (`breaker`) unless
-- `p_on_trip`; a full hard quota refuses (`quota`); then, unless `p_passed`, a challenge is
-- required (`challenge`) when `p_always`, when the breaker is tripped, when `p_suspicious` and
-- a counter is near its limit, or when a soft quota is full; then every quota is taken and the
-- code recorded (`issued`). With `p_new_key`, `p_session` is a reserved id and the session is
-- created here, only on `issued`: refused sends of cookieless browsers write no session.
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
    p_soft_scopes     TEXT[],
    p_soft_keys       TEXT[],
    p_soft_limits     INTEGER[],
    p_soft_windows    FLOAT8[],
    p_country         TEXT,
    p_pump_window     FLOAT8,
    p_pump_sample     INTEGER,
    p_pump_conversion FLOAT8,
    p_passed          BOOLEAN,
    p_always          BOOLEAN,
    p_suspicious      BOOLEAN,
    p_on_trip         BOOLEAN,
    p_new_key         BYTEA,
    p_expiry_kind     SMALLINT,
    p_idle_secs       INTEGER,
    p_default_age     BIGINT,
    p_max_lifetime    BIGINT,
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
    v_tripped   BOOLEAN := false;
    v_scopes    TEXT[] := coalesce(p_scopes, '{}') || coalesce(p_soft_scopes, '{}');
    v_keys      TEXT[] := coalesce(p_keys, '{}') || coalesce(p_soft_keys, '{}');
    v_windows   FLOAT8[] := coalesce(p_windows, '{}') || coalesce(p_soft_windows, '{}');
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
        IF v_tripped AND NOT p_on_trip THEN
            o_outcome := 'breaker';
            RETURN;
        END IF;
        o_retry_at := NULL;
    END IF;
    PERFORM verifyd_lock_quotas(v_scopes, v_keys);
    o_now := clock_timestamp();
    SELECT c.scope, c.expires_at INTO o_refused, o_retry_at
    FROM quota_counters c
        JOIN unnest(p_scopes, p_keys, p_limits) AS q (s, k, l) ON c.scope = q.s AND c.key = q.k
    WHERE c.expires_at > now() AND c.count >= q.l
    ORDER BY c.expires_at DESC, c.scope COLLATE "C", c.key COLLATE "C"
    LIMIT 1;
    IF o_refused IS NOT NULL THEN
        o_outcome := 'quota';
        RETURN;
    END IF;
    IF NOT p_passed AND (
        p_always
        OR v_tripped
        OR (p_suspicious AND EXISTS (
            SELECT 1 FROM quota_counters c
                JOIN unnest(p_scopes || p_soft_scopes, p_keys || p_soft_keys,
                            p_limits || p_soft_limits) AS q (s, k, l)
                    ON c.scope = q.s AND c.key = q.k
            WHERE c.expires_at > now() AND verifyd_suspicious_at(c.scope, c.count, q.l)))
        OR EXISTS (
            SELECT 1 FROM quota_counters c
                JOIN unnest(p_soft_scopes, p_soft_keys, p_soft_limits) AS q (s, k, l)
                    ON c.scope = q.s AND c.key = q.k
            WHERE c.expires_at > now() AND c.count >= q.l))
    THEN
        o_outcome := 'challenge';
        RETURN;
    END IF;
    UPDATE quota_counters c
    SET count = CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END,
        expires_at = CASE WHEN c.expires_at > now() THEN c.expires_at
                          ELSE now() + make_interval(secs => q.w) END
    FROM unnest(v_scopes, v_keys, v_windows) AS q (s, k, w)
    WHERE c.scope = q.s AND c.key = q.k;
    IF p_new_key IS NOT NULL THEN
        INSERT INTO sessions
            (id, key_hash, data, expiry_kind, idle_secs, created_at, touched_at, expires_at)
        OVERRIDING SYSTEM VALUE
        VALUES (p_session, p_new_key, '{}', p_expiry_kind, p_idle_secs, now(), now(),
                verifyd_session_expiry(p_expiry_kind, p_idle_secs, now(), p_default_age,
                                       p_max_lifetime));
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

DROP FUNCTION verifyd_check(BIGINT, TEXT, BYTEA, INTEGER, BYTEA, JSONB, BIGINT, BIGINT, TEXT[],
                            TEXT[], INTEGER[], FLOAT8[], INTEGER, FLOAT8, FLOAT8, TEXT, FLOAT8);

-- A wrong code counted against a failure counter: a window that is over starts afresh, and
-- reaching `p_max` (when positive) locks for `p_lockout` from now.
CREATE FUNCTION verifyd_count_failure(
    p_scope   TEXT,
    p_key     TEXT,
    p_max     INTEGER,
    p_window  FLOAT8,
    p_lockout FLOAT8
)
RETURNS void
LANGUAGE sql AS $$
    UPDATE quota_counters c
    SET count = CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END,
        expires_at = CASE
            WHEN p_max > 0
                 AND (CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END) >= p_max
                THEN greatest(c.expires_at, now() + make_interval(secs => p_lockout))
            WHEN c.expires_at > now() THEN c.expires_at
            ELSE now() + make_interval(secs => p_window) END
    WHERE c.scope = p_scope AND c.key = p_key
$$;

-- A check: the quotas, the number's lock-outs, then the version 1 rules. Outcomes: approved
-- (with the session's new row), wrong, exhausted, expired, not_found, quota, locked. Wrong
-- codes count against the number (`phone_failed_checks`, limit `p_fail_max`) and, for a
-- browser (`p_net` not NULL), against the number seen from the client's network
-- (`phone_net_failed_checks`, key "<phone> <net>", limit `p_net_fail_max`); either lock
-- refuses. Every path past the quotas writes each of these counters twice — an upsert that
-- locks and reads it (an insert for a counter never seen, an update otherwise: one row write
-- either way), then the count — so the database work of a check does not depend on the
-- number's history elsewhere, and a check for a code that does not exist costs what a wrong
-- one costs.
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
    p_net             TEXT,
    p_net_fail_max    INTEGER,
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
    r_ver     verifications%ROWTYPE;
    r_fail    quota_counters%ROWTYPE;
    r_net     quota_counters%ROWTYPE;
    v_net_key TEXT := p_phone || ' ' || p_net;
    v_known   BOOLEAN;
    v_until   TIMESTAMPTZ;
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
    -- Locked in (scope, key) order: 'phone_failed_checks' < 'phone_net_failed_checks'.
    INSERT INTO quota_counters AS c (scope, key, count, expires_at)
    VALUES ('phone_failed_checks', p_phone, 0, now())
    ON CONFLICT (scope, key) DO UPDATE SET count = c.count
    RETURNING * INTO r_fail;
    IF p_net IS NOT NULL THEN
        INSERT INTO quota_counters AS c (scope, key, count, expires_at)
        VALUES ('phone_net_failed_checks', v_net_key, 0, now())
        ON CONFLICT (scope, key) DO UPDATE SET count = c.count
        RETURNING * INTO r_net;
    END IF;
    o_now := clock_timestamp();
    SELECT * INTO r_ver FROM verifications
    WHERE session_id = p_session AND phone = p_phone
    FOR UPDATE;
    v_known := FOUND AND r_ver.state <> 1 AND EXISTS (
        SELECT 1 FROM sessions s
        WHERE s.id = p_session AND (s.expires_at IS NULL OR s.expires_at > now()));
    IF p_fail_max > 0 AND r_fail.expires_at > now() AND r_fail.count >= p_fail_max THEN
        v_until := r_fail.expires_at;
    END IF;
    IF p_net IS NOT NULL AND p_net_fail_max > 0 AND r_net.expires_at > now()
       AND r_net.count >= p_net_fail_max THEN
        v_until := greatest(v_until, r_net.expires_at);
    END IF;
    IF NOT v_known THEN
        o_outcome := 'not_found';
    ELSIF r_ver.expires_at <= now() THEN
        o_outcome := 'expired';
    ELSIF r_ver.state = 2 THEN
        o_outcome := 'exhausted';
    ELSIF v_until IS NOT NULL THEN
        o_outcome := 'locked';
        o_retry_at := v_until;
    END IF;
    IF o_outcome IS NOT NULL THEN
        -- The writes a wrong code makes, without their effect.
        UPDATE quota_counters SET count = count
        WHERE scope = 'phone_failed_checks' AND key = p_phone;
        IF p_net IS NOT NULL THEN
            UPDATE quota_counters SET count = count
            WHERE scope = 'phone_net_failed_checks' AND key = v_net_key;
        END IF;
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
    PERFORM verifyd_count_failure('phone_failed_checks', p_phone, p_fail_max, p_fail_window,
                                  p_lockout);
    IF p_net IS NOT NULL THEN
        PERFORM verifyd_count_failure('phone_net_failed_checks', v_net_key, p_net_fail_max,
                                      p_fail_window, p_lockout);
    END IF;
    o_outcome := CASE WHEN o_attempts >= p_max_attempts THEN 'exhausted' ELSE 'wrong' END;
END
$$;
