"""The ``conflow`` command: ``count``, ``reproduce`` and the subcommands of `EXTRA_COMMANDS`.

Exit codes: 0 on success (whatever the status of a count), 1 when ``reproduce`` finds a mismatch,
2 on bad input with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence

from conflow.errors import InputError

FLOWS = ("gradient", "momentum", "nesterov")

# Subcommands defined in their own modules: name -> module with add_parser(subparsers) and
# run(args) -> exit code.
EXTRA_COMMANDS: dict[str, str] = {
    "simulate": "conflow.cli.simulate",
    "laws": "conflow.cli.laws",
    "verify": "conflow.cli.laws",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise InputError(message)


def parse_dims(text: str) -> tuple[int, ...]:
    """``"3,4,4,3"`` → ``(3, 4, 4, 3)``; anything else is an `InputError`."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(p.lstrip("+").isdigit() for p in parts):
        raise InputError(f"dims must be comma-separated positive integers, got {text!r}")
    dims = tuple(int(p) for p in parts)
    if min(dims) < 1:
        raise InputError(f"dims must be positive integers, got {text!r}")
    return dims


def make_flow(name: str, metric: str, tau: float | None, default_tau: float = 0.0):
    """The flow object for ``--flow``, ``--metric`` and ``--tau`` (`conflow.flows.parse_flow`)."""
    from conflow.flows import parse_flow

    if tau is not None and name != "momentum":
        raise InputError(f"--tau applies to --flow momentum only (not {name})")
    return parse_flow(name, tau=tau, metric=metric, default_tau=default_tau)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``MODEL DIMS [--bias] [--flow] [--tau] [--metric] [--seed]``: shared by the subcommands."""
    p.add_argument("model", help="linear, relu, factorization, nmf, icnn, product, attention, "
                   "conv, softmax, resnet, transformer, mlp-relu|tanh|gelu|softplus|silu")
    p.add_argument("dims", help="comma-separated dimensions, e.g. 3,4,4,3")
    p.add_argument("--bias", action="store_true", help="biases on hidden neurons (relu, icnn)")
    p.add_argument("--flow", default="gradient", choices=FLOWS)
    p.add_argument("--tau", type=float, default=None,
                   help="momentum damping τ ≥ 0 in θ'' + τθ' = −∇L (default 0)")
    p.add_argument("--metric", default=None, choices=("euclidean", "entropy"),
                   help="default: entropy for models with positive blocks (nmf, icnn)")
    p.add_argument("--seed", type=int, default=0)


def model_from_args(args):
    """The `Model` and its default metric name for ``args.model``, ``args.dims``, ``args.bias``."""
    from conflow.models import get_model

    model = get_model(args.model, parse_dims(args.dims), bias=args.bias)
    metric = args.metric or ("entropy" if model.positive_mask.any() else "euclidean")
    return model, metric


def model_and_flow(args):
    """The `Model` and the validated flow object for the shared model arguments."""
    model, metric = model_from_args(args)
    flow = make_flow(args.flow, metric, args.tau)
    flow.validate(model)
    return model, flow


def _build_parser() -> argparse.ArgumentParser:
    from conflow.laws.count import METHODS
    from conflow.engine.trace import ALGORITHMS, DENSE_MAX_DIM

    parser = _Parser(prog="conflow", description="Conservation laws of training flows.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("count", help="count the conservation laws of a model under a flow")
    add_model_arguments(c)
    c.add_argument("--points", type=int, default=3, help="generic points (default 3)")
    c.add_argument("--max-depth", type=int, default=None,
                   help="deepest bracket level (default 6 numeric, 30 exact)")
    c.add_argument("--method", default="auto", choices=METHODS,
                   help="numeric (autodiff + SVD), exact (mod-p), both (cross-check), auto")
    c.add_argument("--exact", action="store_true", help="same as --method exact")
    c.add_argument("--devices", type=int, default=None,
                   help="shard the numeric engine over N devices (default: all)")
    c.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="numeric precision (float32 warns: the gap may not separate)")
    c.add_argument("--algorithm", default="auto", choices=ALGORITHMS,
                   help="numeric linear algebra: dense (one SVD per level), streamed (blocks "
                        "added to a trace basis, O(D r) memory), auto (streamed above "
                        f"state dim {DENSE_MAX_DIM})")
    c.add_argument("--coordinator", default=None,
                   help="HOST:PORT of process 0 for a multi-process run (jax.distributed)")
    c.add_argument("--num-processes", type=int, default=None)
    c.add_argument("--process-id", type=int, default=None)
    c.add_argument("--json", action="store_true", help="one JSON object on stdout")
    c.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it shows on a terminal once a count runs 2 s)")
    c.add_argument("--no-escalate", action="store_true",
                   help="report an ambiguous numeric count without trying to settle it")

    r = sub.add_parser("reproduce", help="rerun the papers' experiments blind")
    from conflow.reference.reproduce import PAPERS

    r.add_argument("--paper", default="all", choices=PAPERS,
                   help="gradient (NeurIPS 2023), momentum (ICML 2024) or all (default)")
    r.add_argument("--limit", type=int, default=None, help="first N cases of each protocol")
    r.add_argument("--points", type=int, default=3)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--exact", action="store_true", help="count every case with the exact engine")
    r.add_argument("--json", action="store_true", help="one JSON object on stdout")
    r.add_argument("--out", default=None, help="also write the JSON results to this file")
    r.add_argument("--no-progress", action="store_true")

    for name, target in EXTRA_COMMANDS.items():
        module = importlib.import_module(target)
        module.add_parser(sub)  # each adds its subparser with set_defaults(run=module.run)
    return parser


def _count(args) -> int:
    from conflow.engine.distributed import initialize
    from conflow.laws.from_model_count import count_laws_from_model
    from conflow.models.from_model import SampledModel
    from conflow.laws.count import count_laws

    multi = initialize(args.coordinator, args.num_processes, args.process_id)
    model, flow = model_and_flow(args)
    if args.points < 1:
        raise InputError(f"--points must be >= 1, got {args.points}")
    if args.max_depth is not None and args.max_depth < 0:
        raise InputError(f"--max-depth must be >= 0, got {args.max_depth}")
    method = "exact" if args.exact else args.method
    options = dict(method=method, points=args.points, seed=args.seed, max_depth=args.max_depth,
                   devices=args.devices, dtype=args.dtype, algorithm=args.algorithm,
                   escalate=not args.no_escalate, progress=False if args.no_progress else None)
    if isinstance(model, SampledModel):  # counted on inputs: recount on twice as many
        sampled = count_laws_from_model(model, flow=flow, **options)
        extra = sampled.to_json()
        payload = {**sampled.best.to_json(), "n_laws": sampled.n_laws, "status": sampled.status,
                   "seconds": sampled.seconds,
                   "inputs": {k: extra[k] for k in ("stable", "warnings", "report", "recount")}}
        if payload["n_laws"] is None:
            payload["dim_lie"] = None
        text = sampled.summary()
    else:
        result = count_laws(model, flow, **options)
        payload, text = result.to_json(), result.summary()
    if not multi or args.process_id == 0:  # every process computes the same result
        print(json.dumps(payload) if args.json else text)
    return 0


def _reproduce(args) -> int:
    from tqdm import tqdm

    from conflow.reference import reproduce

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    t0 = time.perf_counter()
    total = reproduce.n_cases(args.paper, args.limit)
    rows = []
    bar = tqdm(total=total, disable=args.no_progress or None, file=sys.stderr, leave=False,
               desc="reproduce")
    if not args.json:
        print(reproduce.HEADER)
    method = "exact" if args.exact else "auto"
    for row in reproduce.run(args.paper, limit=args.limit, points=args.points, seed=args.seed,
                             method=method):
        rows.append(row)
        bar.update()
        if not args.json:
            bar.write(reproduce.format_row(row), file=sys.stdout)
    bar.close()
    summary = reproduce.summarise(rows, time.perf_counter() - t0)
    payload = {"paper": args.paper, "summary": summary, "rows": [r.to_json() for r in rows]}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(payload, fh, indent=1)
    if args.json:
        print(json.dumps(payload))
    else:
        for name, s in summary["protocols"].items():
            print(f"{name}: {s['matches']}/{s['cases']} match, {s['seconds']:.1f} s")
        print(f"total: {summary['matches']}/{summary['cases']} counts match the closed forms "
              f"in {summary['seconds']:.1f} s")
    return 0 if summary["matches"] == summary["cases"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        for item in argv:  # argparse would take "-1,2" for an option
            if item[:1] == "-" and item[1:2].isdigit() and "," in item:
                raise InputError(f"dims must be positive integers, got {item!r}")
        args = _build_parser().parse_args(argv)
        run = {"count": _count, "reproduce": _reproduce}.get(args.command) or args.run
        return run(args)
    except InputError as exc:
        print(f"conflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
