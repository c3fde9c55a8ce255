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
import shutil
import subprocess
import tempfile
import time
import unittest

import harness
from harness import Daemon, scaled, shm_path, unique_shm_name, wait_pid_exit
from test_v1 import BASE, MARK_BUSY, V1CLIENT, Rig, source


class Client(harness.ProgressClient):
    """v1client in the background, its progress read as it comes."""

    def __init__(self, rig, *command, init=True, pace=False):
        cmd = [*harness.EXE_WRAPPER, V1CLIENT, '--shm-config', rig.cfg, '--mem', rig.mem, '--doorbell', rig.bell,
               '--base', hex(BASE), '--timeout-ms', str(int(scaled(15000)))]
        cmd += ['--init'] if init else ['--no-init']
        cmd += ['--pace'] if pace else []
        super().__init__(cmd + list(command))


def spin_until(cond, timeout, what):
    """For states that last microseconds: a bounded spin, no sleeping."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError('never ' + what)


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

    def rig(self, sub):
        os.mkdir(os.path.join(self.tmp, sub))
        return Rig(os.path.join(self.tmp, sub), name='npu')

    def daemon(self, rig, crash=None):
        d = Daemon({'workers': 2, 'shm_name': self.shm, 'v1_channels': [rig.channel()]},
                   env={'HYPERAMP_TEST_CRASH': crash} if crash else None)
        d.check_clean_exit = crash is None
        return d

    def crash(self, rig, site):
        """A daemon that kills itself at site; returns when it has."""
        with self.daemon(rig, crash=site) as d:
            yield d
            self.assertEqual(wait_pid_exit(d.proc, scaled(20)), -9,
                             'the crash point %s was never reached' % site)
        self.assertTrue(os.path.exists(self.journal()))
        self.assertEqual(os.stat(self.journal()).st_mode & 0o777, 0o600)

    def expect_ok(self, client, line):
        rc, out, err = client.finish()
        self.assertEqual(rc, 0, out + err)
        self.assertIn(line, out)

    def test_crash_points(self):
        """The daemon kills itself at each step of taking and answering a
        batch (the 3rd of four batches of 8); the next daemon finishes it.
        The client checks every byte, so a lost request (timeout) or one run
        twice (the XOR undone, or FAIL for a flag already set) fails."""
        cases = {
            # 4th TAKEN record of 8: the list was never cut, the scan retakes it
            'v1_taking:20': lambda r: r['requeued'] == 0 and r['abandoned'] == 0,
            # recorded, list half cut (nxt_idx done, head not): cut again, run all
            'list_cut:3': lambda r: r['requeued'] == 8,
            # cut, nothing run yet
            'v1_cut:3': lambda r: r['requeued'] == 8,
            # COMMIT recorded, nothing written back yet: publish the staged bytes
            'v1_commit:19': lambda r: r['republished'] >= 1,
            # a result written back, its flag not: write it again, publish
            'v1_copied:19': lambda r: r['republished'] >= 1,
            # flag published, FREE not recorded: leave it alone
            'v1_published:19': lambda r: r['already_published'] + r['abandoned'] >= 1,
        }
        for site, check in cases.items():
            with self.subTest(site=site):
                rig = self.rig(site.split(':')[0])
                for _ in self.crash(rig, site):
                    client = Client(rig, 'rounds', 4, 8)
                with self.daemon(rig) as second:
                    self.expect_ok(client, 'rounds 4 x 8: 32 ok, 0 bad')
                    rec = source(second)['recovered']
                    self.assertTrue(check(rec), '%s: %r' % (site, rec))
                    self.assertEqual(source(second)['in_flight'], 0)
                self.assertFalse(os.path.exists(self.journal()))

    def test_crash_during_recovery(self):
        """Killed again while finishing a COMMIT: the third start finishes it."""
        rig = self.rig('twice')
        for _ in self.crash(rig, 'v1_commit:19'):
            client = Client(rig, 'rounds', 4, 8)
        again = harness.start_expect_failure(
            {'workers': 2, 'shm_name': self.shm, 'v1_channels': [rig.channel()]},
            env={'HYPERAMP_TEST_CRASH': 'v1_recover:1'})
        self.assertEqual(again.rc, -9, again.log)
        with self.daemon(rig) as third:
            self.expect_ok(client, 'rounds 4 x 8: 32 ok, 0 bad')
            self.assertGreaterEqual(source(third)['recovered']['republished'], 1)

    def test_client_formats_again(self):
        """The client restarts (formats its queue again, same size) while the
        daemon is down: the journalled batch is not the client's any more and
        is left alone (its entries are on the new client's lists, or handed
        over again); the new requests are served once."""
        rig = self.rig('format')
        for _ in self.crash(rig, 'v1_cut:1'):
            old = Client(rig, 'batch', 8)
        old.kill()
        # Stand in for the interrupt line while no daemon holds the FIFO.
        line = os.open(rig.bell, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, line)
        new = Client(rig, 'batch', 4)
        # The original client's init sets IDLE, so the new batch (3->2->1->0)
        # is handed over at once, into entries the journal also names.
        spin_until(lambda: rig.header()[4] == 3 or new.proc.poll() is not None, scaled(10),
                   'the new batch handed over')
        if new.proc.poll() is not None:
            self.fail('the new client died: %r' % (new.finish(),))
        with self.daemon(rig) as d:
            self.expect_ok(new, 'batch 4: 4 ok, 0 bad')
            rec = source(d)['recovered']
            self.assertEqual((rec['requeued'], rec['abandoned']), (0, 8), rec)
            self.assertEqual(source(d)['bad_flag'], 0)

    def test_sigkill_under_load(self):
        """Five SIGKILLs from outside at random moments of a run of 64,000
        requests in batches of 32: every one answered once and right.  (The
        crash points above make sure each step of a batch is hit; this is
        the real thing, wherever the kill lands.)"""
        rig = self.rig('load')
        rnd = random.Random(os.environ.get('HYPERAMP_TEST_SEED', '5'))
        rounds = 200 if harness.WRAPPER else 2000
        client = None
        totals = {}
        for _ in range(5):
            with self.daemon(rig) as d:
                d.check_clean_exit = False
                if client is None:
                    client = Client(rig, 'rounds', rounds, 32, pace=True)
                self.add_recovered(totals, source(d)['recovered'])
                # Kill while the client is still going: 30 batches allowed,
                # the kill after a random number of them.
                client.go(30)
                client.wait_progress(client.done + 32 * rnd.randint(1, 29), 60)
                d.kill()
                self.assertEqual(d.proc.returncode, -9)
        with self.daemon(rig) as d:
            self.add_recovered(totals, source(d)['recovered'])
            self.expect_ok(client, 'rounds %d x 32: %d ok, 0 bad' % (rounds, rounds * 32))
        print('\n5 SIGKILLs, %d requests verified; recovered: %r' % (rounds * 32, totals))

    @staticmethod
    def add_recovered(totals, rec):
        for k, v in rec.items():
            totals[k] = totals.get(k, 0) + v

    def test_journal_must_be_private(self):
        """A journal someone else could read or write is refused at start."""
        rig = self.rig('private')
        fd = os.open(self.journal(), os.O_CREAT | os.O_WRONLY, 0o600)
        os.fchmod(fd, 0o644)
        os.close(fd)
        failed = harness.start_expect_failure({'workers': 2, 'shm_name': self.shm,
                                               'v1_channels': [rig.channel()]})
        self.assertEqual(failed.rc, 1)
        self.assertIn('expected uid %d, mode 0600 and one link' % os.geteuid(), failed.log)
        self.assertFalse(os.path.exists(failed.shm_file))


if __name__ == '__main__':
    unittest.main()
