"""MATH.md §6.3, second experiment, on synthetic data of the same shapes: NMF of "digit-0 images"
Y ∈ R^{6903×784} (pixels + 0.001), rank r = 10, loss mean((UV − Y)²), T_max = 10⁶, random positive
initialisation with each factor rescaled to Frobenius norm √‖Y‖, tracked under two geometries:

- mirror (entropy) geometry, `conflow.mirror_heavy_ball` (μθ'' + νθ' = −(μθ' + νθ) ⊙ ∇L, μ = 0:
  the multiplicative / mirror step), law Σ_i U_ik − Σ_j V_kj (MATH.md §4.2), kept exactly by the
  mirror step and broken by mirror momentum (0 laws, MATH.md §3.4);
- Euclidean geometry, the heavy ball (μ = 0: GD), law UᵀU − VVᵀ (MATH.md §2.2), drifting O(δ)
  under GD and at first order under momentum.

Momentum test: μ ∈ {0, 1, 5, 10}×10⁴, ν = 1, δ = T_max/1000. Step test: μ = 0,
δ ∈ (T_max/150)·{0.1, 0.5, 1}: drift at T_max against δ (log–log slope).

The data are a positive rank-20 matrix on a ring-shaped "digit" template plus noise, clipped to
[0, 1] (MNIST itself is not downloaded). ``--images`` changes the number of rows.

    cd /work/main && PYTHONPATH=. /work/venv/bin/python scripts/nmf_mirror.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import conflow as cf  # noqa: E402
from conflow.reference.closed_forms import model_laws  # noqa: E402

jax.config.update("jax_enable_x64", True)  # this script's own arrays in float64 too

R = 10


def synthetic_digits(n: int, rng: np.random.Generator) -> np.ndarray:
    """n positive 28×28 "images" of a noisy ring, flattened: shape (n, 784), in [0.001, 1.001]."""
    yy, xx = np.mgrid[0:28, 0:28]
    radius = np.hypot(yy - 14, (xx - 14) * 1.3)
    template = np.exp(-((radius - 8.0) ** 2) / 6.0).ravel()
    parts = rng.uniform(0, 1, (20, 784)) * template
    weights = rng.gamma(1.0, 1.0, (n, 20)) / 20
    images = np.clip(weights @ parts * 3 + 0.05 * rng.standard_normal((n, 784)) * template, 0, 1)
    return images + 1e-3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/conflow_figures", help="output folder")
    ap.add_argument("--images", type=int, default=6903, help="rows of Y (MNIST zeros: 6903)")
    ap.add_argument("--T", type=float, default=None,
                    help="T_max (default 10⁶ × images/6903: the loss is a mean over the "
                         "entries, so fewer rows means larger gradients)")
    ap.add_argument("--quick", action="store_true", help="1000 images: a smoke run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    n = 1000 if args.quick else args.images
    if args.T is None:
        args.T = 1e6 * n / 6903
    os.makedirs(args.out, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    Y = jnp.asarray(synthetic_digits(n, rng))
    model = cf.nmf(n, R, 784)
    norm = float(jnp.sqrt(jnp.linalg.norm(Y)))
    U, V = rng.uniform(0, 1, (n, R)), rng.uniform(0, 1, (R, 784))
    params0 = {"U": jnp.asarray(U * norm / np.linalg.norm(U)),
               "V": jnp.asarray(V * norm / np.linalg.norm(V))}
    laws = {"mirror_law": model_laws(model, "mirror"),                     # Σ_i U_ik − Σ_j V_kj
            "euclidean_law": lambda p: p["U"].T @ p["U"] - p["V"] @ p["V"].T}  # UᵀU − VVᵀ
    print(f"{model.label}: D = {model.D}, T_max = {args.T:g}", flush=True)

    def run(geometry, delta, mu):
        steps = int(round(args.T / delta))
        every = max(1, steps // 100)
        while steps % every:
            every -= 1
        if geometry == "mirror":
            tx, _, label = cf.make_optimizer("mirror", delta, mu=mu, nu=1.0)
        else:
            tx, _, label = cf.make_optimizer("heavy-ball", delta, mu=mu, nu=1.0)
        t = time.perf_counter()
        res = cf.train(model, tx, params0, Y, steps, every=every, monitors=laws,
                       step_time=delta, label=label)
        if not np.all(np.isfinite(res.loss)) or not all(
                bool(jnp.all(jnp.isfinite(v))) for v in res.final.params.values()):
            print(f"  {label}: {steps} steps, diverged (step too large for these data)",
                  flush=True)
            return None
        pos = min(float(jnp.min(v)) for v in res.final.params.values())
        rep = cf.drift_report(res)
        print(f"  {label}: {steps} steps, loss {res.loss[0]:.3g} → {res.loss[-1]:.3g}, drift: "
              f"mirror law {rep.laws['mirror_law'].max_relative:.2e}, Euclidean law "
              f"{rep.laws['euclidean_law'].max_relative:.2e}, min entry {pos:.2e} "
              f"({time.perf_counter() - t:.1f} s)", flush=True)
        return rep

    summary = {"model": model.label, "D": model.D, "T": args.T, "momentum": {}, "steps": {}}
    figures = []
    for geometry, law in (("mirror", "mirror_law"), ("euclidean", "euclidean_law")):
        print(f"{geometry} geometry, momentum test (δ = T/1000):")
        reports = {}
        for mu in (0.0, 1e4, 5e4, 1e5):
            rep = run(geometry, args.T / 1000, mu)
            if rep is None:
                continue
            reports[f"μ = {mu:g}"] = rep
            summary["momentum"][f"{geometry} {mu:g}"] = {k: v.to_json()
                                                         for k, v in rep.laws.items()}
        path = os.path.join(args.out, f"nmf_{geometry}_momentum.png")
        cf.plot_drift(reports, laws=[law], path=path,
                      title=f"NMF {n}×784, r = {R}, {geometry} geometry: {law}")
        figures.append(path)

    print("step test (μ = 0):")
    deltas = [args.T / 150 * f for f in (0.1, 0.5, 1.0)]
    tests = {"mirror step: mirror_law": ("mirror", "mirror_law"),
             "GD: euclidean_law": ("euclidean", "euclidean_law")}
    drifts: dict[str, dict[float, float]] = {k: {} for k in tests}
    for delta in deltas:
        for key, (geometry, law) in tests.items():
            rep = run(geometry, delta, 0.0)
            if rep is not None:  # a diverged run is left out
                drifts[key][delta] = float(rep.laws[law].relative[-1])
    gd = drifts["GD: euclidean_law"]
    slope = cf.loglog_slope(list(gd), list(gd.values())) if len(gd) >= 2 else None
    summary["step_test"] = {"deltas": deltas,
                            "relative_drift_at_T": {k: {str(d): v for d, v in dd.items()}
                                                    for k, dd in drifts.items()},
                            "gd_slope": slope}
    if slope is not None:
        path = os.path.join(args.out, "nmf_steps.png")
        cf.plot_drift_vs_step(list(gd), {"GD: euclidean_law": list(gd.values())}, path=path,
                              xlabel="step δ", ylabel="relative drift at T_max",
                              title=f"NMF, T_max = {args.T:g}")
        figures.append(path)
    mirror = drifts["mirror step: mirror_law"].values()
    print("mirror step: the mirror law drifts by at most "
          f"{max(mirror, default=float('nan')):.1e} (rounding); GD: the Euclidean law's drift at "
          "T_max scales as δ^" + ("n/a" if slope is None else f"{slope:.2f}"))
    with open(os.path.join(args.out, "nmf_mirror.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    print("figures: " + ", ".join(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
