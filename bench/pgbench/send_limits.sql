-- bench/pgbench/send.sql with the limits of bench/run's `limits=on` daemon: the arguments that
-- daemon binds for one send from wrk's one address (127.0.0.1) to a new number, as read from
-- the PostgreSQL log of a run. Hard quotas: the number's two hard caps, the address's and its
-- /24's budgets (raised to 10^9, so sharded), the number's two caps from that network and the
-- global cap (10^9, counting); soft quotas: the number's two challenge thresholds; the breaker
-- of +1 counts every send (min_conversion 0: it cannot trip); challenge mode when_suspicious
-- with `on_trip = "challenge"`. The database's share of a send with the limits on.
-- Since schema 13 the daemon leases blocks of the shared quotas (the address's and network's
-- budgets, the global cap: blocks of 256) and judges and counts the breaker in memory (added
-- every 16 sends at most): this is the call of the sends in between, at least 15 of every 16,
-- which pass only the exact quotas. The others ask for a block or add the breaker's counts too.
-- Since schema 14 those exact quotas, all the number's, are counted in two rows of
-- number_counters (the number's, and the number's from 127.0.0.0/24).
\set i random(0, 999)
\set d random(5, 9)
\set ph random(0, 999999)
SELECT o_outcome, o_attempts, o_resend, o_retry_at, o_refused, o_tripped, o_now, o_nonce,
       o_ttl, o_created, o_refreshed,
       o_id AS id, o_data AS data, o_expiry_kind AS expiry_kind, o_idle_secs AS idle_secs,
       o_created_at AS created_at, o_expires_at AS expires_at, o_data_json AS data_json,
       o_version AS version
FROM verifyd_send(
    sha256(('s' || lpad(:i::text, 31, '0'))::bytea), NULL::bytea, 60::bigint,
    '+1201' || :d || lpad(:ph::text, 6, '0'),
    '\x0102030405060708091011121314151617181920212223242526272829303132'::bytea,
    '\x01020304050607080910111213141516'::bytea,
    2::float8, 10800::float8, 3600::float8, 1::float8, 100,
    '{phone_hard_sends,phone_hard_daily,phone_net_sends,phone_net_daily}'::text[],
    ARRAY['+1201' || :d || lpad(:ph::text, 6, '0'), '+1201' || :d || lpad(:ph::text, 6, '0'),
          '+1201' || :d || lpad(:ph::text, 6, '0') || ' 127.0.0.0/24',
          '+1201' || :d || lpad(:ph::text, 6, '0') || ' 127.0.0.0/24'],
    '{10,20,3,5}'::integer[],
    '{600,86400,600,86400}'::float8[],
    '{phone_sends,phone_daily}'::text[],
    ARRAY['+1201' || :d || lpad(:ph::text, 6, '0'), '+1201' || :d || lpad(:ph::text, 6, '0')],
    '{5,10}'::integer[], '{600,86400}'::float8[],
    '+1', 3600::float8, 50, 0::float8,          -- breaker: country, window, sample, conversion
    false, false, true, true,                   -- passed, always, when_suspicious, on_trip
    0::smallint, NULL::integer, 1209600::bigint, NULL::bigint,
    '{0,0,0,0,0,0}'::integer[], false,          -- blocks: none asked for; slots spent: no challenge
    true, 0, NULL::timestamptz);                -- breaker judged and counted by the daemon
