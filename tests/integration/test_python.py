# SPDX-License-Identifier: MIT
"""python/hyperamp.py, the stdlib-only Python client, against the real
daemon: ping, services, stats, submit, pipelined submits, errors, the
socket path resolution and its command line."""
import os
import random
import subprocess
import sys
import unittest
from unittest import mock

import harness
from harness import Daemon, expected_result, scaled

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(SRC, 'python'))
import hyperamp  # noqa: E402  (the module under test, from the source tree)

HELLO_ENCRYPTED = bytes.fromhex('164e2c2f12')


class PythonClientTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon({'workers': 2, 'max_inflight_per_conn': 16})
        cls.d.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.d.__exit__(None, None, None)

    def client(self, **kw):
        c = hyperamp.Client(self.d.socket_path, timeout=scaled(10), **kw)
        self.addCleanup(c.close)
        return c

    def test_ping_and_services(self):
        c = self.client()
        p = c.ping()
        self.assertIs(p['pong'], True)
        self.assertEqual(p['protocol'], hyperamp.PROTOCOL)
        self.assertEqual(p['pid'], self.d.proc.pid)
        self.assertEqual(p['max_inflight_per_conn'], 16)
        names = {s['name']: s['id'] for s in c.services()}
        self.assertEqual((names.get('encrypt'), names.get('decrypt'), names.get('echo')),
                         (1, 2, 66))

    def test_submit(self):
        c = self.client()
        r = c.submit('encrypt', b'hello')
        self.assertEqual((r.service, r.status, r.code, r.data), (1, 'SUCCESS', 1, HELLO_ENCRYPTED))
        self.assertGreater(r.latency_us, 0)
        self.assertEqual(c.submit(2, r.data).data, b'hello')
        data = bytes(random.Random(1).randrange(256) for _ in range(3000))
        self.assertEqual(c.submit('echo', data).data, data)
        # No such service: a result, not an error, and no payload.
        r = c.submit(999, b'x')
        self.assertEqual((r.service, r.status, r.code, r.data), (999, 'NOT_EXITS', 3, b''))

    def test_error_reply_keeps_the_connection(self):
        c = self.client()
        with self.assertRaises(hyperamp.Error) as e:
            c.submit('no-such-service', b'x')
        self.assertEqual(e.exception.code, 'E_INVALID')
        with self.assertRaises(hyperamp.Error) as e:
            c.submit('encrypt', b'')
        self.assertEqual(e.exception.code, 'E_INVALID')
        self.assertEqual(c.submit('encrypt', b'hello').data, HELLO_ENCRYPTED)

    def test_stats_count_the_submits(self):
        c = self.client()
        before = c.stats()['requests']['completed']
        for _ in range(5):
            c.submit('echo', b'abc')
        s = c.stats()
        self.assertEqual(s['requests']['completed'] - before, 5)
        self.assertEqual(s['pid'], self.d.proc.pid)

    def test_pipelined_submits(self):
        """500 submits, up to the daemon's in-flight limit at once on one
        connection; each answer matched to its request by id."""
        c = self.client()
        rng = random.Random(7)
        reqs = [(rng.choice(['encrypt', 'echo', 1, 66]),
                 bytes(rng.randrange(256) for _ in range(rng.randrange(1, 600))))
                for _ in range(500)]
        before = c.stats()['requests']
        results = c.submit_many(reqs)
        self.assertEqual(len(results), len(reqs))
        for i, ((svc, data), r) in enumerate(zip(reqs, results)):
            self.assertEqual((r.status, r.data), ('SUCCESS', expected_result(svc, data)),
                             'request %d (%r)' % (i, svc))
        after = c.stats()['requests']
        self.assertEqual(after['completed'] - before['completed'], 500)
        # The window is the daemon's limit: nothing was refused as busy.
        self.assertEqual(after['busy'], before['busy'])

    def test_pipelined_keeps_the_window_full(self):
        """The window really is in flight at once: submit_many sends the
        daemon's max_inflight_per_conn requests before it reads a reply, and
        sends one more for each reply it reads."""
        c = self.client()
        c.ping()
        events = []
        send, recv = c._send, c._recv

        def counting_send(*a, **kw):
            events.append('s')
            return send(*a, **kw)

        def counting_recv():
            events.append('r')
            return recv()

        c._send, c._recv = counting_send, counting_recv
        results = c.submit_many([('echo', bytes([i])) for i in range(40)])
        self.assertEqual([r.data for r in results], [bytes([i]) for i in range(40)])
        trace = ''.join(events)
        self.assertTrue(trace.startswith('s' * 16 + 'r'), trace)
        self.assertEqual(trace[16:16 + 48], 'rs' * 24, trace)
        self.assertEqual(trace[16 + 48:], 'r' * 16, trace)

    def test_pipelined_error_drains_and_raises(self):
        c = self.client()
        reqs = [('echo', b'a'), ('echo', b'b'), ('nope', b'c'), ('echo', b'd')]
        with self.assertRaises(hyperamp.Error) as e:
            c.submit_many(reqs, window=4)
        self.assertEqual((e.exception.code, e.exception.index), ('E_INVALID', 2))
        # Every reply in flight was read: the next call gets its own answer.
        self.assertIs(c.ping()['pong'], True)
        self.assertEqual(c.submit('echo', b'z').data, b'z')

    def test_default_path_from_the_environment(self):
        with mock.patch.dict(os.environ, {'HYPERAMP_SOCKET': self.d.socket_path}):
            self.assertEqual(hyperamp.default_socket_path(), self.d.socket_path)
            with hyperamp.Client(timeout=scaled(10)) as c:
                self.assertIs(c.ping()['pong'], True)

    def test_no_daemon(self):
        with self.assertRaises(FileNotFoundError):
            hyperamp.Client(os.path.join(self.d.tmpdir, 'none.sock'))

    def test_command_line(self):
        env = dict(os.environ, PYTHONPATH=os.path.join(SRC, 'python'))
        p = subprocess.run([sys.executable, '-m', 'hyperamp', '--socket', self.d.socket_path,
                            'submit', 'encrypt', 'hello'], capture_output=True, env=env,
                           timeout=scaled(30))
        self.assertEqual((p.returncode, p.stdout), (0, HELLO_ENCRYPTED), p.stderr)
        p = subprocess.run([sys.executable, '-m', 'hyperamp', '--socket', self.d.socket_path,
                            'submit', 'bogus', 'x'], capture_output=True, text=True, env=env,
                           timeout=scaled(30))
        self.assertEqual(p.returncode, 1)
        self.assertIn('E_INVALID', p.stderr)


if __name__ == '__main__':
    unittest.main()
