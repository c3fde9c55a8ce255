#!/usr/bin/env bash
# Install what hyperamp needs (Debian 12 packages), then configure and build.
#   scripts/setup.sh [BUILD_DIR [MESON_OPTION...]]
# Installing packages needs root (or sudo); building does not.  With CI=true
# warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
shift || true

pkgs=(gcc meson ninja-build pkg-config libevent-dev libcjson-dev libsystemd-dev python3
      systemd man-db util-linux valgrind)
missing=()
for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing ${missing[*]}" >&2
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

opts=("$@")
[ "${CI:-}" = "true" ] && opts+=(-Dwerror=true)
if [ -f "$build/build.ninja" ]; then
        meson configure "$build" "${opts[@]}" >/dev/null
else
        meson setup "$build" "${opts[@]}" >/dev/null
fi
if ! ninja -C "$build" > "$build/ninja.log" 2>&1; then
        grep -E -B2 -A6 "error|FAILED" "$build/ninja.log" | tail -n 60 >&2
        echo "setup: the build failed; the full log is $build/ninja.log" >&2
        exit 1
fi
echo "setup: built in $build/ (hyperampd: $build/src/daemon/hyperampd, hyperampctl: $build/src/ctl/hyperampctl)" >&2
