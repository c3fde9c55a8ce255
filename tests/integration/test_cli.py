# SPDX-License-Identifier: MIT
"""hyperampctl against a live hyperampd: output bytes, --json, exit codes."""
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
import random
import socket
import struct
import tempfile
import threading
import unittest

import harness
from harness import Daemon, run_ctl, xor_service, service_entry

HELLO_ENCRYPTED = bytes([0x16, 0x4e, 0x2c, 0x2f, 0x12])
ALL_BYTES = bytes(range(256)) * 4 + b'\0' * 64 + bytes(range(255, -1, -1))


class SharedDaemonTest(unittest.TestCase):
    """One daemon for the whole class; its clean shutdown is checked at the end."""

    daemon_config = {'workers': 2}

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(cls.daemon_config)
        cls.d.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix='hyperamp-cli-')
        self.addCleanup(self.tmp.cleanup)

    def write_file(self, name, data):
        path = os.path.join(self.tmp.name, name)
        with open(path, 'wb') as f:
            f.write(data)
        return path

    def ok(self, *args, input=None):
        rc, out, err = self.d.ctl(*args, input=input)
        self.assertEqual(rc, 0, 'hyperampctl %s: exit %d, stderr: %s' % (args, rc, err))
        return out, err


class SubmitTest(SharedDaemonTest):

    def test_encrypt_hello_exact_bytes(self):
        out, err = self.ok('submit', '-s', 'encrypt', 'hello')
        self.assertEqual(out, HELLO_ENCRYPTED)
        self.assertEqual(err, '')

    def test_encrypt_by_id(self):
        out, _ = self.ok('submit', '-s', '1', 'hello')
        self.assertEqual(out, HELLO_ENCRYPTED)

    def test_encrypt_matches_reference_over_key_wrap(self):
        data = random.Random(1).randbytes(1000)
        out, _ = self.ok('submit', '-s', 'encrypt', input=data)
        self.assertEqual(out, xor_service(data))
        self.assertNotEqual(out, data)

    def test_decrypt_round_trip(self):
        plain = b'The quick brown fox jumps over the lazy dog \x00\xff' * 3
        enc, _ = self.ok('submit', '-s', 'encrypt', '-f', self.write_file('plain', plain))
        self.assertEqual(len(enc), len(plain))
        self.assertNotEqual(enc, plain)
        # by file and by name
        dec, _ = self.ok('submit', '-s', 'decrypt', '-f', self.write_file('enc', enc))
        self.assertEqual(dec, plain)
        # by stdin and by id
        dec, _ = self.ok('submit', '-s', '2', input=enc)
        self.assertEqual(dec, plain)

    def test_decrypt_hello(self):
        out, _ = self.ok('submit', '-s', 'decrypt', input=HELLO_ENCRYPTED)
        self.assertEqual(out, b'hello')

    def test_echo_binary_safe_file(self):
        out, _ = self.ok('submit', '-s', 'echo', '-f', self.write_file('bin', ALL_BYTES))
        self.assertEqual(out, ALL_BYTES)

    def test_echo_binary_safe_stdin(self):
        out, _ = self.ok('submit', '-s', 'echo', input=ALL_BYTES)
        self.assertEqual(out, ALL_BYTES)

    def test_echo_only_nuls(self):
        data = b'\0' * 4097
        out, _ = self.ok('submit', '-s', 'echo', input=data)
        self.assertEqual(out, data)

    def test_echo_is_the_default_service(self):
        out, _ = self.ok('submit', input=ALL_BYTES)
        self.assertEqual(out, ALL_BYTES)

    def test_echo_large_payload(self):
        data = random.Random(2).randbytes(1 << 20)     # the default max_payload
        out, _ = self.ok('submit', '-s', 'echo', input=data)
        self.assertEqual(out, data)

    def test_submit_json(self):
        for argv in (('--json', 'submit', '-s', 'encrypt', 'hello'),
                     ('submit', '-s', 'encrypt', '--json', 'hello'),
                     ('submit', '-j', '-s', 'encrypt', 'hello'),
                     ('submit', '-s', 'encrypt', 'hello', '--json'),    # options after DATA
                     ('submit', 'hello', '-js', 'encrypt')):
            with self.subTest(argv=argv):
                out, _ = self.ok(*argv)
                o = json.loads(out)
                self.assertEqual(o['service'], 1)
                self.assertEqual(o['status'], 'SUCCESS')
                self.assertEqual(o['code'], 1)
                self.assertEqual(o['length'], 5)
                self.assertEqual(o['data_hex'], HELLO_ENCRYPTED.hex())
                self.assertIsInstance(o['latency_us'], (int, float))
                self.assertGreaterEqual(o['latency_us'], 0)

    def test_unknown_service_id(self):
        rc, out, err = self.d.ctl('submit', '-s', '99', 'hello')
        self.assertEqual(rc, 4, err)
        self.assertIn('NOT_EXITS', err)
        self.assertEqual(out, b'')

    def test_unknown_service_id_json(self):
        rc, out, err = self.d.ctl('--json', 'submit', '-s', '99', 'hello')
        self.assertEqual(rc, 4, err)
        o = json.loads(out)
        self.assertEqual(o['status'], 'NOT_EXITS')
        self.assertEqual(o['code'], 3)
        self.assertEqual(o['service'], 99)
        self.assertEqual(o['length'], 0)

    def test_unknown_service_name(self):
        rc, out, err = self.d.ctl('submit', '-s', 'nosuchservice', 'hello')
        self.assertEqual(rc, 4, err)
        self.assertIn("no such service 'nosuchservice'", err)
        self.assertEqual(out, b'')


class OutputTest(SharedDaemonTest):

    def test_services_json(self):
        o = self.d.ctl_json('services')
        byname = {s['name']: s for s in o['services']}
        self.assertEqual({n: s['id'] for n, s in byname.items()}, harness.SERVICES)
        for s in o['services']:
            self.assertIsInstance(s['summary'], str)
            self.assertTrue(s['summary'])
            # issue 11: where each id runs; today every one on the local pool
            self.assertEqual((s['runs_on'], s['executor_state']), ('local', 'ready'))

    def test_services_plain(self):
        out, _ = self.ok('services')
        text = out.decode()
        self.assertIn('RUNS_ON', text.splitlines()[0])
        for name in harness.SERVICES:
            self.assertIn(name, text)
            row = [l.split() for l in text.splitlines()[1:] if l.split()[1] == name]
            self.assertEqual(row[0][2], 'local', text)

    def test_ping_json(self):
        o = self.d.ctl_json('ping')
        self.assertIs(o['pong'], True)
        self.assertEqual(o['protocol'], 1)
        self.assertEqual(o['pid'], self.d.proc.pid)
        self.assertEqual(o['max_payload'], 1 << 20)
        out, _ = self.ok('--version')
        self.assertEqual(out.decode().split(), ['hyperampctl', o['version']])

    def test_ping_plain(self):
        out, _ = self.ok('ping')
        self.assertIn('pong from hyperampd', out.decode())
        self.assertIn('pid %d' % self.d.proc.pid, out.decode())

    def test_stats_json_fields(self):
        o = self.d.ctl_json('stats')
        self.assertEqual(o['pid'], self.d.proc.pid)
        self.assertGreaterEqual(o['uptime_s'], 0)
        self.assertEqual(o['queue']['shm_name'], self.d.shm_name)
        self.assertEqual(o['queue']['capacity'], 255)
        for k in ('depth', 'in_flight', 'free', 'bad_index', 'cycles', 'bad_state', 'repairs'):
            self.assertIsInstance(o['queue'][k], (int, float), k)
        self.assertEqual(o['pool']['size'], 4 << 20)
        for k in ('bytes_in_use', 'buffers_in_use', 'largest_free', 'alloc_failures'):
            self.assertIsInstance(o['pool'][k], (int, float), k)
        for k in ('submitted', 'completed', 'failed', 'busy', 'tampered', 'rejected', 'orphaned'):
            self.assertIsInstance(o['requests'][k], (int, float), k)
        self.assertEqual(o['workers']['count'], 2)
        self.assertEqual(len(o['workers']['jobs']), 2)
        self.assertEqual(o['connections']['max'], 256)
        self.assertGreaterEqual(o['connections']['current'], 1)   # this one
        for name in harness.SERVICES:
            s = service_entry(o, name)
            self.assertIsNotNone(s, name)
            self.assertEqual(s['id'], harness.SERVICES[name])
            self.assertEqual(set(s['latency_us']), {'p50', 'p99', 'max'})

    def test_stats_plain(self):
        out, _ = self.ok('stats')
        text = out.decode()
        self.assertIn('pid %d' % self.d.proc.pid, text)
        for word in ('queue', 'pool', 'requests', 'connections', 'encrypt', 'echo'):
            self.assertIn(word, text)


class UsageTest(SharedDaemonTest):
    """Usage errors exit 2 before ever talking to the daemon."""

    def connections_total(self):
        return self.d.stats()['connections']['total']

    def assert_usage_error(self, *args, input=None):
        before = self.connections_total()
        rc, out, err = self.d.ctl(*args, input=input)
        self.assertEqual(rc, 2, 'hyperampctl %s: exit %d, stderr: %s' % (args, rc, err))
        self.assertEqual(out, b'')
        self.assertTrue(err.strip(), 'no message on stderr')
        # Only our own stats connection since: hyperampctl never connected.
        self.assertEqual(self.connections_total(), before + 1,
                         'hyperampctl %s connected despite the usage error' % (args,))
        return err

    def test_bad_concurrency(self):
        for c in ('0', 'abc', '-1', '70000', ''):
            with self.subTest(c=c):
                err = self.assert_usage_error('bench', '-c', c, '-n', '10')
                self.assertIn('-c', err)

    def test_bad_bench_options(self):
        for argv in (('bench', '-n', '0'), ('bench', '--size', '0'),
                     ('bench', '--connections', '0'), ('bench', 'extra'),
                     ('bench', '--nosuchoption'),
                     ('bench', '--duration', '0'), ('bench', '-n', '10', '--duration', '1'),
                     ('bench', '--mix', '-s', 'echo'), ('bench', '--threads', '0'),
                     ('bench', '--threads', '65'),
                     ('bench', '--transport', 'shm', '--connections', '2'),
                     ('bench', '--transport', 'shm', '--overload')):
            with self.subTest(argv=argv):
                self.assert_usage_error(*argv)

    def test_unknown_command(self):
        err = self.assert_usage_error('frobnicate')
        self.assertIn('frobnicate', err)

    def test_no_command(self):
        self.assert_usage_error()

    def test_extra_arguments(self):
        for argv in (('submit', 'a', 'b'), ('stats', 'extra'), ('ping', 'extra'),
                     ('services', 'extra')):
            with self.subTest(argv=argv):
                err = self.assert_usage_error(*argv)
                self.assertIn(argv[-1], err)

    def test_data_and_file(self):
        path = self.write_file('x', b'x')
        self.assert_usage_error('submit', '-f', path, 'hello')

    def test_bad_service_id(self):
        for s in ('1x', ''):
            with self.subTest(s=s):
                self.assert_usage_error('submit', '-s', s, 'hello')

    def test_bad_timeout(self):
        for t in ('0', 'x', '86401'):
            with self.subTest(t=t):
                self.assert_usage_error('--timeout', t, 'ping')

    def test_unknown_option(self):
        self.assert_usage_error('--nosuchoption', 'ping')
        self.assert_usage_error('ping', '--nosuchoption')

    def test_empty_payload(self):
        self.assert_usage_error('submit', '')
        self.assert_usage_error('submit', '-s', 'encrypt', input=b'')
        self.assert_usage_error('submit', '-f', self.write_file('empty', b''))

    def test_missing_file(self):
        path = os.path.join(self.tmp.name, 'does-not-exist')
        rc, out, err = self.d.ctl('submit', '-f', path)
        self.assertNotEqual(rc, 0)
        self.assertIn(path, err)
        self.assertEqual(out, b'')

    def test_help_and_version(self):
        for argv in (('--help',), ('-h',), ('submit', '--help'), ('bench', '--help')):
            with self.subTest(argv=argv):
                rc, out, err = run_ctl(argv)
                self.assertEqual(rc, 0, err)
                self.assertIn(b'Usage: hyperampctl', out)
                if len(argv) == 2:
                    self.assertIn(argv[0].encode(), out)
        rc, out, err = run_ctl(['--version'])
        self.assertEqual(rc, 0, err)
        self.assertRegex(out.decode(), r'^hyperampctl \d+\.\d+\.\d+\n$')


class ConventionsTest(SharedDaemonTest):
    """What a user of systemctl or busctl expects of the CLI (issue 15)."""

    COMMAND_OPTIONS = {
        'submit': ['--service', '--file'],
        'stats': ['--watch', '--count'],
        'services': [], 'ping': [], 'reload': [], 'shutdown': [],
        'bench': ['--service', '--mix', '--concurrency', '--requests', '--duration', '--size',
                  '--connections', '--overload', '--transport', '--threads'],
    }

    def on_terminal(self, args, stream='stdout', timeout=30):
        """Run hyperampctl with stdout (or stderr) on a pseudo-terminal;
        returns (rc, what the terminal got)."""
        master, slave = pty.openpty()
        cmd = [*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket', self.d.socket_path, *args]
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                             stdout=slave if stream == 'stdout' else subprocess.DEVNULL,
                             stderr=slave if stream == 'stderr' else subprocess.DEVNULL)
        os.close(slave)
        got = b''
        deadline = time.monotonic() + harness.scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, 'hyperampctl %s never finished' % (args,))
            r, _, _ = select.select([master], [], [], left)
            try:
                chunk = os.read(master, 65536) if r else b''
            except OSError:             # EIO: every writer closed the terminal
                chunk = b''
            if not chunk and r:
                break
            got += chunk
        os.close(master)
        return p.wait(timeout=harness.scaled(10)), got.decode('utf-8', 'replace')

    def test_json_is_one_line_in_a_pipe(self):
        for argv in (('--json', 'ping'), ('-j', 'ping'), ('--json=short', 'ping'),
                     ('stats', '--json')):
            with self.subTest(argv=argv):
                out, _ = self.ok(*argv)
                self.assertEqual(out.count(b'\n'), 1, out)
                json.loads(out)

    def test_json_pretty_when_asked_or_on_a_terminal(self):
        out, _ = self.ok('--json=pretty', 'ping')
        self.assertGreater(out.count(b'\n'), 3, out)
        self.assertTrue(json.loads(out)['pong'])
        rc, text = self.on_terminal(['--json', 'ping'])
        self.assertEqual(rc, 0, text)
        self.assertGreater(text.count('\n'), 3, text)
        self.assertTrue(json.loads(text)['pong'])
        rc, text = self.on_terminal(['--json=short', 'ping'])
        self.assertEqual((rc, text.strip().count('\n')), (0, 0), text)

    def test_bad_json_style(self):
        rc, out, err = self.d.ctl('--json=loud', 'ping')
        self.assertEqual((rc, out), (2, b''), err)
        self.assertIn("'loud'", err)

    def test_every_command_help_lists_its_options(self):
        for cmd, opts in self.COMMAND_OPTIONS.items():
            with self.subTest(cmd=cmd):
                rc, out, err = run_ctl([cmd, '--help'])
                self.assertEqual(rc, 0, err)
                text = out.decode()
                self.assertIn('Usage: hyperampctl ' + cmd, text)
                for opt in opts + ['--socket', '--json', '--timeout', '--help']:
                    lines = [ln for ln in text.splitlines() if ln.lstrip().startswith(('-', opt))
                             and opt in ln]
                    self.assertTrue(lines, '%s --help does not list %s:\n%s' % (cmd, opt, text))
                self.assertIn('Exit status', text)

    def test_errors_name_the_program_not_its_path(self):
        for argv in (('--bogus',), ('submit', '--bogus', 'x'), ('submit', '-s'),
                     ('bench', '--size'), ('stats', '-x'), ('ping', '--socket')):
            with self.subTest(argv=argv):
                rc, out, err = run_ctl(argv)
                self.assertEqual(rc, 2, err)
                self.assertTrue(err.startswith('hyperampctl: '), err)
                self.assertNotIn(os.path.dirname(harness.HYPERAMPCTL), err)
                self.assertIn('--help', err)

    def test_no_such_service_by_name_or_id(self):
        """One exit status, 4, whether the service is named or numbered."""
        for argv in (('submit', '-s', 'nosuchservice', 'x'), ('submit', '-s', '99', 'x'),
                     ('submit', '-s', '70000', 'x'), ('submit', '-s', '99999999999999999999', 'x'),
                     ('bench', '-s', 'nosuchservice'), ('bench', '-s', '65536')):
            with self.subTest(argv=argv):
                rc, out, err = self.d.ctl(*argv)
                self.assertEqual((rc, out), (4, b''), err)
                self.assertIn('no such service', err)

    def test_watch_lines_follow_the_load(self):
        """Not a terminal: one key=value line per interval; the rate is 0
        when idle and moves with a load."""
        rc, out, err = self.d.ctl('stats', '--watch', '0.2', '--count', '2')
        self.assertEqual(rc, 0, err)
        lines = out.decode().splitlines()
        self.assertEqual(len(lines), 2, out)
        for ln in lines:
            kv = dict(f.split('=', 1) for f in ln.split())
            self.assertEqual(float(kv['req_per_s']), 0.0, ln)
            self.assertIn('echo_p99_us', kv)
        bench = subprocess.Popen([*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket',
                                  self.d.socket_path, 'bench', '--duration', '30', '-c', '4'],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = self.d.stats()['requests']['completed']
            harness.wait_until(lambda: self.d.stats()['requests']['completed'] > base + 100,
                               10, 'the bench to get going')
            rc, out, err = self.d.ctl('stats', '--watch=0.2', '--count', '3')
        finally:
            bench.kill()
            bench.wait()
        self.assertEqual(rc, 0, err)
        lines = out.decode().splitlines()
        self.assertEqual(len(lines), 3, out)
        rates = [dict(f.split('=', 1) for f in ln.split()) for ln in lines]
        self.assertTrue(any(float(r['req_per_s']) > 0 and float(r['echo_per_s']) > 0
                            for r in rates), out)

    def test_watch_redraws_on_a_terminal(self):
        rc, text = self.on_terminal(['stats', '--watch', '0.1', '--count', '2'])
        self.assertEqual(rc, 0, text)
        self.assertEqual(text.count('\x1b[H\x1b[2J'), 2, text)
        self.assertIn('REQ/S', text)
        self.assertIn('echo', text)

    def test_watch_stops_on_ctrl_c(self):
        p = subprocess.Popen([*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket',
                              self.d.socket_path, 'stats', '--watch', '0.1'],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            first = p.stdout.readline()         # it is watching
            self.assertIn(b'req_per_s=', first)
            p.send_signal(signal.SIGINT)
            rc = p.wait(timeout=harness.scaled(10))
        finally:
            p.kill()
            p.wait()
        self.assertEqual(rc, 0, p.stderr.read())

    def test_watch_usage(self):
        for argv in (('stats', '--watch', '0'), ('stats', '--watch=x'), ('stats', '--count', '3'),
                     ('stats', '--watch', '1', 'extra'), ('--json', 'stats', '--watch')):
            with self.subTest(argv=argv):
                rc, out, err = self.d.ctl(*argv)
                self.assertEqual((rc, out), (2, b''), err)

    def test_bench_bar_shows_the_rate(self):
        rc, text = self.on_terminal(['bench', '-n', '2000', '-c', '4'], stream='stderr')
        self.assertEqual(rc, 0, text)
        rates = [float(m) for m in re.findall(r'2000/2000, (\d+) req/s', text)]
        self.assertTrue(rates and rates[-1] > 0, text)


class SystemSocketTest(unittest.TestCase):
    """With no daemon of one's own, hyperampctl tries the system daemon's
    socket.  /run is a private tmpfs here (a mount namespace), so the host's
    own /run/hyperamp is never touched."""

    SYSTEM = '/run/hyperamp/hyperampd.sock'
    PRIVATE_RUN = 'mount --make-rprivate / && mount -t tmpfs tmpfs /run && mkdir /run/hyperamp'

    def setUp(self):
        if os.geteuid() != 0 or not shutil.which('unshare') or not shutil.which('nsenter'):
            self.skipTest('needs root, unshare and nsenter for a private /run')
        p = subprocess.run(['unshare', '-m', 'sh', '-c', self.PRIVATE_RUN], capture_output=True)
        if p.returncode != 0:
            self.skipTest('cannot make a mount namespace here: %s' % p.stderr.decode().strip())

    def ctl_in(self, pid, *args):
        """hyperampctl in pid's mount namespace, with no socket named and the
        per-user guess pointing at nothing."""
        env = dict(os.environ, RUNTIME_DIRECTORY='/nonexistent-hyperamp')
        env.pop('HYPERAMP_SOCKET', None)
        p = subprocess.run(['nsenter', '-t', str(pid), '-m', *harness.EXE_WRAPPER,
                            harness.HYPERAMPCTL, *args], capture_output=True, env=env,
                           timeout=harness.CTL_TIMEOUT)
        return p.returncode, p.stdout, p.stderr.decode()

    def test_falls_back_to_the_system_daemon(self):
        old = harness.WRAPPER[:]
        harness.WRAPPER[:] = ['unshare', '-m', 'sh', '-c', self.PRIVATE_RUN + ' && exec "$@"',
                              'sh'] + old
        try:
            with Daemon(socket_path=self.SYSTEM) as d:
                rc, out, err = self.ctl_in(d.proc.pid, 'submit', '-s', 'encrypt', 'hello')
                self.assertEqual((rc, out), (0, HELLO_ENCRYPTED), err)
                # Named explicitly, a missing socket is not second-guessed.
                rc, out, err = self.ctl_in(d.proc.pid, '--socket', '/nonexistent-hyperamp/s',
                                           'ping')
                self.assertEqual(rc, 69, err)
        finally:
            harness.WRAPPER[:] = old

    def test_hint_names_both_paths(self):
        holder = subprocess.Popen(['unshare', '-m', 'sh', '-c', self.PRIVATE_RUN +
                                   ' && echo ready && exec cat'], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE)
        try:
            self.assertEqual(holder.stdout.readline(), b'ready\n')
            rc, out, err = self.ctl_in(holder.pid, 'ping')
        finally:
            holder.stdin.close()
            holder.wait()
        self.assertEqual((rc, out), (69, b''), err)
        self.assertIn('/nonexistent-hyperamp/hyperampd.sock', err)
        self.assertIn(self.SYSTEM, err)
        self.assertIn('systemctl start hyperampd', err)


class StatsCountTest(unittest.TestCase):
    """stats counts exactly the requests made (a fresh daemon)."""

    def test_counts(self):
        with Daemon({'workers': 2}) as d:
            plan = [('encrypt', 3), ('decrypt', 2), ('echo', 4), ('99', 1)]
            for svc, n in plan:
                for i in range(n):
                    rc, _, err = d.ctl('submit', '-s', svc, 'payload-%d' % i)
                    self.assertEqual(rc, 4 if svc == '99' else 0, err)
            rc, _, err = d.ctl('submit', '-s', 'nosuchservice', 'x')    # never sent
            self.assertEqual(rc, 4, err)
            with harness.RawClient(d.socket_path) as c:                 # rejected
                rep, _ = c.call('submit', {'service': 'nosuchservice'}, b'x')
                self.assertEqual(rep['error']['code'], 'E_INVALID', rep)
            s = d.ctl_json('stats')
            r = s['requests']
            self.assertEqual(r['submitted'], 10)
            self.assertEqual(r['completed'], 10)
            self.assertEqual(r['failed'], 1)
            self.assertEqual(r['rejected'], 1)
            self.assertEqual(r['busy'], 0)
            self.assertEqual(r['tampered'], 0)
            self.assertEqual(service_entry(s, 'encrypt')['requests'], 3)
            self.assertEqual(service_entry(s, 'decrypt')['requests'], 2)
            self.assertEqual(service_entry(s, 'echo')['requests'], 4)
            for name in ('encrypt', 'decrypt', 'echo'):
                self.assertEqual(service_entry(s, name)['failed'], 0, name)
            unknown = service_entry(s, '(unknown id)')
            self.assertIsNotNone(unknown)
            self.assertIsNone(unknown['id'])
            self.assertEqual(unknown['requests'], 1)
            self.assertEqual(unknown['failed'], 1)
            self.assertEqual(s['queue']['in_flight'], 0)
            self.assertEqual(s['queue']['free'], s['queue']['capacity'])
            self.assertEqual(s['pool']['buffers_in_use'], 0)
            self.assertEqual(s['pool']['bytes_in_use'], 0)
            self.assertEqual(sum(s['workers']['jobs']) + s['workers']['loop_jobs'], 10)
            # 10 submits, a services lookup, the raw client and this stats
            self.assertEqual(s['connections']['total'], 13)
            self.assertEqual(s['connections']['protocol_errors'], 0)

    def test_unknown_name_with_file_or_stdin_is_sent_by_name(self):
        """Regression: 'submit -s NAME' with an unknown NAME and the payload from -f
        or stdin sent an uninitialised service id instead of the name
        (src/ctl/main.c cmd_submit: r was overwritten by read_stream()).  A
        name hyperampctl does not know is looked up in the daemon's table
        ('services'); an unknown one is never submitted and exits 4."""
        with Daemon({'workers': 2}) as d, tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, 'payload')
            with open(path, 'wb') as f:
                f.write(b'hello')
            for how, args, inp in (('stdin', (), b'hello'), ('file', ('-f', path), None)):
                with self.subTest(how=how):
                    rc, out, err = d.ctl('submit', '-s', 'nosuchservice', *args, input=inp)
                    self.assertEqual(rc, 4, err)
                    self.assertEqual(out, b'')
                    self.assertIn("no such service 'nosuchservice'", err)
            r = d.stats()['requests']
            self.assertEqual(r['submitted'], 0, 'a service ran for an unknown name')
            self.assertEqual(r['rejected'], 0, 'an unknown name reached submit')


class NoDaemonTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix='hyperamp-cli-')
        self.addCleanup(self.tmp.cleanup)

    def test_daemon_not_running(self):
        path = os.path.join(self.tmp.name, 'nobody.sock')
        for argv in (('ping',), ('stats',), ('services',), ('submit', 'hello'),
                     ('submit', '-s', 'encrypt', 'hello'), ('bench', '-n', '10')):
            with self.subTest(argv=argv):
                rc, out, err = run_ctl(argv, socket_path=path)
                self.assertEqual(rc, 69, err)
                self.assertIn(path, err)
                self.assertEqual(out, b'')

    def test_stale_socket(self):
        path = os.path.join(self.tmp.name, 'stale.sock')
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()                   # the file stays, nobody listens
        rc, out, err = run_ctl(['ping'], socket_path=path)
        self.assertEqual(rc, 69, err)

    def test_socket_from_environment(self):
        path = os.path.join(self.tmp.name, 'env.sock')
        rc, _, err = run_ctl(['ping'], env={'HYPERAMP_SOCKET': path})
        self.assertEqual(rc, 69, err)
        self.assertIn(path, err)


class FakeServer:
    """A Unix socket server that accepts and then answers with canned bytes
    (or nothing), to test the client's timeout and bad-reply handling."""

    def __init__(self, path, reply=None):
        self.path = path
        self.reply = reply
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.conns = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        self.conns.append(c)
        if self.reply is not None:
            c.recv(65536)
            c.sendall(self.reply)

    def close(self):
        self.sock.close()
        self.thread.join(timeout=5)
        for c in self.conns:
            c.close()


class EchoServer:
    """Answers ping and echo submits on every connection it accepts, one
    thread each; the reply to request bad_id on connection bad_conn (in
    accept order) has one byte changed."""

    def __init__(self, path, bad_conn, bad_id):
        self.path, self.bad_conn, self.bad_id = path, bad_conn, bad_id
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        self.conns, self.threads = [], []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self.serve, args=(c, len(self.conns)), daemon=True)
            self.conns.append(c)
            self.threads.append(t)
            t.start()

    def serve(self, c, n):
        buf = b''
        try:
            while True:
                while len(buf) < 8 or len(buf) < 8 + sum(struct.unpack('>II', buf[:8])):
                    got = c.recv(65536)
                    if not got:
                        return
                    buf += got
                jl, dl = struct.unpack('>II', buf[:8])
                req = json.loads(buf[8:8 + jl])
                data = bytearray(buf[8 + jl:8 + jl + dl])
                buf = buf[8 + jl + dl:]
                if req['method'] == 'ping':
                    res = {'pong': True, 'max_payload': 1 << 20, 'queue_capacity': 1024,
                           'max_inflight_per_conn': 256}
                else:
                    res = {'service': 66, 'status': 'SUCCESS', 'code': 0, 'latency_us': 1}
                    if n == self.bad_conn and req['id'] == self.bad_id:
                        data[0] ^= 1
                c.sendall(harness.encode_frame({'v': 1, 'id': req['id'], 'result': res},
                                               bytes(data) if req['method'] == 'submit' else b''))
        except OSError:
            return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()
        self.thread.join(timeout=5)
        for t in self.threads:
            t.join(timeout=5)


def bench_on(srv, args):
    """hyperampctl --json bench ARGS against a fake server, closed after."""
    try:
        return run_ctl(['--json', 'bench'] + args, socket_path=srv.path,
                       timeout=harness.scaled(60))
    finally:
        srv.close()


class BenchThreadsTest(unittest.TestCase):

    def test_socket_threads_run_and_verify(self):
        """--threads over the socket: every request sent and verified, on
        the connections asked for, whatever thread ran it."""
        with Daemon({'queue_entries': 1024}) as d:
            before = d.stats()
            rc, out, err = d.ctl('--json', 'bench', '-s', 'encrypt', '--size', '256', '-c', '64',
                                 '--connections', '8', '--threads', '4', '-n', '20001',
                                 timeout=harness.scaled(120))
            self.assertEqual(rc, 0, err)
            o = json.loads(out)
            self.assertEqual((o['transport'], o['threads'], o['connections']), ('socket', 4, 8))
            self.assertEqual((o['requests'], o['failures']), (20001, 0))
            after = d.stats()
            self.assertEqual(after['requests']['completed'] - before['requests']['completed'],
                             20001)
            # bench's 8 connections and the stats call's own
            self.assertEqual(after['connections']['total'] - before['connections']['total'], 9)

    def test_socket_threads_catch_a_wrong_reply(self):
        """One changed byte in one reply on the last thread's connection
        fails the run (exit 1), as with one thread."""
        with tempfile.TemporaryDirectory(prefix='hyperamp-cli-') as tmp:
            for n, (threads, bad_conn, failures) in enumerate((('1', 3, 1), ('4', 3, 1),
                                                               ('4', -1, 0))):
                with self.subTest(threads=threads, bad_conn=bad_conn):
                    srv = EchoServer(os.path.join(tmp, '%d.sock' % n), bad_conn, bad_id=7)
                    rc, out, err = bench_on(srv, ['-s', 'echo', '-c', '8', '--connections', '4',
                                                  '--threads', threads, '-n', '400'])
                    self.assertEqual(rc, 1 if failures else 0, err)
                    self.assertEqual(json.loads(out)['failures'], failures, err)
                    if failures:
                        self.assertIn('result bytes differ from the reference', err)


class ShareServer:
    """Serves bench's connections from one thread, in accept order.  Mode
    'share': the first connection is answered at once; the second is held
    until the first has had 40 submits (or its own count passes share,
    which is the fault looked for), and the most it ever had outstanding
    is kept.  Mode 'cross': the reply to request 5 goes out on the other
    connection.  Mode 'drop0': request 0 is never answered.  Mode 'count':
    each read's submits are answered together, after the most one read
    brought on any connection is kept (a connection's requests in flight:
    a client sends a connection's fill with one write)."""

    def __init__(self, path, mode, share=4):
        self.path, self.mode, self.share = path, mode, share
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(64)
        self.r, self.w = os.pipe()
        self.conns, self.bufs, self.held = [], [], []
        self.seen_a, self.max_b, self.released = 0, 0, False
        self.max_outstanding = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def reply(self, i, req, data):
        if req['method'] == 'ping':
            res, data = {'pong': True, 'max_payload': 1 << 20, 'queue_capacity': 1024,
                         'max_inflight_per_conn': 256}, b''
        else:
            res = {'service': 66, 'status': 'SUCCESS', 'code': 0, 'latency_us': 1}
        if self.mode == 'cross' and req['method'] == 'submit' and req['id'] == 5:
            i = 1 - i
        if self.mode == 'drop0' and req['method'] == 'submit' and req['id'] == 0:
            return
        self.conns[i].sendall(harness.encode_frame({'v': 1, 'id': req['id'], 'result': res},
                                                   data))

    def frames(self, i):
        buf = self.bufs[i]
        while len(buf) >= 8 and len(buf) >= 8 + sum(struct.unpack('>II', buf[:8])):
            jl, dl = struct.unpack('>II', buf[:8])
            yield json.loads(buf[8:8 + jl]), bytes(buf[8 + jl:8 + jl + dl])
            buf = buf[8 + jl + dl:]
            self.bufs[i] = buf

    def loop(self):
        try:
            while True:
                ready, _, _ = select.select([self.sock, self.r] + self.conns, [], [])
                if self.r in ready:
                    return
                if self.sock in ready:
                    c, _ = self.sock.accept()
                    self.conns.append(c)
                    self.bufs.append(b'')
                for i, c in enumerate(self.conns):
                    if c not in ready:
                        continue
                    got = c.recv(65536)
                    if not got:
                        return
                    self.bufs[i] += got
                    batch = list(self.frames(i))
                    if self.mode == 'count':
                        self.max_outstanding = max(self.max_outstanding, sum(
                            1 for req, _ in batch if req['method'] == 'submit'))
                    for req, data in batch:
                        if self.mode != 'share' or i != 1 or req['method'] != 'submit':
                            if i == 0 and req['method'] == 'submit':
                                self.seen_a += 1
                            self.reply(i, req, data)
                            continue
                        self.held.append((req, data))
                        self.max_b = max(self.max_b, len(self.held))
                if self.held and (self.seen_a >= 40 or len(self.held) > self.share):
                    for req, data in self.held:
                        self.reply(1, req, data)
                    self.held = []
        except OSError:
            return

    def close(self):
        os.write(self.w, b'x')
        self.thread.join(timeout=5)
        self.sock.close()
        for c in self.conns:
            c.close()
        os.close(self.r)
        os.close(self.w)


class BenchShareTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix='hyperamp-cli-')
        self.addCleanup(self.tmp.cleanup)

    def test_each_connection_keeps_its_share(self):
        """-c 8 over 2 connections is 4 in flight on each, even while one
        connection's replies are held back and the other's come at once
        (the preflight checks max_inflight_per_conn against that share)."""
        for spin in ('0', '50'):
            with self.subTest(spin=spin):
                srv = ShareServer(os.path.join(self.tmp.name, 'share%s.sock' % spin), 'share')
                rc, out, err = bench_on(srv, ['-s', 'echo', '-c', '8', '--connections', '2',
                                              '--spin-us', spin, '-n', '200'])
                self.assertEqual(rc, 0, err)
                o = json.loads(out)
                self.assertEqual((o['requests'], o['failures'], o['spin_us']), (200, 0, int(spin)))
                self.assertGreaterEqual(srv.seen_a, 40)
                self.assertEqual(srv.max_b, 4)

    def test_reply_on_another_connection_fails(self):
        srv = ShareServer(os.path.join(self.tmp.name, 'cross.sock'), 'cross')
        rc, out, err = bench_on(srv, ['-s', 'echo', '-c', '8', '--connections', '2',
                                      '-n', '100'])
        self.assertEqual(rc, 1, err)
        self.assertEqual(json.loads(out)['failures'], 1, err)
        self.assertIn('request 5: answered on another connection', err)

    def test_lost_request_given_up_once_the_ring_comes_round(self):
        """A request never answered is a failure once its slot of the
        65,536 comes round again; its connection is topped up (before, it
        went on the refill list twice: ASan's heap-buffer-overflow in
        retire())."""
        srv = ShareServer(os.path.join(self.tmp.name, 'drop.sock'), 'drop0')
        rc, out, err = bench_on(srv, ['-s', 'echo', '-c', '2', '--connections', '1',
                                      '-n', '70000'])
        self.assertEqual(rc, 1, err)
        o = json.loads(out)
        self.assertEqual((o['requests'], o['failures']), (70000, 1), err)
        self.assertIn('request 0: no reply while a ring of later requests went by', err)

    def test_no_reply_within_timeout_exit_75(self):
        """The only request in flight never answered: --timeout ends the
        run (exit 75), spin or not."""
        for spin in ('0', '50'):
            with self.subTest(spin=spin):
                srv = ShareServer(os.path.join(self.tmp.name, 'mute%s.sock' % spin), 'drop0')
                rc, out, err = bench_on(srv, ['-s', 'echo', '-c', '1', '--connections', '1',
                                              '-n', '10', '--timeout', '1', '--spin-us', spin])
                self.assertEqual(rc, 75, err)
                self.assertIn('within 1 s', err)

    def test_threads_keep_each_connection_within_its_share(self):
        """-c 6 over 3 connections and 2 threads: 2 on each connection, as
        with one thread (the thread with one connection used to take 3)."""
        srv = ShareServer(os.path.join(self.tmp.name, 'split.sock'), 'count')
        rc, out, err = bench_on(srv, ['-s', 'echo', '-c', '6', '--connections', '3',
                                      '--threads', '2', '-n', '600'])
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)['failures'], 0, err)
        self.assertEqual(srv.max_outstanding, 2)

    def test_spin_us_checked(self):
        for argv, what in ((['--spin-us', '-1'], '--spin-us: not a number of microseconds'),
                           (['--spin-us', '1000001'], '--spin-us: not a number of microseconds'),
                           (['--spin-us', 'x'], '--spin-us: not a number of microseconds'),
                           (['--transport', 'shm', '--spin-us', '5'],
                            '--spin-us is for --transport socket')):
            with self.subTest(argv=argv):
                rc, out, err = run_ctl(['bench'] + argv,
                                       socket_path=os.path.join(self.tmp.name, 'none.sock'))
                self.assertEqual(rc, 2, err)
                self.assertIn(what, err)


class BadServerTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix='hyperamp-cli-')
        self.addCleanup(self.tmp.cleanup)

    def test_timeout_exit_75(self):
        srv = FakeServer(os.path.join(self.tmp.name, 'mute.sock'))
        self.addCleanup(srv.close)
        rc, out, err = run_ctl(['--timeout', '1', 'ping'], socket_path=srv.path, timeout=20)
        self.assertEqual(rc, 75, err)
        self.assertIn('within 1 s', err)

    def test_full_backlog_times_out_exit_75(self):
        """A daemon that accepts nothing (hung, or out of descriptors) must
        not block hyperampctl past --timeout in connect()."""
        path = os.path.join(self.tmp.name, 'full.sock')
        lsn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(lsn.close)
        lsn.bind(path)
        lsn.listen(0)
        fillers = []
        self.addCleanup(lambda: [f.close() for f in fillers])
        while True:     # fill the backlog until a connect would block
            f = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            f.setblocking(False)
            fillers.append(f)
            try:
                f.connect(path)
            except BlockingIOError:
                break
            self.assertLess(len(fillers), 64, 'backlog never filled')
        t0 = time.monotonic()
        rc, out, err = run_ctl(['--timeout', '1', 'ping'], socket_path=path, timeout=20)
        self.assertEqual(rc, 75, err)
        self.assertIn('accepts no connection within 1 s', err)
        self.assertLess(time.monotonic() - t0, 10)

    def test_garbage_reply_exit_1(self):
        srv = FakeServer(os.path.join(self.tmp.name, 'garbage.sock'),
                         reply=harness.encode_frame(b'not json at all'))
        self.addCleanup(srv.close)
        rc, out, err = run_ctl(['ping'], socket_path=srv.path)
        self.assertEqual(rc, 1, err)
        self.assertIn('did not answer with a hyperampd reply', err)


    def error_server(self, code):
        srv = FakeServer(os.path.join(self.tmp.name, code + '.sock'),
                         reply=harness.encode_frame({'v': 1, 'error': {
                             'code': code, 'message': 'canned ' + code}}))
        self.addCleanup(srv.close)
        return srv

    def test_daemon_error_exit_1(self):
        srv = self.error_server('E_BUSY')
        rc, out, err = run_ctl(['ping'], socket_path=srv.path)
        self.assertEqual(rc, 1, err)
        self.assertIn('canned E_BUSY (E_BUSY)', err)

    def test_limit_reply_exit_69(self):
        """Regression: E_LIMIT must map to exit 69 ("daemon unreachable"), but
        simple_call() in src/ctl/main.c tests rep->error_code after
        ha_reply_done(rep) has cleared it, so it always exits 1."""
        srv = self.error_server('E_LIMIT')
        rc, out, err = run_ctl(['ping'], socket_path=srv.path)
        self.assertIn('canned E_LIMIT', err)
        self.assertEqual(rc, 69, err)


class ConnectionLimitCliTest(unittest.TestCase):

    def test_limit_reached_exit_69(self):
        """At max_connections every command exits 69, as with no daemon:
        the simple calls, bench over the socket, and bench through shared
        memory (the attach is refused at the door)."""
        with Daemon({'max_connections': 1}) as d, d.client() as holder:
            holder.ping()                   # the one slot is taken
            # and root's reserve beyond it (4 admin connections in all)
            reserve = [d.client() for _ in range(3)]
            self.addCleanup(lambda: [c.close() for c in reserve])
            for c in reserve:
                c.ping()
            for argv in (('ping',), ('submit', 'x'), ('bench', '-n', '10'),
                         ('bench', '--transport', 'shm', '-n', '10')):
                with self.subTest(argv=argv):
                    rc, out, err = d.ctl(*argv)
                    self.assertEqual(rc, 69, err)
                    self.assertEqual(out, b'')
                    self.assertIn('limit', err)
            self.assertEqual(holder.stats()['connections']['rejected'], 4)

    def test_bench_refused_on_a_later_connection_exit_69(self):
        """bench's first connection gets in, a later one is refused at the
        limit: still exit 69, with the daemon's reason."""
        with Daemon({'max_connections': 2}) as d, d.client() as holder:
            holder.ping()
            # root may hold 4 (its reserve beyond the limit): bench gets one
            reserve = [d.client() for _ in range(2)]
            self.addCleanup(lambda: [c.close() for c in reserve])
            for c in reserve:
                c.ping()
            rc, out, err = d.ctl('bench', '-n', '200', '--connections', '3')
            self.assertEqual(rc, 69, err)
            self.assertIn('limit', err)
            # With a thread each, the refused one stops the other: the
            # run ends now, not at its 600 s (it ran them out before).
            rc, out, err = d.ctl('bench', '-c', '2', '--connections', '2', '--threads', '2',
                                 '--duration', '600', timeout=harness.scaled(60))
            self.assertEqual(rc, 69, err)
            self.assertIn('limit', err)


class OversizeCliTest(unittest.TestCase):

    def test_oversize_payload_reports_too_big(self):
        """A payload over max_payload is refused with E_TOO_BIG, and
        hyperampctl must say so (exit 1, "the daemon reported an error").
        Regression, for payloads larger than the socket buffer: the daemon answers
        E_TOO_BIG after the header and closes, hyperampctl is still writing
        the payload, gets EPIPE/ECONNRESET and reports "connection to
        hyperampd lost" with exit 69 as if the daemon were gone
        (src/core/client.c ha_client_call never reads the reply once a
        write fails)."""
        with Daemon({'max_payload': 4096}) as d:
            for size in (4097, 1 << 20):
                with self.subTest(size=size):
                    rc, out, err = d.ctl('submit', '-s', 'echo', input=b'x' * size)
                    self.assertEqual(out, b'')
                    self.assertIn('E_TOO_BIG', err)
                    self.assertEqual(rc, 1, err)
            self.assertEqual(d.stats()['requests']['submitted'], 0)

    def test_bench_size_over_the_limits(self):
        """bench refuses a --size the daemon could never take (exit 2), over
        the socket (max_payload) and through shared memory (zone_pool_size)."""
        with Daemon({'max_payload': 4096, 'zone_pool_size': 65536}) as d:
            for argv, what in ((('bench', '--size', '4097', '-n', '10'), 'max_payload'),
                               (('bench', '--transport', 'shm', '--size', '65537', '-n', '10'),
                                'zone_pool_size')):
                with self.subTest(argv=argv):
                    rc, out, err = d.ctl(*argv)
                    self.assertEqual((rc, out), (2, b''), err)
                    self.assertIn(what, err)


if __name__ == '__main__':
    unittest.main()
