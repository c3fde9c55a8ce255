#!/usr/bin/env python3
"""The raw bytes one build puts on the control socket, for comparing two.

  scripts/wire-bytes.py BUILD_DIR > a.txt; scripts/wire-bytes.py OTHER > b.txt
  diff a.txt b.txt

Starts BUILD_DIR's hyperampd on a private socket and records, frame by
frame, its replies to a fixed script (every method's result, error
replies with and without an id, one quoting invalid UTF-8, zone attach and
resume with the number of fds that came, an oversize frame), then what
hyperampctl (ping, submit) and libhyperamp (attach, through zclient) send,
to a fake daemon.  Fields that differ from run to run (pid, latency,
uptime) are masked.  Exits non-zero when a step fails.
"""
import array
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time


def frame(j, data=b''):
    return struct.pack('>II', len(j), len(data)) + j + data


def recv_frame(s):
    """One frame and how many fds came with it (closed)."""
    buf, nfds = b'', 0
    while True:
        if len(buf) >= 8:
            jl, dl = struct.unpack('>II', buf[:8])
            if len(buf) >= 8 + jl + dl:
                return buf[:8 + jl + dl], nfds
        msg, anc, _, _ = s.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
        for _, _, data in anc:
            fds = array.array('i')
            fds.frombytes(data[:len(data) - len(data) % 4])
            nfds += len(fds)
            for fd in fds:
                os.close(fd)
        if not msg:
            raise SystemExit('wire-bytes: the peer hung up mid-frame')
        buf += msg


def mask(b):
    """Fields that vary, and the header's JSON length that varies with them."""
    m = re.sub(rb'"(pid|latency_us|uptime_s)":[0-9.]+', rb'"\1":X', b)
    return m if m == b else b'JLEN' + m[4:]


def daemon_replies(build, tmp, out):
    path = tmp + '/s.sock'
    cfg = tmp + '/c.json'
    with open(cfg, 'w') as f:
        json.dump({'shm_name': '/wire-bytes-%d' % os.getpid(), 'max_payload': 4096,
                   'zone_clients': 2}, f)
    d = subprocess.Popen([build + '/src/daemon/hyperampd', '-c', cfg, '--socket', path,
                          '-w', '1', '--log-target', 'stderr'], stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 10
        while not os.path.exists(path):
            if time.monotonic() > end or d.poll() is not None:
                raise SystemExit('wire-bytes: hyperampd did not start')
            select.select([], [], [], 0.02)

        def call(s, tag, j, data=b''):
            s.sendall(frame(j, data))
            b, nfds = recv_frame(s)
            out.append('%s fds=%d %r' % (tag, nfds, mask(b)))

        a, b, c = (socket.socket(socket.AF_UNIX) for _ in range(3))
        for s in (a, b, c):
            s.connect(path)
        call(a, 'ping', b'{"v":1,"id":1,"method":"ping"}')
        call(a, 'services', b'{"v":1,"id":2,"method":"services"}')
        call(a, 'unknown-method-no-id', b'{"v":1,"method":"nope"}')
        call(a, 'version-max-id', b'{"v":2,"id":9007199254740991,"method":"ping"}')
        call(a, 'submit', b'{"v":1,"id":3,"method":"submit","params":{"service":"echo"}}', b'hello')
        call(a, 'invalid-utf8', b'{"v":1,"id":4,"method":"submit","params":{"service":"n\xffo"}}', b'x')
        call(a, 'attach', b'{"v":1,"id":5,"method":"attach"}')
        call(a, 'attach-again', b'{"v":1,"id":6,"method":"attach"}')
        call(b, 'resume-no-id', b'{"v":1,"method":"attach","params":{"resume":true}}')
        c.sendall(struct.pack('>II', 100, 1 << 20))
        frm, nfds = recv_frame(c)
        out.append('too-big fds=%d %r' % (nfds, frm))
        for s in (a, b, c):
            s.close()
    finally:
        d.terminate()
        d.wait()


def client_request(build, tmp, argv, env=None):
    """The first frame argv sends to a fake daemon (which then says E_SHUTDOWN)."""
    path = tmp + '/fake.sock'
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    p = subprocess.Popen([build + '/' + argv[0]] + [path if a == 'SOCK' else a for a in argv[1:]],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    p.stdin.write(b'abc')
    p.stdin.close()
    conn, _ = listener.accept()
    b, _ = recv_frame(conn)
    conn.sendall(frame(b'{"v":1,"error":{"code":"E_SHUTDOWN","message":"bye"}}'))
    conn.close()
    p.wait()
    listener.close()
    return b


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    build = os.path.abspath(sys.argv[1])
    out = []
    with tempfile.TemporaryDirectory(prefix='wire-bytes-') as tmp:
        os.chmod(tmp, 0o700)
        daemon_replies(build, tmp, out)
        ctl = 'src/ctl/hyperampctl'
        out.append('ctl-ping %r' % client_request(build, tmp, [ctl, '--socket', 'SOCK', 'ping']))
        out.append('ctl-submit %r' % client_request(build, tmp, [ctl, '--socket', 'SOCK', 'submit',
                                                                 '-s', 'echo']))
        env = dict(os.environ, LD_LIBRARY_PATH=build + '/src/lib')
        out.append('lib-attach %r' % client_request(build, tmp, ['tests/zone/zclient', 'SOCK',
                                                                 'hold', '1'], env))
    print('\n'.join(out))


if __name__ == '__main__':
    main()
