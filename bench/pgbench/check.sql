-- What the daemon sends to PostgreSQL for one POST /v1/verifications/check with a wrong code
-- from a browser with a live session, in bench/run's configuration (abuse limits off):
-- src/store/postgres.rs TOUCH, then CHECK (the PL/pgSQL function of
-- migrations/postgres/0002), each statement text as in the source, with the parameters the
-- daemon binds, on the same seeded "w" sessions and their own numbers as the wrk run
-- (bench/seed.py). Two round trips. With the limits off the guard has no quotas, no failure
-- limit (fail_max 0; the function still locks and counts the number's failure counter) and no
-- country (`CheckGuard::build`, `PgStore::check_guarded`).
\set i random(0, 4999)
WITH slid AS (
    UPDATE sessions
    SET touched_at = now(),
        expires_at = verifyd_session_expiry(expiry_kind, idle_secs, created_at, 1209600, NULL)
    WHERE key_hash = sha256(('w' || lpad(:i::text, 31, '0'))::bytea)
      AND (expires_at IS NULL OR expires_at > now())
      AND touched_at <= now() - make_interval(secs => 60::bigint)
    RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at
)
SELECT id, data, expiry_kind, idle_secs, created_at, expires_at, true AS refreshed FROM slid
UNION ALL
SELECT id, data, expiry_kind, idle_secs, created_at, expires_at, false FROM sessions
WHERE key_hash = sha256(('w' || lpad(:i::text, 31, '0'))::bytea)
  AND (expires_at IS NULL OR expires_at > now())
  AND NOT EXISTS (SELECT 1 FROM slid)
\gset
SELECT o_outcome, o_attempts, o_retry_at, o_refused, o_now,
       o_id AS id, o_data AS data, o_expiry_kind AS expiry_kind, o_idle_secs AS idle_secs,
       o_created_at AS created_at, o_expires_at AS expires_at
FROM verifyd_check(
    :id,                                        -- session id (from TOUCH)
    '+12016' || lpad(:i::text, 6, '0'),         -- the session's own number (bench/seed.py)
    '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea,  -- wrong MAC
    100,                                        -- verification.max_attempts
    '\x0102030405060708091011121314151617181920212223242526272829303132'::bytea,  -- new key hash
    '{"verified_phone": "+12016000000", "verified_at": "2026-01-01T00:00:00Z"}'::jsonb,
    1209600::bigint, NULL::bigint,              -- session.default_age, max_lifetime (none)
    '{}'::text[], '{}'::text[], '{}'::integer[], '{}'::float8[],  -- quotas: none (limits off)
    0, 3600::float8, 0::float8,                 -- failure limit off: max 0, window, lockout
    NULL::text, 0::float8,                      -- country: none (pumping.enabled = false)
    NULL::text, 0);                             -- client network: none (limits off), its limit
