# SPDX-License-Identifier: MIT
"""Load through hyperampctl bench; afterwards every counter must add up and
every queue entry and buffer must be back."""
import json
import subprocess
import unittest

import harness
from harness import Daemon, service_entry


class StressTest(unittest.TestCase):

    def bench(self, d, *args):
        rc, out, err = d.ctl('bench', '--json', *args, timeout=harness.scaled(60))
        try:
            o = json.loads(out)
        except ValueError:
            self.fail('bench %s: exit %d, no JSON: %r %s' % (args, rc, out, err))
        return rc, o, err

    def assert_drained(self, s):
        self.assertEqual(s['queue']['in_flight'], 0)
        self.assertEqual(s['queue']['depth'], 0)
        self.assertEqual(s['queue']['free'], s['queue']['capacity'])
        self.assertEqual(s['pool']['buffers_in_use'], 0)
        self.assertEqual(s['pool']['bytes_in_use'], 0)
        self.assertEqual(s['pool']['largest_free'], s['pool']['size'])
        self.assertEqual(s['requests']['tampered'], 0)
        for k in ('bad_index', 'cycles', 'bad_state', 'repairs'):
            self.assertEqual(s['queue'][k], 0, k)

    def test_original_report_64_connections(self):
        """The original report: 10000 encrypt requests, 64 in flight over 64
        connections."""
        with Daemon() as d:
            rc, b, err = self.bench(d, '-c', '64', '--connections', '64', '-n', '10000',
                                    '-s', 'encrypt')
            self.assertEqual(rc, 0, err)
            self.assertEqual(b['failures'], 0, err)
            self.assertEqual(b['busy'], 0)
            self.assertEqual(b['requests'], 10000)
            self.assertEqual(b['service'], 1)
            self.assertEqual(b['concurrency'], 64)
            self.assertEqual(b['connections'], 64)
            self.assertEqual(b['size'], 64)
            self.assertGreater(b['req_per_s'], 0)
            lat = b['latency_us']
            self.assertLessEqual(lat['p50'], lat['p90'])
            self.assertLessEqual(lat['p90'], lat['p99'])
            self.assertLessEqual(lat['p99'], lat['max'])

            s = d.ctl_json('stats')
            # The bench made every request; stats itself submits nothing.
            self.assertEqual(s['requests']['submitted'], 10000)
            self.assertEqual(s['requests']['completed'], 10000)
            self.assertEqual(s['requests']['failed'], 0)
            self.assertEqual(s['requests']['busy'], 0)
            self.assertEqual(s['requests']['rejected'], 0)
            self.assertEqual(s['requests']['orphaned'], 0)
            self.assertEqual(service_entry(s, 'encrypt')['requests'], 10000)
            self.assertEqual(service_entry(s, 'encrypt')['failed'], 0)
            self.assertEqual(sum(s['workers']['jobs']), 10000)
            self.assertEqual(s['connections']['total'], 64 + 1)     # bench + stats
            self.assertEqual(s['connections']['rejected'], 0)
            self.assertEqual(s['connections']['protocol_errors'], 0)
            self.assert_drained(s)

    def test_large_echo(self):
        with Daemon() as d:
            rc, b, err = self.bench(d, '-s', 'echo', '--size', '65536', '-c', '8', '-n', '500')
            self.assertEqual(rc, 0, err)
            self.assertEqual(b['failures'], 0, err)
            self.assertEqual(b['requests'], 500)
            self.assertEqual(b['size'], 65536)
            s = d.ctl_json('stats')
            self.assertEqual(s['requests']['submitted'], 500)
            self.assertEqual(s['requests']['completed'], 500)
            self.assertEqual(service_entry(s, 'echo')['requests'], 500)
            self.assert_drained(s)

    def test_concurrent_benches(self):
        """Two clients of different services at once; no reply goes to the
        wrong request (bench checks every byte)."""
        with Daemon() as d:
            cmd = [*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket', d.socket_path, '--json', 'bench']
            procs = [subprocess.Popen(cmd + ['-s', svc, '-c', '32', '--connections', '4',
                                             '-n', '4000', '--size', size],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for svc, size in (('encrypt', '100'), ('decrypt', '1000'))]
            for p in procs:
                out, err = p.communicate(timeout=harness.scaled(60))
                self.assertEqual(p.returncode, 0, err)
                self.assertEqual(json.loads(out)['failures'], 0)
            s = d.ctl_json('stats')
            self.assertEqual(s['requests']['submitted'], 8000)
            self.assertEqual(s['requests']['completed'], 8000)
            self.assertEqual(service_entry(s, 'encrypt')['requests'], 4000)
            self.assertEqual(service_entry(s, 'decrypt')['requests'], 4000)
            self.assert_drained(s)

    def test_mix_over_both_transports(self):
        """--mix: every service at every size of the ladder, each reply
        checked against its own service; the daemon counts them per service."""
        with Daemon() as d:
            # 3 services x 7 sizes (16 B .. 64 KiB) x 2 payloads: 42 kinds;
            # 4200 requests run each service 1400 times.
            for transport in ('socket', 'shm'):
                rc, b, err = self.bench(d, '--mix', '--transport', transport, '-c', '16',
                                        '-n', '4200')
                self.assertEqual(rc, 0, err)
                self.assertEqual(b['failures'], 0, err)
                self.assertEqual(b['requests'], 4200)
                self.assertIsNone(b['service'])
                self.assertTrue(b['mix'])
                self.assertEqual(b['size'], 65536)
            # The service rows count every source's requests, socket and
            # zone (docs/protocol.md): 1400 of each over each transport.  A
            # zone request is counted just after its client saw the answer.
            s = harness.wait_until(
                lambda: (lambda s: s if all(service_entry(s, n)['requests'] >= 2800
                                            for n in ('encrypt', 'decrypt', 'echo'))
                         else None)(d.ctl_json('stats')),
                what='every request counted per service')
            for name in ('encrypt', 'decrypt', 'echo'):
                self.assertEqual(service_entry(s, name)['requests'], 2800, name)
                self.assertEqual(service_entry(s, name)['failed'], 0, name)
            zones = [x for x in s['sources'] if x['kind'] == 'shm']
            self.assertEqual(sum(x['completed'] for x in zones), 4200)
            self.assertEqual(sum(x['failed'] for x in zones), 0)
            self.assert_drained(s)

    def test_duration(self):
        """--duration: load for that long, then every request answered."""
        with Daemon() as d:
            for transport in ('socket', 'shm'):
                before = d.ctl_json('stats')['requests']['completed']
                shm = [s['completed'] for s in d.ctl_json('stats')['sources']
                       if s['kind'] == 'shm']
                rc, b, err = self.bench(d, '--mix', '--transport', transport, '-c', '8',
                                        '--duration', '1')
                self.assertEqual(rc, 0, err)
                self.assertEqual(b['failures'], 0, err)
                self.assertGreater(b['requests'], 0)
                self.assertGreaterEqual(b['seconds'], 1.0)
                lat = b['latency_us']
                self.assertLessEqual(lat['p50'], lat['p99'])
                self.assertLessEqual(lat['p99'], lat['max'])
                s = d.ctl_json('stats')
                if transport == 'socket':
                    self.assertEqual(s['requests']['completed'] - before, b['requests'])
                else:
                    after = [x['completed'] for x in s['sources'] if x['kind'] == 'shm']
                    self.assertEqual(sum(after) - sum(shm), b['requests'])
            self.assert_drained(s)

    def test_overload_refused_without_flag(self):
        """bench checks the daemon's limits first: more in flight than the
        queue holds is a usage error unless --overload says it is meant."""
        with Daemon({'queue_entries': 8, 'workers': 1}) as d:
            rc, out, err = d.ctl('bench', '-c', '64', '--connections', '8', '-n', '10')
            self.assertEqual(rc, 2, err)
            self.assertIn('queue capacity (8)', err)
            rc, out, err = d.ctl('bench', '--size', '2000000', '-n', '10')
            self.assertEqual(rc, 2, err)
            self.assertIn('max_payload', err)
            self.assertEqual(d.ctl_json('stats')['requests']['submitted'], 0)

    def test_overload_is_reported_not_lost(self):
        """More in flight than the queue holds: the excess is refused with
        E_BUSY, every request is answered once, and the counters agree."""
        with Daemon({'queue_entries': 8, 'workers': 1}) as d:
            rc, b, err = self.bench(d, '-c', '64', '--connections', '8', '-n', '3000',
                                    '-s', 'encrypt', '--overload')
            self.assertEqual(b['requests'], 3000)
            self.assertEqual(b['failures'], b['busy'], err)     # no other kind of failure
            self.assertEqual(rc, 1 if b['busy'] else 0, err)
            s = d.ctl_json('stats')
            done = 3000 - b['busy']
            self.assertEqual(s['requests']['submitted'], done)
            self.assertEqual(s['requests']['completed'], done)
            self.assertEqual(s['requests']['busy'], b['busy'])
            self.assertEqual(s['requests']['rejected'], b['busy'])
            self.assert_drained(s)


if __name__ == '__main__':
    unittest.main()
