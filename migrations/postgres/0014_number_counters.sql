-- verifyd schema, version 14: a number's send quotas are counted in one row per number
-- (issue 13). Until version 13 each was a row of quota_counters of its own: with the shipped
-- limits a send to a number not seen that day inserted six rows (the number's soft and hard
-- caps per window and per day, and its two caps from the client's network), each with two index
-- entries, and once the leases had taken the shared counters off a send's path those six rows
-- were most of what the limits cost it: pgbench on the daemon's limits-on send ran at 0.58 of
-- the limits-off one.
--
-- The soft and the hard cap of one window count the same sends (a refused or challenged send
-- counts in neither), so they share a count. A row of number_counters holds the two windows of
-- one key: the number's (key: the number), or the number's from one client network (key: the
-- number, a space, the network), the window of `per_phone.window` seconds and the day. A send
-- writes at most two rows, one upsert each, and when the number's quotas are all it has to count
-- (the usual case once the daemon's leases cover the shared ones) it judges them without a
-- query. The counts stay exact: each upsert locks its row to the commit, and every send locks
-- the number's row before the network's.
--
-- verifyd_send keeps its signature and answers; version 13's verifyd_start_send wraps it, so
-- daemons of versions 10 to 13 count in the new rows as soon as this runs. The counts of the
-- windows still running move over: of a soft and a hard counter of one window, the larger count
-- and the later end (they are equal unless a limit was switched on within the window).

-- One row per number, and per number and client network: sends counted in the window of
-- `per_phone.window` seconds ending at `short_end`, and in the day ending at `day_end`. A window
-- starts at the first send after the previous one ended; a window no limit uses is left as it
-- is ('-infinity' in a new row). The sweeper removes rows whose both windows have ended.
CREATE TABLE number_counters (
    key        TEXT        PRIMARY KEY,
    short_n    INTEGER     NOT NULL CHECK (short_n >= 0),
    short_end  TIMESTAMPTZ NOT NULL,
    day_n      INTEGER     NOT NULL CHECK (day_n >= 0),
    day_end    TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ GENERATED ALWAYS AS (greatest(short_end, day_end)) STORED
);

CREATE INDEX number_counters_expires_at_idx ON number_counters (expires_at);

-- Sends of daemons still running version 13's function wait here until the move commits, so no
-- count committed before it is left behind. One already inside that function when it commits
-- still counts its number in the old rows, once: at the moment of the upgrade a number's caps
-- can let through at most one send more per send then in flight.
LOCK TABLE quota_counters IN SHARE ROW EXCLUSIVE MODE;

INSERT INTO number_counters (key, short_n, short_end, day_n, day_end)
SELECT c.key,
       coalesce(max(c.count) FILTER (WHERE c.scope IN ('phone_sends', 'phone_hard_sends',
                                                         'phone_net_sends')), 0),
       coalesce(max(c.expires_at) FILTER (WHERE c.scope IN ('phone_sends', 'phone_hard_sends',
                                                              'phone_net_sends')), '-infinity'),
       coalesce(max(c.count) FILTER (WHERE c.scope IN ('phone_daily', 'phone_hard_daily',
                                                         'phone_net_daily')), 0),
       coalesce(max(c.expires_at) FILTER (WHERE c.scope IN ('phone_daily', 'phone_hard_daily',
                                                              'phone_net_daily')), '-infinity')
FROM quota_counters c
WHERE c.scope IN ('phone_sends', 'phone_hard_sends', 'phone_net_sends', 'phone_daily',
                  'phone_hard_daily', 'phone_net_daily')
  AND c.expires_at > now()
GROUP BY c.key;

DELETE FROM quota_counters
WHERE scope IN ('phone_sends', 'phone_hard_sends', 'phone_net_sends', 'phone_daily',
                'phone_hard_daily', 'phone_net_daily');

-- Where a scope counts in number_counters: 1 and 2, the number's window and day; 3 and 4, the
-- number's from one network. NULL for every other scope.
CREATE FUNCTION verifyd_number_slot(p_scope TEXT) RETURNS INTEGER
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_scope
        WHEN 'phone_sends' THEN 1
        WHEN 'phone_hard_sends' THEN 1
        WHEN 'phone_daily' THEN 2
        WHEN 'phone_hard_daily' THEN 2
        WHEN 'phone_net_sends' THEN 3
        WHEN 'phone_net_daily' THEN 4
    END
$$;

-- Takes back what a send counted in a row of number_counters (windows of `p_short` and `p_day`
-- seconds, NULL for one not counted) when it is then refused, in the same transaction: the row is
-- still locked by it. A window the send opened is closed again (see verifyd_uncount_exact).
CREATE FUNCTION verifyd_uncount_number(p_key TEXT, p_short FLOAT8, p_day FLOAT8)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE number_counters c
    SET short_n = CASE WHEN p_short IS NULL THEN c.short_n ELSE c.short_n - 1 END,
        short_end = CASE WHEN p_short IS NOT NULL AND c.short_n = 1
                              AND c.short_end = now() + make_interval(secs => p_short)
                         THEN now() ELSE c.short_end END,
        day_n = CASE WHEN p_day IS NULL THEN c.day_n ELSE c.day_n - 1 END,
        day_end = CASE WHEN p_day IS NOT NULL AND c.day_n = 1
                            AND c.day_end = now() + make_interval(secs => p_day)
                       THEN now() ELSE c.day_end END
    WHERE c.key = p_key;
END
$$;

-- Version 13's send with the number's quotas counted in number_counters.
CREATE OR REPLACE FUNCTION verifyd_send(
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
    -- The number's quotas (positions in v_all_*), and its rows: keys by row (1 the number's,
    -- 2 the number's from the network), windows, counts and ends by slot (verifyd_number_slot).
    v_num_i     INTEGER[] := '{}';
    v_slot      INTEGER;
    v_nk        TEXT[] := '{NULL,NULL}';
    v_nw        FLOAT8[] := '{NULL,NULL,NULL,NULL}';
    v_nn        INTEGER[] := '{NULL,NULL,NULL,NULL}';
    v_ne        TIMESTAMPTZ[] := '{NULL,NULL,NULL,NULL}';
    v_short_n   INTEGER;
    v_short_end TIMESTAMPTZ;
    v_day_n     INTEGER;
    v_day_end   TIMESTAMPTZ;
    v_numbers_only BOOLEAN;
    v_warn      BOOLEAN := false;
    v_refused_k TEXT;
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
    -- Each quota is the number's (counted below in its row of number_counters), shared (leased,
    -- or counted in shards), or another exact one (quota_counters). A daemon's leases usually
    -- cover every shared quota, leaving only the number's.
    FOR i IN 1 .. coalesce(cardinality(v_all_s), 0) LOOP
        v_slot := verifyd_number_slot(v_all_s[i]);
        IF v_slot IS NOT NULL THEN
            v_num_i := v_num_i || i;
            v_nk[(v_slot + 1) / 2] := v_all_k[i];
            v_nw[v_slot] := v_all_w[i];
        ELSIF verifyd_is_shared(v_all_s[i], v_all_l[i]) AND coalesce(p_blocks[i], 0) <> 0 THEN
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
    -- The blocks granted go back to the daemon whatever the outcome: they are its lease.
    IF cardinality(v_gr_i) > 0 THEN
        SELECT array_agg(v_all_s[x.i]), array_agg(v_all_k[x.i]), array_agg(x.e),
               array_agg(x.p), array_agg(x.n)
        INTO o_lease_scopes, o_lease_keys, o_lease_ends, o_lease_pos, o_lease_counts
        FROM unnest(v_gr_i, v_gr_end, v_gr_pos, v_gr_n) AS x (i, e, p, n);
    END IF;
    -- The number's rows are counted next, the number's before the number's from the client's
    -- network, as every send does (so racing sends never deadlock): one upsert per row, which
    -- adds this send to each window in use and returns the counts with it.
    FOR i IN 1 .. 2 LOOP
        CONTINUE WHEN v_nk[i] IS NULL;
        INSERT INTO number_counters AS c (key, short_n, short_end, day_n, day_end)
        VALUES (v_nk[i],
                CASE WHEN v_nw[2 * i - 1] IS NULL THEN 0 ELSE 1 END,
                coalesce(now() + make_interval(secs => v_nw[2 * i - 1]), '-infinity'),
                CASE WHEN v_nw[2 * i] IS NULL THEN 0 ELSE 1 END,
                coalesce(now() + make_interval(secs => v_nw[2 * i]), '-infinity'))
        ON CONFLICT (key) DO UPDATE SET
            short_n = CASE WHEN v_nw[2 * i - 1] IS NULL THEN c.short_n
                           WHEN c.short_end > now() THEN c.short_n + 1 ELSE 1 END,
            short_end = CASE WHEN v_nw[2 * i - 1] IS NULL OR c.short_end > now() THEN c.short_end
                             ELSE excluded.short_end END,
            day_n = CASE WHEN v_nw[2 * i] IS NULL THEN c.day_n
                         WHEN c.day_end > now() THEN c.day_n + 1 ELSE 1 END,
            day_end = CASE WHEN v_nw[2 * i] IS NULL OR c.day_end > now() THEN c.day_end
                           ELSE excluded.day_end END
        RETURNING c.short_n, c.short_end, c.day_n, c.day_end
        INTO v_short_n, v_short_end, v_day_n, v_day_end;
        v_nn[2 * i - 1] := v_short_n;
        v_ne[2 * i - 1] := v_short_end;
        v_nn[2 * i] := v_day_n;
        v_ne[2 * i] := v_day_end;
    END LOOP;
    -- The other exact quotas are counted after them (one upsert each); the counts come back
    -- with this send in them (`v_ex_n`), and a refused send takes them back below.
    IF cardinality(v_scopes) > 0 THEN
        SELECT x.o_scopes, x.o_keys, x.o_counts, x.o_ends INTO v_ex_s, v_ex_k, v_ex_n, v_ex_e
        FROM verifyd_count_exact(v_scopes, v_keys, v_windows) x;
    END IF;
    o_now := clock_timestamp();
    -- When the number's quotas are all there is (the usual case once the leases cover the
    -- shared ones) they are judged here, by the rules of the statements below: a hard quota
    -- full refuses, the one that frees up last (then by scope and key) named; a soft one full,
    -- or one that looks suspicious, asks for a challenge. Otherwise their counts join the
    -- others' and the statements judge them all.
    v_numbers_only := cardinality(v_scopes) = 0 AND cardinality(v_sh_i) = 0
        AND cardinality(v_gr_i) = 0;
    FOREACH i IN ARRAY v_num_i LOOP
        v_slot := verifyd_number_slot(v_all_s[i]);
        IF NOT v_numbers_only THEN
            v_ex_s := v_ex_s || v_all_s[i];
            v_ex_k := v_ex_k || v_all_k[i];
            v_ex_n := v_ex_n || v_nn[v_slot];
            v_ex_e := v_ex_e || v_ne[v_slot];
        ELSIF i > v_hard THEN
            v_warn := v_warn OR v_nn[v_slot] - 1 >= v_all_l[i];
        ELSIF v_nn[v_slot] - 1 >= v_all_l[i]
              AND (o_refused IS NULL OR v_ne[v_slot] > o_retry_at
                   OR (v_ne[v_slot] = o_retry_at
                       AND (v_all_s[i] COLLATE "C" < o_refused COLLATE "C"
                            OR (v_all_s[i] = o_refused
                                AND v_all_k[i] COLLATE "C" < v_refused_k COLLATE "C")))) THEN
            o_refused := v_all_s[i];
            o_retry_at := v_ne[v_slot];
            v_refused_k := v_all_k[i];
        END IF;
        v_warn := v_warn OR (v_numbers_only AND p_suspicious
                             AND verifyd_suspicious_at(v_all_s[i], v_nn[v_slot] - 1, v_all_l[i]));
    END LOOP;
    -- With no quotas (the limits off) nothing can refuse or ask for a challenge but the
    -- breaker and the challenge mode: the statements that would find so are not run.
    IF v_all_s <> '{}' AND NOT v_numbers_only THEN
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
        OR v_warn
        OR (v_all_s <> '{}' AND NOT v_numbers_only AND (
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
        FOR i IN 1 .. 2 LOOP
            CONTINUE WHEN v_nk[i] IS NULL;
            PERFORM verifyd_uncount_number(v_nk[i], v_nw[2 * i - 1], v_nw[2 * i]);
        END LOOP;
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

-- Version 8's give-back of an abandoned send (its delivery failed), with the number's quotas
-- given back in number_counters.
CREATE OR REPLACE FUNCTION verifyd_abandon_send(
    p_session         BIGINT,
    p_phone           TEXT,
    p_mac             BYTEA,
    p_scopes          TEXT[],
    p_keys            TEXT[],
    p_limits          INTEGER[],
    p_country         TEXT,
    p_pump_sample     INTEGER,
    p_pump_conversion FLOAT8
)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_sends     INTEGER;
    v_approvals INTEGER;
    v_end       TIMESTAMPTZ;
    v_row       INTEGER;
BEGIN
    -- The epoch, not `-infinity`, so that `sent_at` still converts to a `SystemTime`.
    UPDATE verifications SET sent_at = 'epoch'
    WHERE session_id = p_session AND phone = p_phone AND code_mac = p_mac
      AND state = verifyd_pending();
    IF p_country IS NOT NULL THEN
        SELECT expires_at INTO v_end FROM pumping
        WHERE country = p_country AND expires_at > now();
        UPDATE pumping_shards s SET sends = s.sends - 1
        WHERE (s.country, s.shard) IN (
            SELECT country, shard FROM pumping_shards
            WHERE country = p_country AND window_ends = v_end AND sends > 0
            ORDER BY shard = verifyd_shard() DESC, shard
            LIMIT 1
            FOR UPDATE);
        IF FOUND THEN
            SELECT least(coalesce(sum(sends), 0), 2147483647)::integer,
                   least(coalesce(sum(approvals), 0), 2147483647)::integer
            INTO v_sends, v_approvals
            FROM pumping_shards WHERE country = p_country AND window_ends = v_end;
            IF NOT verifyd_pumping_trips(v_sends, v_approvals, p_pump_sample,
                                         p_pump_conversion) THEN
                PERFORM verifyd_pumping_flag(p_country, v_end, false);
            END IF;
        END IF;
    END IF;
    IF coalesce(cardinality(p_scopes), 0) = 0 THEN
        RETURN;
    END IF;
    UPDATE quota_shards s SET count = s.count - 1
    FROM (
        SELECT DISTINCT ON (sh.scope, sh.key) sh.scope, sh.key, sh.shard
        FROM quota_shards sh
            JOIN unnest(p_scopes, p_keys, p_limits) AS q (s, k, l)
                ON sh.scope = q.s AND sh.key = q.k
            JOIN quota_counters c ON c.scope = sh.scope AND c.key = sh.key
        WHERE verifyd_is_shared(q.s, q.l) AND c.expires_at > now()
          AND sh.window_ends = c.expires_at AND sh.count > 0
        ORDER BY sh.scope, sh.key, sh.shard = verifyd_shard() DESC, sh.shard
    ) AS pick
    WHERE s.scope = pick.scope AND s.key = pick.key AND s.shard = pick.shard AND s.count > 0;
    -- The number's rows, the number's before the network's as a send locks them. The soft and
    -- the hard quota of one window share a count, which is taken back once.
    FOR v_row IN 1 .. 2 LOOP
        UPDATE number_counters c
        SET short_n = CASE WHEN x.short AND c.short_end > now() AND c.short_n > 0
                           THEN c.short_n - 1 ELSE c.short_n END,
            day_n = CASE WHEN x.day AND c.day_end > now() AND c.day_n > 0
                         THEN c.day_n - 1 ELSE c.day_n END
        FROM (
            SELECT min(q.k) AS k,
                   bool_or(verifyd_number_slot(q.s) = 2 * v_row - 1) AS short,
                   bool_or(verifyd_number_slot(q.s) = 2 * v_row) AS day
            FROM unnest(p_scopes, p_keys) AS q (s, k)
            WHERE (verifyd_number_slot(q.s) + 1) / 2 = v_row
        ) AS x
        WHERE c.key = x.k;
    END LOOP;
    PERFORM 1 FROM quota_counters c
        JOIN unnest(p_scopes, p_keys, p_limits) AS q (s, k, l) ON c.scope = q.s AND c.key = q.k
        WHERE NOT verifyd_is_shared(c.scope, q.l)
        ORDER BY c.scope, c.key
        FOR UPDATE OF c;
    UPDATE quota_counters c
    SET count = c.count - 1
    FROM unnest(p_scopes, p_keys, p_limits) AS q (s, k, l)
    WHERE c.scope = q.s AND c.key = q.k AND NOT verifyd_is_shared(c.scope, q.l)
      AND c.expires_at > now() AND c.count > 0;
END
$$;
