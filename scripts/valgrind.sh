#!/usr/bin/env bash
# Valgrind memcheck: the unit tests, and the integration suite with every
# hyperampd it starts run under memcheck (HYPERAMPD_WRAPPER), then one
# summary of all the logs.  Fails on any memcheck error and on any byte
# definitely or indirectly lost, in the daemon or in a unit test.
#   scripts/valgrind.sh [BUILD_DIR [MESON_OPTION...]]    (default build-valgrind)
# BUILD_DIR must be a plain build: memcheck cannot run sanitizer binaries.
# The logs stay in BUILD_DIR/valgrind/ (daemon.PID.xml, unit.PID.xml).
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build-valgrind}
scripts/setup.sh "$build" "${@:2}"

sanitize=$(meson introspect --buildoptions "$build" | python3 -c '
import json, sys
print([o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"][0])')
if [ "$sanitize" != none ]; then
        echo "valgrind: $build is built with -Db_sanitize=$sanitize; it needs a plain build" >&2
        exit 2
fi

logs=$(realpath "$build")/valgrind
rm -rf "$logs"
mkdir -p "$logs"
# Leaks count as errors (exit 99) only when definite or indirect: "still
# reachable" is what libraries keep until exit.  Descriptors are the
# daemon's business at exit (the harness checks its socket is gone).  The
# errors go to the XML file; --log-file keeps valgrind's own messages out of
# the daemon's stderr, which the tests read.
vg=(valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect
    --show-leak-kinds=definite,indirect --track-fds=no --num-callers=30 --xml=yes)

status=0
start=$SECONDS
# The unit tests are small and single-purpose: cheap to check as a whole.
meson test -C "$build" --suite unit --num-processes 2 --print-errorlogs --timeout-multiplier 10 \
        --wrapper "${vg[*]} --log-file=$logs/unit.%p.log --xml-file=$logs/unit.%p.xml" || status=1
# Each daemon the tests start; the harness scales its timeouts by 10 under a
# wrapper (HYPERAMP_TEST_TIMEOUT_SCALE), meson its own by the same.
# The harness lists the daemons it (or a crash test) kills on purpose; any
# other daemon whose log has no final status fails the scan.
HYPERAMP_KILLED_LOG=$logs/killed-on-purpose \
HYPERAMPD_WRAPPER="${vg[*]} --log-file=$logs/daemon.%p.log --xml-file=$logs/daemon.%p.xml" \
        meson test -C "$build" --suite integration --num-processes 2 --print-errorlogs \
        --timeout-multiplier 10 || status=1

python3 scripts/valgrind-scan.py "$logs" || status=1
echo "valgrind: done in $((SECONDS - start)) s, logs in $logs" >&2
exit $status
