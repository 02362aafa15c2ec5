"""``conflow verify``: test a hypothesised conservation law.

    conflow verify MODEL DIMS --law EXPR [--flow ...] [--tau T] [--weight-decay λ] [--metric M]
                   [--bias] [--points N] [--seed S] [--degree K] [--no-known] [--simulate]
                   [--steps N] [--inits N] [--json]

The law is written over the parameter names (see `conflow.laws.expressions`; momentum: ``dU1``
for U1', ``t`` for the time, ``s`` = e^{τt}; weight decay: ``t`` and ``s`` = e^{λt}, e.g.
``s**2*(sum(U**2) - sum(V**2))``). The sign flow's laws are only piecewise polynomial, so no
polynomial laws are searched for it (``--no-known`` is implied; the count still runs). The command also reports independence from the
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
    simulation's drift table, or None. Under a constant weight decay λ, the gradient-flow law H
    is taken at e^{λt}θ (P3's theorem, MATH.md §2.10)."""
    import jax.numpy as jnp

    from conflow.flows import GradientFlow
    from conflow.reference.closed_forms import closed_form_laws

    if flow.locally_constant:
        return None
    if flow.has_time and not flow.has_velocity:
        lam = flow.weight_decay
        laws = None if callable(lam) else closed_form_laws(model, GradientFlow(flow.metric))
        if laws is None:
            return None
        return lambda t, params: laws(jnp.exp(lam * t) * model.from_pytree(params))[0]
    laws = closed_form_laws(model, flow)
    if laws is None:
        return None
    flat = model.from_pytree  # verify_law hands references the model's own parameters
    if not flow.has_velocity:
        return lambda params: laws(flat(params))[0]
    return lambda t, params, v: laws(jnp.concatenate([flow.time_variable(t)[None], flat(params),
                                                      flat(v)]))[0]


def run(args) -> int:
    """Run ``conflow verify``; 0 if the law is conserved, 1 otherwise."""
    from conflow.flows.decay import decay_json
    from conflow.laws.expressions import compile_law, expression_names
    from conflow.laws.verify import CONSERVED, verify_law

    if args.points < 1:
        raise InputError(f"--points must be >= 1, got {args.points}")
    if args.steps < 4 or args.inits < 1:
        raise InputError("--steps must be >= 4 and --inits >= 1")
    model, flow = model_and_flow(args)
    law = compile_law(args.law, model, flow)  # every syntax / name error before any work
    known = None
    if not args.no_known and not flow.locally_constant:
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
                    "weight_decay": decay_json(flow.weight_decay), "metric": flow.metric_name,
                    "known_laws": None if known is None else known.n_laws})
        print(json.dumps(out))
    else:
        print(verdict.summary(expression_names(model, flow)))
    return 0 if verdict.verdict == CONSERVED else 1


def _with_text(verdict, text: str):
    import dataclasses

    return dataclasses.replace(verdict, expression=text.strip())
