#!/usr/bin/env bash
# The control socket side by side with redis over a Unix socket, in one run:
# start a private redis-server and a private hyperampd (built-in defaults but
# queue_entries 1024, for 64 x 16 in flight),
# run each shape (connections x requests in flight per connection) against
# both, interleaved, for ROUNDS rounds, and print the medians and ratios.
#   bench/vs-redis.sh [BUILD_DIR] [ROUNDS]
# redis:    redis-benchmark -s SOCK --csv -c C [-P P] -n N ECHO <64 B>
# hyperamp: hyperampctl bench -s echo --size 64 -c C*P --connections C -n N
# hyperampctl bench verifies every response.  SCALE=0.5 halves every N;
# THREADS=T gives both clients T threads (at most C; default 1);
# SPIN_US=U passes --spin-us U to hyperampctl bench (its default is 50:
# it polls that long for replies before it sleeps; redis-benchmark always
# sleeps at once, so SPIN_US=0 is the like-for-like client);
# SOCKET_POLL_US=U sets the daemon's socket_poll_us (default 50; 0: its
# loop sleeps at once, as redis-server's does).
# Besides req/s, each server's own CPU time (utime + stime of every thread,
# from /proc) over the requests of each run: what a request costs the
# server, whatever its client does.
# Each server is waited for with a bound (READY=1 on its own notify socket)
# and both are stopped, and the scratch directory removed, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${2:-3}
. scripts/lib.sh
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null ||
        ensure_packages redis-server redis-tools
exec python3 - "$build" "$rounds" "${SCALE:-1}" "${THREADS:-1}" "${SPIN_US:-}" \
        "${SOCKET_POLL_US:-}" <<'PY'
import json, os, statistics, subprocess, sys

sys.path.insert(0, "bench")
from procs import Procs

build, rounds, scale, threads = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
spin, socket_poll = sys.argv[5], sys.argv[6]
# (connections, in flight per connection, requests per run)
SHAPES = [(1, 1, 40000), (8, 1, 150000), (64, 1, 200000),
          (8, 16, 600000), (1, 16, 300000), (64, 16, 600000)]
PAYLOAD = "x" * 64
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    """utime + stime of every thread of pid, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def redis(d, c, p, n):
    argv = ["redis-benchmark", "-s", f"{d}/redis.sock", "--csv", "-c", str(c), "-n", str(n)]
    if p > 1:
        argv += ["-P", str(p)]
    if threads > 1:
        argv += ["--threads", str(min(threads, c))]
    out = subprocess.run(argv + ["ECHO", PAYLOAD], check=True, capture_output=True,
                         text=True, timeout=300).stdout
    # "test","rps",...  then one row per command
    rows = [l for l in out.splitlines() if l.startswith('"') and not l.startswith('"test"')]
    return float(rows[-1].split(",")[1].strip('"'))


def hyperamp(d, c, p, n):
    argv = [f"{build}/src/ctl/hyperampctl", "--socket", f"{d}/ha.sock", "--json", "bench",
            "-s", "echo", "--size", "64", "-c", str(c * p), "--connections", str(c),
            "-n", str(n)]
    # Only when asked: a build from before --threads (a "before" run) has none.
    if threads > 1:
        argv += ["--threads", str(min(threads, c))]
    if spin:
        argv += ["--spin-us", spin]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300).stdout
    r = json.loads(out)
    if r["failures"]:
        sys.exit(f"hyperampctl bench reported {r['failures']} failures: {r}")
    return float(r["req_per_s"])


with Procs("vs-redis.") as ps:
    d = ps.dir
    rpid = ps.start(["redis-server", "--port", "0", "--unixsocket", f"{d}/redis.sock",
              "--save", "", "--appendonly", "no", "--supervised", "systemd",
              "--loglevel", "warning"], "redis")
    with open(f"{d}/cfg.json", "w") as f:
        # Defaults, but a queue that holds 64 x 16 in flight (the default 255 would
        # refuse the requests past it with E_BUSY).
        cfg = {"shm_name": f"/hyperamp-vs-redis-{os.getpid()}", "queue_entries": 1024}
        if socket_poll:
            cfg["socket_poll_us"] = int(socket_poll)
        json.dump(cfg, f)
    hpid = ps.start([f"{build}/src/daemon/hyperampd", "--config", f"{d}/cfg.json",
              "--socket", f"{d}/ha.sock", "--log-level", "warning"], "hyperampd")
    pid = {"redis": rpid.pid, "hyperamp": hpid.pid}
    res = {s: {"redis": [], "hyperamp": []} for s in SHAPES}
    cost = {s: {"redis": [], "hyperamp": []} for s in SHAPES}     # server CPU us a request
    for rnd in range(rounds):
        for s in SHAPES:
            c, p, n = s
            n = max(1000, int(n * scale))
            # Alternate which goes first, so neither always runs on a warm cache.
            order = [("redis", redis), ("hyperamp", hyperamp)]
            if rnd % 2:
                order.reverse()
            for name, fn in order:
                before = cpu_s(pid[name])
                res[s][name].append(fn(d, c, p, n))
                cost[s][name].append((cpu_s(pid[name]) - before) / n * 1e6)
            r, h = res[s]["redis"][-1], res[s]["hyperamp"][-1]
            print(f"round {rnd + 1}: {c}x{p}: redis {r:,.0f}, hyperamp {h:,.0f} req/s, "
                  f"ratio {h / r:.2f}; server CPU a request: redis "
                  f"{cost[s]['redis'][-1]:.2f} us, hyperampd {cost[s]['hyperamp'][-1]:.2f} us",
                  file=sys.stderr)
    print(f"| shape (connections x in flight) | redis req/s | hyperamp req/s | ratio "
          f"| ratio per round | server CPU a request: redis-server | hyperampd |")
    print("|---|---|---|---|---|---|---|")
    for s in SHAPES:
        r = statistics.median(res[s]["redis"])
        h = statistics.median(res[s]["hyperamp"])
        per = " / ".join(f"{b / a:.2f}" for a, b in zip(res[s]["redis"], res[s]["hyperamp"]))
        print(f"| {s[0]} x {s[1]} | {r:,.0f} | {h:,.0f} | {h / r:.2f} | {per} "
              f"| {statistics.median(cost[s]['redis']):.2f} us "
              f"| {statistics.median(cost[s]['hyperamp']):.2f} us |")
    print(f"(median of {rounds} interleaved rounds; client threads: {threads}; "
          f"hyperampctl --spin-us: {spin or 'default'}; "
          f"hyperampd socket_poll_us: {socket_poll or 'default'})")
PY
