#!/usr/bin/env bash
# The HyperAMP v2 round trip, side by side (docs/PERFORMANCE.md): one
# spinning simulated seL4 peer (sel4v2 --spin) on a file standing in for the
# window, driven by
#   - raw-v2: the minimal ring driver, spinning (the floor);
#   - hyperampd's v2 executor: its own round trip (stats round_trip_us), and
#     end to end from a zone lease (lease-v2) and from the control socket;
#   - raw-v2 with the original tools' fixed poll step (1 ms, 100 ms).
#   bench/v2.sh [BUILD_DIR] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-20000}
d=$(mktemp -d)
peer=
. bench/lib.sh
trap 'stop_hyperampd; kill $peer 2>/dev/null || true; rm -rf "$d"' EXIT

truncate -s $((0x402000)) "$d/window"
mkfifo "$d/peer.out"
"$build/tests/sel4v2" --mem "$d/window" --spin > "$d/peer.out" &
peer=$!
exec 3< "$d/peer.out"
read -r -t 15 -u 3 line && [ "$line" = "sel4v2 ready" ] || { echo "peer not ready" >&2; exit 1; }

row() { # label, line with p50_us= p99_us=
        printf '| %s | %s | %s |\n' "$1" "$(sed -n 's/.*p50_us=\([^ ]*\).*/\1/p' <<<"$2")" \
                "$(sed -n 's/.*p99_us=\([^ ]*\).*/\1/p' <<<"$2")"
}
echo "| driver (64-byte encrypt, one request at a time) | p50 us | p99 us |"
echo "|---|---|---|"
row "raw-v2, spinning (the floor)" "$("$build/tests/raw-v2" --mem "$d/window" -n "$n")"

cat > "$d/cfg.json" <<EOF
{"shm_name": "/hyperamp-bench-v2-$$", "workers": 2,
 "remote_zones": [{"name": "sel4", "protocol": "v2", "address": "0x0",
                   "mem": "$d/window", "services": [1, 2], "timeout_ms": 5000}]}
EOF
start_hyperampd "$build" "$d" "$d/cfg.json"
row "hyperampd, zone lease end to end (lease-v2)" \
        "$("$build/tests/lease-v2" --socket "$d/ctl.sock" -n "$n")"
stats=$("$build/src/ctl/hyperampctl" --socket "$d/ctl.sock" --json=short stats)
python3 - "$stats" <<'PY'
import json, sys
x = [e for e in json.loads(sys.argv[1])["executors"] if e["name"] == "sel4"][0]
print("| hyperampd, the v2 executor's own round trip (stats) | %.1f | %.1f |"
      % (x["round_trip_us"]["p50"], x["round_trip_us"]["p99"]))
PY
stop_hyperampd
row "raw-v2, original poll step 1 ms" "$("$build/tests/raw-v2" --mem "$d/window" -n 200 --poll-us 1000)"
row "raw-v2, original poll step 100 ms" "$("$build/tests/raw-v2" --mem "$d/window" -n 10 --poll-us 100000)"
