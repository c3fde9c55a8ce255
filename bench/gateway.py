#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The v1 gateway beside the raw v1 driver (docs/PERFORMANCE.md, "The v1
gateway"), on the same simulated, spinning peer (tests/peers/v1peer --spin).

    bench/gateway.py [BUILD_DIR] [REQUESTS] [PROFILE...] [--rounds N]

PROFILE: freertos-b (FIFO doorbell) and/or sel4 (polling, no doorbell);
default both.  For each profile, N rounds (default 3) of, in turn:
  raw    a fresh peer driven by bench/raw-v1 (one process, stop-and-wait,
         spinning), REQUESTS requests;
  gw     a fresh peer and a private hyperampd with it as a remote zone,
         `hyperampctl bench -s echo -c 16`, then `-c 1`, then `-c 512
         --connections 8` (throughput: batches deep enough that the
         loop's and the client's wake-ups are shared by many requests),
         REQUESTS each, over the socket; then the zone executor's round
         trip from `stats`;
  local  a private hyperampd with no zone, echo run by its own workers,
         `-c 512 --connections 8`: what the socket front end carries at
         most on this machine, the ceiling of any request it forwards.
Interleaved (raw, gw, raw, gw, ...) so that a change in the machine's load
hits both sides alike.  Both round trips are read the same way: raw-v1
puts its samples through hyperampd's histogram (src/core/hist.c), and the
executor's `round_trip_us` is that histogram; both span one request from
its start to the release of its entry.  raw-v1's exact median is printed
beside, to show what the bucket does.

Prints the rounds, then the table of medians in docs/PERFORMANCE.md's
format.  Readiness is waited for on events (the peer's "ready" line, the
daemon's READY=1), each with a bound; nothing sleeps."""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser(description='the v1 gateway beside raw-v1 (see the top of the file)')
ap.add_argument('build', nargs='?', default='build')
ap.add_argument('requests', nargs='?', type=int, default=20000)
ap.add_argument('profiles', nargs='*', metavar='PROFILE', help='freertos-b and/or sel4')
ap.add_argument('--rounds', type=int, default=3)
opt = ap.parse_args()
if opt.rounds < 1 or opt.requests < 1:
    sys.exit('--rounds and REQUESTS: at least 1')
build, n, rounds = opt.build, opt.requests, opt.rounds
profiles = opt.profiles or ['freertos-b', 'sel4']
for p in profiles:
    if p not in ('freertos-b', 'sel4'):
        sys.exit('PROFILE: freertos-b or sel4, not %s' % p)
V1PEER = os.path.join(build, 'tests', 'peers', 'v1peer')
RAW = os.path.join(build, 'tests', 'peers', 'raw-v1')
HYPERAMPD = os.path.join(build, 'src', 'daemon', 'hyperampd')
CTL = os.path.join(build, 'src', 'ctl', 'hyperampctl')
BASE = '0x7e000000'

d = tempfile.mkdtemp(prefix='hyperamp-gw-bench-')
mem, bell, cfg = (os.path.join(d, x) for x in ('mem', 'bell', 'shm.json'))
with open(cfg, 'w') as f:
    json.dump({'shm_regions': [
        {'region_flag': 'linux-2-npucore-buf', 'zone0_ram_ipa': '0x7e000000',
         'zonex_ram_ipa': '0x7e000000', 'mem_size': '0x400000'},
        {'region_flag': 'linux-2-npucore-msg', 'zone0_ram_ipa': '0x7e400000',
         'zonex_ram_ipa': '0x7e410000', 'mem_size': '0x1000'}]}, f)


def fresh_peer(profile):
    with open(mem, 'wb') as f:
        f.truncate(0x411000)
    p = subprocess.Popen([V1PEER, '--profile', profile, '--shm-config', cfg, '--mem', mem,
                          '--base', BASE, '--doorbell', bell, '--spin'],
                         stdout=subprocess.PIPE)
    if b'ready' not in p.stdout.readline():
        sys.exit('v1peer did not start')
    return p


def stop(p):
    p.terminate()
    p.wait(timeout=10)


def peer_kind(profile):
    return 'sel4' if profile == 'sel4' else 'freertos'


def run_raw(profile):
    peer = fresh_peer(profile)
    cmd = [RAW, '--shm-config', cfg, '--mem', mem, '--base', BASE, '--peer', peer_kind(profile),
           '--service', '66', '--size', '64', '--requests', str(n)]
    if profile != 'sel4':
        cmd += ['--doorbell', bell]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    stop(peer)
    if r.returncode != 0:
        sys.exit('raw-v1 failed (%d): %s%s' % (r.returncode, r.stdout, r.stderr))
    kv = dict(x.split('=', 1) for x in r.stdout.split()[1:])
    return {'req_s': float(kv['req_s']), 'p50': float(kv['hist_p50_us']),
            'p99': float(kv['hist_p99_us']), 'exact_p50': float(kv['p50_us'])}


def run_gw(profile, c, k, conns=1):
    """A fresh peer and daemon, hyperampctl bench -c c: req/s, end-to-end
    p50, and the executor's own round trip (so -c 1 and -c 16 each have
    theirs: at -c 1 the zone thread wakes for every request).  profile
    None: no peer and no zone, echo runs locally (the socket's ceiling)."""
    peer = fresh_peer(profile) if profile else None
    zone = {'name': 'rtos', 'protocol': 'v1', 'peer': peer_kind(profile), 'shm_config': cfg,
            'mem': mem, 'base': BASE, 'services': [66], 'timeout_ms': 1000, 'max_pending': 1024,
            'doorbell': {'kind': 'none'} if profile == 'sel4' else {'kind': 'fifo', 'path': bell}}
    with open(os.path.join(d, 'd.json'), 'w') as f:
        json.dump({'shm_name': '/hyperamp-gw-bench-%d-%d' % (os.getpid(), k),
                   'log_level': 'warning', 'queue_entries': 1024,
                   'remote_zones': [zone] if peer else []}, f)
    notify = os.path.join(d, 'notify')
    note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    note.bind(notify)
    note.settimeout(15)
    sock = os.path.join(d, 'ctl.sock')
    daemon = subprocess.Popen([HYPERAMPD, '--config', os.path.join(d, 'd.json'),
                               '--socket', sock], env=dict(os.environ, NOTIFY_SOCKET=notify))
    try:
        while b'READY=1' not in note.recv(4096):
            pass
        r = subprocess.run([CTL, '--socket', sock, '--json', 'bench', '-s', 'echo',
                            '-c', str(c), '--connections', str(conns), '-n', str(n),
                            '--size', '64'],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            sys.exit('hyperampctl bench -c %d failed: %s' % (c, r.stderr))
        b = json.loads(r.stdout)
        s = json.loads(subprocess.run([CTL, '--socket', sock, '--json', 'stats'],
                                      capture_output=True, text=True, timeout=30).stdout)
        x = ([e for e in s['executors'] if e['name'] == 'rtos'] or
             [{'round_trip_us': {'p50': 0, 'p99': 0}}])[0]
        return {'req_s': b['req_per_s'], 'e2e_p50': b['latency_us']['p50'],
                'p50': x['round_trip_us']['p50'], 'p99': x['round_trip_us']['p99']}
    finally:
        daemon.terminate()
        daemon.wait(timeout=15)
        if peer:
            stop(peer)
        note.close()
        os.unlink(notify)


def load():
    return os.getloadavg()[0]


med = statistics.median


def verdict(x, target, more):
    ok = x >= target if more else x <= target
    return '%.2f: %s' % (x, 'met' if ok else 'NOT met')


summary = []
print('v1peer --spin, echo (66), 64 bytes, %d requests per run, %d rounds, '
      'load average %.1f at the start' % (n, rounds, load()))
for profile in profiles:
    raws, g16s, g1s, gds, locs = [], [], [], [], []
    print()
    for i in range(rounds):
        r = run_raw(profile)
        g16 = run_gw(profile, 16, 4 * i)
        g1 = run_gw(profile, 1, 4 * i + 1)
        gd = run_gw(profile, 512, 4 * i + 2, 8)
        loc = run_gw(None, 512, 4 * i + 3, 8)
        locs.append(loc)
        raws.append(r)
        g16s.append(g16)
        g1s.append(g1)
        gds.append(gd)
        print('%s round %d: raw-v1 %.0f req/s, p50 %.1f us (exact %.2f) | gateway -c 16 %.0f '
              'req/s, executor p50 %.1f us (%.2f x raw), end to end %.0f us | -c 1 %.0f req/s, '
              'executor p50 %.1f us (%.2f x raw), end to end %.0f us | -c 512 %.0f req/s (local echo %.0f) | load %.1f'
              % (profile, i + 1, r['req_s'], r['p50'], r['exact_p50'], g16['req_s'], g16['p50'],
                 g16['p50'] / r['p50'], g16['e2e_p50'], g1['req_s'], g1['p50'],
                 g1['p50'] / r['p50'], g1['e2e_p50'], gd['req_s'], loc['req_s'], load()))
    summary.append((profile, raws, g16s, g1s, gds, locs))

print()
print('| peer | raw-v1 req/s | raw-v1 p50 / p99 µs | executor round trip p50 / p99 µs, -c 16 '
      '| / raw p50 | executor round trip p50 / p99 µs, -c 1 | / raw p50 '
      '| gateway -c 16 req/s (end to end p50 µs) | gateway -c 1 req/s (p50 µs) '
      '| gateway -c 512 req/s | -c 512 req/s / raw | local echo -c 512 req/s | gateway / local |')
print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
verdicts = []
for profile, raws, g16s, g1s, gds, locs in summary:
    name = 'freertos-b (FIFO doorbell)' if profile == 'freertos-b' else 'sel4 (polling, no doorbell)'
    ratio16 = med(g['p50'] / r['p50'] for r, g in zip(raws, g16s))
    ratio1 = med(g['p50'] / r['p50'] for r, g in zip(raws, g1s))
    tput = med(g['req_s'] / r['req_s'] for r, g in zip(raws, gds))
    print('| %s | %s | %.1f / %.1f | %.1f / %.1f | %.2f | %.1f / %.1f | %.2f | %s (%.0f) '
          '| %s (%.0f) | %s | %.2f | %s | %.2f |'
          % (name, '{:,.0f}'.format(med(r['req_s'] for r in raws)), med(r['p50'] for r in raws),
             med(r['p99'] for r in raws), med(g['p50'] for g in g16s),
             med(g['p99'] for g in g16s), ratio16, med(g['p50'] for g in g1s),
             med(g['p99'] for g in g1s), ratio1,
             '{:,.0f}'.format(med(g['req_s'] for g in g16s)), med(g['e2e_p50'] for g in g16s),
             '{:,.0f}'.format(med(g['req_s'] for g in g1s)), med(g['e2e_p50'] for g in g1s),
             '{:,.0f}'.format(med(g['req_s'] for g in gds)), tput,
             '{:,.0f}'.format(med(g['req_s'] for g in locs)),
             med(g['req_s'] / x['req_s'] for g, x in zip(gds, locs))))
    verdicts.append('%s: p50 <= 1.5x raw: -c 16 %s, -c 1 %s; req/s >= 2/3 of raw: %s'
                    % (profile, verdict(ratio16, 1.5, False), verdict(ratio1, 1.5, False),
                       verdict(tput, 2 / 3, True)))
print()
print('Medians of %d interleaved rounds (ratios: the median of the rounds\' ratios); '
      'p50/p99 through src/core/hist.c on both sides (raw-v1 exact p50, median: %s); '
      'load average %.1f at the end.'
      % (rounds, ', '.join('%s %.2f µs' % (p, med(r['exact_p50'] for r in raws))
                           for p, raws, _, _, _, _ in summary), load()))
print()
for v in verdicts:
    print(v)
for f in os.listdir(d):
    os.unlink(os.path.join(d, f))
os.rmdir(d)
