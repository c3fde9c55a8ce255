#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Read the memcheck XML logs that scripts/valgrind.sh leaves in LOG_DIR
(daemon.PID.xml for each hyperampd run, unit.PID.xml for each unit test),
print every error and definite/indirect leak with its stack, and one line:

  valgrind: N daemon runs, N unit test runs, N errors, N bytes definitely lost, N indirectly lost

Exit status 1 if there is any error or such leak, a daemon run that ended
before memcheck finished without being listed in LOG_DIR/killed-on-purpose
(by tests/integration/harness.py), or no daemon run at all (the wrapper was
not applied, so nothing was checked); 0 otherwise.

XML rather than the text log: each error is one element, written as it is
found, so a run that was killed before its leak check (a test's SIGKILL)
still shows the errors it had."""
import glob
import os
import re
import sys
import xml.etree.ElementTree as ET

ERROR = re.compile(r'<error>.*?</error>', re.S)
LEAKS = {'Leak_DefinitelyLost': 'definite', 'Leak_IndirectlyLost': 'indirect'}
VALGRIND_DIED = re.compile(r"the 'impossible' happened|VALGRIND INTERNAL ERROR|"
                           r"Valgrind's memory management: out of memory", re.I)


def frames(err, most=16):
    out = []
    for f in err.findall('./stack/frame')[:most]:
        fn = f.findtext('fn') or '???'
        where = ('%s:%s' % (f.findtext('file'), f.findtext('line')) if f.findtext('file')
                 else f.findtext('obj') or '')
        out.append('      %s (%s)' % (fn, where))
    return out


def command(text):
    m = re.search(r'<argv>(.*?)</argv>', text, re.S)
    if not m:
        return '?'
    return ' '.join(re.findall(r'<(?:exe|arg)>(.*?)</(?:exe|arg)>', m.group(1)))


def main(logdir):
    runs = {'daemon': 0, 'unit': 0}
    killed = 0
    errors = 0
    lost = {'definite': 0, 'indirect': 0}
    try:
        with open(os.path.join(logdir, 'killed-on-purpose')) as f:
            on_purpose = set(f.read().split())
    except FileNotFoundError:
        on_purpose = set()
    for path in sorted(glob.glob(os.path.join(logdir, '*.xml'))):
        kind = os.path.basename(path).split('.')[0]
        runs[kind] = runs.get(kind, 0) + 1
        with open(path, errors='replace') as f:
            text = f.read()
        # A SIGKILLed process never writes its final status (nor a leak check):
        # fine for the daemons killed on purpose, an unchecked run otherwise.
        if '<state>FINISHED</state>' not in text:
            killed += 1
            pid = os.path.basename(path).split('.')[1]
            if kind == 'daemon' and pid not in on_purpose:
                errors += 1
                print('valgrind: %s: the run ended before memcheck finished, and no test '
                      'killed it on purpose: its leaks were never checked\n  in %s'
                      % (os.path.basename(path), command(text)))
        # A crash inside the program (SIGSEGV, SIGBUS, ...) is an error too.
        for sig in re.findall(r'<fatal_signal>.*?<signame>(\w+)</signame>', text, re.S):
            errors += 1
            print('valgrind: %s: fatal signal %s\n  in %s'
                  % (os.path.basename(path), sig, command(text)))
        for block in ERROR.findall(text):
            err = ET.fromstring(block)
            what = err.findtext('what') or err.findtext('./xwhat/text') or '?'
            k = err.findtext('kind')
            if k in LEAKS:
                # A definite record's leakedbytes includes the blocks only it
                # pointed to, also reported as indirect: count its direct part.
                m = re.match(r'[\d,]+ \(([\d,]+) direct', what)
                n = m.group(1) if m else err.findtext('./xwhat/leakedbytes') or '0'
                lost[LEAKS[k]] += int(n.replace(',', ''))
            else:
                errors += 1
            print('valgrind: %s: %s\n  in %s\n    %s: %s'
                  % (os.path.basename(path), k, command(text), k, what))
            print('\n'.join(frames(err)))
    # Valgrind's own messages (an unhandled syscall or ioctl, say): shown,
    # not counted, since they are about valgrind rather than our code --
    # unless valgrind itself gave up, which leaves that run unchecked.
    for path in sorted(glob.glob(os.path.join(logdir, '*.log'))):
        with open(path, errors='replace') as f:
            text = f.read().strip()
        if text:
            print('valgrind: note from %s:\n%s' % (os.path.basename(path), text))
        if VALGRIND_DIED.search(text):
            errors += 1
            print('valgrind: %s: valgrind itself failed, so that run was not checked'
                  % os.path.basename(path))
    ok = errors == 0 and lost['definite'] == 0 and lost['indirect'] == 0
    if runs['daemon'] == 0:
        print('valgrind: no daemon run was logged in %s: the wrapper was not applied' % logdir)
        ok = False
    print('valgrind: %d daemon runs%s, %d unit test runs, %d errors, '
          '%d bytes definitely lost, %d indirectly lost'
          % (runs['daemon'], ' (%d killed before their leak check)' % killed if killed else '',
             runs['unit'], errors, lost['definite'], lost['indirect']))
    return 0 if ok else 1


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: valgrind-scan.py LOG_DIR')
    sys.exit(main(sys.argv[1]))
