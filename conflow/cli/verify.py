"""``conflow verify``: test a hypothesised conservation law.

    conflow verify MODEL DIMS --law EXPR [--flow ...] [--tau T] [--metric M] [--bias]
                   [--points N] [--seed S] [--degree K] [--no-known] [--simulate]
                   [--steps N] [--inits N] [--json]

The law is written over the parameter names (see `conflow.laws.expressions`; momentum: ``dU1``
for U1', ``t`` for the time, ``s`` = e^{τt}). The command also reports independence from the
polynomial laws of degree ``--degree`` (default as ``conflow laws``; skip with ``--no-known``)
and completeness against `count_laws`. Exit code: 0 if the verdict is ``conserved``, 1 if
``not_conserved`` or ``inconclusive``, 2 on bad input.
"""

from __future__ import annotations

import json

from conflow.cli.arguments import (
    add_json_argument,
    add_model_arguments,
    degree_from_args,
    model_and_flow,
)
from conflow.errors import InputError


def add_parser(subparsers) -> None:
    """Add the ``verify`` subcommand."""
    vp = subparsers.add_parser("verify", help="test a hypothesised conservation law")
    add_model_arguments(vp)
    add_json_argument(vp)
    vp.add_argument("--law", required=True,
                    help='expression over the parameter names, e.g. "sum(U1[:,0]) - sum(U2[0,:])"')
    vp.add_argument("--points", type=int, default=32, help="generic points (default 32)")
    vp.add_argument("--degree", type=int, default=None,
                    help="degree of the known polynomial laws for independence (default as laws)")
    vp.add_argument("--no-known", action="store_true",
                    help="skip the independence / completeness report")
    vp.add_argument("--simulate", action="store_true", help="also integrate the flow (RK4)")
    vp.add_argument("--steps", type=int, default=100, help="RK4 steps (and twice that)")
    vp.add_argument("--inits", type=int, default=2, help="random initialisations per loss")


def _closed_form_reference(model, flow):
    """The first closed-form law of the literature (`conflow.reference`) as a reference for the
    simulation's drift table, or None."""
    import jax.numpy as jnp

    from conflow.reference.closed_forms import closed_form_laws

    laws = closed_form_laws(model, flow)
    if laws is None:
        return None
    if not flow.has_velocity:
        return lambda theta: laws(theta)[0]
    return lambda t, theta, v: laws(jnp.concatenate([flow.time_variable(t)[None], theta, v]))[0]


def run(args) -> int:
    """Run ``conflow verify``; 0 if the law is conserved, 1 otherwise."""
    from conflow.laws.expressions import compile_law, expression_names
    from conflow.laws.verify import CONSERVED, verify_law

    if args.points < 1:
        raise InputError(f"--points must be >= 1, got {args.points}")
    if args.steps < 4 or args.inits < 1:
        raise InputError("--steps must be >= 4 and --inits >= 1")
    model, flow = model_and_flow(args)
    law = compile_law(args.law, model, flow)  # every syntax / name error before any work
    known = None
    if not args.no_known:
        from conflow.laws.find import polynomial_laws

        known = polynomial_laws(model, flow, degree_from_args(args, flow), seed=args.seed,
                                count=False)
    reference = "auto" if known is not None and known.laws else _closed_form_reference(model, flow)
    verdict = verify_law(model, flow, law, known=known, count=None if args.no_known else True,
                         points=args.points, seed=args.seed, empirical=args.simulate,
                         steps=args.steps, inits=args.inits, reference=reference)
    verdict = _with_text(verdict, args.law)
    if args.json:
        out = verdict.to_json()
        out.update({"model": model.label, "flow": flow.name, "tau": flow.tau,
                    "metric": flow.metric_name,
                    "known_laws": None if known is None else known.n_laws})
        print(json.dumps(out))
    else:
        print(verdict.summary(expression_names(model, flow)))
    return 0 if verdict.verdict == CONSERVED else 1


def _with_text(verdict, text: str):
    import dataclasses

    return dataclasses.replace(verdict, expression=text.strip())
