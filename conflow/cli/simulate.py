"""``conflow simulate``: run a flow or an optimizer on synthetic data and report law drift.

    conflow simulate MODEL DIMS [--bias] [--flow gradient|momentum|nesterov|sign] [--metric M]
                     [--tau T] [--weight-decay λ]
                     [--optimizer sgd|heavy-ball|nesterov|adam|adamw|sign|mirror] [--lr LR]
                     [--mu MU] [--nu NU] [--beta B] [--steps N | --t1 T] [--batch-size B]
                     [--samples N] [--sweep-lr LR1,LR2,...] [--plot FILE] [--json] ...

Without ``--optimizer`` the continuous flow is integrated (diffrax) up to ``--t1`` (default 10);
with it, the discrete optimizer runs ``--steps`` steps (default 1000) or ``--t1 / lr`` steps.
Data are synthetic, of the model's shapes: Gaussian inputs and a random teacher's outputs (labels
for ``--loss cross-entropy``), or a positive low-rank matrix for NMF.

Monitored laws: the model's closed-form laws of the gradient flow of the chosen geometry
(``gf_laws``: Euclidean; ``mirror_laws``: entropy metric), the momentum laws
e^{τt}Antisym(…) of linear nets along momentum flows (``momentum_laws``), and the discrete heavy
ball's exact β^{−k}⟨x_k − x_{k−1}, K x_k⟩ (``heavy_ball_laws``). The law the flow or optimizer keeps
exactly, if any, is the noise floor of the drift report. With ``--weight-decay λ`` the
gradient-flow laws are also monitored at e^{λt}θ (``…(e^Λθ)``, `rescaled_law`; (1 − lr·λ)^{−k} for
sgd, adamw and sign steps): the form P3's theorem says is conserved (MATH.md §2.10), the
reference of continuous runs, while the plain law decays. Sign descent and Adam keep no law: their
report shows the gradient-flow laws drifting.

``--sweep-lr`` reruns a discrete optimizer at each learning rate and fits the log–log slope of
each law's final drift against the step (MATH.md §5: 2 at a fixed number of steps, 1 at a fixed
time ``--t1``); ``--plot`` then draws drift against step size instead of drift against time.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import jax.numpy as jnp
import numpy as np

from conflow.cli.arguments import (
    FLOWS,
    add_json_argument,
    check_weight_decay,
    make_flow,
    model_from_args,
    seed,
)
from conflow.errors import InputError

OPTIMIZERS = ("sgd", "heavy-ball", "nesterov", "adam", "adamw", "sign", "mirror")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``simulate`` subcommand."""
    p = subparsers.add_parser(
        "simulate", help="integrate a training flow or run an optimizer and report law drift",
        description="Run a continuous flow (default) or a discrete optimizer (--optimizer) on "
                    "synthetic data and report the drift of the model's conservation laws.")
    p.add_argument("model", help="linear, relu, factorization, nmf, icnn, product")
    p.add_argument("dims", help="comma-separated dimensions, e.g. 3,4,2")
    p.add_argument("--bias", action="store_true", help="biases on hidden neurons (relu, icnn)")
    p.add_argument("--flow", default="gradient", choices=FLOWS,
                   help="continuous flow (default gradient); momentum: θ'' + τθ' = −∇L")
    p.add_argument("--metric", default=None, choices=("euclidean", "entropy"),
                   help="default: entropy for nmf/icnn, euclidean otherwise")
    p.add_argument("--tau", type=float, default=None, help="momentum damping τ (default 1)")
    p.add_argument("--weight-decay", type=float, default=None, metavar="λ",
                   help="weight decay λ ≥ 0: θ' + λθ = −∇L (continuous), or the optimizer's "
                        "(sgd, heavy-ball, adamw, sign)")
    p.add_argument("--optimizer", default=None, choices=OPTIMIZERS,
                   help="run this discrete optimizer instead of the continuous flow")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate / step δ (default 0.05; 0.01 for adam, adamw, sign)")
    p.add_argument("--mu", type=float, default=None,
                   help="heavy-ball / mirror mass μ in μθ'' + νθ' = −∇L (heavy-ball default 1)")
    p.add_argument("--nu", type=float, default=1.0, help="friction ν (default 1)")
    p.add_argument("--beta", type=float, default=None,
                   help="raw heavy-ball momentum β (then --lr is α; no flow mapping)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1000)")
    when.add_argument("--t1", type=float, default=None,
                      help="final time (default 10); with --optimizer: steps = t1 / lr")
    p.add_argument("--samples", type=int, default=64, help="synthetic data points (default 64)")
    p.add_argument("--batch-size", type=int, default=None, help="minibatch size (default: full)")
    p.add_argument("--loss", default="square", choices=("square", "cross-entropy"))
    p.add_argument("--activation", default=None, choices=("relu", "tanh"),
                   help="hidden activation of relu / icnn models (default relu)")
    p.add_argument("--t0", type=float, default=None,
                   help="continuous flows: start time (default 0; 0.001 for nesterov, which needs "
                        "t0 > 0)")
    p.add_argument("--velocity-scale", type=float, default=0.0,
                   help="momentum flows: θ'(0) Gaussian with this scale (default 0)")
    p.add_argument("--every", type=int, default=None,
                   help="record the laws every k steps (default: about 100 records)")
    p.add_argument("--saves", type=int, default=101,
                   help="continuous flows: number of save times (default 101)")
    p.add_argument("--solver", default="tsit5", choices=("tsit5", "dopri5", "dopri8"))
    p.add_argument("--rtol", type=float, default=1e-8)
    p.add_argument("--atol", type=float, default=1e-10)
    p.add_argument("--no-error-estimate", action="store_true",
                   help="continuous flows: skip the rerun at 10x tighter tolerances")
    p.add_argument("--sweep-lr", default=None,
                   help="comma-separated learning rates: drift vs step size (discrete only)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--plot", default=None, metavar="FILE",
                   help="write a figure (drift vs time, or vs step size with --sweep-lr)")
    add_json_argument(p)
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", help="always show a progress bar")
    bar.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    return p


# ---------------------------------------------------------------------------------------------


def synthetic_data(model, samples: int, seed: int, loss: str = "square",
                   activation: str | None = None) -> Any:
    """Data of the model's shapes: ``(x, y)`` with x ~ N(0, I) and y a random teacher's output
    (argmax labels for cross-entropy), or for NMF a positive rank-r matrix + 0.001."""
    from conflow.training.problem import forward_fn, init_params

    rng = np.random.default_rng(seed + 10_000)
    teacher = init_params(model, seed + 20_000)
    g = forward_fn(model, activation)
    if not model.takes_inputs:  # a factorisation target (NMF): positive, rank r
        if loss != "square":
            raise InputError(f"{model.name} uses the square loss")
        return jnp.asarray(np.asarray(g(teacher, None)) + 1e-3)
    x = rng.standard_normal((samples, model.input_dim))
    y = np.asarray(g(teacher, jnp.asarray(x)))
    if loss == "cross-entropy":
        if y.shape[-1] < 2:
            raise InputError("cross-entropy needs at least 2 outputs")
        return jnp.asarray(x), jnp.asarray(np.argmax(y, axis=-1))
    y = y + 0.1 * rng.standard_normal(y.shape)
    return jnp.asarray(x), jnp.asarray(y)


def _gf_laws(model, metric: str):
    from conflow.flows import GradientFlow
    from conflow.reference.closed_forms import model_laws

    try:
        return model_laws(model, GradientFlow(metric))
    except InputError:
        return None


def _continuous_monitors(model, flow, activation=None) -> tuple[dict, str | None]:
    """Laws to monitor along a continuous flow, and the one the flow keeps (the reference)."""
    from conflow.reference.closed_forms import has_momentum_laws, model_laws
    from conflow.training.monitors import rescaled_law

    mons, ref = {}, None
    if activation not in (None, "relu"):  # the closed forms need a homogeneous activation
        law = _gf_laws(model, flow.metric_name)
        return ({"relu_laws": law} if law is not None else {}), None
    if flow.locally_constant:  # sign flow: the gradient-flow laws, kept by nothing
        law = _gf_laws(model, "euclidean")
        return ({"gf_laws": law} if law is not None else {}), None
    if not flow.has_velocity:
        name = "mirror_laws" if flow.metric_name == "entropy" else "gf_laws"
        law = _gf_laws(model, flow.metric_name)
        if law is not None:
            mons[name], ref = law, name
            if flow.has_time:  # weight decay: kept at e^{Λ(t)}θ, decays as it is
                ref = f"{name}(e^Λθ)"
                mons[ref] = rescaled_law(law, flow.weight_decay, name=ref)
        return mons, ref
    law = _gf_laws(model, flow.metric)
    if law is not None:
        mons["mirror_laws" if flow.metric == "entropy" else "gf_laws"] = law
    if has_momentum_laws(model) and flow.metric == "euclidean":
        mons["momentum_laws"], ref = model_laws(model, flow), "momentum_laws"
    return mons, ref


def _discrete_monitors(model, name: str, metric: str, beta: float | None,
                       activation=None, weight_decay: float | None = None,
                       lr: float | None = None) -> tuple[dict, str | None]:
    from conflow.flows import MomentumFlow
    from conflow.reference.closed_forms import has_momentum_laws, linear_momentum_laws
    from conflow.training.monitors import rescaled_law

    mons, ref = {}, None
    if weight_decay and name in ("sgd", "adamw", "sign") and activation in (None, "relu"):
        law = _gf_laws(model, metric)  # decoupled decay: x_{k+1} = (1 − lr·λ)x_k − lr·u_k
        if law is not None:
            mons["gf_laws"] = law
            mons["gf_laws(e^Λθ)"] = rescaled_law(law, weight_decay, lr=lr, name="gf_laws(e^Λθ)")
        return mons, None
    if activation not in (None, "relu"):  # not laws of a tanh net: monitored, never a reference
        law = _gf_laws(model, "entropy" if name == "mirror" else metric)
        return ({"relu_laws": law} if law is not None else {}), None
    if name == "mirror":
        law = _gf_laws(model, "entropy")
        if law is not None:
            mons["mirror_laws"] = law
            ref = "mirror_laws"  # the Euler mirror step keeps them exactly (μ = 0)
        return mons, ref
    law = _gf_laws(model, metric)
    if law is not None:
        mons["gf_laws"] = law
    if name == "heavy-ball" and beta and has_momentum_laws(model):
        unit = MomentumFlow(1.0)  # time factor = s

        def heavy_ball_laws(params, velocity, k):
            z = jnp.concatenate([(beta ** (-k))[None], model.flatten(params),
                                 model.flatten(velocity)])
            return linear_momentum_laws(z, model, unit)

        mons["heavy_ball_laws"], ref = heavy_ball_laws, "heavy_ball_laws"
    return mons, ref


def _default_every(steps: int) -> int:
    target = max(1, steps // 100)
    for k in range(target, 0, -1):
        if steps % k == 0:
            return k
    return 1


def _progress(args) -> bool:
    if args.no_progress:
        return False
    return bool(args.progress or sys.stderr.isatty())


def _parse_lrs(text: str) -> list[float]:
    try:
        lrs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--sweep-lr must be comma-separated numbers, got {text!r}") from None
    if len(lrs) < 2 or min(lrs) <= 0:
        raise InputError(f"--sweep-lr needs at least two positive learning rates, got {text!r}")
    return lrs


def run(args) -> int:
    """Run ``conflow simulate``; 0 on success."""
    from conflow.training.drift import loglog_slope

    model, metric = model_from_args(args)
    if args.samples < 1:
        raise InputError(f"--samples must be >= 1, got {args.samples}")
    if args.activation is not None and model.activation is None:
        raise InputError(f"--activation applies to relu and icnn, not {model.name}")
    if args.loss == "cross-entropy" and not model.takes_inputs:
        raise InputError(f"{model.name} uses the square loss")
    if args.velocity_scale < 0:
        raise InputError(f"--velocity-scale must be >= 0, got {args.velocity_scale}")
    data = synthetic_data(model, args.samples, args.seed, args.loss, args.activation)
    from conflow.training.problem import init_params

    params0 = init_params(model, args.seed)
    payload: dict[str, Any] = {"model": model.name, "dims": list(model.dims), "bias": model.bias,
                               "D": model.D, "samples": args.samples, "seed": args.seed}

    if args.optimizer is None:
        for flag in ("lr", "mu", "beta", "batch_size", "steps", "sweep_lr", "every"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag.replace('_', '-')} applies to --optimizer runs only")
        result, report = _run_continuous(args, model, metric, data, params0)
        payload.update(mode="continuous", flow=result.flow, metric=metric, t1=float(
            result.times[-1]), solver=result.solver, rtol=result.rtol, atol=result.atol,
            solver_steps=result.stats["num_accepted_steps"],
            rejected_steps=result.stats["num_rejected_steps"], seconds=result.seconds,
            drift=report.to_json())
        text = [result.summary(), report.summary(), *result.notes]
        payload["notes"] = result.notes
        if args.plot:
            from conflow.training.plots import plot_drift

            plot_drift(report, path=args.plot, title=f"{model.label}: {result.flow}")
            payload["plot"] = args.plot
            text.append(f"figure: {args.plot}")
    else:
        if args.flow != "gradient" or args.tau is not None:
            raise InputError("--flow / --tau describe continuous flows; with --optimizer use "
                             "--lr, --mu, --nu, --beta")
        check_weight_decay(args.weight_decay)
        if args.velocity_scale or args.t0 is not None:
            raise InputError("--velocity-scale and --t0 apply to continuous flows")
        lrs = _parse_lrs(args.sweep_lr) if args.sweep_lr else [None]
        runs = [_run_discrete(args, model, metric, data, params0, lr) for lr in lrs]
        text = []
        for result, report, info in runs:
            text += [result.summary(), report.summary()]
        result, report, info = runs[-1]
        payload.update(mode="discrete", optimizer=result.optimizer, metric=metric,
                       steps=int(result.steps[-1]), batch_size=args.batch_size,
                       step_time=info["step_time"], t1=float(result.times[-1]),
                       seconds=sum(r[0].seconds for r in runs))
        if args.sweep_lr:
            laws = list(report.laws)
            drifts = {name: [r[1].laws[name].max_relative for r in runs] for name in laws}
            slopes = {}
            for name in laws:
                try:
                    slopes[name] = loglog_slope(lrs, drifts[name])
                except InputError:
                    slopes[name] = None
            payload["sweep"] = {"lrs": lrs, "steps": [int(r[0].steps[-1]) for r in runs],
                                "max_relative_drift": drifts, "slopes": slopes}
            for name in laws:
                s = "n/a" if slopes[name] is None else f"{slopes[name]:.2f}"
                text.append(f"{name}: drift ∝ lr^{s} over lr ∈ {lrs}"
                            + (" (fixed time)" if args.t1 is not None else " (fixed steps)"))
            if args.plot:
                from conflow.training.plots import plot_drift_vs_step

                plottable = {k: v for k, v in drifts.items()
                             if slopes[k] is not None and min(v) > 0}
                if not plottable:
                    raise InputError("no law with positive drift to plot")
                plot_drift_vs_step(lrs, plottable, path=args.plot, xlabel="learning rate",
                                   ylabel="max relative drift",
                                   title=f"{model.label}: {args.optimizer}"
                                         + (f", t1 = {args.t1:g}" if args.t1 is not None
                                            else f", {int(result.steps[-1])} steps"))
        else:
            payload["drift"] = report.to_json()
            if args.plot:
                from conflow.training.plots import plot_drift

                plot_drift(report, path=args.plot, title=f"{model.label}: {result.optimizer}")
        if args.plot:
            payload["plot"] = args.plot
            text.append(f"figure: {args.plot}")
    if args.json:
        print(json.dumps(payload))
    else:
        print("\n".join(text))
    return 0


def _run_continuous(args, model, metric, data, params0):
    from conflow.training.drift import drift_report
    from conflow.training.simulate import simulate

    flow = make_flow(args.flow, args.metric if args.flow == "sign" else metric,
                     args.tau if args.flow == "momentum" else None, default_tau=1.0,
                     weight_decay=args.weight_decay)
    flow.validate(model)
    monitors, ref = _continuous_monitors(model, flow, args.activation)
    t1 = 10.0 if args.t1 is None else args.t1
    velocity0 = None
    if flow.has_velocity and args.velocity_scale:
        rng = np.random.default_rng(args.seed + 30_000)
        velocity0 = {k: jnp.asarray(args.velocity_scale * rng.standard_normal(v.shape))
                     for k, v in params0.items()}
    if args.saves < 2:
        raise InputError(f"--saves must be >= 2, got {args.saves}")
    result = simulate(model, flow, params0, data, t1, saveat=args.saves, monitors=monitors,
                      velocity0=velocity0, t0=args.t0, loss=args.loss, activation=args.activation,
                      solver=args.solver, rtol=args.rtol, atol=args.atol,
                      progress=_progress(args), estimate_error=not args.no_error_estimate)
    return result, drift_report(result, reference=ref)


def _run_discrete(args, model, metric, data, params0, lr):
    from conflow.training.drift import drift_report
    from conflow.training.optimizers import make_optimizer, momentum_coefficients, train

    lr = lr if lr is not None else (args.lr if args.lr is not None else
                                    (0.01 if args.optimizer in ("adam", "adamw", "sign")
                                     else 0.05))
    if args.optimizer == "mirror" and not model.positive_mask.any():
        raise InputError(f"--optimizer mirror needs a model with positive blocks (nmf, icnn), "
                         f"not {model.name}")
    if args.optimizer == "mirror" and metric != "entropy":
        raise InputError("--optimizer mirror is the entropy-metric step: drop --metric euclidean")
    positive = {b.name: b.positive for b in model.blocks}
    tx, step_time, label = make_optimizer(args.optimizer, lr, mu=args.mu, nu=args.nu,
                                          beta=args.beta, positive=positive,
                                          weight_decay=args.weight_decay)
    beta = None
    if args.optimizer == "heavy-ball":
        beta = args.beta if args.beta is not None else momentum_coefficients(
            lr, 1.0 if args.mu is None else args.mu, args.nu)[1]
    if args.t1 is not None:
        if args.t1 <= 0:
            raise InputError(f"--t1 must be > 0, got {args.t1}")
        steps = max(1, int(round(args.t1 / step_time)))
    else:
        steps = 1000 if args.steps is None else args.steps
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    every = args.every if args.every is not None else _default_every(steps)
    decay = args.weight_decay
    if args.optimizer == "adamw" and decay is None:
        from conflow.training.optimizers import ADAMW_DEFAULT_DECAY

        decay = ADAMW_DEFAULT_DECAY
    monitors, ref = _discrete_monitors(model, args.optimizer, metric, beta, args.activation,
                                       weight_decay=decay, lr=lr)
    if args.optimizer == "mirror" and args.mu:
        ref = None  # mirror heavy ball keeps no law exactly
    result = train(model, tx, params0, data, steps, every=every, monitors=monitors,
                   batch_size=args.batch_size, key=args.seed, step_time=step_time,
                   loss=args.loss, activation=args.activation, progress=_progress(args),
                   label=label)
    if not np.all(np.isfinite(result.loss)):
        raise InputError(f"{label} diverged (non-finite loss); lower --lr")
    return result, drift_report(result, reference=ref), {"step_time": step_time}
