#!/usr/bin/env bash
# Reproduce the figures in docs/PERFORMANCE.md: start a private hyperampd,
# run hyperampctl bench over a matrix, print a Markdown table.
#   bench/run.sh [BUILD_DIR] [REQUESTS]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-100000}
d=$(mktemp -d)
. bench/lib.sh
trap 'stop_hyperampd; rm -rf "$d"' EXIT

printf '{"shm_name":"/hyperamp-bench-%s"}\n' $$ > "$d/cfg.json"
start_hyperampd "$build" "$d" "$d/cfg.json"

ctl="$build/src/ctl/hyperampctl --socket $d/ctl.sock"
echo "| transport | service | size | concurrency | connections | req/s | p50 us | p90 us | p99 us | max us |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for spec in "echo 64" "encrypt 4096"; do
        set -- $spec
        # concurrency:connections
        for ck in 1:1 8:1 64:1 64:64; do
                c=${ck%:*} k=${ck#*:} reqs=$n
                [ "$c" -eq 1 ] && reqs=$((n / 5))
                $ctl bench -s "$1" --size "$2" -c "$c" --connections "$k" -n "$reqs" --json |
                        python3 bench/row.py socket "$1"
        done
done

echo
echo "| transport | service | size | concurrency | threads | req/s | p50 us | p90 us | p99 us | max us |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for spec in "echo 64 64 1" "echo 64 64 2" "echo 64 64 4" "encrypt 4096 64 1" "echo 64 1 1"; do
        set -- $spec
        reqs=$((n * 10))        # shared memory is fast: run long enough to measure
        [ "$3" -eq 1 ] && reqs=$n
        $ctl bench --transport shm -s "$1" --size "$2" -c "$3" --threads "$4" -n "$reqs" --json |
                python3 bench/row.py "shm" "$1" "$4"
done
# One request in flight while another client keeps the daemon busy.
$ctl bench --transport shm -c 64 -n $((n * 20)) --json > "$d/busy.json" &
busy=$!
$ctl bench --transport shm -s echo --size 64 -c 1 -n "$n" --json |
        python3 bench/row.py "shm, daemon busy" echo 1
wait $busy

stop_hyperampd
