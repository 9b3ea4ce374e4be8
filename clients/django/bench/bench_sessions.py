"""One Django request's session work — load, change two keys, save — with verifyd_django's
engine against Django's own ``db`` backend, both on the same PostgreSQL, in one run.

    clients/django/bench/run.sh [ITERATIONS]

verifyd runs on PostgreSQL (a fresh database); Django's ``db`` backend uses another fresh
database on the same server. Prints per-request latency (mean, p50, p95, p99) and throughput
of one client thread, and checks the engine made exactly two HTTP calls per request."""

import os
import statistics
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from daemon import API_KEY, Daemon, _pg_admin  # noqa: E402

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def measure(make, key, n):
    """Latencies in microseconds of ``n`` load+change+save rounds on one session."""
    out = []
    for i in range(n):
        t = time.perf_counter()
        s = make(key)
        s.get("a")  # the first access loads, as in a view
        s["a"] = i
        s["b"] = {"n": i, "tag": "x" * 32}
        s.save()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def report(name, lat):
    lat = sorted(lat)
    pct = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))]  # noqa: E731
    mean = statistics.fmean(lat)
    print(f"{name:<34} mean {mean:8.0f} µs  p50 {pct(0.5):8.0f}  p95 {pct(0.95):8.0f}  "
          f"p99 {pct(0.99):8.0f}  {1e6 / mean:7.0f} req/s")


def main():
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    binary = sys.argv[1]
    db = "bench_django_db_" + uuid.uuid4().hex[:8]
    _pg_admin(f'CREATE DATABASE "{db}"', ADMIN)
    try:
        with Daemon(binary, "postgres") as d:
            import django
            from django.conf import settings

            settings.configure(
                SECRET_KEY="bench-only",
                USE_TZ=True,
                INSTALLED_APPS=["django.contrib.sessions"],
                DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": db,
                                       "USER": "postgres", "HOST": "127.0.0.1", "PORT": 5432,
                                       "CONN_MAX_AGE": None}},
                VERIFYD_URL=d.url,
                VERIFYD_API_KEY=API_KEY,
            )
            django.setup()
            from django.core.management import call_command
            from django.contrib.sessions.backends.db import SessionStore as DbStore

            from verifyd_django import client
            from verifyd_django.session import SessionStore as VerifydStore

            call_command("migrate", verbosity=0)
            calls = []
            real = client.call
            client.call = lambda *a, **k: calls.append(a[0]) or real(*a, **k)

            for name, store in (("django db backend (PostgreSQL)", DbStore),
                                ("verifyd_django (verifyd on PostgreSQL)", VerifydStore)):
                s = store()
                s["a"] = 0
                s.save()
                measure(store, s.session_key, 200)  # warm-up: connections, plans, caches
                calls.clear()
                report(name, measure(store, s.session_key, n))
                if store is VerifydStore:
                    assert calls == ["GET", "PUT"] * n, f"{len(calls)} calls for {n} requests"
                    print(f"{'':<34} HTTP calls per request: {len(calls) / n:.0f} (GET, PUT)")
            from django.db import connections

            connections.close_all()
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)', ADMIN)


if __name__ == "__main__":
    main()
