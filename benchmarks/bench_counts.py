"""Benchmark `conflow count` on the architectures of the SageMath table (issue 16).

For each architecture — linear [2,3,2] … [5,5,5] and ReLU [2,3,2] … [3,4,4,3], ReLU with and
without hidden biases — in one run:

* **cold / warm**: the wall time of a FRESH ``python -m conflow count KIND DIMS [--bias] --json``
  process (interpreter start-up, imports and compilation included), first with an empty compile
  cache (``CONFLOW_CACHE_DIR`` pointing at a new temporary folder), then again with that folder;
* **engine**: the engine ``method="auto"`` chose, and why (``method_reason``);
* **op time**: ``count_laws(model)``'s own ``seconds`` in one long-lived process, after one
  warm-up count of the same model (median of ``--reps``), against the SageMath op time of a blind
  count measured side by side on this machine class (2 threads; the issue's table), with the
  ratio. The other engine counts each model once too (untimed): the two must agree.

Targets (issue 16): op time ≥ 100× faster than SageMath on every architecture of the Sage table;
warm fresh-process wall time < 1.5 s on every architecture.

Also (full run): two large cases (D ≈ 2,000, fresh process) and ``conflow reproduce --paper
gradient`` (50-net protocols, target < 30 s each on a quiet machine); ``--baseline`` adds the
same-run sympy re-implementation of the reference notebooks (`symbolic_baseline.py`).

    python benchmarks/bench_counts.py --quick      # four architectures, about a minute
    python benchmarks/bench_counts.py              # all 16 + large + reproduce
    python benchmarks/bench_counts.py --calibrate  # the cost model of method="auto" vs measured

Exit code 1 when a count fails or two engines (or conflow and the baseline) disagree, else 0.
Timings are wall times on a shared machine: read the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fresh_process import last_json as _last_json
from fresh_process import run as _run
from fresh_process import run_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = HERE / "symbolic_baseline.py"
DEFAULT_OUT = HERE / "results" / "bench_counts.json"
QUICK_OUT = HERE / "results" / "bench_counts_quick.json"
CALIBRATE_OUT = HERE / "results" / "bench_counts_calibrate.json"

LINEAR = [(2, 3, 2), (3, 4, 2), (2, 3, 3, 2), (4, 5, 3), (3, 4, 4, 3), (5, 5, 5)]
RELU = [(2, 3, 2), (3, 4, 2), (2, 3, 3, 2), (4, 5, 3), (3, 4, 4, 3)]
QUICK_LINEAR = [(2, 3, 2), (4, 5, 3)]
QUICK_RELU = [(3, 4, 2)]

# Large cases (D ≈ 2,000). relu [30,30,30,4]: D = 30·30 + 30·30 + 4·30 = 1920 (no bias).
LARGE = [("linear", (20, 20, 20, 20, 20, 20), False), ("relu", (30, 30, 30, 4), False)]

# SageMath op time of a blind count, measured side by side with conflow on this machine class
# (2 threads), seconds (issue 16).
SAGE_S = {
    ("linear", (3, 4, 4, 3), False): 7.5,
    ("linear", (4, 5, 3), False): 5.8,
    ("linear", (5, 5, 5), False): 46.0,
    ("relu", (3, 4, 2), False): 11.5,
    ("relu", (2, 3, 3, 2), True): 79.0,
    ("relu", (4, 5, 3), True): 174.0,
}

TARGET_SAGE_RATIO = 100.0  # op time at least this many times below SageMath's
TARGET_WARM_S = 1.5  # fresh process, warm compile cache
TARGET_PROTOCOL_S = 30.0  # 50-net linear and ReLU protocols of `conflow reproduce` (quiet machine)
TARGET_LARGE_S = 60.0  # D ≈ 2,000

# --calibrate: models for the cost model of method="auto" (conflow/laws/cost.py)
CALIBRATE = [
    ("linear", (2, 3, 2), False, "gradient"), ("linear", (3, 4, 4, 3), False, "gradient"),
    ("linear", (5, 5, 5), False, "gradient"), ("relu", (3, 4, 2), False, "gradient"),
    ("relu", (4, 5, 3), True, "gradient"), ("relu", (3, 4, 4, 3), True, "gradient"),
    ("nmf", (4, 6, 4), False, "gradient"), ("icnn", (5, 6, 3), True, "gradient"),
    ("linear", (8, 8, 8), False, "gradient"), ("linear", (10, 10, 10), False, "gradient"),
    ("linear", (6, 6, 6, 6), False, "gradient"), ("relu", (5, 6, 6, 3), True, "gradient"),
    ("linear", (4, 4, 4, 4, 4), False, "gradient"), ("relu", (10, 20, 5), True, "gradient"),
    ("linear", (2, 8, 1), False, "momentum"), ("linear", (3, 4, 4, 3), False, "momentum"),
    ("relu", (3, 4, 2), True, "momentum"), ("linear", (5, 10, 5), False, "momentum"),
]


def label(kind: str, dims, bias: bool) -> str:
    return f"{kind}[{','.join(map(str, dims))}]" + ("+bias" if bias else "")


# --------------------------------------------------------------------------- fresh processes


def run_count(kind: str, dims, bias: bool, timeout: float | None, cache_dir: str) -> dict:
    """One fresh ``conflow count … --json`` with the compile cache in ``cache_dir``."""
    cmd = [sys.executable, "-m", "conflow", "count", kind, ",".join(map(str, dims)), "--json"]
    if bias:
        cmd.insert(-1, "--bias")
    out, j = run_json(cmd, timeout, {"CONFLOW_CACHE_DIR": cache_dir})
    if j is None:
        return out
    out.update({k: j.get(k) for k in ("D", "n_laws", "status", "reason", "method",
                                       "method_reason", "seconds")})
    return out


def run_baseline(kind: str, dims, bias: bool, timeout: float) -> dict:
    cmd = [sys.executable, str(BASELINE), kind, ",".join(map(str, dims)), "--json"]
    if bias:
        cmd.append("--bias")
    r = _run(cmd, timeout)
    out = {"wall_s": r["wall"], "timeout": r["timeout"], "timeout_s": timeout, "error": None,
           "n_laws": None}
    if r["timeout"]:
        return out
    try:
        j = _last_json(r["out"])
    except ValueError as exc:
        out["error"] = f"{exc}; rc {r['rc']}; stderr: {r['err'].strip()[-300:]}"
        return out
    out.update({"n_laws": j["n_laws"], "seconds": j["seconds"]})
    return out


def run_reproduce(timeout: float) -> dict:
    cmd = [sys.executable, "-m", "conflow", "reproduce", "--paper", "gradient", "--json",
           "--no-progress"]
    out, j = run_json(cmd, timeout)
    out["protocols"] = {}
    if j is None:
        return out
    s = j["summary"]
    out.update({"cases": s["cases"], "matches": s["matches"], "seconds": s["seconds"]})
    for name, p in s["protocols"].items():
        target = TARGET_PROTOCOL_S if name in ("linear", "relu") else None
        out["protocols"][name] = {
            **p, "target_s": target,
            "met": None if target is None else bool(p["seconds"] < target
                                                   and p["matches"] == p["cases"]),
        }
    return out


# --------------------------------------------------------------------------- in one process


def worker(spec: dict) -> dict:
    """In this process: per case, one warm-up count, ``reps`` timed counts (their ``seconds``),
    and one count by the other engine (untimed) to cross-check."""
    import conflow as cf
    from conflow.models import get_model

    t_import = time.perf_counter()
    out = []
    for kind, dims, bias in spec["cases"]:
        model = get_model(kind, dims, bias=bias)
        first = cf.count_laws(model)
        timed = [cf.count_laws(model) for _ in range(spec["reps"])]
        other = cf.count_laws(model, method="numeric" if first.method == "exact" else "exact")
        out.append({
            "case": label(kind, dims, bias), "method": first.method,
            "method_reason": first.method_reason, "n_laws": first.n_laws,
            "status": first.status, "warmup_s": first.seconds,
            "op_s": [c.seconds for c in timed], "other_method": other.method,
            "other_n_laws": other.n_laws, "other_status": other.status,
            "other_s": other.seconds,
            "agree": other.status == "ok" and other.n_laws == first.n_laws
            and all(c.n_laws == first.n_laws for c in timed),
        })
    return {"rows": out, "seconds": time.perf_counter() - t_import}


def run_worker(cases, reps: int, timeout: float) -> dict:
    spec = {"cases": [[k, list(d), b] for k, d, b in cases], "reps": reps}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    record, j = run_json(cmd, timeout)
    return {**record, "rows": [] if j is None else j["rows"]}


# --------------------------------------------------------------------------- calibration


def calibrate(reps: int) -> list[dict]:
    """Estimates of `conflow.laws.cost` against measured times, in this process: the exact
    engine (min of ``reps``, wall and CPU), the numeric engine (first count of the model, compile
    included, and a second one), and the engine auto picks."""
    import conflow as cf
    from conflow.exact import polynomial_form
    from conflow.flows import parse_flow
    from conflow.laws import cost
    from conflow.laws.count import _auto_choice
    from conflow.models import get_model
    from conflow.precision import float64

    @float64
    def one(kind, dims, bias, flow_name):
        model, flow = get_model(kind, dims, bias=bias), parse_flow(flow_name)
        n = flow.state_dim(model)
        t0 = time.perf_counter()
        method, reason = _auto_choice(model, flow)[:2]
        decide_s = time.perf_counter() - t0
        size = cost.polynomial_size(polynomial_form(model.phi, model.D))
        est = cost.exact_cost(n, model.D, size, momentum=flow.has_velocity)
        num_est = cost.numeric_cost(model, flow, 3)
        wall, cpu = [], []
        for _ in range(reps):
            w, c = time.perf_counter(), time.process_time()
            exact = cf.count_laws(model, flow, method="exact")
            wall.append(time.perf_counter() - w)
            cpu.append(time.process_time() - c)
        numeric = [cf.count_laws(model, flow, method="numeric") for _ in range(2)]
        return {
            "case": f"{label(kind, dims, bias)} {flow_name}", "n": n, "d": size.outputs,
            "monomials": size.monomials, "degree_sum": size.degree_sum, "degree": size.degree,
            "auto": method, "reason": reason, "decide_s": decide_s,
            "exact_est_s": est.seconds, "exact_wall_s": min(wall), "exact_cpu_s": min(cpu),
            "exact_ranks": list(exact.exact.ranks) if exact.exact is not None else None,
            "numeric_est_s": num_est.seconds,
            "numeric_first_s": numeric[0].seconds, "numeric_second_s": numeric[1].seconds,
            "numeric_status": numeric[0].status, "agree": numeric[1].n_laws == exact.n_laws,
        }

    rows = []
    for kind, dims, bias, flow_name in CALIBRATE:
        print(f"... {label(kind, dims, bias)} {flow_name}", file=sys.stderr, flush=True)
        rows.append(one(kind, dims, bias, flow_name))
    return rows


def format_calibration(rows: list[dict]) -> str:
    head = (f"{'case':<30} {'n':>4} {'monos':>6} {'auto':<8} {'decide':>7} {'exact est':>9} "
            f"{'measured':>9} {'ratio':>6} {'num est':>8} {'1st':>7} {'2nd':>7} {'ratio':>6} "
            f"{'cheaper 1st/2nd':<16}")
    lines = [head, "-" * len(head)]
    for r in rows:
        exact_s = r["exact_wall_s"]
        cheaper = ["exact" if exact_s < r[k] else "numeric"
                   for k in ("numeric_first_s", "numeric_second_s")]
        lines.append(
            f"{r['case']:<30} {r['n']:>4} {r['monomials']:>6} {r['auto']:<8} "
            f"{r['decide_s'] * 1e3:>5.1f}ms {r['exact_est_s']:>9.3f} {exact_s:>9.3f} "
            f"{r['exact_est_s'] / exact_s:>6.2f} {r['numeric_est_s']:>8.2f} "
            f"{r['numeric_first_s']:>7.2f} {r['numeric_second_s']:>7.2f} "
            f"{r['numeric_est_s'] / r['numeric_first_s']:>6.2f} {'/'.join(cheaper):<16}")
    lines.append("exact: est / min wall of the exact counts; numeric: est / its first count (compile "
                 "included); 'cheaper': by the measured times, against the numeric engine's "
                 "first count (a fresh process) and its second (programs compiled).")
    return "\n".join(lines)


# --------------------------------------------------------------------------- judging, output


def judge(row: dict) -> None:
    cold, warm, op = row["cold"], row["warm"], row.get("op")
    row["warm_met"] = bool(warm["error"] is None and warm.get("status") == "ok"
                           and warm["wall_s"] < TARGET_WARM_S)
    row["op_median_s"] = statistics.median(op["op_s"]) if op and op.get("op_s") else None
    sage = row["sage_s"]
    row["sage_ratio"] = (sage / row["op_median_s"]) if sage and row["op_median_s"] else None
    row["sage_met"] = None if sage is None else bool(
        row["sage_ratio"] is not None and row["sage_ratio"] >= TARGET_SAGE_RATIO)
    row["agree"] = bool(op and op.get("agree") and cold.get("n_laws") == op.get("n_laws"))
    b = row.get("baseline")
    if b is not None and b["error"] is None and not b["timeout"]:
        row["agree"] = row["agree"] and b["n_laws"] == op.get("n_laws")


def _f(x, fmt="{:.2f}", none="-") -> str:
    return none if x is None else fmt.format(x)


def format_rows(rows: list[dict], baseline: bool) -> str:
    head = (f"{'case':<22} {'D':>3} {'laws':>4} {'engine':<7} {'cold s':>6} {'warm s':>6} "
            f"{'op s':>7} {'Sage s':>6} {'× Sage':>7} {'agree':>5} {'warm<1.5':>8} "
            f"{'≥100×':>5}" + (f" {'sympy s':>8}" if baseline else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        cold, warm, op = r["cold"], r["warm"], r.get("op") or {}
        laws = "?" if cold["error"] else _f(cold.get("n_laws"), "{}", "?")
        engine = op.get("method") or cold.get("method") or "?"
        sage = "-" if r["sage_s"] is None else f"{r['sage_s']:g}"
        ratio = "-" if r["sage_ratio"] is None else f"{r['sage_ratio']:.0f}×"
        sage_met = "-" if r["sage_met"] is None else ("yes" if r["sage_met"] else "NO")
        line = (f"{r['case']:<22} {_f(cold.get('D'), '{}', '?'):>3} {laws:>4} {engine:<7} "
                f"{_f(cold['wall_s']):>6} {_f(warm['wall_s']):>6} "
                f"{_f(r['op_median_s'], '{:.4f}'):>7} {sage:>6} {ratio:>7} "
                f"{'yes' if r['agree'] else 'NO':>5} {'yes' if r['warm_met'] else 'NO':>8} "
                f"{sage_met:>5}")
        if baseline:
            b = r.get("baseline")
            line += " " + ("-" if b is None else f"> {b['timeout_s']:.0f}" if b["timeout"]
                           else "error" if b["error"] else f"{b['wall_s']:.2f}").rjust(8)
        lines.append(line)
    return "\n".join(lines)


def format_large(rows: list[dict]) -> str:
    lines = [(f"{'case':<30} {'D':>5} {'laws':>5} {'engine':<8} {'status':<8} {'wall s':>7} "
              f"{'target':>7} {'met?':>4}")]
    for r in rows:
        c = r["cold"]
        met = c["error"] is None and c.get("status") == "ok" and c["wall_s"] < TARGET_LARGE_S
        lines.append(f"{r['case']:<30} {_f(c.get('D'), '{}', '?'):>5} "
                     f"{_f(c.get('n_laws'), '{}', '?'):>5} {c.get('method') or '?':<8} "
                     f"{c.get('status') or 'ERROR':<8} {c['wall_s']:>7.1f} "
                     f"{'<' + format(TARGET_LARGE_S, 'g') + ' s':>7} {'yes' if met else 'NO':>4}")
    return "\n".join(lines)


def format_reproduce(rep: dict) -> str:
    if rep["error"]:
        return f"conflow reproduce: ERROR ({rep['error']}), wall {rep['wall_s']:.1f} s"
    lines = [f"{'protocol':<10} {'matches':>9} {'seconds':>8} {'target':>7} {'met?':>4}"]
    for name, p in rep["protocols"].items():
        met = "-" if p["met"] is None else ("yes" if p["met"] else "NO")
        tgt = "-" if p["target_s"] is None else f"<{p['target_s']:g} s"
        lines.append(f"{name:<10} {p['matches']:>4}/{p['cases']:<4} {p['seconds']:>8.1f} "
                     f"{tgt:>7} {met:>4}")
    lines.append(f"(fresh process, wall {rep['wall_s']:.1f} s incl. imports; protocol seconds are "
                 f"the sum of the in-process count times)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="linear [2,3,2], [4,5,3] and relu [3,4,2] ± bias; no large cases, no "
                        "reproduce")
    p.add_argument("--reps", type=int, default=3, help="timed in-process counts per case")
    p.add_argument("--baseline", action="store_true",
                   help="also run the sympy baseline per case (fresh process)")
    p.add_argument("--baseline-timeout", type=float, default=120.0)
    p.add_argument("--conflow-timeout", type=float, default=600.0,
                   help="per fresh conflow process, s")
    p.add_argument("--reproduce-timeout", type=float, default=1800.0)
    p.add_argument("--skip-large", action="store_true")
    p.add_argument("--skip-reproduce", action="store_true")
    p.add_argument("--only", action="append", default=None, metavar="LABEL",
                   help="run only this architecture, e.g. 'relu[4,5,3]+bias' (repeatable)")
    p.add_argument("--calibrate", action="store_true",
                   help="print the cost model's estimates against measured times instead")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None,
                   help=f"JSON output (default {DEFAULT_OUT.relative_to(ROOT)}; "
                        f"{QUICK_OUT.relative_to(ROOT)} with --quick)")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker)), default=str))
        return 0
    stamp = {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
             "machine": {"platform": platform.platform(), "python": platform.python_version(),
                         "cpus": os.cpu_count()}}
    if args.calibrate:
        rows = calibrate(args.reps)
        print(format_calibration(rows))
        out_path = Path(args.out) if args.out else CALIBRATE_OUT
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps({"benchmark": "bench_counts --calibrate", **stamp,
                                        "rows": rows}, indent=1, default=str))
        print(f"\nwrote {out_path}")
        return 0 if all(r["agree"] for r in rows) else 1

    if args.quick:
        args.skip_large = args.skip_reproduce = True
    out_path = Path(args.out) if args.out else (QUICK_OUT if args.quick else DEFAULT_OUT)
    lin, rel = (QUICK_LINEAR, QUICK_RELU) if args.quick else (LINEAR, RELU)
    cases = [("linear", d, False) for d in lin]
    cases += [("relu", d, bias) for d in rel for bias in (False, True)]
    if args.only:
        known = {label(*c) for c in cases}
        unknown = [o for o in args.only if o not in known]
        if unknown:
            p.error(f"unknown case(s) {unknown}; choose from {sorted(known)}")
        cases = [c for c in cases if label(*c) in args.only]

    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="conflow-bench-cache-") as tmp:
        for i, (kind, dims, bias) in enumerate(cases):
            print(f"... {label(kind, dims, bias)}: fresh processes", file=sys.stderr, flush=True)
            cache = os.path.join(tmp, f"case{i}")  # empty: a cold compile cache
            row = {"case": label(kind, dims, bias), "kind": kind, "dims": list(dims),
                   "bias": bias, "sage_s": SAGE_S.get((kind, tuple(dims), bias)),
                   "cold": run_count(kind, dims, bias, args.conflow_timeout, cache),
                   "warm": run_count(kind, dims, bias, args.conflow_timeout, cache)}
            row["baseline"] = (run_baseline(kind, dims, bias, args.baseline_timeout)
                               if args.baseline else None)
            rows.append(row)
        large = []
        if not args.skip_large:
            for kind, dims, bias in LARGE:
                print(f"... large {label(kind, dims, bias)}", file=sys.stderr, flush=True)
                large.append({"case": label(kind, dims, bias), "kind": kind, "dims": list(dims),
                              "cold": run_count(kind, dims, bias, args.conflow_timeout,
                                                os.path.join(tmp, "large"))})
    print("... in-process op times", file=sys.stderr, flush=True)
    proc = run_worker(cases, args.reps, args.conflow_timeout * max(1, len(cases)))
    by_case = {r["case"]: r for r in proc["rows"]}
    for row in rows:
        row["op"] = by_case.get(row["case"])
        judge(row)

    rep = None
    if not args.skip_reproduce:
        print("... conflow reproduce --paper gradient", file=sys.stderr, flush=True)
        rep = run_reproduce(args.reproduce_timeout)

    print("\nArchitectures of the Sage table: fresh `conflow count … --json` processes (cold: empty "
          "compile cache; warm: the same cache again), the engine method=\"auto\" chose, and the "
          f"in-process op time (median of {args.reps} after a warm-up) against SageMath's "
          "(same machine class, 2 threads)")
    print(format_rows(rows, args.baseline))
    with_sage = [r for r in rows if r["sage_s"] is not None]
    short = [r for r in with_sage if not r["sage_met"]]
    slow = [r for r in rows if not r["warm_met"]]
    print(f"\n≥ {TARGET_SAGE_RATIO:g}× SageMath: {len(with_sage) - len(short)}/{len(with_sage)} met"
          + "".join(f"; {r['case']} {r['sage_ratio'] or 0:.0f}× (op {r['op_median_s'] or 0:.4f} s, "
                    f"needs ≤ {r['sage_s'] / TARGET_SAGE_RATIO:.4f} s)" for r in short))
    print(f"warm wall < {TARGET_WARM_S:g} s: {len(rows) - len(slow)}/{len(rows)} met"
          + "".join(f"; {r['case']} {r['warm']['wall_s']:.2f} s" for r in slow))
    print("auto's reasons:")
    for r in rows:
        op = r.get("op") or {}
        print(f"  {r['case']:<22} {op.get('method', '?')} ({op.get('method_reason', '?')})")
    if large:
        print("\nLarge cases (fresh process; relu[30,30,30,4] has D = 1920)")
        print(format_large(large))
    if rep is not None:
        print("\nconflow reproduce --paper gradient (50-net protocols)")
        print(format_reproduce(rep))

    disagree = [r["case"] for r in rows if not r["agree"]]
    failed = [r["case"] for r in rows + large if r["cold"]["error"]]
    failed += [] if not proc["error"] else [f"in-process worker: {proc['error']}"]
    if disagree:
        print(f"\n!!! counts DISAGREE (engines, processes or baseline) on: {', '.join(disagree)}")
    if failed:
        print(f"\n!!! failed: {', '.join(failed)}")

    payload = {
        "benchmark": "bench_counts", **stamp,
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "worker")},
        "targets": {"sage_ratio": TARGET_SAGE_RATIO, "warm_s": TARGET_WARM_S,
                    "protocol_s": TARGET_PROTOCOL_S, "large_s": TARGET_LARGE_S},
        "sage_s_note": "SageMath op time of a blind count, same machine class, 2 threads "
                       "(issue 16); not measured in this run",
        "cases": rows, "large": large, "reproduce": rep, "worker": proc,
        "disagreements": disagree, "failures": failed,
        "total_wall_s": time.perf_counter() - t_start,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {out_path}")
    return 1 if disagree or failed else 0


if __name__ == "__main__":
    sys.exit(main())
