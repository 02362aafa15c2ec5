"""Arguments shared by the subcommands of ``conflow``: the parser class, the model / flow
arguments and their parsing.

Light on purpose: every command module imports it when the parser is built, so the models and
flows are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse

from conflow.errors import InputError

FLOWS = ("gradient", "momentum", "nesterov", "sign")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise InputError(message)


def seed(text: str) -> int:
    """argparse type of ``--seed``: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def size(text: str) -> int:
    """argparse type of ``--max-memory``: ``4G``, ``500M``, ``1.5T``, or bytes."""
    from conflow.laws.cost import parse_size

    try:
        return parse_size(text, "")
    except InputError:
        raise argparse.ArgumentTypeError(
            f"must be a size such as 4G or 500M, got {text!r}") from None


def duration(text: str) -> float:
    """argparse type of ``--time-limit``: ``90`` or ``90s`` (seconds), ``5m``, ``2h``."""
    from conflow.laws.cost import parse_duration

    try:
        return parse_duration(text, "")
    except InputError:
        raise argparse.ArgumentTypeError(
            f"must be a duration such as 90, 90s, 5m or 2h, got {text!r}") from None


def add_limit_arguments(p: argparse.ArgumentParser) -> None:
    """``--max-memory SIZE --time-limit DURATION``: the bounds of a count (`count_laws`)."""
    p.add_argument("--max-memory", type=size, default=None, metavar="SIZE",
                   help="memory the count may use, e.g. 4G or 500M (default: what the machine "
                        "has available). A count estimated above it runs with smaller batches "
                        "or the streamed algorithm, or is refused up front (exit 2) with the "
                        "estimate and the option that would fit")
    p.add_argument("--time-limit", type=duration, default=None, metavar="DURATION",
                   help="wall time of the count, e.g. 90, 90s, 5m, 2h: at the limit it stops "
                        "between levels (or blocks) and reports not_converged, keeping the "
                        "levels done")


def parse_dims(text: str) -> tuple[int, ...]:
    """``"3,4,4,3"`` → ``(3, 4, 4, 3)``; anything else is an `InputError`."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(p.lstrip("+").isdigit() for p in parts):
        raise InputError(f"dims must be comma-separated positive integers, got {text!r}")
    dims = tuple(int(p) for p in parts)
    if min(dims) < 1:
        raise InputError(f"dims must be positive integers, got {text!r}")
    return dims


def check_weight_decay(value: float | None) -> float | None:
    """``--weight-decay``: None, or a finite λ ≥ 0 (`InputError` otherwise)."""
    import math

    if value is not None and not (math.isfinite(value) and value >= 0):
        raise InputError(f"--weight-decay must be finite and >= 0, got {value}")
    return value


def make_flow(name: str, metric: str | None, tau: float | None, default_tau: float = 0.0,
              weight_decay: float | None = None):
    """The flow object for ``--flow``, ``--metric``, ``--tau`` and ``--weight-decay``
    (`conflow.flows.parse_flow`)."""
    from conflow.flows import parse_flow

    if check_weight_decay(weight_decay) is not None and name == "sign":
        raise InputError("--weight-decay applies to --flow gradient, momentum and nesterov, "
                         "not sign")
    if tau is not None and name != "momentum":
        raise InputError(f"--tau applies to --flow momentum only (not {name})")
    return parse_flow(name, tau=tau, metric=metric, default_tau=default_tau,
                      weight_decay=weight_decay)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``MODEL DIMS [--bias] [--flow] [--tau] [--weight-decay] [--metric] [--seed]``: shared by
    the subcommands."""
    p.add_argument("model", help="linear, relu, factorization, nmf, icnn, product, attention, "
                   "conv, softmax, resnet, transformer, mlp-relu|tanh|gelu|softplus|silu")
    p.add_argument("dims", help="comma-separated dimensions, e.g. 3,4,4,3")
    p.add_argument("--bias", action="store_true", help="biases on hidden neurons (relu, icnn)")
    p.add_argument("--flow", default="gradient", choices=FLOWS)
    p.add_argument("--tau", type=float, default=None,
                   help="momentum damping τ ≥ 0 in θ'' + τθ' = −∇L (default 0)")
    p.add_argument("--weight-decay", type=float, default=None, metavar="λ",
                   help="weight decay λ ≥ 0: θ' + λθ = −∇L (momentum: θ'' + τθ' + λθ = −∇L); "
                        "the state gains s = exp(λt)")
    p.add_argument("--metric", default=None, choices=("euclidean", "entropy"),
                   help="default: entropy for models with positive blocks (nmf, icnn)")
    p.add_argument("--seed", type=seed, default=0)


def add_json_argument(p: argparse.ArgumentParser) -> None:
    """``--json``: one JSON object on stdout instead of the text summary."""
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def model_from_args(args):
    """The `Model` and its default metric name for ``args.model``, ``args.dims``, ``args.bias``."""
    from conflow.models import get_model

    model = get_model(args.model, parse_dims(args.dims), bias=args.bias)
    metric = args.metric or ("entropy" if model.positive_mask.any() else "euclidean")
    return model, metric


def model_and_flow(args):
    """The `Model` and the validated flow object for the shared model arguments."""
    model, metric = model_from_args(args)
    if args.flow == "sign":  # the sign of the Euclidean gradient: no default metric
        metric = args.metric
    flow = make_flow(args.flow, metric, args.tau,
                     weight_decay=getattr(args, "weight_decay", None))
    flow.validate(model)
    return model, flow


def default_degree(flow) -> int:
    """Default ``--degree`` of ``laws`` and ``verify``: 2 (gradient, τ = 0), 3 (τ > 0:
    s·bilinear), 5 (Nesterov: t³·bilinear), 4 (gradient with weight decay: s²·quadratic)."""
    if not flow.has_velocity:
        return 4 if flow.has_time else 2
    if flow.tau is None:
        return 5
    return 3 if flow.tau else 2


def degree_from_args(args, flow) -> int:
    """``args.degree``, or `default_degree` for the flow when it is None; at least 1."""
    k = default_degree(flow) if args.degree is None else args.degree
    if k < 1:
        raise InputError(f"--degree must be >= 1, got {k}")
    return k
