# SPDX-License-Identifier: MIT
"""SIGKILL of hyperampd while zone clients (libhyperamp) keep their leases
busy, then a restart: every request already on a lease's ring, or taken
from it, is answered exactly once (docs/zones.md, "When the daemon dies").

The clients (zclient race, hyperampctl bench --transport shm) check every
result byte for byte against the reference: a lost request times out, and
one run twice comes back wrong (the XOR services undo themselves).  A
hand-made lease checks each rule of the recovery on its own, and hostile
memory handed back is refused."""
import fcntl
import json
import mmap
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import unittest

import harness
from harness import (Daemon, encode_frame, request, run_ctl, scaled, wait_pid_exit,
                     wait_until, xor_service)

BUILD_ROOT = os.environ.get('HYPERAMP_BUILD_ROOT') or harness.BUILD
ZCLIENT = os.environ.get('ZCLIENT') or os.path.join(BUILD_ROOT, 'tests', 'zone', 'zclient')
# zclient's hyperamp_wait() limit covers a daemon restart: scale it with
# the daemon's speed.
ZENV = dict(os.environ, ZCLIENT_WAIT_MS=str(int(scaled(10000))))

# src/core/hyperamp/zone.h and wire.h
QUEUE_OFF, DONE_OFF, JOURNAL_OFF, POOL_OFF = 4096, 8192, 24576, 32768
CTL_MAGIC, ENTRIES, RING = 0x5a4f4e45, 255, 256
J_FREE, J_TAKEN, J_COMMIT = 0, 1, 2
JREC = struct.Struct('=IIIHHII8x')
FLAG_SUCCESS, FLAG_FAIL = 0x3, 0x5
POOL = 4096


def zones(stats):
    return [s for s in stats['sources'] if s['kind'] == 'shm']


def total(d, key):
    return sum(z[key] for z in zones(d.stats()))


def recovered(d):
    out = {}
    for z in zones(d.stats()):
        for k, v in z['recovered'].items():
            out[k] = out.get(k, 0) + v
    return out


class Lease:
    """Lease memory made by hand, laid out as zone.h says."""

    def __init__(self, pool=POOL, size=None, seal=True):
        self.pool = pool
        self.fd = os.memfd_create('test-lease', os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, size if size is not None else POOL_OFF + 2 * pool)
        if seal:
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.m = mmap.mmap(self.fd, os.fstat(self.fd).st_size)

    def close(self):
        self.m.close()
        os.close(self.fd)

    def put(self, fmt, off, *v):
        struct.pack_into(fmt, self.m, off, *v)

    def get(self, fmt, off):
        return struct.unpack_from(fmt, self.m, off)[0]

    def header(self):
        self.put('=IIII', 0, CTL_MAGIC, 1, os.getpid(), ENTRIES)

    def ring(self, head, idxs):
        self.put('=I', 128, head)
        for i, idx in enumerate(idxs):
            self.put('=H', 192 + 2 * ((head + i) % RING), idx)
        self.put('=I', 64, head + len(idxs))

    def entry(self, idx, service, off, length):
        self.put('=HHII', QUEUE_OFF + 12 + 16 * idx, 0, service, off, length)

    def journal(self, idx, state, pos, seq, service, flag, off, length):
        JREC.pack_into(self.m, JOURNAL_OFF + JREC.size * idx, state, pos, seq, service, flag,
                       off, length)

    def flag(self, idx):
        return self.get('=H', QUEUE_OFF + 12 + 16 * idx)

    def word(self, idx):
        return self.get('=I', DONE_OFF + 64 * idx) & 0x7fffffff

    def set_word(self, idx, v):
        self.put('=I', DONE_OFF + 64 * idx, v)

    def data(self, off, n):
        return bytes(self.m[POOL_OFF + off:POOL_OFF + off + n])

    def set_data(self, off, b):
        self.m[POOL_OFF + off:POOL_OFF + off + len(b)] = b

    def set_stage(self, off, b):
        base = POOL_OFF + self.pool + off
        self.m[base:base + len(b)] = b


class Resume:
    """The resume handshake by hand: attach {"resume": true}, the memfd over
    the new doorbell, the verdict from the completion socket."""

    def __init__(self, path, memfd, params=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(scaled(10))
        self.sock.connect(path)
        self.sock.sendall(encode_frame(request('attach', id=1,
                                               params=params or {'resume': True})))
        data, fds, _, _ = socket.recv_fds(self.sock, 65536, 4)
        jlen = struct.unpack('>I', data[:4])[0]
        self.reply = json.loads(data[8:8 + jlen])
        self.bell = self.done = None
        self.verdict = None
        if 'error' in self.reply:
            return
        assert len(fds) == 2, fds
        self.bell = socket.socket(fileno=fds[0])
        self.done = socket.socket(fileno=fds[1])
        if memfd is not None:
            socket.send_fds(self.bell, [b'M'], memfd if isinstance(memfd, list) else [memfd])
            self.done.settimeout(scaled(10))
            first = self.done.recv(64)
            assert len(first) == 4, 'the first message is not the verdict: %r' % first
            self.verdict = struct.unpack('=i', first)[0]

    def close(self):
        for s in (self.sock, self.bell, self.done):
            if s is not None:
                s.close()


class ResumeTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='hyperamp-resume-')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.sock = os.path.join(self.tmp, 'ctl.sock')

    def daemon(self, crash=None, config=None):
        cfg = {'workers': 2}
        cfg.update(config or {})
        d = Daemon(cfg, socket_path=self.sock,
                   env={'HYPERAMP_TEST_CRASH': crash} if crash else None)
        d.check_clean_exit = crash is None
        return d

    def zclient(self, threads, requests):
        return subprocess.Popen([*harness.EXE_WRAPPER, ZCLIENT, self.sock, 'race', str(threads), str(requests)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=ZENV)

    def expect_race_ok(self, p, threads, requests):
        out, err = p.communicate(timeout=scaled(120))
        self.assertEqual(p.returncode, 0, out + err)
        self.assertIn('%d threads x %d requests, 0 failures' % (threads, requests), out)
        self.assertNotIn('failed', err)

    # -- every rule of the recovery, on memory made by hand --

    def test_recovery_rules(self):
        """COMMIT: the staged bytes are copied back, not computed again.
        TAKEN by a committed batch: run again.  TAKEN at or past sq_head:
        still on the ring, served once from there.  Counter moved since the
        take: answered already, left alone.  Unknown state or a range past
        the pool: counted, never followed."""
        lease = Lease()
        self.addCleanup(lease.close)
        lease.header()
        head = 1000
        d1, d2, d3, d6 = (random.Random(i).randbytes(16) for i in range(4))
        # 0: COMMIT, result staged, copy-back not done
        lease.set_data(0, b'P' * 16)
        lease.set_stage(0, b'S' * 16)
        lease.journal(0, J_COMMIT, head - 10, 0, 1, FLAG_SUCCESS, 0, 16)
        # 1: TAKEN in a committed batch, nothing run
        lease.set_data(64, d1)
        lease.journal(1, J_TAKEN, head - 5, 0, 1, 0, 64, 16)
        # 2: TAKEN, but the batch's commit point (sq_head) never moved
        lease.set_data(128, d2)
        lease.entry(2, 1, 128, 16)
        lease.journal(2, J_TAKEN, head, 0, 1, 0, 128, 16)
        lease.ring(head, [2])
        # 3: answered before the crash (counter 5 -> 6)
        lease.set_data(192, d3)
        lease.set_word(3, 6)
        lease.journal(3, J_TAKEN, head - 10, 5, 1, 0, 192, 16)
        # 4: a state no daemon writes
        lease.journal(4, 9, head - 10, 0, 1, 0, 0, 16)
        # 5: COMMIT for bytes past the pool (answered FAIL)
        lease.journal(5, J_COMMIT, head - 10, 0, 1, FLAG_SUCCESS, POOL - 6, 100)
        # 6: echo, TAKEN
        lease.set_data(256, d6)
        lease.journal(6, J_TAKEN, head - 10, 0, 66, 0, 256, 16)
        # 8: COMMIT with a flag no daemon writes (a reserved bit)
        lease.journal(8, J_COMMIT, head - 10, 0, 1, 0x9, 384, 16)
        # an event loop had armed the completion socket: its messages must
        # not come before the verdict
        lease.put('=I', 136, 1)

        with self.daemon(config={'zone_pool_size': POOL}) as d:
            r = Resume(d.socket_path, lease.fd)
            self.addCleanup(r.close)
            self.assertEqual(r.reply['result']['resume'], True)
            self.assertEqual(r.verdict, 0)
            wait_until(lambda: all(lease.word(i) == 1 for i in (0, 1, 2, 5, 6, 8)), 10,
                       'every recovered entry answered')
            wait_until(lambda: total(d, 'in_flight') == 0, 10, 'nothing running')
            self.assertEqual(lease.data(0, 16), b'S' * 16)
            self.assertEqual(lease.data(64, 16), xor_service(d1))
            self.assertEqual(lease.data(128, 16), xor_service(d2))   # once, not twice
            self.assertEqual(lease.data(192, 16), d3)
            self.assertEqual(lease.data(256, 16), d6)
            self.assertEqual([lease.flag(i) for i in (0, 1, 2, 5, 6, 8)],
                             [FLAG_SUCCESS] * 3 + [FLAG_FAIL, FLAG_SUCCESS, FLAG_FAIL])
            self.assertEqual((lease.word(3), lease.word(4), lease.flag(4)), (6, 0, 0))
            self.assertEqual(recovered(d), {'requeued': 2, 'republished': 1,
                                            'already_published': 1})
            self.assertEqual((total(d, 'bad_journal'), total(d, 'resumed')), (3, 1))
            self.assertEqual(lease.get('=I', 128), head + 1)       # sq_head published
            self.assertIn('journal record in an unknown state', d.log())
            # and the lease serves on: entry 7 through the ring and doorbell
            lease.set_data(320, d1)
            lease.entry(7, 2, 320, 16)
            lease.ring(head + 1, [7])
            r.bell.send(b'!')
            wait_until(lambda: lease.word(7) == 1, 10, 'a new request answered')
            self.assertEqual(lease.data(320, 16), xor_service(d1))

    # -- what the daemon refuses --

    def test_hostile_memory_refused(self):
        """Memory that could be resized under the workers, the wrong size,
        read-only, not a lease, or a lease attached right now: refused with
        the reason, counted, and the daemon serves on."""
        size = POOL_OFF + 2 * POOL
        with self.daemon(config={'zone_pool_size': POOL}) as d:
            plain = os.path.join(self.tmp, 'plain')
            with open(plain, 'wb') as f:
                f.truncate(size)
            sealed = Lease()
            self.addCleanup(sealed.close)
            cases = [
                ('not sealed', lambda: Lease(seal=False).fd, -1),            # EPERM
                ('a plain file', lambda: os.open(plain, os.O_RDWR), -1),     # EPERM
                ('wrong size', lambda: Lease(size=size + 4096).fd, -90),     # EMSGSIZE
                ('read-only', lambda: os.open('/proc/self/fd/%d' % sealed.fd, os.O_RDONLY),
                 -13),                                                       # EACCES
                ('no lease header', lambda: Lease().fd, -71),                # EPROTO
                ('two fds', lambda: [Lease().fd, Lease().fd], -22),          # EINVAL
            ]
            for n, (what, make, verdict) in enumerate(cases, 1):
                with self.subTest(what):
                    r = Resume(d.socket_path, make())
                    self.assertEqual(r.verdict, verdict)
                    r.close()
                    wait_until(lambda: total(d, 'resume_refused') == n, 10, 'counted')
            # a lease attached now: its memfd comes with a plain attach
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.addCleanup(s.close)
            s.connect(d.socket_path)
            s.sendall(encode_frame(request('attach', id=1)))
            _, fds, _, _ = socket.recv_fds(s, 65536, 4)
            self.assertEqual(len(fds), 3)
            r = Resume(d.socket_path, fds[2])
            self.assertEqual(r.verdict, -17)                                 # EEXIST
            r.close()
            for fd in fds:
                os.close(fd)
            # one connection handing back bad memory over and over: each
            # refusal counted, the log rate-limited
            r = Resume(d.socket_path, None)
            unsealed = Lease(seal=False)
            self.addCleanup(unsealed.close)
            r.done.settimeout(scaled(10))
            for _ in range(300):
                socket.send_fds(r.bell, [b'M'], [unsealed.fd])
                self.assertEqual(struct.unpack('=i', r.done.recv(64))[0], -1)
            r.close()
            wait_until(lambda: total(d, 'resume_refused') == len(cases) + 1 + 300, 10,
                       'every refusal counted')
            self.assertLess(d.log().count('was refused'), 30)
            bad = Resume(d.socket_path, None, params={'resume': 'yes'})
            self.assertEqual(bad.reply['error']['code'], 'E_INVALID')
            bad.close()
            self.assertIn('the lease memory it handed back was refused', d.log())
            p = self.zclient(2, 50)
            self.expect_race_ok(p, 2, 50)

    def test_other_pool_size(self):
        """A daemon restarted with another zone_pool_size cannot take the
        memory back: the waiting client is told (ECONNRESET), not hung."""
        with self.daemon(crash='zone_commit:40') as d:
            p = self.zclient(2, 400)
            self.assertEqual(wait_pid_exit(d.proc, scaled(30)), -9)
        with self.daemon(config={'zone_pool_size': 2 << 20}):
            out, err = p.communicate(timeout=scaled(60))
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('Connection reset by peer', err)

    def test_short_wait_while_another_thread_resumes(self):
        """One thread waits with no limit and resumes (no daemon for a
        while); another's 50 ms waits still return in time, and after the
        restart both requests are answered right."""
        with self.daemon() as d:
            d.check_clean_exit = False
            p = subprocess.Popen([*harness.EXE_WRAPPER, ZCLIENT, self.sock, 'resume-waits'], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=ZENV)
            self.assertEqual(p.stdout.readline().strip(), 'ready')
            d.signal(signal.SIGSTOP)     # nothing gets answered from here on
            p.stdin.write('\n')
            p.stdin.flush()
            self.assertEqual(p.stdout.readline().strip(), 'submitted')
            d.kill()
        p.stdin.write('\n')
        p.stdin.flush()
        line = p.stdout.readline()
        m = re.match(r'short waits: longest (\d+) ms, last (-?\d+)', line)
        self.assertTrue(m, line)
        self.assertEqual(int(m.group(2)), -110)                 # ETIMEDOUT
        self.assertLess(int(m.group(1)), scaled(1) * 1000)
        with self.daemon():
            out, err = p.communicate(timeout=scaled(60))
        self.assertEqual(p.returncode, 0, out + err)
        self.assertIn('results 1 1, bytes right', out)

    # -- a crash at each step --

    def test_crash_points(self):
        """The daemon kills itself at each step of taking and answering
        zone requests; the next one finishes them, and every answer is
        right."""
        cases = {
            # one record written, the batch's commit point not: the ring has it
            'zone_taking:30': lambda r: True,
            # records written, the batch's commit point not: the ring has them
            'zone_taken:30': lambda r: True,
            # result staged, COMMIT set, nothing copied back
            'zone_commit:40': lambda r: r['republished'] >= 1,
            # copied back, flag not set: copied again, still not computed twice
            'zone_copied:40': lambda r: r['republished'] >= 1,
            # flag set, counter not bumped
            'zone_flag:60': lambda r: r['republished'] + r['requeued'] >= 1,
        }
        for site, check in cases.items():
            with self.subTest(site=site):
                with self.daemon(crash=site) as d:
                    p = self.zclient(2, 300)
                    self.assertEqual(wait_pid_exit(d.proc, scaled(30)), -9,
                                     'the crash point %s was never reached' % site)
                with self.daemon() as second:
                    self.expect_race_ok(p, 2, 300)
                    rec = recovered(second)
                    self.assertTrue(check(rec), '%s: %r' % (site, rec))
                    self.assertEqual(total(second, 'resumed'), 1)
                    self.assertEqual(total(second, 'bad_journal'), 0)

    def test_crash_during_recovery(self):
        """Killed again while copying a staged result back: the third
        daemon finishes it."""
        with self.daemon(crash='zone_commit:40') as d:
            p = self.zclient(2, 300)
            self.assertEqual(wait_pid_exit(d.proc, scaled(30)), -9)
        with self.daemon(crash='zone_recover:1') as d:
            self.assertEqual(wait_pid_exit(d.proc, scaled(30)), -9,
                             'the second daemon never got to recover')
        with self.daemon() as third:
            self.expect_race_ok(p, 2, 300)
            self.assertGreaterEqual(recovered(third)['republished'], 1)

    # -- SIGKILL from outside, wherever it lands --

    def test_sigkill_under_load(self):
        """Five SIGKILLs at random moments while 4 threads keep a lease
        busy; each time a new daemon takes the lease back."""
        rnd = random.Random(os.environ.get('HYPERAMP_TEST_SEED', '7'))
        # Paced: each cycle lets every thread start 30 more requests and
        # kills after a random number of answers, so the client is still
        # going at every kill however fast the machine is.
        n = 200
        client = None
        totals = {}
        for _ in range(5):
            with self.daemon() as d:
                d.check_clean_exit = False
                if client is None:
                    client = harness.ProgressClient(
                        [*harness.EXE_WRAPPER, ZCLIENT, self.sock, 'race', 4, n, 'pace'], env=ZENV)
                for k, v in recovered(d).items():
                    totals[k] = totals.get(k, 0) + v
                client.go(30)
                client.wait_progress(client.done + 4 * rnd.randint(1, 29), 60)
                d.kill()
        with self.daemon() as d:
            rc, out, err = client.finish()      # stdin closed: runs to the end
            self.assertEqual(rc, 0, out + err)
            self.assertIn('4 threads x %d requests, 0 failures' % n, out)
            self.assertNotIn('failed', err)
            for k, v in recovered(d).items():
                totals[k] = totals.get(k, 0) + v
            self.assertEqual(total(d, 'resumed'), 1)
        print('\n5 SIGKILLs, %d requests verified; recovered: %r' % (4 * n, totals))

    def test_bench_shm_across_sigkills(self):
        """hyperampctl bench --transport shm over every service and size,
        through two SIGKILLs: every request answered and verified."""
        # Bounded by time, not count: a fast machine finished -n 60000
        # before a stats call had seen 1000 answers.
        duration = 30 if harness.WRAPPER else 5
        bench = None
        answered = 0
        for _ in range(2):
            with self.daemon() as d:
                d.check_clean_exit = False
                if bench is None:
                    bench = subprocess.Popen(
                        [*harness.EXE_WRAPPER, harness.HYPERAMPCTL, '--socket', self.sock, '--json', '--timeout',
                         str(int(scaled(30))), 'bench', '--transport', 'shm',
                         '--threads', '2', '-c', '16', '--mix', '--size', '4096',
                         '--duration', str(duration)],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                wait_until(lambda: total(d, 'completed') >= 1000 or bench.poll() is not None,
                           60, 'bench under way')
                self.assertIsNone(bench.poll(), 'bench finished before the kill')
                answered += total(d, 'completed')
                d.kill()
        with self.daemon() as d:
            out, err = bench.communicate(timeout=scaled(120))
            self.assertEqual(bench.returncode, 0, out + err)
            res = json.loads(out)
            self.assertEqual(res['failures'], 0, res)
            # Every answer verified, and the run went on after each kill.
            self.assertGreater(res['requests'], answered, res)
            self.assertGreater(total(d, 'completed'), 0)
            self.assertEqual(total(d, 'resumed'), 1)   # one lease, two threads
        print('\n2 SIGKILLs during bench --duration %d: %d requests verified, 0 failures'
              % (duration, res['requests']))

if __name__ == '__main__':
    unittest.main()
