"""`exact_count_laws`: the certified count of a model under a flow, with the exact engine.

φ's exact polynomials (`conflow.exact.polynomial_form`, or on an activation region
`conflow.exact.region_polynomial`) → the flow's polynomial generators
(`AbstractFlow.polynomial_fields`) → ranks of brackets modulo two 61-bit primes
(`conflow.exact.exact_lie_trace`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from conflow.exact import (
    DEFAULT_PRIMES,
    ExactTrace,
    exact_lie_trace,
    polynomial_form,
    region_polynomial,
)
from conflow.exact.polynomial import TimeLimitError, time_bound
from conflow.flows import AbstractFlow, GradientFlow
from conflow.models.base import Model
from conflow.precision import float64
from conflow.status import Status


@float64
def exact_count_laws(
    model: Model,
    flow: AbstractFlow | None = None,
    *,
    seed: int = 0,
    max_depth: int = 30,
    primes: Sequence[int] = DEFAULT_PRIMES,
    region: object = None,
    time_limit: float | None = None,
    progress: bool | None = None,
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

    ``time_limit`` (seconds) bounds the extraction and the trace: past it the count stops with
    ``not_converged`` and a ``reason`` naming the limit. ``progress`` goes to `exact_lie_trace`.
    """
    flow = GradientFlow() if flow is None else flow
    flow.validate(model)
    t0 = time.perf_counter()
    try:
        with time_bound(time_limit):
            if region is None:
                polys, info = polynomial_form(model.phi, model.D), None
            else:
                form = region_polynomial(model.phi, model.D, region)
                polys, info = list(form.polys), form.region
    except TimeLimitError:
        return ExactTrace(dim=None, state_dim=flow.state_dim(model), status=Status.NOT_CONVERGED,
                          ranks=(), depth=0, primes=tuple(primes), failure_bound=1.0,
                          seconds=time.perf_counter() - t0, n_brackets=0, n_symbolic=0, runs=(),
                          reason=f"time limit of {time_limit:g} s reached while extracting φ's "
                                 "polynomials")
    left = None if time_limit is None else max(time_limit - (time.perf_counter() - t0), 1e-6)
    return name_time_limit(count_polynomials(model, flow, polys, info, seed=seed,
                                             max_depth=max_depth, primes=primes, time_limit=left,
                                             progress=progress), time_limit)


def name_time_limit(result: Any, time_limit: float | None) -> Any:
    """``result`` (a `LieTrace` or an `ExactTrace`) with a time-limit reason naming the caller's
    ``time_limit``, where the engine was given the time left of it."""
    if time_limit is None or not result.reason.startswith("time limit"):
        return result
    _, _, where = result.reason.partition(" reached")
    return dataclasses.replace(result, reason=f"time limit of {time_limit:g} s reached{where}")


def count_polynomials(model: Model, flow: AbstractFlow, polys: Sequence, region_info=None, *,
                      seed: int = 0, max_depth: int = 30,
                      primes: Sequence[int] = DEFAULT_PRIMES, time_limit: float | None = None,
                      progress: bool | None = None) -> ExactTrace:
    """The exact count of ``model`` under ``flow`` from φ's polynomials already extracted
    (`exact_count_laws` without the extraction); ``region_info``: the `Region` they were
    extracted on, recorded in the result."""
    fields = flow.polynomial_fields(model, list(polys))
    trace = exact_lie_trace(fields, flow.state_dim(model), seed=seed, max_depth=max_depth,
                            primes=primes, time_limit=time_limit, progress=progress)
    return trace if region_info is None else dataclasses.replace(trace, region=region_info)
