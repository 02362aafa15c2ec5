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
(``ambiguous``). The model says so through its hook `Model.degenerate_reason(θ)` (``None`` for
analytic models; for a `SampledModel`: some recorded switch constant over the sample, or some
parameter whose generator vanishes on it), and `generic_points` redraws such points:

    for each point i: z_i ~ flow.sample_points; while degenerate(θ(z_i)) and k ≤ max_redraws:
        z_i ← one fresh draw with the generator default_rng([seed, REDRAW_TAG, i, k]).

A kept point is then a draw of the same law conditioned on the open set of non-degenerate θ: it
still has a density there, so it is generic within that set. Deterministic given ``seed``. A point
still degenerate after ``max_redraws`` attempts (a unit dead by construction, a guard switch that
never changes, a deep net whose non-degenerate set is too small to hit) keeps its least
degenerate draw (fewest constant switches plus idle parameters, `SampledModel.degeneracy`; the
first draw for other models) and is listed in ``degenerate``.

Not detected: a unit that changes on only a few inputs (a sliver of the sample); its generators
may still be too few to span. `count_laws_from_model`'s doubled-sample recount is the check there.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from conflow.errors import InputError
from conflow.flows import AbstractFlow, parse_flow
from conflow.models.base import Model
from conflow.models.custom import brief_error

#: Default number of fresh draws tried per degenerate point. Measured on Equinox ReLU MLPs with
#: biases and their default input sample, a draw is generic (no constant switch, no idle
#: parameter) with probability ~0.3-0.5 for one or two hidden layers of width ≤ 8, ~0.02-0.15 for
#: three, and below 1/300 for four (3-8-8-8-8-1, 2-6-6-6-6-3: nearly every θ has idle weights,
#: whatever the input sample). One check costs one pattern replay and one VJP over the sample
#: (~5 ms for D ≈ 100, N ≈ 500).
MAX_REDRAWS = 32
#: All redraws of one call together, both passes: bounds the cost of a model whose every draw is
#: degenerate (a unit dead by construction, a deep narrow net) to a few hundred checks.
MAX_TOTAL_REDRAWS = 96
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
    """``n`` generic points of ``flow`` on ``model`` (see module docstring), redrawing those the
    model calls degenerate.

    Args:
        model: any `Model`; only piecewise ones (`SampledModel`) ever call a point degenerate.
        flow: a flow of `conflow.flows` (``None``: Euclidean gradient flow); its
            ``sample_points(model, seed, n)`` gives the first draws.
        seed: non-negative integer; same seed, same points.
        n: number of points, ≥ 1.
        max_redraws: fresh draws tried per degenerate point (0: only report).

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
        first, best, k = reason, (severity, reason, points[i]), 0
        while best[0] and k < max_redraws and redrawn + k < MAX_TOTAL_REDRAWS:
            k += 1
            rng = np.random.default_rng([int(seed), REDRAW_TAG, i, k])
            z = np.asarray(jax.device_get(flow.sample_points(model, rng, 1)), dtype=np.float64)[0]
            severity, reason = _assess(model, flow, z)
            if severity < best[0]:
                best = (severity, reason, z)
        redrawn += k
        points[i] = best[2]
        if best[0]:
            degenerate.append(i)
            reasons.append(f"point {i}: {first}; still degenerate after {k} redraws, kept the "
                           f"least degenerate draw: {best[1]}")
        else:
            reasons.append(f"point {i}: {first}; redrawn {k} time{'s' if k != 1 else ''}")
    redrawn += _match_generator_ranks(model, flow, seed, points,
                                      min(max_redraws, MAX_TOTAL_REDRAWS - redrawn), reasons,
                                      degenerate)
    return GenericPoints(points, redrawn, tuple(reasons), tuple(sorted(set(degenerate))))


#: Redraws per point of the generator-rank pass (each costs a Jacobian and its SVD).
MAX_RANK_REDRAWS = 16
#: Mixed into the seeds of the generator-rank pass's redraws.
RANK_TAG = 0x9E58


def _match_generator_ranks(model: Model, flow: AbstractFlow, seed: int, points: np.ndarray,
                           max_redraws: int, reasons: list, degenerate: list) -> int:
    """Redraw points whose generators span less than at another draw; returns the redraws made.

    For a piecewise model the output gradients at a generic θ of the architecture's generic
    region span dim W_0 = r*; at θ where a unit is active on too few inputs of the sample (a
    sliver: no switch constant, no parameter idle, yet its incoming weights not spanned) they
    span less, and the count there is higher. The rank is lower semicontinuous and can only
    drop on such regions, so the largest rank among the draws is the best estimate of r*; points
    below it are redrawn (points in place, reasons and degenerate indices appended). Models
    without ``generator_rank`` (analytic ones), or too large for it, are left alone.
    """
    rank_of = getattr(model, "generator_rank", None)
    if rank_of is None or min(max_redraws, MAX_RANK_REDRAWS) == 0:
        return 0
    ranks = [rank_of(flow.theta_of_state(model, z)) for z in points]
    if any(r is None for r in ranks):
        return 0
    redrawn = 0
    for _ in range(2):  # a redraw may raise the best rank: the points before it are rechecked
        for i in range(points.shape[0]):
            start, k = ranks[i], 0
            while ranks[i] < max(ranks) and k < min(max_redraws, MAX_RANK_REDRAWS):
                k += 1
                rng = np.random.default_rng([int(seed), RANK_TAG, i, k, start])
                z = np.asarray(jax.device_get(flow.sample_points(model, rng, 1)), dtype=np.float64)[0]
                if _assess(model, flow, z)[0]:
                    continue
                r = rank_of(flow.theta_of_state(model, z))
                if r > ranks[i]:
                    points[i], ranks[i] = z, r
            redrawn += k
            if k:
                reasons.append(f"point {i}: output gradients span {start} < {max(ranks)} "
                               f"directions (a unit active on too few inputs?); redrawn {k} "
                               f"time{'s' if k != 1 else ''}")
    degenerate.extend(i for i, r in enumerate(ranks) if r < max(ranks))
    return redrawn


def _assess(model: Model, flow: AbstractFlow, z: np.ndarray) -> tuple[int, str | None]:
    """(severity, reason) of the state z (`degeneracy` of its θ). A check that raises counts as
    generic (it is a diagnostic, it must not stop a count): (0, what failed)."""
    try:
        return degeneracy(model, flow.theta_of_state(model, z))
    except Exception as e:  # noqa: BLE001
        return 0, f"degeneracy check failed: {brief_error(e)}"
