#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Build the Debian packages (hyperamp, libhyperamp0, libhyperamp-dev) with
# dpkg-buildpackage, then check them with lintian.
#   scripts/deb.sh [OUT_DIR]        (default: build-deb)
# Installs the build dependencies (needs root or sudo).  The tree is copied
# to OUT_DIR/src first, since dpkg-buildpackage writes into the source tree
# and puts the packages in its parent.  The test suites are not run
# (DEB_BUILD_OPTIONS=nocheck) unless DEB_BUILD_OPTIONS says otherwise: CI
# runs them on their own.  Exit status: non-zero when the build fails or
# lintian reports an error.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
out=$(realpath -m "${1:-build-deb}")

. scripts/lib.sh
ensure_packages dpkg-dev debhelper lintian fakeroot meson ninja-build pkg-config python3 \
        libevent-dev libcjson-dev libsystemd-dev systemd bash-completion python3-prometheus-client

# Only what an earlier run left in OUT_DIR is removed.
mkdir -p "$out"
rm -rf "$out/src" "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo "$out/build.log" "$out/lintian.txt"
mkdir -p "$out/src/hyperamp"
# The sources only: what git tracks (plus new files not ignored), or, outside
# a git checkout, the tree without build directories.
if [ "$(git -C "$src" rev-parse --show-toplevel 2>/dev/null)" = "$src" ]; then
        git -C "$src" ls-files -z -c -o --exclude-standard |
                (cd "$src" && xargs -0 cp --parents -t "$out/src/hyperamp" --)
else
        tar -C "$src" --exclude='./build*' --exclude='./.git' -cf - . | tar -C "$out/src/hyperamp" -xf -
fi

echo "deb.sh: dpkg-buildpackage -b -us -uc in $out/src/hyperamp (log: $out/build.log)" >&2
if ! (cd "$out/src/hyperamp" &&
      DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-nocheck parallel=$(nproc)}" \
      dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1; then
        tail -n 40 "$out/build.log" >&2
        echo "deb.sh: dpkg-buildpackage failed; the full log is $out/build.log" >&2
        exit 1
fi
mv "$out"/src/*.deb "$out"/src/*.changes "$out"/src/*.buildinfo "$out/"
rm -rf "$out/src"
changes=$(ls "$out"/*.changes)

# lintian: every tag, then a summary by severity; errors fail.
rc=0
lintian --no-cfg --display-level '>=pedantic' --tag-display-limit 0 "$changes" \
        >"$out/lintian.txt" 2>&1 || rc=$?
echo "deb.sh: lintian $(lintian --version | awk '{ print $2 }') on $(basename "$changes"):"
for sev in E W I P; do
        n=$(grep -c "^$sev: " "$out/lintian.txt" || true)
        printf '  %s: %d\n' "$(case $sev in E) echo errors ;; W) echo warnings ;;
                I) echo info ;; P) echo pedantic ;; esac)" "$n"
done
grep -E '^[EW]: ' "$out/lintian.txt" | sed 's/^/  /' || true
ls "$out"/*.deb
if [ "$rc" -ne 0 ] || grep -q '^E: ' "$out/lintian.txt"; then
        echo "deb.sh: lintian reports errors (exit $rc); see $out/lintian.txt" >&2
        exit 1
fi
