# SPDX-License-Identifier: MIT
"""The metrics listener (metrics_listen): GET /metrics parsed by a real
Prometheus text parser (Debian's python3-prometheus-client), values that
move with load, hostile HTTP, the connection limit, socket activation and
hyperampctl stats --format openmetrics."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

import harness
from harness import Daemon, run_ctl, run_daemon_cmd, scaled, wait_until
from test_v1 import Rig

ZCLIENT = os.environ.get('ZCLIENT') or os.path.join(harness.BUILD, 'tests', 'zone', 'zclient')


def samples(text):
    """{(name, frozenset(labels)): value} from the exposition text; the
    parser raises on anything that is not the text format."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, 'sample twice: %r' % (key,)
            out[key] = s.value
    return out


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(smp, name, **labels):
    return smp[(name, frozenset(labels.items()))]


def http_get(addr, path='/metrics', method='GET', headers=None):
    host, port = addr.rsplit(':', 1)
    c = http.client.HTTPConnection(host.strip('[]'), int(port), timeout=scaled(10))
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        c.close()


def unix_connector(path):
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(scaled(10))
        s.connect(path)
        return s
    return connect


def raw_exchange(connect, data):
    """Send data on a new connection; everything the listener answers
    until it closes the connection (HTTP/1.0, an error, or a 503)."""
    s = connect()
    try:
        s.sendall(data)
        buf = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return buf.decode('latin-1')
            buf += chunk
    finally:
        s.close()


class MetricsTest(unittest.TestCase):

    def tcp(self, d):
        addr = d.stats()['metrics']['listen']
        host, port = addr.rsplit(':', 1)

        def connect():
            s = socket.create_connection((host.strip('[]'), int(port)), timeout=scaled(10))
            return s
        return addr, connect

    def test_values_move_with_load(self):
        with Daemon({'metrics_listen': '127.0.0.1:0', 'workers': 2}) as d:
            addr, _ = self.tcp(d)
            st, hdrs, text = http_get(addr)
            self.assertEqual(st, 200)
            self.assertTrue(hdrs['Content-Type'].startswith('text/plain; version=0.0.4'))
            before = samples(text)
            fams = families(text)
            self.assertEqual(fams['hyperamp_requests'].type, 'counter')
            self.assertEqual(fams['hyperamp_request_duration_seconds'].type, 'histogram')
            self.assertEqual(fams['hyperamp_queue_depth'].type, 'gauge')
            self.assertEqual(value(before, 'hyperamp_build_info', version=d.stats()['version']), 1)
            self.assertEqual(value(before, 'hyperamp_queue_capacity'), 255)
            self.assertEqual(value(before, 'hyperamp_zone_state', source='zone-0', kind='shm',
                                   state='free'), 1)
            self.assertEqual(value(before, 'hyperamp_zone_state', source='zone-0', kind='shm',
                                   state='attached'), 0)

            n = 25
            with d.client() as c:
                for i in range(n):
                    rep, _ = c.submit('encrypt', b'x' * (i + 1))
                    self.assertIn('result', rep)
            p = subprocess.run([*harness.EXE_WRAPPER, ZCLIENT, d.socket_path, 'race', '1', '7'],
                               capture_output=True, text=True, timeout=scaled(60))
            self.assertEqual(p.returncode, 0, p.stderr)
            d.wait_idle()
            # A zone request is answered (the worker publishes it) before
            # the loop counts it completed: the client may have seen all 7
            # and left first.  Wait for the count in --json stats, so that
            # the one scrape below sees it.
            zone0 = value(before, 'hyperamp_source_requests_completed_total', source='zone-0',
                          kind='shm')
            wait_until(lambda: [z for z in d.stats()['sources'] if z['name'] == 'zone-0'][0]
                       ['completed'] >= zone0 + 7, what='the 7 zone requests counted')
            st, _, text = http_get(addr)
            after = samples(text)
            enc = dict(service='encrypt', source='socket')

            def delta(name, **labels):
                return value(after, name, **labels) - value(before, name, **labels)
            self.assertEqual(delta('hyperamp_requests_total', result='success', **enc), n)
            self.assertEqual(delta('hyperamp_requests_total', result='failure', **enc), 0)
            self.assertEqual(delta('hyperamp_request_duration_seconds_count', **enc), n)
            self.assertGreater(delta('hyperamp_request_duration_seconds_sum', **enc), 0)
            self.assertEqual(value(after, 'hyperamp_request_duration_seconds_bucket', le='+Inf',
                                   **enc),
                             value(after, 'hyperamp_request_duration_seconds_count', **enc))
            buckets = sorted((float(dict(k[1])['le']), v) for k, v in after.items()
                             if k[0] == 'hyperamp_request_duration_seconds_bucket'
                             and dict(k[1]).get('service') == 'encrypt'
                             and dict(k[1]).get('source') == 'socket')
            self.assertTrue(all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])))
            self.assertEqual(delta('hyperamp_source_requests_submitted_total', source='socket',
                                   kind='socket'), n)
            self.assertEqual(delta('hyperamp_source_requests_completed_total', source='zone-0',
                                   kind='shm'), 7)
            self.assertGreater(value(after, 'hyperamp_uptime_seconds'),
                               value(before, 'hyperamp_uptime_seconds'))
            self.assertEqual(delta('hyperamp_metrics_requests_total'), 1)
            # The same declarations feed --json stats.
            js = d.stats()
            self.assertEqual(js['requests']['submitted'],
                             value(after, 'hyperamp_requests_submitted_total'))
            self.assertEqual(js['metrics']['requests'], 2)

            # hyperampctl prints the same text, for the textfile collector.
            rc, out, err = d.ctl('stats', '--format', 'openmetrics')
            self.assertEqual(rc, 0, err)
            ctl = samples(out.decode())
            self.assertEqual(set(k for k in ctl if 'uptime' not in k[0]),
                             set(k for k in after if 'uptime' not in k[0]))
            self.assertEqual(value(ctl, 'hyperamp_requests_total', result='success', **enc),
                             value(after, 'hyperamp_requests_total', result='success', **enc))
            rc, out, err = d.ctl('stats', '--format', 'yaml')
            self.assertEqual(rc, 2)
            self.assertIn('--format', err)

    def test_every_source_counted(self):
        """hyperamp_requests_total and the latency histogram have a row per
        service and source: zone and v1 requests show, not socket ones only."""
        tmp = tempfile.mkdtemp(prefix='hyperamp-metrics-')
        self.addCleanup(shutil.rmtree, tmp, True)
        rig = Rig(tmp)
        with rig.daemon(metrics_listen='127.0.0.1:0') as d:
            addr, _ = self.tcp(d)

            def total(smp, name, source):
                return sum(v for (n, l), v in smp.items()
                           if n == name and dict(l).get('source') == source)

            def scrape():
                st, _, text = http_get(addr)
                self.assertEqual(st, 200)
                return samples(text)
            before = scrape()
            p = subprocess.run([*harness.EXE_WRAPPER, ZCLIENT, d.socket_path, 'race', '1', '7'],
                               capture_output=True, text=True, timeout=scaled(60))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(rig.send(1, 'hello', init=True)['result'], 'SUCCESS')
            # A zone or v1 client may see its answer just before it is counted.
            after = wait_until(lambda: (lambda s: s if total(s, 'hyperamp_requests_total', 'npu')
                                        - total(before, 'hyperamp_requests_total', 'npu') >= 1
                                        and total(s, 'hyperamp_requests_total', 'zone-0')
                                        - total(before, 'hyperamp_requests_total', 'zone-0') >= 7
                                        else None)(scrape()), what='zone and v1 counted')
            for src, n in (('zone-0', 7), ('npu', 1)):
                for name in ('hyperamp_requests_total', 'hyperamp_request_duration_seconds_count'):
                    self.assertEqual(total(after, name, src) - total(before, name, src), n,
                                     (name, src))
            self.assertEqual(value(after, 'hyperamp_requests_total', service='encrypt',
                                   source='npu', result='success'), 1)
            self.assertEqual(total(after, 'hyperamp_requests_total', 'socket'),
                             total(before, 'hyperamp_requests_total', 'socket'))
            # --json stats: the service rows total every source.
            js = d.stats()
            self.assertEqual(sum(s['requests'] for s in js['services']),
                             sum(v for (n, _), v in after.items()
                                 if n == 'hyperamp_requests_total'))

    def test_stats_keys_unchanged(self):
        """The counters declared once give --json stats exactly the keys it
        had before (tests, docs/protocol.md and scripts read them)."""
        with Daemon({'zone_clients': 1}) as d:
            o = d.ctl_json('stats')
            self.assertEqual(set(o), {'version', 'pid', 'uptime_s', 'queue', 'pool', 'requests',
                                      'services', 'sources', 'executors', 'workers',
                                      'connections', 'loop'})
            # socket_poll_us: issue 14's polling loop
            self.assertEqual(set(o['loop']), {'socket_polls', 'socket_poll_found',
                                              'socket_poll_seconds'})
            self.assertEqual(set(o['queue']), {
                'shm_name', 'capacity', 'depth', 'in_flight', 'free', 'bad_index', 'cycles',
                'bad_state', 'repairs', 'sigbus_repaired', 'sigbus_lost'})
            self.assertEqual(set(o['pool']), {'size', 'bytes_in_use', 'buffers_in_use',
                                              'largest_free', 'alloc_failures'})
            self.assertEqual(set(o['requests']), {'submitted', 'completed', 'failed', 'busy',
                                                  'tampered', 'rejected', 'orphaned'})
            # loop_jobs: issue 14's hand-off to the loop
            self.assertEqual(set(o['workers']), {'count', 'loop_jobs', 'jobs'})
            self.assertEqual(set(o['connections']), {
                'current', 'total', 'rejected', 'max', 'protocol_errors', 'timeouts', 'denied',
                'max_per_uid', 'rejected_per_uid', 'output_bytes', 'output_bytes_max',
                'output_budget', 'output_paused', 'budget_pauses'})
            for svc in o['services']:
                self.assertEqual(set(svc), {'id', 'name', 'requests', 'failed', 'latency_us'})
                self.assertEqual(set(svc['latency_us']), {'p50', 'p99', 'max'})
            (local,) = o['executors']
            self.assertEqual(local, {'name': 'local', 'kind': 'local', 'state': 'ready',
                                     'threads': o['workers']['count'],
                                     'capacity': local['capacity'], 'in_flight': 0,
                                     'queued': 0, 'completed': 0, 'refused': 0})
            sock, zone = o['sources']
            self.assertEqual(sock, {'name': 'socket', 'kind': 'socket', 'submitted': 0,
                                    'completed': 0, 'failed': 0})
            self.assertEqual(set(zone), {
                'name', 'kind', 'state', 'pid', 'grants', 'submitted', 'completed',
                'run_by_poller', 'failed', 'in_flight', 'in_pool', 'wakeups', 'bad_index',
                'bad_state', 'bad_ring', 'dispatch_failed', 'bad_range', 'abandoned',
                'teardown_deferred', 'resumed', 'resume_refused', 'bad_journal', 'recovered'})
            self.assertEqual(set(zone['recovered']), {'requeued', 'republished',
                                                      'already_published'})
            self.assertEqual((zone['name'], zone['kind'], zone['state']), ('zone-0', 'shm', 'free'))
            # The format param: json is the default, openmetrics the text, else E_INVALID.
            with d.client() as c:
                self.assertEqual(set(c.result('stats', {'format': 'json'})[0]), set(o))
                r = c.result('stats', {'format': 'openmetrics'})[0]
                self.assertEqual(r['format'], 'openmetrics')
                self.assertIn(('hyperamp_queue_capacity', frozenset()), samples(r['text']))
                for bad in ('xml', 5, None, ['openmetrics']):
                    rep, _ = c.call('stats', {'format': bad})
                    self.assertEqual(rep['error']['code'], 'E_INVALID', bad)
                c.ping()        # the connection still serves

    def test_hostile_http(self):
        with Daemon({'metrics_listen': '127.0.0.1:0', 'metrics_max_connections': 2}) as d:
            addr, connect = self.tcp(d)
            st, hdrs, _ = http_get(addr, method='POST')
            self.assertEqual(st, 405)
            self.assertEqual(hdrs['Allow'], 'GET, HEAD')
            st, _, _ = http_get(addr, method='DELETE')
            self.assertEqual(st, 405)
            st, _, body = http_get(addr, path='/../etc/passwd')
            self.assertEqual(st, 404)
            st, _, _ = http_get(addr, path='/metrics/x')
            self.assertEqual(st, 404)
            st, _, body = http_get(addr, method='HEAD')
            self.assertEqual((st, body), (200, ''))
            st, _, _ = http_get(addr, path='/metrics?name[]=x')
            self.assertEqual(st, 200)
            # Headers past the limit, and a request line that is not HTTP.
            reply = raw_exchange(connect, b'GET /metrics HTTP/1.1\r\nX-Big: '
                                 + b'a' * 20000 + b'\r\n\r\n')
            self.assertRegex(reply, r'^HTTP/1\.1 4\d\d ')
            reply = raw_exchange(connect, b'\x16\x03\x01garbage\r\n\r\n')
            self.assertRegex(reply, r'^HTTP/1\.1 400 ')
            m = d.stats()['metrics']
            self.assertEqual(m['bad_method'], 2)
            self.assertEqual(m['not_found'], 2)
            self.assertEqual(m['malformed'], 2)

            # Two connections held open: a third is answered 503, counted.
            held = [connect(), connect()]
            harness.wait_until(lambda: d.stats()['metrics']['current'] == 2, 10,
                               'two metrics connections')
            reply = raw_exchange(connect, b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
            self.assertRegex(reply, r'^HTTP/1\.1 503 ')
            self.assertEqual(d.stats()['metrics']['rejected'], 1)
            for s in held:
                s.close()
            harness.wait_until(lambda: d.stats()['metrics']['current'] == 0, 10,
                               'the held connections to close')
            st, _, text = http_get(addr)
            self.assertEqual(st, 200)
            smp = samples(text)
            self.assertEqual(value(smp, 'hyperamp_metrics_connections_rejected_total'), 1)
            # Many connections at once: none lost, each answered 200 or 503.
            socks = [connect() for _ in range(8)]
            for s in socks:
                s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
            codes = []
            for s in socks:
                buf = b''
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                s.close()
                codes.append(buf[9:12])
            self.assertTrue(set(codes) <= {b'200', b'503'}, codes)
            self.assertIn(b'200', codes)
            # The control socket was served all along.
            rc, out, err = d.ctl('ping')
            self.assertEqual(rc, 0, err)

    def test_unix_listener(self):
        tmp = tempfile.mkdtemp(prefix='hyperamp-met-')
        self.addCleanup(shutil.rmtree, tmp)
        path = os.path.join(tmp, 'metrics.sock')
        with Daemon({'metrics_listen': 'unix:' + path}) as d:
            self.assertEqual(d.stats()['metrics']['listen'], 'unix:' + path)
            reply = raw_exchange(unix_connector(path), b'GET /metrics HTTP/1.0\r\n\r\n')
            head, _, body = reply.partition('\r\n\r\n')
            self.assertRegex(head, r'^HTTP/1\.[01] 200 ')
            self.assertIn(('hyperamp_metrics_requests_total', frozenset()), samples(body))
        self.assertFalse(os.path.exists(path))

    def test_config_checked(self):
        tmp = tempfile.mkdtemp(prefix='hyperamp-met-')
        self.addCleanup(shutil.rmtree, tmp)
        for bad in ['localhost:9100', '127.0.0.1', '127.0.0.1:65536', '127.0.0.1:-1',
                    '::1:9100', '[::1]9100', '[nope]:1', 'unix:relative', 'unix:/' + 'a' * 120,
                    '1.2.3.4:80x', 7]:
            cfg = os.path.join(tmp, 'c.json')
            with open(cfg, 'w') as f:
                json.dump({'metrics_listen': bad}, f)
            rc, out, err = run_daemon_cmd(['--check-config', '--config', cfg])
            self.assertNotEqual(rc, 0, bad)
            self.assertIn('metrics_listen', err, bad)
        for good in ['', '127.0.0.1:9100', '[::1]:9100', 'unix:/run/hyperamp/metrics.sock']:
            with open(cfg, 'w') as f:
                json.dump({'metrics_listen': good}, f)
            rc, out, err = run_daemon_cmd(['--check-config', '--config', cfg])
            self.assertEqual(rc, 0, err)
            self.assertEqual(json.loads(out)['metrics_listen'], good)
        with Daemon() as d:
            self.assertNotIn('metrics', d.stats())

    def test_socket_activated(self):
        sa = shutil.which('systemd-socket-activate')
        if not sa:
            self.skipTest('systemd-socket-activate not installed')
        tmp = tempfile.mkdtemp(prefix='hyperamp-met-')
        self.addCleanup(shutil.rmtree, tmp)
        ctl_sock = os.path.join(tmp, 'ctl.sock')
        met_sock = os.path.join(tmp, 'met.sock')
        shm = harness.unique_shm_name()
        with open(os.path.join(tmp, 'c.json'), 'w') as f:
            json.dump({'shm_name': shm}, f)
        log = open(os.path.join(tmp, 'log'), 'wb')
        self.addCleanup(log.close)
        p = subprocess.Popen([sa, '-l', ctl_sock, '-l', met_sock, '--fdname=control:metrics',
                              *harness.WRAPPER, harness.HYPERAMPD,
                              '--config', os.path.join(tmp, 'c.json'),
                              '--socket', os.path.join(tmp, 'ignored.sock')],
                             stdout=log, stderr=log)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        deadline = time.monotonic() + scaled(10)

        def connect_when_listening():
            # The activator binds, then listens, with no readiness signal:
            # a connect between the two is refused and reaches nobody.
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(scaled(10))
                try:
                    s.connect(met_sock)
                    return s
                except (FileNotFoundError, ConnectionRefusedError):
                    s.close()
                    self.assertLess(time.monotonic(), deadline, 'socket never listened')
                    time.sleep(0.005)   # back-off, bounded by the deadline
        # The first scrape starts the daemon, which serves it.
        reply = raw_exchange(connect_when_listening, b'GET /metrics HTTP/1.0\r\n\r\n')
        head, _, body = reply.partition('\r\n\r\n')
        self.assertRegex(head, r'^HTTP/1\.[01] 200 ')
        self.assertEqual(value(samples(body), 'hyperamp_metrics_requests_total'), 1)
        rc, out, err = run_ctl(['ping'], socket_path=ctl_sock)
        self.assertEqual(rc, 0, err)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(timeout=scaled(15)), 0)
        with open(os.path.join(tmp, 'log'), 'rb') as f:
            text = f.read().decode(errors='replace')
        self.assertIn("using the listening socket passed by systemd", text)
        self.assertTrue(os.path.exists(met_sock))       # systemd's, not unlinked


if __name__ == '__main__':
    unittest.main()
