#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The v1 gateway beside the raw v1 driver (docs/PERFORMANCE.md, "The v1
gateway"): the same simulated, spinning peer (tests/peers/v1peer --spin),
first driven by bench/raw-v1 (one process, stop-and-wait, spinning), then
by hyperampd's remote zone under hyperampctl bench.  Prints a Markdown table.

    bench/gateway.py [BUILD_DIR] [REQUESTS] [PROFILE]

PROFILE: freertos-b (default, FIFO doorbell) or sel4 (polling, none).
Readiness is waited for on events (the peer's "ready" line, the daemon's
READY=1), each with a bound; nothing sleeps."""
import json
import os
import socket
import subprocess
import sys
import tempfile

build = sys.argv[1] if len(sys.argv) > 1 else 'build'
n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
profile = sys.argv[3] if len(sys.argv) > 3 else 'freertos-b'
peer_kind = 'sel4' if profile == 'sel4' else 'freertos'
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


def fresh_peer():
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


rows = []
peer = fresh_peer()
raw_args = [RAW, '--shm-config', cfg, '--mem', mem, '--base', BASE, '--peer', peer_kind,
            '--service', '66', '--size', '64', '--requests', str(n)]
if profile != 'sel4':
    raw_args += ['--doorbell', bell]
out = subprocess.run(raw_args, capture_output=True, text=True, timeout=300).stdout
raw = dict(kv.split('=', 1) for kv in out.split()[1:])
stop(peer)
rows.append(('raw-v1 (stop-and-wait, spinning)', float(raw['req_s']), float(raw['p50_us']),
             float(raw['p99_us']), '-'))

peer = fresh_peer()
zone = {'name': 'rtos', 'protocol': 'v1', 'peer': peer_kind, 'shm_config': cfg, 'mem': mem,
        'base': BASE, 'services': [66], 'timeout_ms': 1000, 'max_pending': 256,
        'doorbell': {'kind': 'none'} if profile == 'sel4' else {'kind': 'fifo', 'path': bell}}
with open(os.path.join(d, 'd.json'), 'w') as f:
    json.dump({'shm_name': '/hyperamp-gw-bench-%d' % os.getpid(), 'log_level': 'warning',
               'remote_zones': [zone]}, f)
note = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
note.bind(os.path.join(d, 'notify'))
note.settimeout(15)
sock = os.path.join(d, 'ctl.sock')
daemon = subprocess.Popen([HYPERAMPD, '--config', os.path.join(d, 'd.json'), '--socket', sock],
                          env=dict(os.environ, NOTIFY_SOCKET=os.path.join(d, 'notify')))
while b'READY=1' not in note.recv(4096):
    pass
for c in (1, 16):
    out = subprocess.run([CTL, '--socket', sock, '--json', 'bench', '-s', 'echo', '-c', str(c),
                          '-n', str(n), '--size', '64'],
                         capture_output=True, text=True, timeout=300).stdout
    b = json.loads(out)
    rows.append(('gateway: hyperampctl bench -c %d (socket, end to end)' % c, b['req_per_s'],
                 b['latency_us']['p50'], b['latency_us']['p99'], 'socket'))
s = json.loads(subprocess.run([CTL, '--socket', sock, '--json', 'stats'], capture_output=True,
                              text=True, timeout=30).stdout)
x = [e for e in s['executors'] if e['name'] == 'rtos'][0]
rows.append(('gateway: the zone executor\'s round trip (of the above)', None,
             x['round_trip_us']['p50'], x['round_trip_us']['p99'], 'executor'))
daemon.terminate()
daemon.wait(timeout=15)
stop(peer)

print('peer: %s --spin, echo (66), 64 bytes, %d requests per row' % (profile, n))
print()
print('| driver | req/s | p50 us | p99 us |')
print('|---|---|---|---|')
for name, rps, p50, p99, _ in rows:
    print('| %s | %s | %.1f | %.1f |' % (name, '%.0f' % rps if rps else '-', p50, p99))
gw = max(r[1] for r in rows if r[4] == 'socket')
print()
print('throughput, gateway (best) / raw: %.2f; executor round trip p50 / raw p50: %.2f'
      % (gw / rows[0][1], rows[-1][2] / rows[0][2]))
for f in os.listdir(d):
    os.unlink(os.path.join(d, f))
os.rmdir(d)
