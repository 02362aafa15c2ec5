"""Benchmark the exact engine against the numerical engine, in one run, as ratios.

For every case, ``count_laws(model, flow, method="numeric")`` and
``count_laws(model, flow, method="exact")`` each run in a FRESH process (``python -c``, imports and
JIT compilation included) and are timed around the subprocess. The table shows both counts and
statuses, whether they agree, both wall times, the in-process times reported by conflow, and the
ratios numeric / exact (> 1: the exact engine is faster).

Cases:

- the ``bench_counts`` set (gradient flow): linear [2,3,2], [3,4,2], [2,3,3,2], [4,5,3], [3,4,4,3],
  [5,5,5]; ReLU [2,3,2], [3,4,2], [2,3,3,2], [4,5,3], [3,4,4,3] without and with hidden biases;
- the ``bench_momentum`` set (momentum flow, τ = 0): linear [2,8,1], [2,5,2,2], [2,3,2], [3,3,3],
  relu [2,3,2], nmf (2,5,2) and icnn (2,2,2) under the entropy metric, and linear [5,10,5]
  (D = 100, state dimension 201).

The numeric engine stops at its default depth cap (6); momentum Lie algebras often need deeper
brackets, and such counts are reported as ``not_converged`` — that is what the exact engine is for.

    python benchmarks/bench_exact.py             # everything (≈ 10 min on a busy 2-core machine)
    python benchmarks/bench_exact.py --quick     # 3 cases
    python benchmarks/bench_exact.py --only 'momentum:linear[2,3,2]' --only 'gradient:relu[4,5,3]'

Writes ``benchmarks/results/bench_exact.json`` (``bench_exact_quick.json`` with ``--quick``).
Exit code 1 when both engines answer ``ok`` with different counts, or a run fails; else 0.
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

from fresh_process import env as _env
from fresh_process import last_json as _last_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "bench_exact.json"
QUICK_OUT = HERE / "results" / "bench_exact_quick.json"

LINEAR = [(2, 3, 2), (3, 4, 2), (2, 3, 3, 2), (4, 5, 3), (3, 4, 4, 3), (5, 5, 5)]
RELU = [(2, 3, 2), (3, 4, 2), (2, 3, 3, 2), (4, 5, 3), (3, 4, 4, 3)]
MOMENTUM = [
    ("linear", (2, 8, 1), False, "euclidean"),
    ("linear", (2, 5, 2, 2), False, "euclidean"),
    ("linear", (2, 3, 2), False, "euclidean"),
    ("linear", (3, 3, 3), False, "euclidean"),
    ("relu", (2, 3, 2), False, "euclidean"),
    ("nmf", (2, 5, 2), False, "entropy"),
    ("icnn", (2, 2, 2), False, "entropy"),
    ("linear", (5, 10, 5), False, "euclidean"),  # D = 100, state dimension 201
]


def _case(group: str, kind: str, dims, bias: bool, flow: str, metric: str, tau=None) -> dict:
    label = f"{kind}[{','.join(map(str, dims))}]" + ("+bias" if bias else "")
    if metric != "euclidean":
        label += f" {metric}"
    return {"id": f"{flow}:{label}", "group": group, "kind": kind, "dims": list(dims),
            "bias": bias, "flow": flow, "tau": tau, "metric": metric, "label": label}


def all_cases() -> list[dict]:
    cases = [_case("bench_counts", "linear", d, False, "gradient", "euclidean") for d in LINEAR]
    cases += [_case("bench_counts", "relu", d, b, "gradient", "euclidean")
              for d in RELU for b in (False, True)]
    cases += [_case("bench_momentum", k, d, b, "momentum", m, tau=0.0) for k, d, b, m in MOMENTUM]
    return cases


QUICK_IDS = ["gradient:linear[2,3,2]", "gradient:relu[2,3,2]+bias", "momentum:linear[2,3,2]"]

# Runs in the fresh process: build the model and flow, count, print the JSON of the count.
SNIPPET = r"""
import json, sys, time
t0 = time.perf_counter()
import conflow as cf
from conflow.flows import GradientFlow, MomentumFlow
spec = json.loads(sys.argv[1])
model = cf.get_model(spec["kind"], spec["dims"], bias=spec["bias"])
if spec["flow"] == "gradient":
    flow = GradientFlow(spec["metric"])
else:
    flow = MomentumFlow(spec["tau"], metric=spec["metric"])
t1 = time.perf_counter()
result = cf.count_laws(model, flow, method=spec["method"])
out = result.to_json()
out["import_s"] = t1 - t0
print(json.dumps(out))
"""




def run_count(case: dict, method: str, timeout: float) -> dict:
    """One count in a fresh process; wall seconds around the subprocess."""
    spec = {k: case[k] for k in ("kind", "dims", "bias", "flow", "tau", "metric")}
    spec["method"] = method
    cmd = [sys.executable, "-c", SNIPPET, json.dumps(spec)]
    out = {"method": method, "wall_s": None, "timeout": False, "rc": None, "error": None}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        out.update(wall_s=time.perf_counter() - t0, timeout=True,
                   error=f"timed out after {timeout:.0f} s")
        return out
    out.update(wall_s=time.perf_counter() - t0, rc=p.returncode)
    try:
        j = _last_json(p.stdout)
    except ValueError as exc:
        out["error"] = f"{exc}; rc {p.returncode}; stderr: {p.stderr.strip()[-400:]}"
        return out
    keep = ("D", "state_dim", "n_laws", "dim_lie", "status", "reason", "depth", "gap",
            "seconds", "import_s", "ranks_per_level", "numeric_depth", "exact")
    out.update({k: j.get(k) for k in keep if k in j})
    return out


def judge(row: dict) -> None:
    """Agreement and ratios of one case (in place)."""
    num, ex = row["numeric"], row["exact"]
    if num["error"] or ex["error"]:
        row["agree"] = None
        row["verdict"] = "ERROR"
    elif num.get("status") == "ok" and ex.get("status") == "ok":
        row["agree"] = num["n_laws"] == ex["n_laws"]
        row["verdict"] = "yes" if row["agree"] else "!! NO !!"
    else:
        row["agree"] = None
        row["verdict"] = f"n/a ({num.get('status')} / {ex.get('status')})"
    both_wall = num["wall_s"] and ex["wall_s"] and not (num["timeout"] or ex["timeout"])
    row["ratio_wall"] = num["wall_s"] / ex["wall_s"] if both_wall else None
    ns, es = num.get("seconds"), ex.get("seconds")
    row["ratio_in_process"] = ns / es if ns and es else None


# --------------------------------------------------------------------------- output


def _f(x, fmt="{:.2f}", none="-") -> str:
    return none if x is None else fmt.format(x)


def _laws(r: dict) -> str:
    if r["error"]:
        return "ERR"
    return "?" if r.get("n_laws") is None else str(r["n_laws"])


def _status(r: dict) -> str:
    if r["timeout"]:
        return "timeout"
    return "ERROR" if r["error"] else str(r.get("status"))


def format_rows(rows: list[dict]) -> str:
    head = (f"{'case':<34} {'state':>5} {'num laws':>8} {'num status':<13} {'ex laws':>7} "
            f"{'ex status':<9} {'agree':<22} {'num s':>7} {'exact s':>7} {'ratio':>7} "
            f"{'num in':>7} {'ex in':>7} {'ratio in':>8}")
    lines = [head, "-" * len(head)]
    group = None
    for r in rows:
        if r["group"] != group:
            group = r["group"]
            lines.append(f"[{group}]")
        n, e = r["numeric"], r["exact"]
        state = n.get("state_dim") or e.get("state_dim")
        lines.append(
            f"{r['id']:<34} {_f(state, '{}'):>5} {_laws(n):>8} {_status(n):<13} {_laws(e):>7} "
            f"{_status(e):<9} {r['verdict']:<22} {_f(n['wall_s']):>7} {_f(e['wall_s']):>7} "
            f"{_f(r['ratio_wall'], '{:.2f}x'):>7} {_f(n.get('seconds')):>7} "
            f"{_f(e.get('seconds')):>7} {_f(r['ratio_in_process'], '{:.1f}x'):>8}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_IDS)}")
    p.add_argument("--only", action="append", default=None, metavar="ID",
                   help="run only this case, e.g. 'momentum:linear[2,3,2]' (repeatable)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-run timeout, s (600)")
    p.add_argument("--out", default=None, help=f"JSON output (default "
                   f"{DEFAULT_OUT.relative_to(ROOT)}; {QUICK_OUT.relative_to(ROOT)} with --quick)")
    args = p.parse_args(argv)
    cases = all_cases()
    known = [c["id"] for c in cases]
    wanted = QUICK_IDS if args.quick else args.only
    if wanted:
        unknown = [w for w in wanted if w not in known]
        if unknown:
            p.error(f"unknown case(s) {unknown}; choose from {known}")
        cases = [c for c in cases if c["id"] in wanted]
    out_path = Path(args.out) if args.out else (
        QUICK_OUT if args.quick else DEFAULT_OUT if not args.only else
        HERE / "results" / "bench_exact_only.json")

    t_start = time.perf_counter()
    rows = []
    for case in cases:
        row = dict(case)
        for method in ("numeric", "exact"):
            print(f"... {case['id']} {method}", file=sys.stderr, flush=True)
            row[method] = run_count(case, method, args.timeout)
        judge(row)
        rows.append(row)

    print("\nExact vs numeric engine: count_laws(method=...) each in a fresh process (imports + "
          "JIT compile included).\n'num s' / 'exact s': wall time of the fresh process; 'ratio' = "
          "num s / exact s (> 1: exact faster);\n'num in' / 'ex in' / 'ratio in': the seconds "
          "count_laws reports itself (in process, compile included).")
    print(format_rows(rows))
    disagree = [r["id"] for r in rows if r["agree"] is False]
    failed = [r["id"] for r in rows if r["verdict"] == "ERROR"]
    non_ok = [f"{r['id']} ({m}: {r[m].get('status')})" for r in rows for m in ("numeric", "exact")
              if not r[m]["error"] and r[m].get("status") != "ok"]
    ratios = sorted(r["ratio_wall"] for r in rows if r["ratio_wall"] is not None)
    if ratios:
        print(f"\nwall ratio numeric/exact: median {ratios[len(ratios) // 2]:.2f}x, "
              f"range {ratios[0]:.2f}x – {ratios[-1]:.2f}x over {len(ratios)} cases")
    if non_ok:
        print("no count (status not ok): " + "; ".join(non_ok))
    if disagree:
        print(f"\n!!! the engines DISAGREE on: {', '.join(disagree)} !!!")
    if failed:
        print(f"\n!!! runs failed on: {', '.join(failed)} !!!")

    payload = {
        "benchmark": "bench_exact",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "note": "wall_s: fresh process (imports + compile); seconds: count_laws in-process; "
                "ratio = numeric / exact",
        "cases": rows,
        "disagreements": disagree,
        "failures": failed,
        "total_wall_s": time.perf_counter() - t_start,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {out_path.relative_to(ROOT) if out_path.is_relative_to(ROOT) else out_path}")
    return 1 if disagree or failed else 0


if __name__ == "__main__":
    sys.exit(main())
