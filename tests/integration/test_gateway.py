# SPDX-License-Identifier: MIT
"""The v1 gateway (issue 12): hyperampd as the root-zone owner of a remote
service zone's v1 queue, forwarding the routed service ids there.

The remote zone is a simulated peer (tests/peers/v1peer: Linux, FreeRTOS A
and B, seL4 v1, and the faulty ones) on a regular file standing in for
/dev/mem, with a FIFO as the doorbell, as docs/gateway.md describes.  Every
source reaches it: hyperampctl (control socket), a libhyperamp client (zone
lease) and an original v1 client through a v1 channel."""
import glob
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import unittest

import harness
from harness import (Daemon, request, scaled, shm_path, start_expect_failure,
                     unique_shm_name, wait_until)

V1PEER = os.environ.get('V1PEER') or os.path.join(harness.BUILD, 'tests', 'peers', 'v1peer')
V1CLIENT = os.environ.get('V1CLIENT') or os.path.join(harness.BUILD, 'tests', 'integration',
                                                      'v1client')
ZCLIENT = os.environ.get('ZCLIENT') or os.path.join(harness.BUILD, 'tests', 'zone', 'zclient')

# The original's QEMU layout (reference §1.1, §4.1); the file starts at base.
BASE = 0x7E000000
QUEUE = 0x7E400000
MEM_SIZE = 0x7E410000 + 0x1000 - BASE
HEADER = struct.Struct('<IHHHH')        # working_mark, buf_size, empty_h, wait_h, proc_ing_h
MARK_IDLE = 0xBBBBBBBB

XOR5A_HELLO = bytes.fromhex('323f363635')       # FreeRTOS and seL4 encrypt
LINUX_HELLO = bytes.fromhex('164e2c2f12')       # the Linux service's encrypt


class Zone:
    """One remote zone's stand-in hardware: memory file, FIFO, shm_config, peer."""

    def __init__(self, tmp, name='rtos', addr=0x7E000000):
        self.name = name
        self.tmp = tmp
        self.mem = os.path.join(tmp, name + '.mem')
        self.bell = os.path.join(tmp, name + '.bell')
        self.cfg = os.path.join(tmp, name + '.shm_config.json')
        self.peer = None
        with open(self.mem, 'wb') as f:
            f.truncate(MEM_SIZE)
        with open(self.cfg, 'w') as f:
            json.dump({'shm_regions': [
                {'region_flag': 'linux-2-npucore-buf', 'zone0_ram_ipa': '0x7e000000',
                 'zonex_ram_ipa': '0x7e000000', 'mem_size': '0x400000'},
                {'region_flag': 'linux-2-npucore-msg', 'zone0_ram_ipa': '0x7e400000',
                 'zonex_ram_ipa': '0x7e410000', 'mem_size': '0x1000'}]}, f)

    def config(self, peer, services, bell='fifo', timeout_ms=5000, **extra):
        z = {'name': self.name, 'protocol': 'v1', 'peer': peer, 'shm_config': self.cfg,
             'mem': self.mem, 'base': hex(BASE), 'services': services,
             'timeout_ms': int(scaled(timeout_ms)) if timeout_ms >= 1000 else timeout_ms,
             'doorbell': {'kind': 'fifo', 'path': self.bell} if bell == 'fifo'
             else {'kind': 'none'}}
        z.update(extra)
        return z

    def start(self, profile, *args):
        """Start v1peer; returns once it has written its ready mark."""
        self.stop()
        cmd = [*harness.EXE_WRAPPER, V1PEER, '--profile', profile, '--shm-config', self.cfg,
               '--mem', self.mem, '--base', hex(BASE), '--doorbell', self.bell, *args]
        self.peer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.peer.stdout.readline().decode()
        if 'v1peer: ready' not in line:
            raise AssertionError('v1peer %s did not start: %r %s'
                                 % (profile, line, self.peer.stderr.read().decode()))

    def stop(self):
        """Stop v1peer; returns its summary line's counters (served=...)."""
        if not self.peer:
            return {}
        self.peer.send_signal(signal.SIGTERM)
        out, _ = self.peer.communicate(timeout=scaled(10))
        self.peer = None
        last = [ln for ln in out.decode().splitlines() if ln.startswith('v1peer: exit')]
        return dict(kv.split('=', 1) for kv in last[0].split()[2:]) if last else {}

    def line(self, prefix, timeout=10):
        """The next line v1peer prints (--gate), which must start with prefix."""
        fd = self.peer.stdout.fileno()
        buf = b''
        while not buf.endswith(b'\n'):
            ready, _, _ = select.select([fd], [], [], scaled(timeout))
            if not ready:
                raise AssertionError('v1peer printed no %r within %.0f s (so far %r)'
                                     % (prefix, scaled(timeout), buf))
            b = os.read(fd, 1)
            if not b:
                raise AssertionError('v1peer exited before %r' % prefix)
            buf += b
        line = buf.decode().strip()
        if not line.startswith('v1peer: ' + prefix):
            raise AssertionError('v1peer: expected %r, got %r' % (prefix, line))
        return line

    def header(self):
        with open(self.mem, 'rb') as f:
            return HEADER.unpack(os.pread(f.fileno(), HEADER.size, QUEUE - BASE))

    def entry_offset(self, holding_line):
        """The payload offset of the entry a 'holding entry=K' line names."""
        k = int(holding_line.split('entry=')[1].split()[0])
        with open(self.mem, 'rb') as f:
            at = QUEUE - BASE + HEADER.size + 16 * k + 4
            return struct.unpack('<I', os.pread(f.fileno(), 4, at))[0]


def executor(d, name):
    for x in d.stats()['executors']:
        if x['name'] == name:
            return x
    raise AssertionError('no executor %r in stats' % name)


class GatewayBase(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='hyperamp-gw-')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.zone = Zone(self.tmp)
        self.addCleanup(self.zone.stop)
        # A remote zone's private record stays while a request is at its
        # peer (a daemon killed, or stopped with one there).
        self.addCleanup(lambda: [os.unlink(f) for f in glob.glob(
            shm_path('/hyperamp-test-%d-' % os.getpid()) + '*.remote.*')])

    def gated_peer(self):
        """A Linux peer that answers each request only when the test writes
        a byte to the returned fd (v1peer --gate): no clock decides."""
        path = os.path.join(self.tmp, 'gate')
        self.zone.start('linux', '--gate', path)
        gate = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, gate)
        return gate

    def daemon(self, *zones, **config):
        cfg = {'workers': 2, 'remote_zones': list(zones)}
        cfg.update(config)
        return Daemon(cfg)

    def submit(self, d, service, data, rc=0):
        code, out, err = d.ctl('submit', '-s', str(service), data)
        self.assertEqual(code, rc, err)
        return out, err


class GatewayTest(GatewayBase):

    def test_freertos_encrypt(self):
        self.zone.start('freertos-b')
        with self.daemon(self.zone.config('freertos', [1, 2, 66])) as d:
            out, _ = self.submit(d, 'encrypt', 'hello')
            self.assertEqual(out, XOR5A_HELLO)      # the peer's own algorithm
            out, _ = self.submit(d, 'decrypt', XOR5A_HELLO.decode('latin-1'))
            self.assertEqual(out, b'hello')
            x = executor(d, 'rtos')
            self.assertEqual(x['kind'], 'v1')
            self.assertEqual(x['requests'], 2)
            self.assertEqual(self.zone.header()[1], 255)    # formatted by us

    def test_linux_encrypt(self):
        self.zone.start('linux')
        with self.daemon(self.zone.config('linux', [1])) as d:
            out, _ = self.submit(d, 'encrypt', 'hello')
            self.assertEqual(out, LINUX_HELLO)
            # decrypt (2) is not routed: the local service, same algorithm
            out, _ = self.submit(d, 'decrypt', LINUX_HELLO.decode('latin-1'))
            self.assertEqual(out, b'hello')
            self.assertEqual(executor(d, 'rtos')['requests'], 1)

    def test_sel4_polling_no_doorbell(self):
        self.zone.start('sel4')
        with self.daemon(self.zone.config('sel4', [1, 10], bell='none')) as d:
            for _ in range(20):
                out, _ = self.submit(d, 'encrypt', 'hello')
                self.assertEqual(out, XOR5A_HELLO)
            # a proxy id the daemon does not know: the peer echoes it
            out, _ = self.submit(d, '10', 'cafe')
            self.assertEqual(out, b'cafe')

    def test_freertos_a_restart_reformats(self):
        self.zone.start('freertos-a')
        with self.daemon(self.zone.config('freertos', [1])) as d:
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], XOR5A_HELLO)
            self.zone.start('freertos-a')          # re-formats the queue at its start
            self.assertEqual(self.zone.header()[1], 16)
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], XOR5A_HELLO)
            x = executor(d, 'rtos')
            self.assertEqual(x['peer_restarts'], 1)
            self.assertEqual(x['state'], 'ready')
            self.assertEqual(self.zone.header()[1], 255)

    def test_services_show_where(self):
        self.zone.start('freertos-b')
        with self.daemon(self.zone.config('freertos', [1, 12])) as d:
            svcs = {s['id']: s for s in d.ctl_json('services')['services']}
            self.assertEqual(svcs[1]['runs_on'], 'rtos')
            self.assertEqual(svcs[1]['executor_state'], 'ready')
            self.assertEqual(svcs[66]['runs_on'], 'local')
            self.assertEqual(svcs[12]['runs_on'], 'rtos')   # an id only the peer knows
            rc, out, _ = d.ctl('services')
            self.assertEqual(rc, 0)
            self.assertIn(b'rtos', out)

    def test_stats_per_zone(self):
        self.zone.start('freertos-b')
        with self.daemon(self.zone.config('freertos', [1])) as d:
            for _ in range(10):
                self.submit(d, 'encrypt', 'hello')
            x = executor(d, 'rtos')
            for key in ('state', 'requests', 'failures', 'timeouts', 'peer_restarts'):
                self.assertIn(key, x)
            self.assertEqual((x['state'], x['requests'], x['failures'], x['timeouts']),
                             ('ready', 10, 0, 0))
            self.assertGreater(x['round_trip_us']['p50'], 0)
            self.assertGreaterEqual(x['round_trip_us']['p99'], x['round_trip_us']['p50'])
            rc, out, _ = d.ctl('stats', '--format', 'openmetrics')
            self.assertEqual(rc, 0)
            self.assertIn(b'hyperamp_remote_requests_total{executor="rtos",kind="v1"} 10', out)
            self.assertIn(b'hyperamp_remote_round_trip_seconds_count{executor="rtos"', out)
            rc, out, _ = d.ctl('stats')
            self.assertEqual(rc, 0)
            row = [ln for ln in out.decode().splitlines() if ln.startswith('rtos ')]
            self.assertEqual(row[0].split()[:7], ['rtos', 'freertos', 'ready', '10', '0', '0',
                                                  '0'], out)

    def test_lease_client_reaches_remote(self):
        """libhyperamp (zone lease): every request verified by bench."""
        self.zone.start('linux')
        with self.daemon(self.zone.config('linux', [1])) as d:
            rc, out, err = d.ctl('bench', '--transport', 'shm', '-s', 'encrypt', '-n', '200',
                                 '-c', '4', timeout=scaled(120))
            self.assertEqual(rc, 0, err)
            self.assertEqual(executor(d, 'rtos')['requests'], 200)

    def test_socket_bench_to_routed_service(self):
        self.zone.start('freertos-b')
        with self.daemon(self.zone.config('freertos', [66])) as d:
            rc, out, err = d.ctl('bench', '-s', 'echo', '-n', '500', '-c', '8',
                                 timeout=scaled(120))
            self.assertEqual(rc, 0, err)
            self.assertEqual(executor(d, 'rtos')['requests'], 500)

    def test_v1_channel_reaches_remote(self):
        """An original-protocol client -> hyperampd (v1 channel) -> a remote peer."""
        self.zone.start('linux')
        chan = Zone(self.tmp, name='npu')
        os.mkfifo(chan.bell)
        channel = {'name': 'npu', 'shm_config': chan.cfg, 'mem': chan.mem,
                   'doorbell': chan.bell, 'base': hex(BASE)}
        with self.daemon(self.zone.config('linux', [1]), v1_channels=[channel]) as d:
            cmd = [*harness.EXE_WRAPPER, V1CLIENT, '--shm-config', chan.cfg, '--mem', chan.mem,
                   '--doorbell', chan.bell, '--base', hex(BASE),
                   '--timeout-ms', str(int(scaled(10000))), '--init', 'send', '1', 'hello']
            p = subprocess.run(cmd, capture_output=True, timeout=scaled(60))
            self.assertEqual(p.returncode, 0, p.stderr)
            r = dict(kv.split('=', 1) for kv in p.stdout.decode().split())
            self.assertEqual(r['result'], 'SUCCESS')
            self.assertEqual(r['data'], LINUX_HELLO.hex())
            self.assertEqual(executor(d, 'rtos')['requests'], 1)

    def test_never_answers_times_out_then_down(self):
        self.zone.start('mute')
        with self.daemon(self.zone.config('linux', [1], timeout_ms=200)) as d:
            for _ in range(3):
                _, err = self.submit(d, 'encrypt', 'hello', rc=3)
                self.assertIn('E_TIMEOUT', err)
            x = executor(d, 'rtos')
            self.assertEqual((x['state'], x['timeouts']), ('down', 3))
            self.submit(d, 'encrypt', 'hello', rc=3)
            self.assertEqual(executor(d, 'rtos')['fast_fails'], 1)
            # other services are not held up by a dead zone
            self.assertEqual(self.submit(d, 'echo', 'still here')[0], b'still here')
            # a working peer in its place: the zone comes back by itself
            self.zone.start('linux')
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], LINUX_HELLO)
            self.assertEqual(executor(d, 'rtos')['state'], 'ready')

    def test_pending_fifo_is_bounded(self):
        """max_pending bounds what waits for the zone, besides the one
        request at the peer: past it E_BUSY, at once; the rest are answered
        once each (here E_TIMEOUT, code 4)."""
        self.zone.start('mute')
        with self.daemon(self.zone.config('linux', [1], timeout_ms=300, max_pending=2)) as d:
            with d.client(timeout=scaled(30)) as c:
                c.send(request('submit', id=0, params={'service': 1}), b'hello')
                wait_until(lambda: executor(d, 'rtos')['state'] == 'busy', 10,
                           'the first request at the peer')
                for i in range(1, 4):
                    c.send(request('submit', id=i, params={'service': 1}), b'hello')
                replies = {}
                for _ in range(4):
                    rep, data = c.recv_frame()
                    replies[rep['id']] = rep
                    self.assertEqual(data, b'')
            self.assertEqual(replies[3]['error']['code'], 'E_BUSY')
            for i in (0, 1, 2):
                self.assertEqual((replies[i]['result']['status'], replies[i]['result']['code']),
                                 ('E_TIMEOUT', 4))
            x = executor(d, 'rtos')
            self.assertEqual((x['refused'], x['timeouts'], x['in_flight'], x['queued']),
                             (1, 3, 0, 0))

    def test_shutdown_with_a_dead_zone(self):
        """SIGTERM while a request waits on a zone that never answers (60 s
        timeout): the daemon finishes what it can until its shutdown
        deadline, then the zone's waits are cancelled and it exits cleanly,
        not past a thread stuck in the zone."""
        self.zone.start('mute')
        with self.daemon(self.zone.config('linux', [1], timeout_ms=60000)) as d:
            ctl = subprocess.Popen([*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket',
                                    d.socket_path, 'submit', '-s', 'encrypt', 'hello'],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            wait_until(lambda: executor(d, 'rtos')['state'] == 'busy', 10,
                       'the request at the peer')
            d.check_clean_exit = False
            self.assertEqual(d.terminate_and_wait(scaled(30)), 0, d.log())
            log = d.log()
        ctl.communicate(timeout=scaled(30))
        self.assertIn('Stopped at the shutdown deadline', log)
        self.assertNotIn('stuck', log)

    def test_start_failures(self):
        """A zone that cannot be set up stops the start, with the reason;
        nothing is written to the peer's memory."""
        def fails(why, **zone):
            f = start_expect_failure({'remote_zones': [dict(self.zone.config('linux', [1]),
                                                            **zone)]})
            self.assertNotEqual(f.rc, 0)
            self.assertIn("remote zone 'rtos'", f.log)
            self.assertIn(why, f.log)
        fails('No such file', shm_config=os.path.join(self.tmp, 'no'))
        fails('cannot open', mem=os.path.join(self.tmp, 'nomem'))
        fails('not a multiple of the page size', base='0x7e000001')
        fails('below base', base='0x7f000000')
        fails('cannot open doorbell', doorbell={'kind': 'ioctl', 'zone': 1,
                                                'device': os.path.join(self.tmp, 'nodev')})
        self.assertEqual(self.zone.header(), (0, 0, 0, 0, 0))

    def faulty(self, profile, *args, counter=None, want=LINUX_HELLO, peer='linux'):
        self.zone.start(profile, *args)
        with self.daemon(self.zone.config(peer, [1])) as d:
            for _ in range(6):
                self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], want)
            x = executor(d, 'rtos')
            self.assertEqual(x['timeouts'], 0)
            self.assertEqual(x['requests'], 6)
            if counter:
                where = x['faults'] if counter in x['faults'] else x
                self.assertGreaterEqual(where[counter], 1, x)
            return x

    def test_answers_twice(self):
        self.faulty('twice', counter='double_answers')

    def test_result_before_deal_state(self):
        self.faulty('result-first', '--hold-ms', '20')

    def test_idle_early(self):
        self.faulty('idle-early', '--hold-ms', '20')

    def test_restarts_mid_request(self):
        self.faulty('restart', '--restart-at', '2', counter='peer_restarts', want=XOR5A_HELLO,
                    peer='freertos')

    def test_scribbles_header(self):
        self.faulty('scribble', counter='bad_header')

    def test_sigkill_with_request_at_remote(self):
        """The restarted daemon takes the queue over (no re-format under the
        peer), lets the peer finish the dead run's request, and serves on."""
        gate = self.gated_peer()
        cfg = self.zone.config('linux', [1])
        d1 = self.daemon(cfg)
        d1.check_clean_exit = False
        d1.__enter__()
        ctl = subprocess.Popen([*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket',
                                d1.socket_path, 'submit', '-s', 'encrypt', 'hello'],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        old = self.zone.entry_offset(self.zone.line('holding entry='))
        d1.kill()
        ctl.communicate(timeout=scaled(10))
        d1.__exit__(None, None, None)
        with self.daemon(cfg) as d2:
            ctl = subprocess.Popen([*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket',
                                    d2.socket_path, '--timeout', str(int(scaled(30))), 'submit',
                                    '-s', 'encrypt', 'hello'],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            # The dead run's request first (the new one waits behind it),
            # then the new one.
            wait_until(lambda: executor(d2, 'rtos')['adopted'] == 1, 10, 'the take-over')
            os.write(gate, b'!')
            self.zone.line('answered entry=')
            new = self.zone.entry_offset(self.zone.line('holding entry='))
            # The other payload slot: a late write of the peer's to the
            # taken-over request's bytes touches nothing in use.
            self.assertNotEqual(new, old)
            os.write(gate, b'!')
            self.zone.line('answered entry=')
            out, err = ctl.communicate(timeout=scaled(30))
            self.assertEqual((ctl.returncode, out), (0, LINUX_HELLO), err)
            x = executor(d2, 'rtos')
            self.assertEqual((x['adopted'], x['resyncs'], x['late_answers']), (1, 0, 1))
            self.assertEqual(self.zone.header()[0], MARK_IDLE)
        self.assertEqual(self.zone.stop()['served'], '2')


    # -- a lease request at the peer when the daemon dies (issue 12 item 2) --

    def crash_with_lease_request(self, timeout_ms=30000):
        """A libhyperamp client's encrypt of 'hello' held at a gated Linux
        peer, the daemon SIGKILLed.  Returns (client, gate fd, config of the
        next daemon: same shm_name, so it finds the record; same socket)."""
        self.gate = self.gated_peer()
        sock = os.path.join(self.tmp, 'ctl.sock')
        cfg = {'workers': 2, 'shm_name': unique_shm_name(),
               'remote_zones': [self.zone.config('linux', [1], timeout_ms=30000)]}
        d1 = Daemon(cfg, socket_path=sock, check_clean_exit=False)
        d1.__enter__()
        try:
            env = dict(os.environ, ZCLIENT_WAIT_MS=str(int(scaled(60000))))
            zc = subprocess.Popen([*harness.EXE_WRAPPER, ZCLIENT, sock, 'one', '1', 'hello'],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            self.addCleanup(lambda: zc.poll() is None and (zc.kill(), zc.wait()))
            self.assertEqual(zc.stdout.readline(), b'submitted\n')
            self.zone.line('holding entry=')
            d1.kill()
        finally:
            d1.__exit__(None, None, None)
        cfg = dict(cfg, remote_zones=[self.zone.config('linux', [1], timeout_ms=timeout_ms)])
        return zc, cfg, sock

    def answer(self):
        os.write(self.gate, b'!')
        return self.zone.line('answered entry=')

    def client_result(self, zc):
        out, err = zc.communicate(timeout=scaled(90))
        lines = out.decode().split()
        self.assertEqual(len([w for w in lines if w.startswith('result=')]), 1, out + err)
        return dict(w.split('=', 1) for w in lines if '=' in w)

    def test_sigkill_lease_request_answered_after_resume(self):
        """The client resumes, the restarted daemon waits for the entry the
        peer holds and delivers its answer: the peer ran it once."""
        zc, cfg, sock = self.crash_with_lease_request()
        with Daemon(cfg, socket_path=sock) as d2:
            # the resumed lease's job is at the executor, waiting on the entry
            wait_until(lambda: executor(d2, 'rtos')['requests'] == 1, scaled(30),
                       'the resumed request at the executor')
            self.answer()
            r = self.client_result(zc)
            self.assertEqual((r['result'], r['data']), ('1', LINUX_HELLO.hex()))
            x = executor(d2, 'rtos')
            self.assertEqual((x['adopted'], x['resyncs'], x['recovered_answers'],
                              x['late_answers']), (1, 0, 1, 0), x)
            # and the zone serves on
            self.os_write_gate_then_submit(d2, 'world')
        self.assertEqual(self.zone.stop()['served'], '2')

    def os_write_gate_then_submit(self, d, text):
        os.write(self.gate, b'!')       # let the peer answer it at once
        code, out, err = d.ctl('submit', '-s', 'encrypt', text)
        self.assertEqual(code, 0, err)
        self.zone.line('holding entry=')
        self.zone.line('answered entry=')
        return out

    def test_sigkill_lease_request_answered_before_resume(self):
        """The peer answers while no daemon runs: the next one finds the
        answer in the entry and delivers it to the client that resumes."""
        zc, cfg, sock = self.crash_with_lease_request()
        self.answer()
        with Daemon(cfg, socket_path=sock) as d2:
            r = self.client_result(zc)
            self.assertEqual((r['result'], r['data']), ('1', LINUX_HELLO.hex()))
            x = executor(d2, 'rtos')
            self.assertEqual((x['recovered_answers'], x['late_answers']), (1, 0), x)
        self.assertEqual(self.zone.stop()['served'], '1')

    def test_sigkill_lease_answer_kept_for_its_client(self):
        """Another client's request comes first: it waits behind the held
        entry (stop-and-wait), does not get that answer, and gets its own;
        the held answer is kept until the lease client resumes."""
        zc, cfg, sock = self.crash_with_lease_request()
        zc.send_signal(signal.SIGSTOP)          # it cannot resume yet
        try:
            with Daemon(cfg, socket_path=sock) as d2:
                other = subprocess.Popen([*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket',
                                          sock, 'submit', '-s', 'encrypt', 'world'],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                wait_until(lambda: executor(d2, 'rtos')['requests'] == 1, scaled(30),
                           'the other request at the executor')
                self.answer()                   # the held one
                self.zone.line('holding entry=')        # then the other one is sent
                self.assertEqual(executor(d2, 'rtos')['parked_answers'], 1)
                os.write(self.gate, b'!')
                out, err = other.communicate(timeout=scaled(30))
                self.assertEqual(other.returncode, 0, err)
                # its own answer: the local decrypt (the same cipher) undoes it
                code, back, err = d2.ctl('submit', '-s', 'decrypt', out.decode('latin-1'))
                self.assertEqual((code, back), (0, b'world'), err)
                zc.send_signal(signal.SIGCONT)
                r = self.client_result(zc)
                self.assertEqual((r['result'], r['data']), ('1', LINUX_HELLO.hex()))
                x = executor(d2, 'rtos')
                self.assertEqual((x['parked_answers'], x['recovered_answers'],
                                  x['late_answers'], x['unclaimed_answers']), (1, 1, 0, 0), x)
        finally:
            zc.send_signal(signal.SIGCONT)
        self.assertEqual(self.zone.stop()['served'], '2')

    def test_sigkill_lease_request_never_answered(self):
        """The held entry times out: the resumed client gets one error
        answer (FAIL: a lease has no E_TIMEOUT), and the peer's late answer
        is dropped, never delivered again."""
        zc, cfg, sock = self.crash_with_lease_request(timeout_ms=1000)
        with Daemon(cfg, socket_path=sock) as d2:
            r = self.client_result(zc)
            self.assertEqual(r['result'], '2')
            x = executor(d2, 'rtos')
            self.assertEqual((x['timeouts'], x['recovered_answers']), (1, 0), x)
            self.answer()                       # late: dropped at the next request
            out = self.os_write_gate_then_submit(d2, 'hello')
            self.assertEqual(out, LINUX_HELLO)
            self.assertEqual(executor(d2, 'rtos')['late_answers'], 1)
        self.assertEqual(self.zone.stop()['served'], '2')


class Load:
    """Submits from a client of their own, a few at a time, for as long as
    the with-block runs: each must be answered exactly once, SUCCESS, with
    one of the outputs allowed for its service ({service: {payload:
    {allowed outputs}}}).  Errors are kept and raised at the end."""

    WINDOW = 4

    def __init__(self, d, jobs):
        self.d = d
        self.jobs = [(svc, data, outs) for svc, by in jobs.items() for data, outs in by.items()]
        self.stop = threading.Event()
        self.errors = []
        self.sent = self.answered = 0
        self.thread = threading.Thread(target=self.run)

    def __enter__(self):
        self.thread.start()
        # Under way before the test acts.
        wait_until(lambda: self.answered >= 20 or self.errors, 30, 'the load to start')
        return self

    def run(self):
        pending = {}
        try:
            with self.d.client(timeout=scaled(60)) as c:
                while not self.stop.is_set() or pending:
                    while not self.stop.is_set() and len(pending) < self.WINDOW:
                        svc, data, outs = self.jobs[self.sent % len(self.jobs)]
                        c.send(request('submit', id=self.sent, params={'service': svc}), data)
                        pending[self.sent] = (svc, outs)
                        self.sent += 1
                    rep, out = c.recv_frame()
                    rid = rep.get('id')
                    if rid not in pending:
                        raise AssertionError('reply to %r: not pending (twice?) %r' % (rid, rep))
                    svc, outs = pending.pop(rid)
                    status = rep.get('result', {}).get('status') or rep.get('error', {})
                    if status != 'SUCCESS' or out not in outs:
                        raise AssertionError('request %d (service %d): %r %r' % (rid, svc, rep,
                                                                                out))
                    self.answered += 1
        except Exception as e:          # noqa: BLE001 (raised in the test's thread)
            self.errors.append(e)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(scaled(120))
        if exc[0] is None:
            if self.thread.is_alive():
                raise AssertionError('the load did not finish')
            if self.errors:
                raise self.errors[0]
            if self.answered != self.sent:
                raise AssertionError('%d sent, %d answered' % (self.sent, self.answered))
        return False


# Where encrypt and echo run, the results they may give: the FreeRTOS
# zone's XOR 0x5A or the local (Linux) cipher.
ENCRYPT_ANYWHERE = {1: {b'hello': {XOR5A_HELLO, LINUX_HELLO}}, 66: {b'echo': {b'echo'}}}


class ReloadTest(GatewayBase):
    """Issue 12: a reload adds, changes and removes remote zones, while a
    client of its own keeps submitting (Load): no request lost or answered
    twice."""

    def reload(self, d, zones, rc=0, **config):
        with open(d.config_path, 'w') as f:
            json.dump(dict(d.config, remote_zones=zones, **config), f)
        code, out, err = d.ctl('reload')
        self.assertEqual(code, rc, (out, err))
        return out.decode(errors='replace') + err

    def runs_on(self, d, sid):
        return {s['id']: s for s in d.ctl_json('services')['services']}[sid]['runs_on']

    def executors(self, d):
        return {x['name']: x['state'] for x in d.stats()['executors']}

    def test_add_then_remove(self):
        self.zone.start('freertos-b')
        with self.daemon() as d, Load(d, ENCRYPT_ANYWHERE) as load:
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], LINUX_HELLO)
            self.assertEqual(self.runs_on(d, 1), 'local')
            out = self.reload(d, [self.zone.config('freertos', [1, 12])])
            self.assertIn('remote_zones', out)         # applied, not "needs a restart"
            self.assertNotIn('needs a restart: remote_zones', out)
            # At once: services, stats and the next submit.
            self.assertEqual(self.runs_on(d, 1), 'rtos')
            self.assertIn(self.executors(d)['rtos'], ('ready', 'busy'))
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], XOR5A_HELLO)
            wait_until(lambda: executor(d, 'rtos')['requests'] >= 10, 30,
                       'the load to reach the zone')
            self.reload(d, [])
            self.assertEqual(self.runs_on(d, 1), 'local')
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], LINUX_HELLO)
            # An id only the zone had: nothing serves it now.
            _, err = self.submit(d, '12', 'x', rc=4)
            self.assertIn('NOT_EXITS', err)
            wait_until(lambda: 'rtos' not in self.executors(d), 30, 'the zone to retire')
            # And back: the executor id was free again.
            self.reload(d, [self.zone.config('freertos', [1])])
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], XOR5A_HELLO)
            self.assertIn("executor 'rtos' (id 1) retired", d.log())
        self.assertGreater(load.answered, 20)

    def test_remove_with_a_request_at_the_peer(self):
        """The request at the peer finishes there (the gated peer answers
        it only once the reload is done); those queued behind it run where
        the service routes now (the local pool); each answered once."""
        gate = self.gated_peer()
        zone = self.zone.config('linux', [1], timeout_ms=int(scaled(20000)))
        with self.daemon(zone) as d, d.client(timeout=scaled(60)) as c:
            c.send(request('submit', id=0, params={'service': 1}), b'hello')
            self.zone.line('holding entry=')
            for i in range(1, 4):
                c.send(request('submit', id=i, params={'service': 1}), b'hello')
            wait_until(lambda: executor(d, 'rtos')['queued'] == 3, 10, 'three queued')
            # Local services only: the peer holds its one request.
            with Load(d, {66: {b'echo': {b'echo'}}, 2: {LINUX_HELLO: {b'hello'}}}) as load:
                self.reload(d, [])
                self.assertEqual(self.executors(d)['rtos'], 'retiring')
                os.write(gate, b'!')
                self.zone.line('answered entry=')
                replies = {}
                for _ in range(4):
                    rep, data = c.recv_frame()
                    self.assertNotIn(rep['id'], replies)
                    replies[rep['id']] = (rep['result']['status'], data)
                self.assertEqual(replies, {i: ('SUCCESS', LINUX_HELLO) for i in range(4)})
                wait_until(lambda: 'rtos' not in self.executors(d), 30, 'the zone to retire')
            log = d.log()
        self.assertIn("executor 'rtos' (id 1) retiring: 3 queued jobs", log)
        self.assertIn("executor 'rtos' (id 1) retired: 1 jobs completed", log)
        self.assertEqual(self.zone.stop()['served'], '1')
        self.assertGreater(load.answered, 20)

    def test_change_keys(self):
        """Same name, other keys: the old executor retires, a new one takes
        its services (decrypt now too), starting once the old has ended."""
        self.zone.start('freertos-b')
        with self.daemon(self.zone.config('freertos', [1])) as d, \
                Load(d, ENCRYPT_ANYWHERE) as load:
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], XOR5A_HELLO)
            self.reload(d, [self.zone.config('freertos', [1, 2], timeout_ms=3000)])
            self.assertEqual(self.runs_on(d, 2), 'rtos')
            self.assertEqual(self.submit(d, 'decrypt', XOR5A_HELLO.decode('latin-1'))[0],
                             b'hello')
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], XOR5A_HELLO)
            wait_until(lambda: list(self.executors(d).values()).count('ready') == 2, 30,
                       'the old executor to retire')
            log = d.log()
            self.assertIn("remote zone 'rtos' changed by the reload", log)
            # One owner of the queue at a time: the new one waited.
            self.assertIn("remote zone 'rtos': its jobs wait until the zone it replaces has "
                          "retired", log)
            self.assertIn("remote zone 'rtos': its predecessor has retired, starting", log)
        self.assertGreater(load.answered, 20)

    def test_unchanged_zone_is_left_alone(self):
        """A reload that touches another key (or another zone) leaves a
        zone's request at its peer alone."""
        gate = self.gated_peer()
        zone = self.zone.config('linux', [1], timeout_ms=int(scaled(20000)))
        with self.daemon(zone) as d, Load(d, {66: {b'echo': {b'echo'}}}) as load:
            ctl = subprocess.Popen([*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket',
                                    d.socket_path, 'submit', '-s', 'encrypt', 'hello'],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.zone.line('holding entry=')
            self.reload(d, [zone], client_timeout_ms=123456)
            self.assertEqual(self.executors(d), {'local': 'ready', 'rtos': 'busy'})
            os.write(gate, b'!')
            out, err = ctl.communicate(timeout=scaled(30))
            self.assertEqual((ctl.returncode, out), (0, LINUX_HELLO), err)
            self.assertEqual((executor(d, 'rtos')['requests'], executor(d, 'rtos')['timeouts']),
                             (1, 0))
            self.assertNotIn('retiring', d.log())
        self.assertGreater(load.answered, 20)

    def test_bad_remote_config_is_refused(self):
        """A zone that cannot be set up, or a bad key, refuses the reload:
        the running zones stay as they were."""
        self.zone.start('freertos-b')
        with self.daemon(self.zone.config('freertos', [1])) as d, \
                Load(d, ENCRYPT_ANYWHERE) as load:
            two = Zone(self.tmp, name='two')        # can be set up: it is, then undone
            other = Zone(self.tmp, name='other')
            bad = dict(other.config('linux', [3]), shm_config=os.path.join(self.tmp, 'no'))
            out = self.reload(d, [self.zone.config('freertos', [1]), two.config('linux', [2]),
                                  bad], rc=1)
            self.assertIn("remote zone 'other' cannot be set up", out)
            out = self.reload(d, [dict(self.zone.config('freertos', [1]), timeout_ms=0)], rc=1)
            self.assertIn('timeout_ms', out)
            self.assertEqual(self.runs_on(d, 2), 'local')
            self.assertEqual(self.runs_on(d, 1), 'rtos')
            self.assertEqual(self.submit(d, 'encrypt', 'hello')[0], XOR5A_HELLO)
            # The zone set up before the failure was retired again, never routed.
            wait_until(lambda: 'two' not in self.executors(d), 30, 'the undone zone to go')
            self.assertIn("executor 'two' (id 2) retired: 0 jobs completed", d.log())
        self.assertGreater(load.answered, 20)


if __name__ == '__main__':
    unittest.main()
