"""Time and peak memory of a count against the number of parameters D; sharding speed-up.

    python benchmarks/bench_scaling.py [--quick] [--only FAMILY] [--skip-sharding]
                                       [--linalg auto|host|device|both] [--time-limit S]
                                       [--plot scaling.png]

Each count runs in a fresh process (imports and compilation included); peak memory is the child's
maximum resident set size. Families:

- ``linear dense`` / ``relu dense``: gradient flow, the dense engine (D ≤ 2,000).
- ``linear streamed`` / ``relu streamed``: gradient flow, the streamed engine, up to
  D = 10,000 (linear [w, w/2, w]) and D = 10,322 (ReLU [784, h, 10], MNIST-shaped).
  Targets: under 5 minutes and 8 GB at D ≥ 10,000.
- ``momentum``: heavy-ball flow at D = 1,000 (state 2,001), linear and ReLU [20, 25, 20].
  Target: under 10 minutes.
- ``gpu``: the rows of `benchmarks/gpu_check.sh`: linear and ReLU at D ≈ 2,000 and D ≈ 10,000,
  then ReLU [784, 128, 10] (D = 101,632). Targets on a GPU: under 10 s at D ≈ 10,000 and under
  5 minutes at D ≈ 100,000, compile included.

``--linalg both`` runs every case twice in the same run, with the levels cut on the host
(LAPACK) and on the device (`conflow.engine.device_basis`, ``CONFLOW_LINALG``), and prints the
ratio of their count times and whether their ranks agree level by level.

The fitted exponent is the least-squares slope of log(time) against log(D) over a family's cases
with D ≥ 500. Same-run baselines: the smallest case of each family (t / t_min), the dense engine
against the streamed one on the same model (``crossover``), and one device against four forced
host devices (``sharding``, XLA_FLAGS=--xla_force_host_platform_device_count=4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from fresh_process import ROOT, last_json, run

SCRIPT = """
import json, resource, sys
import conflow as cf
kind, dims, flow, algorithm, devices = sys.argv[1:6]
dims = [int(x) for x in dims.split(",")]
model = cf.linear(dims) if kind == "linear" else cf.relu(dims)
flow = cf.MomentumFlow(0.5) if flow == "momentum" else None
result = cf.count_laws(model, flow, algorithm=algorithm,
                       devices=None if devices == "all" else int(devices))
trace = result.trace
print(json.dumps({"D": model.D, "state_dim": result.state_dim, "n_laws": result.n_laws,
                  "status": result.status, "gap": result.gap, "seconds": result.seconds,
                  "method": result.method, "depth": result.depth,
                  "algorithm": trace.algorithm if trace else None,
                  "linalg": trace.linalg if trace else None,
                  "ranks": trace.ranks if trace else None,
                  "backend": __import__("jax").default_backend(),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

GRADIENT, MOMENTUM = "gradient", "momentum"
FAMILIES = {
    "linear dense": [("linear", [w] * 6, GRADIENT, "dense") for w in (5, 8, 12, 16, 20)],
    "relu dense": [("relu", [w, w, w, 4], GRADIENT, "dense") for w in (8, 12, 18, 24, 30)],
    "linear streamed": [("linear", [w, w // 2, w], GRADIENT, "streamed")
                        for w in (40, 60, 80, 100)],  # D = w²: 1,600 … 10,000
    "relu streamed": [("relu", [784, h, 10], GRADIENT, "streamed")
                      for h in (2, 4, 8, 13)],  # D = 794 h: 1,588 … 10,322
    "momentum": [("linear", [20, 25, 20], MOMENTUM, "auto"),
                 ("relu", [20, 25, 20], MOMENTUM, "auto")],  # D = 1,000, state 2,001
    "gpu": [("linear", [45, 22, 45], GRADIENT, "auto"),  # D = 1,980
            ("relu", [30, 30, 30, 4], GRADIENT, "auto"),  # D = 1,920
            ("linear", [100, 50, 100], GRADIENT, "auto"),  # D = 10,000
            ("relu", [784, 13, 10], GRADIENT, "auto"),  # D = 10,322
            ("relu", [784, 128, 10], GRADIENT, "auto")],  # D = 101,632
}
#: Families run only when asked for (``--only``).
ON_REQUEST = ("gpu",)
# (seconds, MB) targets of the issue, for the cases they apply to.
TARGETS = {GRADIENT: (300, 8000), MOMENTUM: (600, None)}
CROSSOVER = [("relu", [40, 40, 40, 4], GRADIENT, alg) for alg in ("dense", "streamed")]
SHARDING_CASE = ("relu", [24, 24, 24, 4], GRADIENT, "dense")


def fit_exponent(D: list[int], t: list[float]) -> float | None:
    pts = [(d, s) for d, s in zip(D, t) if d >= 500]
    if len({d for d, _ in pts}) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def count(case: tuple, devices: str = "all", env: dict | None = None,
          timeout: float = 1800) -> dict | None:
    kind, dims, flow, algorithm = case
    cmd = [sys.executable, "-c", SCRIPT, kind, ",".join(map(str, dims)), flow, algorithm,
           devices]
    proc = run(cmd, timeout, env)
    if proc["timeout"]:
        print(f"{kind}{dims} {flow} {algorithm}: over the time limit of {timeout:g} s")
        return None
    if proc["rc"] != 0:
        print(f"{kind}{dims} {flow} {algorithm}: failed\n{proc['err'][-800:]}")
        return None
    return {"kind": kind, "dims": dims, "flow": flow, "wall": proc["wall"],
            **last_json(proc["out"])}


def target_met(row: dict) -> str:
    big = row["D"] >= 10_000 if row["flow"] == GRADIENT else row["state_dim"] >= 2001
    if not big:
        return "-"
    seconds, mb = TARGETS[row["flow"]]
    ok = (row["status"] == "ok" and row["wall"] < seconds
          and (mb is None or row["peak_mb"] < mb))
    return f"{'yes' if ok else 'NO'} (<{seconds}s" + (f", <{mb}MB)" if mb else ")")


HEADER = (f"{'case':<40} {'D':>6} {'laws':>6} {'status':<10} {'gap':>9} {'wall s':>8} "
          f"{'count s':>8} {'peak MB':>8} {'t/t_min':>8}  target")


def print_row(label: str, row: dict, base: dict) -> None:
    print(f"{label:<40} {row['D']:>6} {row['n_laws']!s:>6} {row['status']:<10} "
          f"{row['gap']:>9.1e} {row['wall']:>8.1f} {row['seconds']:>8.1f} "
          f"{row['peak_mb']:>8.0f} {row['wall'] / base['wall']:>7.1f}x  {target_met(row)}")


def sharding_speedup() -> dict:
    """One device against four forced host devices, same model, fresh processes."""
    four = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    rows = {"1 device": count(SHARDING_CASE, "1", four),
            "4 devices": count(SHARDING_CASE, "4", four)}
    if None in rows.values():
        return {"rows": rows}
    one, many = rows["1 device"], rows["4 devices"]
    same = (one["n_laws"], one["status"]) == (many["n_laws"], many["status"])
    speedup = one["seconds"] / many["seconds"]
    print(f"sharding {SHARDING_CASE[0]}{SHARDING_CASE[1]}: 1 device {one['seconds']:.1f} s, "
          f"4 host devices {many['seconds']:.1f} s: speed-up {speedup:.2f}x "
          f"(on {os.cpu_count()} cores); same count: {same}")
    return {"rows": rows, "speedup": speedup, "same_count": same, "cores": os.cpu_count()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the two smallest cases of each family")
    ap.add_argument("--only", action="append", choices=list(FAMILIES), help="repeatable")
    ap.add_argument("--skip-sharding", action="store_true")
    ap.add_argument("--skip-crossover", action="store_true")
    ap.add_argument("--plot", default=None, help="write a log–log plot (needs matplotlib)")
    ap.add_argument("--linalg", choices=("auto", "host", "device", "both"), default="auto",
                    help="where the levels are cut (both: each case twice, same run)")
    ap.add_argument("--time-limit", type=float, default=1800, help="seconds per case")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/bench_scaling.json"))
    args = ap.parse_args()
    results: dict = {"cpu_count": os.cpu_count(), "families": {}, "linalg": args.linalg}
    linalgs = ("host", "device") if args.linalg == "both" else (args.linalg,)
    print(HEADER)
    for family in args.only or [f for f in FAMILIES if f not in ON_REQUEST]:
        rows = []
        for case in FAMILIES[family][:2] if args.quick else FAMILIES[family]:
            runs = {}
            for linalg in linalgs:
                env = None if linalg == "auto" else {"CONFLOW_LINALG": linalg}
                row = count(case, env=env, timeout=args.time_limit)
                if row is None:
                    continue
                runs[linalg] = row
                rows.append(row)
                dims = ",".join(map(str, case[1]))
                label = f"{family}: {case[0]}[{dims}]" + ("" if len(linalgs) == 1 else
                                                          f" {row['linalg']}")
                print_row(label, row, rows[0])
            if len(runs) == 2:
                host, device = runs["host"], runs["device"]
                same = (host["ranks"], host["n_laws"]) == (device["ranks"], device["n_laws"])
                device["device_over_host"] = device["seconds"] / host["seconds"]
                device["same_ranks"] = same
                print(f"  device / host: {device['device_over_host']:.2f}x count time; "
                      f"same ranks per level: {same}")
        exponent = fit_exponent([r["D"] for r in rows], [r["seconds"] for r in rows])
        results["families"][family] = {"rows": rows, "exponent": exponent}
        if exponent is not None:
            print(f"  {family}: time ~ D^{exponent:.2f} for D ≥ 500")
    if not (args.quick or args.skip_crossover or args.only):
        rows = [count(case) for case in CROSSOVER]
        if None not in rows:
            print(f"crossover {CROSSOVER[0][0]}{CROSSOVER[0][1]} (D = {rows[0]['D']}): dense "
                  f"{rows[0]['seconds']:.1f} s / {rows[0]['peak_mb']:.0f} MB, streamed "
                  f"{rows[1]['seconds']:.1f} s / {rows[1]['peak_mb']:.0f} MB")
        results["crossover"] = rows
    if not (args.skip_sharding or args.only):
        results["sharding"] = sharding_speedup()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    if args.plot:
        plot(results["families"], args.plot)
    failed = [r for fam in results["families"].values() for r in fam["rows"]
              if target_met(r).startswith("NO")]
    return 1 if failed else 0


def plot(families: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for family, res in families.items():
        if not res["rows"]:
            continue
        D = [r["D"] for r in res["rows"]]
        slope = f" (slope {res['exponent']:.2f})" if res["exponent"] else ""
        if res["rows"][0]["flow"] == MOMENTUM:
            slope += " (state 2D+1)"
        ax.loglog(D, [r["seconds"] for r in res["rows"]], "o-", label=family + slope)
    ax.axhline(300, color="grey", ls="--", lw=0.8)
    ax.text(110, 320, "5 min", color="grey", fontsize=8)
    ax.set_xlabel("D (parameters)")
    ax.set_ylabel("count_laws seconds (compile included)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
