# SPDX-License-Identifier: MIT
"""HyperAMP v2 remote zones: hyperampd as the frontend of a seL4 zone's v2
rings (docs/gateway.md), against sel4v2, a simulated seL4 peer written from
the protocol description (tests/peers/sel4v2.c), on a regular file standing
in for the physical window.  Requests come from every source: the control
socket (hyperampctl and a persistent client), a zone lease (bench/lease-v2)
and a v1 channel (tests/v1/v1client)."""
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import unittest

import harness
from harness import Daemon, scaled, wait_until
import test_gateway
import test_v1

TESTS = os.path.join(harness.BUILD, 'tests')
SEL4V2 = os.environ.get('SEL4V2') or os.path.join(TESTS, 'sel4v2')
LEASE_V2 = os.environ.get('LEASE_V2') or os.path.join(TESTS, 'lease-v2')

ADDRESS = 0xDE000000                    # Phytium Pi: page A, page B, data
BASE = 0xDDFFF000                       # the file starts one page below
WINDOW = 0x402000


def xor5a(data):
    return bytes(b ^ 0x5A for b in data)


def sub(c, service, data):
    """One submit on a RawClient: (status, result bytes)."""
    rep, out = c.submit(service, data)
    return rep.get('result', {}).get('status') or rep.get('error', {}).get('code'), out


class Peer:
    """sel4v2 on the window file; waits for its lines, never sleeps."""

    def __init__(self, mem, *opts):
        self.mem = mem
        self.proc = subprocess.Popen(
            [*harness.EXE_WRAPPER, SEL4V2, '--mem', mem, '--offset', hex(ADDRESS - BASE),
             *opts], stdout=subprocess.PIPE)
        self.out = b''
        self.wait_line('sel4v2 ready')

    def wait_line(self, text, timeout=20):
        end = harness.time.monotonic() + scaled(timeout)
        while text.encode() not in self.out:
            left = end - harness.time.monotonic()
            r, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not r:
                raise AssertionError('sel4v2 did not print %r; output so far: %r'
                                     % (text, self.out))
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError('sel4v2 exited before %r: %r' % (text, self.out))
            self.out += chunk

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        """SIGTERM; returns the summary counts."""
        self.proc.send_signal(signal.SIGTERM)
        self.wait_line('sel4v2 served')
        self.proc.wait(timeout=scaled(10))
        self.proc.stdout.close()
        line = self.out.decode().split('sel4v2 served')[1].split('\n')[0].split()
        return {'served': int(line[0]), 'replied': int(line[2]), 'silent': int(line[4])}


class V2Test(unittest.TestCase):
    services = [1, 2, 3, 4, 5, 7, 8, 9]

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='hyperamp-v2-')
        self.mem = os.path.join(self.tmp, 'window.mem')
        with open(self.mem, 'wb') as f:
            f.truncate(ADDRESS - BASE + WINDOW)
        self.peers = []

    def tearDown(self):
        for p in self.peers:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
                p.proc.stdout.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def peer(self, *opts):
        p = Peer(self.mem, *opts)
        self.peers.append(p)
        return p

    def zone(self, **kw):
        z = {'name': 'sel4', 'protocol': 'v2', 'address': hex(ADDRESS), 'base': hex(BASE),
             'mem': self.mem, 'services': self.services, 'timeout_ms': 2000}
        z.update(kw)
        return z

    def daemon(self, zone=None, **config):
        cfg = {'workers': 2, 'remote_zones': [zone or self.zone()]}
        cfg.update(config)
        return Daemon(cfg)

    def executor(self, d, name='sel4'):
        for x in d.stats()['executors']:
            if x['name'] == name:
                return x
        raise AssertionError('no executor %r in stats' % name)


class ServiceTest(V2Test):
    def test_encrypt_hello(self):
        self.peer()
        with self.daemon() as d:
            rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello')
            self.assertEqual((rc, out.hex(' ')), (0, '32 3f 36 36 35'), err)
            rc, out, err = d.ctl('submit', '-s', 'decrypt', input=out)
            self.assertEqual((rc, out), (0, b'hello'), err)
            # Not routed there: still the local service.
            rc, out, _ = d.ctl('submit', '-s', 'echo', 'local')
            self.assertEqual((rc, out), (0, b'local'))
            rc, out, _ = d.ctl('services')
            self.assertRegex(out.decode(), r'encrypt\s+sel4')
            # The zone's counters reach /metrics (the same families as a v1 zone's).
            rc, out, _ = d.ctl('stats', '--format', 'openmetrics')
            self.assertEqual(rc, 0)
            self.assertIn(b'hyperamp_remote_succeeded_total{executor="sel4",kind="v2"} 2', out)
            self.assertIn(b'hyperamp_remote_round_trip_seconds_count{executor="sel4"', out)
            self.assertIn(b'hyperamp_remote_v2_peer_lock_held{executor="sel4",kind="v2"} 0', out)

    def test_slot_bulk_and_limits(self):
        self.peer()
        with self.daemon(max_payload=4 << 20) as d, d.client() as c:
            for n in (1, 4088, 4089, 100000, 2 << 20):
                data = bytes((i * 13 + n) & 0xFF for i in range(n))
                self.assertEqual(sub(c, 1, data), ('SUCCESS', xor5a(data)), n)
            status, _ = sub(c, 1, b'x' * ((2 << 20) + 1))
            self.assertEqual(status, 'FAIL')
            x = self.executor(d)
            self.assertEqual((x['bulk'], x['too_big'], x['succeeded']), (3, 1, 5))

    def test_ids_the_peer_never_answers_are_refused(self):
        peer = self.peer()
        with self.daemon() as d, d.client() as c:
            # 9 is routed to the zone, but seL4 never answers it: NOT_EXITS,
            # and it is never sent (the rings stay in step).
            self.assertEqual(sub(c, 9, b'abc')[0], 'NOT_EXITS')
            self.assertEqual(sub(c, 1, b'abc'), ('SUCCESS', xor5a(b'abc')))
            self.assertEqual(self.executor(d)['not_answered'], 1)
        self.assertEqual(peer.stop(), {'served': 1, 'replied': 1, 'silent': 0})

    def test_signed_and_json_services(self):
        self.peer()
        json_doc = b'{"ts":1,"img":"x","lvl":2,"scr":3,"cnt":4,"tgt":5}'
        payload = b'mission data'
        # The magic is the u32 0x53494731 ("SIG1" read big-endian).
        signed = ((0x53494731).to_bytes(4, 'little') + (70).to_bytes(2, 'little') + b'\0\0'
                  + len(payload).to_bytes(4, 'little') + b'\x30' + bytes(71) + payload)
        with self.daemon() as d, d.client() as c:
            self.assertEqual(sub(c, 3, signed), ('SUCCESS', signed))
            self.assertEqual(sub(c, 4, signed), ('SUCCESS', signed[:84] + xor5a(payload)))
            self.assertEqual(sub(c, 5, b'XXXX' + signed[4:])[0], 'FAIL')
            self.assertEqual(sub(c, 7, json_doc), ('SUCCESS', xor5a(json_doc)))
            self.assertEqual(sub(c, 8, xor5a(json_doc)), ('SUCCESS', json_doc))
            self.assertEqual(sub(c, 7, b'{"ts":1}')[0], 'FAIL')
            self.assertEqual(self.executor(d)['peer_errors'], 2)

    def test_creator_role(self):
        with self.daemon(self.zone(role='creator')) as d:
            self.peer('--connector')
            rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello')
            self.assertEqual((rc, out), (0, xor5a(b'hello')), err)

    def test_no_peer_yet(self):
        with self.daemon() as d:
            self.assertEqual(self.executor(d)['state'], 'down')
            rc, _, _ = d.ctl('submit', '-s', 'encrypt', 'hello')
            self.assertEqual(rc, 1)
            # The peer comes up later: served from then on.
            self.peer()
            rc, out, _ = d.ctl('submit', '-s', 'encrypt', 'hello')
            self.assertEqual((rc, out), (0, xor5a(b'hello')))
            self.assertEqual(self.executor(d)['state'], 'ready')


class SequentialTest(V2Test):
    """10,000 sequential requests from each source kind, every one checked."""

    def test_socket_lease_and_v1_channel(self):
        self.peer('--spin')
        rig = test_v1.Rig(self.tmp)
        # max_pending 1: a sequential client never finds the zone full,
        # however far the loop lags behind the completions (the executor
        # counts a job out of its queue as it starts it; before, the loop
        # did, and the lease client failed by request 12).
        with self.daemon(self.zone(max_pending=1), v1_channels=[rig.channel()]) as d:
            with d.client() as c:
                for i in range(10000):
                    data = i.to_bytes(4, 'little') + bytes(((i + k) & 0xFF) for k in range(i % 61))
                    self.assertEqual(sub(c, 1 + i % 2, data), ('SUCCESS', xor5a(data)), i)
            p = subprocess.run([*harness.EXE_WRAPPER, LEASE_V2, '--socket', d.socket_path,
                                '-n', '10000'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=scaled(300))
            self.assertEqual(p.returncode, 0, p.stderr.decode())
            self.assertIn(b'lease-v2 n=10000', p.stdout)
            # The original client's v1 channel, routed to the v2 zone too.
            r = rig.send(1, 'hello', init=True)
            self.assertEqual((r['result'], bytes.fromhex(r['data'])),
                             ('SUCCESS', xor5a(b'hello')))
            for i in range(20):
                text = 'v1 request %d' % i
                r = rig.send(2, text)
                self.assertEqual(bytes.fromhex(r['data']), xor5a(text.encode()))
            x = self.executor(d)
            self.assertEqual((x['succeeded'], x['failures'], x['stale_replies']), (20021, 0, 0))


class FaultTest(V2Test):
    def test_peer_reboots_mid_request(self):
        peer = self.peer('--fault', 'reboot', '--after', '3')
        with self.daemon(self.zone(timeout_ms=int(scaled(20000)))) as d, d.client() as c:
            for _ in range(2):
                self.assertEqual(sub(c, 1, b'abcd'), ('SUCCESS', xor5a(b'abcd')))
            # Lost in the reboot: a clear failure, long before the timeout.
            self.assertEqual(sub(c, 1, b'abcd')[0], 'FAIL')
            peer.wait_line('sel4v2 recreated')
            self.assertEqual(sub(c, 1, b'abcd'), ('SUCCESS', xor5a(b'abcd')))
            x = self.executor(d)
            self.assertEqual((x['peer_restarts'], x['timeouts']), (1, 0))
            self.assertIn('re-created the rings', d.log())

    def test_reboot_seen_half_done(self):
        """The daemon reads the rings between the first store of the peer's
        re-creation (ring A's producer index back to 0) and the rest: that
        is a peer restart, not garbage, and nothing on ring A is taken."""
        peer = self.peer('--fault', 'reboot', '--after', '3', '--stall')
        with self.daemon(self.zone(timeout_ms=int(scaled(20000)))) as d, d.client() as c:
            for _ in range(2):
                self.assertEqual(sub(c, 1, b'abcd'), ('SUCCESS', xor5a(b'abcd')))
            c.send(harness.request('submit', id=3, params={'service': 1}), b'abcd')
            peer.wait_line('sel4v2 rebooting')
            wait_until(lambda: 'mid-way through' in d.log() or self.executor(d)['faults'],
                       10, 'the daemon to look at the half re-created rings')
            peer.signal(signal.SIGUSR2)
            peer.wait_line('sel4v2 recreated')
            rep, _ = c.recv_frame()
            self.assertEqual(rep['result']['status'], 'FAIL')
            x = self.executor(d)
            self.assertEqual((x['peer_restarts'], x['faults'], x['stale_replies'],
                              x['timeouts']), (1, 0, 0, 0))
            self.assertEqual(sub(c, 1, b'wxyz'), ('SUCCESS', xor5a(b'wxyz')))

    def test_reply_never_comes(self):
        self.peer('--fault', 'silent', '--after', '2')
        with self.daemon(self.zone(timeout_ms=300)) as d:
            rc, _, _ = d.ctl('submit', '-s', 'encrypt', 'a')
            self.assertEqual(rc, 0)
            rc, _, err = d.ctl('submit', '-s', 'encrypt', 'b')
            self.assertEqual(rc, 3, err)            # E_TIMEOUT
            self.assertEqual(self.executor(d)['timeouts'], 1)
            # The daemon itself still serves.
            self.assertEqual(d.ctl('submit', '-s', 'echo', 'ok')[:2], (0, b'ok'))

    def test_garbage_indices(self):
        peer = self.peer('--fault', 'garbage', '--after', '2')
        with self.daemon() as d, d.client() as c:
            self.assertEqual(sub(c, 1, b'abcd')[0], 'SUCCESS')
            self.assertEqual(sub(c, 1, b'abcd')[0], 'FAIL')
            x = self.executor(d)
            self.assertEqual((x['state'], x['faults'], x['timeouts']), ('fault', 1, 0))
            peer.signal(signal.SIGUSR1)             # the peer re-creates its rings
            peer.wait_line('sel4v2 recreated')
            self.assertEqual(sub(c, 1, b'abcd'), ('SUCCESS', xor5a(b'abcd')))
            self.assertEqual(self.executor(d)['state'], 'ready')

    def test_stuck_lock(self):
        self.peer('--fault', 'lock')
        with self.daemon() as d, d.client() as c:
            for i in range(50):
                self.assertEqual(sub(c, 2, b'lock %d' % i), ('SUCCESS', xor5a(b'lock %d' % i)))
            self.assertTrue(self.executor(d)['peer_lock_held'])

    def test_sigkill_with_a_request_in_flight(self):
        peer = self.peer('--fault', 'hold', '--after', '2')
        zone = self.zone(timeout_ms=int(scaled(10000)))
        with self.daemon(zone) as d:
            with d.client() as c:
                self.assertEqual(sub(c, 1, b'abcd')[0], 'SUCCESS')
                c.send(harness.request('submit', id=7, params={'service': 1}), b'abcd')
                peer.wait_line('sel4v2 holding')        # in flight at the peer
                d.check_clean_exit = False
                d.kill()
                with self.assertRaises(harness.Closed):
                    c.recv_frame()                      # never answered by the dead one
        peer.signal(signal.SIGUSR2)                     # its late reply lands now...
        with self.daemon(zone) as d2, d2.client() as c:
            # ...and is never taken for the new daemon's first request.
            self.assertEqual(sub(c, 1, b'wxyz'), ('SUCCESS', xor5a(b'wxyz')))
            peer.wait_line('sel4v2 released')
            for i in range(20):
                data = b'n%03d' % i
                self.assertEqual(sub(c, 1, data), ('SUCCESS', xor5a(data)))
            x = self.executor(d2)
            self.assertEqual((x['succeeded'], x['failures']), (21, 0))


class ReloadTest(V2Test):
    """Issue 12: a reload adds and removes a v2 zone, under a load of
    submits from a client of their own (test_gateway.Load)."""

    HELLO = bytes.fromhex('323f363635')         # the peer's XOR 0x5A
    LOCAL = bytes.fromhex('164e2c2f12')         # the local cipher

    def reload(self, d, zones):
        with open(d.config_path, 'w') as f:
            json.dump(dict(d.config, remote_zones=zones), f)
        rc, out, err = d.ctl('reload')
        self.assertEqual(rc, 0, err)

    def runs_on(self, d, sid):
        return {s['id']: s for s in d.ctl_json('services')['services']}[sid]['runs_on']

    def names(self, d):
        return [x['name'] for x in d.stats()['executors']]

    def test_add_then_remove(self):
        self.peer()
        load = {1: {b'hello': {self.HELLO, self.LOCAL}}, 66: {b'echo': {b'echo'}}}
        with Daemon({'workers': 2, 'remote_zones': []}) as d, test_gateway.Load(d, load):
            self.assertEqual(d.ctl('submit', '-s', 'encrypt', 'hello')[:2], (0, self.LOCAL))
            self.reload(d, [self.zone()])
            self.assertEqual(self.runs_on(d, 1), 'sel4')
            rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello')
            self.assertEqual((rc, out.hex(' ')), (0, '32 3f 36 36 35'), err)
            wait_until(lambda: self.executor(d)['succeeded'] >= 10, 30,
                       'the load to reach the zone')
            self.reload(d, [])
            self.assertEqual(self.runs_on(d, 1), 'local')
            self.assertEqual(d.ctl('submit', '-s', 'encrypt', 'hello')[:2], (0, self.LOCAL))
            # An id only the zone served: NOT_EXITS now.
            self.assertEqual(d.ctl('submit', '-s', '9', 'x')[0], 4)
            wait_until(lambda: 'sel4' not in self.names(d), 30, 'the zone to retire')
            self.reload(d, [self.zone()])
            self.assertEqual(d.ctl('submit', '-s', 'encrypt', 'hello')[:2], (0, self.HELLO))

    def test_remove_with_a_request_at_the_peer(self):
        """The request the peer holds is answered by the peer, once; those
        queued behind it run locally; the zone ends after it."""
        peer = self.peer('--fault', 'hold', '--after', '1')
        zone = self.zone(services=[1], timeout_ms=int(scaled(20000)))
        with self.daemon(zone) as d, d.client(timeout=scaled(60)) as c:
            c.send(harness.request('submit', id=0, params={'service': 1}), b'hello')
            peer.wait_line('sel4v2 holding')
            for i in range(1, 4):
                c.send(harness.request('submit', id=i, params={'service': 1}), b'hello')
            wait_until(lambda: self.executor(d)['queued'] == 3, 10, 'three queued')
            with test_gateway.Load(d, {66: {b'echo': {b'echo'}}}):
                self.reload(d, [])
                replies = {}
                for _ in range(3):
                    rep, data = c.recv_frame()
                    replies[rep['id']] = (rep['result']['status'], data)
                self.assertEqual(replies, {i: ('SUCCESS', self.LOCAL) for i in (1, 2, 3)})
                self.assertEqual([x['state'] for x in d.stats()['executors']
                                  if x['name'] == 'sel4'], ['retiring'])
                peer.signal(signal.SIGUSR2)
                rep, data = c.recv_frame()
                self.assertEqual((rep['id'], rep['result']['status'], data),
                                 (0, 'SUCCESS', self.HELLO))
                wait_until(lambda: 'sel4' not in self.names(d), 30, 'the zone to retire')
            self.assertIn("executor 'sel4' (id 1) retired: 1 jobs completed", d.log())


class RawRings:
    """The seL4 side of a window by hand: produce on ring A, consume ring B
    (as a hostile or buggy frontend would)."""

    def __init__(self, mem):
        self.fd = os.open(mem, os.O_RDWR)
        self.off = ADDRESS - BASE

    def __del__(self):
        os.close(self.fd)

    def u16(self, page, field, value=None):
        at = self.off + page + field
        if value is None:
            return struct.unpack('<H', os.pread(self.fd, 2, at))[0]
        os.pwrite(self.fd, struct.pack('<H', value), at)

    def send(self, mtype, fsess, payload, raw_len=None):
        h = self.u16(0, 2)
        slot = self.off + 0x2000 + (h + 1) * 4096
        n = len(payload) if raw_len is None else raw_len
        os.pwrite(self.fd, struct.pack('<BBHHH', 1, mtype, fsess, 0, n) + payload, slot)
        self.u16(0, 2, (h + 1) % 256)

    def recv(self):
        """Next reply on ring B: (type, fsess, bsess, payload)."""
        wait_until(lambda: self.u16(0x1000, 2) != self.u16(0x1000, 4), scaled(10), 'a reply')
        t = self.u16(0x1000, 4)
        slot = self.off + 0x2000 + (t + 1) * 4096
        v, mtype, fsess, bsess, n = struct.unpack('<BBHHH', os.pread(self.fd, 8, slot))
        payload = os.pread(self.fd, n, slot + 8)
        self.u16(0x1000, 4, (t + 1) % 256)
        return mtype, fsess, bsess, payload


class BackendTest(V2Test):
    """v2_channels: the seL4 zone as the frontend, hyperampd answering."""

    def daemon_with(self, **config):
        # No status timer to wake the loop by chance: a request must wake
        # it by itself.
        cfg = {'workers': 2, 'status_interval_ms': 3600000}
        cfg.update(config)
        return Daemon(cfg)

    def channel(self, mem, **kw):
        ch = {'name': 'sel4fe', 'address': hex(ADDRESS), 'base': hex(BASE), 'mem': mem,
              'role': 'creator'}
        ch.update(kw)
        return ch

    def frontend(self, mem, n, service, payload, *opts):
        p = subprocess.run([*harness.EXE_WRAPPER, SEL4V2, '--mem', mem, '--offset',
                            hex(ADDRESS - BASE), '--connector', '--frontend', str(n),
                            '--service', str(service), '--payload', payload, *opts],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=scaled(30))
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        return [l for l in p.stdout.decode().splitlines() if l.startswith('reply')]

    def source(self, d, name='sel4fe'):
        for s in d.stats()['sources']:
            if s['name'] == name:
                return s
        raise AssertionError('no source %r' % name)

    def test_local_services_for_the_peer(self):
        enc = harness.expected_result(1, b'hello').hex(' ')
        with self.daemon_with(v2_channels=[self.channel(self.mem)]) as d:
            self.assertEqual(self.frontend(self.mem, 3, 1, 'hello'),
                             ['reply type 3 service 1 status 0 len 5: ' + enc] * 3)
            # As BULK from the original bulk buffer: the result comes back
            # past slot 256, wherever the request was.
            self.assertEqual(self.frontend(self.mem, 2, 1, 'hello', '--bulk'),
                             ['reply bulk service 1 status 1 offset 0x101000 len 5: ' + enc] * 2)
            # No such service: still answered, so the peer's replies stay
            # in order; the result code in backend_sess_id / the status.
            self.assertEqual(self.frontend(self.mem, 1, 9999, 'x'),
                             ['reply type 3 service 9999 status 3 len 0:'])
            self.assertEqual(self.frontend(self.mem, 1, 9999, 'x', '--bulk'),
                             ['reply bulk service 9999 status -3 offset 0x101000 len 0:'])
            s = self.source(d)
            self.assertEqual((s['requests'], s['succeeded'], s['failed'], s['bulk']),
                             (7, 5, 2, 3))
            self.assertEqual(s['state'], 'ready')
            rc, out, _ = d.ctl('stats', '--format', 'openmetrics')
            self.assertEqual(rc, 0)
            self.assertRegex(out.decode(), r'hyperamp_v2chan_requests_total\{source="sel4fe"[^}]*\} 7\n')

    def test_hostile_requests(self):
        """Requests a peer can scribble: each answered FAIL in order,
        counted, nothing read outside the data region."""
        with self.daemon_with(v2_channels=[self.channel(self.mem)]) as d:
            wait_until(lambda: self.source(d)['state'] == 'ready', scaled(10), 'the rings')
            ring = RawRings(self.mem)
            ring.send(0x10, 1, (5000).to_bytes(2, 'little'), raw_len=5000)   # > 4088
            ring.send(0x77, 1, b'abc')                                       # no such type
            ring.send(0x20, 1, struct.pack('<IIII', 0x3FFFFF, 100, 1, 0))    # past the region
            ring.send(0x20, 1, struct.pack('<IIII', 0x10, 100, 1, 0))        # on the slots
            ring.send(0x10, 1, b'hello')
            got = [ring.recv() for _ in range(5)]
            self.assertEqual([(t, status) for t, _, status, _ in got[:2]], [(3, 2), (3, 2)])
            self.assertEqual([struct.unpack('<IIII', p)[3] for _, _, _, p in got[2:4]],
                             [0xFFFFFFFE, 0xFFFFFFFE])
            self.assertEqual(got[4], (3, 1, 0, harness.expected_result(1, b'hello')))
            s = self.source(d)
            self.assertEqual((s['bad_messages'], s['bad_ranges'], s['succeeded']), (2, 2, 1))

    def test_peer_to_remote_zone(self):
        """Any source to any executor: the peer's request on one window runs
        on a v2 remote zone (another simulated seL4 backend) on another."""
        other = os.path.join(self.tmp, 'zone.mem')
        with open(other, 'wb') as f:
            f.truncate(ADDRESS - BASE + WINDOW)
        self.peers.append(Peer(other))
        zone = self.zone(mem=other, services=[1])
        with self.daemon_with(v2_channels=[self.channel(self.mem)], remote_zones=[zone]) as d:
            self.assertEqual(self.frontend(self.mem, 2, 1, 'hello'),
                             ['reply type 3 service 1 status 0 len 5: 32 3f 36 36 35'] * 2)
            self.assertEqual(self.executor(d)['succeeded'], 2)


if __name__ == '__main__':
    unittest.main()
