#!/usr/bin/env bash
# Contract test: runs Schemathesis against a real daemon to check that openapi.json matches the
# server (response schemas, status codes, headers, content types, auth, no 5xx, no panics).
#
# Builds the daemon, starts it on a free port with a throw-away SQLite store, the shipped
# config.toml and a test API key, then runs two passes:
#   1. backend pass: the session API (and health routes) with `Authorization: Bearer <key>`,
#      including the stateful phase that follows the document's links;
#   2. browser pass: the verification and seed routes without an API key (a backend must name a
#      `session` there, which a generic fuzzer cannot know, so with a key they answer 422).
# Abuse limits are off (all requests come from one address and a few numbers), so that the
# fuzzer reaches the verification logic; the resend cooldown still answers 429.
# Exits non-zero when either pass finds a failure, the daemon logs a panic, or it dies.
#
# Environment: ST_MAX_EXAMPLES (default 50) test cases per operation and phase, ST_SEED (default 1;
# "random" for a fresh seed each run), ST_EXTRA_ARGS extra arguments for both `st run` calls.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-50}"
SEED="${ST_SEED:-1}"
API_KEY="schemathesis-$(date +%s)-$$"

log() { printf '\n== %s\n' "$*"; }

if ! command -v st >/dev/null 2>&1; then
    log "installing schemathesis"
    python3 -m pip install --quiet 'schemathesis>=4.32,<5'
fi
st --version

log "cargo build"
cargo build --quiet
BIN="$ROOT/target/debug/verifyd"

WORK=$(mktemp -d)
DAEMON_PID=""
cleanup() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cp "$ROOT/config.toml" "$WORK/config.toml"
HASH=$("$BIN" hash-api-key "$API_KEY")

log "starting verifyd"
(
    cd "$WORK"
    VERIFYD_HTTP__LISTEN=127.0.0.1:0 \
    VERIFYD_STORE__BACKEND=sqlite \
    VERIFYD_STORE__SQLITE__PATH="$WORK/verifyd.db" \
    VERIFYD_PROVIDER__MOCK__QUIET=true \
    VERIFYD_COMPAT__SEED_ROUTES=true \
    VERIFYD_API__KEYS__SCHEMATHESIS="$HASH" \
    VERIFYD_LOG__FORMAT=json \
    VERIFYD_PER_IP__MAX_SENDS=0 \
    VERIFYD_PER_IP__MAX_CHECKS=0 \
    VERIFYD_PER_PHONE__MAX_SENDS=0 \
    VERIFYD_PER_PHONE__DAILY_MAX=0 \
    VERIFYD_GLOBAL__MAX_SENDS_PER_HOUR=0 \
    VERIFYD_PUMPING__ENABLED=false \
    VERIFYD_LOG__LEVEL=info \
        exec env -u RUST_LOG "$BIN" --config "$WORK/config.toml" serve >"$WORK/daemon.out" 2>"$WORK/daemon.log"
) &
DAEMON_PID=$!

ADDR=""
for _ in $(seq 1 100); do
    ADDR=$(grep -o '"addr":"[^"]*"' "$WORK/daemon.log" 2>/dev/null | head -n 1 | cut -d'"' -f4 || true)
    [ -n "$ADDR" ] && break
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        cat "$WORK/daemon.log" >&2
        echo "verifyd exited during start-up" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$ADDR" ]; then
    cat "$WORK/daemon.log" >&2
    echo "verifyd did not report its address" >&2
    exit 1
fi
BASE="http://$ADDR"
echo "verifyd on $BASE"

# Rejections the document cannot express in JSON Schema, allowed per operation:
# - `expiry` must be written as a JSON integer; `300.0` is a JSON Schema integer but answers 422;
# - POST /sms_send/ needs `phone` in the query string *or* the form body (422 when in neither);
# - session data may hold no U+0000 anywhere (PostgreSQL's jsonb cannot), which JSON Schema cannot
#   say of nested values: 422 `invalid_field`;
# - a made-up challenge solution (`altcha`, `cf-turnstile-response`, `h-captcha-response`) is
#   422 `challenge_invalid`: a fuzzer cannot solve a proof-of-work it did not fetch.
cat >"$WORK/schemathesis.toml" <<'EOF'
[[operations]]
include-path-regex = "^/(v1/verifications|sms_send/?)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "422"]

[[operations]]
include-name = ["POST /v1/sessions", "PUT /v1/sessions/{key}/expiry", "PUT /v1/sessions/{key}/data/{name}"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "422"]

# - PUT /v1/sessions/{key}: data names (1-256 characters, no NUL) are checked like every write
#   (422), and an `If-Match` naming no current version is 412 `version_mismatch` by design.
[[operations]]
include-name = ["PUT /v1/sessions/{key}"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "412", "429", "5xx", "422"]

# - GET /v1/sessions/{key}/data/{name}: `default` must be JSON text (else 400 `invalid_query`),
#   which its string schema can only note (`contentMediaType`), not check.
[[operations]]
include-name = ["GET /v1/sessions/{key}/data/{name}"]
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]

[[operations]]
include-path-regex = "^/sms_send/?$"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "422"]
EOF

SEED_ARGS=()
[ "$SEED" != "random" ] && SEED_ARGS=(--seed "$SEED")
# shellcheck disable=SC2206
EXTRA=(${ST_EXTRA_ARGS:-})
COMMON=(--url "$BASE" --checks all --max-examples "$MAX_EXAMPLES" "${SEED_ARGS[@]}"
    --request-timeout 35 "${EXTRA[@]}")

# Schemathesis keeps a cache in its working directory: keep it out of the repository.
st_run() { (cd "$WORK" && st --no-color --config-file "$WORK/schemathesis.toml" run "$ROOT/openapi.json" "$@"); }

status=0
log "schemathesis: session API with an API key"
st_run "${COMMON[@]}" \
    -H "Authorization: Bearer $API_KEY" \
    --include-tag sessions --include-tag health || status=1

log "schemathesis: verification and seed routes as a browser"
st_run "${COMMON[@]}" \
    --include-tag verifications --include-tag 'seed compatibility' --include-tag health \
    --phases examples,coverage,fuzzing || status=1

log "daemon health"
if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
    echo "verifyd died during the run" >&2
    status=1
fi
if grep -E '"level":"(ERROR)"|panicked' "$WORK/daemon.log" >&2; then
    echo "verifyd logged errors or panics (above)" >&2
    status=1
fi
server_errors=$(grep -cE '"status":5[0-9][0-9]' "$WORK/daemon.log" || true)
echo "requests answered 5xx: $server_errors"
[ "$server_errors" = 0 ] || status=1

exit "$status"
