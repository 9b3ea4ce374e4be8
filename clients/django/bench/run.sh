#!/usr/bin/env bash
# Builds verifyd in release mode and runs bench_sessions.py in the test virtualenv
# (clients/django/run-tests.sh makes it). Usage: clients/django/bench/run.sh [ITERATIONS]
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
venv="$root/target/django-client/venv"
[ -x "$venv/bin/python" ] || { echo "run clients/django/run-tests.sh first (it makes $venv)" >&2; exit 1; }
(cd "$root" && cargo build --quiet --release --bin verifyd)
"$venv/bin/python" "$root/clients/django/bench/bench_sessions.py" "$root/target/release/verifyd" "${1:-2000}"
