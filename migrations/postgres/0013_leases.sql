-- verifyd schema, version 13: a daemon leases blocks of the shared budgets and counts the
-- breaker's sends in memory (issue 13), so that a send with the shipped limits writes no row that
-- every other send writes too. Until version 12 each send added one to a shard of the global cap,
-- of its country's cap and breaker, and of any per-address quota large enough to be shared:
-- rows that all sends of a deployment update, about half of a send's time in the database.
--
-- Leases. A daemon asks for a block of a shared quota's budget with a send
-- (verifyd_quota_grant): the block is counted in the shards at once, with every shard of the
-- counter locked, so grants are exact against the limit and against sends counted the version-12
-- way. The daemon then spends the block's slots on its next sends without writing, and gives back
-- what is left when it stops (verifyd_quota_release). A hard quota never grants past its limit,
-- so a cap is never exceeded; what it can do is refuse while other daemons hold slots they have
-- not spent yet (docs/performance.md states the bound). A block is a sixty-fourth of what is
-- left, at most what the daemon asks for (256), at least one, so the blocks shrink as a limit
-- nears and the budget a daemon can sit on shrinks with them.
--
-- The breaker. A daemon that judged a send against its country's breaker in memory (far from
-- tripping on the counts it last saw) counts it in memory, and adds its count to a shard every
-- few sends (`p_pump_flush`), when it stops, and before `verifyd pumping-status` reads the sums.
-- Counts not yet added only make the breaker see fewer sends: it trips late by what the other
-- daemons hold, never early, and every send near the trip point is judged here, exactly as before.
--
-- verifyd_start_send keeps its signature and answers (daemons of version 10 to 12 keep serving
-- during a rolling upgrade, counting per send as before); it now runs verifyd_send without leases.

-- Grants one daemon a block of a shared quota's budget in the running window: `o_count` slots
-- whose counts are `o_pos` to `o_pos + o_count - 1` (the count before each send that spends one).
-- `o_count` is 0 when a hard quota is full; a soft quota grants past its limit (a send past it
-- needs a challenge, which the slot's count tells).
CREATE FUNCTION verifyd_quota_grant(p_scope TEXT, p_key TEXT, p_limit INTEGER, p_window FLOAT8,
                                    p_hard BOOLEAN, p_block INTEGER,
                                    OUT o_end TIMESTAMPTZ, OUT o_pos INTEGER, OUT o_count INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
    v_sum BIGINT;
BEGIN
    o_end := verifyd_quota_window(p_scope, p_key, p_window);
    -- Every shard locked (in shard order, as verifyd_quota_count locks them): no send or grant
    -- on another connection is counting in this window meanwhile, so the sum is exact.
    INSERT INTO quota_shards (scope, key, shard, window_ends, count)
    SELECT p_scope, p_key, g, o_end, 0 FROM generate_series(0, 15) AS g
    ON CONFLICT (scope, key, shard) DO NOTHING;
    PERFORM 1 FROM quota_shards WHERE scope = p_scope AND key = p_key ORDER BY shard FOR UPDATE;
    SELECT coalesce(sum(count), 0) INTO v_sum FROM quota_shards
    WHERE scope = p_scope AND key = p_key AND window_ends = o_end;
    o_pos := least(v_sum, 2147483647)::integer;
    o_count := least(greatest(p_block, 1), greatest((p_limit - v_sum) / 64, 1))::integer;
    IF p_hard THEN
        o_count := least(o_count, greatest(p_limit - v_sum, 0))::integer;
    END IF;
    IF o_count > 0 THEN
        PERFORM verifyd_quota_add(p_scope, p_key, o_end, o_count);
    END IF;
END
$$;

-- Gives back `p_count` unspent slots of a block granted in the window ending at `p_end` (a
-- daemon stopping); nothing when that window is over.
CREATE FUNCTION verifyd_quota_release(p_scope TEXT, p_key TEXT, p_end TIMESTAMPTZ,
                                      p_count INTEGER)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r    RECORD;
    v_left INTEGER := p_count;
BEGIN
    FOR r IN SELECT shard, count FROM quota_shards
             WHERE scope = p_scope AND key = p_key AND window_ends = p_end AND p_end > now()
             ORDER BY shard FOR UPDATE
    LOOP
        EXIT WHEN v_left <= 0;
        UPDATE quota_shards SET count = count - least(count, v_left)
        WHERE scope = p_scope AND key = p_key AND shard = r.shard;
        v_left := v_left - least(r.count, v_left);
    END LOOP;
END
$$;

-- Adds a daemon's in-memory count of sends to its country's breaker, when the window it counted
-- them in (`p_end`) is still the running one; a count of an ended or reset window is dropped.
-- Unlike verifyd_pumping_add it reads no sums: whoever needs them reads them once.
CREATE FUNCTION verifyd_pumping_flush(p_country TEXT, p_end TIMESTAMPTZ, p_sends INTEGER)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_sends > 0 AND EXISTS (SELECT 1 FROM pumping
                               WHERE country = p_country AND expires_at = p_end
                                 AND expires_at > now()) THEN
        INSERT INTO pumping_shards AS s (country, shard, window_ends, sends, approvals)
        VALUES (p_country, verifyd_shard(), p_end, p_sends, 0)
        ON CONFLICT (country, shard) DO UPDATE SET
            sends = CASE WHEN s.window_ends >= excluded.window_ends
                         THEN s.sends + excluded.sends ELSE excluded.sends END,
            approvals = CASE WHEN s.window_ends >= excluded.window_ends
                             THEN s.approvals ELSE 0 END,
            window_ends = greatest(s.window_ends, excluded.window_ends);
    END IF;
END
$$;

-- A breaker window as the database sees it, for a daemon's memory: the sums of its shards and
-- the flag.
CREATE FUNCTION verifyd_pumping_seen(p_country TEXT, p_end TIMESTAMPTZ,
                                     OUT o_end TIMESTAMPTZ, OUT o_sends INTEGER,
                                     OUT o_approvals INTEGER, OUT o_tripped BOOLEAN)
LANGUAGE sql STABLE AS $$
    SELECT p_end, least(coalesce(sum(s.sends), 0), 2147483647)::integer,
           least(coalesce(sum(s.approvals), 0), 2147483647)::integer,
           coalesce((SELECT p.tripped FROM pumping p
                     WHERE p.country = p_country AND p.expires_at = p_end), false)
    FROM pumping_shards s
    WHERE s.country = p_country AND s.window_ends = p_end
$$;

-- A send, as verifyd_start_send of version 12, and:
-- - `p_blocks` (parallel to the hard then the soft quotas): for a shared quota, a block size
--   above 0 asks for a grant instead of counting this send alone; the send spends the grant's
--   first slot, and the daemon keeps the grant (`o_lease_*`) whatever the outcome. A hard
--   quota whose grant is empty refuses as a full one. A block size below 0 asks for a grant of
--   that size for a quota the send already has a slot for (a lease running low is refilled
--   before it runs out): granted in its turn, so that counters are locked in the usual order,
--   and neither counted nor judged. The daemon leaves out of the arrays the other quotas its
--   leases cover, and says in `p_covered_challenge` whether the counts of the slots it spent ask
--   for a challenge (a soft quota spent, or a suspicious one with `p_suspicious`).
-- - `p_pump_local`: the daemon judged the breaker and counts this send itself; otherwise the
--   breaker is judged here, after adding the `p_pump_flush` sends the daemon counted in the
--   window ending at `p_pump_flush_end`, and `o_pump_*` report the window as this send saw it
--   (the sums it judged on, with itself when it went out).
CREATE FUNCTION verifyd_send(
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
    p_blocks          INTEGER[],
    p_covered_challenge BOOLEAN,
    p_pump_local      BOOLEAN,
    p_pump_flush      INTEGER,
    p_pump_flush_end  TIMESTAMPTZ,
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
    OUT o_version     BIGINT,
    OUT o_lease_scopes TEXT[],
    OUT o_lease_keys  TEXT[],
    OUT o_lease_ends  TIMESTAMPTZ[],
    OUT o_lease_pos   INTEGER[],
    OUT o_lease_counts INTEGER[],
    OUT o_pump_end    TIMESTAMPTZ,
    OUT o_pump_sends  INTEGER,
    OUT o_pump_approvals INTEGER,
    OUT o_pump_tripped BOOLEAN
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
    v_gr_i      INTEGER[] := '{}';
    v_gr_end    TIMESTAMPTZ[] := '{}';
    v_gr_pos    INTEGER[] := '{}';
    v_gr_n      INTEGER[] := '{}';
    v_pos       INTEGER;
    v_n         INTEGER;
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
    -- With `p_pump_local` the daemon judged this send against the breaker and counts it in
    -- memory; otherwise the database judges it, after adding what the daemon counted so far.
    IF p_country IS NOT NULL AND NOT coalesce(p_pump_local, false) THEN
        SELECT w.o_end, w.o_tripped INTO v_pump_end, v_tripped
        FROM verifyd_pumping_window(p_country, p_pump_window) w;
        IF coalesce(p_pump_flush, 0) > 0 AND p_pump_flush_end = v_pump_end THEN
            PERFORM verifyd_pumping_flush(p_country, v_pump_end, p_pump_flush);
        END IF;
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
            SELECT s.o_end, s.o_sends, s.o_approvals, s.o_tripped
            INTO o_pump_end, o_pump_sends, o_pump_approvals, o_pump_tripped
            FROM verifyd_pumping_seen(p_country, v_pump_end) s;
            RETURN;
        END IF;
    END IF;
    -- A daemon's leases usually cover every shared quota, leaving only exact ones: those are
    -- taken as they come, without a statement per quota (and with no quotas, nothing is run).
    IF v_all_s = '{}' THEN
        NULL;
    ELSIF NOT EXISTS (SELECT 1 FROM unnest(v_all_s, v_all_l) AS q (s, l)
                      WHERE verifyd_is_shared(q.s, q.l)) THEN
        v_scopes := v_all_s;
        v_keys := v_all_k;
        v_windows := v_all_w;
    ELSE
        FOR i IN 1 .. coalesce(cardinality(v_all_s), 0) LOOP
            IF verifyd_is_shared(v_all_s[i], v_all_l[i]) AND coalesce(p_blocks[i], 0) <> 0 THEN
                SELECT g.o_end, g.o_pos, g.o_count INTO v_end, v_pos, v_n
                FROM verifyd_quota_grant(v_all_s[i], v_all_k[i], v_all_l[i], v_all_w[i],
                                         i <= v_hard, abs(p_blocks[i])) g;
                v_gr_i := v_gr_i || i;
                v_gr_end := v_gr_end || v_end;
                v_gr_pos := v_gr_pos || v_pos;
                v_gr_n := v_gr_n || v_n;
            ELSIF verifyd_is_shared(v_all_s[i], v_all_l[i]) THEN
                v_end := verifyd_quota_window(v_all_s[i], v_all_k[i], v_all_w[i]);
                v_sh_i := v_sh_i || i;
                v_sh_end := v_sh_end || v_end;
                v_sh_sum := v_sh_sum || (1 + verifyd_quota_count(v_all_s[i], v_all_k[i], v_end,
                    ARRAY[v_all_l[i], v_all_l[i] / 2 + 1,
                          (v_all_l[i]::bigint * 3 + 3) / 4]::integer[]));
            ELSE
                v_scopes := v_scopes || v_all_s[i];
                v_keys := v_keys || v_all_k[i];
                v_windows := v_windows || v_all_w[i];
            END IF;
        END LOOP;
    END IF;
    -- The blocks granted go back to the daemon whatever the outcome: they are its lease.
    IF cardinality(v_gr_i) > 0 THEN
        SELECT array_agg(v_all_s[x.i]), array_agg(v_all_k[x.i]), array_agg(x.e),
               array_agg(x.p), array_agg(x.n)
        INTO o_lease_scopes, o_lease_keys, o_lease_ends, o_lease_pos, o_lease_counts
        FROM unnest(v_gr_i, v_gr_end, v_gr_pos, v_gr_n) AS x (i, e, p, n);
    END IF;
    -- The exact quotas are counted first (one upsert each); the counts come back with this
    -- send in them (`v_ex_n`), and a refused send takes them back below.
    IF cardinality(v_scopes) > 0 THEN
        SELECT x.o_scopes, x.o_keys, x.o_counts, x.o_ends INTO v_ex_s, v_ex_k, v_ex_n, v_ex_e
        FROM verifyd_count_exact(v_scopes, v_keys, v_windows) x;
    END IF;
    o_now := clock_timestamp();
    -- With no quotas (the limits off) nothing can refuse or ask for a challenge but the
    -- breaker and the challenge mode: the statements that would find so are not run.
    IF v_all_s <> '{}' THEN
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
            UNION ALL
            SELECT v_all_s[x.i], v_all_k[x.i], x.e
            FROM unnest(v_gr_i, v_gr_end, v_gr_n) AS x (i, e, n)
            WHERE x.i <= v_hard AND x.n = 0 AND p_blocks[x.i] > 0
        ) AS q
        ORDER BY q.e DESC, q.s COLLATE "C", q.k COLLATE "C"
        LIMIT 1;
    END IF;
    IF o_refused IS NULL AND NOT p_passed AND (
        p_always
        OR v_tripped
        OR coalesce(p_covered_challenge, false)
        OR (v_all_s <> '{}' AND (
            (p_suspicious AND (
                EXISTS (
                    SELECT 1 FROM unnest(v_ex_s, v_ex_k, v_ex_n) AS x (s, k, n)
                        JOIN unnest(v_all_s, v_all_k, v_all_l) AS q (s, k, l)
                            ON x.s = q.s AND x.k = q.k
                    WHERE verifyd_suspicious_at(x.s, x.n - 1, q.l))
                OR EXISTS (
                    SELECT 1 FROM unnest(v_sh_i, v_sh_sum) AS x (i, n)
                    WHERE verifyd_suspicious_at(v_all_s[x.i], x.n - 1, v_all_l[x.i]))
                OR EXISTS (
                    SELECT 1 FROM unnest(v_gr_i, v_gr_pos) AS x (i, n)
                    WHERE p_blocks[x.i] > 0
                      AND verifyd_suspicious_at(v_all_s[x.i], x.n, v_all_l[x.i]))))
            OR EXISTS (
                SELECT 1 FROM unnest(v_ex_s, v_ex_k, v_ex_n) AS x (s, k, n)
                    JOIN unnest(p_soft_scopes, p_soft_keys, p_soft_limits) AS q (s, k, l)
                        ON x.s = q.s AND x.k = q.k
                WHERE x.n - 1 >= q.l)
            OR EXISTS (
                SELECT 1 FROM unnest(v_sh_i, v_sh_sum) AS x (i, n)
                WHERE x.i > v_hard AND x.n - 1 >= v_all_l[x.i])
            OR EXISTS (
                SELECT 1 FROM unnest(v_gr_i, v_gr_pos) AS x (i, n)
                WHERE p_blocks[x.i] > 0 AND x.i > v_hard AND x.n >= v_all_l[x.i]))))
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
        -- A grant of a single slot (the limit is near) goes back with the send, as a count
        -- does: near a limit no daemon keeps a slot another one could have used.
        FOR i IN 1 .. coalesce(cardinality(v_gr_i), 0) LOOP
            IF p_blocks[v_gr_i[i]] > 0 AND v_gr_n[i] = 1 THEN
                PERFORM verifyd_quota_add(v_all_s[v_gr_i[i]], v_all_k[v_gr_i[i]], v_gr_end[i],
                                          -1);
            END IF;
        END LOOP;
        IF v_counted THEN
            PERFORM verifyd_pumping_add(p_country, v_pump_end, -1, 0);
        END IF;
        -- The window as this send found it (its own count taken back).
        IF v_counted THEN
            o_pump_end := v_pump_end;
            o_pump_sends := v_sends;
            o_pump_approvals := v_approvals;
            o_pump_tripped := v_tripped;
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
    -- The window as this send leaves it.
    IF v_counted THEN
        o_pump_end := v_pump_end;
        o_pump_sends := v_sends + 1;
        o_pump_approvals := v_approvals;
        o_pump_tripped := v_tripped OR o_tripped;
    END IF;
    o_outcome := 'issued';
END
$$;


-- Version 12's send, for daemons of versions 10 to 12: no leases, the breaker judged here.
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
LANGUAGE sql AS $$
    SELECT s.o_outcome, s.o_attempts, s.o_resend, s.o_retry_at, s.o_refused, s.o_tripped,
           s.o_now, s.o_nonce, s.o_ttl, s.o_created, s.o_refreshed, s.o_id, s.o_data,
           s.o_expiry_kind, s.o_idle_secs, s.o_created_at, s.o_expires_at, s.o_data_json,
           s.o_version
    FROM verifyd_send(p_key, p_new_key, p_refresh, p_phone, p_mac, p_nonce, p_margin, p_keep,
                      p_ttl, p_resend, p_max_attempts, p_scopes, p_keys, p_limits, p_windows,
                      p_soft_scopes, p_soft_keys, p_soft_limits, p_soft_windows, p_country,
                      p_pump_window, p_pump_sample, p_pump_conversion, p_passed, p_always,
                      p_suspicious, p_on_trip, p_expiry_kind, p_idle_secs, p_default_age,
                      p_max_lifetime, NULL, false, false, 0, NULL) s
$$;

-- A check, as verifyd_check of version 10, with `p_blocks` (parallel to the quotas) as for a
-- send: a shared quota with a block size above 0 asks for a grant whose first slot this check
-- spends (none left refuses it as a full counter); below 0, a grant for a quota a slot of the
-- daemon's lease already covers, which is then neither counted nor judged. The grants come back
-- in `o_lease_*` whatever the outcome.
CREATE FUNCTION verifyd_check_leased(
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
    p_blocks          INTEGER[],
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
    OUT o_version     BIGINT,
    OUT o_lease_scopes TEXT[],
    OUT o_lease_keys  TEXT[],
    OUT o_lease_ends  TIMESTAMPTZ[],
    OUT o_lease_pos   INTEGER[],
    OUT o_lease_counts INTEGER[]
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
    v_pos       INTEGER;
    v_n         INTEGER;
    v_gr_i      INTEGER[] := '{}';
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
        IF verifyd_is_shared(p_scopes[i], p_limits[i]) AND coalesce(p_blocks[i], 0) <> 0 THEN
            SELECT g.o_end, g.o_pos, g.o_count INTO v_end, v_pos, v_n
            FROM verifyd_quota_grant(p_scopes[i], p_keys[i], p_limits[i], p_windows[i], true,
                                     abs(p_blocks[i])) g;
            o_lease_scopes := o_lease_scopes || p_scopes[i];
            o_lease_keys := o_lease_keys || p_keys[i];
            o_lease_ends := o_lease_ends || v_end;
            o_lease_pos := o_lease_pos || v_pos;
            o_lease_counts := o_lease_counts || v_n;
            v_gr_i := v_gr_i || i;
            IF p_blocks[i] > 0 AND v_n = 0 AND o_refused IS NULL THEN
                o_refused := p_scopes[i];
                o_retry_at := v_end;
            END IF;
        ELSIF verifyd_is_shared(p_scopes[i], p_limits[i]) THEN
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
        -- A single slot granted goes back with the refused check, as for a send.
        FOR i IN 1 .. cardinality(v_gr_i) LOOP
            IF p_blocks[v_gr_i[i]] > 0 AND o_lease_counts[i] = 1 THEN
                PERFORM verifyd_quota_add(p_scopes[v_gr_i[i]], p_keys[v_gr_i[i]],
                                          o_lease_ends[i], -1);
            END IF;
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

-- Version 10's check, for daemons of versions 10 to 12: no leases.
CREATE OR REPLACE FUNCTION verifyd_check(
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
LANGUAGE sql AS $$
    SELECT c.o_outcome, c.o_attempts, c.o_retry_at, c.o_refused, c.o_now, c.o_refreshed, c.o_id,
           c.o_data, c.o_expiry_kind, c.o_idle_secs, c.o_created_at, c.o_expires_at,
           c.o_data_json, c.o_version
    FROM verifyd_check_leased(p_key, p_refresh, p_phone, p_mac, p_max_attempts, p_new_key,
                              p_patch, p_default_age, p_max_lifetime, p_scopes, p_keys,
                              p_limits, p_windows, p_fail_max, p_fail_window, p_lockout,
                              p_country, p_pump_conversion, p_net, p_net_fail_max, NULL) c
$$;
