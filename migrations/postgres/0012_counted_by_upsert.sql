-- verifyd schema, version 12: a send counts its exact quotas (the per-number ones, and the
-- per-address ones while their limits are small) with one upsert per counter (issue 13), and so
-- does a check (verifyd_take_quotas: a client address's check budget). Until version 11 each
-- of them was written three times: an insert of an empty row (or nothing), a row lock, then the
-- increment once every limit had passed. With the shipped limits that is six counters, eighteen
-- row writes, for a send to a number never seen before. Now each is one insert or one update
-- that adds this request and returns the count; the limits are judged on the counts returned
-- (`n - 1` is the count before this request), and a refused request takes its counts back in
-- the same transaction. The row locks are the same ones, taken in the same (scope, key) order
-- and held to the commit as before, so the decisions stay exact across daemons; only the
-- refused path writes twice, and refusals are the rare path.

-- Also: a wrong code's count (verifyd_count_failure, from version 3) becomes PL/pgSQL. As a SQL
-- function that writes it could not be inlined into the check that PERFORMs it, so its UPDATE was
-- parsed and planned again on every call; that was about a third of a wrong check's time with
-- the limits on (two counters: the number's, and the number's from the client's network). As
-- PL/pgSQL its plan is kept per connection. pgbench on the daemon's check call, shipped limits,
-- 32 connections, alternating runs: about 2,280 against 1,620 checks/s.
CREATE OR REPLACE FUNCTION verifyd_count_failure(
    p_scope   TEXT,
    p_key     TEXT,
    p_max     INTEGER,
    p_window  FLOAT8,
    p_lockout FLOAT8
)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE quota_counters c
    SET count = CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END,
        expires_at = CASE
            WHEN p_max > 0
                 AND (CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END) >= p_max
                THEN greatest(c.expires_at, now() + make_interval(secs => p_lockout))
            WHEN c.expires_at > now() THEN c.expires_at
            ELSE now() + make_interval(secs => p_window) END
    WHERE c.scope = p_scope AND c.key = p_key;
END
$$;

-- Counts one request in each exact counter named by the arrays (no duplicate pair) and returns
-- the counters' scopes, keys, counts with this request, and window ends, as parallel arrays in
-- no particular order (callers join them by scope and key). The rows are locked in (scope, key)
-- order, the order every send and check locks them in, so that racing requests never deadlock.
-- A counter whose window has ended starts a new one with this request. The row locks are held
-- to the commit, so the counts are exact.
CREATE FUNCTION verifyd_count_exact(p_scopes TEXT[], p_keys TEXT[], p_windows FLOAT8[],
                                    OUT o_scopes TEXT[], OUT o_keys TEXT[],
                                    OUT o_counts INTEGER[], OUT o_ends TIMESTAMPTZ[])
LANGUAGE plpgsql AS $$
BEGIN
    WITH taken AS (
        INSERT INTO quota_counters AS c (scope, key, count, expires_at)
        SELECT q.s, q.k, 1, now() + make_interval(secs => q.w)
        FROM unnest(p_scopes, p_keys, p_windows) AS q (s, k, w)
        ORDER BY q.s, q.k
        ON CONFLICT (scope, key) DO UPDATE SET
            count = CASE WHEN c.expires_at > now() THEN c.count + 1 ELSE 1 END,
            expires_at = CASE WHEN c.expires_at > now() THEN c.expires_at
                              ELSE excluded.expires_at END
        RETURNING c.scope, c.key, c.count, c.expires_at
    )
    SELECT coalesce(array_agg(t.scope), '{}'), coalesce(array_agg(t.key), '{}'),
           coalesce(array_agg(t.count), '{}'), coalesce(array_agg(t.expires_at), '{}')
    INTO o_scopes, o_keys, o_counts, o_ends
    FROM taken t;
END
$$;

-- Takes back what verifyd_count_exact counted for a request that is then refused, in the same
-- transaction (the rows are still locked by it). A window the request opened is closed again,
-- since a window opens with its first counted request: it is the one ending exactly at this
-- transaction's now() + window with a count of one (another request would have had to start in
-- the same microsecond).
CREATE FUNCTION verifyd_uncount_exact(p_scopes TEXT[], p_keys TEXT[], p_windows FLOAT8[])
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE quota_counters c
    SET count = c.count - 1,
        expires_at = CASE WHEN c.count = 1 AND c.expires_at = now() + make_interval(secs => q.w)
                          THEN now() ELSE c.expires_at END
    FROM unnest(p_scopes, p_keys, p_windows) AS q (s, k, w)
    WHERE c.scope = q.s AND c.key = q.k;
END
$$;

-- The check's exact quotas (a client address's check budget below 1024, the shipped 100 an
-- hour), counted the same way: one upsert per counter that returns the count, taken back when
-- one is full. As before, all or none are taken, and the full counter that frees up last is
-- returned. A window the refused check opened is closed again.
CREATE OR REPLACE FUNCTION verifyd_take_quotas(
    p_scopes  TEXT[],
    p_keys    TEXT[],
    p_limits  INTEGER[],
    p_windows FLOAT8[],
    OUT o_refused  TEXT,
    OUT o_retry_at TIMESTAMPTZ
)
LANGUAGE plpgsql AS $$
DECLARE
    v_s TEXT[];
    v_k TEXT[];
    v_n INTEGER[];
    v_e TIMESTAMPTZ[];
BEGIN
    IF coalesce(cardinality(p_scopes), 0) = 0 THEN
        RETURN;
    END IF;
    SELECT x.o_scopes, x.o_keys, x.o_counts, x.o_ends INTO v_s, v_k, v_n, v_e
    FROM verifyd_count_exact(p_scopes, p_keys, p_windows) x;
    SELECT x.s, x.e INTO o_refused, o_retry_at
    FROM unnest(v_s, v_k, v_n, v_e) AS x (s, k, n, e)
        JOIN unnest(p_scopes, p_keys, p_limits) AS q (s, k, l) ON x.s = q.s AND x.k = q.k
    WHERE x.n - 1 >= q.l
    ORDER BY x.e DESC, x.s COLLATE "C", x.k COLLATE "C"
    LIMIT 1;
    IF o_refused IS NOT NULL THEN
        PERFORM verifyd_uncount_exact(p_scopes, p_keys, p_windows);
    END IF;
END
$$;

-- The send of version 10, its arguments and answers unchanged (a daemon of version 10 or 11 runs
-- on this schema as before), with the exact quotas counted as above.
CREATE OR REPLACE FUNCTION verifyd_start_send(
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
    v_ex_s      TEXT[] := '{}';
    v_ex_k      TEXT[] := '{}';
    v_ex_n      INTEGER[] := '{}';
    v_ex_e      TIMESTAMPTZ[] := '{}';
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
    -- The exact quotas are counted first (one upsert each); the counts come back with this
    -- send in them (`v_ex_n`), and a refused send takes them back below.
    IF cardinality(v_scopes) > 0 THEN
        SELECT x.o_scopes, x.o_keys, x.o_counts, x.o_ends INTO v_ex_s, v_ex_k, v_ex_n, v_ex_e
        FROM verifyd_count_exact(v_scopes, v_keys, v_windows) x;
    END IF;
    o_now := clock_timestamp();
    SELECT q.s, q.e INTO o_refused, o_retry_at
    FROM (
        SELECT x.s AS s, x.k AS k, x.e AS e
        FROM unnest(v_ex_s, v_ex_k, v_ex_n, v_ex_e) AS x (s, k, n, e)
            JOIN unnest(p_scopes, p_keys, p_limits) AS q (s, k, l)
                ON x.s = q.s AND x.k = q.k
        WHERE x.n - 1 >= q.l
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
                SELECT 1 FROM unnest(v_ex_s, v_ex_k, v_ex_n) AS x (s, k, n)
                    JOIN unnest(v_all_s, v_all_k, v_all_l) AS q (s, k, l)
                        ON x.s = q.s AND x.k = q.k
                WHERE verifyd_suspicious_at(x.s, x.n - 1, q.l))
            OR EXISTS (
                SELECT 1 FROM unnest(v_sh_i, v_sh_sum) AS x (i, n)
                WHERE verifyd_suspicious_at(v_all_s[x.i], x.n - 1, v_all_l[x.i]))))
        OR EXISTS (
            SELECT 1 FROM unnest(v_ex_s, v_ex_k, v_ex_n) AS x (s, k, n)
                JOIN unnest(p_soft_scopes, p_soft_keys, p_soft_limits) AS q (s, k, l)
                    ON x.s = q.s AND x.k = q.k
            WHERE x.n - 1 >= q.l)
        OR EXISTS (
            SELECT 1 FROM unnest(v_sh_i, v_sh_sum) AS x (i, n)
            WHERE x.i > v_hard AND x.n - 1 >= v_all_l[x.i]))
    THEN
        o_outcome := 'challenge';
    ELSIF o_refused IS NOT NULL THEN
        o_outcome := 'quota';
    END IF;
    IF o_outcome IS NOT NULL THEN
        -- Refused sends count nowhere.
        IF cardinality(v_scopes) > 0 THEN
            PERFORM verifyd_uncount_exact(v_scopes, v_keys, v_windows);
        END IF;
        FOR i IN 1 .. coalesce(cardinality(v_sh_i), 0) LOOP
            PERFORM verifyd_quota_add(v_all_s[v_sh_i[i]], v_all_k[v_sh_i[i]], v_sh_end[i], -1);
        END LOOP;
        IF v_counted THEN
            PERFORM verifyd_pumping_add(p_country, v_pump_end, -1, 0);
        END IF;
        RETURN;
    END IF;
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

-- Its only caller was the send's version above.
DROP FUNCTION verifyd_lock_quotas(TEXT[], TEXT[]);
