"""`count_laws`: the number of independent conservation laws of a model under a flow.

By Frobenius (MATH.md §1.5), near a generic point there are exactly

    N = state_dim − dim Lie(W)(z)

independent conservation laws, where W is the flow's generator family (MATH.md §1.3, §3.2, §4.1).
The count is computed blind by `conflow.trace.lie_trace`; closed-form laws of the literature are
never consulted.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from .errors import InputError
from .flows import GradientFlow, MomentumFlow
from .models.base import Model
from .rank import DEFAULT_MIN_GAP
from .trace import OK, LieTrace, lie_trace

METHODS = ("auto", "numeric", "exact", "both")
# method="auto" uses the exact engine for momentum flows up to this state dimension (D ≤ 100).
EXACT_AUTO_MAX_STATE = 201
DISAGREE = "disagree"


@dataclasses.dataclass(frozen=True)
class LawCount:
    """How many conservation laws a model has under a flow, with the evidence.

    Attributes:
        model: architecture label, e.g. ``linear[3,4,2]``.
        dims: the architecture's dims.
        flow: ``"gradient"``, ``"momentum"`` or ``"nesterov"``; ``tau`` the damping if any.
        metric: ``"euclidean"``, ``"entropy"`` or ``"custom"``.
        method: ``"numeric"`` (autodiff + SVD), ``"exact"`` (polynomial brackets mod p) or
            ``"both"`` (both, cross-checked).
        D: number of parameters.
        state_dim: dimension of the state space (D for gradient flows, 2D + 1 for momentum).
        dim_lie: dim Lie(W)(z) at generic points (``None`` unless status is ``ok``).
        n_laws: state_dim − dim_lie (``None`` unless status is ``ok``: no guess is given).
        status: ``ok``, ``ambiguous``, ``not_converged``, or ``disagree`` (the numeric and exact
            engines differ: a bug in one of them); ``reason`` says why when not ok.
        trace: the numeric `LieTrace` (ranks per level, singular values, points), if computed.
        exact: the `ExactTrace` (primes, ranks, failure bound), if computed.
    """

    model: str
    dims: tuple[int, ...]
    flow: str
    tau: float | None
    metric: str
    method: str
    D: int
    state_dim: int
    dim_lie: int | None
    n_laws: int | None
    status: str
    reason: str
    depth: int
    seconds: float
    trace: LieTrace | None = dataclasses.field(default=None, repr=False)
    exact: Any = dataclasses.field(default=None, repr=False)

    @property
    def gap(self) -> float | None:
        """σ_r / σ_{r+1} of the numeric count (``None`` for an exact-only count)."""
        return None if self.trace is None else self.trace.gap

    @property
    def points(self) -> int:
        """Generic points evaluated: the numeric engine's, else the exact engine's (one per
        prime)."""
        return self.trace.points.shape[0] if self.trace is not None else len(self.exact.runs)

    @property
    def n_agree(self) -> int:
        return 0 if self.trace is None else self.trace.n_agree

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the command-line contract (DESIGN.md)."""
        out: dict[str, Any] = {
            "model": self.model, "dims": list(self.dims), "flow": self.flow, "tau": self.tau,
            "metric": self.metric, "method": self.method, "D": self.D,
            "state_dim": self.state_dim, "dim_lie": self.dim_lie, "n_laws": self.n_laws,
            "status": self.status, "reason": self.reason, "depth": self.depth,
            "gap": None, "points": self.points, "seconds": self.seconds,
        }
        if self.trace is not None:
            t = self.trace
            out.update({
                "gap": None if not np.isfinite(t.gap) else t.gap,
                "sigma_r": t.sigma_r,
                "sigma_r1": t.sigma_r1,
                "sigma_kept_tail": list(t.kept_tail),
                "sigma_dropped_head": list(t.dropped_head),
                "ranks_per_level": [list(r) for r in t.ranks],
                "points_agreeing": t.n_agree,
                "point_dims": list(t.point_dims),
                "numeric_depth": t.depth,
                "dtype": t.dtype,
                "algorithm": t.algorithm,
            })
        if self.exact is not None:
            e = self.exact
            out["exact"] = {
                "dim_lie": e.dim, "status": e.status, "ranks_per_level": list(e.ranks),
                "depth": e.depth, "primes": [str(p) for p in e.primes],
                "failure_bound": e.failure_bound, "brackets": e.n_brackets,
                "seconds": e.seconds,
            }
        return out

    def summary(self) -> str:
        """A few human-readable lines."""
        head = (
            f"{self.model}: {self.n_laws} conservation laws"
            if self.status == OK
            else f"{self.model}: {self.status.upper()} ({self.reason})"
        )
        flow = self.flow + (f" τ={self.tau:g}" if self.tau is not None else "")
        lines = [
            head,
            f"  flow {flow} ({self.metric}), D = {self.D}, state dim = {self.state_dim}, "
            f"dim Lie(W)(z) = {self.dim_lie}, method {self.method}, {self.seconds:.2f} s",
        ]
        if self.trace is not None:
            t = self.trace
            fmt = lambda xs: " ".join(f"{x:.2e}" for x in xs) or "-"  # noqa: E731
            ranks = " → ".join(str(r[0]) if len(set(r)) == 1 else str(r) for r in t.ranks)
            lines += [
                f"  numeric ({t.algorithm}, {t.dtype}): rank per level {ranks} (depth {t.depth})",
                f"  σ around the cut: {fmt(t.kept_tail)} | {fmt(t.dropped_head)}   "
                f"gap {t.gap:.2e}; {t.n_agree}/{t.points.shape[0]} points agree",
            ]
        if self.exact is not None:
            e = self.exact
            lines.append(
                f"  exact: rank per level {' → '.join(map(str, e.ranks))} (depth {e.depth}), "
                f"{len(e.primes)} primes agree: {e.status == OK}, "
                f"failure probability ≤ {e.failure_bound:.1e}"
            )
        return "\n".join(lines)


def _is_polynomial(model: Model) -> bool:
    from .exact import polynomial_form

    try:
        polynomial_form(model.phi, model.D)
    except InputError:
        return False
    return True


def count_laws(
    model: Model,
    flow: Any = None,
    *,
    method: str = "auto",
    points: int = 3,
    seed: int = 0,
    max_depth: int | None = None,
    rtol: float | None = None,
    min_gap: float = DEFAULT_MIN_GAP,
    devices: int | None = None,
    dtype: str = "float64",
    algorithm: str = "auto",
) -> LawCount:
    """Count the conservation laws of ``model`` under ``flow`` (default: Euclidean gradient flow).

    N = state_dim − dim Lie(W)(z) at generic points, computed blind by

    - ``"numeric"``: brackets by autodiff at ``points`` random points, SVD rank with its gap
      (`lie_trace`); ``ambiguous`` when points disagree or the gap is below ``min_gap``;
    - ``"exact"``: polynomial brackets, ranks modulo two 61-bit primes (`conflow.exact`); needs a
      polynomial φ and a named metric;
    - ``"both"``: both, and status ``disagree`` if they differ (a bug in one of the engines);
    - ``"auto"`` (default): numeric for gradient flows; exact for momentum flows of small
      polynomial models (state dim ≤ ``EXACT_AUTO_MAX_STATE``: their Lie algebras need brackets
      of depth 6–10, and the exact engine's modular matrices grow as state_dim² × generators),
      numeric otherwise.

    The numeric engine shards its bracket batches over ``devices`` local devices (default all),
    evaluates them in ``dtype`` (float64; float32 only on request, with a warning) and cuts the
    levels by ``algorithm`` (``dense``, ``streamed`` or ``auto``; see `lie_trace`).
    ``max_depth`` defaults to 6 for the numeric engine (each level roughly doubles the compiled
    program) and 30 for the exact one; a trace still growing there is ``not_converged``.
    """
    t0 = time.perf_counter()
    flow = GradientFlow() if flow is None else flow
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if points < 1:
        raise InputError(f"points must be >= 1, got {points}")
    flow.validate(model)
    if method == "auto":
        momentum = isinstance(flow, MomentumFlow)
        exact_ok = (momentum and isinstance(flow.metric, str)
                    and flow.state_dim(model) <= EXACT_AUTO_MAX_STATE and _is_polynomial(model))
        method = "exact" if exact_ok else "numeric"

    trace = exact = None
    if method in ("numeric", "both"):
        z = flow.sample_points(model, seed, points)
        trace = lie_trace(flow.family(model), z, seed=seed, max_depth=max_depth or 6,
                          rtol=rtol, min_gap=min_gap, devices=devices, dtype=dtype,
                          algorithm=algorithm)
    if method in ("exact", "both"):
        exact = _exact_trace(model, flow, seed, max_depth or 30)

    dim, status, reason = _verdict(trace, exact)
    n = flow.state_dim(model)
    return LawCount(
        model=model.label,
        dims=tuple(model.dims),
        flow=flow.name,
        tau=getattr(flow, "tau", None),
        metric=flow.metric_name,
        method=method,
        D=model.D,
        state_dim=n,
        dim_lie=dim,
        n_laws=None if dim is None else n - dim,
        status=status,
        reason=reason,
        depth=max(t.depth for t in (trace, exact) if t is not None),
        seconds=time.perf_counter() - t0,
        trace=trace,
        exact=exact,
    )


def _exact_trace(model: Model, flow: Any, seed: int, max_depth: int):
    from .exact import exact_count_laws

    if not isinstance(flow.metric, str):
        raise InputError("the exact method needs a named metric (euclidean or entropy)")
    tau = getattr(flow, "tau", None)
    return exact_count_laws(model, flow=flow.name, tau=0 if tau is None else tau,
                            metric=flow.metric, seed=seed, max_depth=max_depth)


def _verdict(trace: LieTrace | None, exact: Any) -> tuple[int | None, str, str]:
    """Combine the engines' answers: (dim, status, reason)."""
    if exact is None:
        return trace.dim, trace.status, trace.reason
    exact_reason = {
        "disagree": "the two primes give different dimensions "
                    f"{tuple(r.dim for r in exact.runs)}",
        "not_converged": f"the exact trace was still growing at depth {exact.depth}",
    }.get(exact.status, "")
    if trace is None:
        return exact.dim, exact.status, exact_reason
    if exact.status != OK:
        return None, exact.status, exact_reason
    if trace.status != OK:
        return None, trace.status, trace.reason
    if trace.dim != exact.dim:
        return None, DISAGREE, (f"BUG: the numeric engine gives dim {trace.dim}, the exact engine "
                                f"{exact.dim}; one of them is wrong, please report it")
    return trace.dim, OK, ""
