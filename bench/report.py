#!/usr/bin/env python3
"""Turns one bench/run's results (JSON lines, one per measurement) into a Markdown section:
the flows side by side for both stores, then every target with its measured value and whether
it was met. Prints the section; bench/run appends it to BENCHMARKS.md.

usage: report.py RESULTS.jsonl META.json
"""
import json
import sys

results = {}
with open(sys.argv[1]) as f:
    for line in f:
        if line.strip():
            r = json.loads(line)
            results[r.pop("name")] = r
with open(sys.argv[2]) as f:
    meta = json.load(f)


def get(name, field, default=None):
    return results.get(name, {}).get(field, default)


def num(x, fmt="{:.0f}"):
    return "n/a" if x is None else fmt.format(x)


def ratio(a, b):
    return None if not a or not b else a / b


out = []
w = out.append
w(f"## Run of {meta['date']} — commit `{meta['commit']}`\n")
w(f"- Machine: {meta['nproc']} CPUs ({meta['cpu']}), {meta['mem']} RAM, Linux {meta['kernel']}; "
  f"PostgreSQL {meta['pg_version']} (autovacuum {meta.get('autovacuum', '?')}, "
  f"shared_buffers {meta.get('shared_buffers', '?')})")
w(f"- Load average at start / end: {meta['load_start']} / {meta['load_end']} — the CPUs are "
  "shared with other engineers' builds and tests, so absolute numbers are noisy; the ratios "
  "compare runs made minutes apart in the same conditions.")
w(f"- wrk: {meta['threads']} threads, {meta['conns']} connections, {meta['duration']} s per run; "
  "daemons built with `--release`, mock provider writing to an outbox file, `log.level = warn`, "
  "SQLite with `synchronous = full`, PostgreSQL pool of 32.")
w("- Abuse limits off in the flow runs (per_phone, per_ip and global limits 0, pumping breaker "
  "disabled); the runs marked \"limits on\" use the shipped defaults, with the per-address "
  "limits raised for one client and the global cap and breaker counting without refusing "
  "(`config()` in bench/run).\n")

w("### Flows (maximum throughput, 32 connections)\n")
w("| flow | PostgreSQL req/s | p50 ms | p99 ms | non-2xx | SQLite req/s | p50 ms | p99 ms | non-2xx |")
w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
flows = [
    ("send", "send a code (cookie session, new number each time)"),
    ("check_wrong", "check a wrong code"),
    ("check_right", "check the right code (approval, key cycled)"),
    ("session_get", "backend API: GET session"),
    ("session_set", "backend API: PUT a value"),
]
for key, label in flows:
    row = [label]
    for store in ("pg", "sqlite"):
        n = f"{store}.{key}"
        row += [num(get(n, "rps")), num(get(n, "p50_ms"), "{:.2f}"), num(get(n, "p99_ms"), "{:.2f}"),
                num(get(n, "non2xx"))]
    w("| " + " | ".join(row) + " |")
w("")

w("### The shipped abuse limits (PostgreSQL, 32 connections)\n")
w("| flow and daemon configuration | req/s | p50 ms | p99 ms | non-2xx |")
w("|---|---:|---:|---:|---:|")
for n, label in (("pg.send", "send, limits off"),
                 ("pg.send_limits", "send, limits on"),
                 ("pg.send_limits_noip", "send, limits on but per-address send limits off"),
                 ("pg.check_wrong", "wrong check, limits off"),
                 ("pg.check_wrong_limits", "wrong check, limits on"),
                 ("pgbench.send_limits", "pgbench: the limits-on send's SQL"),
                 ("pgbench.check_limits", "pgbench: the limits-on wrong check's SQL"),
                 ("pgbench.floor", "pgbench floor: one upsert of a verification row"),
                 ("pgbench.floor_send_half",
                  "pgbench floor paced at the rate of the half-rate send run"),
                 ("pgbench.floor_check_wrong_half",
                  "pgbench floor paced at the rate of the half-rate wrong check run")):
    rps = get(n, "rps", get(n, "tps"))
    w(f"| {label} | {num(rps)} | {num(get(n, 'p50_ms'), '{:.2f}')} | "
      f"{num(get(n, 'p99_ms'), '{:.2f}')} | {num(get(n, 'non2xx'))} |")
w("")

w("### CPU per request (µs; PostgreSQL on this machine)\n")
w("Between the start and the end of each run: the machine's busy time (/proc/stat; its share of "
  "both CPUs over the run's wall time is \"machine busy\"), the daemon's, "
  "PostgreSQL's server processes', and the rest (the load generator, the kernel's work charged to "
  "no process, anything else running), each over the requests the run completed.\n")
w("| run | req/s | machine busy | machine | daemon | PostgreSQL | rest |")
w("|---|---:|---:|---:|---:|---:|---:|")
cpu_runs = (("pg.healthz", "GET /healthz: the daemon's HTTP path, no store work"),
            ("pg.session_get", "GET of a session (backend API): one read by its key"),
            ("pg.send", "send, limits off"),
            ("pg.send_limits", "send, limits on"),
            ("pg.check_wrong", "wrong check, limits off"),
            ("pg.check_wrong_limits", "wrong check, limits on"),
            ("pgbench.send", "pgbench: the limits-off send's SQL"),
            ("pgbench.send_limits", "pgbench: the limits-on send's SQL"),
            ("pgbench.floor", "pgbench floor"))
for n, label in cpu_runs:
    c = get(n, "cpu_us", {})
    w(f"| {label} | {num(get(n, 'rps', get(n, 'tps')))} | {num(c.get('busy'), '{:.0%}')} | "
      f"{num(c.get('machine'))} | {num(c.get('daemon'))} | {num(c.get('postgres'))} | "
      f"{num(c.get('rest'))} |")
w("")
send, floor = get("pg.send", "cpu_us", {}), get("pgbench.floor", "cpu_us", {})
lean = get("pg.session_get", "cpu_us", {})
if all("daemon" in c and "rest" in c for c in (send, lean)) and \
        all(k in floor for k in ("machine", "postgres")):
    # A send whose database work were exactly the floor's would still cost the daemon's own CPU
    # and its load generator's: with the CPUs busy in both runs, that bounds the floor ratio.
    def bound(c):
        return floor["machine"] / (c["daemon"] + c["rest"] + floor["postgres"])

    w(f"What the floor ratio can reach on this machine, with the CPUs busy in both runs: a send "
      f"whose database work were only the floor's ({num(floor['postgres'])} µs of PostgreSQL) "
      f"would still take the daemon's and wrk's CPU. At this send's ({num(send['daemon'])} and "
      f"{num(send['rest'])} µs) that is at most {bound(send):.2f}× the floor's "
      f"{num(floor['machine'])} µs; at the cheapest PostgreSQL request the daemon serves "
      f"(`GET` of a session: {num(lean['daemon'])} and {num(lean['rest'])} µs), "
      f"{bound(lean):.2f}×. A ratio of 0.8 leaves the daemon and its client together "
      f"{num(floor['machine'] / 0.8 - floor['postgres'])} µs a request.\n")

w("### Targets\n")
w("| target | measured | |")
w("|---|---|---|")


def target(label, measured, ok):
    mark = "n/a" if ok is None else ("met" if ok else "**missed**")
    w(f"| {label} | {measured} | {mark} |")


pairs = [ratio(get(f"pg.send_pair_on_{i}", "rps"), get(f"pg.send_pair_off_{i}", "rps"))
         for i in (1, 2, 3)]
r = None if None in pairs else sorted(pairs)[1]
single = ratio(get("pg.send_limits", "rps"), get("pg.send", "rps"))
target("limits: send with the shipped limits on / limits off ≥ 0.8",
       "median of three pairs of runs back to back "
       f"{' '.join(num(p, '{:.2f}') for p in pairs)}: {num(r, '{:.2f}')} (the single runs "
       f"above: {num(get('pg.send_limits', 'rps'))} / {num(get('pg.send', 'rps'))} = "
       f"{num(single, '{:.2f}')})",
       None if r is None else r >= 0.8)
for flow in ("send", "check_wrong"):
    n = f"pg.{flow}_limits"
    r = ratio(get(n, "rps"), get("pgbench.floor", "tps"))
    target(f"floor: {flow} (limits on) / pgbench floor ≥ 0.8",
           f"{num(get(n, 'rps'))} / {num(get('pgbench.floor', 'tps'))} = {num(r, '{:.2f}')}",
           None if r is None else r >= 0.8)
for flow, pgb in (("send", "pgbench.send"), ("check_wrong", "pgbench.check")):
    r = ratio(get(f"pg.{flow}", "rps"), get(pgb, "tps"))
    target(f"overhead: daemon {flow} / pgbench same SQL ≥ 0.7 (limits off)",
           f"{num(get(f'pg.{flow}', 'rps'))} / {num(get(pgb, 'tps'))} = {num(r, '{:.2f}')}",
           None if r is None else r >= 0.7)
for flow, peer, goal in (("send", "peer.send", 6), ("check_wrong", "peer.check", 3)):
    n = f"pg.{flow}_limits"
    r = ratio(get(n, "rps"), get(peer, "rps"))
    target(f"peer: daemon {flow} (limits on) / Django+gunicorn ≥ {goal}×",
           f"{num(get(n, 'rps'))} / {num(get(peer, 'rps'))} = {num(r, '{:.1f}')}×",
           None if r is None else r >= goal)
for flow in ("send", "check_wrong"):
    n = f"pg.{flow}_limits_half"
    p99 = get(n, "p99_ms")
    floor = f"pgbench.floor_{flow}_half"
    target(f"latency: p99 < 10 ms at half the maximum rate ({flow}, limits on)",
           f"p99 {num(p99, '{:.2f}')} ms at {num(get(n, 'rps'))} req/s "
           f"(max {num(get(f'pg.{flow}_limits', 'rps'))}); the pgbench floor at that rate: "
           f"p99 {num(get(floor, 'p99_ms'), '{:.2f}')} ms",
           None if p99 is None else p99 < 10)
for store in ("pg", "sqlite"):
    idle = get(f"{store}.memory", "idle_kb")
    target(f"memory: idle RSS < 30 MB ({'PostgreSQL' if store == 'pg' else 'SQLite'})",
           f"{num(idle and idle / 1024, '{:.1f}')} MB (peak over the run "
           f"{num(get(f'{store}.memory', 'peak_kb', 0) / 1024, '{:.1f}')} MB)",
           None if idle is None else idle < 30 * 1024)
held = get("pg.conns", "rss_held_kb")
target("memory: RSS < 100 MB with 5 000 open keep-alive connections",
       f"{num(held and held / 1024, '{:.1f}')} MB with {get('pg.conns', 'answered')} connections "
       f"answered, {get('pg.conns', 'alive')} still served a second request",
       None if held is None else held < 100 * 1024 and get("pg.conns", "alive") == 5000)
base, during = get("sweep.baseline", "p99_ms"), get("sweep.during", "p99_ms")
secs = get("sweep.result", "seconds")
target("sweeper: 1 000 000 expired sessions swept under live traffic; p99 ≤ 2× without",
       f"{get('sweep.result', 'deleted')} rows in {num(secs, '{:.1f}')} s; live p99 "
       f"{num(during, '{:.2f}')} ms vs {num(base, '{:.2f}')} ms without "
       f"({num(ratio(during, base), '{:.2f}')}×)",
       None if base is None or during is None else during <= 2 * base and secs is not None)
w("")
w("<details><summary>Raw results</summary>\n")
w("```")
for name, r in results.items():
    w(f"{name}: {json.dumps(r)}")
w("```\n</details>\n")
print("\n".join(out))
