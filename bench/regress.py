#!/usr/bin/env python3
"""The no-regression check of docs/PERFORMANCE.md: the shared-memory and
encrypt rows of bench/run.sh for two builds, a private daemon of each
build per round (queue_entries 1024), the builds alternated (which goes
first swaps each round), medians and each round's figure.

    bench/regress.py BEFORE_BUILD AFTER_BUILD [ROUNDS]   (default 7)

Each build runs its own hyperampctl against its own hyperampd, with
their defaults; every response is verified (a failure stops the run)."""
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import Procs  # noqa: E402

COMMANDS = [
    ["--transport", "shm", "-s", "echo", "--size", "64", "-c", "64", "-n", "500000"],
    ["-s", "encrypt", "--size", "4096", "-c", "64", "--connections", "64", "-n", "100000"],
]


def one_round(build, res):
    with Procs("regress.") as ps:
        d = ps.dir
        with open(f"{d}/cfg.json", "w") as f:
            json.dump({"shm_name": f"/hyperamp-regress-{os.getpid()}", "queue_entries": 1024}, f)
        ps.start([f"{build}/src/daemon/hyperampd", "--config", f"{d}/cfg.json",
                  "--socket", f"{d}/ha.sock", "--log-level", "warning"], "hyperampd")
        for i, argv in enumerate(COMMANDS):
            out = subprocess.run([f"{build}/src/ctl/hyperampctl", "--socket", f"{d}/ha.sock",
                                  "--json", "bench"] + argv, check=True, capture_output=True,
                                 text=True, timeout=600).stdout
            r = json.loads(out)
            if r["failures"]:
                sys.exit(f"{build}: hyperampctl bench reported {r['failures']} failures: {r}")
            res[i].append(r["req_per_s"])


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    builds = sys.argv[1:3]
    rounds = int(sys.argv[3]) if len(sys.argv) == 4 else 7
    res = {b: [[] for _ in COMMANDS] for b in builds}
    for rnd in range(rounds):
        for b in (builds if rnd % 2 == 0 else builds[::-1]):
            one_round(b, res[b])
        print(f"round {rnd + 1} of {rounds} done", file=sys.stderr)
    print("| command | before: " + builds[0] + " | after: " + builds[1] + " |")
    print("|---|---|---|")
    for i, argv in enumerate(COMMANDS):
        cells = [f"{statistics.median(res[b][i]):,.0f} ("
                 + " / ".join(f"{x:,.0f}" for x in res[b][i]) + ")" for b in builds]
        print(f"| `hyperampctl bench {' '.join(argv)}` | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
