-- bench/pgbench/check_limits.sql for a browser whose address is under the per-address check
-- budget (`per_ip.max_checks`) as shipped, as almost every real browser's is: a budget under 1024
-- is counted exactly, in one row of quota_counters, not leased. bench/run's one wrk client needs
-- it raised past any exact row, so its daemon never takes this path; bench/instructions counts
-- it. The budget here is 1000 (the largest still exact) rather than the shipped 100, so that 500
-- calls from one address are not refused.
\set i random(0, 19999)
SELECT o_outcome, o_attempts, o_retry_at, o_refused, o_now, o_refreshed,
       o_id AS id, o_data AS data, o_expiry_kind AS expiry_kind, o_idle_secs AS idle_secs,
       o_created_at AS created_at, o_expires_at AS expires_at, o_data_json AS data_json,
       o_version AS version
FROM verifyd_check_leased(
    sha256(('w' || lpad(:i::text, 31, '0'))::bytea),  -- the cookie's key hash
    60::bigint,                                 -- session.refresh_interval
    '+12016' || lpad(:i::text, 6, '0'),         -- the session's own number (bench/seed.py)
    '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,  -- wrong MAC
    100,                                        -- verification.max_attempts
    '\x0102030405060708091011121314151617181920212223242526272829303132'::bytea,  -- new key hash
    '{"verified_phone": "+12016000000", "verified_at": "2026-01-01T00:00:00Z"}'::jsonb,
    1209600::bigint, NULL::bigint,              -- session.default_age, max_lifetime (none)
    '{ip_checks}'::text[], '{127.0.0.1}'::text[], '{1000}'::integer[], '{3600}'::float8[],  -- exact
    50, 3600::float8, 3600::float8,             -- failure limit: max, window, lockout
    '+1'::text, 0::float8,                      -- the breaker's country, min_conversion
    '127.0.0.0/24'::text, 1000000000,           -- client network, its failure limit
    '{0}'::integer[]);                          -- no blocks asked for
