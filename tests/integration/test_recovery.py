# SPDX-License-Identifier: MIT
"""SIGKILL of hyperampd while a v1 client keeps its shared-memory queue busy,
then a restart: every request the daemon took is answered exactly once.

The client (tests/v1/v1client.c `rounds`) checks every result against the
expected bytes; a request run twice comes back wrong (the XOR services undo
themselves) or with a FAIL for a non-zero flag, and a lost one times out.
The daemon's journal (docs/hyperamp-v1.md, "Crashes") is what makes the
difference: without it a batch taken before the kill is never answered."""
import os
import random
import re
import selectors
import shutil
import subprocess
import tempfile
import unittest

import harness
from harness import Daemon, scaled, shm_path, unique_shm_name, wait_pid_exit
from test_v1 import MARK_BUSY, V1CLIENT, Rig, source


class Client:
    """v1client `rounds R K` in the background, its progress read as it comes."""

    def __init__(self, rig, rounds, k):
        self.rounds, self.k = rounds, k
        cmd = [V1CLIENT, '--shm-config', rig.cfg, '--mem', rig.mem, '--doorbell', rig.bell,
               '--base', hex(0x7E000000), '--timeout-ms', str(int(scaled(15000))), '--init',
               'rounds', str(rounds), str(k)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.out = b''
        self.done = 0

    def wait_progress(self, at_least, timeout):
        """Block on the client's stdout until it reports at_least answers."""
        deadline = harness.time.monotonic() + timeout
        while self.done < at_least:
            left = deadline - harness.time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise AssertionError('client at %d answers, waited for %d' % (self.done,
                                                                              at_least))
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError('client exited early: %r %r' % (
                    self.out, self.proc.stderr.read()))
            self.out += chunk
            found = re.findall(rb'progress (\d+)', self.out)
            if found:
                self.done = int(found[-1])

    def finish(self):
        out, err = self.proc.communicate(timeout=scaled(120))
        self.out += out
        self.sel.close()
        return self.proc.returncode, self.out.decode(), err.decode()


class RecoveryTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix='hyperamp-rec-')
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.shm = unique_shm_name()
        self.addCleanup(self.remove_journal)

    def journal(self):
        return shm_path(self.shm) + '.v1.npu'

    def remove_journal(self):
        if os.path.lexists(self.journal()):
            os.unlink(self.journal())

    def daemon(self, rig, env=None):
        return Daemon({'workers': 2, 'shm_name': self.shm, 'v1_channels': [rig.channel()]},
                      env=env)

    def expect_all_ok(self, client):
        rc, out, err = client.finish()
        total = client.rounds * client.k
        self.assertEqual(rc, 0, out + err)
        self.assertIn('rounds %d x %d: %d ok, 0 bad' % (client.rounds, client.k, total), out)

    def test_crash_points(self):
        """The daemon kills itself at each step of taking and answering a
        batch; the next daemon finishes the batch, and nothing is answered
        twice.  What the journal did is in the new daemon's stats."""
        # site -> (what stats['recovered'] must show)
        cases = {
            'v1_taken': lambda r: r['requeued'] == 8,       # before the list was cut
            'v1_cut': lambda r: r['requeued'] == 8,         # before any worker ran
            'v1_commit': lambda r: r['republished'] >= 1,   # result written, flag not
            'v1_published': lambda r: r['already_published'] + r['abandoned'] >= 1,
        }
        for site, check in cases.items():
            with self.subTest(site=site):
                os.mkdir(os.path.join(self.tmp, site))
                rig = Rig(os.path.join(self.tmp, site), name='npu')
                first = self.daemon(rig, env={'HYPERAMP_TEST_CRASH': site + ':3'})
                first.check_clean_exit = False
                with first:
                    client = Client(rig, 4, 8)
                    rc = wait_pid_exit(first.proc, scaled(20))
                    self.assertEqual(rc, -9, 'the crash point was never reached')
                    self.assertTrue(os.path.exists(self.journal()))
                    self.assertEqual(os.stat(self.journal()).st_mode & 0o777, 0o600)
                with self.daemon(rig) as second:
                    self.expect_all_ok(client)
                    rec = source(second)['recovered']
                    self.assertTrue(check(rec), '%s: %r' % (site, rec))
                    self.assertEqual(source(second)['in_flight'], 0)
                self.assertFalse(os.path.exists(self.journal()))

    def test_sigkill_under_load(self):
        """Five SIGKILLs at random moments, each with a batch handed over, in
        a run of 32-request batches: every request answered once and right."""
        rig = Rig(self.tmp, name='npu')
        rnd = random.Random(os.environ.get('HYPERAMP_TEST_SEED', '5'))
        kills, totals = 0, {}
        client = None
        for i in range(5):
            d = self.daemon(rig)
            d.check_clean_exit = False
            with d:
                if client is None:
                    # Fewer under valgrind; the kills come in the first 5,000.
                    client = Client(rig, 400 if harness.WRAPPER else 2000, 32)
                self.add_recovered(totals, source(d)['recovered'])
                client.wait_progress(client.done + rnd.randint(32, 1000), scaled(60))
                # Kill with a batch handed over: the client has set BUSY.
                # A batch lasts microseconds: spin on the mark, bounded.
                deadline = harness.time.monotonic() + scaled(10)
                while rig.header()[0] != MARK_BUSY:
                    self.assertLess(harness.time.monotonic(), deadline, 'never BUSY')
                d.proc.kill()
                self.assertEqual(wait_pid_exit(d.proc, scaled(10)), -9)
                kills += 1
        with self.daemon(rig) as d:
            self.add_recovered(totals, source(d)['recovered'])
            self.expect_all_ok(client)
        print('\n%d SIGKILLs, %d requests verified; recovered: %r'
              % (kills, client.rounds * client.k, totals))
        self.assertGreater(sum(totals.values()), 0, 'no kill ever caught a batch in flight')

    @staticmethod
    def add_recovered(totals, rec):
        for k, v in rec.items():
            totals[k] = totals.get(k, 0) + v

    def test_journal_must_be_private(self):
        """A journal someone else could read or write is refused at start."""
        rig = Rig(self.tmp, name='npu')
        fd = os.open(self.journal(), os.O_CREAT | os.O_WRONLY, 0o600)
        os.fchmod(fd, 0o644)
        os.close(fd)
        failed = harness.start_expect_failure({'workers': 2, 'shm_name': self.shm,
                                               'v1_channels': [rig.channel()]})
        self.assertEqual(failed.rc, 1)
        self.assertIn('expected uid %d and mode 0600' % os.geteuid(), failed.log)
        self.assertFalse(os.path.exists(failed.shm_file))


if __name__ == '__main__':
    unittest.main()
