# SPDX-License-Identifier: MIT
"""No malloc per request on the socket's submit path (issue 14): the daemon
runs with an allocation counter preloaded (tests/preload/alloccount.c), and
a run of 2N requests may allocate no more than a run of N, within a bound
far below one allocation a request.  Counts, not time."""
import os
import shutil
import struct
import tempfile
import unittest

import harness
from harness import Daemon

ALLOCCOUNT = os.environ.get('ALLOCCOUNT', '')
SANITIZE = os.environ.get('HYPERAMP_SANITIZE', 'none')
N = 5000
# Allocations a request may cost, on average: measured 0 (2.0 before, one
# evbuffer chain for the request read and one for its reply).
BOUND = 0.02


@unittest.skipIf(harness.WRAPPER, 'the daemon runs under a tool or an emulator, which owns malloc')
@unittest.skipIf(SANITIZE not in ('', 'none'), 'a sanitizer runtime owns malloc')
@unittest.skipUnless(ALLOCCOUNT and os.path.exists(ALLOCCOUNT), 'no allocation counter built')
class AllocTest(unittest.TestCase):

    def per_request(self, shape):
        tmp = tempfile.mkdtemp(prefix='hyperamp-alloc-')
        self.addCleanup(shutil.rmtree, tmp, True)
        counts = os.path.join(tmp, 'allocs')
        env = {'LD_PRELOAD': ALLOCCOUNT, 'HA_ALLOC_COUNT': counts}
        with Daemon(config={'queue_entries': 1024}, env=env) as d:
            def allocs():
                with open(counts, 'rb') as f:
                    return struct.unpack('<Q', f.read(8))[0]

            def bench(n):
                rc, out, err = d.ctl('bench', *shape, '-n', str(n),
                                     timeout=harness.scaled(120))
                self.assertEqual(rc, 0, err)

            bench(1000)         # buffers grown, pool warm
            a0 = allocs()
            bench(N)
            a1 = allocs()
            bench(2 * N)
            a2 = allocs()
            # Each run also connects and disconnects: the difference of the
            # two runs leaves N requests' worth.
            return ((a2 - a1) - (a1 - a0)) / N, (a1 - a0, a2 - a1)

    def check(self, *shape):
        per, runs = self.per_request(shape)
        self.assertLessEqual(per, BOUND, 'allocations per request %.3f (runs of %d and %d '
                             'requests: %d, %d) with %s' % (per, N, 2 * N, runs[0], runs[1],
                                                            ' '.join(shape)))

    def test_loop_path_one_in_flight(self):
        """Echo 64 B, 8 connections x 1: each request read and answered
        on its own, run by the loop."""
        self.check('-s', 'echo', '--size', '64', '-c', '8', '--connections', '8')

    def test_pipelined(self):
        """8 connections x 16 in flight."""
        self.check('-s', 'echo', '--size', '64', '-c', '128', '--connections', '8')

    def test_pool_path(self):
        """Encrypt 4 KiB, 4 connections x 1: the workers run it."""
        self.check('-s', 'encrypt', '--size', '4096', '-c', '4', '--connections', '4')


if __name__ == '__main__':
    unittest.main()
