#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Soak hyperampd: a steady load over both transports for a bounded time,
sampling the daemon's memory, file descriptors and shared-memory use.

    bench/soak.py [--build DIR] [--duration 5m] [--interval SEC] [--csv FILE]

It starts a private hyperampd on its built-in defaults (the config file
names only a private shm_name, so that it cannot collide with another
daemon; the socket is in a private directory), waits for READY=1 on its own
notification socket, and runs three load generators until the duration is
up, every response verified by hyperampctl against its own reference:

  socket  hyperampctl bench --mix --duration D -c C --connections 4
  shm     hyperampctl bench --mix --duration D -c C --transport shm
  churn   short hyperampctl bench --mix -n 200 runs, socket and shm in
          turn: a connection or a zone lease taken and given back each time

--mix cycles encrypt, decrypt and echo through sizes 16 B .. 64 KiB.  Every
INTERVAL seconds it samples the daemon's VmRSS, RssAnon and RssShmem, its
open fds, its zone lease mappings and its stats (pool bytes and buffers in
use, queue entries in flight, zone slots attached, requests completed per
transport, errors, connections timed out) into a CSV, and at the end prints a summary.  It exits 1
if any response failed verification, the daemon counted an error, private
RSS drifted (median of the last quarter minus median of the first quarter
after a warm-up of 10% of the run) by more than --rss-slack-kb, the fd count
after the load differs from before it, anything is still in use once the
load has stopped, or the daemon did not stop cleanly.

Python 3 standard library only.
"""
import argparse
import csv
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
MAX_DURATION = 72 * 3600


def parse_duration(text):
    m = re.fullmatch(r'(\d+(?:\.\d+)?)([smh]?)', text.strip())
    if not m:
        raise argparse.ArgumentTypeError("'%s' is not a duration like 90s, 5m or 2h" % text)
    secs = float(m.group(1)) * {'': 1, 's': 1, 'm': 60, 'h': 3600}[m.group(2)]
    if not 10 <= secs <= MAX_DURATION:
        raise argparse.ArgumentTypeError('the duration must be from 10 s to 72 h')
    return int(secs)


# ===== talking to the daemon =====

class StatsClient:
    """One control connection, held open for the whole soak, so sampling
    adds no connection churn and the fd count always includes it once."""

    def __init__(self, path, timeout):
        self.path, self.timeout, self.sock, self.next_id = path, timeout, None, 1

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None

    def _read(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError('hyperampd closed the stats connection')
            buf += chunk
        return buf

    def stats(self):
        # The daemon closes a connection idle for client_timeout_ms; then
        # the next call reconnects.
        for attempt in (1, 2):
            try:
                if not self.sock:
                    self.connect()
                j = json.dumps({'v': 1, 'id': self.next_id, 'method': 'stats'}).encode()
                self.next_id += 1
                self.sock.sendall(struct.pack('>II', len(j), 0) + j)
                jlen, dlen = struct.unpack('>II', self._read(8))
                rep = json.loads(self._read(jlen + dlen)[:jlen])
                if 'error' in rep:
                    raise RuntimeError('stats failed: %r' % rep['error'])
                return rep['result']
            except (ConnectionError, BrokenPipeError):
                self.close()
                if attempt == 2:
                    raise


def proc_mem(pid):
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            key, _, val = line.partition(':')
            if key in ('VmRSS', 'RssAnon', 'RssShmem'):
                out[key] = int(val.split()[0])
    return out


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def lease_maps(pid):
    with open('/proc/%d/maps' % pid) as f:
        return sum('memfd:hyperamp-zone' in line for line in f)


class Daemon:
    def __init__(self, build, tmp):
        self.hyperampd = os.path.join(build, 'src', 'daemon', 'hyperampd')
        self.tmp = tmp
        self.socket_path = os.path.join(tmp, 'ctl.sock')
        self.shm_name = '/hyperamp-soak-%d' % os.getpid()
        self.log_path = os.path.join(tmp, 'daemon.log')
        self.notes = []
        self.proc = None

    def start(self, timeout=15.0):
        cfg = os.path.join(self.tmp, 'config.json')
        with open(cfg, 'w') as f:
            json.dump({'shm_name': self.shm_name}, f)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(os.path.join(self.tmp, 'notify.sock'))
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(self.tmp, 'notify.sock'))
        env.pop('HYPERAMP_SOCKET', None)
        self.log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen([self.hyperampd, '--config', cfg, '--socket',
                                      self.socket_path, '--log-level', 'warning'],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=self.log, env=env)
        # READY=1 on our notification socket, bounded; an early exit ends
        # the wait through the pidfd.
        pidfd = os.pidfd_open(self.proc.pid)
        deadline = time.monotonic() + timeout
        try:
            while not any('READY=1' in n.split('\n') for n in self.notes):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError('hyperampd sent no READY=1 within %.0f s' % timeout)
                r, _, _ = select.select([self.notify, pidfd], [], [], left)
                if self.notify in r:
                    self.notes.append(self.notify.recv(4096).decode('utf-8', 'replace'))
                elif pidfd in r:
                    raise RuntimeError('hyperampd exited with status %s before READY=1'
                                       % self.proc.wait())
        finally:
            os.close(pidfd)
        # Keep reading notifications (STATUS= every few seconds), so the
        # daemon never finds its notification socket full.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        while True:
            try:
                msg = self.notify.recv(4096)
            except OSError:
                return
            if not msg:
                return          # shut down by stop()
            self.notes.append(msg.decode('utf-8', 'replace'))

    def stop(self, timeout=20.0):
        """SIGTERM; returns the problems with the shutdown (empty: clean)."""
        problems = []
        if self.proc.poll() is not None:
            problems.append('hyperampd had already exited with status %d' % self.proc.returncode)
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = None
                problems.append('did not exit within %.0f s of SIGTERM' % timeout)
            if rc not in (0, None):
                problems.append('exit status %d' % rc)
        if os.path.lexists(self.socket_path):
            problems.append('control socket left behind')
        if os.path.lexists('/dev/shm' + self.shm_name):
            problems.append('shared memory %s left behind' % self.shm_name)
            os.unlink('/dev/shm' + self.shm_name)
        try:
            self.notify.shutdown(socket.SHUT_RDWR)      # wakes the drain thread
        except OSError:
            pass
        self.notify.close()
        self.log.close()
        return problems

    def log_text(self):
        with open(self.log_path, errors='replace') as f:
            return f.read()


# ===== load =====

class Generator:
    """One hyperampctl bench for the whole soak."""

    def __init__(self, name, ctl, args):
        self.name = name
        self.proc = subprocess.Popen(ctl + ['--json', 'bench', '--mix'] + args,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.requests = self.failures = 0
        self.problem = None

    def finish(self, timeout):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            self.problem = 'did not finish within %.0f s of the end' % timeout
            return
        try:
            r = json.loads(out)
            self.requests, self.failures = r['requests'], r['failures']
        except (ValueError, KeyError):
            self.problem = 'exit %d, no result: %s' % (self.proc.returncode,
                                                       err.decode(errors='replace').strip())
            return
        if self.proc.returncode != 0 or self.failures:
            self.problem = 'exit %d: %s' % (self.proc.returncode,
                                            err.decode(errors='replace').strip())
        elif self.requests == 0:
            self.problem = 'not a single request answered'


class Churn(threading.Thread):
    """Short client runs until the deadline, socket and shm in turn: each
    takes a connection or a zone lease and gives it back."""

    def __init__(self, ctl, deadline):
        super().__init__(daemon=True)
        self.ctl, self.deadline = ctl, deadline
        self.runs = {'socket': 0, 'shm': 0}
        self.requests = self.failures = 0
        self.problems = []

    def run(self):
        try:
            self.churn()
        except BaseException as e:      # a hung or broken run must fail the soak
            self.problems.append('churn stopped: %r' % (e,))

    def churn(self):
        i = 0
        while time.monotonic() < self.deadline:
            transport = ('socket', 'shm')[i % 2]
            i += 1
            p = subprocess.run(self.ctl + ['--json', 'bench', '--mix', '-n', '200', '-c', '8',
                                           '--transport', transport],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
            try:
                r = json.loads(p.stdout)
                self.requests += r['requests']
                self.failures += r['failures']
            except (ValueError, KeyError):
                r = None
            self.runs[transport] += 1
            if p.returncode != 0 or not r or r['failures']:
                self.problems.append('%s run %d: exit %d: %s' % (
                    transport, i, p.returncode, p.stderr.decode(errors='replace').strip()))


# ===== sampling =====

FIELDS = ['t_s', 'vmrss_kb', 'rss_anon_kb', 'rss_shmem_kb', 'fds', 'lease_maps',
          'pool_bytes_in_use', 'pool_buffers_in_use', 'queue_in_flight', 'zones_attached',
          'zone_in_flight', 'connections', 'socket_completed', 'shm_completed', 'errors',
          'timeouts']


def daemon_errors(s):
    """Everything the daemon counts as gone wrong."""
    n = s['requests']['failed'] + s['requests']['tampered']
    n += sum(s['queue'][k] for k in ('bad_index', 'cycles', 'bad_state', 'repairs'))
    for z in s['sources']:
        if z['kind'] == 'shm':
            n += sum(z.get(k, 0) for k in ('failed', 'bad_index', 'bad_state', 'bad_ring',
                                           'bad_range', 'dispatch_failed'))
    return n


def sample(pid, client, t0):
    s = client.stats()
    mem = proc_mem(pid)
    zones = [z for z in s['sources'] if z['kind'] == 'shm']
    return s, {
        't_s': round(time.monotonic() - t0, 1),
        'vmrss_kb': mem['VmRSS'], 'rss_anon_kb': mem['RssAnon'],
        'rss_shmem_kb': mem['RssShmem'],
        'fds': fd_count(pid), 'lease_maps': lease_maps(pid),
        'pool_bytes_in_use': s['pool']['bytes_in_use'],
        'pool_buffers_in_use': s['pool']['buffers_in_use'],
        'queue_in_flight': s['queue']['in_flight'],
        'zones_attached': sum(z['state'] != 'free' for z in zones),
        'zone_in_flight': sum(z['in_flight'] for z in zones),
        'connections': s['connections']['current'],
        'socket_completed': next(x['completed'] for x in s['sources'] if x['kind'] == 'socket'),
        'shm_completed': sum(z['completed'] for z in zones),
        'errors': daemon_errors(s),
        # A client dropped by client_timeout_ms: none of ours ever idles.
        'timeouts': s['connections']['timeouts'],
    }


def idle(row):
    return (row['connections'] == 1 and row['zones_attached'] == 0 and row['queue_in_flight'] == 0
            and row['pool_buffers_in_use'] == 0 and row['pool_bytes_in_use'] == 0
            and row['zone_in_flight'] == 0 and row['lease_maps'] == 0)


def wait_idle(pid, client, t0, timeout):
    """Poll (bounded) until nothing is in use: the daemon frees a client's
    things after the client has gone, with no event we could wait on."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        _, row = sample(pid, client, t0)
        if idle(row) or time.monotonic() >= deadline:
            return row
        time.sleep(delay)       # back-off between polls of a counter
        delay = min(delay * 2, 0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--build', default=os.path.join(ROOT, 'build'),
                    help='meson build directory (default: build)')
    ap.add_argument('--duration', type=parse_duration, default=300,
                    help='how long to hold the load: 90s, 5m, 2h (default 5m, up to 72h)')
    ap.add_argument('--interval', type=float, default=None,
                    help='seconds between samples (default: duration/30, from 1 to 10)')
    ap.add_argument('--concurrency', type=int, default=32,
                    help='requests in flight per long-running generator (default 32)')
    ap.add_argument('--csv', default=None,
                    help='where to write the samples (default: BUILD/soak-TIMESTAMP.csv)')
    ap.add_argument('--rss-slack-kb', type=int, default=1024,
                    help='private RSS drift allowed, last quarter vs first (default 1024)')
    a = ap.parse_args()

    interval = a.interval or min(10.0, max(1.0, a.duration / 30))
    csv_path = a.csv or os.path.join(a.build, 'soak-%s.csv' % time.strftime('%Y%m%d-%H%M%S'))
    ctl_bin = os.path.join(a.build, 'src', 'ctl', 'hyperampctl')
    for b in (ctl_bin, os.path.join(a.build, 'src', 'daemon', 'hyperampd')):
        if not os.access(b, os.X_OK):
            sys.exit('soak: %s not found: build first (scripts/setup.sh %s)' % (b, a.build))

    # SIGTERM (meson, timeout(1)) cleans up as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda sig, frame: sys.exit(128 + sig))
    tmp = tempfile.mkdtemp(prefix='hyperamp-soak-')
    d = Daemon(a.build, tmp)
    gens, churn, problems = [], None, []
    try:
        d.start()
        pid = d.proc.pid
        ctl = [ctl_bin, '--socket', d.socket_path]
        client = StatsClient(d.socket_path, timeout=30)
        t0 = time.monotonic()
        base = wait_idle(pid, client, t0, 10)
        print('soak: hyperampd pid %d, %d s, a sample every %.0f s into %s'
              % (pid, a.duration, interval, csv_path), flush=True)

        dur = str(a.duration)
        c = str(a.concurrency)
        load_t0 = time.monotonic()
        gens = [Generator('socket', ctl, ['--duration', dur, '-c', c, '--connections', '4']),
                Generator('shm', ctl, ['--duration', dur, '-c', c, '--transport', 'shm'])]
        churn = Churn(ctl, load_t0 + a.duration)
        churn.start()

        rows = []
        with open(csv_path, 'w', newline='') as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            prev = None
            next_t = load_t0 + interval
            while True:
                # Sleep to the next sample time: this is the sampling clock,
                # not a wait for an event.
                time.sleep(max(0.0, next_t - time.monotonic()))
                next_t += interval
                _, row = sample(pid, client, load_t0)
                rows.append(row)
                w.writerow(row)
                f.flush()
                rate = lambda k: ((row[k] - prev[k]) / (row['t_s'] - prev['t_s'])
                                  if prev else row[k] / max(row['t_s'], 1e-3))
                print('%6.0f s  rss %6d KiB (anon %6d)  fds %3d  pool %8d B %3d bufs  '
                      'zones %d  socket %7.0f/s  shm %8.0f/s  errors %d'
                      % (row['t_s'], row['vmrss_kb'], row['rss_anon_kb'], row['fds'],
                         row['pool_bytes_in_use'], row['pool_buffers_in_use'],
                         row['zones_attached'], rate('socket_completed'),
                         rate('shm_completed'), row['errors']), flush=True)
                prev = row
                if row['t_s'] + 1e-6 >= a.duration:
                    break
            for g in gens:
                g.finish(timeout=60)
            churn.join(timeout=120)
            end = wait_idle(pid, client, load_t0, 30)
            end['t_s'] = round(time.monotonic() - load_t0, 1)
            w.writerow(end)
        fds_end = fd_count(pid)
        client.close()
        stop_problems = d.stop()
    except BaseException:
        # Interrupted or broken: leave no daemon, load or shm object behind.
        for g in gens:
            if g.proc.poll() is None:
                g.proc.kill()
        if churn:
            churn.deadline = 0
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        if os.path.lexists('/dev/shm' + d.shm_name):
            os.unlink('/dev/shm' + d.shm_name)
        if d.proc:
            sys.stderr.write('===== hyperampd log =====\n%s' % d.log_text())
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # ===== summary =====
    warm = max(1, len(rows) // 10)
    steady = rows[warm:] or rows
    q = max(1, len(steady) // 4)
    first, last = steady[:q], steady[-q:]

    def drift(key):
        return statistics.median(r[key] for r in last) - statistics.median(r[key] for r in first)

    def span(key, rs=rows):
        return '%d / %d' % (min(r[key] for r in rs), max(r[key] for r in rs))

    verify_failures = sum(g.failures for g in gens) + churn.failures
    lines = []

    def check(what, value, limit, ok):
        lines.append((what, value, limit, 'ok' if ok else 'FAIL'))
        if not ok:
            problems.append('%s: %s (limit %s)' % (what, value, limit))

    def info(what, value):
        lines.append((what, value, '', ''))

    for g in gens:
        info('requests, %s (bench --duration)' % g.name, '{:,}'.format(g.requests))
        if g.problem:
            problems.append('%s generator: %s' % (g.name, g.problem))
    info('requests, churn runs', '{:,} in {} socket + {} shm runs'.format(
        churn.requests, churn.runs['socket'], churn.runs['shm']))
    problems.extend('churn: ' + p for p in churn.problems[:5])
    if churn.is_alive():
        problems.append('churn: a client run still going 120 s after the end')
    if not (churn.runs['socket'] and churn.runs['shm']):
        problems.append('churn: no complete run on one of the transports')
    info('daemon completed: socket / shm', '{:,} / {:,}'.format(end['socket_completed'],
                                                               end['shm_completed']))
    check('verification failures', verify_failures, 0, verify_failures == 0)
    check('daemon errors (stats)', end['errors'], 0, end['errors'] == 0)
    check('connections timed out', end['timeouts'], 0, end['timeouts'] == 0)
    info('samples (warm-up left out)', '%d every %.0f s (%d)' % (len(rows), interval, warm))
    info('VmRSS KiB min / max', span('vmrss_kb'))
    info('RssShmem KiB min / max', span('rss_shmem_kb'))
    info('RssAnon KiB min / max', span('rss_anon_kb'))
    info('VmRSS drift, last vs first quarter', '%+d KiB' % drift('vmrss_kb'))
    check('RssAnon drift, last vs first quarter', '%+d KiB' % drift('rss_anon_kb'),
          '%d KiB' % a.rss_slack_kb, drift('rss_anon_kb') <= a.rss_slack_kb)
    info('fds min / max under load', span('fds'))
    check('fds before / after the load', '%d / %d' % (base['fds'], fds_end), 'equal',
          base['fds'] == fds_end)
    info('in use max under load', 'pool %d B in %d buffers, %d entries, %d zone slots'
         % (max(r['pool_bytes_in_use'] for r in rows), max(r['pool_buffers_in_use'] for r in rows),
            max(r['queue_in_flight'] for r in rows), max(r['zones_attached'] for r in rows)))
    check('in use after the load', 'pool %d B in %d buffers, %d entries, %d zone slots, '
          '%d lease maps, %d connections'
          % (end['pool_bytes_in_use'], end['pool_buffers_in_use'], end['queue_in_flight'],
             end['zones_attached'], end['lease_maps'], end['connections']),
          'none but ours', idle(end))
    check('daemon stop', '; '.join(stop_problems) or 'exit 0, socket and shm removed', 'clean',
          not stop_problems)

    print('\nsoak summary (%d s, %s)' % (a.duration, csv_path))
    wid = max(len(x[0]) for x in lines)
    vwid = max(len(str(x[1])) for x in lines)
    print('  %-*s  %-*s  %-12s %s' % (wid, 'what', vwid, 'measured', 'limit', 'verdict'))
    for what, value, limit, verdict in lines:
        print('  %-*s  %-*s  %-12s %s' % (wid, what, vwid, value, limit, verdict))
    if problems:
        print('\nsoak FAILED:\n  ' + '\n  '.join(problems))
        print('===== hyperampd log =====\n%s' % d.log_text())
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
