"""Benchmark `polynomial_laws(model, degree=2)`: wall time and peak memory in fresh processes.

Cases: linear [3,4,4,3], linear [5,5,5], ReLU [3,4,4,3] (the issue's reference: the symbolic
solve(2) of the reference code takes 74 s, 122 s — crashing without a raised recursion limit, 3.8 GB
— and 119 s; target < 5 s and < 1 GB each) and linear [10,10,10] (D = 200, 20,300 unknowns; target
< 60 s).

Each case runs twice, each time in a FRESH process (`python bench_laws.py --worker ...`):

* ``laws``: `polynomial_laws(..., count=False)` — the polynomial search alone;
* ``laws+count``: `polynomial_laws(..., count=True)` — what ``conflow laws`` does (adds the
  `count_laws` comparison).

Reported: the wall time of the subprocess (interpreter start-up, imports and JIT compilation
included), the in-process seconds of the search (and of the count), and the peak resident memory
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the worker (KiB on Linux → MB). The reference
times are constants quoted by the issue (another machine, another run), not measured here.

    /work/venv/bin/python benchmarks/bench_laws.py            # writes results/bench_laws.json
    /work/venv/bin/python benchmarks/bench_laws.py --only 'linear[10,10,10]'
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "bench_laws.json"

CASES = [
    ("linear", (3, 4, 4, 3), 5.0),
    ("linear", (5, 5, 5), 5.0),
    ("relu", (3, 4, 4, 3), 5.0),
    ("linear", (10, 10, 10), 60.0),
]
# Issue text: solve(2) of the reference symbolic code (not measured in this run).
REFERENCE_S = {("linear", (3, 4, 4, 3)): 74.0, ("linear", (5, 5, 5)): 122.0,
               ("relu", (3, 4, 4, 3)): 119.0}
TARGET_MB = 1024.0


def label(kind: str, dims) -> str:
    return f"{kind}[{','.join(map(str, dims))}]"


def worker(kind: str, dims: str, count: bool) -> None:
    import resource

    t0 = time.perf_counter()
    import conflow as cf

    t_import = time.perf_counter() - t0
    model = cf.get_model(kind, dims)
    basis = cf.polynomial_laws(model, None, 2, count=count)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({
        "import_s": t_import, "laws_s": basis.seconds, "count_s": basis.seconds_count,
        "n_laws": basis.n_laws, "n_independent": basis.n_independent, "count": basis.n_count,
        "complete": basis.complete, "status": basis.status, "gap": basis.to_json()["gap"],
        "monomials": basis.monomials, "classes": basis.classes,
        "largest_class": basis.largest_class, "families": [f.describe() for f in basis.families],
        "max_rss_mb": rss, "D": model.D,
    }))


def run_case(kind: str, dims, count: bool, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
           ",".join(map(str, dims))] + (["--count"] if count else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"ok": False, "wall_s": timeout, "error": f"timeout after {timeout} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"ok": False, "wall_s": wall, "error": proc.stderr.strip()[-2000:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update({"ok": True, "wall_s": wall})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", nargs=2, metavar=("KIND", "DIMS"), help=argparse.SUPPRESS)
    p.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", action="append", default=None, help="case label (repeatable)")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.worker[1], args.count)
        return 0

    rows, failures = [], []
    hdr = (f"{'case':20s} {'D':>4s} {'mode':10s} {'laws':>5s} {'indep':>5s} {'count':>5s} "
           f"{'wall s':>7s} {'search s':>8s} {'count s':>7s} {'MB':>6s} {'ref s*':>6s} "
           f"{'target':>7s} met?")
    print(hdr)
    for kind, dims, target in CASES:
        lab = label(kind, dims)
        if args.only and lab not in args.only:
            continue
        for count in (False, True):
            r = run_case(kind, dims, count, args.timeout)
            mode = "laws+count" if count else "laws"
            ref = REFERENCE_S.get((kind, tuple(dims)))
            met = (r["ok"] and r["status"] == "ok" and r["wall_s"] < target
                   and (target > 5 or r["max_rss_mb"] < TARGET_MB))
            row = {"case": lab, "kind": kind, "dims": list(dims), "mode": mode,
                   "target_s": target, "target_mb": TARGET_MB if target <= 5 else None,
                   "reference_symbolic_s": ref, "met": bool(met), **r}
            rows.append(row)
            if not r["ok"]:
                failures.append(row)
                print(f"{lab:20s} {'':>4s} {mode:10s} FAILED: {r['error'][:200]}")
                continue
            print(f"{lab:20s} {r['D']:4d} {mode:10s} {r['n_laws']:5d} {r['n_independent']:5d} "
                  f"{str(r['count']) if r['count'] is not None else '-':>5s} "
                  f"{r['wall_s']:7.2f} {r['laws_s']:8.2f} "
                  f"{r['count_s']:7.2f} {r['max_rss_mb']:6.0f} "
                  f"{ref if ref else '-':>6} {target:7.0f} {'yes' if met else 'NO'}")
    print("* ref s: the issue's timing of the reference symbolic solve(2); not measured here.")
    payload = {
        "benchmark": "polynomial_laws degree 2",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "rows": rows, "failures": [f["case"] for f in failures],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(payload, fh, indent=1)
    print(f"wrote {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
