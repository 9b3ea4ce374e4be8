-- bench/pgbench/send_limits.sql for a browser whose address is under the per-address limits
-- (`per_ip.max_sends`, `prefix_max_sends`) as shipped, as almost every real browser's is: limits
-- under 1024 are counted exactly, in one row of quota_counters each (the address's and its
-- /24's), not leased, so the send counts and judges them with the number's. bench/run's one wrk
-- client needs those limits raised past any exact row, so its daemon never takes this path;
-- bench/instructions counts it. The limits here are 1000 (the largest still exact) rather than
-- the shipped 20 and 200, so that 500 calls from one address are not refused.
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
    '{phone_hard_sends,phone_hard_daily,ip_sends,prefix_sends,phone_net_sends,phone_net_daily}'::text[],
    ARRAY['+1201' || :d || lpad(:ph::text, 6, '0'), '+1201' || :d || lpad(:ph::text, 6, '0'),
          '127.0.0.1', '127.0.0.0/24',
          '+1201' || :d || lpad(:ph::text, 6, '0') || ' 127.0.0.0/24',
          '+1201' || :d || lpad(:ph::text, 6, '0') || ' 127.0.0.0/24'],
    '{10,20,1000,1000,3,5}'::integer[],
    '{600,86400,3600,3600,600,86400}'::float8[],
    '{phone_sends,phone_daily}'::text[],
    ARRAY['+1201' || :d || lpad(:ph::text, 6, '0'), '+1201' || :d || lpad(:ph::text, 6, '0')],
    '{5,10}'::integer[], '{600,86400}'::float8[],
    '+1', 3600::float8, 50, 0::float8,          -- breaker: country, window, sample, conversion
    false, false, true, true,                   -- passed, always, when_suspicious, on_trip
    0::smallint, NULL::integer, 1209600::bigint, NULL::bigint,
    '{0,0,0,0,0,0,0,0}'::integer[], false,      -- blocks: none asked for; slots spent: no challenge
    true, 0, NULL::timestamptz);                -- breaker judged and counted by the daemon
