-- bench/pgbench/check.sql with the limits of bench/run's `limits=on` daemon: the address's
-- check budget (raised to 10^9, so sharded), the number's failure limit of 50 with its lock-out,
-- the number's failure count from wrk's /24 (raised to 10^9, counting) and the breaker's
-- country. A wrong code, as in the wrk run. The database's share of a check with the limits on.
-- Since schema 13 the daemon leases blocks of the address's check budget (256 at a time), so
-- this is the call of the checks in between, which leave it out; one in 128 also asks for the
-- next block.
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
    '{}'::text[], '{}'::text[], '{}'::integer[], '{}'::float8[],   -- the address's budget: leased
    50, 3600::float8, 3600::float8,             -- failure limit: max, window, lockout
    '+1'::text, 0::float8,                      -- the breaker's country, min_conversion
    '127.0.0.0/24'::text, 1000000000,           -- client network, its failure limit
    '{}'::integer[]);                           -- no blocks asked for
