#!/usr/bin/env bash
# The proof that clients generated from openapi.json work, run by .ci/run: generates a Python
# client (openapi-python-client) and TypeScript types (openapi-typescript, used through
# openapi-fetch and type-checked with tsc --strict) from the openapi.json in the tree, then runs
# the README's browser flow (with its seed routes) and the backend session flow through each
# against a real verifyd (cargo-built, mock provider) on SQLite and on PostgreSQL. Nothing
# generated is kept between runs, so a stale or broken document fails here. Any failure, error or
# skip fails the run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$root/target/generated-clients"
venv="$work/venv"
build="$here/build"
spec="$root/openapi.json"
pg_admin=(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -v ON_ERROR_STOP=1 -qc)

log() { printf '\n== %s\n' "$*"; }
fail() { echo "run-tests.sh: $*" >&2; exit 1; }
# Shows the end of the daemon's log (the cleanup deletes it), then fails.
fail_with_log() {
    echo "-- the daemon's log (last 40 lines):" >&2
    tail -n 40 "$run_dir/daemon.log" >&2
    fail "$*"
}

log "tools"
mkdir -p "$work"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
"$venv/bin/openapi-python-client" --version
(cd "$here" && npx --no-install tsc --version)

log "generating the clients from $spec"
rm -rf "$build"
mkdir -p "$build/python"
# The generator formats its output with ruff, which it finds on PATH.
gen_log="$build/openapi-python-client.log"
if ! PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate --path "$spec" \
    --output-path "$build/python/verifyd_client" --meta none >"$gen_log" 2>&1; then
    cat "$gen_log" >&2
    fail "openapi-python-client failed"
fi
cat "$gen_log"
# It warns and goes on when it cannot read an operation; every operation must become a module.
# (A warning that only leaves a response body unparsed, like /metrics' OpenMetrics text, is fine.)
"$venv/bin/python" - "$spec" "$build/python/verifyd_client/api" <<'EOF'
import json, os, re, sys
spec, api = sys.argv[1:]
modules = {f[:-3] for _, _, files in os.walk(api) for f in files if f.endswith(".py")}
missing = []
for path, item in json.load(open(spec))["paths"].items():
    for method, op in item.items():
        if isinstance(op, dict) and "operationId" in op:
            name = re.sub(r"(?<!^)(?=[A-Z])", "_", op["operationId"]).lower()
            if name not in modules:
                missing.append(f"{method.upper()} {path} ({op['operationId']})")
if missing:
    sys.exit("operations the Python client lacks: " + ", ".join(missing))
print(f"the Python client has all {len(modules - {'__init__'})} operations")
EOF
(cd "$here" && npx --no-install openapi-typescript "$spec" -o "$build/schema.d.ts")
log "tsc --strict"
(cd "$here" && npx --no-install tsc -p tsconfig.json)

(cd "$root" && cargo build --quiet --bin verifyd)
binary="${CARGO_TARGET_DIR:-$root/target}/debug/verifyd"

daemon_pid=""
run_dir=""
db_name=""
stop_daemon() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill "$daemon_pid"
        wait "$daemon_pid" 2>/dev/null || true
    fi
    daemon_pid=""
    if [ -n "$db_name" ]; then
        "${pg_admin[@]}" "DROP DATABASE IF EXISTS \"$db_name\" WITH (FORCE)" >/dev/null
        db_name=""
    fi
    if [ -n "$run_dir" ]; then rm -rf "$run_dir"; fi
    run_dir=""
}
trap stop_daemon EXIT

# Starts verifyd on a free port with the mock provider, a fresh store, a random API key and the
# seed routes;
# sets VERIFYD_URL, VERIFYD_API_KEY and VERIFYD_OUTBOX for the flows.
start_daemon() {
    local store="$1" store_toml addr=""
    run_dir="$(mktemp -d)"
    if [ "$store" = sqlite ]; then
        store_toml="backend = \"sqlite\"
[store.sqlite]
path = \"$run_dir/verifyd.db\""
    else
        db_name="verifyd_clients_$(od -An -tx1 -N6 /dev/urandom | tr -d ' \n')"
        "${pg_admin[@]}" "CREATE DATABASE \"$db_name\""
        store_toml="backend = \"postgres\"
[store.postgres]
url = \"postgres://postgres@127.0.0.1:5432/$db_name\""
    fi
    VERIFYD_API_KEY="generated-clients-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    VERIFYD_OUTBOX="$run_dir/outbox.jsonl"
    local key_hash
    key_hash="$("$binary" hash-api-key "$VERIFYD_API_KEY")"
    cat >"$run_dir/config.toml" <<EOF
[http]
listen = "127.0.0.1:0"
[store]
$store_toml
[session]
cookie_secure = false
[provider]
kind = "mock"
[provider.mock]
outbox = "$VERIFYD_OUTBOX"
quiet = true
[api.keys]
clients = "$key_hash"
[compat]
seed_routes = true
[log]
format = "json"
level = "info"
EOF
    env -u RUST_LOG "$binary" --config "$run_dir/config.toml" serve >"$run_dir/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 300); do
        addr=$(grep -o '"addr":"[^"]*"' "$run_dir/daemon.log" | head -n 1 | cut -d'"' -f4 || true)
        [ -n "$addr" ] && break
        kill -0 "$daemon_pid" 2>/dev/null || fail_with_log "verifyd exited during start-up"
        sleep 0.1
    done
    [ -n "$addr" ] || fail_with_log "verifyd did not report its address"
    VERIFYD_URL="http://$addr"
    export VERIFYD_URL VERIFYD_API_KEY VERIFYD_OUTBOX
    echo "verifyd ($store) on $VERIFYD_URL"
}

# The daemon must have answered every request without a 5xx, an error log line or a panic
# (and must have logged the flows' requests, or the search below proves nothing).
check_daemon() {
    kill -0 "$daemon_pid" 2>/dev/null || fail_with_log "verifyd died during the flows"
    grep -q '"status":202' "$run_dir/daemon.log" ||
        fail_with_log "the daemon log shows none of the flows' requests"
    if grep -E '"level":"ERROR"|panicked|"status":5[0-9][0-9]' "$run_dir/daemon.log" >&2; then
        fail "verifyd logged errors, panics or 5xx answers (above)"
    fi
}

for store in sqlite postgres; do
    log "flows on $store"
    start_daemon "$store"
    (cd "$here/python" && PYTHONPATH="$build/python" "$venv/bin/python" test_flows.py) ||
        fail_with_log "the Python client's flows failed on $store"
    (cd "$here" && node --test "$build/js/flows.test.js") ||
        fail_with_log "the TypeScript client's flows failed on $store"
    check_daemon
    stop_daemon
done
