-- verifyd schema, version 8: the deployment-wide counters stop being single hot rows. Until
-- version 7 every send locked the one `global` quota row and its country's breaker row and held
-- both through its commit, so all sends of all daemons queued on two rows. Now the global and
-- per-country hourly caps and the breaker's send and approval counts are split into SHARDS rows
-- each; a send adds one to the shard of its connection, then decides on the sum of the shards.
-- The per-number, per-address and per-network counters stay single rows, locked and exact.
--
-- The caps and the breaker stay exact (the argument is in docs/performance.md). A send adds
-- itself to its shard *before* it reads the sum and holds that shard's row lock until it
-- commits, so at most SHARDS - 1 sends it cannot see are in flight: when no limit or threshold
-- lies within that distance of the sum, the sum decides exactly, and nothing waits. Near one, the
-- send takes its increment back (a subtransaction, so the shard's lock goes too), locks every
-- shard of the counter in shard order, waiting for the sends in flight, and decides on the exact
-- count: only sends near a mark queue, and only behind each other.
--
-- Also here (issue 11 item 5): verification states by name instead of bare 0/1/2; a live
-- verification whose attempts reached a lowered `max_attempts` is exhausted for sends as it is
-- for checks (as on SQLite); `verifyd_abandon_send` touches only a pending code (as on SQLite).

-- The states of `verifications.state` (the CHECK of version 1 allows exactly these three).
CREATE FUNCTION verifyd_pending() RETURNS SMALLINT LANGUAGE sql IMMUTABLE AS 'SELECT 0::smallint';
CREATE FUNCTION verifyd_approved() RETURNS SMALLINT LANGUAGE sql IMMUTABLE AS 'SELECT 1::smallint';
CREATE FUNCTION verifyd_exhausted() RETURNS SMALLINT LANGUAGE sql IMMUTABLE AS 'SELECT 2::smallint';

-- The shard a send on this connection counts in. Per connection rather than random: one
-- connection runs one transaction at a time, so it never waits for itself, and the pools' many
-- connections spread over all shards.
CREATE FUNCTION verifyd_shard() RETURNS SMALLINT LANGUAGE sql STABLE
AS 'SELECT (pg_backend_pid() % 16)::smallint';

-- Which quotas are sharded: the ones every send of a deployment or a country shares, and a
-- client address's or network's when its limit is large (at least 1024, 64 × the shards):
-- only then can many sends from one address be expected at once (a carrier's NAT, a proxy),
-- and the sum is far from the limit for all but its last few percent. Small per-address limits
-- (the shipped 20 and 200 per hour) keep one exact row each: a shard row per connection would
-- cost more than the rare wait. A limit changed across 1024 during a window starts that
-- counter afresh (its counts are in the other form).
CREATE FUNCTION verifyd_is_shared(p_scope TEXT, p_limit INTEGER) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE
AS $$
    SELECT p_scope IN ('global', 'country')
        OR (p_scope IN ('ip_sends', 'prefix_sends', 'ip_checks') AND p_limit >= 1024)
$$;

-- Counts of a shared quota. The window itself stays in `quota_counters` (its `count` is 0 for
-- these scopes): a shard's count belongs to the window ending at `window_ends`, and a count of
-- an older window is worth nothing.
CREATE TABLE quota_shards (
    scope       TEXT        NOT NULL,
    key         TEXT        NOT NULL,
    shard       SMALLINT    NOT NULL,
    window_ends TIMESTAMPTZ NOT NULL,
    count       INTEGER     NOT NULL CHECK (count >= 0),
    PRIMARY KEY (scope, key, shard)
);

-- The breaker's counts, the same way: `pumping` keeps the window and the tripped flag.
CREATE TABLE pumping_shards (
    country     TEXT        NOT NULL,
    shard       SMALLINT    NOT NULL,
    window_ends TIMESTAMPTZ NOT NULL,
    sends       INTEGER     NOT NULL CHECK (sends >= 0),
    approvals   INTEGER     NOT NULL CHECK (approvals >= 0),
    PRIMARY KEY (country, shard)
);

-- Running windows keep what they counted.
INSERT INTO quota_shards (scope, key, shard, window_ends, count)
SELECT scope, key, 0, expires_at, count FROM quota_counters
WHERE scope IN ('global', 'country') AND expires_at > now();
UPDATE quota_counters SET count = 0 WHERE scope IN ('global', 'country');
INSERT INTO pumping_shards (country, shard, window_ends, sends, approvals)
SELECT country, 0, expires_at, sends, approvals FROM pumping WHERE expires_at > now();
UPDATE pumping SET sends = 0, approvals = 0;

-- The end of the running window of a shared quota, opening a new one when the last is over.
-- No statement here locks a window row that is still running (an `ON CONFLICT DO UPDATE` would,
-- even when its WHERE refuses the update): the row is locked once per window, by its renewal.
CREATE FUNCTION verifyd_quota_window(p_scope TEXT, p_key TEXT, p_window FLOAT8)
RETURNS TIMESTAMPTZ
LANGUAGE plpgsql AS $$
DECLARE
    v_end TIMESTAMPTZ;
BEGIN
    SELECT expires_at INTO v_end FROM quota_counters WHERE scope = p_scope AND key = p_key;
    IF v_end > now() THEN
        RETURN v_end;
    END IF;
    INSERT INTO quota_counters (scope, key, count, expires_at)
    VALUES (p_scope, p_key, 0, now() + make_interval(secs => p_window))
    ON CONFLICT (scope, key) DO NOTHING
    RETURNING expires_at INTO v_end;
    IF v_end IS NULL THEN
        UPDATE quota_counters SET count = 0, expires_at = now() + make_interval(secs => p_window)
        WHERE scope = p_scope AND key = p_key AND expires_at <= now()
        RETURNING expires_at INTO v_end;
    END IF;
    IF v_end IS NULL THEN
        -- Another send opened it first (and committed: the statements above waited for it).
        SELECT expires_at INTO v_end FROM quota_counters WHERE scope = p_scope AND key = p_key;
    END IF;
    RETURN v_end;
END
$$;

-- The same for a country's breaker; a new window starts untripped.
CREATE FUNCTION verifyd_pumping_window(p_country TEXT, p_window FLOAT8,
                                       OUT o_end TIMESTAMPTZ, OUT o_tripped BOOLEAN)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT expires_at, tripped INTO o_end, o_tripped FROM pumping WHERE country = p_country;
    IF o_end > now() THEN
        RETURN;
    END IF;
    INSERT INTO pumping (country, sends, approvals, tripped, expires_at)
    VALUES (p_country, 0, 0, false, now() + make_interval(secs => p_window))
    ON CONFLICT (country) DO NOTHING
    RETURNING expires_at, tripped INTO o_end, o_tripped;
    IF o_end IS NULL THEN
        UPDATE pumping SET tripped = false, expires_at = now() + make_interval(secs => p_window)
        WHERE country = p_country AND expires_at <= now()
        RETURNING expires_at, tripped INTO o_end, o_tripped;
    END IF;
    IF o_end IS NULL THEN
        SELECT expires_at, tripped INTO o_end, o_tripped FROM pumping WHERE country = p_country;
    END IF;
END
$$;

-- Adds `p_delta` (1 or -1) to this connection's shard of a shared quota in the window ending at
-- `p_end`, and returns the sum of all shards of that window afterwards. A shard already in a
-- later window (this transaction's clock lags one that renewed it) counts there.
CREATE FUNCTION verifyd_quota_add(p_scope TEXT, p_key TEXT, p_end TIMESTAMPTZ, p_delta INTEGER)
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    v_end TIMESTAMPTZ;
    v_sum BIGINT;
BEGIN
    INSERT INTO quota_shards AS s (scope, key, shard, window_ends, count)
    VALUES (p_scope, p_key, verifyd_shard(), p_end, greatest(p_delta, 0))
    ON CONFLICT (scope, key, shard) DO UPDATE SET
        count = CASE WHEN s.window_ends >= excluded.window_ends
                     THEN greatest(s.count + p_delta, 0) ELSE excluded.count END,
        window_ends = greatest(s.window_ends, excluded.window_ends)
    RETURNING window_ends INTO v_end;
    -- A statement of its own, so that its snapshot follows the lock just taken.
    SELECT coalesce(sum(count), 0) INTO v_sum FROM quota_shards
    WHERE scope = p_scope AND key = p_key AND window_ends = v_end;
    RETURN least(v_sum, 2147483647)::integer;
END
$$;

-- The breaker's counterpart: adds to this connection's shard and returns the window's sums.
CREATE FUNCTION verifyd_pumping_add(p_country TEXT, p_end TIMESTAMPTZ, p_sends INTEGER,
                                    p_approvals INTEGER,
                                    OUT o_sends INTEGER, OUT o_approvals INTEGER)
LANGUAGE plpgsql AS $$
DECLARE
    v_end TIMESTAMPTZ;
BEGIN
    INSERT INTO pumping_shards AS s (country, shard, window_ends, sends, approvals)
    VALUES (p_country, verifyd_shard(), p_end, greatest(p_sends, 0), greatest(p_approvals, 0))
    ON CONFLICT (country, shard) DO UPDATE SET
        sends = CASE WHEN s.window_ends >= excluded.window_ends
                     THEN greatest(s.sends + p_sends, 0) ELSE excluded.sends END,
        approvals = CASE WHEN s.window_ends >= excluded.window_ends
                         THEN greatest(s.approvals + p_approvals, 0) ELSE excluded.approvals END,
        window_ends = greatest(s.window_ends, excluded.window_ends)
    RETURNING window_ends INTO v_end;
    SELECT least(coalesce(sum(sends), 0), 2147483647)::integer,
           least(coalesce(sum(approvals), 0), 2147483647)::integer
    INTO o_sends, o_approvals
    FROM pumping_shards WHERE country = p_country AND window_ends = v_end;
END
$$;

-- Whether counts trip the breaker.
CREATE FUNCTION verifyd_pumping_trips(p_sends INTEGER, p_approvals INTEGER, p_sample INTEGER,
                                      p_conversion FLOAT8)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE
AS $$ SELECT p_sends >= p_sample AND p_approvals < p_conversion * p_sends $$;

-- Counts this send in a shared quota and returns the count before it, exact as far as any of
-- `p_marks` is concerned (a count c is at or past mark m when c >= m): from the shards' sum when
-- the sends it cannot see could not carry it across a mark, else after waiting for them.
CREATE FUNCTION verifyd_quota_count(p_scope TEXT, p_key TEXT, p_end TIMESTAMPTZ,
                                    p_marks INTEGER[])
RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    v_sum INTEGER;
BEGIN
    BEGIN
        v_sum := verifyd_quota_add(p_scope, p_key, p_end, 1);
        IF NOT EXISTS (SELECT 1 FROM unnest(p_marks) AS m
                       WHERE m > v_sum - 1 AND m <= v_sum - 1 + 15) THEN
            RETURN v_sum - 1;
        END IF;
        RAISE SQLSTATE 'VDNEA';
    EXCEPTION WHEN SQLSTATE 'VDNEA' THEN
        -- The increment and its row lock are gone with the subtransaction.
    END;
    INSERT INTO quota_shards (scope, key, shard, window_ends, count)
    SELECT p_scope, p_key, g, p_end, 0 FROM generate_series(0, 15) AS g
    ON CONFLICT (scope, key, shard) DO NOTHING;
    PERFORM 1 FROM quota_shards WHERE scope = p_scope AND key = p_key ORDER BY shard FOR UPDATE;
    RETURN verifyd_quota_add(p_scope, p_key, p_end, 1) - 1;
END
$$;

-- The breaker's counterpart: counts this send and returns the sends before it and the
-- approvals, exact as far as the trip rule is concerned. The sends and approvals it cannot see
-- number at most 15 together (one per other shard), and only unseen sends can trip it.
CREATE FUNCTION verifyd_pumping_count(p_country TEXT, p_end TIMESTAMPTZ, p_sample INTEGER,
                                      p_conversion FLOAT8,
                                      OUT o_sends INTEGER, OUT o_approvals INTEGER)
LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        SELECT a.o_sends - 1, a.o_approvals INTO o_sends, o_approvals
        FROM verifyd_pumping_add(p_country, p_end, 1, 0) a;
        IF NOT verifyd_pumping_trips(o_sends + 15, o_approvals, p_sample, p_conversion) THEN
            RETURN;
        END IF;
        RAISE SQLSTATE 'VDNEA';
    EXCEPTION WHEN SQLSTATE 'VDNEA' THEN
    END;
    INSERT INTO pumping_shards (country, shard, window_ends, sends, approvals)
    SELECT p_country, g, p_end, 0, 0 FROM generate_series(0, 15) AS g
    ON CONFLICT (country, shard) DO NOTHING;
    PERFORM 1 FROM pumping_shards WHERE country = p_country ORDER BY shard FOR UPDATE;
    SELECT a.o_sends - 1, a.o_approvals INTO o_sends, o_approvals
    FROM verifyd_pumping_add(p_country, p_end, 1, 0) a;
END
$$;

-- Sets the flag, unless another transaction holds the window row (it is opening a new window or
-- setting the flag itself): waiting for it while holding a shard could deadlock. The decisions
-- do not depend on it (sends also judge the counts, and a send refused by them sets the flag),
-- only what `verifyd pumping-status` shows, which may then lag by a send.
CREATE FUNCTION verifyd_pumping_flag(p_country TEXT, p_end TIMESTAMPTZ, p_tripped BOOLEAN)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pumping SET tripped = p_tripped
    WHERE country IN (SELECT country FROM pumping
                      WHERE country = p_country AND expires_at = p_end
                        AND tripped IS DISTINCT FROM p_tripped
                      FOR UPDATE SKIP LOCKED);
    RETURN FOUND;
END
$$;

DROP FUNCTION verifyd_start_send(BIGINT, TEXT, BYTEA, FLOAT8, FLOAT8, TEXT[], TEXT[], INTEGER[],
                                 FLOAT8[], TEXT[], TEXT[], INTEGER[], FLOAT8[], TEXT, FLOAT8,
                                 INTEGER, FLOAT8, BOOLEAN, BOOLEAN, BOOLEAN, BOOLEAN, BYTEA,
                                 SMALLINT, INTEGER, BIGINT, BIGINT);

-- A send, as in version 3, with `p_max_attempts` and the shared counters. Order: the
-- verification's own rules; the breaker (this send counted first, so that the sum it decides on
-- is bounded as above); the shared quotas (counted first, likewise); the exact quotas (locked);
-- the fullest hard quota refuses; the challenge; then everything is taken. A refusal gives the
-- shared counts back in the same transaction, so refused sends count nowhere.
CREATE FUNCTION verifyd_start_send(
    p_session         BIGINT,
    p_phone           TEXT,
    p_mac             BYTEA,
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
    v_pump_end  TIMESTAMPTZ;
    v_tripped   BOOLEAN := false;
    v_all_s     TEXT[] := coalesce(p_scopes, '{}') || coalesce(p_soft_scopes, '{}');
    v_all_k     TEXT[] := coalesce(p_keys, '{}') || coalesce(p_soft_keys, '{}');
    v_all_l     INTEGER[] := coalesce(p_limits, '{}') || coalesce(p_soft_limits, '{}');
    v_all_w     FLOAT8[] := coalesce(p_windows, '{}') || coalesce(p_soft_windows, '{}');
    v_hard      INTEGER := coalesce(cardinality(p_scopes), 0);
    -- The exact quotas (indexes into the v_all arrays split by verifyd_is_shared).
    v_scopes    TEXT[] := '{}';
    v_keys      TEXT[] := '{}';
    v_windows   FLOAT8[] := '{}';
    -- The shared ones this send counted in: index, window end, sum with this send.
    v_sh_i      INTEGER[] := '{}';
    v_sh_end    TIMESTAMPTZ[] := '{}';
    v_sh_sum    INTEGER[] := '{}';
    v_end       TIMESTAMPTZ;
    v_counted   BOOLEAN := false;
    i           INTEGER;
BEGIN
    o_tripped := false;
    PERFORM pg_advisory_xact_lock(hashtextextended(p_session::text || ' ' || p_phone, 0));
    -- After waiting for the lock, the transaction's now() may predate the winner's sent_at:
    -- waits are reported from the current clock so that they never exceed the cooldown.
    o_now := clock_timestamp();
    SELECT * INTO r_ver FROM verifications
    WHERE session_id = p_session AND phone = p_phone
    FOR UPDATE;
    v_live := FOUND AND r_ver.state <> verifyd_approved() AND r_ver.expires_at > now();
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
            -- Tripped by the counts before this send, though no send has set the flag yet.
            v_tripped := v_tripped OR verifyd_pumping_trips(v_sends, v_approvals, p_pump_sample,
                                                           p_pump_conversion);
        END IF;
        o_now := clock_timestamp();
        IF v_tripped AND NOT p_on_trip THEN
            IF v_counted THEN
                PERFORM verifyd_pumping_add(p_country, v_pump_end, -1, 0);
                -- The send that tripped it may have found the flag's row busy.
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
            -- The marks: the limit, and for the suspicion rule the first count past it.
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
    -- The full hard quota that frees up last: exact ones by their row, shared ones by the
    -- sum before this send.
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
    VALUES (p_session, p_phone, p_mac, verifyd_pending(), o_attempts, now(), now(),
            now() + make_interval(secs => p_ttl))
    ON CONFLICT (session_id, phone) DO UPDATE SET
        code_mac = excluded.code_mac,
        state = verifyd_pending(),
        attempts = excluded.attempts,
        created_at = CASE WHEN v_live THEN v.created_at ELSE now() END,
        sent_at = now(),
        expires_at = excluded.expires_at;
    IF v_counted
       AND verifyd_pumping_trips(v_sends + 1, v_approvals, p_pump_sample, p_pump_conversion) THEN
        o_tripped := verifyd_pumping_flag(p_country, v_pump_end, true);
    END IF;
    o_outcome := 'issued';
END
$$;

DROP FUNCTION verifyd_abandon_send(BIGINT, TEXT, BYTEA, TEXT[], TEXT[], TEXT, INTEGER, FLOAT8);

-- A send whose delivery failed, as in version 2: only a pending code's cooldown is lifted, and
-- the shared counts are given back to a shard of the running window (this connection's when it
-- has any, as the send most likely ran on it).
CREATE FUNCTION verifyd_abandon_send(
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

-- A check, as in version 3, with the states by name, an exhausted verification being one whose
-- attempts reached `p_max_attempts` (also after it was lowered, as on SQLite), and approvals
-- counted in the breaker's shards.
CREATE OR REPLACE FUNCTION verifyd_check(
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
    -- Shared quotas (a client's large check budget) are counted first, then the exact ones
    -- taken; a refusal by either gives the shared counts back.
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
    v_known := FOUND AND r_ver.state <> verifyd_approved() AND EXISTS (
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
    ELSIF r_ver.state = verifyd_exhausted() OR r_ver.attempts >= p_max_attempts THEN
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
        UPDATE verifications SET state = verifyd_approved() WHERE session_id = p_session AND phone = p_phone;
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
        -- Counted in this connection's shard of the running window; an approval that lifts
        -- the conversion above the minimum closes a tripped breaker.
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
