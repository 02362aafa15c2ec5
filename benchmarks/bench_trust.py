"""Trust benchmark (issue 13, item 8): a broad randomized draw of models as users write them,
each counted blind and compared with a closed-form count (never with the engine under test).

Kinds (models and closed forms in ``benchmarks/trust_models.py``, shared with
``tests/test_trust.py``): Equinox and Flax NNX MLPs (ReLU, leaky ReLU, GELU, tanh, softplus,
identity; ± biases) counted with ``count_laws_from_model``; Conv1d / Conv2d + ReLU + Linear nets;
the built-in deep linear and ReLU nets of 5 to 12 layers; adversarial ``cf.custom`` families
(nearly parallel generators, wildly different sizes, nearly dependent brackets); with ``--large``,
deep linear nets [w]×5 and [w]×6 up to D = 10,000; with ``--wide``, one MLP per activation with
600 ≤ D ≤ 2,000 (widths up to 40; the main draw's MLPs stay under D = 600); with ``--scalar``,
twelve MLPs on 1-D inputs (fitting a function of one variable: widths to 16, 1–3 hidden layers),
whose smooth nets have output gradients that are numerically of low rank; with ``--heads``, ten
classifiers (an MLP's logits through softmax or log-softmax, `trust_models.head_laws`).

    python benchmarks/bench_trust.py --quick     # ~20 models, smoke test
    python benchmarks/bench_trust.py             # 130+ models
    python benchmarks/bench_trust.py --large     # + linear [30]×5 … [50]×5 (D = 10,000): long
    python benchmarks/bench_trust.py --wide      # + six MLPs with 600 ≤ D ≤ 2,000: long
    python benchmarks/bench_trust.py --scalar --only="-[1,"   # the twelve MLPs on 1-D inputs
    python benchmarks/bench_trust.py --heads --only=softmax   # the ten classifiers

Each count runs in this process (compilation included in its time, imports not); an exception is
recorded as status ``error``. Verdicts: ``ok-right``, ``ok-WRONG`` (a confident wrong count), or
the status when not ``ok``. An adversarial member (ε ≠ 1) may be ``ambiguous``; its well-separated
ε = 1 member counts as an ordinary model.

Targets (exit code 1 if one is missed; a target with no model in the run is "not run"):
  T1  0 ok-and-WRONG counts, adversarial members included;
  T2  ≥ 98 % of the ordinary models ok-and-right;
  T3  every ordinary model with D ≤ 2,000, and every net of ≤ 12 layers with D ≤ 1,000,
      ok-and-right in under 60 s each;
  T4  linear [50,50,50,50,50] (D = 10,000) ok-and-right in under 300 s (``--large``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import trust_models as tm

HERE = Path(__file__).resolve().parent
DEFAULT_SEED = 2026

TARGET_RIGHT = 0.98
TARGET_CASE_S = 60.0
TARGET_BIG_ID = "linear-[50,50,50,50,50]"
TARGET_BIG_S = 300.0

LARGE = [[30] * 5, [30] * 6, [40] * 6, [50] * 5]  # D = 3,600 / 4,500 / 8,000 / 10,000


def _deep_dims(rng, n_layers: int, lo: int, hi: int, max_D: int, linear: bool) -> list[int]:
    for _ in range(10_000):
        if linear and rng.random() < 0.5:
            dims = [int(rng.integers(lo, hi + 1))] * n_layers
        else:
            dims = [int(x) for x in rng.integers(lo, hi + 1, n_layers)]
        D = sum(a * b for a, b in zip(dims[:-1], dims[1:]))
        if D > max_D:
            continue
        # linear: stay where the balancedness count is the MATH.md §2.3 per-layer formula without
        # saturation, and avoid the scalar case n_0 = n_q = 1
        if linear and (tm.saturated(dims) or (dims[0] == 1 and dims[-1] == 1)):
            continue
        return dims
    raise RuntimeError("no deep net under the cap")


def draw_suite(seed: int, quick: bool, large: bool, wide: bool = False,
               scalar: bool = False, heads: bool = False) -> list[tm.Case]:
    rng = np.random.default_rng(seed)
    if quick:
        n_mlp, n_conv, n_deep = 8, 2, 2
        mlp_kw = dict(max_D=60, max_D_identity=40)
        conv_kw = dict(max_D=40)
        deep_D = 120
    else:
        n_mlp, n_conv, n_deep = 64, 12, 12
        mlp_kw = dict(max_D=600, max_D_identity=300, max_width=16, max_in=8, max_out=4)
        conv_kw = dict(max_D=400, max_c=4, max_size=8)
        deep_D = 1000
    cases = [tm.draw_mlp(rng, i, **mlp_kw) for i in range(n_mlp)]
    cases += [tm.draw_conv(rng, i, **conv_kw) for i in range(n_conv)]
    for j in range(n_deep):  # 5..12 layers (len(dims))
        n_layers = int(rng.integers(5, 13)) if not quick else 5 + j
        cases.append(tm.linear_case(_deep_dims(rng, n_layers, 2, 10, deep_D, linear=True)))
    for j in range(n_deep):
        n_layers = int(rng.integers(5, 13)) if not quick else 6 + j
        cases.append(tm.relu_case(_deep_dims(rng, n_layers, 2, 12, deep_D, linear=False),
                                  bias=bool(j % 2)))
    for family, (_, reference, eps_list) in tm.ADVERSARIAL.items():
        if quick and family not in ("parallel", "parallel-linear", "bracket"):
            continue
        chosen = eps_list if not quick else (eps_list[0], eps_list[-1])
        if not quick or family == "parallel":
            cases.append(tm.adversarial_case(family, reference))
        cases += [tm.adversarial_case(family, e) for e in chosen]
    if large:
        cases += [tm.linear_case(d) for d in LARGE]
    if wide:  # one MLP per activation with 600 ≤ D ≤ 2,000 (widths to 40), its own draw
        wide_rng = np.random.default_rng([seed, 1])
        cases += [tm.draw_mlp(wide_rng, i, min_D=600, max_D=2000, max_D_identity=2000,
                              max_width=40, max_depth=3, max_in=10, max_out=3)
                  for i in (0, 7, 8, 3, 4, 11)]  # each activation once, biases on every other
    if scalar:  # every activation with and without biases, on 1-D inputs, its own draw
        scalar_rng = np.random.default_rng([seed, 2])
        cases += [tm.draw_mlp(scalar_rng, i, max_D=600, max_D_identity=600, max_width=16,
                              max_depth=3, min_in=1, max_in=1) for i in range(12)]
    if heads:  # classifiers: softmax / log-softmax on 2-4 logits, every non-identity activation
        heads_rng = np.random.default_rng([seed, 3])
        cases += [tm.draw_mlp(heads_rng, i, max_D=600, max_D_identity=0, max_width=12,
                              max_depth=3, max_in=6, min_out=2, max_out=4,
                              head=tm.HEADS[(i // len(tm.ACTIVATIONS)) % 2])
                  for i in range(12) if tm.ACTIVATIONS[i % len(tm.ACTIVATIONS)] != "identity"]
    return cases


# --------------------------------------------------------------------------- report


def _summary(rows: list[dict]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    out = []
    for g, rs in groups.items():
        secs = [r["seconds"] for r in rs]
        out.append({
            "group": g, "n": len(rs),
            "ok_right": sum(r["verdict"] == "ok-right" for r in rs),
            "ok_wrong": sum(r["verdict"] == "ok-WRONG" for r in rs),
            "not_ok": sum(r["status"] != "ok" for r in rs),
            "ambiguous": sum(r["status"] == "ambiguous" for r in rs),
            "errors": sum(r["status"] == "error" for r in rs),
            "D_max": max(r["D"] for r in rs),
            "median_s": statistics.median(secs), "max_s": max(secs),
        })
    return out


def format_summary(summary: list[dict]) -> str:
    head = (f"{'kind':<36} {'n':>4} {'ok+right':>8} {'ok+WRONG':>8} {'not ok':>6} "
            f"{'(ambig.)':>8} {'D max':>6} {'median s':>8} {'max s':>7}")
    lines = [head, "-" * len(head)]
    tot = {"n": 0, "ok_right": 0, "ok_wrong": 0, "not_ok": 0, "ambiguous": 0}
    for s in summary:
        lines.append(f"{s['group']:<36} {s['n']:>4} {s['ok_right']:>8} {s['ok_wrong']:>8} "
                     f"{s['not_ok']:>6} {s['ambiguous']:>8} {s['D_max']:>6} "
                     f"{s['median_s']:>8.2f} {s['max_s']:>7.1f}")
        for k in tot:
            tot[k] += s[k]
    lines.append("-" * len(head))
    lines.append(f"{'all':<36} {tot['n']:>4} {tot['ok_right']:>8} {tot['ok_wrong']:>8} "
                 f"{tot['not_ok']:>6} {tot['ambiguous']:>8}")
    return "\n".join(lines)


def _why(row: dict) -> str:
    """A missed model and what it did: verdict, time, bracket depth, the escalation step that
    settled it or why it is not ok."""
    what = [row["verdict"], f"{row['seconds']:.0f} s"]
    if row.get("depth") is not None:
        what.append(f"brackets to depth {row['depth']}")
    if row.get("settled_by"):
        what.append(f"settled by {row['settled_by'].split(' (')[0]}")
    if row["verdict"] != "ok-right" and (row["reason"] or row["error"]):
        what.append((row["error"] or row["reason"])[:160])
    return f"{row['id']} ({'; '.join(what)})"


def targets(rows: list[dict]) -> list[dict]:
    ordinary = [r for r in rows if not r["adversarial"]]
    wrong = [r["id"] for r in rows if r["verdict"] == "ok-WRONG"]
    right = sum(r["verdict"] == "ok-right" for r in ordinary)
    frac = right / len(ordinary) if ordinary else None
    small = [r for r in ordinary
             if r["D"] <= 2000 or (0 < r["layers"] <= 12 and r["D"] <= 1000)]
    small_bad = [_why(r) for r in small
                 if r["verdict"] != "ok-right" or r["seconds"] >= TARGET_CASE_S]
    big = [r for r in rows if r["id"] == TARGET_BIG_ID]
    out = [
        {"target": "T1: 0 ok-and-WRONG (all models)", "met": not wrong,
         "detail": f"{len(wrong)} ok-and-WRONG" + (f": {', '.join(wrong)}" if wrong else "")},
        {"target": f"T2: ≥ {TARGET_RIGHT:.0%} of ordinary models ok-and-right",
         "met": None if frac is None else frac >= TARGET_RIGHT,
         "detail": "no ordinary model" if frac is None
         else f"{right}/{len(ordinary)} = {frac:.1%}"},
        {"target": f"T3: D ≤ 2,000 (or ≤ 12 layers, D ≤ 1,000): each ok-and-right in "
                   f"< {TARGET_CASE_S:.0f} s", "met": None if not small else not small_bad,
         "detail": f"{len(small) - len(small_bad)}/{len(small)}"
         + (f"; missed: {', '.join(small_bad)}" if small_bad else "")},
    ]
    if big:
        r = big[0]
        met = r["verdict"] == "ok-right" and r["seconds"] < TARGET_BIG_S
        out.append({"target": f"T4: {TARGET_BIG_ID} ok-and-right in < {TARGET_BIG_S:.0f} s",
                    "met": met, "detail": f"{r['verdict']}, {r['seconds']:.0f} s"})
    else:
        out.append({"target": f"T4: {TARGET_BIG_ID} ok-and-right in < {TARGET_BIG_S:.0f} s",
                    "met": None, "detail": "not run (use --large)"})
    return out


def _id_matches(case_id: str, pattern: str) -> bool:
    """`pattern` occurs in `case_id`; a leading ``^`` anchors it at the start."""
    if pattern.startswith("^"):
        return case_id.startswith(pattern[1:])
    return pattern in case_id


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a ~20-model subset (smoke test)")
    p.add_argument("--large", action="store_true",
                   help="add deep linear [30]x5, [30]x6, [40]x6, [50]x5 (D up to 10,000; minutes "
                        "each)")
    p.add_argument("--wide", action="store_true",
                   help="add one MLP per activation with 600 ≤ D ≤ 2,000 (a minute or more each)")
    p.add_argument("--scalar", action="store_true",
                   help="add twelve MLPs on 1-D inputs (every activation, ± biases)")
    p.add_argument("--heads", action="store_true",
                   help="add ten MLP classifiers with a softmax or log-softmax head")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the draw (2026)")
    p.add_argument("--points", type=int, default=3, help="generic points per count (3)")
    p.add_argument("--only", action="append", default=None, metavar="SUBSTRING",
                   help="count only the models whose id contains this; a leading ^ "
                        "anchors it at the start of the id (repeatable)")
    p.add_argument("--list", action="store_true", help="print the drawn models and exit")
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows and targets")
    args = p.parse_args(argv)

    cases = draw_suite(args.seed, args.quick, args.large, args.wide, args.scalar,
                       args.heads)
    if args.only:
        cases = [c for c in cases if any(_id_matches(c.id, o) for o in args.only)]
    if args.list:
        for c in cases:
            print(f"{c.id:<52} D={c.D:<6} expected {c.expected:<5} {c.group}")
        print(f"{len(cases)} models")
        return 0

    need = {c.kind.split("-")[0] for c in cases}
    missing = []
    for lib, mod in (("eqx", "equinox"), ("nnx", "flax.nnx")):
        if lib in need:
            try:
                __import__(mod)
            except ImportError:
                missing.append(mod)
    if missing:
        print(f"skipping the models that need {', '.join(missing)} (not installed)")
        cases = [c for c in cases if not (c.kind.startswith("eqx-") and "equinox" in missing
                                           or c.kind.startswith("nnx-") and "flax.nnx" in missing)]

    import conflow  # noqa: F401  (imports outside the timed counts)

    print(f"bench_trust: {len(cases)} models, seed {args.seed}, points {args.points}"
          + (" (quick)" if args.quick else "") + (" (+large)" if args.large else "")
          + (" (+wide)" if args.wide else "") + (" (+scalar)" if args.scalar else "")
          + (" (+heads)" if args.heads else ""),
          flush=True)
    t_start = time.perf_counter()
    rows = []
    for i, case in enumerate(cases, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = tm.run_case(case, points=args.points)
        rows.append(row)
        n = "-" if row["n_laws"] is None else row["n_laws"]
        flag = "   <-- " + row["verdict"] if row["verdict"] != "ok-right" else ""
        print(f"[{i:>3}/{len(cases)}] {case.id:<52} D={case.D:<6} laws {n!s:>5} / "
              f"{case.expected:<5} {row['status']:<13} {row['seconds']:7.2f} s{flag}"
              + (f"  ({row['error']})" if row["error"] else ""), flush=True)
    total = time.perf_counter() - t_start

    summary = _summary(rows)
    tgts = targets(rows)
    print(f"\nPer kind (in-process counts, compilation included; total {total:.0f} s)")
    print(format_summary(summary))
    bad = [r for r in rows if r["verdict"] != "ok-right"]
    if bad:
        print("\nNot ok-and-right:")
        for r in bad:
            print(f"  {r['id']:<52} {r['verdict']:<13} laws {r['n_laws']} (expected "
                  f"{r['expected']})"
                  + (" [adversarial: allowed]" if r["adversarial"] and r["status"] == "ambiguous"
                     else "") + (f"  {r['error']}" if r["error"] else "")
                  + (f"\n      why: {r['reason'][:300]}" if r.get("reason") else ""))
    print("\nTargets")
    for t in tgts:
        mark = {True: "MET   ", False: "MISSED", None: "-     "}[t["met"]]
        print(f"  {mark} {t['target']}: {t['detail']}")

    if args.json:
        payload = {
            "benchmark": "bench_trust",
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count()},
            "args": vars(args), "total_s": total, "summary": summary, "targets": tgts,
            "rows": rows,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1, default=str))
        print(f"\nwrote {path}")
    return 1 if any(t["met"] is False for t in tgts) else 0


if __name__ == "__main__":
    sys.exit(main())
