"""Benchmark momentum counts: the §6.2 protocols of ``conflow reproduce --paper momentum``, two
small linear nets whose momentum Lie algebras need deep brackets, and counts with D ≥ 100.

Everything runs in FRESH processes, timed around the subprocess (interpreter start-up, imports and
JIT compilation included):

- ``python -m conflow reproduce --paper momentum --json --no-progress`` once (matches and
  in-process seconds per protocol), and each protocol alone in its own ``python -c`` process
  (wall seconds per protocol: the number compared with the 60 s target);
- ``count_laws(linear(dims), MomentumFlow(0.0), method=…)`` in ``python -c`` processes for
  [2,8,1] and [2,5,2,2] with ``method="exact"`` and ``method="numeric"`` (numeric with its default
  depth cap: the same-run baseline; it may end ``not_converged``), and for linear nets with
  D ≥ 100 (exact).

The reference notebook's seconds (SageMath, 64 cores, τ = 0 only, MATH.md §6.2) are constants shown
for context, never used in a ratio. Ratios are numeric / exact, both measured in this run.

    python benchmarks/bench_momentum.py                  # everything (a few minutes)
    python benchmarks/bench_momentum.py --skip-numeric   # no numeric baseline
    python benchmarks/bench_momentum.py --skip-large --skip-protocols

Exit code 1 when a count differs from the closed-form count (or a run fails), else 0.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "bench_momentum.json"

# MATH.md §6.2: reference seconds per configuration (SageMath, 64 cores, τ = 0 only).
REFERENCE_PER_CONFIG = {"linear-mf": 7.0, "relu-mf": 3.2, "nmf-gf": 22.4, "nmf-mf": 5.3,
                        "icnn-gf": 37.8, "icnn-mf": 36.5}
TARGET_PROTOCOL_S = 60.0  # each §6.2 protocol of 20 configurations, 2 cores, compile included
TARGET_SMALL_S = 5.0  # [2,8,1] and [2,5,2,2] momentum counts
TARGET_LARGE_S = 120.0  # a momentum count with D >= 100 (state dim >= 201)

SMALL = [(2, 8, 1), (2, 5, 2, 2)]
LARGE = [(5, 10, 5), (4, 8, 8, 4), (10, 20, 10)]  # D = 100, 128, 400

COUNT_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
import conflow as cf
from conflow.flows import MomentumFlow
from conflow.laws.count import count_laws
t1 = time.perf_counter()
r = count_laws(cf.linear({dims!r}), MomentumFlow({tau!r}), method={method!r})
j = r.to_json()
j["import_s"] = t1 - t0
print(json.dumps(j))
"""

PROTOCOL_SCRIPT = """
import json, time
from conflow.reference import reproduce as R
t0 = time.perf_counter()
p = [x for x in R.PROTOCOLS["momentum"] if x.name == {name!r}][0]
rows = list(R._run([p], None, 3, 0, "auto"))
s = R.summarise(rows, time.perf_counter() - t0)
print(json.dumps(s))
"""





def _parse(r: dict, timeout: float | None) -> tuple[dict | None, str | None]:
    if r["timeout"]:
        return None, f"timed out after {timeout:.0f} s"
    try:
        return _last_json(r["out"]), None
    except ValueError as exc:
        return None, f"{exc}; rc {r['rc']}; stderr: {r['err'].strip()[-400:]}"


# --------------------------------------------------------------------------- runs


def run_reproduce(timeout: float) -> dict:
    cmd = [sys.executable, "-m", "conflow", "reproduce", "--paper", "momentum", "--json",
           "--no-progress"]
    r = _run(cmd, timeout)
    j, err = _parse(r, timeout)
    out = {"wall_s": r["wall"], "rc": r["rc"], "error": err}
    if j is not None:
        s = j["summary"]
        out.update({"cases": s["cases"], "matches": s["matches"], "seconds": s["seconds"],
                    "protocols": s["protocols"],
                    "mismatches": [row for row in j["rows"] if not row["match"]],
                    "notes": [f"{row['model']} {row['flow_label']}: {row['note']}"
                              for row in j["rows"] if row["note"]]})
    return out


def run_protocol(name: str, timeout: float) -> dict:
    r = _run([sys.executable, "-c", PROTOCOL_SCRIPT.format(name=name)], timeout)
    j, err = _parse(r, timeout)
    out = {"protocol": name, "wall_s": r["wall"], "error": err, "target_s": TARGET_PROTOCOL_S,
           "reference_per_config_s": REFERENCE_PER_CONFIG[name],
           "reference_total_s": 20 * REFERENCE_PER_CONFIG[name]}
    if j is not None:
        p = j["protocols"][name]
        out.update({"cases": p["cases"], "matches": p["matches"], "count_s": p["seconds"]})
    out["met"] = bool(err is None and out.get("matches") == out.get("cases")
                      and r["wall"] < TARGET_PROTOCOL_S)
    return out


def run_count(dims, method: str, tau: float, timeout: float, target: float, group: str) -> dict:
    script = COUNT_SCRIPT.format(dims=list(dims), tau=tau, method=method)
    r = _run([sys.executable, "-c", script], timeout)
    j, err = _parse(r, timeout)
    out = {"case": f"linear[{','.join(map(str, dims))}]", "dims": list(dims), "method": method,
           "tau": tau, "group": group, "wall_s": r["wall"], "error": err, "target_s": target}
    if j is not None:
        out.update({k: j.get(k) for k in ("D", "state_dim", "n_laws", "dim_lie", "status",
                                          "reason", "depth", "seconds", "import_s")})
        if j.get("exact"):
            out["exact_ranks"] = j["exact"]["ranks_per_level"]
            out["failure_bound"] = j["exact"]["failure_bound"]
        if j.get("ranks_per_level"):
            out["numeric_ranks"] = j["ranks_per_level"]
    return out


def attach_known(rows: list[dict]) -> None:
    """The closed-form momentum count (rank of `closed_forms` laws), computed here, after the
    timed runs, in this process."""
    sys.path.insert(0, str(ROOT))
    import conflow as cf
    from conflow.flows import MomentumFlow
    from conflow.reference import closed_forms

    cache: dict = {}
    for row in rows:
        key = (tuple(row["dims"]), row["tau"])
        if key not in cache:
            cache[key] = closed_forms.known_count(cf.linear(key[0]), MomentumFlow(key[1]))
        row["known"] = cache[key]
        row["agree"] = row["n_laws"] == row["known"] if row.get("status") == "ok" else None
        row["met"] = bool(row.get("status") == "ok" and row["agree"]
                          and row["wall_s"] < row["target_s"])


# --------------------------------------------------------------------------- output


def _f(x, fmt="{:.2f}", none="-") -> str:
    return none if x is None else fmt.format(x)


def format_protocols(rep: dict | None, protos: list[dict]) -> str:
    head = (f"{'protocol':<10} {'rows':>5} {'match':>6} {'count s':>8} {'fresh wall s':>12} "
            f"{'target':>7} {'met?':>5} {'ref s/config*':>13} {'ref total s*':>12}")
    lines = [head, "-" * len(head)]
    rep_p = (rep or {}).get("protocols", {})
    for p in protos:
        name = p["protocol"]
        inproc = rep_p.get(name, {}).get("seconds")
        lines.append(
            f"{name:<10} {p.get('cases', '?')!s:>5} {p.get('matches', '?')!s:>6} "
            f"{_f(inproc):>8} {_f(p['wall_s']):>12} {p['target_s']:>7.0f} "
            f"{'yes' if p['met'] else 'NO':>5} {p['reference_per_config_s']:>13.1f} "
            f"{p['reference_total_s']:>12.0f}"
            + (f"   ERROR {p['error']}" if p["error"] else ""))
    return "\n".join(lines)


def format_counts(rows: list[dict]) -> str:
    head = (f"{'case':<18} {'method':<8} {'D':>4} {'state':>5} {'laws':>5} {'known':>5} "
            f"{'status':<14} {'depth':>5} {'fresh wall s':>12} {'in-proc s':>9} {'target':>6} "
            f"{'met?':>5} {'numeric/exact':>13}")
    lines = [head, "-" * len(head)]
    exact_wall = {r["case"]: r["wall_s"] for r in rows if r["method"] == "exact"}
    for r in rows:
        laws = "?" if r.get("n_laws") is None else str(r["n_laws"])
        status = "ERROR" if r["error"] else r.get("status", "?")
        ratio = ""
        if r["method"] == "numeric" and r["case"] in exact_wall:
            ratio = f"{r['wall_s'] / exact_wall[r['case']]:.1f}x"
        lines.append(
            f"{r['case']:<18} {r['method']:<8} {r.get('D', '?')!s:>4} "
            f"{r.get('state_dim', '?')!s:>5} {laws:>5} {r.get('known', '?')!s:>5} {status:<14} "
            f"{r.get('depth', '?')!s:>5} {_f(r['wall_s']):>12} {_f(r.get('seconds')):>9} "
            f"{r['target_s']:>6.0f} {'yes' if r.get('met') else 'no':>5} {ratio:>13}"
            + (f"   {r['error']}" if r["error"] else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-protocols", action="store_true")
    ap.add_argument("--skip-numeric", action="store_true")
    ap.add_argument("--skip-large", action="store_true")
    ap.add_argument("--tau", type=float, default=0.0, help="damping of the fixed cases (0)")
    ap.add_argument("--timeout", type=float, default=900.0, help="per subprocess, seconds")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    rep, protos, counts = None, [], []
    if not args.skip_protocols:
        print("reproduce --paper momentum ...", file=sys.stderr, flush=True)
        rep = run_reproduce(args.timeout)
        for name in REFERENCE_PER_CONFIG:
            print(f"protocol {name} ...", file=sys.stderr, flush=True)
            protos.append(run_protocol(name, args.timeout))
    for dims in SMALL:
        for method in ("exact",) + (() if args.skip_numeric else ("numeric",)):
            print(f"linear{list(dims)} {method} ...", file=sys.stderr, flush=True)
            counts.append(run_count(dims, method, args.tau, args.timeout, TARGET_SMALL_S,
                                    "small"))
    if not args.skip_large:
        for dims in LARGE:
            print(f"linear{list(dims)} exact ...", file=sys.stderr, flush=True)
            counts.append(run_count(dims, "exact", args.tau, args.timeout, TARGET_LARGE_S,
                                    "large"))
    attach_known(counts)

    if rep is not None:
        print(f"reproduce --paper momentum (one fresh process): {rep.get('matches')}/"
              f"{rep.get('cases')} match, rc {rep['rc']}, wall {rep['wall_s']:.1f} s"
              + (f", ERROR {rep['error']}" if rep["error"] else ""))
        for note in rep.get("notes", []):
            print(f"  note: {note}")
        print()
        print(format_protocols(rep, protos))
        print("count s: sum of in-process count seconds in the reproduce run; fresh wall s: the "
              "protocol alone in a fresh process (imports, compile, closed-form ranks included).")
        print("* reference notebook (SageMath, 64 cores, τ = 0 only, MATH.md §6.2): constants, "
              "not measured here; conflow's MF protocols count 3 flows per configuration.")
        print()
    print(format_counts(counts))
    print(f"momentum τ = {args.tau:g}; numeric = autodiff engine with its default depth cap (6), "
          "the same-run baseline; ratio = numeric wall / exact wall.")

    failures = []
    if rep is not None and (rep["error"] or rep.get("matches") != rep.get("cases")):
        failures.append("reproduce --paper momentum")
    failures += [p["protocol"] for p in protos if p["error"] or p.get("matches") != p.get("cases")]
    failures += [f"{r['case']} {r['method']}" for r in counts
                 if r["error"] or (r.get("status") == "ok" and not r["agree"])
                 or (r["method"] == "exact" and r.get("status") != "ok")]
    payload = {
        "benchmark": "bench_momentum",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_avg": list(os.getloadavg())},
        "args": vars(args),
        "targets": {"protocol_s": TARGET_PROTOCOL_S, "small_s": TARGET_SMALL_S,
                    "large_s": TARGET_LARGE_S},
        "reproduce": rep,
        "protocols": protos,
        "counts": counts,
        "failures": failures,
        "total_s": time.perf_counter() - t_start,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {out}")
    if failures:
        print("FAILURES: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
