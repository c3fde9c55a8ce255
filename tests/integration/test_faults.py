# SPDX-License-Identifier: MIT
"""Fault injection: start-up failures injected into shm_open, ftruncate, mmap
and the allocator; a slow service; the shared memory shrunk under the
daemon; a thousand clients at once."""
import ctypes
import errno
import os
import resource
import signal
import shutil
import socket
import tempfile
import unittest

import harness
from harness import (Daemon, RawClient, Closed, request, scaled, start_expect_failure,
                     wait_until)

HELLO_ENC = bytes.fromhex('164e2c2f12')


class InjectedStartFailureTest(unittest.TestCase):

    def test_each_site_fails_cleanly(self):
        """A clear error, exit status 1, no READY=1, nothing left behind."""
        cases = {
            'shm_open:EACCES': 'Failed to set up shared memory',
            'ftruncate:ENOSPC': 'No room for shared memory',
            'mmap:ENOMEM': 'Failed to set up shared memory',
            'alloc:ENOMEM': 'Failed to set up the request queue',
        }
        for spec, message in cases.items():
            with self.subTest(spec):
                f = start_expect_failure(env={'HYPERAMP_TEST_FAIL': spec})
                self.assertEqual(f.rc, 1, f.log)
                self.assertIn(message, f.log)
                self.assertNotIn('READY=1', '\n'.join(f.notifications))
                self.assertFalse(os.path.lexists(f.shm_file), 'shm object left behind')
                self.assertFalse(os.path.lexists(f.socket_path), 'socket left behind')


class SlowServiceTest(unittest.TestCase):

    def test_other_services_still_served(self):
        """One worker stuck on a slow request: the queue reports it and the
        other worker keeps serving everyone else."""
        tmp = tempfile.mkdtemp(prefix='hyperamp-slow-')
        self.addCleanup(shutil.rmtree, tmp)
        fifo = os.path.join(tmp, 'stall')
        os.mkfifo(fifo)
        with Daemon({'workers': 2}, env={'HYPERAMP_TEST_STALL_FIFO': fifo}) as d:
            with d.client() as slow:
                slow.send(request('submit', id=1, params={'service': 65000}), payload=b'zz')
                wait_until(lambda: d.stats()['queue']['in_flight'] == 1, 10, 'the slow request')
                for i in range(200):
                    rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello %d' % i)
                    self.assertEqual(rc, 0, err)
                rc, out, err = d.ctl('--json', 'bench', '-c', '16', '-n', '2000', '-s', 'echo')
                self.assertEqual(rc, 0, err)
                self.assertEqual(d.stats()['queue']['in_flight'], 1)   # still stuck
                fd = os.open(fifo, os.O_WRONLY)
                os.write(fd, b'!')
                os.close(fd)
                obj, data = slow.recv_frame()
                self.assertEqual((obj['id'], obj['result']['status']), (1, 'SUCCESS'))
            d.wait_idle()


class ShrunkSharedMemoryTest(unittest.TestCase):

    def test_peer_truncates_the_queue(self):
        """A process with write access shrinks the shm object to nothing
        (shm_mode 0660 lets the group do that).  The daemon's next access
        would be SIGBUS; it grows the object back instead, puts back the
        header peers check, counts and logs it, and keeps serving."""
        with Daemon({'workers': 2, 'shm_mode': '0660'}) as d:
            self.assertEqual(d.ctl('submit', '-s', 'encrypt', 'hello')[1], HELLO_ENC)
            size = os.stat(d.shm_file).st_size
            with open(d.shm_file, 'r+b') as f:
                magic = f.read(8)
                f.truncate(0)
            for _ in range(20):
                rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello')
                self.assertEqual((rc, out), (0, HELLO_ENC), err)
            s = d.stats()
            self.assertGreaterEqual(s['queue']['sigbus_repaired'], 1)
            self.assertEqual(s['queue']['in_flight'], 0)
            self.assertEqual(os.stat(d.shm_file).st_size, size)
            with open(d.shm_file, 'rb') as f:
                self.assertEqual(f.read(8), magic)
            self.assertIn('was shrunk by another process', d.log())


def small_dev_shm(size):
    """A preexec_fn: the daemon gets its own mount namespace with a tmpfs of
    size bytes on /dev/shm, which the test can fill (through
    /proc/PID/root) without touching the host's."""
    def preexec():
        libc = ctypes.CDLL(None, use_errno=True)
        MS_REC, MS_PRIVATE, CLONE_NEWNS = 0x4000, 1 << 18, 0x20000
        if (libc.unshare(CLONE_NEWNS) != 0
                or libc.mount(b'none', b'/', None, MS_REC | MS_PRIVATE, None) != 0
                or libc.mount(b'none', b'/dev/shm', b'tmpfs', 0,
                              b'size=%d,mode=1777' % size) != 0):
            os._exit(99)
    return preexec


class ShrunkSharedMemoryNoSpaceTest(unittest.TestCase):

    def test_truncated_while_dev_shm_is_full(self):
        """Issue 16, item 3: a peer truncates the queue object while /dev/shm
        is full.  The truncation freed the pages, so growing them back needs
        space there is none of; the daemon puts private zero pages over the
        cut part instead of dying of SIGBUS, counts and logs it, and keeps
        serving its socket clients."""
        if os.geteuid() != 0:
            self.skipTest('needs root for a private mount namespace')
        cfg = {'workers': 2, 'shm_mode': '0660', 'pool_size': 1 << 20, 'max_payload': 65536}
        with Daemon(cfg, preexec_fn=small_dev_shm(4 << 20)) as d:
            self.assertEqual(d.ctl('submit', '-s', 'encrypt', 'hello')[1], HELLO_ENC)
            shm_dir = '/proc/%d/root/dev/shm' % d.proc.pid
            obj = os.path.join(shm_dir, d.shm_name.lstrip('/'))
            size = os.stat(obj).st_size
            # Held still, so that nothing it does comes between the two.
            d.signal(signal.SIGSTOP)
            try:
                with open(obj, 'r+b') as f:
                    f.truncate(0)
                with open(os.path.join(shm_dir, 'filler'), 'wb', buffering=0) as f:
                    try:
                        while True:
                            f.write(b'\0' * 65536)
                    except OSError as e:
                        self.assertEqual(e.errno, errno.ENOSPC)
            finally:
                d.signal(signal.SIGCONT)
            for _ in range(20):
                rc, out, err = d.ctl('submit', '-s', 'encrypt', 'hello')
                self.assertEqual((rc, out), (0, HELLO_ENC), err)
            s = d.stats()
            self.assertGreaterEqual(s['queue']['sigbus_lost'], 1)
            self.assertEqual(s['queue']['in_flight'], 0)
            self.assertEqual(os.stat(obj).st_size, size)     # grown, if not allocated
            self.assertIn('could not be grown back', d.log())
            rc, out, err = d.ctl('--json', 'bench', '-c', '4', '-n', '500', '-s', 'echo')
            self.assertEqual(rc, 0, err)


class ManyClientsTest(unittest.TestCase):

    def test_a_thousand_connections(self):
        """1,000 clients at once against a limit of 400: the first 400 are
        served, the rest get E_LIMIT, the daemon neither crashes nor leaks a
        descriptor, and it serves again once they are gone."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < 2100:
            self.skipTest('needs 2100 file descriptors, the hard limit is %d' % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (2100, hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        with Daemon({'max_connections': 400}) as d:
            fds_before = len(os.listdir('/proc/%d/fd' % d.proc.pid))
            clients, refused = [], 0
            try:
                for _ in range(1000):
                    clients.append(RawClient(d.socket_path, timeout=10))
                served = 0
                for c in clients:
                    try:
                        c.send(request('ping', id=1))
                    except (BrokenPipeError, ConnectionResetError):
                        pass    # refused: its E_LIMIT is already waiting to be read
                for c in clients:
                    try:
                        obj, _ = c.recv_frame()
                    except Closed:
                        self.fail('a client was dropped without an answer')
                    if 'result' in obj:
                        served += 1
                    else:
                        self.assertEqual(obj['error']['code'], 'E_LIMIT')
                        refused += 1
                self.assertEqual((served, refused), (400, 600))
            finally:
                for c in clients:
                    c.close()
            s = wait_until(lambda: (lambda s: s['connections']['current'] <= 1 and s)(d.stats()),
                           10, 'connections to close')
            self.assertEqual(s['connections']['rejected'], 600)
            fds_after = len(os.listdir('/proc/%d/fd' % d.proc.pid))
            self.assertLessEqual(fds_after, fds_before + 1)
            self.assertTrue(d.ctl_json('ping')['pong'])


if __name__ == '__main__':
    unittest.main()
