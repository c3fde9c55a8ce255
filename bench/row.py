"""One Markdown table row from `hyperampctl bench --json` on stdin."""
import json
import sys

r = json.load(sys.stdin)
if r["failures"]:
    sys.exit(f"bench reported {r['failures']} failures: {r}")
lat = r["latency_us"]
print(f"| {sys.argv[1]} | {r['size']} | {r['concurrency']} | {r['connections']} "
      f"| {r['req_per_s']:,.0f} | {lat['p50']:.0f} | {lat['p90']:.0f} | {lat['p99']:.0f} "
      f"| {lat['max']:.0f} |")
