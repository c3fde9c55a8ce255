"""One Markdown table row from `hyperampctl bench --json` on stdin.

    row.py TRANSPORT SERVICE [THREADS]   (THREADS: an shm row)"""
import json
import sys

r = json.load(sys.stdin)
if r["failures"]:
    sys.exit(f"bench reported {r['failures']} failures: {r}")
lat = r["latency_us"]


def us(v):
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"



third = sys.argv[3] if len(sys.argv) > 3 else r["connections"]
print(f"| {sys.argv[1]} | {sys.argv[2]} | {r['size']} | {r['concurrency']} | {third} "
      f"| {r['req_per_s']:,.0f} | {us(lat['p50'])} | {us(lat['p90'])} | {us(lat['p99'])} "
      f"| {us(lat['max'])} |")
