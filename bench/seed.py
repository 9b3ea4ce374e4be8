#!/usr/bin/env python3
"""Seeds a verifyd store for the benchmark, straight into the database (after the daemon has
migrated it), so that the measured runs need no set-up requests.

Session keys are deterministic so the wrk scripts and pgbench can name them without a file:
  s<31 digits>  SESSIONS plain sessions (send, session get/set)
  w<31 digits>  WRONG sessions, each with a pending code for its own number (+12016<6 digits>)
                whose MAC matches no code
  r<31 digits>  RIGHT sessions, each with a pending code CODE for its own number
                (+12017<6 digits>), one approval each
Every session verifies its own number, as real traffic does: a check locks the number's
failure counter (`quota_counters`, scope phone_failed_checks, schema version 2), so one number
shared by all sessions would serialise every check on one row. bench/lua/common.lua
(`phone_of`) and bench/pgbench/check.sql name the same numbers.
The code MAC is HMAC-SHA256(secret, "verifyd mac 2" || phone || 0 || code) (MAC scheme 2, set
in `mac_scheme`), as in src/code.rs; the daemon is configured with the same
`verification.secret`.
Only `sessions` and `verifications` are seeded: the version 2 tables (quota_counters, pumping,
idempotency_keys) start empty, as on a fresh deployment, and the daemon fills them itself.

usage: seed.py sqlite PATH | seed.py postgres URL
"""
import hashlib
import hmac
import io
import os
import subprocess
import sys
import time

SECRET = b"bench-secret-not-for-production"
PHONE_PREFIX = {"w": "+12016", "r": "+12017"}
CODE = "123456"
SESSIONS = 1000
# Every wrong check of a run (wrk's and pgbench's, both daemons') counts against its number's
# `per_phone.max_failed_checks`, 50 as shipped and in the limits-on daemon: 5000 numbers ran out
# of it on a machine doing 250 000 wrong checks in a run, whose last runs then measured lock-out
# refusals. 20 000 numbers last a million.
WRONG = 20000
RIGHT = 120000
# Explicit ids far above anything the identity sequence will hand out during a run.
BASE_ID = {"s": 1_000_000_000, "w": 1_100_000_000, "r": 1_200_000_000}


def key(kind, i):
    return f"{kind}{i:031d}"


def phone(kind, i):
    return f"{PHONE_PREFIX[kind]}{i:06d}"


def rows():
    """(id, key_hash, phone, verification mac) for every seeded session (phone and mac None for
    plain sessions)."""
    for kind, n in (("s", SESSIONS), ("w", WRONG), ("r", RIGHT)):
        for i in range(n):
            sid = BASE_ID[kind] + i
            kh = hashlib.sha256(key(kind, i).encode()).digest()
            if kind == "s":
                ph, mac = None, None
            elif kind == "w":
                ph, mac = phone(kind, i), os.urandom(32)
            else:
                ph = phone(kind, i)
                msg = b"verifyd mac 2" + ph.encode() + b"\0" + CODE.encode()
                mac = hmac.new(SECRET, msg, hashlib.sha256).digest()
            yield sid, kh, ph, mac


def seed_sqlite(path):
    import sqlite3

    now = int(time.time() * 1000)
    day, hour = 86_400_000, 3_600_000
    db = sqlite3.connect(path, timeout=30)
    with db:
        for sid, kh, ph, mac in rows():
            db.execute(
                "INSERT INTO sessions (id, key_hash, data, expiry_kind, idle_secs, created_at,"
                " touched_at, expires_at) VALUES (?, ?, '{}', 0, NULL, ?, ?, ?)",
                (sid, kh, now, now, now + day),
            )
            if mac is not None:
                db.execute(
                    "INSERT INTO verifications (session_id, phone, code_mac, state, attempts,"
                    " created_at, sent_at, expires_at, mac_scheme)"
                    " VALUES (?, ?, ?, 0, 0, ?, ?, ?, 2)",
                    (sid, ph, mac, now, now, now + hour),
                )
    db.close()


def seed_postgres(url):
    sessions, verifications = io.StringIO(), io.StringIO()
    for sid, kh, ph, mac in rows():
        sessions.write(f"{sid}\t\\\\x{kh.hex()}\n")
        if mac is not None:
            verifications.write(f"{sid}\t{ph}\t\\\\x{mac.hex()}\n")
    sql = f"""
        CREATE TEMP TABLE s (id bigint, key_hash bytea);
        CREATE TEMP TABLE v (session_id bigint, phone text, code_mac bytea);
        COPY s FROM STDIN;
{sessions.getvalue()}\\.
        COPY v FROM STDIN;
{verifications.getvalue()}\\.
        INSERT INTO sessions (id, key_hash, data, expiry_kind, idle_secs, created_at, touched_at,
                              expires_at)
            OVERRIDING SYSTEM VALUE
            SELECT id, key_hash, '{{}}', 0, NULL, now(), now(), now() + interval '1 day' FROM s;
        INSERT INTO verifications
            (session_id, phone, code_mac, state, attempts, created_at, sent_at, expires_at,
             mac_scheme)
            SELECT session_id, phone, code_mac, 0, 0, now(), now(), now() + interval '1 hour', 2
            FROM v;
        ANALYZE sessions; ANALYZE verifications;
    """
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql.encode(), check=True)


if __name__ == "__main__":
    {"sqlite": seed_sqlite, "postgres": seed_postgres}[sys.argv[1]](sys.argv[2])
