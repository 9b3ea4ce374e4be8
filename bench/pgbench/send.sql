-- What the daemon sends to PostgreSQL for one POST /v1/verifications from a browser with a
-- live session, in bench/run's configuration (abuse limits off, the shipped
-- `verification.resend = "same_code"`): src/store/postgres/verifications.rs START_SEND, the
-- PL/pgSQL function of migrations/postgres/0013 (0010's send, as 0012 and 0013 extended it)
-- that resolves the cookie's session by its key hash (sliding it when due), applies the resend
-- rules, keeps or replaces the live code and records it. One statement, one round trip, as the
-- daemon's. The key hash and phone are computed here from random numbers (the daemon computes
-- them itself); the code MAC and nonce are constants of the right size. With the limits off the guard is empty: no quota
-- arrays, no country for the pumping breaker (`SendGuard::build`, `PgStore::start_send`).
\set i random(0, 999)
\set d random(5, 9)
\set ph random(0, 999999)
SELECT o_outcome, o_attempts, o_resend, o_retry_at, o_refused, o_tripped, o_now, o_nonce,
       o_ttl, o_created, o_refreshed,
       o_id AS id, o_data AS data, o_expiry_kind AS expiry_kind, o_idle_secs AS idle_secs,
       o_created_at AS created_at, o_expires_at AS expires_at, o_data_json AS data_json,
       o_version AS version
FROM verifyd_send(
    sha256(('s' || lpad(:i::text, 31, '0'))::bytea),  -- the cookie's key hash
    NULL::bytea,                                -- no session to create: the cookie names one
    60::bigint,                                 -- session.refresh_interval
    '+1201' || :d || lpad(:ph::text, 6, '0'),   -- phone, E.164
    '\x0102030405060708091011121314151617181920212223242526272829303132'::bytea,  -- fresh MAC
    '\x01020304050607080910111213141516'::bytea,  -- its nonce
    2::float8,                                  -- same_code: keep the live code 2 s before its end
    10800::float8,                              -- verification.max_code_lifetime (3 × ttl)
    3600::float8,                               -- verification.ttl
    1::float8,                                  -- verification.resend_interval
    100,                                        -- verification.max_attempts
    '{}'::text[], '{}'::text[], '{}'::integer[], '{}'::float8[],  -- hard quotas: none (limits off)
    '{}'::text[], '{}'::text[], '{}'::integer[], '{}'::float8[],  -- soft quotas: none
    NULL::text,                                 -- country: none (pumping.enabled = false)
    0::float8, 0::integer, 0::float8,           -- pumping window, sample, conversion (unused)
    false, false, true, true,                   -- challenge: passed, always, when suspicious, on trip
    0::smallint, NULL::integer,                 -- a new session's expiry policy (unused)
    1209600::bigint, NULL::bigint,              -- session.default_age, max_lifetime (none)
    '{}'::integer[], false,                     -- no blocks asked for, no slots spent
    false, 0, NULL::timestamptz);               -- no breaker
