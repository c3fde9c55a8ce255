#!/usr/bin/env bash
# Build the libFuzzer targets with clang under ASan+UBSan and run each one
# for SECONDS (default 60) from its seed corpus in fuzz/corpus/TARGET.
#   scripts/fuzz.sh [SECONDS] [BUILD_DIR]
# A finding fails the run and leaves the reproducer (crash-*, leak-*, ...)
# in BUILD_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
build=${2:-build-fuzz}

if ! command -v clang >/dev/null ||
   ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "ok installed"; then
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
CC=clang scripts/setup.sh "$build" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false

status=0
for t in fuzz-frame fuzz-config fuzz-queue fuzz-v1 fuzz-zone; do
        work=$(mktemp -d)
        cp -r "fuzz/corpus/$t/." "$work/"
        rc=0
        (cd "$build" && UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
                "./fuzz/$t" -max_total_time="$secs" -max_len=70000 -print_final_stats=1 \
                "$work" > "fuzz-$t.log" 2>&1) || rc=$?
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/fuzz-$t.log" | grep -o '[0-9]*$' || echo 0)
        echo "fuzz: $t: ${execs} executions in ${secs} s, exit $rc"
        if [ "$rc" -ne 0 ]; then
                tail -n 40 "$build/fuzz-$t.log"
                status=1
        fi
        rm -rf "$work"
done
exit $status
