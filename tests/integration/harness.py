# SPDX-License-Identifier: MIT
"""Integration-test harness for hyperampd and hyperampctl (stdlib only).

Daemon is a context manager: it starts hyperampd in a private temporary
directory with a unique shared-memory name, waits for READY=1 on a
notification socket it binds itself (no sleeps), and on exit sends SIGTERM
and checks that the daemon shut down cleanly: exit status 0, STOPPING=1
sent, the control socket and the /dev/shm object removed.  The daemon's
stderr goes to a file that is printed only when something failed.

Environment:
  HYPERAMPD, HYPERAMPCTL   binaries (meson sets them; default ../../build/...)
  HYPERAMPD_WRAPPER        command prefix for the daemon, e.g.
                           "valgrind --error-exitcode=99 --leak-check=full"
  HYPERAMP_EXE_WRAPPER     command prefix for every program of the build
                           (daemon, hyperampctl, test clients): qemu-user
                           in a cross build (tests/integration/meson.build)
  HYPERAMP_TEST_TIMEOUT_SCALE  multiply every timeout (default 1, or 10
                           when either wrapper is set)
"""
import glob
import itertools
import json
import os
import re
import select
import selectors
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.normpath(os.path.join(HERE, '..', '..', 'build'))

HYPERAMPD = os.environ.get('HYPERAMPD') or os.path.join(BUILD, 'src', 'daemon', 'hyperampd')
HYPERAMPCTL = os.environ.get('HYPERAMPCTL') or os.path.join(BUILD, 'src', 'ctl', 'hyperampctl')
# A foreign build's programs run under an emulator (qemu-user); the daemon
# may also run under a tool (valgrind).  WRAPPER is what starts the daemon,
# so a test that cannot run under any wrapper checks WRAPPER, one that
# cannot run under valgrind TOOL_WRAPPER, one that cannot be emulated
# EXE_WRAPPER.
EXE_WRAPPER = shlex.split(os.environ.get('HYPERAMP_EXE_WRAPPER', ''))
TOOL_WRAPPER = shlex.split(os.environ.get('HYPERAMPD_WRAPPER', ''))
WRAPPER = TOOL_WRAPPER + EXE_WRAPPER
TIMEOUT_SCALE = float(os.environ.get('HYPERAMP_TEST_TIMEOUT_SCALE') or (10 if WRAPPER else 1))
# scripts/valgrind.sh: where to list the daemons killed on purpose, so that
# an unfinished memcheck log of any other daemon fails the run.
KILLED_LOG = os.environ.get('HYPERAMP_KILLED_LOG')


def note_killed(pid):
    if KILLED_LOG:
        with open(KILLED_LOG, 'a') as f:
            f.write('%d\n' % pid)

# The test seams ($HYPERAMP_TEST_FAIL, _CRASH, _PAUSE, _STALL_FIFO,
# _STALL_ENTERED) are in hyperampd only when it was built with
# -Dtest_seams=true (scripts/setup.sh and every test build do; a release
# build does not).  A daemon asked for one in a build without them skips
# the test, saying so.
SEAM_VARS = ('HYPERAMP_TEST_FAIL', 'HYPERAMP_TEST_CRASH', 'HYPERAMP_TEST_PAUSE',
             'HYPERAMP_TEST_STALL_FIFO', 'HYPERAMP_TEST_STALL_ENTERED')
_seams = None


def has_test_seams():
    global _seams
    if _seams is None:
        with open(HYPERAMPD, 'rb') as f:
            _seams = b'HYPERAMP_TEST_FAIL' in f.read()
    return _seams


def require_seams(env):
    wanted = [k for k in (env or {}) if k in SEAM_VARS]
    if wanted and not has_test_seams():
        raise unittest.SkipTest('%s: hyperampd was built without -Dtest_seams=true'
                                % ', '.join(wanted))

READY_TIMEOUT = 10.0 * TIMEOUT_SCALE
# The daemon's own shutdown deadline is 10 s; allow for it plus slack.
STOP_TIMEOUT = 15.0 * TIMEOUT_SCALE
CTL_TIMEOUT = 30.0 * TIMEOUT_SCALE

PROTO_VERSION = 1
MAX_JSON = 64 * 1024

# The service reference implementation (src/core/services.c).
XOR_KEY = bytes([0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6,
                 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf, 0x4f, 0x3c])
SERVICES = {'encrypt': 1, 'decrypt': 2, 'echo': 66}


def xor_service(data):
    return bytes(b ^ XOR_KEY[i & 15] ^ 0x55 for i, b in enumerate(data))


def expected_result(service, data):
    return data if service in (66, 'echo') else xor_service(data)


_counter = itertools.count()


def unique_shm_name():
    return '/hyperamp-test-%d-%d' % (os.getpid(), next(_counter))


def shm_path(name):
    return '/dev/shm/' + name.lstrip('/')


# read(2)'s number on this machine's kernel: a program under qemu-user or
# valgrind still makes the host's system call from the same thread.
READ_SYSCALL = {'x86_64': 0, 'aarch64': 63, 'riscv64': 63}.get(os.uname().machine)


def threads_reading(pid, path):
    """How many threads of pid are blocked in read() on the file at path
    (a FIFO), from /proc: the proof that a worker is inside the stall
    service, where a counter would only say the job was queued."""
    fds = set()
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            if os.readlink('/proc/%d/fd/%s' % (pid, fd)) == path:
                fds.add(int(fd))
        except OSError:
            pass
    n = 0
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/syscall' % (pid, tid)) as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) > 1 and fields[0] == str(READ_SYSCALL) and int(fields[1], 16) in fds:
            n += 1
    return n


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


class ProgressClient:
    """A test client in the background that prints "progress N" as it
    answers.  Paced, it starts one more round per byte on its stdin, so a
    test picks the moment to act whatever the machine's speed; closing
    stdin lets it run freely to the end."""

    def __init__(self, cmd, env=None):
        self.proc = subprocess.Popen([str(a) for a in cmd], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.out = b''
        self.done = 0

    def go(self, rounds):
        """Let this many more rounds start."""
        self.proc.stdin.write(b'g' * rounds)
        self.proc.stdin.flush()

    def wait_progress(self, at_least, timeout):
        """Block on the client's stdout until it reports at_least answers;
        timeout is scaled here."""
        deadline = time.monotonic() + scaled(timeout)
        while self.done < at_least:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise AssertionError('client at %d answers, waited for %d' % (self.done,
                                                                              at_least))
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError('client exited early: %r %r' % (
                    self.out, self.proc.stderr.read()))
            self.out += chunk
            found = re.findall(rb'progress (\d+)\n', self.out[-8192:])
            if found:
                self.done = int(found[-1])

    def finish(self):
        """(returncode, stdout, stderr) once the client has exited."""
        out, err = self.proc.communicate(timeout=scaled(120))
        self.out += out
        self.sel.close()
        return self.proc.returncode, self.out.decode(), err.decode()

    def kill(self):
        self.proc.kill()
        self.finish()


class DaemonError(AssertionError):
    pass


def wait_until(cond, timeout=10.0, what='condition'):
    """Poll cond() with a small exponential back-off, bounded by timeout.

    Returns the first truthy value of cond(); raises AssertionError on
    timeout.  This is for state that has no event to wait on (counters in
    the daemon's stats); it is never used for readiness."""
    deadline = time.monotonic() + scaled(timeout)
    delay = 0.001
    last = None
    while True:
        last = cond()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError('timed out after %.1f s waiting for %s (last: %r)'
                                 % (scaled(timeout), what, last))
        time.sleep(delay)   # back-off between polls, not a wait for an event
        delay = min(delay * 2, 0.05)


def wait_pid_exit(proc, timeout):
    """proc.wait(timeout) that returns None instead of raising."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def run_ctl(args, socket_path=None, input=None, timeout=None, env=None, preexec_fn=None):
    """Run hyperampctl; returns (rc, stdout bytes, stderr str)."""
    cmd = EXE_WRAPPER + [HYPERAMPCTL]
    if socket_path is not None:
        cmd += ['--socket', socket_path]
    cmd += [str(a) for a in args]
    e = dict(os.environ)
    e.pop('HYPERAMP_SOCKET', None)
    if env:
        e.update(env)
    p = subprocess.run(cmd, input=input if input is not None else b'',
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout or CTL_TIMEOUT, env=e, preexec_fn=preexec_fn)
    return p.returncode, p.stdout, p.stderr.decode('utf-8', 'replace')


def run_daemon_cmd(args, timeout=None, env=None):
    """Run hyperampd to completion (--help, --check-config, usage errors).
    Returns (rc, stdout str, stderr str)."""
    require_seams(env)
    e = dict(os.environ)
    e.pop('NOTIFY_SOCKET', None)
    if env:
        e.update(env)
    p = subprocess.run(WRAPPER + [HYPERAMPD] + [str(a) for a in args],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout or scaled(10), env=e)
    return (p.returncode, p.stdout.decode('utf-8', 'replace'),
            p.stderr.decode('utf-8', 'replace'))


# ===== raw protocol client =====

def encode_frame(obj_or_bytes, payload=b''):
    """Build one frame; obj_or_bytes is a dict (serialised) or raw JSON bytes."""
    if isinstance(obj_or_bytes, (bytes, bytearray)):
        j = bytes(obj_or_bytes)
    else:
        j = json.dumps(obj_or_bytes, separators=(',', ':')).encode()
    return struct.pack('>II', len(j), len(payload)) + j + bytes(payload)


def request(method, id=None, params=None, v=PROTO_VERSION):
    o = {'v': v, 'method': method}
    if id is not None:
        o['id'] = id
    if params is not None:
        o['params'] = params
    return o


class Closed(Exception):
    """The daemon closed the connection (EOF or reset)."""


class RawClient:
    """A blocking protocol client with a bounded timeout on every read."""

    def __init__(self, path, timeout=10.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(scaled(timeout))
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.buf = bytearray()
        self.next_id = 1

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, obj_or_bytes, payload=b''):
        self.sock.sendall(encode_frame(obj_or_bytes, payload))

    def _fill(self, n):
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except ConnectionResetError as e:
                raise Closed('connection reset with %d of %d bytes buffered'
                             % (len(self.buf), n)) from e
            if not chunk:
                raise Closed('EOF with %d of %d bytes buffered' % (len(self.buf), n))
            self.buf += chunk

    def recv_frame(self):
        """Read one frame; returns (dict, payload bytes)."""
        self._fill(8)
        jlen, dlen = struct.unpack('>II', self.buf[:8])
        if jlen > MAX_JSON:
            raise AssertionError('reply JSON length %d exceeds %d' % (jlen, MAX_JSON))
        self._fill(8 + jlen + dlen)
        j = bytes(self.buf[8:8 + jlen])
        data = bytes(self.buf[8 + jlen:8 + jlen + dlen])
        del self.buf[:8 + jlen + dlen]
        obj = json.loads(j)
        if not isinstance(obj, dict):
            raise AssertionError('reply is not a JSON object: %r' % j)
        return obj, data

    def expect_closed(self):
        """Assert the daemon closes the connection (no further frames)."""
        try:
            self._fill(len(self.buf) + 1)
        except Closed:
            return
        raise AssertionError('connection still open, got unexpected bytes %r'
                             % bytes(self.buf[:64]))

    def call(self, method, params=None, payload=b''):
        """Send one request with a fresh id and return (reply, data)."""
        rid = self.next_id
        self.next_id += 1
        self.send(request(method, rid, params), payload)
        rep, data = self.recv_frame()
        if rep.get('id') != rid:
            raise AssertionError('reply id %r, expected %d: %r' % (rep.get('id'), rid, rep))
        return rep, data

    def result(self, method, params=None, payload=b''):
        rep, data = self.call(method, params, payload)
        if 'error' in rep:
            raise AssertionError('%s failed: %r' % (method, rep['error']))
        return rep['result'], data

    def submit(self, service, payload):
        return self.call('submit', {'service': service}, payload)

    def stats(self):
        return self.result('stats')[0]

    def ping(self):
        return self.result('ping')[0]


# ===== the daemon =====

class Daemon:
    """Run hyperampd for the duration of a with-block.

    config:   dict merged over {"shm_name": <unique>} and written as the
              config file (None values delete a key).
    args:     extra command-line arguments.
    socket_path: defaults to <tmpdir>/ctl.sock; use_env_socket passes it in
              $HYPERAMP_SOCKET instead of --socket.
    """

    def __init__(self, config=None, args=(), socket_path=None, use_env_socket=False,
                 check_clean_exit=True, umask=None, env=None, preexec_fn=None):
        require_seams(env)
        self.shm_name = unique_shm_name()
        self.config = {'shm_name': self.shm_name}
        for k, v in (config or {}).items():
            if v is None:
                self.config.pop(k, None)
            else:
                self.config[k] = v
        self.shm_name = self.config.get('shm_name', self.shm_name)
        self.args = list(args)
        self.socket_path_opt = socket_path
        self.use_env_socket = use_env_socket
        self.check_clean_exit = check_clean_exit
        self.umask = umask
        self.extra_env = env or {}
        self.preexec_fn = preexec_fn
        # Remove the shm object in the final clean-up if it is left over;
        # False for a daemon expected to fail on another daemon's object.
        self.owns_shm = True
        self.proc = None
        self.tmpdir = None
        self.notify = None
        self.notifications = []
        self.returncode = None
        self.failed = False

    # -- paths --
    @property
    def shm_file(self):
        return shm_path(self.shm_name)

    def log(self):
        try:
            with open(self.log_path, 'r', errors='replace') as f:
                return f.read()
        except (OSError, AttributeError):
            return ''

    def dump_log(self, why=''):
        # The pid names the wrapper's log too (valgrind's --log-file=...%p).
        sys.stderr.write('\n===== hyperampd log (%s)%s =====\n%s===== end of log =====\n'
                         % ('pid %d: %s' % (self.proc.pid, ' '.join(self.cmd))
                            if self.proc else '-',
                            ': ' + why if why else '', self.log()))
        sys.stderr.flush()

    # -- start --
    def start(self):
        self.tmpdir = tempfile.mkdtemp(prefix='hyperamp-it-')
        self.socket_path = self.socket_path_opt or os.path.join(self.tmpdir, 'ctl.sock')
        self.config_path = os.path.join(self.tmpdir, 'config.json')
        self.log_path = os.path.join(self.tmpdir, 'daemon.log')
        self.notify_path = os.path.join(self.tmpdir, 'notify.sock')
        with open(self.config_path, 'w') as f:
            json.dump(self.config, f, indent=2)

        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)

        env = dict(os.environ)
        env['NOTIFY_SOCKET'] = self.notify_path
        env.pop('HYPERAMP_SOCKET', None)
        self.cmd = WRAPPER + [HYPERAMPD, '--config', self.config_path]
        if self.use_env_socket:
            env['HYPERAMP_SOCKET'] = self.socket_path
        else:
            self.cmd += ['--socket', self.socket_path]
        self.cmd += self.args
        for k, v in self.extra_env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        self.logf = open(self.log_path, 'wb')
        crash = 'HYPERAMP_TEST_CRASH' in env
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf, env=env,
                                     umask=-1 if self.umask is None else self.umask,
                                     preexec_fn=self.preexec_fn)
        if crash:
            note_killed(self.proc.pid)      # it will kill itself at a crash point
        return self

    def _recv_notifications(self, timeout):
        """Wait up to timeout for datagrams; returns the new messages."""
        got = []
        r, _, _ = select.select([self.notify], [], [], timeout)
        while r:
            try:
                msg = self.notify.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            got.append(msg.decode('utf-8', 'replace'))
            self.notifications.append(got[-1])
        return got

    def notified(self, assignment):
        """Was assignment (e.g. "READY=1") in any notification so far?"""
        return any(assignment in m.split('\n') for m in self.notifications)

    def wait_ready(self, timeout=None):
        """Block on the notification socket until READY=1; fail early if the
        daemon exits first."""
        deadline = time.monotonic() + (timeout or READY_TIMEOUT)
        pidfd = None
        try:
            pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            pass
        try:
            while not self.notified('READY=1'):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DaemonError('hyperampd sent no READY=1 within %.1f s'
                                      % (timeout or READY_TIMEOUT))
                waitset = [self.notify] + ([pidfd] if pidfd is not None else [])
                # Without a pidfd, wake up now and then to notice an early exit.
                r, _, _ = select.select(waitset, [], [],
                                        left if pidfd is not None else min(left, 0.1))
                if self.notify in r:
                    self._recv_notifications(0)
                    continue
                if self.proc.poll() is not None:
                    self._recv_notifications(0)
                    if self.notified('READY=1'):
                        break
                    raise DaemonError('hyperampd exited with status %d before READY=1'
                                      % self.proc.returncode)
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def __enter__(self):
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.failed = True
            self._kill()
            self.dump_log('did not become ready')
            self._cleanup_files()
            raise
        return self

    # -- stop --
    def _kill(self):
        if self.proc and self.proc.poll() is None:
            note_killed(self.proc.pid)
            self.proc.kill()
            self.proc.wait()

    def kill(self):
        """SIGKILL on purpose (a crash test), and wait for it."""
        self._kill()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def terminate_and_wait(self, timeout=None):
        """SIGTERM, then wait (bounded) for the exit; returns the status or
        None if the daemon is still running after timeout."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = wait_pid_exit(self.proc, timeout or STOP_TIMEOUT)
        self._recv_notifications(0)
        self.returncode = rc
        return rc

    def stop(self):
        """Stop the daemon and check that it shut down cleanly; raises
        DaemonError listing every problem found."""
        problems = []
        already_exited = self.proc.poll() is not None
        rc = self.terminate_and_wait()
        if rc is None:
            problems.append('did not exit within %.1f s of SIGTERM' % STOP_TIMEOUT)
            self._kill()
            rc = self.proc.returncode
        if rc != 0:
            problems.append('exit status %r, expected 0' % rc)
        if not already_exited and not self.notified('STOPPING=1'):
            problems.append('no STOPPING=1 notification (got %r)' % self.notifications)
        if os.path.lexists(self.socket_path):
            problems.append('control socket %s left behind' % self.socket_path)
        if not self.config.get('shm_persist') and os.path.lexists(self.shm_file):
            problems.append('shared memory %s left behind' % self.shm_file)
        # A v1 channel's journal stays only while it holds unanswered requests.
        for j in self.journal_files():
            problems.append('v1 journal %s left behind after a clean stop' % j)
        return problems

    def journal_files(self):
        return sorted(glob.glob(shm_path(self.shm_name) + '.v1.*'))

    def _cleanup_files(self):
        if self.notify is not None:
            self.notify.close()
            self.notify = None
        if getattr(self, 'logf', None):
            self.logf.close()
            self.logf = None
        # Never leave shared memory behind, even after a failure.
        if (self.owns_shm and not self.config.get('shm_persist')
                and os.path.lexists(self.shm_file)):
            try:
                os.unlink(self.shm_file)
            except OSError:
                pass
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def __exit__(self, exc_type, exc, tb):
        problems = []
        try:
            problems = self.stop() if self.check_clean_exit else []
            if not self.check_clean_exit:
                self.terminate_and_wait()
                self._kill()
        finally:
            if exc_type is not None or problems:
                self.failed = True
                self.dump_log('; '.join(problems) if problems else
                              'test failed: %s' % (exc_type.__name__,))
            self._cleanup_files()
        if problems and exc_type is None:
            raise DaemonError('hyperampd did not shut down cleanly: ' + '; '.join(problems))
        return False

    # -- talking to it --
    def ctl(self, *args, input=None, timeout=None):
        """Run hyperampctl --socket <ours> ARGS; returns (rc, stdout bytes, stderr)."""
        return run_ctl(args, socket_path=self.socket_path, input=input, timeout=timeout)

    def ctl_json(self, *args):
        rc, out, err = self.ctl('--json', *args)
        if rc != 0:
            raise AssertionError('hyperampctl --json %s: exit %d: %s'
                                 % (' '.join(map(str, args)), rc, err))
        return json.loads(out)

    def client(self, timeout=10.0):
        return RawClient(self.socket_path, timeout=timeout)

    def stats(self):
        with self.client() as c:
            return c.stats()

    def wait_idle(self, timeout=10.0):
        """Wait (bounded poll) until nothing is in flight; returns the stats."""
        def idle():
            s = self.stats()
            if (s['queue']['in_flight'] == 0 and s['pool']['buffers_in_use'] == 0
                    and s['requests']['submitted'] == s['requests']['completed']):
                return s
            return None
        return wait_until(idle, timeout, 'the daemon to go idle')


class FailedStart:
    """What a daemon that was expected not to start did."""

    def __init__(self, d, rc):
        self.rc = rc
        self.log = d.log()
        self.notifications = list(d.notifications)
        self.shm_name = d.shm_name
        self.shm_file = d.shm_file
        self.socket_path = d.socket_path


def start_expect_failure(config=None, socket_path=None, args=(), timeout=None, env=None):
    """Start hyperampd expecting it to fail before READY=1.

    Returns a FailedStart (exit status, log, notifications).  A daemon that
    does become ready is killed and reported as an AssertionError.  The
    shared-memory object named in the config is never removed here: it
    may belong to another daemon."""
    d = Daemon(config, socket_path=socket_path, args=args, env=env)
    d.owns_shm = 'shm_name' not in (config or {})
    d.start()
    try:
        try:
            d.wait_ready(timeout)
        except DaemonError:
            rc = wait_pid_exit(d.proc, scaled(10))
            if rc is None:
                d._kill()
                raise AssertionError('hyperampd neither became ready nor exited:\n' + d.log())
            d._recv_notifications(0)
            return FailedStart(d, rc)
        d._kill()
        raise AssertionError('hyperampd started although it should have failed:\n' + d.log())
    finally:
        d._cleanup_files()


def service_entry(stats, name):
    for s in stats['services']:
        if s['name'] == name:
            return s
    return None


def file_mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)
