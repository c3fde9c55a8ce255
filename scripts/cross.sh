#!/usr/bin/env bash
# Cross-build hyperamp for a board's CPU and run the test suite under
# qemu-user.
#   scripts/cross.sh aarch64|riscv64 [BUILD_DIR] [MESON_TEST_ARG...]
# e.g. scripts/cross.sh riscv64 build-riscv64 --suite unit
#
# It installs what is missing (Debian's cross gcc, qemu-user-static,
# mmdebstrap), makes a sysroot of the target's Debian libraries once (in
# BUILD_DIR/sysroot, where the tests' second user can read it too), builds
# with warnings as errors and runs the suite with every foreign program
# under qemu-user.
#
# Why a sysroot and not multiarch: Debian 12's libevent-dev is not
# Multi-Arch: same, so libevent-dev:arm64 cannot sit beside the native one;
# and Debian 12 has no riscv64 port at all.  aarch64 uses Debian 12's
# libraries; riscv64 uses Debian 13's, the first release with riscv64, so
# those binaries need glibc 2.41 (Debian 13) on the board.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() { echo "usage: scripts/cross.sh aarch64|riscv64 [BUILD_DIR] [MESON_TEST_ARG...]" >&2; }

arch=${1:-}
case "$arch" in
aarch64) debarch=arm64 suite=bookworm ;;
riscv64) debarch=riscv64 suite=trixie ;;
-h|--help) usage; exit 0 ;;
*) usage; exit 2 ;;
esac
triplet=$arch-linux-gnu
build=${2:-build-$arch}
shift $(( $# < 2 ? $# : 2 ))

ensure_packages meson ninja-build pkg-config python3 "gcc-$triplet" qemu-user-static mmdebstrap

# The sysroot: the target's libc (with libatomic, which riscv64 gcc links for
# byte-sized atomics) and the project's libraries, unpacked (no
# maintainer scripts run).  Remade when this list changes.
libs="libc6-dev,libatomic1,libevent-dev,libcjson-dev,libsystemd-dev"
mkdir -p "$build"
sysroot=$(realpath "$build")/sysroot
stamp="$debarch $suite $libs"
if [ "$(cat "$sysroot/.hyperamp-libs" 2>/dev/null)" != "$stamp" ]; then
        echo "cross: making the $debarch sysroot from Debian $suite in $sysroot" >&2
        rm -rf "$sysroot" "$sysroot.new"
        mmdebstrap --quiet --arch="$debarch" --variant=extract --include="$libs" \
                "$suite" "$sysroot.new" http://deb.debian.org/debian >&2
        # Debian 13 is merged-/usr, but its links /lib -> usr/lib etc. are
        # made at installation, which an extract skips; ld and qemu need them.
        for d in bin sbin lib; do
                [ -e "$sysroot.new/$d" ] || ln -s "usr/$d" "$sysroot.new/$d"
        done
        echo "$stamp" > "$sysroot.new/.hyperamp-libs"
        mv "$sysroot.new" "$sysroot"
fi
consts=$sysroot.ini
printf "[constants]\nsysroot = '%s'\n" "$sysroot" > "$consts"

if [ ! -f "$build/build.ninja" ]; then
        meson setup "$build" --cross-file "$consts" --cross-file "cross/$triplet.ini" \
                -Dwerror=true -Dtest_seams=true >/dev/null
else
        meson configure "$build" -Dtest_seams=true >/dev/null   # a tree set up before the option
fi
build_tree "$build"
echo "cross: built $arch in $build/" >&2

# Emulation is several times slower: more room before meson's per-test
# timeout (the harness scales its own waits through HYPERAMP_TEST_TIMEOUT_SCALE,
# set by tests/integration/meson.build for cross builds).
status=0
meson test -C "$build" --print-errorlogs --num-processes 2 --timeout-multiplier 4 "$@" ||
        status=$?
scripts/test-summary.py "$build/meson-logs/testlog.json"
echo "cross: $arch took $SECONDS s (sysroot, build and tests)" >&2
exit $status
