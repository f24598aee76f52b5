#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""Summarise a meson testlog.json: one row per test executable with its
TAP subtest counts, then the closing line "N passed, N failed, N skipped".
Further arguments are files of results from outside meson (the guest
demos), one "NAME RESULT SECONDS LOG" line each, counted as one subtest.

N counts TAP subtests. An executable that failed without a TAP "not ok"
line (a crash, a timeout) counts as one more failure. Exits 1 on any
failure or if nothing ran.
"""

import json
import os
import re
import sys

TAP = re.compile(r"^(not ok|ok)\b[^#]*(#\s*(SKIP|TODO)\b)?", re.IGNORECASE)


def count(output):
    passed = failed = skipped = 0
    for line in output.splitlines():
        m = TAP.match(line.strip())
        if not m:
            continue
        if m.group(3) and m.group(3).upper() == "SKIP":
            skipped += 1
        elif m.group(1) == "ok":
            passed += 1
        elif m.group(3) and m.group(3).upper() == "TODO":
            skipped += 1
        else:
            failed += 1
    return passed, failed, skipped


def main():
    total = [0, 0, 0]
    rows = []
    with open(sys.argv[1]) as f:
        for line in f:
            t = json.loads(line)
            p, fl, s = count(t.get("stdout") or "")
            result = t.get("result", "")
            if result not in ("OK", "SKIP", "EXPECTEDFAIL") and fl == 0:
                fl += 1
            if result == "SKIP" and p + fl + s == 0:
                s = 1
            name = t["name"].split(" / ")[-1]
            rows.append((name, result, p, fl, s, t.get("duration", 0)))
            total = [total[0] + p, total[1] + fl, total[2] + s]
    # Optional: results that are not meson tests (the guest demos), one
    # "NAME RESULT SECONDS LOG" line each; each counts as one subtest
    for path in sys.argv[2:]:
        with open(path) as f:
            for line in f:
                name, result, secs = line.split()[:3]
                p, fl, s = {"OK": (1, 0, 0), "SKIP": (0, 0, 1)}.get(
                    result, (0, 1, 0))
                rows.append((name, result, p, fl, s, float(secs)))
                total = [total[0] + p, total[1] + fl, total[2] + s]
    print()
    print(f"{'test':40s} {'result':8s} {'pass':>5s} {'fail':>5s} "
          f"{'skip':>5s} {'secs':>7s}")
    for name, result, p, fl, s, d in rows:
        print(f"{name:40s} {result:8s} {p:5d} {fl:5d} {s:5d} {d:7.1f}")
    # Why it fails goes to stderr, before the closing line, which stays
    # the last line of the output.
    failed = [r[0] for r in rows if r[3]]
    sys.stdout.flush()
    if failed:
        print(f"error: failed: {', '.join(failed)} (logs: "
              f"{os.path.dirname(sys.argv[1])})", file=sys.stderr)
    elif not total[0]:
        print("error: no test passed", file=sys.stderr)
    sys.stderr.flush()
    print(f"{total[0]} passed, {total[1]} failed, {total[2]} skipped")
    if total[1] or not total[0]:
        sys.exit(1)


if __name__ == "__main__":
    main()
