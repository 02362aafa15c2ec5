"""Steps per second of conflow's training loop and continuous solver against hand-written JAX.

A ReLU MLP 784-128-10 with hidden biases (D = 101 760 parameters), cross-entropy on synthetic
data, float64, on this machine's CPU. Every variant is compiled and run once before it is timed,
then the variants are timed in ``--repeats`` interleaved rounds (A B C D A B C D …); the time is
the best round of each (the minimum is the least disturbed by other load; medians are in the JSON).

Discrete (heavy ball, optax.sgd(0.05, momentum=0.9), minibatches of 128 drawn in the step):

- ``baseline loop``: a hand-written ``jax.jit`` step called from a Python loop;
- ``baseline scan``: the same step in a hand-written ``jax.jit(lax.scan)``;
- ``conflow bare``: `conflow.make_trainer` without monitors (one record at the end);
- ``conflow monitored``: the 128 per-neuron laws ‖W1[j]‖² + b1[j]² − ‖W2[:, j]‖², the loss and
  ‖θ − θ0‖ every ``--every`` steps (default 10).

Continuous (gradient flow, full batch, Tsit5, PID rtol/atol):

- ``diffrax plain``: a hand-written ``diffrax.diffeqsolve`` saving only θ(t1);
- ``conflow simulate``: `conflow.make_simulator` recording the same laws, the loss and
  ‖θ(t) − θ(0)‖ at ``--saves`` times through ``SaveAt(fn=...)``.

Overhead = time of the conflow variant / time of the best hand-written one − 1 (same number of
steps; the solver's step counts are checked equal). Target: monitoring overhead < 20 %.

    cd /work/main && PYTHONPATH=. /work/venv/bin/python benchmarks/bench_simulate.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import diffrax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import conflow as cf  # noqa: E402
from conflow.models.relu import mlp_forward  # noqa: E402
from conflow.training.problem import cross_entropy_loss  # noqa: E402

jax.config.update("jax_enable_x64", True)  # this script's own arrays in float64 too

SIZES = (784, 128, 10)


def neuron_laws(p):
    return jnp.sum(p["W1"] ** 2, axis=1) + p["b1"] ** 2 - jnp.sum(p["W2"] ** 2, axis=0)


def loss_fn(p, batch):
    x, y = batch
    return cross_entropy_loss(mlp_forward(p, x), y)


def interleaved_times(fns, repeats):
    """Best and median wall time of each variant, timed in interleaved rounds (A B C A B C …) so
    that a burst of load from elsewhere hits every variant alike; each is warmed up first."""
    for fn in fns.values():
        fn()  # compile + warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: (min(ts), float(np.median(ts))) for name, ts in times.items()}


def bench_discrete(args, params, data):
    n, steps, B = data[0].shape[0], args.steps, args.batch
    tx = optax.sgd(0.05, momentum=0.9)
    key = jax.random.PRNGKey(0)

    def sample(k):
        idx = jax.random.randint(jax.random.fold_in(key, k), (B,), 0, n)
        return data[0][idx], data[1][idx]

    @jax.jit
    def step(p, s, k):
        g = jax.grad(loss_fn)(p, sample(k))
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    def baseline_loop():
        p, s = params, tx.init(params)
        for k in range(steps):
            p, s = step(p, s, k)
        jax.block_until_ready(p)

    @jax.jit
    def scan_run(p):
        def body(c, k):
            return step(*c, k), None
        (p, s), _ = jax.lax.scan(body, (p, tx.init(p)), jnp.arange(steps))
        return p

    def baseline_scan():
        jax.block_until_ready(scan_run(params))

    def loss_data(p, d):  # conflow's loop samples the batch itself: same sampler
        return loss_fn(p, d)

    bare = cf.make_trainer(loss_data, tx, every=steps, batch_size=B)
    monitored = cf.make_trainer(loss_data, tx, every=args.every, batch_size=B,
                                monitors={"neuron_laws": neuron_laws})

    def run(trainer):
        return lambda: jax.block_until_ready(trainer(params, data, steps, key=0).final.params)

    rows = {}
    timed = interleaved_times({"baseline loop": baseline_loop, "baseline scan": baseline_scan,
                               "conflow bare": run(bare), "conflow monitored": run(monitored)},
                              args.repeats)
    for name, (t, med) in timed.items():
        rows[name] = {"seconds": t, "median_seconds": med, "steps": steps, "steps_per_s": steps / t}
        print(f"  discrete {name:<18} {steps / t:9.1f} steps/s  (best {t:.3f} s, median "
              f"{med:.3f} s for {steps} steps)", flush=True)
    best = min(rows["baseline loop"]["seconds"], rows["baseline scan"]["seconds"])
    best_med = min(rows["baseline loop"]["median_seconds"], rows["baseline scan"]["median_seconds"])
    for name in ("conflow bare", "conflow monitored"):
        rows[name]["overhead_vs_best_baseline"] = rows[name]["seconds"] / best - 1
        rows[name]["median_overhead_vs_best_baseline"] = rows[name]["median_seconds"] / best_med - 1
    rows["conflow monitored"]["overhead_vs_bare"] = (
        rows["conflow monitored"]["seconds"] / rows["conflow bare"]["seconds"] - 1)
    return rows


def bench_continuous(args, params, data):
    t1, rtol, atol = args.t1, args.rtol, args.atol

    def field(t, y, batch):
        return jax.tree_util.tree_map(jnp.negative, jax.grad(loss_fn)(y, batch))

    @jax.jit
    def plain(p, batch):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, t1, None, p, args=batch,
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=1_000_000)
        return sol.ys, sol.stats["num_accepted_steps"], sol.stats["num_steps"]

    sim = cf.make_simulator(loss_fn, "gradient", t1=t1, saveat=args.saves, rtol=rtol, atol=atol,
                            monitors={"neuron_laws": neuron_laws})
    _, acc_plain, all_plain = plain(params, data)
    res = sim(params, data)
    rows = {}
    timed = interleaved_times({"diffrax plain": lambda: jax.block_until_ready(
        plain(params, data)[0]), "conflow simulate": lambda: sim(params, data)}, args.repeats)
    (t_plain, _), (t_sim, _) = timed["diffrax plain"], timed["conflow simulate"]
    steps = int(acc_plain)
    for name, acc, tot in [("diffrax plain", int(acc_plain), int(all_plain)),
                           ("conflow simulate", res.stats["num_accepted_steps"],
                            res.stats["num_steps"])]:
        t, med = timed[name]
        rows[name] = {"seconds": t, "median_seconds": med, "accepted_steps": acc,
                      "steps_tried": tot, "steps_per_s": acc / t}
        print(f"  continuous {name:<16} {acc / t:9.1f} steps/s  (best {t:.3f} s, median "
              f"{med:.3f} s; {acc} accepted / {tot} tried steps, t1 = {t1})", flush=True)
    rows["conflow simulate"]["overhead_vs_plain"] = t_sim / t_plain - 1
    rows["conflow simulate"]["median_overhead_vs_plain"] = (
        timed["conflow simulate"][1] / timed["diffrax plain"][1] - 1)
    rows["same_steps"] = steps == res.stats["num_accepted_steps"]
    laws = res.values["neuron_laws"]
    rows["law_max_relative_drift"] = float(np.max(np.abs(laws - laws[0])) /
                                           np.max(np.abs(laws[0])))
    rows["moved"] = float(res.distance[-1] / res.scale)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    ap.add_argument("--steps", type=int, default=None, help="discrete steps (default 1000)")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--samples", type=int, default=4096, help="training set for minibatches")
    ap.add_argument("--full-batch", type=int, default=256, help="samples of the continuous run")
    ap.add_argument("--t1", type=float, default=None, help="continuous horizon (default 0.5)")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-8)
    ap.add_argument("--saves", type=int, default=101)
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "bench_simulate.json"))
    args = ap.parse_args(argv)
    args.steps = args.steps or (200 if args.quick else 1000)
    args.t1 = args.t1 or (0.1 if args.quick else 0.5)
    args.repeats = args.repeats or (2 if args.quick else 5)
    if args.steps % args.every:
        ap.error("--steps must be a multiple of --every")

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.samples, SIZES[0]))
    teacher = cf.init_mlp(1, SIZES)
    y = np.asarray(jnp.argmax(mlp_forward(teacher, jnp.asarray(x)), axis=-1))
    data = (jnp.asarray(x), jnp.asarray(y))
    params = cf.init_mlp(0, SIZES)
    D = sum(int(v.size) for v in params.values())
    print(f"ReLU MLP {'-'.join(map(str, SIZES))} + hidden bias: D = {D}, float64, "
          f"{jax.devices()[0].platform}, {os.cpu_count()} cores", flush=True)
    discrete = bench_discrete(args, params, data)
    full = (data[0][: args.full_batch], data[1][: args.full_batch])
    continuous = bench_continuous(args, params, full)
    out = {"D": D, "sizes": SIZES, "args": vars(args), "machine": platform.platform(),
           "cpus": os.cpu_count(), "discrete": discrete, "continuous": continuous}
    d_over = discrete["conflow monitored"]["overhead_vs_best_baseline"]
    c_over = continuous["conflow simulate"]["overhead_vs_plain"]
    d_med = discrete["conflow monitored"]["median_overhead_vs_best_baseline"]
    c_med = continuous["conflow simulate"]["median_overhead_vs_plain"]
    print(f"monitoring overhead (best / median round): discrete {100 * d_over:+.1f}% / "
          f"{100 * d_med:+.1f}% vs the best hand-written loop "
          f"({100 * discrete['conflow monitored']['overhead_vs_bare']:+.1f}% vs conflow bare), "
          f"continuous {100 * c_over:+.1f}% / {100 * c_med:+.1f}% vs plain diffrax (same steps: "
          f"{continuous['same_steps']}); target < 20%")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"results: {args.out}")
    return 0 if max(d_over, c_over) < 0.2 else 1


if __name__ == "__main__":
    sys.exit(main())
