# SPDX-License-Identifier: MIT
"""Zone channels: clients that submit through shared memory with libhyperamp.
The original report's race test (4 processes x 8 threads x 500), killed
clients, hostile clients, the slot limit, bench --transport shm, and a
program built against the installed library through pkg-config."""
import errno
import os
import shlex
import select
import shutil
import signal
import subprocess
import tempfile
import textwrap
import unittest

import harness
from harness import Daemon, run_ctl, scaled, wait_until

BUILD_ROOT = os.environ.get('HYPERAMP_BUILD_ROOT') or harness.BUILD
ZCLIENT = os.environ.get('ZCLIENT') or os.path.join(BUILD_ROOT, 'tests', 'zone', 'zclient')


def zones(stats):
    return [s for s in stats['sources'] if s['kind'] == 'shm']


def zclient(d, *args, timeout=60):
    p = subprocess.run([*harness.EXE_WRAPPER, ZCLIENT, d.socket_path] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=scaled(timeout))
    return p.returncode, p.stdout, p.stderr


class ZoneTest(unittest.TestCase):

    def assert_all_free(self, d):
        def free():
            zs = zones(d.stats())
            return all(z['state'] == 'free' and z['in_flight'] == 0 for z in zs) and zs
        zs = wait_until(free, 10, 'every zone slot to be free again')
        s = d.stats()
        self.assertEqual(s['pool']['buffers_in_use'], 0)
        self.assertEqual(s['queue']['in_flight'], 0)
        return zs

    def test_race_4_processes_8_threads_500(self):
        """The original report's race test, automated: every response is
        verified, none is lost or answered twice, and afterwards nothing is
        in use."""
        with Daemon() as d:
            procs = [subprocess.Popen([*harness.EXE_WRAPPER, ZCLIENT, d.socket_path, 'race', '8', '500'],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(4)]
            for p in procs:
                out, err = p.communicate(timeout=scaled(120))
                self.assertEqual(p.returncode, 0, err)
                self.assertIn('8 threads x 500 requests, 0 failures', out)
            zs = self.assert_all_free(d)
            # Four leases; a client that finishes first may give its slot back
            # before the next attaches, so count grants, not slots.
            self.assertEqual(sum(z['grants'] for z in zs), 4)
            self.assertEqual(sum(z['submitted'] for z in zs), 4 * 8 * 500)
            self.assertEqual(sum(z['completed'] for z in zs), 4 * 8 * 500)
            self.assertEqual(sum(z['failed'] for z in zs), 0)
            self.assertEqual(sum(z['bad_state'] + z['bad_index'] for z in zs), 0)

    def test_services_count_zone_requests(self):
        """issue 11: `hyperampctl --json stats` counts zone requests in
        services[], however they ran (the pool, or a polling worker
        inline); before, only socket requests were counted there."""
        with Daemon() as d:
            rc, out, err = zclient(d, 'race', '2', '50')      # 2 x 50, services 1, 2, 66
            self.assertEqual(rc, 0, err)

            def counted():
                s = d.ctl_json('stats')
                n = sum(x['requests'] for x in s['services'])
                return s if n >= 100 else None
            s = wait_until(counted, 10, 'the 100 zone requests counted per service')
            self.assertEqual(sum(x['requests'] for x in s['services']), 100)
            self.assertEqual(sum(x['failed'] for x in s['services']), 0)
            self.assertEqual(sum(z['completed'] for z in zones(s)), 100)
            self.assertEqual(s['requests']['submitted'], 0)   # none over the socket
            for x in s['services']:
                if x['requests']:
                    self.assertGreater(x['latency_us']['max'], 0, x)

    def test_killed_client_is_reclaimed(self):
        tmp = tempfile.mkdtemp(prefix='hyperamp-kill-')
        self.addCleanup(shutil.rmtree, tmp)
        fifo = os.path.join(tmp, 'stall')
        os.mkfifo(fifo)
        with Daemon({'zone_clients': 1, 'workers': 4},
                    env={'HYPERAMP_TEST_STALL_FIFO': fifo}) as d:
            p = subprocess.Popen([*harness.EXE_WRAPPER, ZCLIENT, d.socket_path, 'hold', '3'], stdout=subprocess.PIPE,
                                 text=True)
            self.assertEqual(p.stdout.readline().strip(), 'holding')

            # Every entry taken is running, not just queued: entries of a
            # client that has gone are abandoned unless already started.  A
            # pool worker runs one each; a polling worker runs its batch in
            # turn, so one of them is inside and the rest wait behind it.
            def all_started():
                z = zones(d.stats())[0]
                inside = harness.threads_reading(d.proc.pid, fifo)
                want = z['in_pool'] + (1 if z['in_flight'] > z['in_pool'] else 0)
                return z['in_flight'] == 3 and inside == want and z
            z = wait_until(all_started, 10, 'the three stall entries to start')
            self.assertEqual(z['state'], 'attached')
            p.kill()
            p.wait()
            # its three requests are still running: the slot waits for them
            wait_until(lambda: zones(d.stats())[0]['state'] == 'draining', 10, 'draining')
            rc, out, err = zclient(d, 'race', '1', '5')
            self.assertEqual(rc, 3, 'a second client got the only slot early')
            fd = os.open(fifo, os.O_WRONLY)
            os.write(fd, b'xyz')
            os.close(fd)
            self.assert_all_free(d)
            # and the slot serves a new client
            rc, out, err = zclient(d, 'race', '2', '50')
            self.assertEqual(rc, 0, err)
            self.assertEqual(zones(d.stats())[0]['grants'], 2)

    def stall_daemon(self, config):
        """A daemon with the stall service; returns it and the FIFO's write end."""
        tmp = tempfile.mkdtemp(prefix='hyperamp-poller-')
        self.addCleanup(shutil.rmtree, tmp)
        fifo = os.path.join(tmp, 'stall')
        entered = os.path.join(tmp, 'entered')
        os.mkfifo(fifo)
        os.mkfifo(entered)
        # Opened first, so the daemon's writes of "entered" have a reader.
        self.entered = os.open(entered, os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, self.entered)
        d = Daemon(config, env={'HYPERAMP_TEST_STALL_FIFO': fifo,
                                'HYPERAMP_TEST_STALL_ENTERED': entered})
        d.__enter__()
        self.addCleanup(d.__exit__, None, None, None)
        w = os.open(fifo, os.O_WRONLY)     # the daemon holds it open: no wait
        self.addCleanup(os.close, w)
        return d, w

    def stall_entered(self):
        """Wait (bounded) until a stall entry has begun: its worker is inside."""
        ready, _, _ = select.select([self.entered], [], [], scaled(10))
        if not ready or os.read(self.entered, 1) != b'e':
            self.fail('no stall entry began within %.0f s' % scaled(10))

    def drain_entered(self):
        try:
            while os.read(self.entered, 4096):
                pass
        except BlockingIOError:
            pass

    def hold_poller(self, d, w, n, mode='pollhold'):
        """A polling worker inside the only slot's lease, held there by a
        stall entry with n encrypt entries behind it in its batch.  The
        loop may take them instead (then the pool runs them and in_pool
        shows it): release and try again."""
        for _ in range(20):
            p = subprocess.Popen([*harness.EXE_WRAPPER, ZCLIENT, d.socket_path, mode, str(n)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.addCleanup(lambda p=p: (p.kill(), p.wait(), p.stdout.close(), p.stderr.close()))
            line = p.stdout.readline().strip()
            if line != 'taken':
                p.kill()
                self.fail('zclient pollhold: %r %s' % (line, p.stderr.read()))
            # all n + 1 taken: counted as they are handed over, just after
            z = wait_until(lambda: (lambda z: z if z['in_flight'] == n + 1 else None)(
                zones(d.stats())[0]), 10, '%d entries in flight' % (n + 1))
            if z['in_pool'] == 0:
                # in_flight counts them when handed over, before the worker
                # reaches the stall: a detach in that gap has it abandon
                # the entry instead of running it.
                self.stall_entered()
                return p, z
            p.kill()
            p.wait()
            os.write(w, b'x')
            self.assert_all_free(d)
            self.drain_entered()
        self.fail('no polling worker took the entries in 20 attempts')

    def test_loop_answers_while_poller_is_inside_closed_lease(self):
        """Issue 16 item 2: a client detaches while a polling worker runs
        its entries.  The loop used to spin in zone_reset() until the
        worker left (77-470 ms per detach at defaults, 5 s then "stuck").
        Now the teardown is deferred to the worker's exit: the loop answers
        while the worker is provably still inside (its stall entry has not
        returned), and the slot comes back when it leaves."""
        d, w = self.stall_daemon({'zone_clients': 1, 'workers': 2, 'poll_us': 100000})
        p, z0 = self.hold_poller(d, w, 0)
        with d.client() as c:
            p.kill()
            p.wait()

            def detached():
                z = zones(c.stats())[0]
                return z['state'] != 'attached' and z
            z = wait_until(detached, 10, 'the detach to be seen')
            # its stall entry, run by the worker inside, not by the pool
            self.assertEqual((z['state'], z['in_flight'], z['in_pool']), ('draining', 1, 0))
            self.assertEqual(z['teardown_deferred'] - z0['teardown_deferred'], 1)
            # the worker is still inside: nothing of that batch completed
            self.assertEqual(z['completed'], z0['completed'])
            self.assertTrue(c.ping()['pong'])
            self.assertEqual(zones(c.stats())[0]['state'], 'draining')
            # the slot is not free yet: a new client is told to come back
            rc, out, err = zclient(d, 'race', '1', '1')
            self.assertEqual(rc, 3, err)
        os.write(w, b'x')
        z = self.assert_all_free(d)[0]
        self.assertEqual(z['teardown_deferred'] - z0['teardown_deferred'], 1)
        rc, out, err = zclient(d, 'race', '2', '50')
        self.assertEqual(rc, 0, err)
        self.assertNotIn('stays out of use', d.log())

    def test_closed_lease_with_poller_inside_is_reclaimed(self):
        """Issue 16 item 1: a polling worker runs a batch of a client that
        detaches.  It used to run the whole batch while the loop spun, and
        after 5 s the slot was marked stuck for good, its memory mapped.
        Now the worker stops after the entry it is running (the rest are
        abandoned, answered FAIL), and the slot is reclaimed when it leaves:
        three rounds on one slot, no lease memory left mapped."""
        n = 100
        d, w = self.stall_daemon({'zone_clients': 1, 'workers': 2, 'poll_us': 100000})
        for rnd in range(3):
            with self.subTest(round=rnd):
                p, z0 = self.hold_poller(d, w, n)
                p.kill()
                p.wait()
                wait_until(lambda: zones(d.stats())[0]['state'] == 'draining', 10, 'draining')
                os.write(w, b'x')     # the stall entry returns; the worker checks
                z = self.assert_all_free(d)[0]
                self.assertEqual(z['abandoned'] - z0['abandoned'], n)
                self.assertEqual(z['teardown_deferred'] - z0['teardown_deferred'], 1)
                with open('/proc/%d/maps' % d.proc.pid) as f:
                    self.assertNotIn('hyperamp-zone', f.read())
        rc, out, err = zclient(d, 'race', '2', '50')
        self.assertEqual(rc, 0, err)

    def test_entries_run_as_taken_not_as_journaled(self):
        """Issue 16 item 16, zones: an entry runs from the daemon's own
        record of what it took, not from the journal record in the lease,
        which the client can rewrite between the take and the run."""
        d, w = self.stall_daemon({'zone_clients': 1, 'workers': 2, 'poll_us': 100000})
        p, z0 = self.hold_poller(d, w, 20, 'pollhold-journal')
        os.write(w, b'x')     # the stall returns; the 20 encrypt entries run
        out, err = p.communicate(timeout=scaled(60))
        self.assertIn('journal: 20 ran as submitted, 0 did not', out, err)
        self.assertEqual(p.returncode, 0, err)
        self.assert_all_free(d)

    def test_hostile_clients(self):
        """Out-of-range index, a garbage ring tail, offset+length past the
        pool, length 0, an entry submitted twice: logged, counted, skipped
        or failed, and the daemon keeps serving."""
        with Daemon({'zone_clients': 2}) as d:
            expect = {'index': 'bad_index', 'tail': 'bad_ring', 'range': 'bad_range',
                      'zero': 'bad_range', 'twice': 'bad_state'}
            for mode, counter in expect.items():
                with self.subTest(mode):
                    before = sum(z[counter] for z in zones(d.stats()))
                    rc, out, err = zclient(d, 'hostile', mode)
                    self.assertEqual(rc, 0, err)
                    after = wait_until(
                        lambda: sum(z[counter] for z in zones(d.stats())) > before and
                        sum(z[counter] for z in zones(d.stats())), 10, counter)
                    self.assertGreater(after, before)
                    rc, out, err = zclient(d, 'race', '2', '20')
                    self.assertEqual(rc, 0, err)
            self.assert_all_free(d)
            self.assertIn('entry index out of range', d.log())
            self.assertIn('submission ring tail out of range', d.log())

    def test_completion_fd(self):
        """The non-blocking way: the completion eventfd becomes readable,
        with polling on (a worker may answer first) and off (the pool does)."""
        for poll_us in (50, 0):
            with self.subTest(poll_us=poll_us):
                with Daemon({'poll_us': poll_us}) as d:
                    rc, out, err = zclient(d, 'fd', '200')
                    self.assertEqual(rc, 0, err)
                    self.assertIn('fd: 200 requests, 0 failures', out)
                    self.assert_all_free(d)

    def test_abusive_clients_do_not_stall_others(self):
        """A client flooding its ring with failing entries, and one that makes
        its completion channel blocking and never reads it, while an honest
        client works: with busy polling and without."""
        for poll_us in (0, 50):
            with self.subTest(poll_us=poll_us):
                with Daemon({'poll_us': poll_us, 'workers': 2}) as d:
                    bad = [subprocess.Popen([*harness.EXE_WRAPPER, ZCLIENT, d.socket_path, 'hostile', m],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True) for m in ('flood', 'fdblock')]
                    rc, out, err = zclient(d, 'race', '4', '200')
                    self.assertEqual(rc, 0, err)
                    rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello')
                    self.assertEqual((rc, out), (0, bytes.fromhex('164e2c2f12')), err)
                    for p in bad:
                        out, err = p.communicate(timeout=scaled(60))
                        self.assertEqual(p.returncode, 0, err)
                    self.assert_all_free(d)

    def test_slot_limit(self):
        with Daemon({'zone_clients': 1}) as d:
            p = subprocess.Popen([*harness.EXE_WRAPPER, ZCLIENT, d.socket_path, 'hold', '0'], stdout=subprocess.PIPE,
                                 text=True)
            self.assertEqual(p.stdout.readline().strip(), 'holding')
            rc, out, err = zclient(d, 'race', '1', '1')
            self.assertEqual(rc, 3)
            self.assertIn('busy', err.lower())
            p.kill()
            p.wait()
            self.assert_all_free(d)

    def test_zone_channels_off(self):
        """Issue 16 item 15: with zone_clients 0 an attach is refused for
        good (E_DISABLED), not with E_LIMIT's "every slot is taken", which
        reads as try-again; libhyperamp says -EOPNOTSUPP and hyperampctl
        exits 1 (a refusal), not 69 (unavailable)."""
        with Daemon({'zone_clients': 0}) as d:
            with d.client() as c:
                rep, _ = c.call('attach')
                self.assertEqual(rep['error']['code'], 'E_DISABLED', rep)
                self.assertIn('zone_clients', rep['error']['message'])
                self.assertTrue(c.ping()['pong'])     # the connection stays usable
            rc, out, err = zclient(d, 'race', '1', '1')
            self.assertEqual(rc, 3)
            self.assertIn(os.strerror(errno.EOPNOTSUPP), err)
            rc, out, err = d.ctl('bench', '--transport', 'shm', '-n', '1')
            self.assertEqual(rc, 1, err)
            self.assertIn('zone_clients', err.decode() if isinstance(err, bytes) else err)
            self.assertEqual(zones(d.stats()), [])

    def test_bench_shm(self):
        with Daemon() as d:
            for args in (['-c', '64', '--threads', '4', '-n', '10000', '-s', 'encrypt'],
                         ['-c', '1', '-n', '500', '-s', 'echo', '--size', '65536']):
                rc, out, err = d.ctl('--json', 'bench', '--transport', 'shm', *args)
                self.assertEqual(rc, 0, err)
                b = harness.json.loads(out)
                self.assertEqual((b['transport'], b['failures']), ('shm', 0))
            zs = self.assert_all_free(d)
            self.assertEqual(sum(z['completed'] for z in zs), 10500)
            s = d.stats()
            self.assertEqual(s['requests']['submitted'], 0)     # none went through the socket

    def test_lease_outlives_client_timeout(self):
        """A zone client talks through shared memory, so its control
        connection stays quiet: client_timeout_ms must not take its lease
        away (the soak found that it did, after the default 60 s)."""
        with Daemon({'client_timeout_ms': 200}) as d:
            rc, out, err = d.ctl('--json', 'bench', '--transport', 'shm', '-c', '1',
                                 '--duration', '2')
            self.assertEqual(rc, 0, err)
            self.assertEqual(harness.json.loads(out)['failures'], 0)
            self.assertEqual(d.stats()['connections']['timeouts'], 0)
            self.assert_all_free(d)


class PkgConfigTest(unittest.TestCase):

    def test_program_built_with_pkg_config(self):
        """Install into a scratch prefix, build a program with
        `pkg-config --cflags --libs hyperamp`, run it against the daemon."""
        # A cross build names its compiler (with the sysroot's flags).
        cc = shlex.split(os.environ.get('HYPERAMP_CC', '')) or [shutil.which('cc')]
        if not cc[0] or not shutil.which('pkg-config'):
            self.skipTest('no C compiler or pkg-config')
        opts = harness.json.loads(subprocess.run(
            ['meson', 'introspect', '--buildoptions', BUILD_ROOT], capture_output=True,
            text=True, check=True).stdout)
        if [o for o in opts if o['name'] == 'b_sanitize'][0]['value'] != 'none':
            self.skipTest('a sanitizer build: the plain build runs this test')
        tmp = tempfile.mkdtemp(prefix='hyperamp-pc-')
        self.addCleanup(shutil.rmtree, tmp)
        dest = os.path.join(tmp, 'root')
        subprocess.run(['meson', 'install', '-C', BUILD_ROOT, '--destdir', dest, '--quiet'],
                       check=True, capture_output=True, timeout=120)
        prefix = subprocess.run(['meson', 'introspect', '--buildoptions', BUILD_ROOT],
                                capture_output=True, text=True, check=True).stdout
        prefix = [o for o in harness.json.loads(prefix) if o['name'] == 'prefix'][0]['value']
        pcdirs = [os.path.join(dirpath) for dirpath, _, files in os.walk(dest)
                  if 'hyperamp.pc' in files]
        self.assertTrue(pcdirs, 'hyperamp.pc was not installed')
        env = dict(os.environ, PKG_CONFIG_PATH=pcdirs[0], PKG_CONFIG_SYSROOT_DIR=dest)
        flags = subprocess.run(['pkg-config', '--cflags', '--libs', 'hyperamp'], env=env,
                               capture_output=True, text=True, check=True).stdout.split()
        # The public header needs no cJSON: its include path must not leak.
        leak = subprocess.run(['pkg-config', '--print-requires-private', '--cflags', 'hyperamp'],
                              env=env, capture_output=True, text=True, check=True).stdout
        self.assertNotIn('cjson', leak.lower())
        src = os.path.join(tmp, 'hello.c')
        with open(src, 'w') as f:
            f.write(textwrap.dedent('''\
                #include <hyperamp/hyperamp.h>
                #include <stdio.h>
                #include <string.h>
                int main(int argc, char **argv) {
                        static const unsigned char want[] = { 0x16, 0x4e, 0x2c, 0x2f, 0x12 };
                        hyperamp_t *h; hyperamp_req_t *r;
                        if (hyperamp_attach(argv[1], &h) < 0) return 3;
                        if (hyperamp_alloc(h, 5, &r) < 0) return 4;
                        memcpy(hyperamp_req_data(r), "hello", 5);
                        if (hyperamp_submit(r, HYPERAMP_SERVICE_ENCRYPT, 5) < 0) return 5;
                        if (hyperamp_wait(r, 5000) != HYPERAMP_SUCCESS) return 6;
                        int ok = memcmp(hyperamp_req_data(r), want, 5) == 0;
                        hyperamp_release(r);
                        hyperamp_detach(h);
                        puts(ok ? "verified" : "wrong bytes");
                        return ok ? 0 : 1;
                }
                '''))
        exe = os.path.join(tmp, 'hello')
        subprocess.run(cc + [src, '-o', exe] + flags, check=True, timeout=60)
        libdir = [f[2:] for f in flags if f.startswith('-L')]
        with Daemon() as d:
            p = subprocess.run([*harness.EXE_WRAPPER, exe, d.socket_path], capture_output=True,
                               text=True,
                               env=dict(os.environ, LD_LIBRARY_PATH=':'.join(libdir)),
                               timeout=scaled(30))
            self.assertEqual((p.returncode, p.stdout.strip()), (0, 'verified'), p.stderr)
        self.assertTrue(prefix)


if __name__ == '__main__':
    unittest.main()
