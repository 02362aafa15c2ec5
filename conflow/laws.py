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

import jax
import numpy as np

from .errors import InputError
from .flows import GradientFlow
from .models.base import Model
from .rank import DEFAULT_MIN_GAP, DEFAULT_RTOL
from .trace import OK, LieTrace, lie_trace


@dataclasses.dataclass(frozen=True)
class LawCount:
    """How many conservation laws a model has under a flow, with the evidence.

    Attributes:
        model: architecture label, e.g. ``linear[3,4,2]``.
        dims: the architecture's dims.
        flow: ``"gradient"``, ``"momentum"`` or ``"nesterov"``.
        metric: ``"euclidean"``, ``"entropy"`` or ``"custom"``.
        D: number of parameters.
        state_dim: dimension of the state space (D for gradient flows, 2D + 1 for momentum).
        dim_lie: dim Lie(W)(z) at generic points (``None`` unless status is ``ok``).
        n_laws: state_dim − dim_lie (``None`` unless status is ``ok``: no guess is given).
        status: ``ok``, ``ambiguous`` or ``not_converged``; ``reason`` says why when not ok.
        trace: the full `LieTrace` (ranks per level, singular values around the cut, points).
    """

    model: str
    dims: tuple[int, ...]
    flow: str
    metric: str
    D: int
    state_dim: int
    dim_lie: int | None
    n_laws: int | None
    status: str
    reason: str
    gap: float
    depth: int
    points: int
    n_agree: int
    seconds: float
    trace: LieTrace = dataclasses.field(repr=False)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the command-line contract (DESIGN.md)."""
        t = self.trace
        return {
            "model": self.model,
            "dims": list(self.dims),
            "flow": self.flow,
            "metric": self.metric,
            "D": self.D,
            "state_dim": self.state_dim,
            "dim_lie": self.dim_lie,
            "n_laws": self.n_laws,
            "status": self.status,
            "reason": self.reason,
            "gap": None if not np.isfinite(self.gap) else self.gap,
            "sigma_r": t.sigma_r,
            "sigma_r1": t.sigma_r1,
            "sigma_kept_tail": list(t.kept_tail),
            "sigma_dropped_head": list(t.dropped_head),
            "depth": self.depth,
            "ranks_per_level": [list(r) for r in t.ranks],
            "points": self.points,
            "points_agreeing": self.n_agree,
            "point_dims": list(t.point_dims),
            "seconds": self.seconds,
        }

    def summary(self) -> str:
        """A few human-readable lines."""
        t = self.trace
        head = (
            f"{self.model}: {self.n_laws} conservation laws"
            if self.status == OK
            else f"{self.model}: {self.status.upper()} ({self.reason})"
        )
        fmt = lambda xs: " ".join(f"{x:.2e}" for x in xs) or "-"  # noqa: E731
        lines = [
            head,
            f"  flow {self.flow} ({self.metric}), D = {self.D}, state dim = {self.state_dim}, "
            f"dim Lie(W)(z) = {self.dim_lie if self.dim_lie is not None else t.point_dims}",
            f"  rank per level: {' → '.join(str(r[0]) if len(set(r)) == 1 else str(r) for r in t.ranks)}"
            f" (depth {self.depth})",
            f"  σ around the cut: {fmt(t.kept_tail)} | {fmt(t.dropped_head)}   gap {self.gap:.2e}",
            f"  {self.n_agree}/{self.points} points agree, {self.seconds:.2f} s",
        ]
        return "\n".join(lines)


def count_laws(
    model: Model,
    flow: Any = None,
    *,
    points: int = 3,
    seed: int = 0,
    max_depth: int = 10,
    rtol: float = DEFAULT_RTOL,
    min_gap: float = DEFAULT_MIN_GAP,
) -> LawCount:
    """Count the conservation laws of ``model`` under ``flow`` (default: Euclidean gradient flow).

    N = state_dim − dim Lie(W)(z), evaluated at ``points`` random generic points z drawn from
    ``seed``; ``ambiguous`` when points disagree or the singular-value gap is below ``min_gap``,
    ``not_converged`` when the trace still grows at ``max_depth``.
    """
    t0 = time.perf_counter()
    flow = GradientFlow() if flow is None else flow
    if points < 1:
        raise InputError(f"points must be >= 1, got {points}")
    key = jax.random.PRNGKey(seed)
    z = flow.sample_points(model, key, points)
    trace = lie_trace(
        flow.family(model), z, seed=seed, max_depth=max_depth, rtol=rtol, min_gap=min_gap
    )
    n = trace.state_dim
    return LawCount(
        model=model.label,
        dims=tuple(model.dims),
        flow=flow.name,
        metric=flow.metric_name,
        D=model.D,
        state_dim=n,
        dim_lie=trace.dim,
        n_laws=None if trace.dim is None else n - trace.dim,
        status=trace.status,
        reason=trace.reason,
        gap=trace.gap,
        depth=trace.depth,
        points=points,
        n_agree=trace.n_agree,
        seconds=time.perf_counter() - t0,
        trace=trace,
    )
