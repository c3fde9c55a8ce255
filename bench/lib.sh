# SPDX-License-Identifier: MIT
# Shared by the bench shell scripts (run.sh, v2.sh); source it from the
# top of the tree.

# start_hyperampd BUILD DIR CONFIG: a private hyperampd on DIR/ctl.sock,
# waited for (READY=1, bounded); its pid in HYPERAMPD_PID.
start_hyperampd() {
        HYPERAMPD_PID=$(python3 bench/procs.py start "$2/notify" -- "$1/src/daemon/hyperampd" \
                --config "$3" --socket "$2/ctl.sock" --log-level warning)
}

# stop_hyperampd: SIGTERM, then wait (bounded) for it to go.
stop_hyperampd() {
        [ -n "${HYPERAMPD_PID:-}" ] || return 0
        kill -TERM "$HYPERAMPD_PID" 2>/dev/null || true
        timeout 15 tail -s 0.05 --pid="$HYPERAMPD_PID" -f /dev/null || kill -KILL "$HYPERAMPD_PID" 2>/dev/null || true
        HYPERAMPD_PID=
}
