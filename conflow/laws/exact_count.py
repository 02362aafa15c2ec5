"""`exact_count_laws`: the certified count of a model under a flow, with the exact engine.

φ's exact polynomials (`conflow.exact.polynomial_form`, or on an activation region
`conflow.exact.region_polynomial`) → the flow's polynomial generators
(`AbstractFlow.polynomial_fields`) → ranks of brackets modulo two 61-bit primes
(`conflow.exact.exact_lie_trace`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from conflow.exact import (
    DEFAULT_PRIMES,
    ExactTrace,
    exact_lie_trace,
    polynomial_form,
    region_polynomial,
)
from conflow.flows import AbstractFlow, GradientFlow
from conflow.models.base import Model
from conflow.precision import float64


@float64
def exact_count_laws(
    model: Model,
    flow: AbstractFlow | None = None,
    *,
    seed: int = 0,
    max_depth: int = 30,
    primes: Sequence[int] = DEFAULT_PRIMES,
    region: object = None,
) -> ExactTrace:
    """Extract φ's polynomials, build the flow's fields, run `exact_lie_trace` (``.n_laws``).

    Float constants of φ are read as the binary rationals they are (the count is that of the
    model with exactly these coefficients, as the numeric engine sees it). ``flow``: any flow
    whose fields are polynomial (default: Euclidean gradient flow).

    ``region``: a flat float64 θ0 of shape ``(D,)`` for a piecewise-polynomial φ (ReLU, leaky
    ReLU, abs, max pooling, …): φ is replaced by the polynomial it is on the activation region of
    θ0 (every switch fixed to its outcome at θ0, per input for a sampled model; see
    `region_polynomial`), and the count is that of φ at generic points of that region. The
    result's ``region`` records θ0 and the switches fixed. A switch tied at θ0 raises
    `InputError`; a piecewise φ without ``region`` raises `PiecewiseError`.
    """
    flow = GradientFlow() if flow is None else flow
    flow.validate(model)
    if region is None:
        polys, info = polynomial_form(model.phi, model.D), None
    else:
        form = region_polynomial(model.phi, model.D, region)
        polys, info = list(form.polys), form.region
    return count_polynomials(model, flow, polys, info, seed=seed, max_depth=max_depth,
                             primes=primes)


def count_polynomials(model: Model, flow: AbstractFlow, polys: Sequence, region_info=None, *,
                      seed: int = 0, max_depth: int = 30,
                      primes: Sequence[int] = DEFAULT_PRIMES) -> ExactTrace:
    """The exact count of ``model`` under ``flow`` from φ's polynomials already extracted
    (`exact_count_laws` without the extraction); ``region_info``: the `Region` they were
    extracted on, recorded in the result."""
    fields = flow.polynomial_fields(model, list(polys))
    trace = exact_lie_trace(fields, flow.state_dim(model), seed=seed, max_depth=max_depth,
                            primes=primes)
    return trace if region_info is None else dataclasses.replace(trace, region=region_info)
