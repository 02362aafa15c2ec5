"""``conflow reproduce``: rerun the papers' experiments blind (`conflow.reference.reproduce`).

    conflow reproduce [--paper gradient|momentum|all] [--limit N] [--points N] [--seed S]
                      [--exact] [--json] [--out FILE] [--no-progress]

One row per case, then a summary per protocol. Exit code 0 if every count matches its closed
form, 1 on a mismatch, 2 on bad input (checked before the run, ``--out`` included), 130 when
interrupted. With ``--out FILE`` each finished row is appended to ``FILE.partial.jsonl`` as it
completes; the complete JSON replaces FILE at the end (an interrupted run keeps the partial
file).
"""

from __future__ import annotations

import json
import os
import sys
import time

from conflow.cli.arguments import add_json_argument, seed
from conflow.errors import InputError, check_int


def add_parser(subparsers) -> None:
    """Add the ``reproduce`` subcommand."""
    from conflow.reference.reproduce import PAPERS

    r = subparsers.add_parser("reproduce", help="rerun the papers' experiments blind")
    r.add_argument("--paper", default="all", choices=PAPERS,
                   help="gradient (NeurIPS 2023), momentum (ICML 2024) or all (default)")
    r.add_argument("--limit", type=int, default=None, help="first N cases of each protocol")
    r.add_argument("--points", type=int, default=3)
    r.add_argument("--seed", type=seed, default=0)
    r.add_argument("--exact", action="store_true", help="count every case with the exact engine")
    add_json_argument(r)
    r.add_argument("--out", default=None, help="also write the JSON results to this file")
    r.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Run ``conflow reproduce``; 0 if every count matches, 1 otherwise."""
    from tqdm import tqdm

    from conflow.laws.count import MIN_POINTS
    from conflow.reference import reproduce

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    check_int("--points", args.points, MIN_POINTS)
    partial = _open_partial(args.out)  # a bad --out fails now, not after the run
    t0 = time.perf_counter()
    total = reproduce.n_cases(args.paper, args.limit)
    rows = []
    bar = tqdm(total=total, disable=args.no_progress or None, file=sys.stderr, leave=False,
               desc="reproduce")
    if not args.json:
        print(reproduce.HEADER)
    method = "exact" if args.exact else "auto"
    try:
        for row in reproduce.run(args.paper, limit=args.limit, points=args.points,
                                 seed=args.seed, method=method):
            rows.append(row)
            bar.update()
            if not args.json:
                bar.write(reproduce.format_row(row), file=sys.stdout)
            if partial is not None:  # every finished row is on disk at once
                partial.write(json.dumps(row.to_json()) + "\n")
                partial.flush()
    except KeyboardInterrupt:
        if partial is not None:
            partial.close()
            print(f"conflow: interrupted: the {len(rows)} finished rows are in {partial.name}",
                  file=sys.stderr)
        raise
    bar.close()
    summary = reproduce.summarise(rows, time.perf_counter() - t0)
    payload = {"paper": args.paper, "summary": summary, "rows": [r.to_json() for r in rows]}
    if partial is not None:
        partial.close()
        tmp = args.out + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=1)
        os.replace(tmp, args.out)  # the complete file appears at once
        os.remove(partial.name)
    if args.json:
        print(json.dumps(payload))
    else:
        for name, s in summary["protocols"].items():
            print(f"{name}: {s['matches']}/{s['cases']} match, {s['seconds']:.1f} s")
        print(f"total: {summary['matches']}/{summary['cases']} counts match the closed forms "
              f"in {summary['seconds']:.1f} s")
    return 0 if summary["matches"] == summary["cases"] else 1


def _open_partial(out: str | None):
    """``OUT.partial.jsonl``, opened for the rows as they finish, or None without ``--out``;
    `InputError` now if ``OUT`` cannot be written (a missing folder, a folder, no permission)."""
    if out is None:
        return None
    if os.path.isdir(out):
        raise InputError(f"--out {out!r} is a folder; give a file path")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InputError(f"--out {out!r}: the folder {folder!r} does not exist")
    try:
        return open(out + ".partial.jsonl", "w")
    except OSError as exc:
        raise InputError(f"--out {out!r} cannot be written: {exc.strerror}") from None
