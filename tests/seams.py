#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Check whether programs carry the test seams (-Dtest_seams=true).

    tests/seams.py absent|present FILE...

A seam reads $HYPERAMP_TEST_*, so that name is in any binary that has one:
"absent" fails when a file holds it (a release build must not), "present"
fails when one does not (the test build must, or its seam tests skip).
"""
import sys

MARK = b'HYPERAMP_TEST_'


def main(argv):
    if len(argv) < 3 or argv[1] not in ('absent', 'present'):
        sys.stderr.write(__doc__)
        return 2
    want = argv[1] == 'present'
    bad = 0
    for path in argv[2:]:
        with open(path, 'rb') as f:
            has = MARK in f.read()
        print('%s: %s' % (path, 'has test seams' if has else 'no test seams'))
        bad += has != want
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
