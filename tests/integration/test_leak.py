# SPDX-License-Identifier: MIT
"""The leak test (issue 5): 100 client runs x 100 requests against one
daemon, each run a separate hyperampctl process that mixes every service
and sizes 16 B .. 64 KiB and verifies every reply.  Afterwards stats show no
buffer, entry, connection or zone slot in use, the daemon holds exactly the
file descriptors it held before the first run and no zone lease mapping,
and its private RSS after the last run is within RSS_SLACK_KB of its RSS
after a warm-up of the first runs.  Once over the control socket, once
through shared memory (a lease attached and given back per run).

The measured figures are printed (on stderr, in the test log) so that they
can be quoted."""
import json
import os
import sys
import unittest

import harness
from harness import Daemon, wait_until

RUNS = 100
REQUESTS = 100
WARMUP = 10

# The daemon's private RSS (RssAnon: heap and stacks) may grow by this much
# from the end of the warm-up to the last run.  Measured first: the heap's
# bytes in use stay flat over the runs (malloc_stats, massif), yet RSS keeps
# rising for a few hundred runs as malloc settles: it carves small blocks
# out of ever new parts of a large free chunk and keeps the high-water mark
# of bursts (64 requests of up to 64 KiB in flight).  With glibc's default
# mmap threshold RssAnon grew +196..+676 KiB over the 90 runs after the
# warm-up (20 test runs).  Fixing the threshold at 32 KiB (MALLOC_TUNABLES), so
# that a freed large buffer goes back to the kernel at once, lowers the
# level and the spread: -40..+384 KiB (18 test runs, some beside other load).
# What 512 KiB catches: 64 bytes kept per request is 700 KiB over the 9000
# requests, 2 KiB kept per connection 630 KiB over the ~315 connections.
# Smaller leaks are the soak's to find (bench/soak.py: millions of
# requests).  RssShmem is the shared pool (its use is checked exactly in
# stats) and lease memory (checked by its mappings), so it is left out.
RSS_SLACK_KB = 512
MALLOC_TUNABLES = 'glibc.malloc.mmap_threshold=32768'


def proc_status(pid):
    """The VmRSS/RssAnon/RssFile/RssShmem lines of /proc/PID/status, in KiB."""
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            key, _, val = line.partition(':')
            if key in ('VmRSS', 'RssAnon', 'RssFile', 'RssShmem'):
                out[key] = int(val.split()[0])
    return out


def fd_links(pid):
    """The daemon's open fds: {fd: what it refers to}."""
    d = '/proc/%d/fd' % pid
    out = {}
    for fd in os.listdir(d):
        try:
            out[int(fd)] = os.readlink(os.path.join(d, fd))
        except FileNotFoundError:
            pass        # closed while we looked
    return out


def lease_maps(pid):
    """Mappings of zone lease memory (memfd "hyperamp-zone") in the daemon."""
    with open('/proc/%d/maps' % pid) as f:
        return sum('memfd:hyperamp-zone' in line for line in f)


def instrumented(pid):
    """Why RSS says nothing about leaks in this daemon, or None.

    ASan keeps freed memory in quarantine and TSan grows its shadow memory,
    so RSS rises with traffic without any leak (ASan's own leak check covers
    those builds); under a wrapper the process is the tool's."""
    if harness.WRAPPER:
        return 'runs under %s' % harness.WRAPPER[0]
    with open('/proc/%d/maps' % pid) as f:
        maps = f.read()
    for lib in ('libasan', 'libtsan', 'libmsan'):
        if lib in maps:
            return 'is built with %s' % lib
    return None


class LeakTest(unittest.TestCase):

    # The full 100 x 100 under a wrapper too: under valgrind memcheck both
    # tests take 15 s, under ASan 43 s, under TSan 55 s (2 cores).
    runs = RUNS

    def one_run(self, d, i, transport):
        """Run i: one hyperampctl process, REQUESTS requests mixing every
        service and sizes 16 B .. 64 KiB, each reply verified by bench."""
        if transport == 'socket':
            # concurrency and connections: one at a time up to 8 connections
            c, k = [(1, 1), (8, 1), (16, 4), (64, 8)][i % 4]
            args = ['-c', c, '--connections', k]
        else:
            c, t = [(1, 1), (8, 1), (16, 2), (64, 2)][i % 4]
            args = ['--transport', 'shm', '-c', c, '--threads', t]
        rc, out, err = d.ctl('--json', 'bench', '--mix', '-n', REQUESTS, *args,
                             timeout=harness.scaled(30))
        self.assertEqual(rc, 0, 'run %d: %s' % (i, err))
        b = json.loads(out)
        self.assertEqual(b['requests'], REQUESTS, 'run %d' % i)
        self.assertEqual(b['failures'], 0, 'run %d: %s' % (i, err))

    def settled(self, d):
        """Wait (bounded) until the daemon holds no client but our own stats
        connection and every zone slot is free; then, with that connection
        still open, count its fds and read its RSS.  The daemon closes a
        client's resources after the client has gone, so there is no event
        to wait on: a client never let go shows up as a timeout here."""
        pid = d.proc.pid

        def idle():
            s = c.stats()
            zones = [z for z in s['sources'] if z['kind'] == 'shm']
            if (s['connections']['current'] == 1 and s['queue']['in_flight'] == 0
                    and s['pool']['buffers_in_use'] == 0
                    and all(z['state'] == 'free' for z in zones)):
                return s
            return None
        with d.client() as c:
            try:
                s = wait_until(idle, 10, 'no client left in stats')
            except AssertionError:
                s = c.stats()
                raise AssertionError(
                    'still in use after 10 s: connections %d (ours is 1), queue in flight %d, '
                    'pool buffers %d, zone slots not free %r'
                    % (s['connections']['current'], s['queue']['in_flight'],
                       s['pool']['buffers_in_use'],
                       [(z['name'], z['state'], z['pid']) for z in s['sources']
                        if z['kind'] == 'shm' and z['state'] != 'free'])) from None
            return s, fd_links(pid), proc_status(pid)

    def assert_nothing_in_use(self, s):
        q, p = s['queue'], s['pool']
        self.assertEqual(q['in_flight'], 0)
        self.assertEqual(q['depth'], 0)
        self.assertEqual(q['free'], q['capacity'])
        self.assertEqual(p['buffers_in_use'], 0)
        self.assertEqual(p['bytes_in_use'], 0)
        self.assertEqual(p['largest_free'], p['size'])
        # our own stats connection is the one left
        self.assertEqual(s['connections']['current'], 1)
        for z in s['sources']:
            if z['kind'] == 'shm':
                self.assertEqual(z['state'], 'free', z['name'])
                self.assertEqual(z['pid'], 0, z['name'])
                self.assertEqual(z['in_flight'], 0, z['name'])
                self.assertEqual(z['submitted'], z['completed'], z['name'])

    def report(self, transport, pid, fds, rss, warmup, s, leases):
        zones = [z for z in s['sources'] if z['kind'] == 'shm']
        print('\n%s: %d runs x %d requests over %s, daemon pid %d\n'
              '  fds (with one stats connection open): start %d, after warm-up (%d runs) %d, '
              'end %d\n'
              '  RSS KiB     start / warm-up /   end  (end - warm-up)\n%s'
              '  zone lease mappings at the end: %d\n'
              '  stats: requests submitted %d, completed %d, failed %d; pool bytes_in_use %d, '
              'buffers_in_use %d, largest_free %d/%d; queue in_flight %d, free %d/%d; '
              'connections current %d, total %d; zone grants %d, completed %d, '
              'slots not free %d'
              % (self.id(), self.runs, REQUESTS, transport, pid, fds[0], warmup, fds[1], fds[2],
                 ''.join('    %-8s %7d / %7d / %5d  (%+d)\n'
                         % (k, rss[0][k], rss[1][k], rss[2][k], rss[2][k] - rss[1][k])
                         for k in ('VmRSS', 'RssAnon', 'RssFile', 'RssShmem')),
                 leases, s['requests']['submitted'], s['requests']['completed'],
                 s['requests']['failed'], s['pool']['bytes_in_use'],
                 s['pool']['buffers_in_use'], s['pool']['largest_free'], s['pool']['size'],
                 s['queue']['in_flight'], s['queue']['free'], s['queue']['capacity'],
                 s['connections']['current'], s['connections']['total'],
                 sum(z['grants'] for z in zones), sum(z['completed'] for z in zones),
                 sum(z['state'] != 'free' for z in zones)),
              file=sys.stderr)

    def leak_check(self, transport):
        tunables = ':'.join(filter(None, [os.environ.get('GLIBC_TUNABLES'), MALLOC_TUNABLES]))
        with Daemon(env={'GLIBC_TUNABLES': tunables}) as d:
            pid = d.proc.pid
            _, fds0, rss0 = self.settled(d)
            warmup = WARMUP
            for i in range(warmup):
                self.one_run(d, i, transport)
            _, fds_w, rss_w = self.settled(d)
            for i in range(warmup, self.runs):
                self.one_run(d, i, transport)
            s, fds_end, rss_end = self.settled(d)
            leases = lease_maps(pid)
            self.report(transport, pid, (len(fds0), len(fds_w), len(fds_end)),
                        (rss0, rss_w, rss_end),
                        warmup, s, leases)

            total = self.runs * REQUESTS
            self.assert_nothing_in_use(s)
            # Socket numbers may be reused for other sockets: compare counts,
            # and show the fds themselves when they differ.
            self.assertEqual(len(fds_w), len(fds0), 'fds after the warm-up: %r, before: %r'
                             % (fds_w, fds0))
            self.assertEqual(len(fds_end), len(fds0), 'fds after the last run: %r, before: %r'
                             % (fds_end, fds0))
            self.assertEqual(leases, 0, 'zone lease memory still mapped')
            zones = [z for z in s['sources'] if z['kind'] == 'shm']
            if transport == 'socket':
                self.assertEqual(s['requests']['submitted'], total)
                self.assertEqual(s['requests']['completed'], total)
                self.assertEqual(s['requests']['failed'], 0)
                self.assertEqual(sum(z['grants'] for z in zones), 0)
            else:
                self.assertEqual(sum(z['completed'] for z in zones), total)
                self.assertEqual(sum(z['failed'] for z in zones), 0)
                self.assertEqual(sum(z['grants'] for z in zones), self.runs)
            why = instrumented(pid)
            growth = rss_end['RssAnon'] - rss_w['RssAnon']
            if why:
                print('  RSS not checked: the daemon %s' % why, file=sys.stderr)
            else:
                self.assertLessEqual(growth, RSS_SLACK_KB,
                                     'private RSS grew by %d KiB after the warm-up' % growth)

    def test_socket_clients(self):
        self.leak_check('socket')

    def test_shm_clients(self):
        self.leak_check('shm')


if __name__ == '__main__':
    unittest.main()
