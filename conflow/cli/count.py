"""``conflow count``: count the conservation laws of a model under a flow.

    conflow count MODEL DIMS [--bias] [--flow ...] [--tau T] [--metric M] [--seed S]
                  [--points N] [--max-depth K] [--method auto|numeric|exact|both] [--exact]
                  [--devices N] [--dtype float64|float32] [--algorithm ...] [--linalg ...]
                  [--coordinator HOST:PORT --num-processes N --process-id I]
                  [--max-memory SIZE] [--time-limit DURATION]
                  [--json] [--no-progress] [--no-escalate]

Prints `CountResult.summary` (or its JSON); models counted on inputs (`SampledModel`) report the
recount on twice as many inputs under ``inputs``. Before a numeric count starts, its memory
and time are estimated (`conflow.laws.cost`): an estimate above a few seconds is printed on
stderr (``estimate: streamed engine, ~2.1 GB, ~7 min; …``), and a count that cannot fit the
memory (``--max-memory``, default what the machine has available) is refused up front with the
estimate and the option that would fit. ``--time-limit`` stops a count between levels
(status ``not_converged``, the levels done kept). Exit code 0 whatever the status of the count,
2 on bad input, 3 on a resource limit.
"""

from __future__ import annotations

import json

from conflow.cli.arguments import (
    add_json_argument,
    add_limit_arguments,
    add_model_arguments,
    model_and_flow,
)
from conflow.errors import InputError, check_int


def add_parser(subparsers) -> None:
    """Add the ``count`` subcommand."""
    from conflow.engine.trace import ALGORITHMS, DENSE_MAX_DIM, LINALG_ENV, LINALGS
    from conflow.laws.count import METHODS

    c = subparsers.add_parser("count", help="count the conservation laws of a model under a flow")
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
    c.add_argument("--linalg", default="auto", choices=LINALGS,
                   help="where the numeric levels are cut: device (the traces stay on the "
                        "accelerator), host (LAPACK on the CPU), auto (device on GPUs, host on "
                        f"CPUs; {LINALG_ENV} overrides)")
    c.add_argument("--coordinator", default=None,
                   help="HOST:PORT of process 0 for a multi-process run (jax.distributed)")
    c.add_argument("--num-processes", type=int, default=None)
    c.add_argument("--process-id", type=int, default=None)
    c.add_argument("--connect-timeout", type=float, default=None,
                   help="seconds to wait for the coordinator / the other processes (default 60)")
    add_limit_arguments(c)
    add_json_argument(c)
    c.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it shows on a terminal once a count runs 2 s)")
    c.add_argument("--no-escalate", action="store_true",
                   help="report an ambiguous numeric count without trying to settle it")


def run(args) -> int:
    """Run ``conflow count``; 0 on success."""
    from conflow.engine.distributed import initialize
    from conflow.laws.count import MIN_POINTS, count_laws
    from conflow.laws.from_model_count import count_laws_from_model
    from conflow.models.from_model import SampledModel

    check_int("--points", args.points, MIN_POINTS)
    if args.max_depth is not None:
        check_int("--max-depth", args.max_depth, 1)
    if args.exact and args.method not in ("auto", "exact"):
        raise InputError(f"--exact and --method {args.method} contradict each other")
    multi = initialize(args.coordinator, args.num_processes, args.process_id,
                       args.connect_timeout)
    model, flow = model_and_flow(args)
    method = "exact" if args.exact else args.method
    options = {"method": method, "points": args.points, "seed": args.seed,
               "max_depth": args.max_depth, "devices": args.devices, "dtype": args.dtype,
               "algorithm": args.algorithm, "linalg": args.linalg,
               "escalate": not args.no_escalate,
               "progress": False if args.no_progress else None,
               "max_memory": args.max_memory, "time_limit": args.time_limit}
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
