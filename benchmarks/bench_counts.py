"""Benchmark `conflow count` against a same-run symbolic baseline.

Every conflow count runs in a FRESH process (``python -m conflow count KIND DIMS [--bias] --json``)
and is timed around the subprocess, so the time includes interpreter start-up, imports and JIT
compilation. The baseline (``benchmarks/symbolic_baseline.py``, the reference notebooks' algorithm
re-implemented with sympy) runs in a fresh process too, with a per-case timeout. Speed-ups are
ratios of the two wall times measured in this run; the SageMath times of the reference notebook are
shown for context only (another machine and another run).

    python benchmarks/bench_counts.py            # everything (slow: baseline + reproduce + large)
    python benchmarks/bench_counts.py --quick    # smoke test, ~a minute

Exit code 1 when conflow and the baseline disagree on a count (or conflow fails), else 0.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
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

LINEAR = [(2, 3, 2), (3, 4, 2), (2, 3, 3, 2), (4, 5, 3), (3, 4, 4, 3), (5, 5, 5)]
RELU = [(2, 3, 2), (3, 4, 2), (2, 3, 3, 2), (4, 5, 3), (3, 4, 4, 3)]
QUICK_LINEAR = [(2, 3, 2)]
QUICK_RELU = [(2, 3, 2)]

# Large cases (D ≈ 2,000). relu [30,30,30,4]: D = 30·30 + 30·30 + 4·30 = 1920 (no bias).
LARGE = [("linear", (20, 20, 20, 20, 20, 20), False), ("relu", (30, 30, 30, 4), False)]

# Reference notebook (SageMath, 2 threads, this machine class): seconds for a blind count.
# Not measured in this run; a string means a lower bound.
REFERENCE_SAGE = {
    ("linear", (5, 5, 5), False): 52.0,
    ("linear", (3, 4, 4, 3), False): 15.0,
    ("relu", (4, 5, 3), True): 264.0,
    ("relu", (2, 3, 3, 2), True): 97.0,
    ("relu", (3, 4, 4, 3), False): ">600",
}

TARGET_CASE_S = 2.0  # every fixed architecture, fresh process, compile included
TARGET_PROTOCOL_S = 60.0  # 50-net linear and ReLU protocols of `conflow reproduce`
TARGET_LARGE_S = 60.0  # D ≈ 2,000


def label(kind: str, dims, bias: bool) -> str:
    return f"{kind}[{','.join(map(str, dims))}]" + ("+bias" if bias else "")





def run_conflow(kind: str, dims, bias: bool, timeout: float | None) -> dict:
    cmd = [sys.executable, "-m", "conflow", "count", kind, ",".join(map(str, dims)), "--json"]
    if bias:
        cmd.insert(-1, "--bias")
    out, j = run_json(cmd, timeout)
    if j is None:
        return out
    out.update({k: j.get(k) for k in ("D", "n_laws", "status", "reason", "gap", "depth",
                                       "dim_lie", "seconds")})
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
    out.update({"n_laws": j["n_laws"], "D": j["D"], "seconds": j["seconds"],
                "kept_per_level": j["kept_per_level"]})
    return out


def bench_case(kind, dims, bias, args) -> dict:
    row = {"case": label(kind, dims, bias), "kind": kind, "dims": list(dims), "bias": bias,
           "group": "architecture", "target_s": TARGET_CASE_S,
           "reference_sage_s": REFERENCE_SAGE.get((kind, tuple(dims), bias))}
    row["conflow"] = run_conflow(kind, dims, bias, args.conflow_timeout)
    if args.skip_baseline:
        row["baseline"] = None
    else:
        row["baseline"] = run_baseline(kind, dims, bias, args.baseline_timeout)
    _judge(row)
    return row


def _judge(row: dict) -> None:
    c, b = row["conflow"], row.get("baseline")
    ok = c["error"] is None and c.get("status") == "ok"
    row["met"] = bool(ok and c["wall_s"] < row["target_s"])
    row["agree"] = None
    row["speedup"] = None
    row["speedup_lower_bound"] = False
    if b is None or c["error"] is not None:
        return
    if b["timeout"]:
        row["speedup"] = b["timeout_s"] / c["wall_s"]
        row["speedup_lower_bound"] = True
    elif b["error"] is None:
        row["speedup"] = b["wall_s"] / c["wall_s"]
        row["agree"] = c.get("n_laws") == b["n_laws"] and c.get("status") == "ok"


def run_reproduce(timeout: float) -> dict:
    cmd = [sys.executable, "-m", "conflow", "reproduce", "--json", "--no-progress"]
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


# --------------------------------------------------------------------------- output


def _f(x, fmt="{:.2f}", none="-") -> str:
    return none if x is None else fmt.format(x)


def _gap(g) -> str:
    return "inf" if g is None else f"{g:.1e}"


def format_rows(rows: list[dict]) -> str:
    head = (f"{'case':<30} {'D':>5} {'laws':>5} {'status':<13} {'gap':>8} {'conflow s':>9} "
            f"{'(in-proc)':>9} {'baseline s':>10} {'b.laws':>6} {'agree':>11} {'speed-up':>9} "
            f"{'ref Sage s*':>11} {'target':>7} {'met?':>4}")
    lines = [head, "-" * len(head)]
    for r in rows:
        c, b = r["conflow"], r.get("baseline")
        if c["error"]:
            laws, status, gap, cs = "?", "ERROR", "-", _f(c["wall_s"])
        else:
            laws = _f(c.get("n_laws"), "{}", "?")
            status, gap, cs = c.get("status") or "?", _gap(c.get("gap")), _f(c["wall_s"])
        if b is None:
            bs, bl = "skipped", "-"
        elif b["timeout"]:
            bs, bl = f"> {b['timeout_s']:.0f}", "-"
        elif b["error"]:
            bs, bl = "error", "-"
        else:
            bs, bl = _f(b["wall_s"]), str(b["n_laws"])
        agree = {None: "-", True: "yes", False: "!! NO !!"}[r.get("agree")]
        sp = "-" if r.get("speedup") is None else (
            (">" if r["speedup_lower_bound"] else "") + f"{r['speedup']:.1f}x")
        ref = r.get("reference_sage_s")
        ref = "-" if ref is None else (ref if isinstance(ref, str) else f"{ref:.0f}")
        lines.append(
            f"{r['case']:<30} {_f(c.get('D') if not c['error'] else None, '{}', '?'):>5} "
            f"{laws:>5} {status:<13} {gap:>8} {cs:>9} {_f(c.get('seconds')):>9} {bs:>10} "
            f"{bl:>6} {agree:>11} {sp:>9} {ref:>11} {'<' + format(r['target_s'], 'g') + ' s':>7} "
            f"{'yes' if r['met'] else 'NO':>4}")
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
                   help="smoke test: linear[2,3,2], relu[2,3,2] ± bias; baseline timeout 30 s; "
                        "no reproduce, no large cases")
    p.add_argument("--baseline-timeout", type=float, default=None,
                   help="per-case timeout of the sympy baseline, s (default 120; 30 with --quick)")
    p.add_argument("--conflow-timeout", type=float, default=600.0,
                   help="per-case timeout of a conflow count, s (default 600)")
    p.add_argument("--reproduce-timeout", type=float, default=1800.0)
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-large", action="store_true")
    p.add_argument("--skip-reproduce", action="store_true")
    p.add_argument("--only", action="append", default=None, metavar="LABEL",
                   help="run only this fixed architecture, e.g. 'relu[4,5,3]+bias' (repeatable)")
    p.add_argument("--out", default=None,
                   help=f"JSON output (default {DEFAULT_OUT.relative_to(ROOT)}; "
                        f"{QUICK_OUT.relative_to(ROOT)} with --quick)")
    args = p.parse_args(argv)
    if args.baseline_timeout is None:
        args.baseline_timeout = 30.0 if args.quick else 120.0
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
    for kind, dims, bias in cases:
        print(f"... {label(kind, dims, bias)}", file=sys.stderr, flush=True)
        rows.append(bench_case(kind, dims, bias, args))

    large = []
    if not args.skip_large:
        for kind, dims, bias in LARGE:
            print(f"... large {label(kind, dims, bias)}", file=sys.stderr, flush=True)
            row = {"case": label(kind, dims, bias), "kind": kind, "dims": list(dims),
                   "bias": bias, "group": "large", "target_s": TARGET_LARGE_S,
                   "reference_sage_s": None, "baseline": None,
                   "conflow": run_conflow(kind, dims, bias, args.conflow_timeout)}
            _judge(row)
            large.append(row)

    rep = None
    if not args.skip_reproduce:
        print("... conflow reproduce", file=sys.stderr, flush=True)
        rep = run_reproduce(args.reproduce_timeout)

    print(f"\nFixed architectures (conflow: fresh process, imports + compile included; baseline: "
          f"sympy, fresh process, timeout {args.baseline_timeout:.0f} s)")
    print(format_rows(rows))
    print("* ref Sage s: reference notebook (SageMath, 2 threads), NOT this run; "
          "speed-up = baseline s / conflow s, both measured in this run.")
    if large:
        print("\nLarge cases (D ≈ 2,000; relu[30,30,30,4] has D = 1920)")
        print(format_rows(large))
    if rep is not None:
        print("\nconflow reproduce (50-net protocols)")
        print(format_reproduce(rep))

    disagree = [r["case"] for r in rows if r.get("agree") is False]
    failed = [r["case"] for r in rows + large if r["conflow"]["error"]]
    if disagree:
        print(f"\n!!! conflow and the symbolic baseline DISAGREE on: {', '.join(disagree)} !!!")
    if failed:
        print(f"\n!!! conflow failed on: {', '.join(failed)} !!!")

    payload = {
        "benchmark": "bench_counts",
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count()},
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "targets_s": {"case": TARGET_CASE_S, "protocol": TARGET_PROTOCOL_S,
                      "large": TARGET_LARGE_S},
        "reference_sage_s_note": "reference notebook (SageMath, 2 threads), not measured here",
        "cases": rows,
        "large": large,
        "reproduce": rep,
        "disagreements": disagree,
        "failures": failed,
        "total_wall_s": time.perf_counter() - t_start,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {out_path}")
    return 1 if disagree or failed else 0


if __name__ == "__main__":
    sys.exit(main())
