#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Print one plain summary line from meson's test log, for people and CI:
   tests: N passed, N failed, N skipped
   scripts/test-summary.py BUILD_DIR/meson-logs/testlog.json"""
import json
import sys

ok = bad = skip = 0
for line in open(sys.argv[1]):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif r == "SKIP":
        skip += 1
    else:
        bad += 1
print(f"tests: {ok} passed, {bad} failed, {skip} skipped")
