#!/usr/bin/env bash
# What the daemon does per socket request: system calls, context switches
# and allocations, for echo 64 B at the shapes of vs-redis.sh that matter
# most (connections x in flight per connection: 8 x 1, 64 x 1, 8 x 16).
#   bench/syscalls.sh [BUILD_DIR] [N]
# A private hyperampd (built-in defaults but queue_entries 1024), with the
# allocation counter preloaded when the build has it (BUILD_DIR/tests/
# liballoccount.so).  Per shape:
# - context switches: voluntary + nonvoluntary over /proc/PID/task/*/status
#   (every thread), before and after `hyperampctl bench ... -n N`, over N;
# - allocations: the counter's count over the same run, over N;
# - system calls: `strace -c -f -p PID` attached (every thread) during a
#   second run of N/5 requests, calls over requests.  strace slows the
#   daemon, so batches grow: read the pipelined row as relative only.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-100000}
. scripts/lib.sh
command -v strace >/dev/null || ensure_packages strace
exec python3 - "$build" "$n" <<'PY'
import glob, json, os, re, signal, struct, subprocess, sys, time

sys.path.insert(0, "bench")
from procs import Procs

build, N = sys.argv[1], int(sys.argv[2])
SHAPES = [(8, 1), (64, 1), (8, 16)]
ATTACH_S = 15


def ctx_switches(pid):
    total = 0
    for st in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(st) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass        # a thread that ended meanwhile
    return total


def bench(d, c, p, n):
    out = subprocess.run([f"{build}/src/ctl/hyperampctl", "--socket", f"{d}/ha.sock", "--json",
                          "bench", "-s", "echo", "--size", "64", "-c", str(c * p),
                          "--connections", str(c), "-n", str(n)],
                         check=True, capture_output=True, text=True, timeout=600).stdout
    r = json.loads(out)
    if r["failures"]:
        sys.exit(f"hyperampctl bench reported {r['failures']} failures: {r}")
    return r


def traced(status):
    try:
        with open(status) as f:
            return any(l.startswith("TracerPid:") and l.split()[1] != "0" for l in f)
    except FileNotFoundError:
        return True     # a thread that ended meanwhile


def strace_run(d, pid, c, p, n):
    """Calls per request by system call name, under strace -c."""
    out = f"{d}/strace.{c}x{p}"
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", out],
                          stderr=subprocess.DEVNULL)
    try:
        # Until every thread is traced (TracerPid), bounded; polled with
        # a growing step.
        deadline, step = time.monotonic() + ATTACH_S, 0.001
        while not all(traced(t) for t in glob.glob(f"/proc/{pid}/task/*/status")):
            if time.monotonic() > deadline or st.poll() is not None:
                sys.exit(f"strace did not attach to every thread of {pid}")
            time.sleep(step)
            step = min(step * 2, 0.1)
        bench(d, c, p, n)
    finally:
        st.send_signal(signal.SIGINT)
        try:
            st.wait(timeout=ATTACH_S)
        except subprocess.TimeoutExpired:
            st.kill()
            st.wait()
    calls = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1)) / n
    return calls


env = {}
counter = f"{build}/tests/liballoccount.so"
with Procs("syscalls.") as ps:
    d = ps.dir
    if os.path.exists(counter):
        env = {"LD_PRELOAD": os.path.abspath(counter), "HA_ALLOC_COUNT": f"{d}/allocs"}
    with open(f"{d}/cfg.json", "w") as f:
        json.dump({"shm_name": f"/hyperamp-syscalls-{os.getpid()}", "queue_entries": 1024}, f)
    pid = ps.start([f"{build}/src/daemon/hyperampd", "--config", f"{d}/cfg.json",
                    "--socket", f"{d}/ha.sock", "--log-level", "warning"], "hyperampd",
                   env=env).pid

    def allocs():
        if not env:
            return None
        with open(f"{d}/allocs", "rb") as f:
            return struct.unpack("<Q", f.read(8))[0]

    print("| shape | ctx switches / req | allocations / req | syscalls / req (strace, "
          f"{N // 5:,} requests) |")
    print("|---|---|---|---|")
    for c, p in SHAPES:
        bench(d, c, p, 2000)            # warm: connections, buffers
        a0, x0 = allocs(), ctx_switches(pid)
        r = bench(d, c, p, N)
        a1, x1 = allocs(), ctx_switches(pid)
        calls = strace_run(d, pid, c, p, N // 5)
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])
                        if v >= 0.005)
        al = "-" if a0 is None else f"{(a1 - a0) / N:.3f}"
        print(f"| {c} x {p} | {(x1 - x0) / N:.2f} | {al} | {sum(calls.values()):.2f}: {top} |")
        print(f"{c}x{p}: {r['req_per_s']:,.0f} req/s without strace", file=sys.stderr)
PY
