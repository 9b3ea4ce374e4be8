#!/usr/bin/env python3
"""Opens N keep-alive HTTP connections to a daemon, makes one request on each so they are real
HTTP/1.1 connections (not just accepted sockets), holds them all open, and prints the daemon's
resident memory while they are held as a RESULT line.

usage: conns.py PORT PID [N]
"""
import json
import resource
import socket
import sys
import time

port, pid = int(sys.argv[1]), int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
want = n + 1024 if hard == resource.RLIM_INFINITY else min(n + 1024, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def status(field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])


before = status("VmRSS")
started = time.time()
socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
for s in socks:
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
answered = 0
for s in socks:
    s.settimeout(10)
    if s.recv(4096).startswith(b"HTTP/1.1 200"):
        answered += 1
time.sleep(0.5)
held_rss = status("VmRSS")
# Every one of them is still open and still served: a second request on each.
alive = 0
for s in socks:
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n")
        if s.recv(4096).startswith(b"HTTP/1.1 200"):
            alive += 1
    except OSError:
        pass
print("RESULT " + json.dumps({
    "connections": n, "answered": answered, "alive": alive, "rss_before_kb": before,
    "rss_held_kb": held_rss, "open_s": round(time.time() - started, 2),
}))
for s in socks:
    s.close()
