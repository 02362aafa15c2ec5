"""The Lie-trace engine: dim Lie(W)(z) at generic points, level by level, blind.

Given a generator family G(z, a) = Σ_j a_j χ_j(z) on R^n (linear in a ∈ R^m), the engine builds the
increasing sequence of MATH.md §1.6,

    W_0 = span{χ_j},    W_{k+1} = W_k + [W_0, W_k],    Lie(W) = ∪_k W_k,

and tracks its trace W_k(z) ⊆ R^n at P random generic points z. Level k is spanned by the
right-nested brackets ad_{G(a_0)}⋯ad_{G(a_{k-1})}G(a_k) (multilinear in the a's), so random
coefficients with a density give generic elements; S ≥ (remaining dimension) + margin samples
span the level's trace with probability one, and a stack of fewer that leaves samples to spare
has spanned it too. The brackets are evaluated on the devices
(`conflow.engine.evaluate`); each level's samples, normalised by their cancellation scale and
inherited rounding (`conflow.engine.rank`), are cut by their singular values σ against the trace
found so far: σ above the stack's band (`conflow.engine.rank.RankBand`) are new directions
(`conflow.engine.levels`).

Where the linear algebra runs (``linalg``): ``device`` keeps every point's trace on the device
that evaluated the brackets (`conflow.engine.device_basis`: CGS2 projections and one batched SVD
per stack; only σ's reach the host); ``host`` cuts on the CPU with LAPACK (complement bases, or
Householder trace bases when streamed); ``auto`` picks by backend (`default_linalg`). How a
level is stacked (``algorithm``): ``dense`` cuts a whole level at once (O(n³) time, O(n²) memory
per point), ``streamed`` in blocks of samples (O(n r²) time, O(n r) memory for a trace of
dimension r; no level is ever stacked).

The construction stops when a level adds no direction at any point (stagnation: then
Lie(W)(z) = W_k(z), MATH.md §1.6 criterion 2), when the trace is all of R^n, at the depth cap
or at the time limit, where the result is ``not_converged`` and no count is given, or at a level
whose band cannot tell directions from rounding (`conflow.engine.levels.blind_level`:
``ambiguous``). The engine is
never told an expected count.

Evidence kept: the rank per level and point, the smallest kept σ (σ_r) and the largest dropped σ
(σ_{r+1}) over all levels and points, their ratio (the gap), the σ's on each side of the cut, and
whether all points agree. Status ``ambiguous`` when a σ lies inside its band (neither rounding
nor a clear direction), when generator directions are so weak that their brackets would sink
below rounding, when the gap is below ``min_gap``, or when points disagree.

Coefficients: a family may give a ``sample_field`` evaluated on structured coefficients (tensor
products whose image spans R^m), so that a generic element costs one forward pass where Σ_j a_j χ_j
would cost a pass over all m generators (`VectorFamily`).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from typing import Any

import jax
import numpy as np
from jaxtyping import Float

from conflow.engine.device_basis import DeviceBases
from conflow.engine.evaluate import (
    batch_sharding,
    costly_field,
    evaluate_stage,
    prepare,
    put,
)
from conflow.engine.family import VectorFamily
from conflow.engine.levels import (
    LevelRecord,
    Levels,
    TraceBases,
    dense_levels,
    device_levels,
    streamed_levels,
)
from conflow.engine.rank import DEFAULT_MIN_GAP, RankBand, gap_ratio, rank_band
from conflow.errors import InputError
from conflow.precision import float64
from conflow.status import Status

__all__ = ["LevelRecord", "LieTrace", "TraceBases", "VectorFamily", "batch_sharding", "lie_trace"]

Array = jax.Array

OK, AMBIGUOUS, NOT_CONVERGED = Status.OK, Status.AMBIGUOUS, Status.NOT_CONVERGED


@dataclasses.dataclass(frozen=True)
class LieTrace:
    """Result of `lie_trace`: dim Lie(W)(z) at generic points, with its evidence.

    Attributes:
        dim: dim Lie(W)(z), agreed by all points; ``None`` unless ``status == "ok"``.
        state_dim: n.
        status: ``"ok"``, ``"ambiguous"`` (gap below ``min_gap`` or points disagree) or
            ``"not_converged"`` (depth cap reached while the trace was still growing).
        reason: one line explaining a non-ok status (empty when ok).
        point_dims: the dimension reached at each point.
        n_agree: how many points gave the most common dimension.
        levels: one `LevelRecord` per level evaluated.
        depth: the deepest level evaluated.
        sigma_r: smallest kept normalised singular value over all levels and points.
        sigma_r1: largest dropped normalised singular value over all levels and points.
        gap: sigma_r / sigma_r1.
        kept_tail: the three smallest kept singular values, largest first (just above the cut).
        dropped_head: the three largest dropped singular values, largest first (just below it).
        points: the generic points, shape ``(P, n)``.
        rtol: the user's cut (``None``: each stack is cut inside its `RankBand`).
        min_gap: σ_r / σ_{r+1} below this makes the result ``ambiguous``.
        uncertain: singular values found inside a band (largest first, at most 5).
        seconds: total wall time, compilation included.
        dtype: the floating-point type the brackets were evaluated in.
        algorithm: ``"dense"`` (a level's samples stacked and cut by one SVD) or ``"streamed"``
            (blocks of samples added to an orthonormal trace basis).
        linalg: where the levels were cut: ``"device"`` (`conflow.engine.device_basis`) or
            ``"host"`` (LAPACK on the CPU).
        basis: the trace at each point as orthonormal rows (`TraceBases`: rows p span
            Lie(W)(z_p); their orthogonal complement is spanned by the gradients of the laws
            there), kept with ``keep_basis``; else ``None``.
        started_from: the dimensions of the trace the count started from at each point
            (`lie_trace`'s ``start``), or ``()``.
    """

    dim: int | None
    state_dim: int
    status: Status
    reason: str
    point_dims: tuple[int, ...]
    n_agree: int
    levels: tuple[LevelRecord, ...]
    depth: int
    sigma_r: float | None
    sigma_r1: float | None
    gap: float
    kept_tail: tuple[float, ...]
    dropped_head: tuple[float, ...]
    points: np.ndarray = dataclasses.field(repr=False)
    rtol: float | None = None
    min_gap: float = DEFAULT_MIN_GAP
    seconds: float = 0.0
    dtype: str = "float64"
    algorithm: str = "dense"
    linalg: str = "host"
    uncertain: tuple[float, ...] = ()
    basis: TraceBases | None = dataclasses.field(default=None, repr=False, compare=False)
    started_from: tuple[int, ...] = ()

    @property
    def ranks(self) -> tuple[tuple[int, ...], ...]:
        """dim W_k(z_p) for each level k (rows) and point p (columns)."""
        return tuple(level.ranks for level in self.levels)


#: How far above everything level 1 dropped the brackets of weak generators (~s0²) must stand
#: for that level to be evidence that they add nothing (`_weak_generators`).
WEAK_BRACKET_MARGIN = 10.0


def _weak_generators(levels: list[LevelRecord]) -> str:
    """Why level 1 cannot be trusted, or ''. Generator directions with normalised σ = s0 at
    level 0 have brackets among themselves of relative size ~s0²; at or below level 1's noise
    ceiling those would be called rounding (generators nearly parallel), so "level 1 adds
    nothing more" is then no evidence — unless the level-1 stack itself shows that it holds
    nothing that large: a bracket direction of size s0² would stand at σ ≳ s0² in it (Weyl), so
    when every σ it dropped lies `WEAK_BRACKET_MARGIN` × below s0², there is none. (The
    ceiling bounds the complement's error from the weak directions' worst case, and is often
    far above the rounding the stack shows: the noise of a stack is spread over all the
    directions its rows' errors take, as in `RankBand.separated`.)"""
    if len(levels) < 2 or levels[0].sigma_kept is None or levels[1].noise is None:
        return ""
    s0, level1 = levels[0].sigma_kept, levels[1]
    if s0 * s0 > level1.noise:
        return ""
    shown = level1.sigma_dropped
    if shown is not None and s0 * s0 >= WEAK_BRACKET_MARGIN * shown:
        return ""
    return (f"weak generator directions (σ = {s0:.2e} at depth 0): their brackets "
            f"(~{s0 * s0:.1e}) are below the rounding of depth 1 (noise ceiling "
            f"{level1.noise:.1e}" + ("" if shown is None else f", largest σ dropped {shown:.1e}")
            + ")")


#: How the reason of a trace stopped by its depth cap starts.
STILL_GROWING = "the trace was still growing at depth"
#: A count shows its progress bar once it has run this long (seconds).
PROGRESS_DELAY = 2.0


def progress_bar(enabled: bool | None, total: int, desc: str) -> Any:
    """A tqdm bar on stderr that appears after `PROGRESS_DELAY` seconds; ``enabled=None``:
    only when stderr is a terminal."""
    from tqdm import tqdm

    disable = not sys.stderr.isatty() if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="level", file=sys.stderr, leave=False,
                delay=PROGRESS_DELAY, disable=disable)


# Above this state dimension `lie_trace` streams by default: the dense engine's SVD of a
# (c + margin) × c stack costs O(n³) time and O(n²) memory per point.
DENSE_MAX_DIM = 2048
ALGORITHMS = ("auto", "dense", "streamed")
LINALGS = ("auto", "host", "device")


#: Environment variable that sets where ``linalg="auto"`` cuts the levels (host or device).
LINALG_ENV = "CONFLOW_LINALG"


def default_linalg() -> str:
    """Where ``linalg="auto"`` cuts the levels: `LINALG_ENV` if set, else on the device for
    accelerators (the brackets' data never leaves it) and on the host (LAPACK) for CPUs, where
    it measured faster (`benchmarks/bench_scaling.py --linalg both`)."""
    chosen = os.environ.get(LINALG_ENV, "").strip().lower()
    if chosen:
        if chosen not in LINALGS[1:]:
            raise InputError(f"{LINALG_ENV} must be host or device, got {chosen!r}")
        return chosen
    return "host" if jax.default_backend() == "cpu" else "device"


@jax.jit
def _rows_of(x: Array, which: Array) -> Array:
    return x[which]


@float64
def lie_trace(
    family: VectorFamily,
    points: Float[Array, "P n"],
    *,
    seed: int = 0,
    max_depth: int = 10,
    rtol: float | None = None,
    min_gap: float = DEFAULT_MIN_GAP,
    max_chunk: int = 256,
    max_chunk_floats: int = 1 << 24,
    devices: int | None = None,
    dtype: str = "float64",
    algorithm: str = "auto",
    block: int = 512,
    linalg: str = "auto",
    time_limit: float | None = None,
    progress: bool | None = None,
    start: TraceBases | None = None,
    keep_basis: bool = False,
) -> LieTrace:
    """dim Lie(W)(z) at each of ``points`` by the level construction W_{k+1} = W_k + [W_0, W_k].

    Args:
        family: the generators, as a `VectorFamily` on R^n.
        points: generic points, shape ``(P, n)`` (P ≥ 3 recommended: agreement is evidence).
        seed: seed of the random coefficient samples (the result is a function of it).
        max_depth: deepest bracket level evaluated; reaching it while the trace still grows gives
            status ``not_converged``.
        rtol: where each normalised stack is cut (above: directions). Default ``None``: inside
            the stack's `conflow.engine.rank.RankBand`, between its noise ceiling (a multiple of the
            rounding floor u(√S + √c) of an S × c stack) and its signal floor. Whatever the cut,
            a singular value inside the band makes the result ``ambiguous``.
        min_gap: σ_r / σ_{r+1} below this makes the result ``ambiguous``.
        max_chunk: largest number of samples evaluated per compiled call and point.
        max_chunk_floats: bound on the coefficient floats per call (memory).
        devices: number of local devices the bracket batches (and, with ``linalg="device"``,
            the points' traces) are sharded over (default: all; 1 disables sharding). Counts do
            not depend on it.
        dtype: ``"float64"`` (default) or ``"float32"``. float32 brackets carry ~1e-7 relative
            rounding, so the band moves with the unit roundoff (and narrows), matrix
            products run at "highest" precision (no TF32 on GPUs), and a warning says the gap may
            not separate; the result reports the dtype.
        algorithm: ``"dense"`` stacks each level and cuts it with one SVD: O(n³) time and O(n²)
            memory per point. ``"streamed"`` cuts blocks of ``block`` samples against an
            orthonormal basis of the trace: O(n r²) time and O(n r) memory for a trace of
            dimension r. ``"auto"`` (default): dense up to n = ``DENSE_MAX_DIM``.
        block: samples per block of the streamed algorithm.
        linalg: ``"device"`` (traces on the device, `conflow.engine.device_basis`), ``"host"``
            (LAPACK on the CPU) or ``"auto"`` (`default_linalg`). Both cut the same ranks.
        time_limit: seconds; a count still running then stops between levels (or blocks) with
            status ``not_converged``, keeping the levels done.
        progress: a progress bar on stderr (levels; blocks and the trace's dimension), shown
            once the count has run `PROGRESS_DELAY` seconds; ``None`` (default): only when
            stderr is a terminal.
        start: the trace (`LieTrace.basis`) of fields W' ⊆ W at the same ``points`` (the same
            network on fewer inputs): the levels start from it and stop only at a level at
            least as deep as its last that adds nothing (`conflow.engine.levels.dense_levels`
            says why that is the plain test).
        keep_basis: keep the trace's orthonormal rows at each point in ``basis`` (the streamed
            algorithm forms them, and the device's are brought to the host: r × n floats per
            point).

    Returns:
        A `LieTrace`. The count of conservation laws is ``state_dim - dim``.
    """
    t_start = time.perf_counter()
    if dtype not in ("float64", "float32"):
        raise InputError(f"dtype must be float64 or float32, got {dtype!r}")
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    if linalg not in LINALGS:
        raise InputError(f"unknown linalg {linalg!r}; known: {', '.join(LINALGS)}")
    if block < 2:
        raise InputError(f"block must be >= 2, got {block}")
    if time_limit is not None and not time_limit > 0:
        raise InputError(f"time_limit must be > 0 seconds, got {time_limit}")
    if dtype == "float32":
        warnings.warn("float32 brackets: rounding is ~1e-7, so the singular-value gap may not "
                      "separate directions from noise; prefer float64", stacklevel=2)
    if rtol is not None and not 0 < rtol < 1:
        raise InputError(f"rtol must be in (0, 1), got {rtol}")
    if not min_gap >= 1:
        raise InputError(f"min_gap must be >= 1, got {min_gap}")
    points = check_points(family, points)
    n, m = family.state_dim, family.n_coeffs
    if n < 1 or m < 1:
        raise InputError(f"a family needs n >= 1 and m >= 1 (got n={n}, m={m})")
    if algorithm == "auto":
        algorithm = "dense" if n <= DENSE_MAX_DIM else "streamed"
    if linalg == "auto":
        linalg = default_linalg()
    P = points.shape[0]
    if start is not None and (len(start.rows) != P
                              or any(r.shape[1:] != (n,) for r in start.rows)):
        raise InputError(f"the start trace is not at these {P} points of R^{n}")
    # the generators as matrices where the family gives them cheaply: level 0 is their products
    # with random coefficients, not evaluations of the field
    prep = prepare(family, points, dtype, devices)
    field, n_sample, fast, sharding = prep.field, prep.n_sample, prep.fast, prep.sharding
    on_device, matrices, weights = prep.points, prep.matrices, prep.weights
    rng = np.random.default_rng(seed)

    def evaluate(which: np.ndarray, first: int, depth: int, n_samples: int,
                 chunk: int | None = None):
        z, w, g = on_device, weights, matrices
        if len(which) < P:  # a subset of the points (the host's streamed levels)
            index = put(np.asarray(which), sharding)
            z = _rows_of(z, index)
            w = None if w is None else _rows_of(w, index)
            g = None if g is None else _rows_of(g, index)
        with jax.default_matmul_precision("highest"):
            if depth == 0 and (level0 := prep.level0(rng, n_samples, z, g, w)) is not None:
                return level0
            return evaluate_stage(field, n_sample, z, rng, first, depth, n_samples, fast,
                                  max_chunk if chunk is None else min(chunk, max_chunk),
                                  max_chunk_floats, sharding, w)

    def band_for(n_rows: int, n_cols: int, basis_error: float) -> RankBand:
        return rank_band(n_rows, n_cols, dtype, rtol, basis_error, min_gap)

    def expired() -> bool:
        return time_limit is not None and time.perf_counter() - t_start > time_limit

    with progress_bar(progress, max_depth + 1, f"Lie trace ({algorithm}, {linalg}, n={n}, "
                      f"{P} points)") as bar:
        if linalg == "device":
            found = device_levels(evaluate, DeviceBases(P, n, dtype, sharding), m, max_depth,
                                  band_for, None if algorithm == "dense" else block, bar, expired,
                                  time_limit, costly_field(family), start, keep_basis)
        elif algorithm == "dense":
            found = dense_levels(evaluate, P, n, m, max_depth, band_for, bar, expired, time_limit,
                                 costly_field(family), start, keep_basis)
        else:
            found = streamed_levels(evaluate, P, n, m, max_depth, band_for, block, bar, expired,
                                    time_limit, costly_field(family), start, keep_basis)
    trace = _verdict(found, P, n, points, rtol, min_gap, time.perf_counter() - t_start, dtype,
                     algorithm, linalg, max_depth)
    return dataclasses.replace(trace, basis=found.final,
                               started_from=() if start is None else start.dims)


def _verdict(found: Levels, P: int, n: int, points: np.ndarray, rtol: float | None,
             min_gap: float, seconds: float, dtype: str, algorithm: str, linalg: str,
             max_depth: int) -> LieTrace:
    """The `LieTrace` of what a level loop found: its status, reason and evidence."""
    levels, dims, kept, dropped = found.records, found.dims, found.kept, found.dropped
    uncertain = sorted((x for level in levels for x in level.uncertain), reverse=True)
    values_, counts = np.unique(dims, return_counts=True)
    mode = int(values_[np.argmax(counts)])
    n_agree = int(np.max(counts))
    sigma_r = min(kept) if kept else None
    sigma_r1 = max(dropped) if dropped else None
    gap = gap_ratio(sigma_r, sigma_r1)
    if levels and levels[-1].saturated:
        status, reason = AMBIGUOUS, (
            f"level {levels[-1].depth} kept more directions than its samples can span: "
            "rounding noise was counted"
            + ("" if rtol is None else f" (rtol {rtol:g} is too small)")
        )
    elif found.blind:
        status, reason = AMBIGUOUS, found.blind
    elif found.stopped:
        status, reason = NOT_CONVERGED, found.stopped
    elif not found.converged:
        status, reason = NOT_CONVERGED, (
            f"{STILL_GROWING} {max_depth} (raise max_depth)"
        )
    elif uncertain:
        where = next(level for level in levels if level.uncertain)
        status, reason = AMBIGUOUS, (
            f"{len(uncertain)} singular value(s) neither rounding nor clear directions: "
            f"{where.uncertain[0]:.2e} at depth {where.depth} (noise ceiling {where.noise:.1e}, "
            f"signal floor {where.signal:.1e})"
            + ("" if rtol is None else f", cut at rtol {rtol:g}"))
    elif weak := _weak_generators(levels):
        status, reason = AMBIGUOUS, weak
    elif n_agree < P:
        status, reason = AMBIGUOUS, f"points disagree: dimensions {tuple(dims)}"
    elif gap < min_gap:
        status, reason = AMBIGUOUS, f"gap {gap:.3g} below {min_gap:.3g}: the cut is not clear"
    else:
        status, reason = OK, ""
    return LieTrace(
        dim=mode if status == OK else None,
        state_dim=n,
        status=status,
        reason=reason,
        point_dims=tuple(dims),
        n_agree=n_agree,
        levels=tuple(levels),
        depth=levels[-1].depth if levels else 0,
        sigma_r=sigma_r,
        sigma_r1=sigma_r1,
        gap=gap,
        kept_tail=tuple(sorted(kept)[:3][::-1]),
        dropped_head=tuple(sorted(dropped, reverse=True)[:3]),
        points=points,
        rtol=rtol,
        min_gap=min_gap,
        seconds=seconds,
        dtype=dtype,
        algorithm=algorithm,
        linalg=linalg,
        uncertain=tuple(uncertain[:5]),
    )


def check_points(family: VectorFamily, points: Array) -> np.ndarray:
    """``points`` as a float64 host array ``(P, n)``; `InputError` unless finite, n columns."""
    points = np.asarray(jax.device_get(points), dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != family.state_dim:
        raise InputError(
            f"points must have shape (P, {family.state_dim}), got {tuple(points.shape)}"
        )
    if points.shape[0] < 1:
        raise InputError("at least one point is needed")
    if not np.all(np.isfinite(points)):
        raise InputError("points contain NaN or inf")
    return points
