"""`count_laws`: the number of independent conservation laws of a model under a flow.

By Frobenius (MATH.md §1.5), near a generic point there are exactly

    N = state_dim − dim Lie(W)(z)

independent conservation laws, where W is the flow's generator family (MATH.md §1.3, §3.2, §4.1).
The count is computed blind by `conflow.engine.trace.lie_trace`; closed-form laws of the literature are
never consulted.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from conflow.engine.rank import DEFAULT_MIN_GAP
from conflow.engine.full_rank import full_rank_trace
from conflow.engine.deep_trace import INNER_DEPTH, deep_trace, reached_depth
from conflow.engine.levels import BLIND
from conflow.engine.trace import (
    AMBIGUOUS,
    DENSE_MAX_DIM,
    NOT_CONVERGED,
    OK,
    STILL_GROWING,
    LieTrace,
    lie_trace,
)
from conflow.errors import (
    InputError,
    PiecewiseError,
    TooLargeError,
    check_int,
)
from conflow.exact import DEFAULT_PRIMES, evaluated_lie_trace, polynomial_form, region_polynomial
from conflow.exact.evaluated import bracket_depth
from conflow.exact.polynomial import WorkLimitError, work_limit
from conflow.flows import AbstractFlow, parse_flow
from conflow.laws import cost as _cost
from conflow.laws.exact_count import count_polynomials, exact_count_laws, name_time_limit
from conflow.laws.points import generic_points
from conflow.models.base import Model, check_model
from conflow.models.from_model import SampledModel
from conflow.precision import float64
from conflow.status import Status

METHODS = ("auto", "numeric", "exact", "both")
#: The fewest generic points of a numeric count: their agreement is part of the evidence.
MIN_POINTS = 3
#: The numeric engine's depth cap when none is given (`count_laws`).
DEFAULT_NUMERIC_DEPTH = 6
#: ... except for the first trace of a count that may escalate: still growing at this depth, it
#: goes on with deeper brackets (`deep_trace`), whose level t costs a plain level t + 2 and
#: reaches depth 3t + 2, instead of the plain level 6, the costliest of all (about 3× level 5;
#: in the trust draws it confirmed a stagnation or was still growing). Where the deeper brackets
#: do not settle the count, the plain trace goes on to `DEFAULT_NUMERIC_DEPTH`.
PLAIN_DEPTH_BEFORE_DEEPER = 5
#: ... and for a polynomial flow on at most `EXACT_FIRST_MAX_DIM` coordinates, at this depth:
#: still growing there, the exact trace by evaluation runs next (for a polynomial or
#: piecewise-polynomial φ; any other declines at once), whose chains of W_2 reach depth 14 in
#: about the time of the numeric levels 4 and 5 (about 8× levels 0–3). Where it does not settle
#: the count, the numeric trace is rerun to `PLAIN_DEPTH_BEFORE_DEEPER` and the escalation goes
#: on as before. Linear 7-7-8-9-4-2-4-4-9-10-2-6: a trace to depth 5 (27 s) + the exact step
#: (6 s), or to depth 3 (4.5 s) + the same 6 s.
PLAIN_DEPTH_BEFORE_EXACT = 3
EXACT_FIRST_MAX_DIM = 2048
# method="auto" runs the engine its cost estimate says is cheaper (`_auto_choice`,
# `conflow.laws.cost.exact_cost` against `numeric_cost`). An exact count estimated below this is
# chosen without estimating the numeric one: the numeric engine's first count of a model in a
# process takes 1–3 s here (compilation; ReLU [3,4,2], linear [3,4,4,3], 2026-12-01), and only
# repeats of the same shapes with their programs compiled go below 0.1 s (0.02–0.15 s), where
# the two engines cost the same to a user.
NUMERIC_MIN_SECONDS = 0.1
#: ``method="auto"`` builds φ's polynomials with at most this many term products (at most
#: 0.2 s): more means more monomials than the exact engine handles faster than the numeric one
#: (linear[6]*5, 7,776 monomials, needs 9,288; a product of eight 10×10 blocks has 10⁷ monomials
#: per output, and building them exhausted 17 GB).
AUTO_EXTRACT_PRODUCTS = 1 << 16
#: The exact engine chosen by ``method="auto"`` runs at most this many times its estimate (and
#: at least `AUTO_EXACT_MIN_SECONDS`); past that the estimate was wrong and the numeric engine
#: counts instead. The estimate assumes the flow's usual depth: linear [2,6,6,1], estimated at
#: 0.8 s, needs depth 7 and was still at depth 5 after 5 s, with 12 GB after 5 minutes.
AUTO_EXACT_FACTOR = 10.0
AUTO_EXACT_MIN_SECONDS = 10.0
#: The escalation's exact steps give up on φ's polynomial form past this many term products
#: (about 10 s).
ESCALATE_EXTRACT_PRODUCTS = 1 << 22
#: ... and skip the exact engine when its estimate (`conflow.laws.cost.exact_cost`) is above
#: this (linear [2,4,7,9,8,2,5], 40,320 monomials, is estimated at 6.6e8 s; running it anyway
#: exhausted 20 GB).
ESCALATE_EXACT_MAX_SECONDS = 300.0
#: The last escalation step, the exact trace by evaluation (`_evaluated_trace`), stops here.
ESCALATE_EVALUATED_MAX_SECONDS = 600.0
#: ... and is tried first, before the deeper brackets, for a polynomial φ whose trace still
#: grows at the numeric depth cap, for at most `EVALUATED_FIRST_SECONDS` or
#: `EVALUATED_FIRST_FACTOR` times the numeric trace's time (the larger): where it settles the
#: count there, the deeper numeric steps never run (eqx affine 7-26-26-2 with biases, W_1
#: chains: a trace of 25 s, then 53 s for this step; with twice the trace's time it ran out at
#: 51 s and the count took 243 s).
EVALUATED_FIRST_SECONDS = 60.0
EVALUATED_FIRST_FACTOR = 4.0
#: ... or this many times, after a trace to `PLAIN_DEPTH_BEFORE_EXACT`: about the cost of the
#: numeric levels 4 and 5 it is to replace.
EXACT_FIRST_FACTOR = 8.0
#: Its levels past the plain levels 0–2 are those of chains of generic elements of W_2
#: (`evaluated_lie_trace`'s ``inner_depth``): level 2 + t holds brackets of depth ≤ 3t + 2 at
#: the cost of a plain depth t + 2. Measured on the nested-jvp programs (before the hyper-dual
#: walk) with W_0 (plain levels) / W_1 / W_2 / W_3, alone: linear 7-7-8-9-4-2-4-4-9-10-2-6
#: ~100 s / 39 s / 51 s / –, eqx affine 7-26-26-2 with biases > 400 s / 68 s / 93 s / 105 s,
#: linear 2-6-6-6-6-6-6-1 (one output: brackets to depth 14) – / > 71 s / 59 s / 63 s; with the
#: hyper-dual walk W_1 / W_2 / W_3 cost the same within 30 % (5–8 s on the two linear nets).
EVALUATED_INNER_DEPTH = 2
#: The label of that step.
EVALUATED = "exact by evaluation"
DISAGREE = Status.DISAGREE
# Escalation tries the exact engine on polynomial φ (or on a point's activation region) only up
# to these sizes: its modular Jacobian stacks grow as state_dim² × generators.
EXACT_ESCALATE_MAX_STATE = 200
#: ... and on a cells' model (`SampledModel.cell_model`), whose polynomials have the network's
#: depth as degree and few terms: leaky-ReLU eqx 2-13-13-2 (D = 249, 1,152 outputs) counts
#: exactly in 31 s (extraction 14 s), where the numeric count stays ambiguous.
EXACT_CELLS_MAX_STATE = 400
#: The escalation step ``full rank`` stacks levels 0..K with K at most this (deeper chains cost
#: compile time that doubles per level; depth ≤ 2 was enough for the smooth nets measured).
FULL_RANK_MAX_DEPTH = 2
EXACT_ESCALATE_MAX_OUTPUTS = 4096


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One try of a count: the first one, or a step of the escalation of an ambiguous one
    (or of one still growing at the default depth cap: ``"deeper brackets"``, `deep_trace`).

    Attributes:
        step: ``"numeric"``, ``"deeper brackets"``, ``"exact"``, ``"full rank"``,
            ``"activation cells"``,
            ``"fresh points"``, ``"generic region"`` or ``"exact on regions"``.
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
        flow: ``"gradient"``, ``"momentum"``, ``"nesterov"`` or ``"sign"``; ``tau`` the damping
            if any; ``flow_label`` the flow's full label (metric, weight decay, τ).
        metric: ``"euclidean"``, ``"entropy"`` or ``"custom"``.
        method: ``"numeric"`` (autodiff + SVD), ``"exact"`` (polynomial brackets mod p) or
            ``"both"`` (both, cross-checked).
        method_reason: why that engine ran: ``"requested"``, or for ``method="auto"`` the
            choice and its estimates, e.g. ``"auto: polynomial, 144 monomials, est. 0.04 s vs
            numeric ≥ 0.1 s"`` (`_auto_choice`).
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
        sample_reduction: for a model on an input sample, how its sample was reduced to the
            inputs whose outputs span all its output functions (`count_laws`); empty if not.
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
    method_reason: str = ""
    flow_label: str = ""
    sample_reduction: str = ""

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
            "model": self.model, "dims": list(self.dims), "flow": self.flow,
            "flow_label": self.flow_label or self.flow, "tau": self.tau, "metric": self.metric,
            "method": self.method, "method_reason": self.method_reason,
            "D": self.D,
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
                "linalg": t.linalg,
                "sigma_uncertain": list(t.uncertain),
                "started_from": list(t.started_from),
            })
        out["attempts"] = [a.to_json() for a in self.attempts]
        out["settled_by"] = self.settled_by
        out["points_redrawn"] = self.points_redrawn
        out["sample_reduction"] = self.sample_reduction
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
        flow = (self.flow_label or self.flow) + (
            f" τ={self.tau:g}" if self.tau is not None and "τ" not in self.flow_label else "")
        lines = [
            head,
            (f"  flow {flow} ({self.metric}), D = {self.D}, state dim = {self.state_dim}, "
             f"dim Lie(W)(z) = {self.dim_lie}, {self.seconds:.2f} s"),
            f"  method: {self.method}" + (f" ({self.method_reason})" if self.method_reason else ""),
        ]
        if self.trace is not None:
            t = self.trace
            fmt = lambda xs: " ".join(f"{x:.2e}" for x in xs) or "-"
            ranks = " → ".join(str(r[0]) if len(set(r)) == 1 else str(r) for r in t.ranks)
            lines += [
                f"  numeric ({t.algorithm}, {t.linalg}, {t.dtype}): rank per level {ranks} "
                f"(depth {t.depth})" + (f", from a trace of dimension {_dims(t.started_from)} "
                                        "at the same points" if t.started_from else ""),
                f"  σ around the cut: {fmt(t.kept_tail)} | {fmt(t.dropped_head)}   "
                f"gap {t.gap:.2e}; {t.n_agree}/{t.points.shape[0]} points agree",
            ]
            if t.uncertain:
                lines.append(f"  σ the band does not settle: {fmt(t.uncertain)}")
        if self.exact is not None:
            e = self.exact
            ranks = f"rank per level {' → '.join(map(str, e.ranks))} (depth {e.depth})"
            lines.append(
                f"  exact: stopped ({e.reason}){f'; {ranks}' if e.ranks else ''}" if e.reason
                else f"  exact: {ranks}, "
                + (f"{len(e.primes)} primes agree: {e.status == OK}" if len(e.primes) > 1
                   else f"one prime: {e.status == OK}")
                + f", failure probability ≤ {e.failure_bound:.1e}"
            )
        if self.sample_reduction:
            lines.append(f"  sample: {self.sample_reduction}")
        if self.points_redrawn:
            lines.append(f"  {self.points_redrawn} point draw(s) redrawn: degenerate "
                         f"({self.redraw_reasons[0]}{', …' if len(self.redraw_reasons) > 1 else ''})")
        if self.attempts:
            lines.append(f"  escalated: {'settled by ' + self.settled_by if self.settled_by else 'not settled'}")
            lines += [f"    {i}. {a.line()}" for i, a in enumerate(self.attempts, 1)]
        return "\n".join(lines)


def _auto_choice(model: Model, flow: AbstractFlow, points: int = 3,
                 max_memory: int | None = None) -> tuple[str, str, float | None]:
    """``(method, reason, estimate)``: the engine ``method="auto"`` runs, why, and the exact
    engine's estimated seconds when it is the one (else ``None``).

    The exact engine when its estimated time (`conflow.laws.cost.exact_cost`, from the size of
    φ's polynomials, the state dimension and the flow's expected depth) is below the numeric
    engine's (`conflow.laws.cost.numeric_cost`) and its memory fits; the numeric engine when the
    flow's fields are not polynomial (a callable metric), φ is not polynomial (tanh, …) or only
    piecewise polynomial (ReLU networks counted on inputs, max, abs: the exact engine counts
    those on one activation region only, so it is left to escalation), or the exact engine is
    estimated dearer. Cheap next to a count: a lower bound of the exact cost from (n, D, d)
    alone (`exact_cost_floor`) is compared with the numeric estimate before φ's polynomials of
    a large model are extracted, and the numeric estimate is skipped when the exact one is
    below `NUMERIC_MIN_SECONDS`."""
    if not flow.is_polynomial:
        return "numeric", "auto: the metric is a callable, its fields are not polynomial", None
    n, D, momentum = flow.state_dim(model), model.D, flow.has_velocity
    numeric_s: list[float] = []

    def numeric_seconds() -> float:
        if not numeric_s:
            numeric_s.append(_cost.numeric_cost(model, flow, points).seconds)
        return numeric_s[0]

    d = model.d
    floor = _cost.exact_cost_floor(n, D, d, momentum=momentum)
    if floor.seconds >= NUMERIC_MIN_SECONDS and floor.seconds >= numeric_seconds():
        return "numeric", (f"auto: too large for the exact engine (state dim {n}, {d} "
                           f"outputs: est. ≥ {_seconds(floor.seconds)} vs numeric "
                           f"{_seconds(numeric_seconds())})"), None
    try:
        size, est = _exact_estimate(model, flow, n, AUTO_EXTRACT_PRODUCTS)
    except WorkLimitError:
        return "numeric", (f"auto: φ's polynomials are too large for the exact engine (more "
                           f"than {AUTO_EXTRACT_PRODUCTS:,} term products to build them)"), None
    except PiecewiseError:
        return "numeric", "auto: φ branches (max, abs, …): not polynomial", None
    except InputError:
        return "numeric", "auto: φ is not polynomial", None
    what = f"auto: polynomial, {size.monomials} monomials, est. {_seconds(est.seconds)}"
    if est.seconds < NUMERIC_MIN_SECONDS:
        what += f" vs numeric ≥ {_seconds(NUMERIC_MIN_SECONDS)}"
    elif est.seconds >= numeric_seconds():
        return "numeric", f"{what} vs numeric {_seconds(numeric_seconds())}", None
    else:
        what += f" vs numeric {_seconds(numeric_seconds())}"
    limits = [x for x in (_cost.available_memory(), max_memory) if x is not None]
    if limits and est.bytes > min(limits):
        return "numeric", (f"{what}, but ~{_cost.format_size(est.bytes)}: more memory than "
                           f"{_cost.format_size(min(limits))}"), None
    return "exact", what, est.seconds


def _exact_estimate(model: Model, flow: AbstractFlow, n: int, products: int
                    ) -> tuple[_cost.PolynomialSize, _cost.Cost]:
    """φ's polynomials built with at most ``products`` term products (`work_limit`): their size
    and the exact engine's cost estimate. Raises `WorkLimitError`, `PiecewiseError` or
    `InputError` (φ not polynomial)."""
    with work_limit(products):
        polys = polynomial_form(model.phi, model.D)
    size = _cost.polynomial_size(polys)
    return size, _cost.exact_cost(n, model.D, size, momentum=flow.has_velocity,
                                  generator_rank=_generator_rank(model))


def _generator_rank(model: Model) -> int | None:
    """The rank of ∂φ at one generic point, for a model on an input sample (`SampledModel`:
    its many outputs' gradients may span few directions); ``None`` for the others, or when
    too large to compute."""
    rank_of = getattr(model, "generator_rank", None)
    if rank_of is None:
        return None
    return rank_of(np.asarray(model.sample_points(0, 1))[0])


def _dims(dims: tuple[int, ...]) -> str:
    return str(dims[0]) if len(set(dims)) == 1 else str(dims)


def _seconds(x: float) -> str:
    return f"{x:.2g} s"


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
    linalg: str = "auto",
    escalate: bool = True,
    progress: bool | None = None,
    max_memory: int | str | None = None,
    time_limit: float | str | None = None,
    reduce_inputs: bool = True,
    keep_basis: bool = False,
    extends: LawCount | None = None,
) -> LawCount:
    """Count the conservation laws of ``model`` under ``flow`` (default: Euclidean gradient flow).

    N = state_dim − dim Lie(W)(z) at generic points, computed blind by

    - ``"numeric"``: brackets by autodiff at ``points`` random points, SVD rank with its gap
      (`lie_trace`); ``ambiguous`` when points disagree or the gap is below ``min_gap``;
    - ``"exact"``: polynomial brackets, ranks modulo two 61-bit primes (`conflow.exact`); needs a
      polynomial φ and a named metric;
    - ``"both"``: both, and status ``disagree`` if they differ (a bug in one of the engines);
    - ``"auto"`` (default): the engine estimated cheaper (`_auto_choice`): the exact one for
      polynomial φ (linear, ReLU path-lifting, NMF, ICNN, …) under a named metric when its
      estimated time — from the number of φ's monomials, the state dimension and the flow's
      expected depth (`conflow.laws.cost.exact_cost`) — is below the numeric engine's
      (`conflow.laws.cost.numeric_cost`); numeric otherwise. ``method_reason`` says which and
      why. An exact engine chosen so that runs past `AUTO_EXACT_FACTOR` times its estimate (at
      least `AUTO_EXACT_MIN_SECONDS`) is stopped, and the numeric engine counts instead.

    The numeric engine shards its bracket batches over ``devices`` local devices (default all),
    evaluates them in ``dtype`` (float64; float32 only on request, with a warning) and cuts the
    levels by ``algorithm`` (``dense``, ``streamed`` or ``auto``; see `lie_trace`) on the device
    or the host (``linalg``: ``device``, ``host`` or ``auto``, which is the device on accelerators;
    see `conflow.engine.trace.default_linalg`), with a progress bar on stderr for counts that run more than two seconds (``progress``: ``None``
    shows it only on a terminal).
    ``max_depth`` defaults to 6 for the numeric engine (each level roughly triples the compiled
    program) and 30 for the exact one. A numeric trace still growing at the default cap goes on
    with chains of generic elements of W_2 (`conflow.engine.deep_trace`: brackets of depth up to
    14 at the cost of depth 6; ``settled_by`` says so when it settles the count); one still
    growing at a ``max_depth`` given, or after that, is ``not_converged``.

    Generic points are drawn by `conflow.laws.points.generic_points`: a point that a piecewise model
    calls degenerate (a unit on or off for its whole input sample) is redrawn, and the result
    says how many were. With ``escalate`` (default), a numeric count that comes out
    ``ambiguous`` is not reported as such before the steps that can settle it were tried
    (`_escalation_steps`: the exact engine for small polynomial φ, every level stacked where
    full rank is in sight, fresh and more points, the exact engine on the points' activation
    regions for piecewise-polynomial φ); ``attempts``
    and ``settled_by`` say what ran and what settled it. With ``method="both"``, a numeric count
    that comes out ``ambiguous`` next to an ``ok`` exact one is retried at fresh points (twice
    as many, seed + 1) so that the cross-check can be made.

    Resources (`conflow.laws.cost`): before a numeric count allocates anything, its memory and
    time are estimated (`numeric_cost`). Above ``max_memory`` (bytes, or a size such as
    ``"4G"``; default and cap: the memory the machine has available now) the count falls back
    to smaller batches, or from the dense to the streamed algorithm when ``algorithm="auto"``;
    if nothing fits it raises `TooLargeError` with the estimate and the option that would
    make it fit. An estimate above `ESTIMATE_SHOW_SECONDS` is printed on stderr (unless
    ``progress=False``). ``time_limit`` (seconds, or ``"90s"``, ``"5m"``) bounds the whole count,
    escalation included: a count that reaches it stops between levels and reports
    ``not_converged`` with a reason starting "time limit", keeping the levels done (in
    ``trace``); the exact engine stops between its levels and brackets (and inside a bracket).

    A model on an input sample (`conflow.from_model`) whose outputs are exactly linearly
    dependent as functions of θ (an affine network's outputs are affine in the input) is
    counted on the fewest inputs whose outputs span them all, which has the same fields and
    the same count (`SampledModel.spanning_sample`; ``sample_reduction`` says so;
    ``reduce_inputs=False`` counts on the whole sample).

    ``keep_basis``: keep the trace Lie(W)(z) at each point as orthonormal rows (``trace.basis``;
    their complement is spanned by the laws' gradients there).
    ``extends``: an ``ok`` numeric count, with its basis kept, of the same parameters under the
    same flow whose fields are among this model's — the same network on a subset of these
    inputs, as `conflow.count_laws_from_model`'s recount: this count starts from its trace at
    its points (`lie_trace`'s ``start``), where a level of the inputs it lacked costs samples
    for the directions they add, not for the whole state space; ``trace.started_from`` says
    so. Where that does not come out ``ok``, the count runs as without it.
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
    if max_memory is not None:
        max_memory = _cost.parse_size(max_memory, "max_memory")
    if time_limit is not None:
        time_limit = _cost.parse_duration(time_limit, "time_limit")
    deadline = None if time_limit is None else t0 + time_limit
    flow.validate(model)
    model_label, sample_reduction = model.label, ""
    if reduce_inputs and isinstance(model, SampledModel):
        model, sample_reduction = model.spanning_sample(seed)
    method_reason, exact_estimate = "requested", None
    if method == "auto":
        numeric_options = [f"{k}={v!r}" for k, v, default in (
            ("algorithm", algorithm, "auto"), ("linalg", linalg, "auto"), ("dtype", dtype, "float64"),
            ("rtol", rtol, None))
            if v != default]
        method, method_reason, exact_estimate = (
            ("numeric", f"auto: numeric options given ({', '.join(numeric_options)})", None)
            if numeric_options else _auto_choice(model, flow, points, max_memory))

    n = flow.state_dim(model)
    trace = exact = None
    attempts: list[Attempt] = []
    skipped: list[str] = []  # escalation steps that apply but were not tried, and why
    settled_by = ""
    traces: list[LieTrace] = []  # every numeric try, in order
    redrawn, redraw_reasons = 0, ()
    numeric_depth = DEFAULT_NUMERIC_DEPTH if max_depth is None else max_depth
    exact_depth = 30 if max_depth is None else max_depth
    plans: dict[int, NumericPlan] = {}

    def plan(n_points: int) -> NumericPlan:
        if n_points not in plans:
            plans[n_points] = plan_numeric(model, flow, n_points, algorithm, numeric_depth,
                                           max_memory)
        return plans[n_points]

    def numeric(try_seed: int, n_points: int, depth: int = numeric_depth) -> LieTrace:
        nonlocal redrawn, redraw_reasons
        chosen = plan(n_points)  # TooLargeError before anything is allocated
        drawn = generic_points(model, flow, try_seed, n_points)
        redrawn, redraw_reasons = redrawn + drawn.redrawn, redraw_reasons + drawn.reasons
        limit = {} if deadline is None else {"time_limit": _remaining(deadline)}
        traces.append(lie_trace(flow.family(model), drawn.points, seed=try_seed,
                                max_depth=depth, rtol=rtol, min_gap=min_gap,
                                devices=devices, dtype=dtype, algorithm=chosen.algorithm,
                                linalg=linalg,
                                max_chunk=chosen.max_chunk, block=chosen.block,
                                progress=progress, keep_basis=keep_basis, **limit))
        traces[-1] = name_time_limit(traces[-1], time_limit)
        return traces[-1]

    def extended(depth: int) -> LieTrace | None:
        """The trace from ``extends``' at its points, or ``None`` where it cannot start."""
        base = None if extends is None else extends.trace
        if (base is None or base.basis is None or base.status != OK or extends.status != OK
                or base.basis.depth < 0 or base.state_dim != n or extends.flow != flow.name):
            return None
        chosen = plan(base.points.shape[0])
        limit = {} if deadline is None else {"time_limit": _remaining(deadline)}
        return name_time_limit(lie_trace(
            flow.family(model), base.points, seed=seed, max_depth=depth, rtol=rtol,
            min_gap=min_gap, devices=devices, dtype=dtype, algorithm=chosen.algorithm,
            linalg=linalg, max_chunk=chosen.max_chunk, block=chosen.block, progress=progress,
            start=base.basis, keep_basis=keep_basis, **limit), time_limit)

    if exact_estimate is not None:  # auto chose the exact engine by its estimate: hold it to it
        budget = max(AUTO_EXACT_MIN_SECONDS, AUTO_EXACT_FACTOR * exact_estimate)
        budget_end = time.perf_counter() + budget
        exact = name_time_limit(_exact_trace(
            model, flow, seed, exact_depth,
            deadline=budget_end if deadline is None else min(deadline, budget_end),
            progress=progress), time_limit)
        if (exact.status == NOT_CONVERGED and exact.reason.startswith("time limit")
                and (deadline is None or budget_end < deadline)):
            method_reason += (f"; the exact engine ran past {_seconds(budget)} (at depth "
                              f"{exact.depth}): numeric instead")
            method, exact = "numeric", None

    may_go_deeper = method == "numeric" and escalate and max_depth is None
    exact_first = may_go_deeper and flow.is_polynomial and n <= EXACT_FIRST_MAX_DIM
    if method in ("numeric", "both"):
        first = plan(points)
        if progress is not False and first.cost.seconds >= ESTIMATE_SHOW_SECONDS:
            print(first.announce(time_limit), file=sys.stderr, flush=True)
        depth = numeric_depth
        if may_go_deeper:
            depth = PLAIN_DEPTH_BEFORE_EXACT if exact_first else PLAIN_DEPTH_BEFORE_DEEPER
        trace = extended(depth)
        if trace is None or trace.status != OK:
            trace = numeric(seed, points, depth)
    time_up = ""
    if method in ("exact", "both") and exact is None:
        if trace is not None and not deadline_open(deadline):
            time_up = (f"time limit of {time_limit:g} s reached before the exact engine "
                       "started")
        else:
            exact = name_time_limit(_exact_trace(
                model, flow, seed, exact_depth,
                None if trace is None else trace.points, deadline=deadline, progress=progress),
                time_limit)

    if (method == "both" and escalate and trace.status == AMBIGUOUS and not time_up
            and exact.status == OK):
        # a cross-check needs a numeric count: fresh points, as the escalation's second step
        attempts.append(_attempt("numeric", f"{points} points, seed {seed}", trace, n))
        t_step = time.perf_counter()
        label, detail, trace = _fresh_points(numeric, seed, points)
        attempts.append(_attempt(label, detail, trace, n, time.perf_counter() - t_step))
        if trace.status == OK:
            settled_by = f"{label} ({detail})"

    def record_first_trace() -> None:
        """The numeric trace so far as the first attempt, unless a step already recorded one."""
        if not attempts:
            attempts.append(_attempt("numeric", f"{points} points, seed {seed}", trace, n))

    settled_dim = None
    evaluated_left = ESCALATE_EVALUATED_MAX_SECONDS  # None: the fields have no polynomial form

    def evaluated(budget: float) -> None:
        """The step `_evaluated_trace`, for at most ``budget`` s (and the count's deadline)."""
        nonlocal exact, settled_by, settled_dim, evaluated_left
        t_step = time.perf_counter()
        dims = {d for t in traces for d in t.point_dims}
        found = _evaluated_trace(model, flow, seed, exact_depth, deadline, progress,
                                 trace.points[:points],
                                 dims.pop() if len(dims) == 1 and None not in dims else None,
                                 budget)
        if found is None:
            evaluated_left = None
            return
        label, detail, found = found
        out_of_budget = found.status != OK and found.runs[-1].timed_out and deadline_open(deadline)
        if out_of_budget:  # its own budget, not the count's time limit
            _, _, where = found.reason.partition(" reached")
            found = dataclasses.replace(found, reason=f"its budget of {budget:.0f} s ran out{where}")
        else:
            found = name_time_limit(found, time_limit)
        record_first_trace()
        attempts.append(_attempt(label, detail, found, n, time.perf_counter() - t_step))
        evaluated_left = (evaluated_left - (time.perf_counter() - t_step)) if out_of_budget else None
        exact = found
        if found.status == OK:
            settled_by, settled_dim = f"{label} ({detail})", found.dim

    if (may_go_deeper and trace.status == NOT_CONVERGED and flow.is_polynomial
            and trace.reason.startswith(STILL_GROWING) and deadline_open(deadline)):
        factor = EXACT_FIRST_FACTOR if exact_first else EVALUATED_FIRST_FACTOR
        evaluated(max(EVALUATED_FIRST_SECONDS, factor * trace.seconds))

    def plain_levels(depth: int) -> LieTrace:
        """The numeric trace rerun to ``depth``, recorded as the step `PLAIN_DEEPER`."""
        nonlocal settled_by, settled_dim
        t_step = time.perf_counter()
        found = numeric(seed, points, depth)
        attempts.append(_attempt(PLAIN_DEEPER, f"to depth {depth}, {points} points, seed {seed}",
                                 found, n, time.perf_counter() - t_step))
        if found.status == OK:
            settled_by, settled_dim = f"{PLAIN_DEEPER} (to depth {depth})", found.dim
        return found

    if (exact_first and not settled_by and trace.status == NOT_CONVERGED
            and trace.reason.startswith(STILL_GROWING) and trace.depth < PLAIN_DEPTH_BEFORE_DEEPER
            and deadline_open(deadline)):
        record_first_trace()
        trace = plain_levels(PLAIN_DEPTH_BEFORE_DEEPER)

    deeper_failed = None  # the deeper-brackets step, when it ran and did not settle the count
    if (may_go_deeper and trace.status == NOT_CONVERGED and not settled_by
            and trace.reason.startswith(STILL_GROWING)):
        record_first_trace()
        t_step = time.perf_counter()
        levels = numeric_depth - INNER_DEPTH
        detail = (f"chains of generic elements of W_{INNER_DEPTH}: brackets of depth ≤ "
                  f"{reached_depth(levels)}, {points} points, seed {seed}")
        chosen = plan(points)
        deep = name_time_limit(deep_trace(
            flow.family(model), trace.points, max_depth=levels, seed=seed, rtol=rtol,
            min_gap=min_gap, devices=devices, dtype=dtype, algorithm=chosen.algorithm,
            linalg=linalg, max_chunk=chosen.max_chunk, block=chosen.block, progress=progress,
            time_limit=_time_left(deadline)), time_limit)
        attempts.append(_attempt(DEEPER, detail, deep, n, time.perf_counter() - t_step))
        if deep.status == OK:
            trace, settled_by, settled_dim = deep, f"{DEEPER} ({detail})", deep.dim
        elif trace.depth < numeric_depth:  # the plain levels the deeper brackets skipped
            trace = plain_levels(numeric_depth)
            if trace.status == NOT_CONVERGED:
                deeper_failed = attempts[-2]
        else:
            deeper_failed = attempts[-1]

    if method == "numeric" and escalate and trace.status == AMBIGUOUS:
        record_first_trace()
        def count_other(other: Model, try_seed: int) -> LieTrace:
            """A numeric count of another model of the same θ, with this count's options."""
            limit = {} if deadline is None else {"time_limit": _remaining(deadline)}
            return count_laws(other, flow, method="numeric", points=points, seed=try_seed,
                              max_depth=max_depth, rtol=rtol, min_gap=min_gap, devices=devices,
                              dtype=dtype, algorithm=algorithm, linalg=linalg, escalate=False,
                              progress=progress, max_memory=max_memory, reduce_inputs=False,
                              **limit).trace

        def stacked(last: LieTrace) -> LieTrace:
            """`full_rank_trace` at the points of ``last``."""
            return full_rank_trace(flow.family(model), last.points, seed=seed, dtype=dtype,
                                   depth=FULL_RANK_MAX_DEPTH, devices=devices,
                                   time_limit=_time_left(deadline))

        for step in _escalation_steps(model, flow, seed, points, n, max_depth, numeric, traces,
                                      count_other, stacked, deadline, progress):
            if not deadline_open(deadline):
                time_up = (f"time limit of {time_limit:g} s reached while escalating, before "
                           f"'{_STEP_LABELS.get(step.__name__, step.__name__)}'")
                break
            t_step = time.perf_counter()
            try:
                result = step()
            except TooLargeError as e:  # this step does not fit: the next may
                attempts.append(Attempt(_STEP_LABELS.get(step.__name__, step.__name__),
                                        "skipped", NOT_CONVERGED, None, str(e), 0.0))
                continue
            if result is None:
                continue
            if isinstance(result, str):
                skipped.append(f"{_STEP_LABELS.get(step.__name__, step.__name__)} ({result})")
                continue
            label, detail, engine_result = result
            engine_result = name_time_limit(engine_result, time_limit)
            attempts.append(_attempt(label, detail, engine_result, n,
                                     time.perf_counter() - t_step))
            if isinstance(engine_result, LieTrace):
                trace = engine_result
            else:
                exact = engine_result
            if engine_result.status == OK:
                settled_by, settled_dim = f"{label} ({detail})", engine_result.dim
                break
        if not settled_by and not time_up:
            time_up = next((a.reason for a in attempts[1:]
                            if a.reason.startswith("time limit")), "")

    unsettled = method == "numeric" and escalate and (trace.status == AMBIGUOUS or (
        may_go_deeper and trace.status == NOT_CONVERGED and trace.reason.startswith(STILL_GROWING)))
    if (unsettled and not settled_by and not time_up and flow.is_polynomial
            and evaluated_left is not None and evaluated_left > 0 and deadline_open(deadline)):
        evaluated(evaluated_left)
        if settled_by:
            deeper_failed = None

    if method == "both" and not time_up:
        dim, status, reason = _verdict(trace, exact)
        settled_by = settled_by if status == OK else ""
    elif attempts and settled_by:
        dim, status, reason = settled_dim, OK, ""
    elif deeper_failed is not None:
        dim, status = None, (AMBIGUOUS if deeper_failed.status == AMBIGUOUS else NOT_CONVERGED)
        reason = (f"{trace.reason}; tried {deeper_failed.step} ({deeper_failed.detail}): "
                  f"{deeper_failed.status} ({deeper_failed.reason})"
                  + "".join(f"; tried {a.step} ({a.detail}): {a.status}"
                            + (f" ({a.reason})" if a.reason else "")
                            for a in attempts if a.step == EVALUATED))
    elif time_up and attempts:
        dim, status = None, NOT_CONVERGED
        reason = (f"{time_up}; the count was ambiguous ({attempts[0].reason})"
                  + "".join(f"; tried {a.step} ({a.detail}): {a.status}" for a in attempts[1:]))
    elif time_up:
        dim, status, reason = None, NOT_CONVERGED, time_up
    elif attempts:
        dim, status = None, AMBIGUOUS
        reason = (f"{attempts[0].reason}; escalation did not settle it: tried "
                  + "; ".join(f"{a.step} ({a.detail}): {a.status}" for a in attempts[1:])
                  + (f"; not tried: {'; '.join(skipped)}" if skipped else ""))
    else:
        dim, status, reason = _verdict(trace, exact)
    return LawCount(
        model=model_label,
        dims=tuple(model.dims),
        flow=flow.name,
        flow_label=flow.label,
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
        method_reason=method_reason,
        sample_reduction=sample_reduction,
    )


#: An estimate above this many seconds is printed on stderr before the count starts.
ESTIMATE_SHOW_SECONDS = 5.0
#: The step that goes on past the depth cap of a trace still growing there (`deep_trace`).
DEEPER = "deeper brackets"
#: ... and the step after it where that does not settle the count: the plain trace to the
#: default depth cap.
PLAIN_DEEPER = "plain levels"
#: The escalation steps of `_escalation_steps`, by function name.
_STEP_LABELS = {"exact": "exact", "full_rank": "full rank", "cells": "activation cells",
                "fresh": "fresh points", "generic_region": "generic region",
                "regions": "exact on regions"}


def deadline_open(deadline: float | None) -> bool:
    """Whether there is time left before ``deadline`` (always, without one)."""
    return deadline is None or time.perf_counter() < deadline


def _remaining(deadline: float) -> float:
    """Seconds left before ``deadline`` (a tiny positive number once it has passed: the engine
    then stops before its first level)."""
    return max(deadline - time.perf_counter(), 1e-6)


def _time_left(deadline: float | None) -> float | None:
    """`_remaining`, or ``None`` (no limit) without a deadline."""
    return None if deadline is None else _remaining(deadline)


@dataclasses.dataclass(frozen=True)
class NumericPlan:
    """How a numeric count runs within the memory it may use (`plan_numeric`).

    Attributes:
        algorithm: passed to `lie_trace` (the request, or ``"streamed"`` when the dense
            algorithm of ``"auto"`` does not fit).
        max_chunk, block: `lie_trace`'s batch sizes (lowered from 256 and 512 to fit).
        cost: the estimate of the run as planned (`conflow.laws.cost.Cost`).
        budget: the memory the count may use, bytes (``None``: unknown, not guarded).
        note: what was changed to fit ("" if nothing).
    """

    algorithm: str
    max_chunk: int
    block: int
    cost: _cost.Cost
    budget: int | None
    note: str = ""

    def announce(self, time_limit: float | None = None) -> str:
        """One line for stderr: ``estimate: streamed engine, ~2.1 GB, ~7 min; …``."""
        bound = ("bound it with --time-limit (time_limit=)" if time_limit is None
                 else f"stops at the time limit of {_cost.format_duration(time_limit)}")
        note = f"; {self.note}" if self.note else ""
        return f"estimate: {self.cost.line()}{note}; {bound}"


def memory_budget(max_memory: int | None) -> tuple[int | None, str]:
    """The bytes a count may use and how to name that bound in a message: ``max_memory``
    capped by what the machine has available now (`conflow.laws.cost.available_memory`)."""
    available = _cost.available_memory()
    if max_memory is None:
        if available is None:
            return None, ""
        return available, f"the {_cost.format_size(available)} this machine has available"
    if available is None or max_memory <= available:
        return max_memory, f"--max-memory {_cost.format_size(max_memory)}"
    return available, (f"the {_cost.format_size(available)} this machine has available "
                       f"(--max-memory {_cost.format_size(max_memory)} is more)")


# Batch sizes tried, largest first, when a count does not fit: (max_chunk, block). The chunk
# goes first: a chunk's chains hold ~20× the floats of a streamed block's row.
_SMALLER_BATCHES = (tuple((256 >> s, 512) for s in range(9))
                    + tuple((1, 512 >> s) for s in range(1, 6)))


def plan_numeric(model: Model, flow: AbstractFlow, points: int, algorithm: str = "auto",
                 max_depth: int = 6, max_memory: int | None = None) -> NumericPlan:
    """The batch sizes and algorithm under which a numeric count fits its memory budget
    (`memory_budget`), from `conflow.laws.cost.numeric_cost`: smaller bracket batches first,
    then, for ``algorithm="auto"``, the streamed algorithm instead of the dense one.

    Raises `TooLargeError` (one line: the estimate, the bound, the option that would make it
    fit) when nothing fits.
    """
    budget, bound = memory_budget(max_memory)
    n = flow.state_dim(model)
    resolved = _cost.resolve_algorithm(algorithm, n)
    cost = _cost.numeric_cost(model, flow, points, resolved, max_depth=max_depth)
    if budget is None or cost.bytes <= budget:
        return NumericPlan(algorithm, 256, 512, cost, budget)
    fallback = ["streamed"] if algorithm == "auto" and resolved == "dense" else []
    for alg in [resolved] + fallback:
        for chunk, block in _SMALLER_BATCHES:
            smaller = _cost.numeric_cost(model, flow, points, alg, max_depth=max_depth,
                                         max_chunk=chunk, block=block)
            if smaller.bytes <= budget:
                note = ("the dense engine does not fit: streamed instead" if alg != resolved
                        else f"smaller batches ({chunk} samples per call) to fit")
                return NumericPlan(alg, chunk, block, smaller, budget, note)
    smallest = min((_cost.numeric_cost(model, flow, points, alg, max_depth=max_depth,
                                       max_chunk=1, block=16) for alg in [resolved] + fallback),
                   key=lambda c: c.bytes)
    raise TooLargeError(
        f"out of memory (estimated before starting): {model.label} at {points} points needs "
        f"{smallest.line()}, more than {bound}; "
        + _what_fits(model, flow, points, algorithm, resolved, max_depth, max_memory, smallest))


def _what_fits(model: Model, flow: AbstractFlow, points: int, algorithm: str, resolved: str,
               max_depth: int, max_memory: int | None, smallest: _cost.Cost) -> str:
    """The option that would make a count that does not fit fit, for the refusal's message."""
    available = _cost.available_memory()
    room = available if available is not None else float("inf")

    def least(n_points: int, algs: list[str]) -> _cost.Cost:
        return min((_cost.numeric_cost(model, flow, n_points, a, max_depth=max_depth,
                                       max_chunk=1, block=16) for a in algs),
                   key=lambda c: c.bytes)

    budget = room if max_memory is None else min(room, max_memory)
    if resolved == "dense" and algorithm == "dense":
        streamed = least(points, ["streamed"])
        if streamed.bytes <= budget:
            return f"--algorithm streamed fits ({streamed.line()})"
    if points > MIN_POINTS:
        fewer = least(MIN_POINTS, [resolved, "streamed"])
        if fewer.bytes <= budget:
            return f"--points {MIN_POINTS} fits ({fewer.line()})"
    if max_memory is not None and smallest.bytes <= room:
        return f"--max-memory {_cost.format_size(smallest.bytes * 1.1)} fits this machine"
    return (f"no option makes it fit here: it needs a machine with ~"
            f"{_cost.format_size(smallest.bytes)} of memory, or a smaller model")


def _attempt(step: str, detail: str, result: Any, n: int, seconds: float | None = None
             ) -> Attempt:
    """An `Attempt` from a `LieTrace` or an `ExactTrace`."""
    reason = getattr(result, "reason", "") or (
        "" if result.status == OK else f"exact trace {result.status}")
    return Attempt(step, detail, result.status,
                   None if result.status != OK else n - result.dim, reason,
                   result.seconds if seconds is None else seconds)


def _full_rank_in_sight(trace: LieTrace) -> bool:
    """Whether ``trace`` may have missed only that Lie(W)(z) = R^n: some point reached R^n,
    its level loop stopped at a level that could not tell directions from rounding
    (`conflow.engine.levels.blind_level`), or the singular values its bands left undecided
    (over all points and levels) are as many as a point's missing dimensions. A smooth net on
    2-D inputs (nnx softplus 2-9-3-14-10-2 with biases, n = 285) reached 273–284 with 114–184
    values in its bands, and the stack of its levels 0–1 showed R^n clearly."""
    undecided = sum(len(level.uncertain) for level in trace.levels)
    return max(trace.point_dims) + undecided >= trace.state_dim or BLIND in trace.reason


def _exact_candidate(model: Model, flow: AbstractFlow, n: int,
                     max_state: int = EXACT_ESCALATE_MAX_STATE) -> str:
    """Why the exact engine cannot settle this count cheaply ('' if it can be tried)."""
    if not flow.is_polynomial:
        return "a callable metric has no polynomial form"
    if n > max_state or model.d > EXACT_ESCALATE_MAX_OUTPUTS:
        return (f"too large for the exact engine (state dim {n}, {model.d} outputs; "
                f"limits {max_state}, {EXACT_ESCALATE_MAX_OUTPUTS})")
    return ""


def _escalation_steps(model: Model, flow: AbstractFlow, seed: int, points: int, n: int,
                      max_depth: int | None, numeric: Callable[[int, int], LieTrace],
                      traces: list[LieTrace],
                      count_other: Callable[[Model, int], LieTrace],
                      stacked: Callable[[LieTrace], LieTrace], deadline: float | None,
                      progress: bool | None) -> list[Callable]:
    """The steps that may settle an ambiguous numeric count, cheapest first. Each returns
    ``(step, detail, LieTrace | ExactTrace)``, ``None`` when it does not apply, or why it was
    not tried although it applies (too large for the exact engine).

    1. ``exact``: φ polynomial and small: the certified count (`conflow.exact`).
    2. ``full rank``: R^n is in sight (`_full_rank_in_sight`):
       the samples of levels 0, 1, … (at most `FULL_RANK_MAX_DEPTH`) stacked at each point
       (`conflow.engine.full_rank`); settles the count (no law) when σ_n is clear at every
       point, whatever the bands of the level loop said.
    3. ``activation cells``: a piecewise-affine network on an input sample (ReLU, leaky ReLU,
       abs, … from code): the count of its cells' model (`SampledModel.cell_model`: the
       outputs of every activation cell the sample reaches, on the basis inputs), numeric and
       where needed exact, on the activation regions of the latest points (`_cells_trace`).
    4. ``fresh points``: twice the points, a new seed (new points, new coefficient draws);
       then ``full rank`` again, at the fresh points, where they bring a point to all of R^n
       (a smooth net on 2-D inputs, nnx softplus 2-9-3-14-10-2: none of the first 3 points).
    5. ``generic region``: a piecewise model from code (recorded switches) whose latest points
       disagree with every point's own cut clean: the largest dimension, when at least two and at
       least half of the points reach it (`_generic_region`).
    6. ``exact on regions``: φ piecewise polynomial (ReLU, leaky ReLU, max, abs, …) and small:
       the exact count of the polynomial φ is on the activation regions of the first ``points``
       fresh points; settles the count when every region is ok and they agree, or, when every
       numeric point reached the same dimension, when the first region's exact count equals it
       (the other regions are then not counted).

    The exact counts stop at ``deadline`` (`time.perf_counter()`, or ``None``).
    """
    too_big = _exact_candidate(model, flow, n)
    depth = 30 if max_depth is None else max_depth
    kind: dict[str, str] = {}

    def form() -> str:
        """'polynomial', 'too large' (its polynomial form passed the work limit, or the exact
        engine's estimate passed `ESCALATE_EXACT_MAX_SECONDS` or the free memory), or why not."""
        if "form" not in kind:
            try:
                est = _exact_estimate(model, flow, n, ESCALATE_EXTRACT_PRODUCTS)[1]
                memory = _cost.available_memory()
                kind["form"] = ("too large" if est.seconds > ESCALATE_EXACT_MAX_SECONDS
                                or (memory is not None and est.bytes > memory) else "polynomial")
            except WorkLimitError:
                kind["form"] = "too large"
            except InputError as e:
                kind["form"] = str(e)
        return kind["form"]

    def exact():
        if too_big or form() not in ("polynomial", "too large"):
            return None
        if form() == "too large":
            return "the exact engine's estimated cost is too high"
        return "exact", "polynomial φ, two primes", _exact_trace(
            model, flow, seed, depth, deadline=deadline, progress=progress)

    stacked_at: list[LieTrace] = []  # the traces whose points full rank stacked

    def full_rank():
        last = traces[-1]
        if (n > DENSE_MAX_DIM or any(last is t for t in stacked_at)
                or not _full_rank_in_sight(last)):
            return None
        stacked_at.append(last)
        found = stacked(last)
        return ("full rank", f"levels 0–{found.depth} stacked at each of "
                f"{len(last.point_dims)} points", found)

    def cells():
        return _cells_trace(model, flow, traces[-1].points[:points], seed, depth, count_other,
                            deadline)

    def fresh():
        return _fresh_points(numeric, seed, points)

    def generic_region():
        return _generic_region(model, flow, traces[-1])

    def regions():
        if too_big:  # said only where the step applies
            return too_big if _records_switches(model, flow, traces[-1].points[0]) else None
        if form() in ("polynomial", "too large"):
            return None
        states = traces[-1].points[:points]  # the fresh points, as many as asked for: one exact
        dims = {d for t in traces for d in t.point_dims}  # count per region, the costliest step
        numeric_dim = dims.pop() if len(dims) == 1 and None not in dims else None
        try:
            run, used = _region_trace(model, flow, seed, depth, states, numeric_dim,
                                      deadline=deadline, progress=progress)
        except InputError:
            return None  # not piecewise polynomial (tanh, exp, …), or a point on a boundary
        n_numeric = sum(len(t.point_dims) for t in traces)
        return "exact on regions", (
            f"the activation regions of {used} points" if used > 1 else
            f"the activation region of 1 point, the same dimension as all {n_numeric} numeric "
            "points"), run

    return [exact, full_rank, cells, fresh, full_rank, generic_region, regions]


def _evaluated_trace(model: Model, flow: AbstractFlow, seed: int, max_depth: int,
                     deadline: float | None, progress: bool | None, states: np.ndarray,
                     numeric_dim: int | None, budget: float):
    """The step tried first for a polynomial trace still growing at the depth cap, and last
    where the others did not settle the count: the exact trace by evaluation
    (`conflow.exact.evaluated_lie_trace`: the numeric engine's bracket programs, chains of
    generic elements of W_2 (`EVALUATED_INNER_DEPTH`), run modulo one prime, no polynomial
    expanded), for at most ``budget`` seconds. One run, since its Schwartz–Zippel
    ``failure_bound`` is the certificate (a second prime halves the speed and lowers no reported
    bound).

    A polynomial φ of any size is counted at generic points. A piecewise one (ReLU, leaky ReLU,
    abs, …) is counted on the activation regions of ``states`` (the latest numeric points),
    settled as in `_region_trace` (`_settle_regions`): the first region alone when its count
    equals ``numeric_dim`` (the dimension every numeric point reached), else every region, when
    they agree. ``None`` where the fields have no polynomial form (tanh, a switch on a tangent, …).
    """
    t0 = time.perf_counter()
    chains = f"chains of generic elements of W_{EVALUATED_INNER_DEPTH} evaluated modulo a prime"

    def reached(found) -> int:  # the deepest bracket of the original generators its levels hold
        return bracket_depth(found.depth, EVALUATED_INNER_DEPTH)

    def run(region: np.ndarray | None):
        left = _time_left(deadline)
        limit = budget - (time.perf_counter() - t0)
        return evaluated_lie_trace(flow.family(model), seed=seed, max_depth=max_depth,
                                   primes=DEFAULT_PRIMES[:1], inner_depth=EVALUATED_INNER_DEPTH,
                                   region=region, progress=progress,
                                   time_limit=limit if left is None else min(left, limit))

    try:
        found = run(None)
        return EVALUATED, f"{chains} at random points, depth ≤ {reached(found)}", found
    except InputError:
        pass
    try:
        found, used = _settle_regions(run, states, numeric_dim)
    except InputError:  # not piecewise polynomial, or a point on a boundary
        return None
    return (EVALUATED, f"{chains} on the activation region{'s' if used > 1 else ''} of {used} "
            f"point{'s' if used > 1 else ''}, depth ≤ {reached(found)}", found)


def _cells_trace(model: Model, flow: AbstractFlow, states: np.ndarray, seed: int,
                 max_depth: int, count_other: Callable[[Model, int], LieTrace],
                 deadline: float | None = None):
    """The escalation step ``activation cells``: for each state, the count of the model of the
    activation cells its sample reaches (`SampledModel.cell_model`, a polynomial in θ equal to
    the sample's outputs on the state's activation region): numeric at generic points of that
    polynomial (seed ``seed + 2``), and exact where a numeric one is not ``ok`` and no ``ok``
    one settles it, when the cells' model is small enough (`_exact_cell_runs`). Leaky ReLU's
    slope makes the polynomial itself badly scaled (a path through k units off carries 0.01^k).

    Settled when every count is ``ok`` and they agree; or, as in ``generic region``, when they
    differ but at least two and at least half reach the largest dimension (the others are in
    degenerate regions, where a unit is dead or always on for every input the sample reaches).
    ``None`` for a model without such cells; the reason as a string where they do not apply
    (a switch that cannot be frozen, a network not affine in its input, too many cells)."""
    cell_model = getattr(model, "cell_model", None)
    if cell_model is None:
        return None
    runs, cell_models, notes = [], [], []
    n = flow.state_dim(model)
    for z in states:
        cm, note = cell_model(flow.theta_of_state(model, z))
        if cm is None:
            return None if note == "no recorded switch" else f"activation cells: {note}"
        notes.append(note)
        cell_models.append(cm)
        runs.append(count_other(cm, seed + 2))
    if any(r.status != OK for r in runs):
        runs = _exact_cell_runs(runs, cell_models, notes, flow, n, seed, max_depth, deadline)
    dims = tuple(r.dim if r.status == OK else None for r in runs)
    engines = "exact" if any(not isinstance(r, LieTrace) for r in runs) else "numeric"
    detail = f"the cells of {len(runs)} points' activation regions, {engines}; {notes[0]}"
    if None in dims:
        return "activation cells", detail, next(r for r in runs if r.status != OK)
    first = next(r for r in runs if r.dim == max(dims))
    if len(set(dims)) == 1:
        return "activation cells", detail, first
    if _largest_of_most(dims) is not None:
        return "activation cells", f"{detail}; dimensions {dims}: the largest", first
    why = {"reason": f"the activation regions give dimensions {dims}"} if isinstance(
        first, LieTrace) else {}
    return "activation cells", detail, dataclasses.replace(first, status=AMBIGUOUS, dim=None,
                                                           **why)


def _exact_cell_runs(runs: list, cell_models: list, notes: list[str], flow: AbstractFlow,
                     n: int, seed: int, max_depth: int, deadline: float | None) -> list:
    """The cells' counts where some numeric one is not ``ok``: when every numeric point of every
    region reached one dimension, one region's count that is ``ok`` confirms it for all (as in
    "exact on regions"; ``notes[0]`` says so): a numeric one if there is one, else the first
    region's exact count; otherwise each region that is not ``ok`` is counted exactly where it
    can be (`_exact_cells`)."""
    exact: dict[int, Any] = {}

    def exact_run(i: int):
        if i not in exact:
            exact[i] = _exact_cells(cell_models[i], flow, n, seed, max_depth, deadline)
        return exact[i]

    dims = {d for r in runs for d in r.point_dims}
    n_numeric = sum(len(r.point_dims) for r in runs)
    if len(dims) == 1 and None not in dims:
        sure = next((i for i, r in enumerate(runs) if r.status == OK), None)
        if sure is not None:
            notes[0] += (f"; numeric and ok on region {sure + 1}, the same dimension as all "
                         f"{n_numeric} numeric points")
            return [runs[sure]] * len(runs)
        first = exact_run(0)
        if first is not None and first.status == OK and first.dim in dims:
            notes[0] += (f"; exact on the first, the same dimension as all {n_numeric} "
                         "numeric points")
            return [first] * len(runs)
    return [r if r.status == OK else exact_run(i) or r for i, r in enumerate(runs)]


def _exact_cells(cells: Model, flow: AbstractFlow, n: int, seed: int, max_depth: int,
                 deadline: float | None = None):
    """The exact count of a cells' model (`SampledModel.cell_model`), or ``None`` where the
    exact engine does not apply or its estimated cost is above `ESCALATE_EXACT_MAX_SECONDS`.
    The frozen network may still compute comparisons whose outcome is no longer used (a
    leaky ReLU's ``x >= 0``): its polynomials are extracted at a point
    (`region_polynomial`), which decides them without changing φ."""
    if not flow.is_polynomial or _exact_candidate(cells, flow, n, EXACT_CELLS_MAX_STATE):
        return None
    anywhere = np.asarray(flow.theta_of_state(cells, flow.sample_points(cells, seed + 2, 1)[0]))
    try:
        with work_limit(ESCALATE_EXTRACT_PRODUCTS):
            form = region_polynomial(cells.phi, cells.D, anywhere)
        est = _cost.exact_cost(n, cells.D, _cost.polynomial_size(list(form.polys)),
                               momentum=flow.has_velocity)
        if est.seconds > ESCALATE_EXACT_MAX_SECONDS:
            return None
        return count_polynomials(cells, flow, form.polys, form.region, seed=seed,
                                 max_depth=max_depth, time_limit=_time_left(deadline))
    except (InputError, WorkLimitError):
        return None


def _fresh_points(numeric: Callable[[int, int], LieTrace], seed: int, points: int
                  ) -> tuple[str, str, LieTrace]:
    """The step ``fresh points``: twice the points, a new seed (new points, new coefficients)."""
    return "fresh points", f"{2 * points} points, seed {seed + 1}", numeric(seed + 1, 2 * points)


def _records_switches(model: Model, flow: AbstractFlow, state: np.ndarray) -> bool:
    """Whether ``model`` is piecewise with switches recorded at ``state`` (a `SampledModel` of a
    ReLU, leaky-ReLU, max-pooling … network)."""
    patterns = getattr(model, "patterns", None)
    return patterns is not None and np.asarray(
        patterns(flow.theta_of_state(model, state))).size > 0


def _largest_of_most(dims) -> int | None:
    """The largest of per-point (or per-region) dimensions when at least two and at least half
    of them reach it, else ``None``: the rule by which ``generic region`` and ``activation
    cells`` take the generic dimension over degenerate regions."""
    best = max(dims)
    return best if list(dims).count(best) >= max(2, (len(dims) + 1) // 2) else None


def _generic_region(model: Model, flow: AbstractFlow, trace: LieTrace):
    """The escalation step ``generic region``: settle disagreeing points of a piecewise model.

    θ-space of a network with switches (ReLU, leaky ReLU, max pooling, … recorded by
    `SampledModel.patterns`) splits into open regions of fixed activation behaviour; on those
    where a unit is dead, always on, or active on a sliver of the inputs, fewer parameters act
    on the sample and dim Lie(W) is lower than on the architecture's generic region (the
    repaired points of `generic_points` avoid the ones the model can see, not all). So when the
    points disagree while each point's own cut is clean (no σ in the band, no weak generators,
    the gap above ``min_gap``), the largest dimension is the generic one, and the points below
    it lie in degenerate regions. Taken only when at least two and at least half of the points
    reach it; ``None`` otherwise (and for every other model)."""
    if trace.status != AMBIGUOUS or not trace.reason.startswith(
            "points disagree") or trace.gap < trace.min_gap:
        return None
    if not _records_switches(model, flow, trace.points[0]):
        return None  # a smooth model: disagreeing points are not explained by regions
    best = _largest_of_most(trace.point_dims)
    if best is None:
        return None
    at_best, P = trace.point_dims.count(best), len(trace.point_dims)
    settled = dataclasses.replace(trace, dim=best, status=OK, n_agree=at_best, reason="")
    return ("generic region", f"{at_best} of {P} points at dimension {best}, the others in "
            "degenerate activation regions", settled)


def _exact_trace(model: Model, flow: AbstractFlow, seed: int, max_depth: int,
                 regions: np.ndarray | None = None, *, deadline: float | None = None,
                 progress: bool | None = None):
    """The exact count; for a piecewise-polynomial φ (ReLU, max, abs, …), on the activation
    regions of ``regions`` (states, shape (P, state_dim); default: 3 generic points), settled
    when every region gives the same dimension (`_region_trace`)."""
    if not flow.is_polynomial:
        raise InputError(f"the exact method needs polynomial fields: {flow.not_polynomial_reason}")
    try:
        return exact_count_laws(model, flow, seed=seed, max_depth=max_depth,
                                time_limit=_time_left(deadline), progress=progress)
    except PiecewiseError:
        if regions is None:
            regions = generic_points(model, flow, seed, 3).points
        return _region_trace(model, flow, seed, max_depth, regions, deadline=deadline,
                             progress=progress)[0]


def _region_trace(model: Model, flow: AbstractFlow, seed: int, max_depth: int, states: np.ndarray,
                  numeric_dim: int | None = None, *, deadline: float | None = None,
                  progress: bool | None = None):
    """Exact counts of the polynomials φ is on the activation regions of ``states``: (the first
    run if all are ``ok`` and agree, else that run marked ``ambiguous`` (no dimension), the
    regions counted).

    ``numeric_dim``: the dimension every numeric point agreed on, if they all did. When the
    first region's exact count is ``ok`` and equals it, that region is the only one counted: the
    numeric points already say the regions agree, and the exact count certifies their number
    (the numeric doubt is about each point's cut, e.g. weak generators, not about the regions).
    """
    return _settle_regions(
        lambda z: exact_count_laws(model, flow, seed=seed, max_depth=max_depth,
                                   region=flow.theta_of_state(model, z),
                                   time_limit=_time_left(deadline), progress=progress),
        states, numeric_dim)


def _settle_regions(count_region: Callable[[np.ndarray], Any], states: np.ndarray,
                    numeric_dim: int | None):
    """Exact counts ``count_region(z)`` of the regions of ``states``, settled as `_region_trace`
    says: (the first run if all are ``ok`` and agree, else that run marked ``ambiguous``, the
    regions counted); a run stopped with a reason (the time limit) is returned as it is."""
    runs = []
    for z in states:
        runs.append(count_region(z))
        if runs[-1].reason:  # the time limit: no count, and none for the other regions
            return runs[-1], len(runs)
        if len(runs) == 1 and runs[0].status == OK and runs[0].dim == numeric_dim:
            break
    if all(r.status == OK for r in runs) and len({r.dim for r in runs}) == 1:
        return runs[0], len(runs)
    return dataclasses.replace(runs[0], status=AMBIGUOUS, dim=None), len(runs)


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
        return exact.dim, exact.status, exact.reason or exact_reason
    if exact.status != OK:
        return None, exact.status, exact.reason or exact_reason
    if trace.status != OK:
        return None, trace.status, trace.reason
    if trace.dim != exact.dim:
        return None, DISAGREE, (f"BUG: the numeric engine gives dim {trace.dim}, the exact engine "
                                f"{exact.dim}; one of them is wrong, please report it")
    return trace.dim, OK, ""
