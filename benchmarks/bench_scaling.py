"""Time and peak memory of a gradient-flow count against the number of parameters D.

    python benchmarks/bench_scaling.py [--quick] [--plot scaling.png]

Each count runs in a fresh process (imports and compilation included); peak memory is the child's
maximum resident set size. The fitted exponent is the least-squares slope of log(time) against
log(D) over the cases with D ≥ 500 (where the O(D³) complement linear algebra dominates). Same-run
baseline: the smallest case of each family (ratios t(D) / t(D_min) are printed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from fresh_process import ROOT, last_json, run

SCRIPT = """
import json, resource, sys, time
import conflow as cf
kind, dims = sys.argv[1], [int(x) for x in sys.argv[2].split(",")]
model = cf.linear(dims) if kind == "linear" else cf.relu(dims)
result = cf.count_laws(model)
print(json.dumps({"D": model.D, "n_laws": result.n_laws, "status": result.status,
                  "gap": result.gap, "seconds": result.seconds,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CASES = {
    "linear": [[w] * 6 for w in (5, 8, 12, 16, 20)],  # D = 5 w²: 125 … 2000
    "relu": [[w, w, w, 4] for w in (8, 12, 18, 24, 30)],  # D = 2 w² + 4 w: 160 … 1920
}


def fit_exponent(D: list[int], t: list[float]) -> float | None:
    pts = [(d, s) for d, s in zip(D, t) if d >= 500]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the two smallest cases of each family")
    ap.add_argument("--plot", default=None, help="write a log–log plot (needs matplotlib)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/bench_scaling.json"))
    args = ap.parse_args()
    results = {}
    print(f"{'case':<28} {'D':>6} {'laws':>6} {'status':<10} {'gap':>9} {'wall s':>8} "
          f"{'count s':>8} {'peak MB':>8} {'t/t_min':>8}")
    for kind, cases in CASES.items():
        rows = []
        for dims in cases[:2] if args.quick else cases:
            proc = run([sys.executable, "-c", SCRIPT, kind, ",".join(map(str, dims))], 1800)
            if proc["rc"] != 0:
                print(f"{kind}{dims}: failed\n{proc['err'][-800:]}")
                continue
            row = {"kind": kind, "dims": dims, "wall": proc["wall"], **last_json(proc["out"])}
            rows.append(row)
            ratio = row["wall"] / rows[0]["wall"]
            print(f"{kind + str(dims):<28} {row['D']:>6} {row['n_laws']!s:>6} {row['status']:<10} "
                  f"{row['gap']:>9.1e} {row['wall']:>8.2f} {row['seconds']:>8.2f} "
                  f"{row['peak_mb']:>8.0f} {ratio:>7.1f}x")
        exponent = fit_exponent([r["D"] for r in rows], [r["seconds"] for r in rows])
        results[kind] = {"rows": rows, "exponent": exponent}
        print(f"  {kind}: time ~ D^{exponent:.2f} for D ≥ 500" if exponent else "")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    if args.plot:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 4))
        for kind, res in results.items():
            D = [r["D"] for r in res["rows"]]
            ax.loglog(D, [r["seconds"] for r in res["rows"]], "o-",
                      label=f"{kind} (slope {res['exponent']:.2f})" if res["exponent"] else kind)
        ax.set_xlabel("D (parameters)")
        ax.set_ylabel("count_laws seconds (compile included)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
