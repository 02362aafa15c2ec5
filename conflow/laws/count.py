"""`count_laws`: the number of independent conservation laws of a model under a flow.

By Frobenius (MATH.md §1.5), near a generic point there are exactly

    N = state_dim − dim Lie(W)(z)

independent conservation laws, where W is the flow's generator family (MATH.md §1.3, §3.2, §4.1).
The count is computed blind by `conflow.engine.trace.lie_trace`; closed-form laws of the literature are
never consulted.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from conflow.engine.rank import DEFAULT_MIN_GAP
from conflow.engine.trace import AMBIGUOUS, OK, LieTrace, lie_trace
from conflow.errors import InputError, PiecewiseError, check_int
from conflow.exact import polynomial_form
from conflow.flows import AbstractFlow, parse_flow
from conflow.laws.exact_count import exact_count_laws
from conflow.laws.points import generic_points
from conflow.models.base import Model, check_model
from conflow.precision import float64
from conflow.status import Status

METHODS = ("auto", "numeric", "exact", "both")
#: The fewest generic points of a numeric count: their agreement is part of the evidence.
MIN_POINTS = 3
# method="auto" uses the exact engine for momentum flows up to this state dimension (D ≤ 100),
# and for gradient flows of tiny polynomial models (where it costs a few milliseconds and no
# rounding can hide a direction: generators 1e-14 from dependent are still told apart).
EXACT_AUTO_MAX_STATE = 201
EXACT_AUTO_MAX_GRADIENT_STATE = 24
EXACT_AUTO_MAX_OUTPUTS = 256
DISAGREE = Status.DISAGREE
# Escalation tries the exact engine on polynomial φ (or on a point's activation region) only up
# to these sizes: its modular Jacobian stacks grow as state_dim² × generators.
EXACT_ESCALATE_MAX_STATE = 200
EXACT_ESCALATE_MAX_OUTPUTS = 4096


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One try of a count: the first one, or a step of the escalation of an ambiguous one.

    Attributes:
        step: ``"numeric"``, ``"exact"``, ``"fresh points"`` or ``"exact on regions"``.
        detail: what was run (points, seed, primes, …).
        status: the try's status; ``n_laws`` its count when ``ok``.
        reason: why it was not ``ok`` (empty when ok).
        seconds: its wall time.
    """

    step: str
    detail: str
    status: Status
    n_laws: int | None
    reason: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def line(self) -> str:
        result = (f"{self.n_laws} law{'' if self.n_laws == 1 else 's'}" if self.status == OK
                  else f"{self.status}: {self.reason}")
        return f"{self.step} ({self.detail}): {result} [{self.seconds:.2f} s]"


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
        trace: the numeric `LieTrace` (ranks per level, singular values, points), if computed:
            the one that settled the count, or the last one tried.
        exact: the `ExactTrace` (primes, ranks, failure bound), if computed.
        attempts: every try, in order, when the first one was escalated (`Attempt`); empty
            when the first try settled the count.
        settled_by: the step that settled an escalated count (empty otherwise).
        points_redrawn: generic points redrawn because the model called them degenerate (a
            piecewise model's unit constant over the input sample, `conflow.laws.points`);
            ``redraw_reasons`` says why.
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
    status: Status
    reason: str
    depth: int
    seconds: float
    trace: LieTrace | None = dataclasses.field(default=None, repr=False)
    exact: Any = dataclasses.field(default=None, repr=False)
    attempts: tuple[Attempt, ...] = ()
    settled_by: str = ""
    points_redrawn: int = 0
    redraw_reasons: tuple[str, ...] = ()

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
                "sigma_uncertain": list(t.uncertain),
            })
        out["attempts"] = [a.to_json() for a in self.attempts]
        out["settled_by"] = self.settled_by
        out["points_redrawn"] = self.points_redrawn
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
            fmt = lambda xs: " ".join(f"{x:.2e}" for x in xs) or "-"
            ranks = " → ".join(str(r[0]) if len(set(r)) == 1 else str(r) for r in t.ranks)
            lines += [
                f"  numeric ({t.algorithm}, {t.dtype}): rank per level {ranks} (depth {t.depth})",
                f"  σ around the cut: {fmt(t.kept_tail)} | {fmt(t.dropped_head)}   "
                f"gap {t.gap:.2e}; {t.n_agree}/{t.points.shape[0]} points agree",
            ]
            if t.uncertain:
                lines.append(f"  σ the band does not settle: {fmt(t.uncertain)}")
        if self.exact is not None:
            e = self.exact
            lines.append(
                f"  exact: rank per level {' → '.join(map(str, e.ranks))} (depth {e.depth}), "
                f"{len(e.primes)} primes agree: {e.status == OK}, "
                f"failure probability ≤ {e.failure_bound:.1e}"
            )
        if self.points_redrawn:
            lines.append(f"  {self.points_redrawn} point draw(s) redrawn: degenerate "
                         f"({self.redraw_reasons[0]}{', …' if len(self.redraw_reasons) > 1 else ''})")
        if self.attempts:
            lines.append(f"  escalated: {'settled by ' + self.settled_by if self.settled_by else 'not settled'}")
            lines += [f"    {i}. {a.line()}" for i, a in enumerate(self.attempts, 1)]
        return "\n".join(lines)


def _auto_method(model: Model, flow: AbstractFlow) -> str:
    """``"exact"`` for polynomial φ under a named metric when the exact engine is the cheaper
    trustworthy engine: momentum flows up to state dim ``EXACT_AUTO_MAX_STATE`` (their Lie
    algebras need brackets of depth 6–10), gradient flows of tiny models (state dim ≤
    ``EXACT_AUTO_MAX_GRADIENT_STATE``, ≤ ``EXACT_AUTO_MAX_OUTPUTS`` outputs); else numeric."""
    if not flow.is_polynomial:
        return "numeric"
    n = flow.state_dim(model)
    if flow.has_velocity:
        small = n <= EXACT_AUTO_MAX_STATE
    else:
        small = n <= EXACT_AUTO_MAX_GRADIENT_STATE and model.d <= EXACT_AUTO_MAX_OUTPUTS
    return "exact" if small and _is_polynomial(model) else "numeric"


def _is_polynomial(model: Model) -> bool:
    try:
        polynomial_form(model.phi, model.D)
    except InputError:
        return False
    return True


@float64
def count_laws(
    model: Model,
    flow: AbstractFlow | str | None = None,
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
    escalate: bool = True,
    progress: bool | None = None,
) -> LawCount:
    """Count the conservation laws of ``model`` under ``flow`` (default: Euclidean gradient flow).

    N = state_dim − dim Lie(W)(z) at generic points, computed blind by

    - ``"numeric"``: brackets by autodiff at ``points`` random points, SVD rank with its gap
      (`lie_trace`); ``ambiguous`` when points disagree or the gap is below ``min_gap``;
    - ``"exact"``: polynomial brackets, ranks modulo two 61-bit primes (`conflow.exact`); needs a
      polynomial φ and a named metric;
    - ``"both"``: both, and status ``disagree`` if they differ (a bug in one of the engines);
    - ``"auto"`` (default): the exact engine for polynomial φ where it is cheap — momentum flows
      of small models (state dim ≤ ``EXACT_AUTO_MAX_STATE``: their Lie algebras need brackets
      of depth 6–10, and the exact engine's modular matrices grow as state_dim² × generators)
      and gradient flows of tiny ones (state dim ≤ ``EXACT_AUTO_MAX_GRADIENT_STATE``) — and
      numeric otherwise (`_auto_method`).

    The numeric engine shards its bracket batches over ``devices`` local devices (default all),
    evaluates them in ``dtype`` (float64; float32 only on request, with a warning) and cuts the
    levels by ``algorithm`` (``dense``, ``streamed`` or ``auto``; see `lie_trace`), with a
    progress bar on stderr for counts that run more than two seconds (``progress``: ``None``
    shows it only on a terminal).
    ``max_depth`` defaults to 6 for the numeric engine (each level roughly doubles the compiled
    program) and 30 for the exact one; a trace still growing there is ``not_converged``.

    Generic points are drawn by `conflow.laws.points.generic_points`: a point that a piecewise model
    calls degenerate (a unit on or off for its whole input sample) is redrawn, and the result
    says how many were. With ``escalate`` (default), a numeric count that comes out
    ``ambiguous`` is not reported as such before the steps that can settle it were tried
    (`_escalation_steps`: the exact engine for small polynomial φ, fresh and more points, the
    exact engine on the points' activation regions for piecewise-polynomial φ); ``attempts``
    and ``settled_by`` say what ran and what settled it.
    """
    t0 = time.perf_counter()
    check_model(model)
    flow = parse_flow(flow)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    points = check_int("points", points, MIN_POINTS)
    seed = check_int("seed", seed, 0)
    if max_depth is not None:
        max_depth = check_int("max_depth", max_depth, 1)
    flow.validate(model)
    if method == "auto":
        numeric_options = algorithm != "auto" or dtype != "float64" or rtol is not None
        method = "numeric" if numeric_options else _auto_method(model, flow)

    n = flow.state_dim(model)
    trace = exact = None
    attempts: list[Attempt] = []
    settled_by = ""
    traces: list[LieTrace] = []  # every numeric try, in order
    redrawn, redraw_reasons = 0, ()

    def numeric(try_seed: int, n_points: int) -> LieTrace:
        nonlocal redrawn, redraw_reasons
        drawn = generic_points(model, flow, try_seed, n_points)
        redrawn, redraw_reasons = redrawn + drawn.redrawn, redraw_reasons + drawn.reasons
        traces.append(lie_trace(flow.family(model), drawn.points, seed=try_seed,
                                max_depth=6 if max_depth is None else max_depth, rtol=rtol, min_gap=min_gap,
                                devices=devices, dtype=dtype, algorithm=algorithm,
                                progress=progress))
        return traces[-1]

    if method in ("numeric", "both"):
        trace = numeric(seed, points)
    if method in ("exact", "both"):
        exact = _exact_trace(model, flow, seed, 30 if max_depth is None else max_depth,
                             None if trace is None else trace.points)

    if method == "numeric" and escalate and trace.status == AMBIGUOUS:
        attempts.append(_attempt("numeric", f"{points} points, seed {seed}", trace, n))
        for step in _escalation_steps(model, flow, seed, points, n, max_depth, numeric, traces):
            t_step = time.perf_counter()
            result = step()
            if result is None:
                continue
            label, detail, engine_result = result
            attempts.append(_attempt(label, detail, engine_result, n,
                                     time.perf_counter() - t_step))
            if isinstance(engine_result, LieTrace):
                trace = engine_result
            else:
                exact = engine_result
            if engine_result.status == OK:
                settled_by, settled_dim = f"{label} ({detail})", engine_result.dim
                break

    if attempts and settled_by:
        dim, status, reason = settled_dim, OK, ""
    elif attempts:
        dim, status = None, AMBIGUOUS
        reason = (f"{attempts[0].reason}; escalation did not settle it: tried "
                  + "; ".join(f"{a.step} ({a.detail}): {a.status}" for a in attempts[1:]))
    else:
        dim, status, reason = _verdict(trace, exact)
    return LawCount(
        model=model.label,
        dims=tuple(model.dims),
        flow=flow.name,
        tau=flow.tau,
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
        attempts=tuple(attempts),
        settled_by=settled_by,
        points_redrawn=redrawn,
        redraw_reasons=tuple(redraw_reasons),
    )


def _attempt(step: str, detail: str, result: Any, n: int, seconds: float | None = None
             ) -> Attempt:
    """An `Attempt` from a `LieTrace` or an `ExactTrace`."""
    reason = getattr(result, "reason", "") or (
        "" if result.status == OK else f"exact trace {result.status}")
    return Attempt(step, detail, result.status,
                   None if result.status != OK else n - result.dim, reason,
                   result.seconds if seconds is None else seconds)


def _exact_candidate(model: Model, flow: AbstractFlow, n: int) -> str:
    """Why the exact engine cannot settle this count cheaply ('' if it can be tried)."""
    if not flow.is_polynomial:
        return "a callable metric has no polynomial form"
    if n > EXACT_ESCALATE_MAX_STATE or model.d > EXACT_ESCALATE_MAX_OUTPUTS:
        return (f"too large for the exact engine (state dim {n}, {model.d} outputs; "
                f"limits {EXACT_ESCALATE_MAX_STATE}, {EXACT_ESCALATE_MAX_OUTPUTS})")
    return ""


def _escalation_steps(model: Model, flow: AbstractFlow, seed: int, points: int, n: int,
                      max_depth: int | None, numeric: Callable[[int, int], LieTrace],
                      traces: list[LieTrace]) -> list[Callable]:
    """The steps that may settle an ambiguous numeric count, cheapest first. Each returns
    ``(step, detail, LieTrace | ExactTrace)`` or ``None`` when it does not apply.

    1. ``exact``: φ polynomial and small: the certified count (`conflow.exact`).
    2. ``fresh points``: twice the points, a new seed (new points, new coefficient draws).
    3. ``exact on regions``: φ piecewise polynomial (ReLU, leaky ReLU, max, abs, …) and small:
       the exact count of the polynomial φ is on the activation region of each numeric point;
       settles the count when every region is ok and they agree.
    """
    too_big = _exact_candidate(model, flow, n)
    depth = 30 if max_depth is None else max_depth
    kind: dict[str, str] = {}

    def polynomial() -> bool:
        if "form" not in kind:
            try:
                polynomial_form(model.phi, model.D)
                kind["form"] = "polynomial"
            except InputError as e:
                kind["form"] = str(e)
        return kind["form"] == "polynomial"

    def exact():
        if too_big or not polynomial():
            return None
        return "exact", "polynomial φ, two primes", _exact_trace(model, flow, seed, depth)

    def fresh():
        return "fresh points", f"{2 * points} points, seed {seed + 1}", numeric(seed + 1, 2 * points)

    def regions():
        if too_big or polynomial():
            return None
        states = traces[-1].points
        try:
            run = _region_trace(model, flow, seed, depth, states)
        except InputError:
            return None  # not piecewise polynomial (tanh, exp, …), or a point on a boundary
        return "exact on regions", f"the activation regions of {len(states)} points", run

    return [exact, fresh, regions]


def _exact_trace(model: Model, flow: AbstractFlow, seed: int, max_depth: int,
                 regions: np.ndarray | None = None):
    """The exact count; for a piecewise-polynomial φ (ReLU, max, abs, …), on the activation
    regions of ``regions`` (states, shape (P, state_dim); default: 3 generic points), settled
    when every region gives the same dimension (`_region_trace`)."""
    if not flow.is_polynomial:
        raise InputError("the exact method needs a named metric (euclidean or entropy)")
    try:
        return exact_count_laws(model, flow, seed=seed, max_depth=max_depth)
    except PiecewiseError:
        if regions is None:
            regions = generic_points(model, flow, seed, 3).points
        return _region_trace(model, flow, seed, max_depth, regions)


def _region_trace(model: Model, flow: AbstractFlow, seed: int, max_depth: int, states: np.ndarray):
    """Exact counts of the polynomials φ is on the activation regions of ``states``: the first
    run if all are ``ok`` and agree, else that run marked ``ambiguous`` (no dimension)."""
    runs = [exact_count_laws(model, flow, seed=seed, max_depth=max_depth,
                             region=flow.theta_of_state(model, z)) for z in states]
    if all(r.status == OK for r in runs) and len({r.dim for r in runs}) == 1:
        return runs[0]
    return dataclasses.replace(runs[0], status=AMBIGUOUS, dim=None)


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
