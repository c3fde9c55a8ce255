# SPDX-License-Identifier: MIT
"""hyperampd start-up, configuration, shutdown, exclusivity and permissions."""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

import harness
from harness import (Daemon, run_ctl, run_daemon_cmd, start_expect_failure, wait_until,
                     unique_shm_name, shm_path)


class TmpDirTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='hyperamp-life-')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def write_config(self, content, name='config.json'):
        path = os.path.join(self.tmp, name)
        with open(path, 'w') as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path


class ShutdownTest(unittest.TestCase):

    def test_sigterm_with_requests_in_flight(self):
        with Daemon({'workers': 1}) as d:
            bench = subprocess.Popen(
                [*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket', d.socket_path, '--json', 'bench',
                 '-s', 'encrypt', '-c', '128', '--connections', '8', '-n', '2000000',
                 '--size', '4096'],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                wait_until(lambda: d.stats()['requests']['submitted'] > 0, 10,
                           'the bench to get going')
                self.assertIsNone(bench.poll(), 'bench finished before the SIGTERM')
                t0 = time.monotonic()
                rc = d.terminate_and_wait()
                took = time.monotonic() - t0
                self.assertEqual(rc, 0, 'hyperampd exit status after SIGTERM under load')
                self.assertTrue(d.notified('STOPPING=1'), d.notifications)
                # In-flight requests take microseconds: no need for the
                # 10 s shutdown deadline.
                self.assertLess(took, 9, 'shutdown took %.1f s' % took)
                log = d.log()
                self.assertIn('Stopped cleanly', log)
                self.assertNotIn('deadline', log)
                self.assertNotIn('Dropped', log)
                out, err = bench.communicate(timeout=harness.scaled(30))
            finally:
                if bench.poll() is None:
                    bench.kill()
                    bench.wait()
            # The bench either finished or says why not; it never hangs.
            self.assertIn(bench.returncode, (0, 1, 69), err)
            if bench.returncode != 0:
                self.assertTrue(err.strip())
            self.assertFalse(os.path.lexists(d.socket_path))
            self.assertFalse(os.path.lexists(d.shm_file))

    def test_sigterm_closes_idle_clients(self):
        with Daemon() as d, d.client() as c:
            c.ping()
            self.assertEqual(d.terminate_and_wait(), 0)
            c.expect_closed()

    def test_sigint_stops_cleanly(self):
        with Daemon() as d:
            d.ctl('submit', 'x')
            d.signal(signal.SIGINT)
            self.assertEqual(harness.wait_pid_exit(d.proc, harness.STOP_TIMEOUT), 0)
            d._recv_notifications(0)
            self.assertTrue(d.notified('STOPPING=1'))

    def test_sighup_is_ignored(self):
        with Daemon() as d:
            d.signal(signal.SIGHUP)
            wait_until(lambda: 'SIGHUP' in d.log(), 10, 'the SIGHUP to be logged')
            self.assertIsNone(d.proc.poll())
            rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello')
            self.assertEqual((rc, out), (0, bytes.fromhex('164e2c2f12')), err)
            self.assertFalse(d.notified('STOPPING=1'))

    def test_restart_after_crash(self):
        """SIGKILL leaves the socket and shm object behind; the next daemon
        takes both over, and removes them when it stops."""
        sockdir = tempfile.mkdtemp(prefix='hyperamp-life-')
        self.addCleanup(os.rmdir, sockdir)
        sock = os.path.join(sockdir, 'ctl.sock')
        first = Daemon(socket_path=sock)
        first.owns_shm = False
        first.start()
        try:
            first.wait_ready()
            harness.note_killed(first.proc.pid)
            first.signal(signal.SIGKILL)
            self.assertEqual(harness.wait_pid_exit(first.proc, 10), -signal.SIGKILL)
        finally:
            first._kill()
            first._cleanup_files()
        self.assertTrue(os.path.lexists(sock), 'the stale socket should still be there')
        self.assertTrue(os.path.lexists(first.shm_file))
        with Daemon({'shm_name': first.shm_name}, socket_path=sock) as second:
            rc, out, err = second.ctl('submit', '-s', 'encrypt', 'hello')
            self.assertEqual((rc, out), (0, bytes.fromhex('164e2c2f12')), err)
            self.assertEqual(second.stats()['pid'], second.proc.pid)
        self.assertFalse(os.path.lexists(first.shm_file))

    def test_shm_persist(self):
        d = Daemon({'shm_persist': True})
        try:
            with d:
                self.assertTrue(os.path.exists(d.shm_file))
            self.assertTrue(os.path.exists(d.shm_file), 'shm_persist: the object must stay')
            with open(d.shm_file, 'rb') as f:
                hdr = f.read(64)
            self.assertEqual(len(hdr), 64)
        finally:
            if os.path.lexists(d.shm_file):
                os.unlink(d.shm_file)


class CheckConfigTest(TmpDirTest):

    def test_effective_settings(self):
        cfg = {'#': 'a comment key is ignored', 'shm_name': '/hyperamp-test-check',
               'shm_mode': '0660', 'workers': 3, 'queue_entries': 100,
               'pool_size': 1 << 20, 'max_payload': 65536, 'max_connections': 10,
               'max_inflight_per_conn': 7, 'log_level': 'debug', 'shm_persist': True,
               'client_timeout_ms': 1500, 'status_interval_ms': 250, 'worker_stall_ms': 700,
               'admin_group': 'root', 'zone_clients': 3, 'zone_pool_size': 65536,
               'poll_us': 20, 'socket_poll_us': 10, 'max_connections_per_uid': 5, 'output_budget': 1 << 21,
               'metrics_listen': '[::1]:9470', 'metrics_max_connections': 4}
        sock = os.path.join(self.tmp, 'x.sock')
        rc, out, err = run_daemon_cmd(['--check-config', '--config', self.write_config(cfg),
                                       '--socket', sock])
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        expect = {k: v for k, v in cfg.items() if not k.startswith('#')}
        expect['socket'] = sock
        self.assertEqual(o, expect)
        # validating creates nothing
        self.assertFalse(os.path.lexists(sock))
        self.assertFalse(os.path.lexists(shm_path(cfg['shm_name'])))

    def test_defaults_and_overrides(self):
        rc, out, err = run_daemon_cmd(['--check-config'],
                                      env={'HYPERAMP_SOCKET': os.path.join(self.tmp, 'e.sock')})
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual(o['socket'], os.path.join(self.tmp, 'e.sock'))
        self.assertEqual(o['workers'], os.cpu_count())
        self.assertEqual(o['shm_mode'], '0600')
        self.assertIs(o['shm_persist'], False)
        self.assertEqual(o['queue_entries'], 255)
        self.assertEqual(o['pool_size'], 4 << 20)
        self.assertEqual(o['max_payload'], 1 << 20)
        self.assertEqual(o['max_connections'], 256)
        self.assertEqual(o['max_connections_per_uid'], 0)       # a quarter of the above
        self.assertEqual(o['output_budget'], 64 << 20)
        self.assertEqual(o['log_level'], 'info')
        self.assertEqual(o['shm_name'], '/hyperampd' if os.geteuid() == 0
                         else '/hyperampd-%d' % os.geteuid())
        # command-line options win over the config file
        path = self.write_config({'workers': 2, 'log_level': 'err'})
        rc, out, err = run_daemon_cmd(['--check-config', '-c', path, '--workers', '5',
                                       '--log-level', 'notice', '--socket', '/tmp/y.sock'])
        self.assertEqual(rc, 0, err)
        o = json.loads(out)
        self.assertEqual((o['workers'], o['log_level'], o['socket']), (5, 'notice', '/tmp/y.sock'))

    BAD = [
        ('unknown key', {'nosuchkey': 1}, 'nosuchkey'),
        ('world-readable shm_mode', {'shm_mode': '0666'}, 'shm_mode'),
        ('shm_mode as a number', {'shm_mode': 384}, 'shm_mode'),
        ('bad JSON', '{"workers": 2,\n "queue_entries": }', 'not valid JSON'),
        ('not an object', '[1, 2]', 'object'),
        ('too many workers', {'workers': 300}, 'workers'),
        ('workers as a string', {'workers': '2'}, 'workers'),
        ('fractional queue_entries', {'queue_entries': 1.5}, 'queue_entries'),
        ('queue_entries 0', {'queue_entries': 0}, 'queue_entries'),
        ('queue_entries too large', {'queue_entries': 65536}, 'queue_entries'),
        ('pool_size not a multiple of 64', {'pool_size': 5000}, 'pool_size'),
        ('pool_size too small', {'pool_size': 1024}, 'pool_size'),
        ('max_payload over pool_size', {'pool_size': 65536, 'max_payload': 65600},
         'max_payload'),
        ('shm_name without a slash', {'shm_name': 'hyperamp'}, 'shm_name'),
        ('shm_name with a second slash', {'shm_name': '/a/b'}, 'shm_name'),
        ('shm_name too long', {'shm_name': '/' + 'x' * 200}, 'shm_name'),
        ('bad log_level', {'log_level': 'loud'}, 'log_level'),
        ('shm_persist not a bool', {'shm_persist': 1}, 'shm_persist'),
    ]

    def test_bad_configs(self):
        for what, content, needle in self.BAD:
            with self.subTest(what):
                path = self.write_config(content, 'bad.json')
                rc, out, err = run_daemon_cmd(['--check-config', '--config', path])
                self.assertEqual(rc, 78, err)   # EX_CONFIG: the unit does not restart
                self.assertEqual(out, '')
                self.assertIn(needle, err)

    def test_missing_config_file(self):
        path = os.path.join(self.tmp, 'nope.json')
        rc, out, err = run_daemon_cmd(['--check-config', '--config', path])
        self.assertEqual(rc, 78, err)
        self.assertIn(path, err)
        self.assertIn('No such file', err)

    def test_bad_config_does_not_start(self):
        f = start_expect_failure({'shm_mode': '0666'})
        self.assertEqual(f.rc, 78)
        self.assertIn('shm_mode', f.log)
        self.assertEqual(f.notifications, [])
        self.assertFalse(os.path.lexists(f.shm_file))
        self.assertFalse(os.path.lexists(f.socket_path))

    def test_usage_errors(self):
        for argv in (['--nosuchoption'], ['extra'], ['--workers', '0'], ['--workers', '257'],
                     ['--workers', 'two'], ['--log-level', 'loud'], ['--config']):
            with self.subTest(argv=argv):
                rc, out, err = run_daemon_cmd(['--check-config'] + argv)
                self.assertEqual(rc, 2, err)
                self.assertEqual(out, '')
                self.assertTrue(err.strip())

    def test_help_and_version(self):
        rc, out, err = run_daemon_cmd(['--help'])
        self.assertEqual(rc, 0, err)
        self.assertIn('Usage: hyperampd', out)
        self.assertIn('--check-config', out)
        rc, out, err = run_daemon_cmd(['-V'])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r'^hyperampd \d+\.\d+\.\d+\n$')
        rc2, out2, _ = run_ctl(['--version'])
        self.assertEqual(out.split()[1], out2.decode().split()[1], 'daemon and CLI versions differ')


class HostileConfigTest(TmpDirTest):
    """Issue 16, items 6-9: configs that used to pass, or to hang, or to fail
    with the wrong status."""

    BAD = [
        ('junk after the object', '{"workers": 2} junk {"workers": 3}',
         'unexpected data after the JSON object, at offset 15'),
        ('a second object', '{"workers": 2}\n{"workers": 3}\n', ':2: unexpected data'),
        ('NUL in admin_group', '{"admin_group": "root\\u0000junk"}', '\\u0000 (NUL)'),
        ('NUL in a key', '{"workers\\u0000x": 2}', '\\u0000 (NUL)'),
        ('NUL in a v1 channel name',
         '{"v1_channels": [{"name": "a\\u0000b", "shm_config": "/x"}]}', '\\u0000 (NUL)'),
        ('shm_name /.', {'shm_name': '/.'}, 'shm_name'),
        ('shm_name /..', {'shm_name': '/..'}, 'shm_name'),
    ]

    def test_check_config_refuses(self):
        for what, content, needle in self.BAD:
            with self.subTest(what):
                path = self.write_config(content, 'bad.json')
                rc, out, err = run_daemon_cmd(['--check-config', '--config', path])
                self.assertEqual(rc, 78, err)
                self.assertEqual(out, '')
                self.assertIn(needle, err)

    def test_dot_shm_names_exit_78(self):
        for name in ('/.', '/..'):
            with self.subTest(name):
                f = start_expect_failure({'shm_name': name})
                self.assertEqual(f.rc, 78, f.log)
                self.assertIn('shm_name', f.log)

    def test_fifo_config_is_refused_at_once(self):
        path = os.path.join(self.tmp, 'fifo.json')
        os.mkfifo(path)
        rc, out, err = run_daemon_cmd(['--check-config', '--config', path])
        self.assertEqual(rc, 78, err)
        self.assertIn('not a regular file', err)

    def test_reload_refuses_and_keeps_the_config(self):
        with Daemon({'max_connections': 50}) as d:
            for what, content, needle in self.BAD[:5] + [('FIFO', None, 'not a regular file')]:
                with self.subTest(what):
                    os.unlink(d.config_path)
                    if content is None:
                        os.mkfifo(d.config_path)
                    else:
                        with open(d.config_path, 'w') as f:
                            f.write(content.replace('"workers": 2', '"max_connections": 7'))
                    # Bounded: a reload that blocks the loop fails here.
                    rc, out, err = run_ctl(['--timeout', '5', 'reload'],
                                           socket_path=d.socket_path, timeout=harness.scaled(10))
                    self.assertEqual(rc, 1, err)
                    self.assertIn('E_CONFIG', err)
                    self.assertIn(needle.split(', at offset')[0], err)
                    self.assertEqual(d.stats()['connections']['max'], 50)
            os.unlink(d.config_path)
            with open(d.config_path, 'w') as f:
                json.dump(d.config, f)


class ExclusivityTest(unittest.TestCase):

    def assert_serving(self, d):
        rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello')
        self.assertEqual((rc, out), (0, bytes.fromhex('164e2c2f12')), err)
        self.assertEqual(d.stats()['pid'], d.proc.pid)

    def test_second_daemon_same_shm_name(self):
        with Daemon() as first:
            f = start_expect_failure({'shm_name': first.shm_name})
            self.assertNotEqual(f.rc, 0)
            self.assertIn('in use', f.log)
            self.assertFalse(any('READY=1' in m for m in f.notifications), f.notifications)
            self.assertFalse(os.path.lexists(f.socket_path))
            # The first one is undisturbed, and its object is still there.
            self.assertTrue(os.path.exists(first.shm_file))
            self.assert_serving(first)
            self.assertIsNone(first.proc.poll())

    def test_second_daemon_same_socket(self):
        with Daemon() as first:
            f = start_expect_failure(socket_path=first.socket_path)
            self.assertNotEqual(f.rc, 0)
            self.assertIn('already listening', f.log)
            self.assertFalse(any('READY=1' in m for m in f.notifications), f.notifications)
            # It cleaned up its own shm object and left the socket alone.
            self.assertFalse(os.path.lexists(f.shm_file), 'the failed daemon left its shm')
            self.assertTrue(stat.S_ISSOCK(os.lstat(first.socket_path).st_mode))
            self.assert_serving(first)

    def test_stop_leaves_a_successors_shm_object(self):
        """Issue 16, item 10: the name was unlinked under the first daemon and
        a second one made its own object there; the first one's stop must
        not remove it, or a third daemon could start beside the second."""
        with Daemon(check_clean_exit=False) as first:
            first.owns_shm = False
            os.unlink(first.shm_file)
            with Daemon({'shm_name': first.shm_name}) as second:
                ino = os.stat(second.shm_file).st_ino
                self.assertEqual(first.terminate_and_wait(), 0, first.log())
                self.assertTrue(os.path.exists(second.shm_file),
                                "the first daemon removed the second one's object")
                self.assertIn('not ours: left in place', first.log())
                self.assertEqual(os.stat(second.shm_file).st_ino, ino)
                f = start_expect_failure({'shm_name': second.shm_name})
                self.assertNotEqual(f.rc, 0)
                self.assertIn('in use', f.log)
                self.assert_serving(second)

    def test_two_daemons_racing_for_one_socket(self):
        """Issue 16, item 11: the first daemon is held (HYPERAMP_TEST_PAUSE)
        after bind() and before listen(), where a connect() is refused; a
        second daemon must not take the path from it, and the first must
        serve on it once it goes on."""
        def stopped(pid):
            with open('/proc/%d/stat' % pid) as f:
                return f.read().rsplit(')', 1)[1].split()[0] == 'T'

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'ctl.sock')
            first = Daemon(socket_path=path, env={'HYPERAMP_TEST_PAUSE': 'socket_bound'})
            first.start()
            try:
                wait_until(lambda: stopped(first.proc.pid), harness.scaled(10),
                           'the first daemon to stop at socket_bound')
                f = start_expect_failure(socket_path=path)
                self.assertEqual(f.rc, 1, f.log)
                self.assertIn('Another hyperampd', f.log)
                os.kill(first.proc.pid, signal.SIGCONT)
                first.wait_ready()
                self.assertTrue(stat.S_ISSOCK(os.lstat(path).st_mode))
                self.assert_serving(first)
            except BaseException:
                os.kill(first.proc.pid, signal.SIGCONT)
                first.dump_log('race test failed')
                raise
            finally:
                problems = first.stop()
                first._cleanup_files()
            self.assertEqual(problems, [])
            self.assertFalse(os.path.lexists(path + '.lock'), 'lock file left behind')

    def test_stop_leaves_a_socket_it_does_not_own(self):
        """Issue 16, item 11: the path was replaced under the daemon; its
        stop must remove only its own socket."""
        with Daemon() as d:
            moved = d.socket_path + '.moved'
            os.rename(d.socket_path, moved)
            other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            other.bind(d.socket_path)
            other.listen(1)
            try:
                ino = os.lstat(d.socket_path).st_ino
                self.assertEqual(d.terminate_and_wait(), 0)
                self.assertTrue(os.path.lexists(d.socket_path),
                                'the daemon removed a socket it does not own')
                self.assertEqual(os.lstat(d.socket_path).st_ino, ino)
            finally:
                other.close()
                for p in (d.socket_path, moved):
                    if os.path.lexists(p):
                        os.unlink(p)

    def test_socket_path_is_not_a_socket(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'regular-file')
            with open(path, 'w') as fh:
                fh.write('precious')
            f = start_expect_failure(socket_path=path)
            self.assertEqual(f.rc, 1)
            self.assertIn('not a socket', f.log)
            with open(path) as fh:
                self.assertEqual(fh.read(), 'precious')
            self.assertFalse(os.path.lexists(f.shm_file))

    def test_socket_path_too_long(self):
        f = start_expect_failure(socket_path='/tmp/' + 'x' * 120)
        self.assertEqual(f.rc, 78)   # a bad setting, like a bad config
        self.assertIn('too long', f.log)


class PermissionsTest(unittest.TestCase):

    def assert_modes(self, d, shm_mode):
        st = os.lstat(d.shm_file)
        self.assertEqual(stat.S_IMODE(st.st_mode), shm_mode,
                         'shm mode %o' % stat.S_IMODE(st.st_mode))
        self.assertEqual(st.st_uid, os.geteuid())
        st = os.lstat(d.socket_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660,
                         'socket mode %o' % stat.S_IMODE(st.st_mode))

    def test_default_modes(self):
        with Daemon() as d:
            self.assert_modes(d, 0o600)

    def test_modes_ignore_a_permissive_umask(self):
        with Daemon(umask=0) as d:
            self.assert_modes(d, 0o600)

    def test_shm_mode_0660_despite_a_strict_umask(self):
        with Daemon({'shm_mode': '0660'}, umask=0o077) as d:
            self.assert_modes(d, 0o660)

    def test_existing_object_is_narrowed(self):
        """A left-over object with wider permissions is reset to shm_mode."""
        name = unique_shm_name()
        fd = os.open(shm_path(name), os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o644)
        os.fchmod(fd, 0o666)
        os.close(fd)
        try:
            with Daemon({'shm_name': name}) as d:
                self.assert_modes(d, 0o600)
        finally:
            if os.path.lexists(shm_path(name)):
                os.unlink(shm_path(name))


class OptionsTest(unittest.TestCase):

    def test_workers_option(self):
        with Daemon(args=['--workers', '3']) as d:
            s = d.stats()
            self.assertEqual(s['workers']['count'], 3)
            self.assertEqual(len(s['workers']['jobs']), 3)

    def test_socket_from_environment(self):
        with Daemon(use_env_socket=True) as d:
            self.assertTrue(stat.S_ISSOCK(os.lstat(d.socket_path).st_mode))
            rc, out, err = run_ctl(['ping'], env={'HYPERAMP_SOCKET': d.socket_path})
            self.assertEqual(rc, 0, err)
            self.assertIn('pid %d' % d.proc.pid, out.decode())

    def test_log_level_debug(self):
        with Daemon({'log_level': 'debug'}) as d, d.client() as c:
            c.send(harness.request('submit', 1, {'service': 'echo'}), b'x' * 100)
            c.close()           # gone with a request (probably) in flight
            d.wait_idle()
            rc, _, err = d.ctl('ping')
            self.assertEqual(rc, 0, err)
        # no assertion on content: debug output must just not break anything


def stuck_client(test, d, n=40, size=65536):
    """A client with n echo replies (n*size bytes) it never reads: its
    connection's output cannot drain."""
    c = d.client()
    test.addCleanup(c.close)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c.send_raw(b''.join(harness.encode_frame(harness.request('submit', i, {'service': 'echo'}),
                                             b'z' * size) for i in range(n)))
    wait_until(lambda: d.stats()['requests']['completed'] == n, 10, 'the replies to be queued')
    return c


class StuckWorkerShutdownTest(unittest.TestCase):

    def test_stuck_worker_does_not_hold_the_exit(self):
        """A worker stuck in a service: after the second signal the daemon
        waits a second for it, then exits 1 with its socket and shared
        memory gone, instead of joining the thread for ever."""
        tmp = tempfile.mkdtemp(prefix='hyperamp-stuck-')
        self.addCleanup(shutil.rmtree, tmp)
        fifo = os.path.join(tmp, 'stall')
        os.mkfifo(fifo)
        with Daemon({'workers': 2}, env={'HYPERAMP_TEST_STALL_FIFO': fifo}) as d:
            d.check_clean_exit = False
            c = d.client()
            self.addCleanup(c.close)
            c.send(harness.request('submit', 1, {'service': 65000}), payload=b'x')
            # In a worker, not just queued (queue.in_flight counts both): a
            # job still queued at the second signal is dropped, and the exit
            # is then clean.
            wait_until(lambda: harness.threads_reading(d.proc.pid, fifo) == 1, 10,
                       'a worker inside the stall service')
            d.signal(signal.SIGTERM)
            wait_until(lambda: 'Signal 15 received' in d.log(), 10, 'the first SIGTERM')
            t0 = time.monotonic()
            d.signal(signal.SIGTERM)
            rc = harness.wait_pid_exit(d.proc, harness.scaled(10))
            self.assertEqual(rc, 1, 'still running or a clean exit with a worker stuck')
            self.assertLess(time.monotonic() - t0, harness.scaled(5))
            self.assertIn('A worker is stuck in a service; exiting without it', d.log())
            self.assertNotIn('Stopped cleanly', d.log())
            self.assertFalse(os.path.lexists(d.socket_path))
            self.assertFalse(os.path.lexists(d.shm_file))


class StuckClientShutdownTest(unittest.TestCase):

    def test_second_signal_stops_at_once(self):
        with Daemon() as d:
            stuck_client(self, d)
            d.signal(signal.SIGTERM)
            wait_until(lambda: 'Signal 15 received' in d.log(), 10, 'the first SIGTERM')
            self.assertIsNone(d.proc.poll(), 'exited with a client\'s replies unsent')
            t0 = time.monotonic()
            rc = d.terminate_and_wait()
            self.assertEqual(rc, 0)
            self.assertLess(time.monotonic() - t0, harness.scaled(5))
            self.assertIn('again, stopping now', d.log())
            self.assertTrue(d.notified('STOPPING=1'))

    def test_shutdown_deadline(self):
        """A client that never reads holds the shutdown up for at most the
        10 s deadline; then the daemon exits cleanly anyway."""
        with Daemon() as d:
            stuck_client(self, d)
            t0 = time.monotonic()
            rc = d.terminate_and_wait(timeout=harness.scaled(20))
            took = time.monotonic() - t0
            self.assertEqual(rc, 0)
            self.assertGreater(took, 9, 'did not wait for the unsent replies')
            self.assertLess(took, harness.scaled(15))
            self.assertIn('Shutdown deadline', d.log())
            self.assertTrue(d.notified('STOPPING=1'))


class ResourceTest(unittest.TestCase):

    @unittest.skipIf(harness.TOOL_WRAPPER, 'a tool such as valgrind needs descriptors of its own')
    def test_out_of_file_descriptors(self):
        """With accept() failing for lack of descriptors, the daemon pauses
        accepting and resumes when a client leaves: every client is served."""
        import resource
        import select

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (24, 24))

        with Daemon(preexec_fn=limit) as d:
            clients = [harness.RawClient(d.socket_path) for _ in range(40)]
            try:
                for i, c in enumerate(clients):
                    c.send(harness.request('ping', i))
                pending = {c.sock: (i, c) for i, c in enumerate(clients)}
                deadline = time.monotonic() + harness.scaled(20)
                while pending:
                    left = deadline - time.monotonic()
                    self.assertGreater(left, 0, '%d clients never served' % len(pending))
                    ready, _, _ = select.select(list(pending), [], [], left)
                    for s in ready:
                        i, c = pending.pop(s)
                        rep, _ = c.recv_frame()
                        self.assertEqual(rep.get('id'), i, rep)
                        self.assertIs(rep['result']['pong'], True)
                        c.close()
            finally:
                for c in clients:
                    c.close()
            self.assertIn('Failed to accept', d.log(), 'the descriptor limit was never hit')
            s = d.stats()
            self.assertEqual(s['connections']['total'], 41)
            self.assertEqual(s['connections']['current'], 1)
            self.assertEqual(s['connections']['rejected'], 0)


if __name__ == '__main__':
    unittest.main()
