-- The floor of a send: the least durable work any design must do for one code — one statement
-- that upserts the verification row of an existing session (one of bench/seed.py's 1000 plain
-- sessions, whose ids start at 1 000 000 000) for a random number, and its commit. No session
-- lookup, no limits, no HTTP. bench/run runs it at the daemon's concurrency; the daemon's send
-- and wrong check are compared with it.
\set i random(0, 999)
\set d random(5, 9)
\set ph random(0, 999999)
INSERT INTO verifications AS v
    (session_id, phone, code_mac, state, attempts, created_at, sent_at, expires_at)
VALUES (1000000000 + :i, '+1201' || :d || lpad(:ph::text, 6, '0'),
        '\x0102030405060708091011121314151617181920212223242526272829303132'::bytea,
        0, 0, now(), now(), now() + interval '3600 s')
ON CONFLICT (session_id, phone) DO UPDATE SET
    code_mac = excluded.code_mac, state = 0, attempts = 0, sent_at = now(),
    expires_at = excluded.expires_at;
