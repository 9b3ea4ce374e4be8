#!/usr/bin/env bash
# Builds the Debian package with cargo-deb (installing cargo-deb when missing) and checks what it
# holds: the binary, the unit, the default config as a conffile, the README and docs/, and maintainer
# scripts that enable and start the service. Prints the package's path on success.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb (compiles for a few minutes)"
    cargo install cargo-deb --locked --quiet
fi

deb=$(cargo deb 2>/dev/null | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb produced no package (got: $deb)" >&2; exit 1; }
echo "built $deb"

fail() { echo "deb-check: $*" >&2; exit 1; }

contents=$(dpkg-deb -c "$deb")
echo "$contents"
for path in ./usr/bin/verifyd ./etc/verifyd/config.toml ./usr/share/doc/verifyd/README.md \
    ./usr/share/doc/verifyd/docs/operations.md ./usr/share/doc/verifyd/docs/configuration.md; do
    grep -qE " $path\$" <<<"$contents" || fail "$path missing"
done
grep -qE ' \./(usr/)?lib/systemd/system/verifyd\.service$' <<<"$contents" || fail "unit missing"
grep -qE '^-rwxr-xr-x (root/root|0/0) .* \./usr/bin/verifyd$' <<<"$contents" || fail "binary mode/owner"

info=$(dpkg-deb -I "$deb")
echo "$info"
[ "$(dpkg-deb -f "$deb" Package)" = verifyd ] || fail "package name"
[ "$(dpkg-deb -f "$deb" Version)" = "$(cargo pkgid | sed 's/.*[#@]//')-1" ] || fail "version"
dpkg-deb -f "$deb" Depends | grep -q systemd || fail "no dependency on systemd"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp/root"
dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/verifyd/config.toml "$tmp/control/conffiles" || fail "config.toml is not a conffile"
grep -q 'deb-systemd-helper enable' "$tmp/control/postinst" || fail "postinst does not enable the unit"
grep -q 'verifyd.service' "$tmp/control/postinst" || fail "postinst does not name the unit"
grep -q 'deb-systemd-invoke' "$tmp/control/prerm" || fail "prerm does not stop the unit"

unit=$(find "$tmp/root" -name verifyd.service)
cmp "$unit" systemd/verifyd.service || fail "packaged unit differs from systemd/verifyd.service"
cmp "$tmp/root/etc/verifyd/config.toml" packaging/config.toml || fail "packaged config differs"
# The packaged binary runs and accepts the packaged configuration.
"$tmp/root/usr/bin/verifyd" --version
"$tmp/root/usr/bin/verifyd" --config "$tmp/root/etc/verifyd/config.toml" check-config >/dev/null
echo "deb-check: $deb OK"
