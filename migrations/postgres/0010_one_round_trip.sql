-- verifyd schema, version 10: a send and a check are one statement each (issue 13 item 2).
-- Until version 9 the daemon learned the session's id first (the cookie's TOUCH, or a reserved id
-- for a browser without one), because the code's MAC was keyed by that id, and a same-code
-- resend cost two more statements around the send (find the live code, then bind its nonce).
-- Now the MAC names no session (crate::code::CodeKey::mac, docs/codes.md), so the functions take
-- the caller's key hash, resolve and slide the session themselves, create a browser's first
-- session only with an issued code, and decide in the same transaction whether the live code is
-- sent again.

-- Which MAC scheme a row's `code_mac` follows: 1 over the session id (versions 1 to 9), 2 over
-- the phone and code only. Rows of scheme 1 cannot be compared by this version: a check answers
-- them as expired without using an attempt, and the next send replaces their code. The default
-- stays 1: a writer that does not name the scheme is taken for an old one, which fails safe
-- (expired) instead of comparing MACs of different schemes (a wrong attempt).
ALTER TABLE verifications ADD COLUMN mac_scheme SMALLINT NOT NULL DEFAULT 1;

-- The live session of a key hash, its expiry slid when the refresh interval has passed (exactly
-- what the daemon's TOUCH does); `refreshed` says it slid. No row when the key names no live
-- session. PL/pgSQL rather than SQL: a SQL function that cannot be inlined (this one writes)
-- plans its query on every call, PL/pgSQL keeps the plan.
CREATE FUNCTION verifyd_resolve_session(p_key BYTEA, p_default_age BIGINT,
                                        p_max_lifetime BIGINT, p_refresh BIGINT)
RETURNS TABLE (id BIGINT, data JSONB, expiry_kind SMALLINT, idle_secs INTEGER,
               created_at TIMESTAMPTZ, expires_at TIMESTAMPTZ, data_json JSON, version BIGINT,
               refreshed BOOLEAN)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH slid AS (
        UPDATE sessions s
        SET touched_at = now(),
            expires_at = verifyd_session_expiry(s.expiry_kind, s.idle_secs, s.created_at,
                                                p_default_age, p_max_lifetime)
        WHERE s.key_hash = p_key AND (s.expires_at IS NULL OR s.expires_at > now())
          AND s.touched_at <= now() - make_interval(secs => p_refresh)
        RETURNING s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
                  s.data_json, s.version
    )
    SELECT slid.*, true FROM slid
    UNION ALL
    SELECT s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at, s.data_json,
           s.version, false
    FROM sessions s
    WHERE s.key_hash = p_key AND (s.expires_at IS NULL OR s.expires_at > now())
      AND NOT EXISTS (SELECT 1 FROM slid);
END
$$;

-- The old signatures go: a daemon of version 9 or older cannot send or check on this schema (it
-- would write and compare MACs of the old scheme), see docs/operations.md (upgrades).
DROP FUNCTION verifyd_start_send(BIGINT, TEXT, BYTEA, FLOAT8, FLOAT8, INTEGER, TEXT[], TEXT[],
                                 INTEGER[], FLOAT8[], TEXT[], TEXT[], INTEGER[], FLOAT8[], TEXT,
                                 FLOAT8, INTEGER, FLOAT8, BOOLEAN, BOOLEAN, BOOLEAN, BOOLEAN,
                                 BYTEA, SMALLINT, INTEGER, BIGINT, BIGINT);

-- A send, as in version 8, addressed by the caller's key hash `p_key`. The session is resolved
-- first and slid as a read would slide it, whatever the outcome. A key that names no live
-- session: with `p_new_key` a session under that new key is created, with the id the database
-- gives it, only when the code is issued; without, the answer is `no_session` and nothing is
-- written.
--
-- The code: `p_mac` and `p_nonce` are a fresh one the daemon drew. With `p_margin` set (the
-- `same_code` resend mode) a live pending code of the same verification is kept instead when it
-- is of the current MAC scheme, bound to its nonce, valid for `p_margin` more seconds and with
-- at least half a lifetime left before its cap: its life is extended to `p_ttl`, but not past
-- the cap. A fresh code gets the cap `now + p_keep`. `o_nonce` is the nonce in force when the
-- stored code was kept (the daemon derives the code from it again), `o_ttl` the lifetime given.
-- A kept code is always the live code of the verification it was sent for: the decision and the
-- write are one transaction, under the row's lock.
CREATE FUNCTION verifyd_start_send(
    p_key             BYTEA,
    p_new_key         BYTEA,
    p_refresh         BIGINT,
    p_phone           TEXT,
    p_mac             BYTEA,
    p_nonce           BYTEA,
    p_margin          FLOAT8,
    p_keep            FLOAT8,
    p_ttl             FLOAT8,
    p_resend          FLOAT8,
    p_max_attempts    INTEGER,
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
    p_expiry_kind     SMALLINT,
    p_idle_secs       INTEGER,
    p_default_age     BIGINT,
    p_max_lifetime    BIGINT,
    OUT o_outcome     TEXT,
    OUT o_attempts    INTEGER,
    OUT o_resend      BOOLEAN,
    OUT o_retry_at    TIMESTAMPTZ,
    OUT o_refused     TEXT,
    OUT o_tripped     BOOLEAN,
    OUT o_now         TIMESTAMPTZ,
    OUT o_nonce       BYTEA,
    OUT o_ttl         FLOAT8,
    OUT o_created     BOOLEAN,
    OUT o_refreshed   BOOLEAN,
    OUT o_id          BIGINT,
    OUT o_data        JSONB,
    OUT o_expiry_kind SMALLINT,
    OUT o_idle_secs   INTEGER,
    OUT o_created_at  TIMESTAMPTZ,
    OUT o_expires_at  TIMESTAMPTZ,
    OUT o_data_json   JSON,
    OUT o_version     BIGINT
)
-- Generic plans for the statements inside: with the default (`auto`) PostgreSQL re-plans a
-- statement whose parameters are arrays for every call (a custom plan each time), and planning
-- the quota and challenge queries cost more than running them; with generic plans a send runs
-- at about twice the rate (bench/pgbench/send.sql, 32 connections). The GUC holds for the nested
-- helpers too. `verifyd_check` measured no better with it, so it keeps the default.
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    r_ver       verifications%ROWTYPE;
    v_live      BOOLEAN := false;
    v_keep      BOOLEAN := false;
    v_mac       BYTEA := p_mac;
    v_nonce     BYTEA := p_nonce;
    v_keep_til  TIMESTAMPTZ;
    v_sends     INTEGER;
    v_approvals INTEGER;
    v_pump_end  TIMESTAMPTZ;
    v_tripped   BOOLEAN := false;
    v_all_s     TEXT[] := coalesce(p_scopes, '{}') || coalesce(p_soft_scopes, '{}');
    v_all_k     TEXT[] := coalesce(p_keys, '{}') || coalesce(p_soft_keys, '{}');
    v_all_l     INTEGER[] := coalesce(p_limits, '{}') || coalesce(p_soft_limits, '{}');
    v_all_w     FLOAT8[] := coalesce(p_windows, '{}') || coalesce(p_soft_windows, '{}');
    v_hard      INTEGER := coalesce(cardinality(p_scopes), 0);
    v_scopes    TEXT[] := '{}';
    v_keys      TEXT[] := '{}';
    v_windows   FLOAT8[] := '{}';
    v_sh_i      INTEGER[] := '{}';
    v_sh_end    TIMESTAMPTZ[] := '{}';
    v_sh_sum    INTEGER[] := '{}';
    v_end       TIMESTAMPTZ;
    v_counted   BOOLEAN := false;
    i           INTEGER;
BEGIN
    o_tripped := false;
    o_created := false;
    o_refreshed := false;
    SELECT s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
           s.data_json, s.version, s.refreshed
    INTO o_id, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at,
         o_data_json, o_version, o_refreshed
    FROM verifyd_resolve_session(p_key, p_default_age, p_max_lifetime, p_refresh) s;
    -- No row leaves every target NULL.
    o_refreshed := coalesce(o_refreshed, false);
    IF o_id IS NULL AND p_new_key IS NULL THEN
        o_outcome := 'no_session';
        o_now := clock_timestamp();
        RETURN;
    END IF;
    o_now := clock_timestamp();
    -- A session about to be created has no verification yet, and nobody else can name it.
    IF o_id IS NOT NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(o_id::text || ' ' || p_phone, 0));
        -- After waiting for the lock, the transaction's now() may predate the winner's
        -- sent_at: waits are reported from the current clock so that they never exceed the
        -- cooldown.
        o_now := clock_timestamp();
        SELECT * INTO r_ver FROM verifications
        WHERE session_id = o_id AND phone = p_phone
        FOR UPDATE;
        v_live := FOUND AND r_ver.state <> verifyd_approved() AND r_ver.expires_at > now();
    END IF;
    IF v_live AND (r_ver.state = verifyd_exhausted() OR r_ver.attempts >= p_max_attempts) THEN
        o_outcome := 'exhausted';
        o_retry_at := r_ver.expires_at;
        RETURN;
    END IF;
    IF v_live AND r_ver.sent_at > now() - make_interval(secs => p_resend) THEN
        o_outcome := 'too_soon';
        o_retry_at := r_ver.sent_at + make_interval(secs => p_resend);
        RETURN;
    END IF;
    IF p_country IS NOT NULL THEN
        SELECT w.o_end, w.o_tripped INTO v_pump_end, v_tripped
        FROM verifyd_pumping_window(p_country, p_pump_window) w;
        -- A tripped flag refuses before anything is counted (the sends of an attack).
        IF NOT (v_tripped AND NOT p_on_trip) THEN
            SELECT c.o_sends, c.o_approvals INTO v_sends, v_approvals
            FROM verifyd_pumping_count(p_country, v_pump_end, p_pump_sample,
                                       p_pump_conversion) c;
            v_counted := true;
            v_tripped := v_tripped OR verifyd_pumping_trips(v_sends, v_approvals, p_pump_sample,
                                                           p_pump_conversion);
        END IF;
        o_now := clock_timestamp();
        IF v_tripped AND NOT p_on_trip THEN
            IF v_counted THEN
                PERFORM verifyd_pumping_add(p_country, v_pump_end, -1, 0);
                PERFORM verifyd_pumping_flag(p_country, v_pump_end, true);
            END IF;
            o_outcome := 'breaker';
            o_retry_at := v_pump_end;
            RETURN;
        END IF;
    END IF;
    FOR i IN 1 .. coalesce(cardinality(v_all_s), 0) LOOP
        IF verifyd_is_shared(v_all_s[i], v_all_l[i]) THEN
            v_end := verifyd_quota_window(v_all_s[i], v_all_k[i], v_all_w[i]);
            v_sh_i := v_sh_i || i;
            v_sh_end := v_sh_end || v_end;
            v_sh_sum := v_sh_sum || (1 + verifyd_quota_count(v_all_s[i], v_all_k[i], v_end,
                ARRAY[v_all_l[i], v_all_l[i] / 2 + 1, (v_all_l[i]::bigint * 3 + 3) / 4]::integer[]));
        ELSE
            v_scopes := v_scopes || v_all_s[i];
            v_keys := v_keys || v_all_k[i];
            v_windows := v_windows || v_all_w[i];
        END IF;
    END LOOP;
    PERFORM verifyd_lock_quotas(v_scopes, v_keys);
    o_now := clock_timestamp();
    SELECT q.s, q.e INTO o_refused, o_retry_at
    FROM (
        SELECT c.scope AS s, c.key AS k, c.expires_at AS e
        FROM quota_counters c
            JOIN unnest(p_scopes, p_keys, p_limits) AS q (s, k, l)
                ON c.scope = q.s AND c.key = q.k
        WHERE NOT verifyd_is_shared(c.scope, q.l) AND c.expires_at > now() AND c.count >= q.l
        UNION ALL
        SELECT v_all_s[x.i], v_all_k[x.i], x.e
        FROM unnest(v_sh_i, v_sh_end, v_sh_sum) AS x (i, e, n)
        WHERE x.i <= v_hard AND x.n - 1 >= v_all_l[x.i]
    ) AS q
    ORDER BY q.e DESC, q.s COLLATE "C", q.k COLLATE "C"
    LIMIT 1;
    IF o_refused IS NULL AND NOT p_passed AND (
        p_always
        OR v_tripped
        OR (p_suspicious AND (
            EXISTS (
                SELECT 1 FROM quota_counters c
                    JOIN unnest(v_all_s, v_all_k, v_all_l) AS q (s, k, l)
                        ON c.scope = q.s AND c.key = q.k
                WHERE NOT verifyd_is_shared(c.scope, q.l) AND c.expires_at > now()
                  AND verifyd_suspicious_at(c.scope, c.count, q.l))
            OR EXISTS (
                SELECT 1 FROM unnest(v_sh_i, v_sh_sum) AS x (i, n)
                WHERE verifyd_suspicious_at(v_all_s[x.i], x.n - 1, v_all_l[x.i]))))
        OR EXISTS (
            SELECT 1 FROM quota_counters c
                JOIN unnest(p_soft_scopes, p_soft_keys, p_soft_limits) AS q (s, k, l)
                    ON c.scope = q.s AND c.key = q.k
            WHERE NOT verifyd_is_shared(c.scope, q.l) AND c.expires_at > now() AND c.count >= q.l)
        OR EXISTS (
            SELECT 1 FROM unnest(v_sh_i, v_sh_sum) AS x (i, n)
            WHERE x.i > v_hard AND x.n - 1 >= v_all_l[x.i]))
    THEN
        o_outcome := 'challenge';
    ELSIF o_refused IS NOT NULL THEN
        o_outcome := 'quota';
    END IF;
    IF o_outcome IS NOT NULL THEN
        FOR i IN 1 .. coalesce(cardinality(v_sh_i), 0) LOOP
            PERFORM verifyd_quota_add(v_all_s[v_sh_i[i]], v_all_k[v_sh_i[i]], v_sh_end[i], -1);
        END LOOP;
        IF v_counted THEN
            PERFORM verifyd_pumping_add(p_country, v_pump_end, -1, 0);
        END IF;
        RETURN;
    END IF;
    UPDATE quota_counters c
    SET count = CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END,
        expires_at = CASE WHEN c.expires_at > now() THEN c.expires_at
                          ELSE now() + make_interval(secs => q.w) END
    FROM unnest(v_scopes, v_keys, v_windows) AS q (s, k, w)
    WHERE c.scope = q.s AND c.key = q.k;
    IF o_id IS NULL THEN
        INSERT INTO sessions
            AS s (key_hash, data, expiry_kind, idle_secs, created_at, touched_at, expires_at)
        VALUES (p_new_key, '{}', p_expiry_kind, p_idle_secs, now(), now(),
                verifyd_session_expiry(p_expiry_kind, p_idle_secs, now(), p_default_age,
                                       p_max_lifetime))
        RETURNING s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
                  s.data_json, s.version
        INTO o_id, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at,
             o_data_json, o_version;
        o_created := true;
        o_refreshed := true;
    END IF;
    o_resend := v_live;
    o_attempts := CASE WHEN v_live THEN r_ver.attempts ELSE 0 END;
    o_ttl := p_ttl;
    v_keep_til := now() + make_interval(secs => p_keep);
    v_keep := v_live AND p_margin IS NOT NULL
        AND r_ver.mac_scheme = 2
        AND r_ver.code_nonce IS NOT NULL AND r_ver.nonce_mac = r_ver.code_mac
        AND r_ver.expires_at >= now() + make_interval(secs => p_margin)
        AND r_ver.keep_until >= now() + make_interval(secs => p_ttl / 2);
    IF v_keep THEN
        v_mac := r_ver.code_mac;
        v_nonce := r_ver.code_nonce;
        v_keep_til := r_ver.keep_until;
        o_nonce := r_ver.code_nonce;
        o_ttl := least(p_ttl, extract(epoch FROM r_ver.keep_until - now())::float8);
    END IF;
    INSERT INTO verifications AS v
        (session_id, phone, code_mac, state, attempts, created_at, sent_at, expires_at,
         code_nonce, nonce_mac, keep_until, mac_scheme)
    VALUES (o_id, p_phone, v_mac, verifyd_pending(), o_attempts, now(), now(),
            now() + make_interval(secs => o_ttl),
            v_nonce, CASE WHEN v_nonce IS NOT NULL THEN v_mac END, v_keep_til, 2)
    ON CONFLICT (session_id, phone) DO UPDATE SET
        code_mac = excluded.code_mac,
        state = verifyd_pending(),
        attempts = excluded.attempts,
        created_at = CASE WHEN v_live THEN v.created_at ELSE now() END,
        sent_at = now(),
        expires_at = excluded.expires_at,
        code_nonce = excluded.code_nonce,
        nonce_mac = excluded.nonce_mac,
        keep_until = excluded.keep_until,
        mac_scheme = 2;
    IF v_counted
       AND verifyd_pumping_trips(v_sends + 1, v_approvals, p_pump_sample, p_pump_conversion) THEN
        o_tripped := verifyd_pumping_flag(p_country, v_pump_end, true);
    END IF;
    o_outcome := 'issued';
END
$$;

DROP FUNCTION verifyd_check(BIGINT, TEXT, BYTEA, INTEGER, BYTEA, JSONB, BIGINT, BIGINT, TEXT[],
                            TEXT[], INTEGER[], FLOAT8[], INTEGER, FLOAT8, FLOAT8, TEXT, FLOAT8,
                            TEXT, INTEGER);

-- A check, as in version 8, addressed by the caller's key hash `p_key`.
-- The session is resolved and slid first; a key that names no live session answers
-- `no_session` with nothing written and no quota taken, as the daemon did before it looked
-- further. A code of the first MAC scheme answers `expired`: it can neither be approved nor
-- cost an attempt. The session's columns come back with every outcome (after the approval's
-- changes for an approval).
CREATE FUNCTION verifyd_check(
    p_key             BYTEA,
    p_refresh         BIGINT,
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
    OUT o_refreshed   BOOLEAN,
    OUT o_id          BIGINT,
    OUT o_data        JSONB,
    OUT o_expiry_kind SMALLINT,
    OUT o_idle_secs   INTEGER,
    OUT o_created_at  TIMESTAMPTZ,
    OUT o_expires_at  TIMESTAMPTZ,
    OUT o_data_json   JSON,
    OUT o_version     BIGINT
)
LANGUAGE plpgsql AS $$
DECLARE
    r_ver     verifications%ROWTYPE;
    r_fail    quota_counters%ROWTYPE;
    r_net     quota_counters%ROWTYPE;
    v_session BIGINT;
    v_net_key TEXT := p_phone || ' ' || p_net;
    v_known   BOOLEAN;
    v_until   TIMESTAMPTZ;
    v_pump_end  TIMESTAMPTZ;
    v_tripped   BOOLEAN;
    v_sends     INTEGER;
    v_approvals INTEGER;
    v_scopes    TEXT[] := '{}';
    v_keys      TEXT[] := '{}';
    v_limits    INTEGER[] := '{}';
    v_windows   FLOAT8[] := '{}';
    v_sh_i      INTEGER[] := '{}';
    v_sh_end    TIMESTAMPTZ[] := '{}';
    v_end       TIMESTAMPTZ;
    i           INTEGER;
BEGIN
    o_refreshed := false;
    SELECT s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
           s.data_json, s.version, s.refreshed
    INTO v_session, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at,
         o_data_json, o_version, o_refreshed
    FROM verifyd_resolve_session(p_key, p_default_age, p_max_lifetime, p_refresh) s;
    o_now := clock_timestamp();
    IF v_session IS NULL THEN
        o_outcome := 'no_session';
        o_refreshed := false;
        RETURN;
    END IF;
    o_id := v_session;
    FOR i IN 1 .. coalesce(cardinality(p_scopes), 0) LOOP
        IF verifyd_is_shared(p_scopes[i], p_limits[i]) THEN
            v_end := verifyd_quota_window(p_scopes[i], p_keys[i], p_windows[i]);
            v_sh_i := v_sh_i || i;
            v_sh_end := v_sh_end || v_end;
            IF verifyd_quota_count(p_scopes[i], p_keys[i], v_end, ARRAY[p_limits[i]])
                   >= p_limits[i] AND o_refused IS NULL THEN
                o_refused := p_scopes[i];
                o_retry_at := v_end;
            END IF;
        ELSE
            v_scopes := v_scopes || p_scopes[i];
            v_keys := v_keys || p_keys[i];
            v_limits := v_limits || p_limits[i];
            v_windows := v_windows || p_windows[i];
        END IF;
    END LOOP;
    IF o_refused IS NULL THEN
        SELECT q.o_refused, q.o_retry_at INTO o_refused, o_retry_at
        FROM verifyd_take_quotas(v_scopes, v_keys, v_limits, v_windows) q;
    END IF;
    IF o_refused IS NOT NULL THEN
        FOR i IN 1 .. coalesce(cardinality(v_sh_i), 0) LOOP
            PERFORM verifyd_quota_add(p_scopes[v_sh_i[i]], p_keys[v_sh_i[i]], v_sh_end[i], -1);
        END LOOP;
    END IF;
    o_now := clock_timestamp();
    IF o_refused IS NOT NULL THEN
        o_outcome := 'quota';
        RETURN;
    END IF;
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
    WHERE session_id = v_session AND phone = p_phone
    FOR UPDATE;
    v_known := FOUND AND r_ver.state <> verifyd_approved() AND EXISTS (
        SELECT 1 FROM sessions s
        WHERE s.id = v_session AND (s.expires_at IS NULL OR s.expires_at > now()));
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
    ELSIF r_ver.state = verifyd_exhausted() OR r_ver.attempts >= p_max_attempts THEN
        o_outcome := 'exhausted';
    ELSIF r_ver.mac_scheme <> 2 THEN
        o_outcome := 'expired';
    ELSIF v_until IS NOT NULL THEN
        o_outcome := 'locked';
        o_retry_at := v_until;
    END IF;
    IF o_outcome IS NOT NULL THEN
        UPDATE quota_counters SET count = count
        WHERE scope = 'phone_failed_checks' AND key = p_phone;
        IF p_net IS NOT NULL THEN
            UPDATE quota_counters SET count = count
            WHERE scope = 'phone_net_failed_checks' AND key = v_net_key;
        END IF;
        RETURN;
    END IF;
    IF r_ver.code_mac = p_mac THEN
        UPDATE verifications SET state = verifyd_approved()
        WHERE session_id = v_session AND phone = p_phone;
        UPDATE sessions s
        SET key_hash = p_new_key,
            data = s.data || p_patch,
            touched_at = now(),
            expires_at = verifyd_session_expiry(s.expiry_kind, s.idle_secs, s.created_at,
                                                p_default_age, p_max_lifetime)
        WHERE s.id = v_session
        RETURNING s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
                  s.data_json, s.version
        INTO o_id, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at,
             o_data_json, o_version;
        SELECT expires_at, tripped INTO v_pump_end, v_tripped FROM pumping
        WHERE country = p_country AND expires_at > now();
        IF v_pump_end IS NOT NULL THEN
            SELECT a.o_sends, a.o_approvals INTO v_sends, v_approvals
            FROM verifyd_pumping_add(p_country, v_pump_end, 0, 1) a;
            IF v_tripped AND v_approvals >= p_pump_conversion * v_sends THEN
                PERFORM verifyd_pumping_flag(p_country, v_pump_end, false);
            END IF;
        END IF;
        o_outcome := 'approved';
        RETURN;
    END IF;
    o_attempts := r_ver.attempts + 1;
    UPDATE verifications
    SET attempts = o_attempts,
        state = CASE WHEN o_attempts >= p_max_attempts THEN verifyd_exhausted()
                     ELSE verifyd_pending() END
    WHERE session_id = v_session AND phone = p_phone;
    PERFORM verifyd_count_failure('phone_failed_checks', p_phone, p_fail_max, p_fail_window,
                                  p_lockout);
    IF p_net IS NOT NULL THEN
        PERFORM verifyd_count_failure('phone_net_failed_checks', v_net_key, p_net_fail_max,
                                      p_fail_window, p_lockout);
    END IF;
    o_outcome := CASE WHEN o_attempts >= p_max_attempts THEN 'exhausted' ELSE 'wrong' END;
END
$$;
