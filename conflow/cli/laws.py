"""``conflow laws``: a basis of the polynomial conservation laws, compared with the count.

    conflow laws MODEL DIMS [--degree K] [--homogeneous] [--flow ...] [--tau T]
                 [--weight-decay λ] [--metric M] [--bias] [--seed S] [--no-count] [--all] [--json]

Prints a basis of the polynomial laws (families in matrix form, the rest as polynomials) and
compares their number of independent members with `count_laws`. Default degree
(`conflow.cli.arguments.default_degree`): 2 for gradient flows and τ = 0 momentum, 3 for τ > 0
(the law carries s = e^{τt}, MATH.md §1.7), 5 for Nesterov (t³ × a bilinear form), 4 for gradient
flows with weight decay (s² × a quadratic, s = e^{λt}, MATH.md §2.10). The sign flow has no
polynomial laws to search (they are piecewise): exit 2. Exit code 0, 2 on bad input.
"""

from __future__ import annotations

import json

from conflow.cli.arguments import (
    add_json_argument,
    add_model_arguments,
    degree_from_args,
    model_and_flow,
)


def add_parser(subparsers) -> None:
    """Add the ``laws`` subcommand."""
    lp = subparsers.add_parser("laws", help="polynomial conservation laws, compared with the count")
    add_model_arguments(lp)
    add_json_argument(lp)
    lp.add_argument("--degree", type=int, default=None,
                    help="maximal degree (default 2; 3 for momentum τ > 0; 5 for nesterov)")
    lp.add_argument("--homogeneous", action="store_true", help="degree exactly K")
    lp.add_argument("--no-count", action="store_true", help="skip the comparison with count")
    lp.add_argument("--all", action="store_true", help="print every law of the basis")


def run(args) -> int:
    """Run ``conflow laws``; 0 on success."""
    from conflow.laws.find import polynomial_laws

    model, flow = model_and_flow(args)
    basis = polynomial_laws(model, flow, degree_from_args(args, flow),
                            homogeneous=args.homogeneous, seed=args.seed,
                            count=not args.no_count)
    print(json.dumps(basis.to_json()) if args.json else basis.summary(all_laws=args.all))
    return 0
