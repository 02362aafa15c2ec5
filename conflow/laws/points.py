"""Generic points that avoid the degenerate regions of piecewise models.

The count N = state_dim − dim Lie(W)(z) is read at random points z (MATH.md §1.5). For a model
analytic in θ (every built-in φ: path products, UVᵀ, QᵀK, …) the points where dim Lie(W)(z) is
below its generic value form a proper analytic subset, a null set: any absolutely continuous draw
(`Model.sample_points`) avoids it with probability one.

A piecewise model given as code (a ReLU net counted through its outputs on an input sample,
`conflow.from_model.SampledModel`) is different: θ-space splits into open regions of fixed
activation behaviour, and some have positive measure and a larger count than the generic one —
e.g. a hidden unit off for every input (its weights are then conserved), two units on for every
input (a linear block, with its rotations), a weight whose input unit is off wherever its output
unit is on. Random points land there with positive probability, and the points disagree
(``ambiguous``). In a deep narrow net nearly every draw lands there (4 hidden layers of width 6
to 8: fewer than 1 in 300 draws is clean). The model says so through its hook
`Model.degenerate_reason(θ)` (``None`` for analytic models; for a `SampledModel`: some recorded
switch constant over the sample, or taking its rarer value on too few inputs, or some parameter
whose generator vanishes on it), and `generic_points` repairs such points part by part:

    for each point i: z_i ~ flow.sample_points
    while z_i is degenerate and the budget lasts:
        for each part B of θ — each parameter block (a layer's weight, a bias, …) in layout
        order, then each row and column of the matrix blocks (one unit's weights), then each
        entry of the vector blocks (one unit's bias or scale):
            z' ← z_i with B redrawn as that part of a fresh draw of its block
                 (`conflow.models.base.draw_block`);
            z_i ← z' if z' is no more degenerate than z_i.

A redraw of one block fixes what a redraw of the whole θ rarely does: a dead unit of layer 4 is
fixed by redrawing layer 4 (or the layers before it) while the layers that already work are kept;
a redraw of one row fixes one unit and keeps the rest of its layer, where in a deep narrow net a
whole-layer redraw seldom leaves every unit clean (eqx 3-11-11-11-11-1 without biases: block
redraws left a point degenerate after 128, rows cleaned it in 173).
Each coordinate of the final z is a draw of an absolutely continuous law, and which draw is kept
depends on z only through the open degeneracy conditions, so the final law has a density
(dominated by the sum, over the finitely many choices of kept draws, of product densities): it
is a draw conditioned on the open set of non-degenerate θ, generic within that set.
Deterministic given ``seed``.

A second pass compares the points' generator ranks (dim W_0, the span of the output gradients):
the rank is lower semicontinuous and drops only on such regions, so a point below the best rank
among the points is repaired again, with the rank as the score (`_match_generator_ranks`).

A point still degenerate when its budget is spent (a unit dead by construction, a guard switch
that never changes) keeps its least degenerate state and is listed in ``degenerate``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import numpy as np

from conflow.errors import InputError
from conflow.flows import AbstractFlow, parse_flow
from conflow.models.base import Model, ParamBlock, draw_block
from conflow.models.custom import brief_error

#: Default number of redraws tried per degenerate point. Measured on Equinox ReLU MLPs with their
#: default input sample, a whole fresh θ is clean (no constant switch, no idle parameter) with
#: probability ~0.3-0.5 for one or two hidden layers of width ≤ 8, ~0.02-0.15 for three, and
#: below 1/300 for four (3-8-8-8-8-1, 4-6-6-6-6-1); repairs clean the four-layer ones in 10-200
#: redraws. One check costs one pattern replay and one VJP over the sample (~1-15 ms for
#: D ≈ 100-400, N ≈ 1,000-3,000).
MAX_REDRAWS = 384
#: All redraws of one call together, both passes: bounds the cost of a model whose every draw is
#: degenerate (a unit dead by construction) to about a thousand checks (seconds).
MAX_TOTAL_REDRAWS = 1024
#: Redraws tried per whole block and sweep before moving on (rows and columns: one each).
TRIES_PER_BLOCK = 4
#: Mixed into the redraw generators' seeds, so they differ from every other draw of ``seed``.
REDRAW_TAG = 0x9E57


@dataclasses.dataclass(frozen=True)
class GenericPoints:
    """Generic points of a flow's state space, degenerate regions avoided where the model can tell.

    Attributes:
        points: shape ``(n, state_dim)``, float64; row i is the first draw of point i unless
            that one was degenerate.
        redrawn: fresh draws made, all points together (0 for analytic models).
        reasons: one line per point whose first draw was degenerate (the model's reason, and
            how many redraws it took, or that it is still degenerate and why), in point order;
            also one per failed degeneracy check (the point is then kept).
        degenerate: indices of the points still degenerate after ``max_redraws`` redraws.
    """

    points: np.ndarray
    redrawn: int
    reasons: tuple[str, ...]
    degenerate: tuple[int, ...]


def degeneracy(model: Model, theta: np.ndarray) -> tuple[int, str | None]:
    """(severity, reason) of θ, shape ``(D,)``: ``model.degeneracy(θ)`` for a model that grades
    it (`SampledModel`: constant switches + idle parameters), else (1, reason) if
    `Model.degenerate_reason` gives one and (0, ``None``) if not. Lower is better; 0 is generic."""
    graded = getattr(model, "degeneracy", None)
    if graded is not None:
        severity, reason = graded(theta)
        return int(severity), reason
    reason = model.degenerate_reason(theta)
    return int(reason is not None), reason


def generic_points(model: Model, flow: AbstractFlow, seed: int, n: int, *,
                   max_redraws: int = MAX_REDRAWS) -> GenericPoints:
    """``n`` generic points of ``flow`` on ``model`` (see module docstring), repairing those the
    model calls degenerate.

    Args:
        model: any `Model`; only piecewise ones (`SampledModel`) ever call a point degenerate.
        flow: a flow of `conflow.flows` (``None``: Euclidean gradient flow); its
            ``sample_points(model, seed, n)`` gives the first draws.
        seed: non-negative integer; same seed, same points.
        n: number of points, ≥ 1.
        max_redraws: redraws tried per degenerate point (0: only report).

    Returns a `GenericPoints`. With no degenerate point, ``points`` equals
    ``flow.sample_points(model, seed, n)``, so analytic models see exactly the old points.
    """
    flow = parse_flow(flow)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"points must be a positive integer, got {n!r}")
    if not isinstance(max_redraws, (int, np.integer)) or max_redraws < 0:
        raise InputError(f"max_redraws must be a non-negative integer, got {max_redraws!r}")
    points = np.array(jax.device_get(flow.sample_points(model, int(seed), int(n))),
                      dtype=np.float64)
    redrawn, reasons, degenerate = 0, [], []
    for i in range(points.shape[0]):
        severity, reason = _assess(model, flow, points[i])
        if not severity:
            if reason:  # the check failed: noted, point kept
                reasons.append(f"point {i}: {reason}")
            continue
        budget = min(max_redraws, MAX_TOTAL_REDRAWS - redrawn)
        rng = np.random.default_rng([int(seed), REDRAW_TAG, i])
        points[i], (severity,), k = _repair(
            model, flow, points[i], rng, budget, lambda z: (_severity(model, flow, z),), (0,))
        redrawn += k
        if severity:
            degenerate.append(i)
            reasons.append(f"point {i}: {reason}; still degenerate after {k} redraws, "
                           f"kept the least degenerate state: {_assess(model, flow, points[i])[1]}")
        else:
            reasons.append(f"point {i}: {reason}; repaired by {k} redraw"
                           f"{'s' if k != 1 else ''}")
    redrawn += _match_generator_ranks(model, flow, seed, points,
                                      min(max_redraws, MAX_TOTAL_REDRAWS - redrawn), reasons,
                                      degenerate)
    return GenericPoints(points, redrawn, tuple(reasons), tuple(sorted(set(degenerate))))


def _moves(model: Model) -> list[tuple[ParamBlock, int, np.ndarray]]:
    """The redraws `_repair` tries, as (block, its offset in θ, the entries redrawn): each whole
    block, then each row and each column of every block of rank ≥ 2 (seen as its (first axis,
    rest) matrix: one unit's incoming or outgoing weights, for Equinox's (out, in) and Flax's
    (in, out) layouts alike), then each entry of every vector block (one unit's bias, or its
    scale in a layer norm: a whole-vector redraw re-rolls every unit of the layer at once)."""
    whole, slices, singles = [], [], []
    offset = 0
    for block in model.blocks:
        entries = np.arange(block.size)
        whole.append((block, offset, entries))
        if len(block.shape) >= 2 and block.size > 1:
            grid = entries.reshape(block.shape[0], -1)
            slices += [(block, offset, row) for row in grid]
            slices += [(block, offset, column) for column in grid.T]
        elif block.size > 1:
            singles += [(block, offset, entries[i:i + 1]) for i in range(block.size)]
        offset += block.size
    return whole + slices + singles


def _repair(model: Model, flow: AbstractFlow, z: np.ndarray, rng: np.random.Generator,
            budget: int, score: Callable[[np.ndarray], tuple], target: tuple
            ) -> tuple[np.ndarray, tuple, int]:
    """Redraw parts of θ in the state z one at a time, keeping a redraw when it does not raise
    ``score`` (a tuple of numbers, severity first, compared lexicographically; ties are kept so
    that the walk can leave a plateau), until the score reaches ``target`` or ``budget`` redraws
    are spent: (state, its score, redraws made).

    Sweeps over the `_moves` in order: `TRIES_PER_BLOCK` redraws of each whole block, then one of
    each row and column of the matrix blocks. A whole-block redraw fixes a layer at once; a row
    fixes one unit without disturbing the others of its layer, which in a deep narrow net a
    whole-layer redraw rarely leaves all clean. A part is redrawn as that part of a fresh draw
    of its block (`draw_block`), a law with a density. The other coordinates of the state
    (momentum's s and v, the time of weight decay) are kept."""
    z = np.array(z, dtype=np.float64)
    current = score(z)
    index = flow.theta_of_state(model, np.arange(z.size))  # where θ sits in the state
    moves = _moves(model)
    k = 0
    while current > target and k < budget and moves:
        for i, (block, offset, entries) in enumerate(moves):
            for _ in range(TRIES_PER_BLOCK if i < len(model.blocks) else 1):
                if current <= target or k >= budget:
                    return z, current, k
                k += 1
                trial = z.copy()
                trial[index[offset + entries]] = draw_block(rng, block, 1)[0][entries]
                got = score(trial)
                if got <= current:
                    z, current = trial, got
    return z, current, k


#: Block redraws per point of the generator-rank pass (each costs a Jacobian and its SVD) ...
MAX_RANK_REDRAWS = 64
#: ... and at most this many Jacobian entries (nN × D per redraw) per point: 12 redraws at
#: N = 3,256, D = 407 (about 0.6 s each on 2 cores), 64 below N × D ≈ 260,000.
RANK_PASS_ENTRIES = 1 << 24
#: Mixed into the seeds of the generator-rank pass's redraws.
RANK_TAG = 0x9E58


def _match_generator_ranks(model: Model, flow: AbstractFlow, seed: int, points: np.ndarray,
                           max_redraws: int, reasons: list, degenerate: list) -> int:
    """Repair points whose generators span less than at another point; returns the redraws made.

    For a piecewise model the output gradients at a generic θ of the architecture's generic
    region span dim W_0 = r*; at θ where a unit is active on too few inputs of the sample (a
    sliver: no switch constant, no parameter idle, yet its incoming weights not spanned) they
    span less, and the count there is higher. The rank is lower semicontinuous and can only
    drop on such regions, so the largest rank among the points is the best estimate of r*; points
    below it are repaired with (severity, −rank) as the score (points in place, reasons and
    degenerate indices appended). Models without ``generator_rank`` (analytic ones), or too large
    for it, are left alone.
    """
    rank_of = getattr(model, "generator_rank", None)
    if rank_of is None:
        return 0
    budget = min(max_redraws, MAX_RANK_REDRAWS, RANK_PASS_ENTRIES // max(model.d * model.D, 1))
    if budget == 0:
        return 0
    ranks = [rank_of(flow.theta_of_state(model, z)) for z in points]
    if any(r is None for r in ranks):
        return 0

    def score(z):  # (severity, −rank); the rank is computed on clean states only
        severity = _severity(model, flow, z)
        return (severity, 0 if severity else -rank_of(flow.theta_of_state(model, z)))

    redrawn = 0
    for _ in range(2):  # a repair may raise the best rank: the points before it are rechecked
        for i in range(points.shape[0]):
            start = ranks[i]
            if start >= max(ranks):
                continue
            rng = np.random.default_rng([int(seed), RANK_TAG, i, start])
            points[i], got, k = _repair(model, flow, points[i], rng, budget, score,
                                        (0, -max(ranks)))
            ranks[i] = rank_of(flow.theta_of_state(model, points[i]))
            redrawn += k
            reasons.append(f"point {i}: output gradients span {start} < {max(ranks)} "
                           f"directions (a unit active on too few inputs?); {k} redraw"
                           f"{'s' if k != 1 else ''}, now {ranks[i]}")
    degenerate.extend(i for i, r in enumerate(ranks) if r < max(ranks))
    return redrawn


def _severity(model: Model, flow: AbstractFlow, z: np.ndarray) -> int:
    """The severity of `_assess`, without building its reason where the model grades it alone
    (`SampledModel.severity`: the score of every redraw)."""
    graded = getattr(model, "severity", None)
    if graded is None:
        return _assess(model, flow, z)[0]
    try:
        return int(graded(flow.theta_of_state(model, z)))
    except Exception:  # noqa: BLE001 - as `_assess`: a failed check counts as generic
        return 0


def _assess(model: Model, flow: AbstractFlow, z: np.ndarray) -> tuple[int, str | None]:
    """(severity, reason) of the state z (`degeneracy` of its θ). A check that raises counts as
    generic (it is a diagnostic, it must not stop a count): (0, what failed)."""
    try:
        return degeneracy(model, flow.theta_of_state(model, z))
    except Exception as e:  # noqa: BLE001
        return 0, f"degeneracy check failed: {brief_error(e)}"
