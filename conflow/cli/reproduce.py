"""``conflow reproduce``: rerun the papers' experiments blind (`conflow.reference.reproduce`).

    conflow reproduce [--paper gradient|momentum|transformers|all] [--limit N] [--points N] [--seed S]
                      [--exact] [--json] [--out FILE [--resume]] [--no-progress]

One row per case, then a summary per protocol. Exit code 0 if every count matches its closed
form, 1 on a mismatch, 2 on bad input (checked before the run, ``--out`` included), 130 when
interrupted. With ``--out FILE`` each finished row is appended to ``FILE.partial.jsonl`` as it
completes; the complete JSON replaces FILE at the end (an interrupted run keeps the partial
file). ``--resume`` reads an existing partial file back: its rows (matched by paper, protocol,
configuration, flow, seed, points and method) are not counted again and are part of the final
table and summary. Without ``--resume``, an existing partial file is never overwritten (exit 2);
a corrupt partial file, or one written with other options, is one line and exit 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections import deque
from typing import Any

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
    r.add_argument("--out", default=None,
                   help="also write the JSON results to this file (rows are appended to "
                        "FILE.partial.jsonl as they finish)")
    r.add_argument("--resume", action="store_true",
                   help="with --out FILE: keep the rows of FILE.partial.jsonl left by an "
                        "interrupted run with the same options, count only the others")
    r.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    """Run ``conflow reproduce``; 0 if every count matches, 1 otherwise."""
    from tqdm import tqdm

    from conflow.laws.count import MIN_POINTS
    from conflow.reference import reproduce

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    check_int("--points", args.points, MIN_POINTS)
    if args.resume and args.out is None:
        raise InputError("--resume needs --out FILE (the partial file is FILE.partial.jsonl)")
    method = "exact" if args.exact else "auto"
    options = {"paper": args.paper, "seed": args.seed, "points": args.points, "method": method}
    # a bad --out, or a partial file that would be lost or does not match, fails now
    done = _read_partial(args.out, options, args.resume) if args.out is not None else {}
    if done:
        planned = {_key({**options, "protocol": p.name, "case": case, "flow_index": j})
                   for p in reproduce.protocols_for(args.paper)
                   for case, (_, flows) in enumerate(p.configurations(args.limit))
                   for j in range(len(flows))}
        if set(done) - planned:
            raise InputError(
                f"--resume: {len(set(done) - planned)} rows of {args.out}.partial.jsonl are not "
                "rows of this run (a smaller --limit than the run that wrote them?); rerun with "
                "its --limit, or remove the file")
    resumed = len(done)
    partial = _open_partial(args.out, append=bool(done))
    t0 = time.perf_counter()
    total = reproduce.n_cases(args.paper, args.limit)
    rows: list[Any] = []
    bar = tqdm(total=total, disable=args.no_progress or None, file=sys.stderr, leave=False,
               desc="reproduce")
    if not args.json:
        print(reproduce.HEADER)
    pending: deque[dict[str, Any]] = deque()  # the keys of the rows being counted, in order

    def show(row) -> None:
        bar.update()
        if not args.json:
            bar.write(reproduce.format_row(row), file=sys.stdout)

    def skip(protocol: str, case: int, flow_index: int, model: Any, flow: Any) -> bool:
        key = {**options, "protocol": protocol, "case": case, "flow_index": flow_index}
        restored = done.pop(_key(key), None)
        if restored is None:
            pending.append(key)
            return False
        rows.append(restored)
        show(restored)
        return True

    try:
        for row in reproduce.run(args.paper, limit=args.limit, points=args.points,
                                 seed=args.seed, method=method, skip=skip):
            rows.append(row)
            show(row)
            if partial is not None:  # every finished row is on disk at once
                partial.write(json.dumps({**row.to_json(), "resume": pending.popleft()}) + "\n")
                partial.flush()
    except KeyboardInterrupt:
        if partial is not None:
            partial.close()
            print(f"conflow: interrupted: the {len(rows)} finished rows are in {partial.name}; "
                  "rerun with --resume to count only the others", file=sys.stderr)
        raise
    bar.close()
    summary = reproduce.summarise(rows, time.perf_counter() - t0)
    summary["resumed"] = resumed  # rows read back from the partial file, not counted again
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
              f"in {summary['seconds']:.1f} s"
              + (f" ({resumed} rows resumed from the partial file)" if resumed else ""))
    return 0 if summary["matches"] == summary["cases"] else 1


def _check_out(out: str) -> None:
    """`InputError` now if ``OUT`` cannot be written (a missing folder, a folder)."""
    if os.path.isdir(out):
        raise InputError(f"--out {out!r} is a folder; give a file path")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InputError(f"--out {out!r}: the folder {folder!r} does not exist")


def _open_partial(out: str | None, append: bool = False):
    """``OUT.partial.jsonl``, opened for the rows as they finish (``append``: after the rows
    kept by ``--resume``), or None without ``--out``; `InputError` now if ``OUT`` cannot be
    written (a missing folder, a folder, no permission)."""
    if out is None:
        return None
    _check_out(out)
    try:
        return open(out + ".partial.jsonl", "a" if append else "w")
    except OSError as exc:
        raise InputError(f"--out {out!r} cannot be written: {exc.strerror}") from None


#: What identifies a row of a run (``resume`` field of each line of the partial file).
_KEY_FIELDS = {"paper": str, "protocol": str, "case": int, "flow_index": int, "seed": int,
               "points": int, "method": str}
#: The row fields the final table and summary need from a restored row.
_ROW_FIELDS = {"protocol": str, "model": str, "flow_label": str, "method": str, "D": int,
               "status": str, "match": bool, "depth": int, "seconds": (int, float)}


def _key(key: dict[str, Any]) -> tuple:
    return tuple(key[name] for name in _KEY_FIELDS)


@dataclasses.dataclass(frozen=True)
class _RestoredRow:
    """A finished row read back from the partial file: what `reproduce.format_row`,
    `reproduce.summarise` and the JSON output read of a `reproduce.Row`."""

    data: dict[str, Any]

    @property
    def protocol(self) -> str:
        return self.data["protocol"]

    @property
    def known(self) -> int | None:
        return self.data.get("known")

    @property
    def note(self) -> str:
        return self.data.get("note", "")

    @property
    def match(self) -> bool:
        return bool(self.data["match"])

    @property
    def flow_label(self) -> str:
        return self.data["flow_label"]

    @property
    def count(self) -> Any:
        from types import SimpleNamespace

        d = self.data
        return SimpleNamespace(model=d["model"], method=d["method"], D=d["D"],
                               n_laws=d.get("n_laws"), gap=d.get("gap"), depth=d["depth"],
                               seconds=float(d["seconds"]), status=d["status"])

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k != "resume"}


def _read_partial(out: str, options: dict[str, Any], resume: bool) -> dict[tuple, _RestoredRow]:
    """The finished rows of ``OUT.partial.jsonl`` by key (`_KEY_FIELDS`), for ``--resume``;
    ``{}`` when there is none. `InputError` (one line) when the file is corrupt, was written
    with other options, or exists without ``--resume`` (it would be overwritten). A last line
    cut short (the run was killed while writing it) is dropped: that row is counted again."""
    _check_out(out)
    name = out + ".partial.jsonl"
    if not os.path.exists(name):
        return {}
    try:
        with open(name, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--resume: cannot read {name}: {getattr(exc, 'strerror', None) or exc}"
                         ) from None
    lines = text.split("\n")
    torn = lines.pop() if lines else ""  # "" when the file ends with a newline
    if not resume:
        if not text.strip():
            return {}
        raise InputError(f"--out {out!r}: {name} holds the finished rows of an earlier run; "
                         "add --resume to keep them, or remove the file")
    done: dict[tuple, _RestoredRow] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = _parse_row(line, f"{name} line {number}")
        key = row.data["resume"]
        for name_, value in options.items():
            if key[name_] != value:
                raise InputError(
                    f"--resume: {name} was written with {name_.replace('_', ' ')} "
                    f"{key[name_]!r}, this run has {value!r}; rerun with the same options, "
                    "or remove the file")
        if _key(key) in done:
            raise InputError(f"--resume: {name} line {number} repeats a row "
                             f"({key['protocol']} case {key['case']}, flow {key['flow_index']})")
        done[_key(key)] = row
    if torn.strip():  # a row cut short: drop it, keep the file's complete lines
        print(f"conflow: resume: the last line of {name} was cut short; that row is counted "
              "again", file=sys.stderr)
        with open(name + ".tmp", "w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines if line.strip())
        os.replace(name + ".tmp", name)
    return done


def _parse_row(line: str, where: str) -> _RestoredRow:
    """One line of the partial file as a `_RestoredRow`; `InputError` if it is not one."""
    try:
        data = json.loads(line)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("resume"), dict):
        raise InputError(f"--resume: {where} is not a row of conflow reproduce (corrupt file?); "
                         "remove the file to start again")
    for fields, record in ((_KEY_FIELDS, data["resume"]), (_ROW_FIELDS, data)):
        for field, kind in fields.items():
            value = record.get(field)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise InputError(f"--resume: {where} has no valid {field!r} (corrupt file?); "
                                 "remove the file to start again")
    return _RestoredRow(data)
