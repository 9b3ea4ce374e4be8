-- What the daemon sends to PostgreSQL for one POST /v1/verifications from a browser with a
-- live session (src/store/postgres.rs: TOUCH, then START_VERIFICATION), with the parameters
-- the daemon binds. Two round trips. The key hash and phone are computed here from random
-- numbers (the daemon computes them itself); the code MAC is a constant of the right size.
\set i random(0, 999)
\set ph random(0, 9999999)
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
WITH old AS (
    SELECT state, sent_at, expires_at FROM verifications
    WHERE session_id = :id AND phone = '+1555' || lpad(:ph::text, 7, '0')
), up AS (
    INSERT INTO verifications AS v
        (session_id, phone, code_mac, state, attempts, created_at, sent_at, expires_at)
    VALUES (:id, '+1555' || lpad(:ph::text, 7, '0'),
            '\x0102030405060708091011121314151617181920212223242526272829303132'::bytea,
            0, 0, now(), now(), now() + make_interval(secs => 3600::float8))
    ON CONFLICT (session_id, phone) DO UPDATE SET
        code_mac = excluded.code_mac,
        state = 0,
        sent_at = now(),
        expires_at = excluded.expires_at,
        attempts = CASE WHEN v.state = 0 AND v.expires_at > now() THEN v.attempts ELSE 0 END,
        created_at = CASE WHEN v.state = 0 AND v.expires_at > now() THEN v.created_at
                          ELSE now() END
    WHERE v.expires_at <= now() OR v.state = 1
       OR (v.state = 0 AND v.sent_at <= now() - make_interval(secs => 1::float8))
    RETURNING v.attempts, v.created_at < now() AS resend
)
SELECT up.attempts, up.resend, old.state, old.sent_at, old.expires_at, now() AS now
FROM (VALUES (1)) AS one (x) LEFT JOIN up ON true LEFT JOIN old ON true;
