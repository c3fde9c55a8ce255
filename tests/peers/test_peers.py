# SPDX-License-Identifier: MIT
"""The v1 peer simulators (tests/peers/v1peer.c) against the raw v1 driver
(bench/raw-v1.c): every good profile gives its peer's bytes for "hello",
every faulty one shows its fault, and every peer exits cleanly on SIGTERM.
This is what lets the gateway's tests trust the simulators.

A regular file plays /dev/mem (the QEMU addresses, "base" at the buf
region) and a FIFO the doorbell, as for the daemon's v1 channels."""
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
import harness  # noqa: E402
import test_v1  # noqa: E402
from harness import scaled  # noqa: E402
from test_v1 import BASE, BUF, HEADER, MARK_IDLE, MARK_INITIALIZED, QUEUE, READY  # noqa: E402

V1PEER = os.environ.get('V1PEER') or os.path.join(harness.BUILD, 'tests', 'peers', 'v1peer')
RAW_V1 = os.environ.get('RAW_V1') or os.path.join(harness.BUILD, 'tests', 'peers', 'raw-v1')

KEY = bytes.fromhex('2b7e151628aed2a6abf7158809cf4f3c')


def linux_cipher(data):
    return bytes(b ^ KEY[i % 16] ^ 0x55 for i, b in enumerate(data))


def xor5a(data):
    return bytes(b ^ 0x5A for b in data)


# profile -> (driver's --peer, doorbell?)
GOOD = {'linux': ('linux', True), 'freertos-a': ('freertos', True),
        'freertos-b': ('freertos', True), 'sel4': ('sel4', False)}
HELLO = {'linux': '16 4e 2c 2f 12', 'freertos': '32 3f 36 36 35', 'sel4': '32 3f 36 36 35'}


def parse_stats(out):
    line = [ln for ln in out.splitlines() if ln.startswith('raw-v1: requests=')]
    assert line, 'no summary line in:\n' + out
    return {k: float(v) for k, v in (kv.split('=') for kv in line[-1].split()[1:])}


class Peer:
    """One v1peer; started in __init__, returns once its ready line is read."""

    def __init__(self, rig, profile, *args):
        self.rig = rig
        self.profile = profile
        cmd = [*harness.EXE_WRAPPER, V1PEER, '--profile', profile, '--shm-config', rig.cfg,
               '--mem', rig.mem, '--base', hex(BASE)]
        if GOOD.get(profile, (None, True))[1]:
            cmd += ['--doorbell', rig.bell]
        self.proc = subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self._line(scaled(20))
        if not re.fullmatch(r'v1peer: ready profile=%s pid=%d' % (re.escape(profile),
                                                                  self.proc.pid), line):
            self.proc.kill()
            raise AssertionError('no ready line from v1peer %s: %r\n%s' % (
                profile, line, self.proc.communicate()[1].decode()))

    def _line(self, timeout):
        out = self.proc.stdout
        deadline = time.monotonic() + timeout
        buf = b''
        while not buf.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                return buf.decode()
            c = os.read(out.fileno(), 1)
            if not c:
                break
            buf += c
        return buf.decode().rstrip('\n')

    def stop(self):
        """SIGTERM: exit 0 with one summary line; returns its counters."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=scaled(20))
        out, err = out.decode(), err.decode()
        assert self.proc.returncode == 0, 'v1peer %s: exit %d\n%s%s' % (
            self.profile, self.proc.returncode, out, err)
        m = re.fullmatch(r'v1peer: exit profile=\S+ (.*)\n', out)
        assert m, 'no exit line: %r' % out
        return {k: int(v) for k, v in (kv.split('=') for kv in m.group(1).split())}

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class Rig(test_v1.Rig):
    """test_v1's stand-in hardware (memory file, FIFO, shm_config), plus the
    raw driver."""

    def raw(self, peer, *args, bell=True, timeout_ms=10000, expect_rc=0):
        cmd = [*harness.EXE_WRAPPER, RAW_V1, '--shm-config', self.cfg, '--mem', self.mem,
               '--base', hex(BASE), '--peer', peer, '--doorbell', self.bell if bell else 'none',
               '--timeout-ms', str(int(scaled(timeout_ms)))] + list(args)
        start = time.monotonic()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=scaled(120))
        out, err = p.stdout.decode(), p.stderr.decode()
        if p.returncode != expect_rc:
            raise AssertionError('raw-v1 %s: exit %d, expected %d\n%s%s' % (
                ' '.join(args), p.returncode, expect_rc, out, err))
        return parse_stats(out), out, err, time.monotonic() - start


class PeerTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix='hyperamp-peers-')
        self.rig = Rig(self.tmp.name)
        self.peers = []

    def tearDown(self):
        for p in self.peers:
            p.kill()
        self.tmp.cleanup()

    def peer(self, profile, *args):
        p = Peer(self.rig, profile, *args)
        self.peers.append(p)
        return p

    def serve(self, profile, *args, peer_args=(), expect_rc=0, timeout_ms=10000):
        """Run raw-v1 against a fresh peer; (driver stats, output, peer stats, seconds)."""
        p = self.peer(profile, *peer_args)
        driver, bell = GOOD.get(profile, ('freertos' if profile == 'restart' else 'linux',
                                          True))
        st, out, err, secs = self.rig.raw(driver, *args, bell=bell, expect_rc=expect_rc,
                                          timeout_ms=timeout_ms)
        return st, out + err, p.stop(), secs


class VectorTest(PeerTest):
    def test_reference_vectors(self):
        """The vectors the issue names are what the reference algorithms give."""
        self.assertEqual(linux_cipher(b'hello').hex(' '), HELLO['linux'])
        self.assertEqual(xor5a(b'hello').hex(' '), HELLO['freertos'])

    def test_hello_per_profile(self):
        for profile, (driver, _) in GOOD.items():
            with self.subTest(profile=profile):
                st, out, pst, _ = self.serve(profile, '--data', 'hello', '--show',
                                             '--requests', '3')
                self.assertIn('reply: %s\n' % HELLO[driver], out)
                self.assertEqual((st['ok'], st['failed'], st['timeouts']), (3, 0, 0))
                self.assertEqual(pst['served'], 3)

    def test_many_sizes_and_services(self):
        """Payloads past the 16-byte key, decrypt and echo: every reply is
        checked by the driver against the peer's own algorithm."""
        for profile in GOOD:
            for service in ('1', '2', '66'):
                with self.subTest(profile=profile, service=service):
                    st, _, _, _ = self.serve(profile, '--size', '1000', '--service', service,
                                             '--requests', '200')
                    self.assertEqual((st['ok'], st['failed']), (200, 0))

    def test_spin(self):
        """--spin: the same answers with nothing blocking (the benchmark's peer)."""
        for profile in ('linux', 'sel4'):
            with self.subTest(profile=profile):
                st, _, _, _ = self.serve(profile, '--size', '64', '--requests', '500',
                                         peer_args=['--spin'])
                self.assertEqual((st['ok'], st['failed']), (500, 0))


class StartTest(PeerTest):
    def header(self, addr):
        return HEADER.unpack(self.rig.read(addr, HEADER.size))

    def formatted_root(self):
        self.rig.write(QUEUE, HEADER.pack(MARK_IDLE, 255, 0, 255, 255))
        self.rig.write(BUF, b'\x77' * 64)

    def test_linux_start(self):
        self.formatted_root()
        self.peer('linux')
        self.assertEqual(self.rig.read(BUF, 6), b'Test\x00\x77')
        self.assertEqual(self.header(QUEUE), (MARK_IDLE, 255, 0, 255, 255))
        self.assertEqual(self.header(READY), (MARK_INITIALIZED, 0, 0, 0, 0))

    def test_rtos_reformat_at_start(self):
        for profile in ('freertos-a', 'sel4'):
            with self.subTest(profile=profile):
                self.formatted_root()
                self.rig.write(READY, bytes(HEADER.size))
                p = self.peer(profile)
                self.assertEqual(self.header(QUEUE), (MARK_IDLE, 16, 0, 0, 0))
                self.assertEqual(self.header(READY), (MARK_INITIALIZED, 16, 0, 0, 0))
                self.assertEqual(self.rig.read(BUF, 64),
                                 bytes(64) if profile == 'freertos-a' else b'\x77' * 64)
                p.stop()

    def test_freertos_b_leaves_root_queue(self):
        self.formatted_root()
        self.peer('freertos-b')
        self.assertEqual(self.header(QUEUE), (MARK_IDLE, 255, 0, 255, 255))
        self.assertEqual(self.header(READY), (MARK_INITIALIZED, 16, 0, 0, 0))

    def test_sel4_resets_cursor(self):
        """32 empty polls: proc_ing_h back to 0 and IDLE."""
        self.rig.write(QUEUE, HEADER.pack(0, 0, 0, 0, 0))
        self.peer('sel4')
        self.rig.write(QUEUE, HEADER.pack(0x12345678, 255, 0, 255, 7))
        harness.wait_until(lambda: self.header(QUEUE) == (MARK_IDLE, 255, 0, 255, 0),
                           timeout=scaled(10), what='the seL4 cursor reset')


class FaultTest(PeerTest):
    HOLD = ['--hold-ms', str(int(scaled(20000)))]

    def test_mute_times_out(self):
        st, out, pst, secs = self.serve('mute', '--data', 'hello', '--rering-ms', '100',
                                        timeout_ms=500, expect_rc=3)
        self.assertEqual((st['ok'], st['timeouts']), (0, 1))
        self.assertIn('timed out', out)
        self.assertGreaterEqual(st['rerings'], 1)
        self.assertGreaterEqual(pst['doorbells'], 2)    # the ring and a ring again
        self.assertEqual(pst['served'], 0)
        self.assertLess(secs, scaled(20))

    def test_twice(self):
        st, _, _, _ = self.serve('twice', '--data', 'hello', '--requests', '4')
        self.assertEqual(st['ok'], 4)
        self.assertEqual(st['twice'], 3)        # the last one's second answer never came

    def test_result_first(self):
        st, _, _, _ = self.serve('result-first', '--data', 'hello', '--requests', '3',
                                 '--rering-ms', '50', peer_args=self.HOLD)
        self.assertEqual((st['ok'], st['result_first']), (3, 3))
        self.assertEqual(st['done_no_result'], 0)

    def test_idle_early(self):
        st, _, _, _ = self.serve('idle-early', '--data', 'hello', '--requests', '3',
                                 '--rering-ms', '50', peer_args=self.HOLD)
        self.assertEqual((st['ok'], st['idle_early']), (3, 3))

    def test_faults_without_hold(self):
        """Without the hold only the order of the writes is wrong: a correct
        driver waits for deal_state and IDLE and gets every reply right."""
        for profile in ('result-first', 'idle-early'):
            with self.subTest(profile=profile):
                st, _, _, _ = self.serve(profile, '--size', '100', '--requests', '500')
                self.assertEqual((st['ok'], st['failed']), (500, 0))

    def test_restart(self):
        """The peer restarts under the first request: the driver sees the
        re-formatted queue, waits for the ready mark, formats and resends."""
        st, _, pst, _ = self.serve('restart', '--data', 'hello', '--requests', '3', '--show')
        self.assertEqual((st['ok'], st['reformats']), (3, 1))
        self.assertEqual(pst['served'], 3)
        st, _, _, _ = self.serve('restart', '--data', 'hello', '--requests', '5',
                                 peer_args=['--restart-at', '3'])
        self.assertEqual((st['ok'], st['reformats']), (5, 1))

    def test_scribble(self):
        st, _, _, _ = self.serve('scribble', '--data', 'hello', '--requests', '4')
        self.assertEqual((st['ok'], st['scribbled']), (4, 4))

    def test_good_profiles_show_no_fault(self):
        faults = ('twice', 'idle_early', 'result_first', 'scribbled', 'reformats',
                  'bad_readback', 'timeouts')
        for profile in ('linux', 'freertos-a', 'freertos-b'):
            with self.subTest(profile=profile):
                st, _, _, _ = self.serve(profile, '--size', '100', '--requests', '500')
                self.assertEqual({k: st[k] for k in faults}, dict.fromkeys(faults, 0))


class UsageTest(PeerTest):
    def test_bad_arguments(self):
        for args in (['--profile', 'nope'], ['--profile', 'linux'],
                     ['--profile', 'linux', '--shm-config', self.rig.cfg, '--mem',
                      self.rig.mem, '--base', hex(BASE)],
                     ['--profile', 'sel4', '--shm-config', self.rig.cfg, '--mem',
                      self.rig.mem, '--base', 'zz']):
            with self.subTest(args=args):
                p = subprocess.run([*harness.EXE_WRAPPER, V1PEER] + args,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   timeout=scaled(20))
                self.assertEqual(p.returncode, 2)
                self.assertEqual(p.stdout, b'')


if __name__ == '__main__':
    unittest.main()
