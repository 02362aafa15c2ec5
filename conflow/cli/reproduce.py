"""``conflow reproduce``: rerun the papers' experiments blind (`conflow.reference.reproduce`).

    conflow reproduce [--paper gradient|momentum|all] [--limit N] [--points N] [--seed S]
                      [--exact] [--json] [--out FILE] [--no-progress]

One row per case, then a summary per protocol. Exit code 0 if every count matches its closed
form, 1 on a mismatch, 2 on bad input.
"""

from __future__ import annotations

import json
import sys
import time

from conflow.cli.arguments import add_json_argument
from conflow.errors import InputError


def add_parser(subparsers) -> None:
    """Add the ``reproduce`` subcommand."""
    from conflow.reference.reproduce import PAPERS

    r = subparsers.add_parser("reproduce", help="rerun the papers' experiments blind")
    r.add_argument("--paper", default="all", choices=PAPERS,
                   help="gradient (NeurIPS 2023), momentum (ICML 2024) or all (default)")
    r.add_argument("--limit", type=int, default=None, help="first N cases of each protocol")
    r.add_argument("--points", type=int, default=3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--exact", action="store_true", help="count every case with the exact engine")
    add_json_argument(r)
    r.add_argument("--out", default=None, help="also write the JSON results to this file")
    r.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Run ``conflow reproduce``; 0 if every count matches, 1 otherwise."""
    from tqdm import tqdm

    from conflow.reference import reproduce

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    t0 = time.perf_counter()
    total = reproduce.n_cases(args.paper, args.limit)
    rows = []
    bar = tqdm(total=total, disable=args.no_progress or None, file=sys.stderr, leave=False,
               desc="reproduce")
    if not args.json:
        print(reproduce.HEADER)
    method = "exact" if args.exact else "auto"
    for row in reproduce.run(args.paper, limit=args.limit, points=args.points, seed=args.seed,
                             method=method):
        rows.append(row)
        bar.update()
        if not args.json:
            bar.write(reproduce.format_row(row), file=sys.stdout)
    bar.close()
    summary = reproduce.summarise(rows, time.perf_counter() - t0)
    payload = {"paper": args.paper, "summary": summary, "rows": [r.to_json() for r in rows]}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(payload, fh, indent=1)
    if args.json:
        print(json.dumps(payload))
    else:
        for name, s in summary["protocols"].items():
            print(f"{name}: {s['matches']}/{s['cases']} match, {s['seconds']:.1f} s")
        print(f"total: {summary['matches']}/{summary['cases']} counts match the closed forms "
              f"in {summary['seconds']:.1f} s")
    return 0 if summary["matches"] == summary["cases"] else 1
