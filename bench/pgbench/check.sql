-- What the daemon sends to PostgreSQL for one POST /v1/verifications/check with a wrong code
-- from a browser with a live session (src/store/postgres.rs: TOUCH, then CHECK_VERIFICATION),
-- on the same seeded "w" sessions the wrk run uses. Two round trips.
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
WITH cur AS (
    SELECT v.state, v.expires_at > now() AS live,
           EXISTS (SELECT 1 FROM sessions s
                   WHERE s.id = v.session_id
                     AND (s.expires_at IS NULL OR s.expires_at > now())) AS session_live
    FROM verifications v WHERE v.session_id = :id AND v.phone = '+15550001000'
), ver AS (
    UPDATE verifications v
    SET state = CASE WHEN v.code_mac = '\x00'::bytea THEN 1
                     WHEN v.attempts + 1 >= 100 THEN 2
                     ELSE 0 END,
        attempts = v.attempts + CASE WHEN v.code_mac = '\x00'::bytea THEN 0 ELSE 1 END
    WHERE v.session_id = :id AND v.phone = '+15550001000' AND v.state = 0
      AND v.expires_at > now()
      AND EXISTS (SELECT 1 FROM sessions s
                  WHERE s.id = :id AND (s.expires_at IS NULL OR s.expires_at > now()))
    RETURNING v.state, v.attempts
), sess AS (
    UPDATE sessions s
    SET key_hash = '\x00'::bytea,
        data = s.data || '{}'::jsonb,
        touched_at = now(),
        expires_at = verifyd_session_expiry(s.expiry_kind, s.idle_secs, s.created_at, 1209600,
                                            NULL)
    FROM ver
    WHERE ver.state = 1 AND s.id = :id AND (s.expires_at IS NULL OR s.expires_at > now())
    RETURNING s.id, s.data, s.expiry_kind, s.idle_secs, s.created_at, s.expires_at
)
SELECT cur.state AS cur_state, cur.live, cur.session_live,
       ver.state AS new_state, ver.attempts, sess.*
FROM (VALUES (1)) AS one (x)
    LEFT JOIN cur ON true LEFT JOIN ver ON true LEFT JOIN sess ON true;
