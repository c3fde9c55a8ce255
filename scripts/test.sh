#!/usr/bin/env bash
# Set up, build and run the whole test suite.
#   scripts/test.sh [BUILD_DIR [MESON_OPTION...]]
# e.g. scripts/test.sh build-asan -Db_sanitize=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
scripts/setup.sh "$@"

# Sanitizer builds run several times slower: more room before meson's
# per-test timeout, so a loaded machine does not turn slowness into a failure.
mult=1
case " $* " in *" -Db_sanitize="*) mult=3 ;; esac

status=0
meson test -C "$build" --print-errorlogs --num-processes 2 --timeout-multiplier "$mult" || status=$?

scripts/test-summary.py "$build/meson-logs/testlog.json"
exit $status
