#!/usr/bin/env bash
# Install what hyperamp needs (Debian 12 packages), then configure and build.
#   scripts/setup.sh [BUILD_DIR [MESON_OPTION...]]
# Installing packages needs root (or sudo); building does not.  With CI=true
# warnings are errors.  This is a test build: the test seams are compiled in
# (-Dtest_seams=true; a later -Dtest_seams=false wins).  scripts/deb.sh
# builds the release without them.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
shift || true

. scripts/lib.sh
ensure_packages gcc meson ninja-build pkg-config libevent-dev libcjson-dev libsystemd-dev python3 \
        systemd man-db util-linux valgrind python3-prometheus-client

opts=(-Dtest_seams=true "$@")
[ "${CI:-}" = "true" ] && opts+=(-Dwerror=true)
if [ -f "$build/build.ninja" ]; then
        # --reconfigure, not meson configure: a tree set up before an option
        # existed (test_seams) does not know it, and configure refuses it.
        meson setup --reconfigure "$build" "${opts[@]}" >/dev/null
else
        meson setup "$build" "${opts[@]}" >/dev/null
fi
build_tree "$build"
echo "setup: built in $build/ (hyperampd: $build/src/daemon/hyperampd, hyperampctl: $build/src/ctl/hyperampctl)" >&2
