"""Private servers for the bench scripts (vs-redis.sh, syscalls.sh): each
started with a notify socket of its own and waited for (READY=1) with a
bound, all stopped (SIGTERM, then SIGKILL past a bound) and the scratch
directory removed on the way out, however the script ends.

For the shell scripts (bench/lib.sh):

    python3 bench/procs.py start NOTIFY_PATH -- ARGV...

starts ARGV with NOTIFY_SOCKET=NOTIFY_PATH, waits for READY=1 (bounded,
noticing a server that dies), prints its pid and leaves it running; the
caller stops it.  Exit 1, the server killed, when it never got ready."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

READY_S = 15            # to come up
STOP_S = 15             # to go after SIGTERM


def start_ready(argv, name, path, env=None, started=None):
    """Start argv with NOTIFY_SOCKET=path; its Popen once READY=1 came,
    sys.exit() if it did not within READY_S or died first."""
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    p = subprocess.Popen(argv, env=dict(os.environ, **(env or {}), NOTIFY_SOCKET=path),
                         stdout=subprocess.DEVNULL)
    if started:
        started(p)
    deadline = time.monotonic() + READY_S
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                sys.exit(f"{name} did not become ready within {READY_S} s")
            # Short waits: a server that dies is seen at once.
            ns.settimeout(min(left, 0.5))
            try:
                if b"READY=1" in ns.recv(4096):
                    return p
            except socket.timeout:
                pass
            if p.poll() is not None:
                sys.exit(f"{name} exited with status {p.returncode} before it was ready")
    finally:
        ns.close()


class Procs:
    def __init__(self, prefix):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.procs = []
        # SIGTERM and SIGHUP end the script through __exit__, as Ctrl-C does.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda s, f: sys.exit(f"stopped by signal {s} at {f.f_code.co_name}:{f.f_lineno}"))

    def __enter__(self):
        return self

    def start(self, argv, name, env=None):
        """Start argv; return its Popen once it notified READY=1."""
        p = start_ready(argv, name, os.path.join(self.dir, name + '.notify'), env,
                        lambda p: self.procs.append(p))
        return p

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        return False


if __name__ == '__main__':
    if len(sys.argv) < 5 or sys.argv[1] != 'start' or sys.argv[3] != '--':
        sys.exit('usage: procs.py start NOTIFY_PATH -- ARGV...')
    server = []
    try:
        start_ready(sys.argv[4:], os.path.basename(sys.argv[4]), sys.argv[2],
                    started=server.append)
    except SystemExit:
        if server and server[0].poll() is None:
            server[0].kill()
        raise
    print(server[0].pid)
