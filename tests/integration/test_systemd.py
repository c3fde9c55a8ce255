# SPDX-License-Identifier: MIT
"""systemd integration without PID 1: the sd_notify sequence read from a fake
NOTIFY_SOCKET, the watchdog, socket activation through
systemd-socket-activate, access control by SO_PEERCRED, journal detection,
and the unit files checked with systemd-analyze."""
import json
import os
import pwd
import grp
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

import harness
from harness import Daemon, RawClient, request, run_ctl, scaled, HYPERAMPD, HYPERAMPCTL

BUILD = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(HYPERAMPD))))
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wait_for(d, pred, timeout, what):
    """Read notifications until pred(list of messages) holds, bounded."""
    deadline = time.monotonic() + scaled(timeout)
    while not pred(d.notifications):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError('no %s within %.1f s; got %r' % (what, scaled(timeout),
                                                                  d.notifications))
        d._recv_notifications(left)


def assignments(msgs, key):
    """Every value of KEY= across the messages, in order."""
    out = []
    for m in msgs:
        for line in m.split('\n'):
            if line.startswith(key + '='):
                out.append(line[len(key) + 1:])
    return out


class NotifyTest(unittest.TestCase):

    def test_ready_before_first_answer(self):
        """Nothing answers before READY=1 is sent."""
        d = Daemon()
        d.start()
        # READY=1 when the first answer arrived.  The daemon sends READY=1
        # before it answers anything, so by the time a reply is here its
        # datagram is queued on our notification socket: an order of events,
        # not of clocks, which holds however slow the daemon (valgrind) is.
        ready_at_answer = []
        try:
            deadline = time.monotonic() + scaled(10)
            while not ready_at_answer and time.monotonic() < deadline:
                try:
                    with RawClient(d.socket_path, timeout=2) as c:
                        if c.ping()['pong']:
                            d._recv_notifications(0)
                            ready_at_answer.append(d.notified('READY=1'))
                except OSError:
                    time.sleep(0.002)   # back-off while the socket is not there yet
            d.wait_ready()
        finally:
            d.terminate_and_wait()
            d._cleanup_files()
        self.assertEqual(ready_at_answer, [True], 'answered before READY=1')
        self.assertEqual(d.returncode, 0)
        self.assertTrue(d.notified('STOPPING=1'))
        # READY comes before STOPPING, and exactly once at start
        flat = [l for m in d.notifications for l in m.split('\n')]
        self.assertLess(flat.index('READY=1'), flat.index('STOPPING=1'))

    def test_status_updates(self):
        with Daemon({'status_interval_ms': 100}) as d:
            d.ctl('submit', '-s', 'echo', 'x')
            wait_for(d, lambda m: len(assignments(m, 'STATUS')) >= 3, 10, 'three STATUS= updates')
            st = assignments(d.notifications, 'STATUS')
            self.assertRegex(st[-1], r'^serving: \d+ req/s, queue \d+/255, \d+ workers$')

    def test_reload_sequence(self):
        """RELOADING=1 carries MONOTONIC_USEC and is followed by READY=1, for
        SIGHUP, for 'hyperampctl reload', and for a reload that fails."""
        with Daemon({'status_interval_ms': 3600000}) as d:
            for how in ('sighup', 'ctl', 'bad'):
                with self.subTest(how):
                    n0 = len(d.notifications)
                    if how == 'sighup':
                        d.signal(signal.SIGHUP)
                    elif how == 'ctl':
                        rc, out, err = d.ctl('reload')
                        self.assertEqual(rc, 0, err)
                        self.assertIn(b'reloaded', out)
                    else:
                        with open(d.config_path, 'w') as f:
                            f.write('{"max_payload": "big"}')
                        rc, out, err = d.ctl('reload')
                        self.assertEqual(rc, 1, err)
                        self.assertIn('E_CONFIG', err)
                        self.assertIn('max_payload', err)

                    def done(m):
                        return 'READY=1' in [l for x in m[n0:] for l in x.split('\n')]
                    wait_for(d, done, 10, 'READY=1 after RELOADING=1')
                    new = d.notifications[n0:]
                    reloading = [m for m in new if 'RELOADING=1' in m.split('\n')]
                    self.assertEqual(len(reloading), 1, new)
                    usec = assignments(reloading, 'MONOTONIC_USEC')
                    self.assertEqual(len(usec), 1)
                    now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                    self.assertLessEqual(int(usec[0]), now_us)
                    self.assertGreater(int(usec[0]), now_us - 60_000_000)
                    flat = [l for m in new for l in m.split('\n')]
                    self.assertLess(flat.index('RELOADING=1'), flat.index('READY=1'))
            self.assertTrue(d.ctl_json('ping')['pong'])     # still serving the old config

    def test_reload_applies_and_reports(self):
        with Daemon({'max_connections': 50}) as d:
            cfg = dict(d.config, max_connections=7, log_level='debug', queue_entries=100)
            with open(d.config_path, 'w') as f:
                json.dump(cfg, f)
            rc, out, err = d.ctl('--json', 'reload')
            self.assertEqual(rc, 0, err)
            r = json.loads(out)
            self.assertEqual(sorted(r['applied']), ['log_level', 'max_connections'])
            self.assertEqual(r['restart_required'], ['queue_entries'])
            s = d.stats()
            self.assertEqual(s['connections']['max'], 7)
            self.assertEqual(s['queue']['capacity'], 255)   # not changed live


class WatchdogTest(unittest.TestCase):

    def test_cadence_and_wedge(self):
        """WATCHDOG=1 every WATCHDOG_USEC/2; a worker stuck on one job stops
        the pings, and they resume once it moves again."""
        tmp = tempfile.mkdtemp(prefix='hyperamp-wd-')
        self.addCleanup(shutil.rmtree, tmp)
        fifo = os.path.join(tmp, 'stall')
        os.mkfifo(fifo)
        # WATCHDOG_PID inherited from a test runner under systemd would be
        # some other pid and switch the watchdog off: unset it.
        env = {'WATCHDOG_USEC': '400000', 'HYPERAMP_TEST_STALL_FIFO': fifo,
               'WATCHDOG_PID': None}
        with Daemon({'worker_stall_ms': 300, 'workers': 2, 'status_interval_ms': 3600000},
                    env=env) as d:
            def pings(msgs):
                return [m for m in msgs if 'WATCHDOG=1' in m.split('\n')]
            # Timed from a ping seen, not from READY: pings queued before the
            # clock starts would make the interval look short.
            wait_for(d, pings, 10, 'a WATCHDOG=1')
            n0 = len(pings(d.notifications))
            t0 = time.monotonic()
            wait_for(d, lambda m: len(pings(m)) >= n0 + 4, 10, 'four more WATCHDOG=1')
            elapsed = time.monotonic() - t0
            # 4 more pings 200 ms apart span at least 3 periods
            self.assertGreater(elapsed, 0.55)
            self.assertLess(elapsed, 3.0 * harness.TIMEOUT_SCALE)

            # wedge one worker
            fd = os.open(fifo, os.O_RDWR)
            self.addCleanup(os.close, fd)
            with d.client() as c:
                c.send(request('submit', id=1, params={'service': 65000}), payload=b'x')
                wait_for(d, lambda m: any('stuck' in s for s in assignments(m, 'STATUS')),
                         10, 'STATUS=worker ... stuck')
                n0 = len(pings(d.notifications))
                d._recv_notifications(scaled(1.0))     # 5 ping periods of silence
                self.assertEqual(len(pings(d.notifications)), n0,
                                 'pings continued while a worker was wedged')
                os.write(fd, b'!')                     # release it
                obj, data = c.recv_frame()
                self.assertEqual(obj['result']['status'], 'SUCCESS')
            wait_for(d, lambda m: len(pings(m)) > n0, 10, 'pings to resume')
            self.assertIn('stuck on one job', d.log())


class SocketActivationTest(unittest.TestCase):

    def test_systemd_socket_activate(self):
        sa = shutil.which('systemd-socket-activate')
        if not sa:
            self.skipTest('systemd-socket-activate not installed')
        tmp = tempfile.mkdtemp(prefix='hyperamp-sa-')
        self.addCleanup(shutil.rmtree, tmp)
        sock = os.path.join(tmp, 'act.sock')
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(notify.close)
        notify.bind(os.path.join(tmp, 'notify'))
        notify.settimeout(scaled(10))
        shm = harness.unique_shm_name()
        with open(os.path.join(tmp, 'c.json'), 'w') as f:
            json.dump({'shm_name': shm}, f)
        log = open(os.path.join(tmp, 'log'), 'wb')
        self.addCleanup(log.close)
        p = subprocess.Popen([sa, '-l', sock, '--fdname=control',
                              '-E', 'NOTIFY_SOCKET=' + os.path.join(tmp, 'notify'),
                              *harness.WRAPPER, HYPERAMPD, '--config', os.path.join(tmp, 'c.json'),
                              '--socket', os.path.join(tmp, 'ignored.sock')],
                             stdout=log, stderr=log)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        # systemd-socket-activate binds first and execs on the first connection
        deadline = time.monotonic() + scaled(10)
        while not os.path.exists(sock):
            self.assertLess(time.monotonic(), deadline, 'socket never bound')
            time.sleep(0.005)   # back-off: the activator has no readiness signal
        rc, out, err = run_ctl(['submit', '-s', 'encrypt', 'hello'], socket_path=sock)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out if isinstance(out, bytes) else out.encode('latin-1'),
                         bytes.fromhex('164e2c2f12'))
        msgs = []
        while not any('READY=1' in m for m in msgs):
            msgs.append(notify.recv(4096).decode())
        self.assertFalse(os.path.exists(os.path.join(tmp, 'ignored.sock')))
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=scaled(15)), 0)
        with open(os.path.join(tmp, 'log'), 'rb') as f:
            text = f.read().decode(errors='replace')
        self.assertIn('passed by systemd', text)
        # systemd's socket is systemd's: the daemon must not unlink it
        self.assertTrue(os.path.exists(sock))
        self.assertFalse(os.path.exists(harness.shm_path(shm)))


@unittest.skipUnless(os.geteuid() == 0, 'needs root to act as another user')
class AccessControlTest(unittest.TestCase):
    """SO_PEERCRED: ping/stats/submit for anyone who can connect; reload and
    shutdown for root, the daemon's user, or admin_group only."""

    NOBODY = pwd.getpwnam('nobody').pw_uid
    NOGROUP = grp.getgrnam('nogroup').gr_gid

    def as_nobody(self, d, *args):
        def drop():
            os.setgroups([])
            os.setgid(self.NOGROUP)
            os.setuid(self.NOBODY)
        return run_ctl(list(args), socket_path=d.socket_path, preexec_fn=drop)

    def open_to_nogroup(self, d):
        os.chmod(d.tmpdir, 0o755)
        os.chown(d.socket_path, 0, self.NOGROUP)

    def test_admin_calls_denied_to_others(self):
        with Daemon() as d:
            self.open_to_nogroup(d)
            rc, out, err = self.as_nobody(d, 'ping')
            self.assertEqual(rc, 0, err)
            rc, out, err = self.as_nobody(d, 'submit', '-s', 'echo', 'hi')
            self.assertEqual((rc, out), (0, b'hi'), err)
            for cmd in ('reload', 'shutdown'):
                rc, out, err = self.as_nobody(d, cmd)
                self.assertEqual(rc, 1, err)
                self.assertIn('E_DENIED', err)
            s = d.stats()
            self.assertEqual(s['connections']['denied'], 2)
            self.assertIn('Denied', d.log())
            rc, out, err = d.ctl('reload')          # root may
            self.assertEqual(rc, 0, err)

    def test_admin_group_may(self):
        with Daemon({'admin_group': 'nogroup'}) as d:
            self.open_to_nogroup(d)
            rc, out, err = self.as_nobody(d, 'reload')
            self.assertEqual(rc, 0, err)
            rc, out, err = self.as_nobody(d, 'shutdown')
            self.assertEqual(rc, 0, err)
            # it stops by itself: no signal needed
            self.assertEqual(harness.wait_pid_exit(d.proc, harness.STOP_TIMEOUT), 0)
            self.assertEqual(d.terminate_and_wait(), 0)

    def test_outsider_cannot_connect(self):
        with Daemon() as d:
            os.chmod(d.tmpdir, 0o755)   # the directory is open, the 0660 socket is not
            self.assertEqual(stat.S_IMODE(os.stat(d.socket_path).st_mode), 0o660)
            rc, out, err = self.as_nobody(d, 'ping')
            self.assertEqual(rc, 69, err)
            self.assertIn('Permission denied', err)


class JournalDetectionTest(unittest.TestCase):

    def test_journal_stream_must_match_stderr(self):
        """$JOURNAL_STREAM naming our own stderr sends messages to the journal
        (native protocol, so nothing on stderr); a stale value is ignored and
        the <N>-prefixed stderr lines stay."""
        cases = {
            True: 'export JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2); exec "$@"',
            False: 'export JOURNAL_STREAM=1:1; exec "$@"',
        }
        for matching, script in cases.items():
            with self.subTest(matching=matching):
                old = harness.WRAPPER[:]
                harness.WRAPPER[:] = ['sh', '-c', script, 'sh'] + old
                try:
                    with Daemon() as d:
                        self.assertTrue(d.ctl_json('ping')['pong'])
                        log = d.log()
                finally:
                    harness.WRAPPER[:] = old
                if matching:
                    self.assertNotIn('Ready', log)
                else:
                    self.assertIn('<6>Ready', log)


class UnitFileTest(unittest.TestCase):

    UNITS = os.path.join(BUILD, 'units', 'test')

    def setUp(self):
        if not shutil.which('systemd-analyze'):
            self.skipTest('systemd-analyze not installed')

    def test_verify_prints_nothing(self):
        # Our own man pages stand in for installed ones, so that the
        # Documentation= check runs too.
        tmp = tempfile.mkdtemp(prefix='hyperamp-man-')
        self.addCleanup(shutil.rmtree, tmp)
        for page, sec in (('hyperampd.8', '8'), ('hyperampctl.1', '1'), ('hyperampd.json.5', '5')):
            os.makedirs(os.path.join(tmp, 'man' + sec), exist_ok=True)
            shutil.copy(os.path.join(SRC, 'man', page), os.path.join(tmp, 'man' + sec))
        env = dict(os.environ, MANPATH=tmp)
        p = subprocess.run(['systemd-analyze', 'verify',
                            os.path.join(self.UNITS, 'hyperampd.service'),
                            os.path.join(self.UNITS, 'hyperampd.socket'),
                            os.path.join(self.UNITS, 'hyperampd-metrics.socket')],
                           capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ''))

    def test_security_exposure(self):
        p = subprocess.run(['systemd-analyze', 'security', '--offline=yes', '--no-pager',
                            '--threshold=20', os.path.join(self.UNITS, 'hyperampd.service')],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        line = [l for l in p.stdout.splitlines() if 'Overall exposure level' in l][0]
        score = float(line.split(':')[1].split()[0])
        self.assertLessEqual(score, 2.0, line)

    def test_catalog_explains_every_message_id(self):
        """units/hyperamp.catalog compiles, and has an entry for each MESSAGE_ID
        the daemon logs and for nothing else."""
        import re
        with open(os.path.join(SRC, 'src', 'core', 'log.h')) as f:
            mids = dict(re.findall(r'#define (HA_MID_\w+)\s+"([0-9a-f]{32})"', f.read()))
        used = set()
        for sub in ('core', 'daemon'):
            d = os.path.join(SRC, 'src', sub)
            for name in os.listdir(d):
                if name.endswith('.c'):
                    with open(os.path.join(d, name)) as f:
                        used |= set(re.findall(r'message_id = (HA_MID_\w+)', f.read()))
        self.assertTrue(used)
        self.assertLessEqual(used, set(mids), 'a message_id that log.h does not define')
        root = tempfile.mkdtemp(prefix='hyperamp-catalog-')
        self.addCleanup(shutil.rmtree, root)
        catdir = os.path.join(root, 'usr', 'lib', 'systemd', 'catalog')
        os.makedirs(catdir)
        os.makedirs(os.path.join(root, 'var', 'lib', 'systemd', 'catalog'))
        shutil.copy(os.path.join(SRC, 'units', 'hyperamp.catalog'), catdir)
        p = subprocess.run(['journalctl', '--root', root, '--update-catalog'],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((p.returncode, p.stderr), (0, ''))
        p = subprocess.run(['journalctl', '--root', root, '--list-catalog'],
                           capture_output=True, text=True, timeout=60, check=True)
        listed = {l.split()[0]: l.split(None, 1)[1] for l in p.stdout.splitlines()}
        self.assertEqual(set(listed), set(mids.values()))
        for mid, line in listed.items():
            self.assertTrue(line.startswith('hyperamp: '), line)

    def test_socket_unit_is_not_world_writable(self):
        with open(os.path.join(self.UNITS, 'hyperampd.socket')) as f:
            text = f.read()
        self.assertIn('SocketMode=0660', text)
        self.assertIn('SocketGroup=hyperamp', text)
        self.assertIn('FileDescriptorName=control', text)

    def test_metrics_socket_unit(self):
        """The daemon finds the metrics socket by this name, on loopback."""
        with open(os.path.join(self.UNITS, 'hyperampd-metrics.socket')) as f:
            text = f.read()
        self.assertIn('FileDescriptorName=metrics', text)
        self.assertIn('Service=hyperampd.service', text)
        self.assertIn('ListenStream=127.0.0.1:', text)


if __name__ == '__main__':
    unittest.main()
