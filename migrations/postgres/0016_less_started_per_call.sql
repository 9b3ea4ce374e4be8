-- verifyd schema, version 16: a send and a check start less work they do not use (issue 13).
--
-- Measured by counting the instructions PostgreSQL runs (valgrind's callgrind, bench/instructions),
-- which, unlike the throughput of this shared machine, gives the same figure on every run. Three
-- costs that every send or check paid for nothing in the usual case:
--
-- * The session was resolved by a nested call of verifyd_resolve_session, whose UPDATE (sliding
--   the session when due) runs on every call and usually finds nothing to slide. The session is
--   now read by one SELECT, and the function is called only when the session is due to slide.
-- * verifyd_send decided a challenge in one IF whose expression held eight subqueries; the
--   executor starts every one of them whenever the expression is evaluated, even when the first
--   terms settle it. The simple terms now decide alone, and the subqueries are gone (below).
-- * verifyd_check_leased called verifyd_take_quotas with no quotas left to take (all of them
--   leased, or the limits off), a nested call that returned at once.
--
-- And one cost of the sends that count quotas other than the number's, as a browser's send does
-- with the shipped per-address limits (exact rows under 1024): the send judged its quotas with
-- two statements over the whole set, a UNION that names the refusing quota and eight subqueries
-- that decide a challenge. A loop over the quotas now applies the same rules one by one, as the
-- numbers-only path already did.
--
-- Per call, in PostgreSQL's own instructions (bench/instructions: bench/pgbench's statements,
-- 500 calls each):
--   send, limits off                           1 186 000 -> 867 000   (-27%)
--   send, limits on (bench/run's, leased)      1 692 000 -> 1 365 000 (-19%)
--   send, limits on, per-address limits exact  2 596 000 -> 1 865 000 (-28%)
--   check, limits off                          1 015 000 -> 847 000   (-17%)
--   check, limits on                           1 249 000 -> 1 080 000 (-14%)
--   check, limits on, per-address budget exact 1 665 000 -> 1 536 000 (-8%)
--
-- Both functions keep their signatures and answers, so daemons of versions 10 to 15 go on serving
-- next to upgraded ones.

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
    -- The number's rows: keys by row (1 the number's, 2 the number's from the network),
    -- windows, counts and ends by slot (verifyd_number_slot).
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
    -- The least limit of any of the number's quotas by slot: a count under it in every slot
    -- can neither refuse nor ask for a challenge.
    v_nmin      INTEGER[] := '{NULL,NULL,NULL,NULL}';
    v_slide     BOOLEAN;
    v_j         INTEGER;
    v_hit       BOOLEAN;
    v_granted   BOOLEAN;
BEGIN
    o_tripped := false;
    o_created := false;
    o_refreshed := false;
    -- The session is read here, and slid by verifyd_resolve_session only when it is due:
    -- calling that function on every send (its UPDATE, which usually finds nothing, then the
    -- read, both behind a nested call) cost a send about a tenth of its database work.
    SELECT s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
           s.data_json, s.version, s.touched_at <= now() - make_interval(secs => p_refresh)
    INTO o_id, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at,
         o_data_json, o_version, v_slide
    FROM sessions s
    WHERE s.key_hash = p_key AND (s.expires_at IS NULL OR s.expires_at > now());
    IF v_slide THEN
        SELECT s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
               s.data_json, s.version, s.refreshed
        INTO o_id, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at,
             o_data_json, o_version, o_refreshed
        FROM verifyd_resolve_session(p_key, p_default_age, p_max_lifetime, p_refresh) s;
    END IF;
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
            v_nk[(v_slot + 1) / 2] := v_all_k[i];
            v_nw[v_slot] := v_all_w[i];
            v_nmin[v_slot] := least(v_nmin[v_slot], v_all_l[i]);
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
    -- Every quota is judged here, one by one, by the rules the statements of version 15 applied
    -- to the whole set: a hard quota whose count before this send has reached its limit
    -- refuses, and the one that frees up last (then by scope and key, bytewise) is named; a soft
    -- one reached, or one that looks suspicious, asks for a challenge. A grant is judged by its
    -- slots: a hard one with none granted refuses, a soft one whose position reaches the limit
    -- asks. Those statements (a UNION of the counted, sharded and granted quotas, then eight
    -- subqueries) cost a browser's send with the shipped per-address limits about a quarter of
    -- its database work; the loop costs a fraction of that.
    v_numbers_only := cardinality(v_scopes) = 0 AND cardinality(v_sh_i) = 0
        AND cardinality(v_gr_i) = 0;
    -- With only the number's quotas (the usual case once the leases cover the shared ones) the
    -- loop runs only where it can find something: when a count, this send's included, is past
    -- the least limit of its slot. Under every limit a number's quota refuses nothing and asks
    -- for nothing (they are never suspicious).
    IF NOT v_numbers_only OR v_nn[1] > v_nmin[1] OR v_nn[2] > v_nmin[2] OR v_nn[3] > v_nmin[3]
       OR v_nn[4] > v_nmin[4] THEN
        FOR i IN 1 .. cardinality(v_all_s) LOOP
            -- This quota's count with this send (or a grant's position and slots) and its end.
            v_n := NULL;
            v_granted := false;
            v_slot := verifyd_number_slot(v_all_s[i]);
            IF v_slot IS NOT NULL THEN
                v_n := v_nn[v_slot];
                v_end := v_ne[v_slot];
            ELSE
                FOR k IN 1 .. cardinality(v_ex_s) LOOP
                    IF v_ex_s[k] = v_all_s[i] AND v_ex_k[k] = v_all_k[i] THEN
                        v_n := v_ex_n[k];
                        v_end := v_ex_e[k];
                        EXIT;
                    END IF;
                END LOOP;
                IF v_n IS NULL THEN
                    v_j := array_position(v_sh_i, i);
                    IF v_j IS NOT NULL THEN
                        v_n := v_sh_sum[v_j];
                        v_end := v_sh_end[v_j];
                    ELSE
                        v_j := array_position(v_gr_i, i);
                        v_granted := true;
                        v_pos := v_gr_pos[v_j];
                        v_end := v_gr_end[v_j];
                    END IF;
                END IF;
            END IF;
            IF NOT v_granted THEN
                v_hit := i <= v_hard AND v_n - 1 >= v_all_l[i];
                v_warn := v_warn OR coalesce(i > v_hard AND v_n - 1 >= v_all_l[i], false)
                    OR coalesce(p_suspicious
                                AND verifyd_suspicious_at(v_all_s[i], v_n - 1, v_all_l[i]), false);
            ELSE
                v_hit := i <= v_hard AND v_gr_n[v_j] = 0 AND p_blocks[i] > 0;
                v_warn := v_warn OR coalesce(p_blocks[i] > 0 AND i > v_hard
                                             AND v_pos >= v_all_l[i], false)
                    OR coalesce(p_suspicious AND p_blocks[i] > 0
                                AND verifyd_suspicious_at(v_all_s[i], v_pos, v_all_l[i]), false);
            END IF;
            IF v_hit AND (o_refused IS NULL OR v_end > o_retry_at
                          OR (v_end = o_retry_at
                              AND (v_all_s[i] COLLATE "C" < o_refused COLLATE "C"
                                   OR (v_all_s[i] = o_refused
                                       AND v_all_k[i] COLLATE "C" < v_refused_k COLLATE "C")))) THEN
                o_refused := v_all_s[i];
                o_retry_at := v_end;
                v_refused_k := v_all_k[i];
            END IF;
        END LOOP;
    END IF;
    IF o_refused IS NULL AND NOT p_passed
       AND (p_always OR v_tripped OR coalesce(p_covered_challenge, false) OR v_warn) THEN
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

CREATE OR REPLACE FUNCTION verifyd_check_leased(
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
    v_slide     BOOLEAN;
BEGIN
    o_refreshed := false;
    -- The session is read here, and slid by verifyd_resolve_session only when it is due, as
    -- in verifyd_send.
    SELECT s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
           s.data_json, s.version, s.touched_at <= now() - make_interval(secs => p_refresh)
    INTO v_session, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at,
         o_data_json, o_version, v_slide
    FROM sessions s
    WHERE s.key_hash = p_key AND (s.expires_at IS NULL OR s.expires_at > now());
    IF v_slide THEN
        SELECT s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at,
               s.data_json, s.version, s.refreshed
        INTO v_session, o_data, o_expiry_kind, o_idle_secs, o_created_at, o_expires_at,
             o_data_json, o_version, o_refreshed
        FROM verifyd_resolve_session(p_key, p_default_age, p_max_lifetime, p_refresh) s;
    END IF;
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
    -- With no exact quota left (the limits off, or all of them leased) there is nothing to take.
    IF o_refused IS NULL AND cardinality(v_scopes) > 0 THEN
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
