"""The ``conflow laws`` and ``conflow verify`` subcommands (registered in `conflow.cli`).

    conflow laws MODEL DIMS [--degree K] [--homogeneous] [--flow ...] [--tau T] [--metric M]
                 [--bias] [--seed S] [--no-count] [--all] [--json]
    conflow verify MODEL DIMS --law EXPR [--flow ...] [--tau T] [--metric M] [--bias]
                   [--points N] [--seed S] [--degree K] [--no-known] [--simulate]
                   [--steps N] [--inits N] [--json]

``laws`` prints a basis of the polynomial laws (families in matrix form, the rest as polynomials)
and compares their number of independent members with `count_laws`. Default degree: 2 for
gradient flows and τ = 0 momentum, 3 for τ > 0 (the law carries s = e^{τt}, MATH.md §1.7), 5 for
Nesterov (t³ × a bilinear form).

``verify`` tests a law written over the parameter names (see `conflow.expressions`; momentum:
``dU1`` for U1', ``t`` for the time, ``s`` = e^{τt}). It also reports independence from the
polynomial laws of degree ``--degree`` (skip with ``--no-known``) and completeness against
`count_laws`. Exit code: 0 if the verdict is ``conserved``, 1 if ``not_conserved`` or
``inconclusive``, 2 on bad input.
"""

from __future__ import annotations

import json

from conflow.errors import InputError

def _common(p) -> None:
    from conflow.cli.main import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")


def add_parser(subparsers) -> None:
    """Add ``laws`` and ``verify`` (idempotent: `conflow.cli` lists this module under both
    names)."""
    if "laws" in subparsers.choices:
        return
    lp = subparsers.add_parser("laws", help="polynomial conservation laws, compared with the count")
    _common(lp)
    lp.add_argument("--degree", type=int, default=None,
                    help="maximal degree (default 2; 3 for momentum τ > 0; 5 for nesterov)")
    lp.add_argument("--homogeneous", action="store_true", help="degree exactly K")
    lp.add_argument("--no-count", action="store_true", help="skip the comparison with count")
    lp.add_argument("--all", action="store_true", help="print every law of the basis")
    lp.set_defaults(run=run_laws)

    vp = subparsers.add_parser("verify", help="test a hypothesised conservation law")
    _common(vp)
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
    vp.set_defaults(run=run_verify)


def run(args) -> int:
    """Entry point of both subcommands (dispatch on ``args.command``)."""
    return run_verify(args) if args.command == "verify" else run_laws(args)


def default_degree(flow) -> int:
    """2 (gradient, τ = 0), 3 (τ > 0: s·bilinear), 5 (Nesterov: t³·bilinear)."""
    if not flow.has_velocity:
        return 2
    if flow.tau is None:
        return 5
    return 3 if flow.tau else 2


def _degree(args, flow) -> int:
    k = default_degree(flow) if args.degree is None else args.degree
    if k < 1:
        raise InputError(f"--degree must be >= 1, got {k}")
    return k


def run_laws(args) -> int:
    from conflow.laws.find import polynomial_laws

    from conflow.cli.main import model_and_flow

    model, flow = model_and_flow(args)
    basis = polynomial_laws(model, flow, _degree(args, flow), homogeneous=args.homogeneous,
                            seed=args.seed, count=not args.no_count)
    print(json.dumps(basis.to_json()) if args.json else basis.summary(all_laws=args.all))
    return 0


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


def run_verify(args) -> int:
    from conflow.laws.expressions import compile_law, expression_names
    from conflow.laws.verify import CONSERVED, verify_law

    if args.points < 1:
        raise InputError(f"--points must be >= 1, got {args.points}")
    if args.steps < 4 or args.inits < 1:
        raise InputError("--steps must be >= 4 and --inits >= 1")
    from conflow.cli.main import model_and_flow

    model, flow = model_and_flow(args)
    law = compile_law(args.law, model, flow)  # every syntax / name error before any work
    known = None
    if not args.no_known:
        from conflow.laws.find import polynomial_laws

        known = polynomial_laws(model, flow, _degree(args, flow), seed=args.seed, count=False)
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
