#!/usr/bin/env bash
# Checks systemd/verifyd.service offline: `systemd-analyze verify` must print nothing (it only
# warns about unknown keys and bad values, so any output fails), and `systemd-analyze security`
# must rate the unit's exposure at 2.0 or lower ("OK" or better).
# Usage: .ci/systemd-check.sh [path to a built verifyd]   (default: target/debug/verifyd)
set -euo pipefail
cd "$(dirname "$0")/.."

unit=systemd/verifyd.service
bin=$(realpath "${1:-target/debug/verifyd}")
max_exposure=2.0

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "installing Debian's systemd package for systemd-analyze"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
[ -x "$bin" ] || { echo "no verifyd binary at $bin (build it first)" >&2; exit 1; }

# `verify` checks that ExecStart exists on this machine; point it at the built binary instead of
# /usr/bin/verifyd, keeping everything else (and the file name, which names the unit) as is.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=/usr/bin/verifyd |ExecStart=$bin |" "$unit" >"$tmp/verifyd.service"
grep -q "^ExecStart=$bin " "$tmp/verifyd.service" || {
    echo "$unit: ExecStart does not start with /usr/bin/verifyd" >&2
    exit 1
}
if ! out=$(systemd-analyze verify --man=no "$tmp/verifyd.service" 2>&1) || [ -n "$out" ]; then
    echo "systemd-analyze verify $unit failed:" >&2
    echo "$out" >&2
    exit 1
fi
echo "systemd-analyze verify: clean"

report=$(systemd-analyze security --offline=yes "$unit" 2>&1) || {
    echo "$report" >&2
    exit 1
}
score=$(sed -n 's/.*Overall exposure level for verifyd.service: \([0-9.]*\).*/\1/p' <<<"$report")
if [ -z "$score" ]; then
    echo "$report" >&2
    echo "could not read the exposure level" >&2
    exit 1
fi
grep -E '^✗' <<<"$report" || true
echo "systemd-analyze security: exposure $score (limit $max_exposure)"
awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s <= m) }' || {
    echo "exposure $score is above $max_exposure" >&2
    exit 1
}
