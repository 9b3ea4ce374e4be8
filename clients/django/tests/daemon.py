"""Starts a real verifyd (the cargo-built binary, mock SMS provider) on SQLite or on a fresh
PostgreSQL database, for the Django suite, the end-to-end test and the benchmark."""

import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

API_KEY = "django-test-" + uuid.uuid4().hex


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_admin(sql, dsn):
    """Runs one statement as the PostgreSQL superuser (autocommit, for CREATE/DROP DATABASE)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)


class Daemon:
    def __init__(self, binary, store, pg_admin_dsn="postgresql://postgres@127.0.0.1:5432/postgres"):
        self.binary = binary
        self.store = store
        self.pg_admin_dsn = pg_admin_dsn
        self.dir = tempfile.mkdtemp(prefix=f"verifyd-django-{store}-")
        self.outbox = os.path.join(self.dir, "outbox.jsonl")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_name = None
        self.proc = None

    def __enter__(self):
        store = f'backend = "{self.store}"\n'
        if self.store == "sqlite":
            store += f'[store.sqlite]\npath = "{self.dir}/verifyd.db"\nsynchronous = "normal"\n'
        else:
            self.db_name = "verifyd_django_" + uuid.uuid4().hex[:12]
            _pg_admin(f'CREATE DATABASE "{self.db_name}"', self.pg_admin_dsn)
            store += f'[store.postgres]\nurl = "postgres://postgres@127.0.0.1:5432/{self.db_name}"\n'
        digest = hashlib.sha256(API_KEY.encode()).hexdigest()
        config = f"""
[http]
listen = "127.0.0.1:{self.port}"
[store]
{store}
[session]
cookie_secure = false
[provider]
kind = "mock"
[provider.mock]
outbox = "{self.outbox}"
quiet = true
[api.keys]
django = "{digest}"
[log]
level = "warn"
"""
        path = os.path.join(self.dir, "config.toml")
        with open(path, "w") as f:
            f.write(config)
        self.log = open(os.path.join(self.dir, "verifyd.log"), "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--config", path, "serve"], stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"verifyd exited: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("verifyd did not become ready within 60 s")

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.db_name:
            _pg_admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)', self.pg_admin_dsn)

    def codes(self, phone):
        """Codes the mock provider delivered to ``phone``, oldest first."""
        if not os.path.exists(self.outbox):
            return []
        with open(self.outbox) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        return [m["code"] for m in lines if m["to"] == phone]
