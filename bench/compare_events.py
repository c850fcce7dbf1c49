"""Compare two JSON-lines event logs (e.g. `python run_live.py > x.jsonl`), timing fields aside.

    python -m bench.compare_events parent.jsonl child.jsonl

Timing fields are dropped before comparing: `seq` (the app's own stats lines land where wall time
puts them), `rtf`, `latency_ms` and the session id. Engine events (everything but `stats`) must
match in order; the app's `stats` lines are compared as a list of their remaining fields. Prints
the first difference, if any, and exits 1 when the logs differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TIMING = {"seq", "rtf", "latency_ms", "session"}


def load(path: Path) -> tuple[list[dict], list[dict]]:
    """(engine events, stats lines) of a log, timing fields removed."""
    events, stats = [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = {k: v for k, v in json.loads(line).items() if k not in TIMING}
        (stats if record.get("type") == "stats" else events).append(record)
    return events, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    (ea, sa), (eb, sb) = load(args.a), load(args.b)
    same = True
    for i, (x, y) in enumerate(zip(ea, eb)):
        if x != y:
            print(f"event {i} differs:\n  {json.dumps(x)[:400]}\n  {json.dumps(y)[:400]}")
            same = False
            break
    if len(ea) != len(eb):
        print(f"engine events: {len(ea)} vs {len(eb)}")
        same = False
    if sa != sb:
        print(f"stats lines differ: {len(sa)} vs {len(sb)} (first: {sa[:1]} / {sb[:1]})")
        same = False
    print(f"engine events {len(ea)} / {len(eb)}, stats lines {len(sa)} / {len(sb)}: "
          + ("identical (timing fields aside)" if same else "DIFFERENT"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
