#!/usr/bin/env python3
"""Seeds a verifyd store for the benchmark, straight into the database (after the daemon has
migrated it), so that the measured runs need no set-up requests.

Session keys are deterministic so the wrk scripts and pgbench can name them without a file:
  s<31 digits>  SESSIONS plain sessions (send, session get/set)
  w<31 digits>  WRONG sessions, each with a pending code for PHONE whose MAC matches no code
  r<31 digits>  RIGHT sessions, each with a pending code CODE for PHONE (one approval each)
The code MAC is HMAC-SHA256(secret, session id (8 bytes, big endian) || phone || 0 || code), as
in src/code.rs; the daemon is configured with the same `verification.secret`.

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
PHONE = "+15550001000"
CODE = "123456"
SESSIONS = 1000
WRONG = 5000
RIGHT = 120000
# Explicit ids far above anything the identity sequence will hand out during a run.
BASE_ID = {"s": 1_000_000_000, "w": 1_100_000_000, "r": 1_200_000_000}


def key(kind, i):
    return f"{kind}{i:031d}"


def rows():
    """(id, key_hash, verification mac or None) for every seeded session."""
    for kind, n in (("s", SESSIONS), ("w", WRONG), ("r", RIGHT)):
        for i in range(n):
            sid = BASE_ID[kind] + i
            kh = hashlib.sha256(key(kind, i).encode()).digest()
            if kind == "s":
                mac = None
            elif kind == "w":
                mac = os.urandom(32)
            else:
                msg = sid.to_bytes(8, "big", signed=True) + PHONE.encode() + b"\0" + CODE.encode()
                mac = hmac.new(SECRET, msg, hashlib.sha256).digest()
            yield sid, kh, mac


def seed_sqlite(path):
    import sqlite3

    now = int(time.time() * 1000)
    day, hour = 86_400_000, 3_600_000
    db = sqlite3.connect(path, timeout=30)
    with db:
        for sid, kh, mac in rows():
            db.execute(
                "INSERT INTO sessions (id, key_hash, data, expiry_kind, idle_secs, created_at,"
                " touched_at, expires_at) VALUES (?, ?, '{}', 0, NULL, ?, ?, ?)",
                (sid, kh, now, now, now + day),
            )
            if mac is not None:
                db.execute(
                    "INSERT INTO verifications VALUES (?, ?, ?, 0, 0, ?, ?, ?)",
                    (sid, PHONE, mac, now, now, now + hour),
                )
    db.close()


def seed_postgres(url):
    sessions, verifications = io.StringIO(), io.StringIO()
    for sid, kh, mac in rows():
        sessions.write(f"{sid}\t\\\\x{kh.hex()}\n")
        if mac is not None:
            verifications.write(f"{sid}\t{PHONE}\t\\\\x{mac.hex()}\n")
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
            SELECT session_id, phone, code_mac, 0, 0, now(), now(), now() + interval '1 hour'
            FROM v;
        ANALYZE sessions; ANALYZE verifications;
    """
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url], input=sql.encode(), check=True)


if __name__ == "__main__":
    {"sqlite": seed_sqlite, "postgres": seed_postgres}[sys.argv[1]](sys.argv[2])
