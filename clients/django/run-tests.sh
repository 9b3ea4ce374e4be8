#!/usr/bin/env bash
# The proof of clients/django, run by .ci/run: builds the wheel, installs it with the pinned
# dependencies in a private virtualenv, downloads the pinned Django sdist for its tests/, and
# runs Django's sessions_tests and the end-to-end seed flow against a real verifyd (built by
# cargo, mock provider) on SQLite and on PostgreSQL. Any failure, error or skip fails the run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$root/target/django-client"
venv="$work/venv"
django_version="$(sed -n 's/^Django==//p' "$here/requirements-test.txt")"
mkdir -p "$work"

if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements-test.txt"

# The package as users get it: a wheel, installed (not the source tree on sys.path).
rm -rf "$work/wheel"
"$venv/bin/python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/wheel" "$here"
"$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$work"/wheel/verifyd_django-*.whl

sdist="$work/django-$django_version"
if [ ! -d "$sdist/tests/sessions_tests" ]; then
    "$venv/bin/python" -m pip download --quiet --no-binary :all: --no-deps \
        "django==$django_version" -d "$work/sdist"
    tar -xzf "$work/sdist/django-$django_version.tar.gz" -C "$work"
fi

(cd "$root" && cargo build --quiet --bin verifyd)
binary="$root/target/debug/verifyd"

cd "$here/tests"
for store in sqlite postgres; do
    "$venv/bin/python" run.py suite "$store" "$binary" "$sdist/tests"
    "$venv/bin/python" run.py e2e "$store" "$binary"
done
