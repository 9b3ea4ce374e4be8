-- What the daemon sends to PostgreSQL for one POST /v1/verifications from a browser with a
-- live session, in bench/run's configuration (abuse limits off): src/store/postgres.rs TOUCH,
-- then START_SEND (the PL/pgSQL function of migrations/postgres/0008), each statement text as
-- in the source, with the parameters the daemon binds. Two round trips. The key hash and phone
-- are computed here from random numbers (the daemon computes them itself); the code MAC is a
-- constant of the right size. With the limits off the guard is empty: no quota arrays, no
-- country for the pumping breaker (`SendGuard::build`, `PgStore::start_send`).
\set i random(0, 999)
\set d random(5, 9)
\set ph random(0, 999999)
WITH slid AS (
    UPDATE sessions
    SET touched_at = now(),
        expires_at = verifyd_session_expiry(expiry_kind, idle_secs, created_at, 1209600, NULL)
    WHERE key_hash = sha256(('s' || lpad(:i::text, 31, '0'))::bytea)
      AND (expires_at IS NULL OR expires_at > now())
      AND touched_at <= now() - make_interval(secs => 60::bigint)
    RETURNING id, data, expiry_kind, idle_secs, created_at, expires_at
)
SELECT id, data, expiry_kind, idle_secs, created_at, expires_at, true AS refreshed FROM slid
UNION ALL
SELECT id, data, expiry_kind, idle_secs, created_at, expires_at, false FROM sessions
WHERE key_hash = sha256(('s' || lpad(:i::text, 31, '0'))::bytea)
  AND (expires_at IS NULL OR expires_at > now())
  AND NOT EXISTS (SELECT 1 FROM slid)
\gset
SELECT * FROM verifyd_start_send(
    :id,                                        -- session id (from TOUCH)
    '+1201' || :d || lpad(:ph::text, 6, '0'),         -- phone, E.164
    '\x0102030405060708091011121314151617181920212223242526272829303132'::bytea,  -- code MAC
    3600::float8,                               -- verification.ttl
    1::float8,                                  -- verification.resend_interval
    100,                                        -- verification.max_attempts
    '{}'::text[], '{}'::text[], '{}'::integer[], '{}'::float8[],  -- hard quotas: none (limits off)
    '{}'::text[], '{}'::text[], '{}'::integer[], '{}'::float8[],  -- soft quotas: none
    NULL::text,                                 -- country: none (pumping.enabled = false)
    0::float8, 0::integer, 0::float8,           -- pumping window, sample, conversion (unused)
    false, false, true, true,                   -- challenge: passed, always, when suspicious, on trip
    NULL::bytea, 0::smallint, NULL::integer,    -- no new session: the cookie's
    1209600::bigint, NULL::bigint);             -- session.default_age, max_lifetime (none)
