"""MATH.md §6.3, first experiment, on synthetic data of MNIST's shapes: a ReLU MLP 784-512-256-10
(with biases), cross-entropy, full batch, T_max = 10, trained by the heavy ball discretising
μθ'' + νθ' = −∇L with step δ (α = δ/(ν + μ/δ), β = μ/(δν + μ); μ = 0 is GD).

- Momentum test: μ ∈ {0, 0.5, 2.5, 5}, ν = 1, δ = T_max/500: relative drift of a gradient-flow law
  against time for each μ. GD keeps it up to O(δ); momentum breaks it at first order (MATH.md §3.5).
- Step test: μ = 0, δ ∈ (T_max/150)·{0.02, 0.25, 0.5, 1, 1.25}: drift at T_max against δ on
  log–log axes. MATH.md §5 bounds it by O(δ) at a fixed horizon. With 128 samples the local slope
  is ≈ 1.1 between the two smallest steps and ≈ 2 between the larger ones (the O(δ²) term,
  driven by the large initial gradients, dominates there); the single fitted slope is ≈ 1.4.

Tracked law (the paper's): first hidden layer, neuron k = 5: ‖W2[:, 5]‖² − ‖W1[5, :]‖² − b1[5]²
(the paper leaves the bias out; with it, the quantity is an exact gradient-flow law). All 768
per-neuron laws are tracked too (maximum over them in the JSON).

Inputs are uniform pixels in [0, 1), labels a random teacher MLP's argmax. 60 000 samples as in the
paper cost about 200 GFLOP per step in float64; the default is 128 samples (``--samples``;
about 2 minutes on 2 cores).

    cd /work/main && PYTHONPATH=. /work/venv/bin/python scripts/momentum_mlp.py [--out DIR]
        [--samples N] [--quick]
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

DIMS = [784, 512, 256, 10]
NEURON = 5


def neuron_law(p):
    return (jnp.sum(p["W2"][:, NEURON] ** 2) - jnp.sum(p["W1"][NEURON] ** 2)
            - p["b1"][NEURON] ** 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/conflow_figures", help="output folder")
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--T", type=float, default=10.0, help="T_max")
    ap.add_argument("--quick", action="store_true",
                    help="128 samples, no δ factor 0.02 (7 500 steps): a smoke run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    samples = 128 if args.quick else args.samples
    os.makedirs(args.out, exist_ok=True)

    model = cf.relu(DIMS, bias=True)
    rng = np.random.default_rng(args.seed)
    x = rng.uniform(0.0, 1.0, (samples, DIMS[0]))
    teacher = cf.init_params(model, args.seed + 1)
    labels = np.asarray(jnp.argmax(cf.mlp_forward(teacher, jnp.asarray(x)), axis=-1))
    data = (jnp.asarray(x), jnp.asarray(labels))
    params0 = cf.init_params(model, args.seed)
    monitors = {"neuron_5": neuron_law, "all_neurons": model_laws(model)}
    print(f"{model.label}: D = {model.D}, {samples} synthetic samples, T_max = {args.T}",
          flush=True)

    def run(delta, mu):
        steps = int(round(args.T / delta))
        every = max(1, steps // 100)
        while steps % every:
            every -= 1
        tx, step_time, label = cf.make_optimizer("heavy-ball", delta, mu=mu, nu=1.0)
        t = time.perf_counter()
        res = cf.train(model, tx, params0, data, steps, every=every, monitors=monitors,
                       step_time=step_time, loss="cross-entropy", label=label)
        rep = cf.drift_report(res)
        print(f"  {label}: {steps} steps, loss {res.loss[0]:.3f} → {res.loss[-1]:.3f}, "
              f"neuron-5 law drift {rep.laws['neuron_5'].max_relative:.2e}, all neurons "
              f"{rep.laws['all_neurons'].max_relative:.2e} ({time.perf_counter() - t:.1f} s)",
              flush=True)
        return res, rep

    summary = {"model": model.label, "D": model.D, "samples": samples, "T": args.T,
               "momentum": {}, "steps": {}}
    print("momentum test (δ = T/500):")
    momentum = {}
    for mu in (0.0, 0.5, 2.5, 5.0):
        res, rep = run(args.T / 500, mu)
        momentum[f"μ = {mu:g}"] = rep
        summary["momentum"][str(mu)] = {k: v.to_json() for k, v in rep.laws.items()}
    fig1 = os.path.join(args.out, "momentum_mlp_momentum.png")
    cf.plot_drift(momentum, laws=["neuron_5"], path=fig1,
                  title=f"{model.label}, heavy ball, δ = T/500: law of neuron {NEURON}")

    print("step test (μ = 0):")
    factors = (0.25, 0.5, 1.0, 1.25) if args.quick else (0.02, 0.25, 0.5, 1.0, 1.25)
    deltas = [args.T / 150 * f for f in factors]
    drifts = {"neuron_5": [], "all_neurons": []}
    for delta in deltas:
        res, rep = run(delta, 0.0)
        for k in drifts:
            drifts[k].append(float(rep.laws[k].relative[-1]))
        summary["steps"][str(delta)] = {k: v.to_json() for k, v in rep.laws.items()}
    slopes = {k: cf.loglog_slope(deltas, v) for k, v in drifts.items()}
    summary["step_slopes"] = slopes
    fig2 = os.path.join(args.out, "momentum_mlp_steps.png")
    cf.plot_drift_vs_step(deltas, drifts, path=fig2, xlabel="step δ",
                          ylabel="relative drift at T_max",
                          title=f"GD on {model.label}, T_max = {args.T:g}")
    print("log-log slopes of the drift at T_max against δ: "
          + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items())
          + " (MATH.md §5 bounds the drift by O(δ) at a fixed horizon)")
    with open(os.path.join(args.out, "momentum_mlp.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    print(f"figures: {fig1}, {fig2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
