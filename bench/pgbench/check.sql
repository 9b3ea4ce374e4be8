-- What the daemon sends to PostgreSQL for one POST /v1/verifications/check with a wrong code
-- from a browser with a live session, in bench/run's configuration (abuse limits off):
-- src/store/postgres/verifications.rs CHECK, the PL/pgSQL function of
-- migrations/postgres/0010 that resolves the cookie's session by its key hash (sliding it when
-- due) and decides the check, with the parameters the daemon binds, on the same seeded "w"
-- sessions and their own numbers as the wrk run (bench/seed.py). One statement, one round trip,
-- as the daemon's. With the limits off the guard has no quotas, no failure limit (fail_max 0;
-- the function still locks and counts the number's failure counter) and no country
-- (`CheckGuard::build`, `PgStore::check_guarded`).
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
    '{}'::text[], '{}'::text[], '{}'::integer[], '{}'::float8[],  -- quotas: none (limits off)
    0, 3600::float8, 0::float8,                 -- failure limit off: max 0, window, lockout
    NULL::text, 0::float8,                      -- country: none (pumping.enabled = false)
    NULL::text, 0,                              -- client network: none (limits off), its limit
    '{}'::integer[]);                           -- no blocks asked for
