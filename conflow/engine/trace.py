"""The Lie-trace engine: dim Lie(W)(z) at generic points, level by level, blind.

Given a generator family G(z, a) = Σ_j a_j χ_j(z) on R^n (linear in a ∈ R^m), the engine builds the
increasing sequence of MATH.md §1.6,

    W_0 = span{χ_j},    W_{k+1} = W_k + [W_0, W_k],    Lie(W) = ∪_k W_k,

and tracks its trace W_k(z) ⊆ R^n at P random generic points z. Level k is spanned by the
right-nested brackets ad_{G(a_0)}⋯ad_{G(a_{k-1})}G(a_k) (multilinear in the a's), so random
coefficients with a density (uniform, unit variance) give generic elements; S ≥ (remaining
dimension) + margin samples span the level's trace with probability one.

Two algorithms cut the levels, with the same evidence. ``dense`` (small n): at each point an
orthonormal basis B of the complement of the trace found so far; a level's samples are normalised
by their cancellation scale and inherited rounding (see `conflow.engine.rank`), projected onto B, and
their singular values σ decide how many new directions the level adds (σ above the stack's band,
`conflow.engine.rank.RankBand`); kept directions leave B. O(n³) time,
O(n²) memory per point. ``streamed`` (large n): samples come in blocks, and each block's residual
against the trace found so far is cut the same way and its kept directions join the trace
(`conflow.engine.streamed_basis`, Householder reflectors); a level is complete once a block has samples to
spare. O(n r²) time and O(n r) memory for a trace of dimension r; no level is ever stacked.

The construction stops when a level adds no direction at any point (stagnation: then
Lie(W)(z) = W_k(z), MATH.md §1.6 criterion 2), when the trace is all of R^n, or at the depth cap,
where the result is ``not_converged`` and no count is given. The engine is never told an
expected count.

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
import functools
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Float

from conflow.engine.brackets import Family, bracket_chain
from conflow.engine.distributed import global_array, to_host
from conflow.engine.rank import (
    DEFAULT_MIN_GAP,
    RankBand,
    cut_spectrum,
    gap_ratio,
    normalise_rows,
    rank_band,
    rounding_amplification,
    row_space_svd,
)
from conflow.engine.streamed_basis import TraceBasis
from conflow.errors import InputError
from conflow.precision import float64
from conflow.status import Status

Array = jax.Array

OK, AMBIGUOUS, NOT_CONVERGED = Status.OK, Status.AMBIGUOUS, Status.NOT_CONVERGED
#: (rows, columns, error of the complement) of a normalised stack ↦ its `RankBand`.
BandFn = Callable[[int, int, float], RankBand]


def _basis_error(error: float, band: RankBand, sigma: np.ndarray, k: int) -> float:
    """The error bound of a trace basis after a stack added ``k`` directions, the weakest
    σ_k: sin θ ≲ rounding / σ_k (Wedin), the largest over its stacks (`RankBand`)."""
    return max(error, band.rounding / float(sigma[k - 1])) if k else error


@dataclasses.dataclass(frozen=True)
class VectorFamily:
    """A family of vector fields on R^n, linear in its coefficients.

    Attributes:
        field: ``(z, a) -> R^n`` with ``z`` of shape ``(n,)`` and ``a`` of shape ``(m,)``, linear in
            ``a``: field(z, a) = Σ_j a_j χ_j(z). Must be a JAX-traceable function.
        state_dim: n.
        n_coeffs: m, the number of generators χ_j.
        name: for reports.
        sample_field: optional ``(z, f) -> R^n``, equal to ``field(z, a(f))`` for *structured*
            coefficient vectors a(f) ∈ R^m, f of shape ``(n_sample_coeffs,)``, where a is a
            polynomial map whose image spans R^m (e.g. tensor products of per-layer vectors: then
            a generic element Σ_j a_j χ_j of W_0 is the gradient of one forward pass, never a sum
            over the m generators). Random f with a density then give generic elements of every
            level (the image of an irreducible variety is not contained in a proper subspace of
            its span), so the engine draws f and evaluates ``sample_field`` when it is given.
        n_sample_coeffs: length of f.
    """

    field: Family
    state_dim: int
    n_coeffs: int
    name: str = ""
    sample_field: Family | None = None
    n_sample_coeffs: int | None = None

    @property
    def sampled(self) -> tuple[Family, int]:
        """The field the engine evaluates on random coefficients, and their number."""
        if self.sample_field is not None:
            return self.sample_field, int(self.n_sample_coeffs)
        return self.field, self.n_coeffs


@dataclasses.dataclass(frozen=True)
class LevelRecord:
    """One level W_depth of the construction.

    Attributes:
        depth: bracket depth k (0 = the generators themselves).
        samples: number of random nested brackets evaluated per point.
        ranks: dim W_depth(z_p) at each point.
        added: directions this level added at each point.
        sigma_kept: smallest singular value kept at this level (over points), or ``None``.
        sigma_dropped: largest singular value dropped at this level (over points), or ``None``.
        seconds: wall time of the level (evaluation + linear algebra).
        saturated: at some point the level's rank reached its number of samples, which only
            noise can do (an rtol below rounding): the count is then ambiguous.
        uncertain: the singular values of this level, at any point, that their `RankBand` does
            not settle (largest first): between the noise ceiling and the signal floor, or put
            on the wrong side of the band by a user's rtol. A count with any is ambiguous.
        noise, signal: the band of the level's first stack (``None`` if nothing was cut).
    """

    depth: int
    samples: int
    ranks: tuple[int, ...]
    added: tuple[int, ...]
    sigma_kept: float | None
    sigma_dropped: float | None
    seconds: float
    saturated: bool = False
    uncertain: tuple[float, ...] = ()
    noise: float | None = None
    signal: float | None = None


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
            (blocks of samples added to an orthonormal trace basis, `conflow.engine.streamed_basis`).
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
    uncertain: tuple[float, ...] = ()

    @property
    def ranks(self) -> tuple[tuple[int, ...], ...]:
        """dim W_k(z_p) for each level k (rows) and point p (columns)."""
        return tuple(level.ranks for level in self.levels)


def _margin(c: int) -> int:
    return 8 + c // 16


def _samples_needed(complements: list[np.ndarray], m: int, depth: int) -> int:
    """Samples that span level ``depth`` modulo the trace found so far, at every point.

    The level adds at most min(c, m^(depth+1)) directions (c = largest remaining complement,
    m^(depth+1) = number of distinct right-nested brackets); a margin on top guards against
    unlucky draws.
    """
    c_max = max(c.shape[0] for c in complements)
    return min(c_max, _n_brackets(m, depth, c_max)) + _margin(c_max)


def _n_brackets(m: int, depth: int, cap: int) -> int:
    """m^(depth+1), the number of right-nested brackets of ``depth``, or ``cap`` if larger."""
    return m ** (depth + 1) if (depth + 1) * math.log2(max(m, 2)) < 62 else cap


def _next_pow2(k: int) -> int:
    return 1 << max(0, (k - 1).bit_length())


# XLA's LLVM optimisation passes dominate the compile time of deeply nested brackets while buying
# little on small states; below this state dimension the bracket kernels are compiled at -O0,
# without the fusion emitters and in one codegen unit (≈ 2× faster compiles, measured).
_FAST_COMPILE_MAX_DIM = 512
_FAST_COMPILE_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}


# Primitives whose -O0 code is far slower than optimised code (an Equinox Conv1d CNN: 673 s at
# -O0 against 11 s optimised, measured): families using them are always compiled optimised.
_SLOW_UNOPTIMISED = ("conv_general_dilated",)


def _uses_slow_unoptimised_ops(family: VectorFamily) -> bool:
    field, k = family.sampled
    jaxpr = jax.make_jaxpr(field)(jnp.zeros(family.state_dim), jnp.zeros(k))
    text = str(jaxpr)
    return any(name in text for name in _SLOW_UNOPTIMISED)


@functools.lru_cache(maxsize=256)
def _stage_evaluator(
    field: Family, depth: int, first: int, fast_compile: bool, sharding: NamedSharding | None
) -> Callable:
    """jit(vmap over a flat batch) of a bracket chain of ``depth``, keeping levels ``first..``.

    Signature of the result: ``(z (P·S, n), coeffs (S, depth + 1, m), weights (P, m) | None) ->
    (values (P·S, L, n), scales (P·S, L))`` for the levels ``first..depth`` (L of them); the
    scales include the chain's `rounding_amplification`, so every normalised row carries
    rounding noise of about the same relative size. The
    batch is (points × samples) flattened, point-major, which runs ~10× faster than nested
    vmaps; the S coefficient samples are shared by the P points and tiled on the device, where
    each point's ``weights`` scale them. With a ``sharding``, the flat batch is split over its
    devices.
    """
    f = bracket_chain(field, depth)

    def levels(z, coeffs):
        values, scales = f(z, coeffs)
        return values[first:], (scales * rounding_amplification(values, scales))[first:]

    def evaluate(z, coeffs, weights):
        n_points = z.shape[0] // coeffs.shape[0]
        flat = jnp.tile(coeffs, (n_points, 1, 1))
        if weights is not None:
            flat = flat * jnp.repeat(weights, coeffs.shape[0], axis=0)[:, None, :]
        if sharding is not None:
            flat = jax.lax.with_sharding_constraint(flat, sharding)
        return jax.vmap(levels)(z, flat)

    options = _FAST_COMPILE_OPTIONS if fast_compile else None
    return jax.jit(evaluate, compiler_options=options)


# Coefficients are uniform on [-√3, √3] (unit variance): any distribution with a density makes a
# sample escape every proper subspace of the level's span with probability one, and uniform draws
# are ~6× cheaper than Gaussian ones (ReLU path-liftings need m ~ 1e5 coefficients per sample).
_COEFF_HALF_WIDTH = math.sqrt(3.0)


def batch_sharding(devices: int | None = None) -> NamedSharding | None:
    """Sharding of the bracket batch over ``devices`` devices (``None``: all of them; in a
    multi-process run, `jax.devices()` lists every process's devices).

    Returns ``None`` (no sharding) for a single device. The batch axis is the only one split:
    every device evaluates its share of the random bracket chains, so results do not depend on
    the number of devices (up to rounding).
    """
    available = jax.devices()
    n = len(available) if devices is None else devices
    if n < 1 or n > len(available):
        raise InputError(f"devices must be between 1 and {len(available)}, got {devices}")
    if n == 1:
        return None
    return NamedSharding(Mesh(np.array(available[:n]), ("batch",)), PartitionSpec("batch"))


#: The flat batch of a compiled stage call holds at most this many points' worth of samples.
BATCH_POINTS = 3


def _evaluate_stage(
    family: VectorFamily,
    points: np.ndarray,
    rng: np.random.Generator,
    first: int,
    depth: int,
    n_samples: int,
    fast_compile: bool,
    max_chunk: int,
    max_chunk_floats: int,
    sharding: NamedSharding | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random bracket chains of ``depth`` at every point; the levels ``first..depth`` of each.

    With a ``sharding``, the flat batch (points × samples) is split over its mesh's devices and
    the compiled chain runs SPMD on all of them (`batch_sharding`); every process of a
    multi-process run draws the same host coefficients and keeps its own shards. ``weights (P, m)``
    rescale the coefficients at each point (`_generator_weights`).

    Every level of the stage gets the same S = ``n_samples`` samples. Returns
    ``values (P, S, L, n)`` and ``scales (P, S, L)`` as host arrays.
    """
    field, m = family.sampled
    P = points.shape[0]
    per_call = max(1, max_chunk_floats // (P * (depth + 1) * m))
    # the flat batch holds every bracket chain's intermediates: it stays at most what
    # BATCH_POINTS points × max_chunk samples hold, whatever P (an escalation doubles P)
    per_point = max(1, BATCH_POINTS * max_chunk // P)
    chunk = min(_next_pow2(n_samples), max_chunk, 1 << (per_call.bit_length() - 1),
                1 << (per_point.bit_length() - 1))
    n_dev = 1 if sharding is None else sharding.mesh.size
    chunk = -(-chunk // n_dev) * n_dev  # the flat batch P * chunk splits evenly over devices
    evaluate = _stage_evaluator(field, depth, first, fast_compile, sharding)
    multi_process = jax.process_count() > 1
    if sharding is None:
        put = put_replicated = jnp.asarray
    else:  # the flat batch is split over the devices; coefficients and weights are replicated
        replicated = NamedSharding(sharding.mesh, PartitionSpec())
        if multi_process:  # every process holds the same host data and keeps its own shards
            put = lambda x: global_array(np.asarray(x), sharding)
            put_replicated = lambda x: global_array(np.asarray(x), replicated)
        else:
            put = lambda x: jax.device_put(x, sharding)
            put_replicated = lambda x: jax.device_put(x, replicated)
    w = None if weights is None else put_replicated(weights.astype(points.dtype))

    def run(chunk: int) -> tuple[list, list]:
        z = put(np.repeat(points, chunk, axis=0))  # (P * chunk, n), point-major
        values, scales = [], []
        for _ in range(math.ceil(n_samples / chunk)):
            # One draw serves every point (each point's samples are generic on their own), so
            # the random numbers do not grow with P; draws in chunks of any size are the same
            # stream.
            coeffs = rng.uniform(-_COEFF_HALF_WIDTH, _COEFF_HALF_WIDTH, (chunk, depth + 1, m))
            v, s = evaluate(z, put_replicated(coeffs.astype(points.dtype)), w)
            values.append(to_host(v).reshape(P, chunk, *v.shape[1:]))
            scales.append(to_host(s).reshape(P, chunk, -1))
        return values, scales

    state = rng.bit_generator.state
    while True:
        try:
            values, scales = run(chunk)
            break
        except Exception as e:
            if "RESOURCE_EXHAUSTED" not in str(e) or chunk <= n_dev:
                raise
            # the chains' intermediates did not fit: half the batch, the same coefficients
            chunk = max(n_dev, chunk // 2 // n_dev * n_dev)
            rng.bit_generator.state = state
    values_ = np.concatenate(values, axis=1)[:, :n_samples]
    if not np.all(np.isfinite(values_)):
        raise InputError(
            f"the vector fields are not finite at a generic point (bracket depth ≤ {depth}): "
            "check that φ is differentiable there and returns finite values"
        )
    return values_, np.concatenate(scales, axis=1)[:, :n_samples]


def _process_level(
    depth: int,
    values: np.ndarray,
    scales: np.ndarray,
    complements: list[np.ndarray],
    dims: list[int],
    band_for: BandFn,
    errors: list[float],
) -> tuple[LevelRecord, list[float], list[float]]:
    """Add level ``depth`` (samples ``values (P, S, n)``, ``scales (P, S)``) at every point.

    Updates ``complements``, ``dims`` and the complements' ``errors`` in place; returns the
    level's record and the singular values kept and dropped.
    """
    t0 = time.perf_counter()
    if depth == 0:
        # Generators are judged against the largest of them at the same point.
        scales = np.broadcast_to(np.max(scales, axis=1, keepdims=True), scales.shape)
    added, kept, dropped, uncertain, bands = [], [], [], [], []
    saturated = False
    for p, basis in enumerate(complements):
        if basis.shape[0] == 0:
            added.append(0)
            continue
        rows = normalise_rows(values[p], scales[p]) @ basis.T  # (S, c)
        sigma, vt = row_space_svd(rows)
        band = band_for(*rows.shape, errors[p])
        bands.append(band)
        cut = cut_spectrum(sigma, band.cut)
        uncertain.extend(band.unsettled(sigma, cut.rank).tolist())
        errors[p] = _basis_error(errors[p], band, sigma, cut.rank)
        # S exceeds what the level can add, so a rank reaching S means noise was kept (rtol
        # below rounding): the result is then reported ambiguous, never as a count.
        saturated = saturated or cut.rank >= rows.shape[0]
        added.append(cut.rank)
        dims[p] += cut.rank
        kept.extend(sigma[: cut.rank].tolist())
        dropped.extend(sigma[cut.rank :].tolist())
        complements[p] = vt[cut.rank :] @ basis
    record = _level_record(depth, int(values.shape[1]), dims, added, kept, dropped, uncertain,
                           bands, saturated, t0)
    return record, kept, dropped


def _level_record(depth: int, samples: int, ranks: list[int], added: list[int],
                  kept: list[float], dropped: list[float], uncertain: list[float],
                  bands: list[RankBand], saturated: bool, t0: float) -> LevelRecord:
    """The `LevelRecord` of one level from what the dense or the streamed pass collected."""
    return LevelRecord(
        depth=depth,
        samples=samples,
        ranks=tuple(ranks),
        added=tuple(added),
        sigma_kept=min(kept) if kept else None,
        sigma_dropped=max(dropped) if dropped else None,
        seconds=time.perf_counter() - t0,
        saturated=saturated,
        uncertain=tuple(sorted(uncertain, reverse=True)),
        noise=bands[0].noise if bands else None,
        signal=bands[0].signal if bands else None,
    )


# Balancing evaluates every generator at every point: done while that is at most this many floats.
_BALANCE_MAX_FLOATS = 1 << 24


def _generator_weights(
    family: VectorFamily, points: np.ndarray, fast_compile: bool
) -> np.ndarray | None:
    """w[p, j] = 1 / ‖χ_j(z_p)‖ (1 where χ_j(z_p) = 0), shape ``(P, m)``; ``None`` if too large.

    Drawing coefficient a_j ~ N(0, w_j²) at point z_p makes every generator contribute at the
    same scale there. The spans of the levels do not change (the coefficients of a bracket are
    constants; only their distribution changes), but without it generators of very different
    sizes (1e10 apart, measured) put the small ones' directions below the cut with a clean gap.
    """
    P, n, m = points.shape[0], family.state_dim, family.n_coeffs
    if P * m * n > _BALANCE_MAX_FLOATS or family.sample_field is not None:
        return None  # structured coefficients are not rescaled one generator at a time
    # The field is linear in a, so its Jacobian in a, (n, m), holds every generator as a column:
    # n reverse passes or m forward ones, whichever is fewer (ReLU path-liftings have m ≫ n).
    jacobian = jax.jacrev if n < m else jax.jacfwd
    every = jax.vmap(jacobian(family.field, argnums=1), in_axes=(0, None))
    options = _FAST_COMPILE_OPTIONS if fast_compile else None
    try:
        values = np.asarray(jax.jit(every, compiler_options=options)(jnp.asarray(points),
                                                                      jnp.zeros(m)))
    except Exception as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return None
    if not np.all(np.isfinite(values)):
        raise InputError("the vector fields are not finite at a generic point: check that φ is "
                         "differentiable there and returns finite values")
    norms = np.linalg.norm(values, axis=1)  # (P, m)
    return np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 1.0)


def _check_points(family: VectorFamily, points: Array) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != family.state_dim:
        raise InputError(
            f"points must have shape (P, {family.state_dim}), got {tuple(points.shape)}"
        )
    if points.shape[0] < 1:
        raise InputError("at least one point is needed")
    if not np.all(np.isfinite(points)):
        raise InputError("points contain NaN or inf")
    return points


def _dense_levels(
    evaluate: Callable, P: int, n: int, m: int, max_depth: int, band_for: BandFn, bar: Any
) -> tuple[list[LevelRecord], list[int], list[float], list[float], bool]:
    """The levels by stacking: each level's samples projected on the complement, one SVD.

    Returns the level records, the dimension reached at each point, the σ's kept and dropped,
    and whether the construction stagnated (or filled R^n) before ``max_depth``.
    """
    # Orthonormal bases (rows) of the complement of the trace found so far, one per point.
    complements = [np.eye(n) for _ in range(P)]
    errors = [0.0] * P  # how well each complement is known (`_basis_error`)
    dims = [0] * P
    kept: list[float] = []
    dropped: list[float] = []
    levels: list[LevelRecord] = []
    depth = 0
    while depth <= max_depth:
        if max(c.shape[0] for c in complements) == 0:  # the trace is R^n at every point
            return levels, dims, kept, dropped, True
        # One compiled chain serves the levels depth..stage_depth of this stage; its evaluation
        # time is booked on the stage's first level. Stages: {0} (the generators, which need the
        # most samples but no brackets), {1, 2}, then one level at a time (compile time roughly
        # doubles per level).
        t_stage = time.perf_counter()
        stage_depth = min(max_depth, {0: 0, 1: 2}.get(depth, depth))
        values, scales = evaluate(np.arange(P), depth, stage_depth,
                                  _samples_needed(complements, m, depth))
        for level in range(stage_depth - depth + 1):
            if level and max(c.shape[0] for c in complements) == 0:
                return levels, dims, kept, dropped, True
            # All samples are generic, so the first S_j of them serve level j.
            s_j = _samples_needed(complements, m, depth)
            record, level_kept, level_dropped = _process_level(
                depth, values[:, :s_j, level], scales[:, :s_j, level], complements, dims,
                band_for, errors,
            )
            if level == 0:
                record = dataclasses.replace(record, seconds=time.perf_counter() - t_stage)
            levels.append(record)
            bar.set_postfix_str(f"depth {depth}: dim {_dims_text(dims)}", refresh=False)
            bar.update(1)
            kept.extend(level_kept)
            dropped.extend(level_dropped)
            depth += 1
            if record.saturated or not any(record.added):
                return levels, dims, kept, dropped, not record.saturated
    return levels, dims, kept, dropped, False


def _streamed_levels(
    evaluate: Callable, P: int, n: int, m: int, max_depth: int, band_for: BandFn, block: int,
    bar: Any,
) -> tuple[list[LevelRecord], list[int], list[float], list[float], bool]:
    """The levels by streaming: blocks of ``block`` samples extend a `TraceBasis` per point.

    A level is complete at a point once a block leaves enough samples unused (b − k ≥ a spare of
    min(margin, b/4)): samples are generic, so a block that does not fill has spanned all that
    the level adds there. Memory is O(r n) per point plus one block; no level is ever stacked.
    A level adding more than its m^(depth+1) brackets can span has counted rounding noise: it
    is ``saturated``. Same return as `_dense_levels`.
    """
    bases = [TraceBasis(n) for _ in range(P)]
    errors = [0.0] * P  # how well each trace basis is known (`_basis_error`)
    scale0 = np.zeros(P)  # depth 0: the largest generator so far at each point
    kept: list[float] = []
    dropped: list[float] = []
    levels: list[LevelRecord] = []
    converged = False
    for depth in range(max_depth + 1):
        remaining = [n - basis.rank for basis in bases]
        c = max(remaining)
        if c == 0:  # the trace is R^n at every point
            converged = True
            break
        t0 = time.perf_counter()
        bound = min(c, _n_brackets(m, depth, c))
        size = min(block, bound + _margin(c))
        spare = min(_margin(c), max(1, size // 4))
        added, samples = [0] * P, 0
        level_kept: list[float] = []
        level_dropped: list[float] = []
        level_uncertain: list[float] = []
        bands: list[RankBand] = []
        saturated = False
        active = [p for p in range(P) if remaining[p] > 0]
        while active and not saturated:
            values, scales = evaluate(np.array(active), depth, depth, size)
            samples += size
            still = []
            for i, p in enumerate(active):
                v, s = values[i, :, 0], scales[i, :, 0]
                if depth == 0:  # generators are judged against the largest of them
                    scale0[p] = max(scale0[p], float(np.max(s)))
                    s = np.full_like(s, scale0[p])
                band = band_for(size, n - bases[p].rank, errors[p])
                bands.append(band)
                sigma, k = bases[p].extend(normalise_rows(v, s), band.cut)
                errors[p] = _basis_error(errors[p], band, sigma, k)
                level_uncertain.extend(band.unsettled(sigma, k).tolist())
                added[p] += k
                level_kept.extend(sigma[:k].tolist())
                level_dropped.extend(sigma[k:].tolist())
                saturated = saturated or added[p] > bound
                if size - k < spare and bases[p].rank < n:
                    still.append(p)
            active = still
            bar.set_postfix_str(f"depth {depth}, {samples} samples: dim "
                                f"{_dims_text([b.rank for b in bases])}")
        levels.append(_level_record(depth, samples, [b.rank for b in bases], added, level_kept,
                                    level_dropped, level_uncertain, bands, saturated, t0))
        kept.extend(level_kept)
        dropped.extend(level_dropped)
        bar.update(1)
        if saturated or not any(added):
            converged = not saturated
            break
    return levels, [b.rank for b in bases], kept, dropped, converged


def _weak_generators(levels: list[LevelRecord]) -> str:
    """Why level 1 cannot be trusted, or ''. Generator directions with normalised σ = s0 at
    level 0 have brackets among themselves of relative size ~s0²; at or below level 1's noise
    ceiling those would be lost in rounding (generators nearly parallel), so "level 1 adds
    nothing more" is then no evidence."""
    if len(levels) < 2 or levels[0].sigma_kept is None or levels[1].noise is None:
        return ""
    s0 = levels[0].sigma_kept
    if s0 * s0 > levels[1].noise:
        return ""
    return (f"weak generator directions (σ = {s0:.2e} at depth 0): their brackets "
            f"(~{s0 * s0:.1e}) are below the rounding of depth 1 (noise ceiling "
            f"{levels[1].noise:.1e})")


def _dims_text(dims: list[int]) -> str:
    return str(dims[0]) if len(set(dims)) == 1 else f"{min(dims)}–{max(dims)}"


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
    progress: bool | None = None,
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
        max_chunk_floats: bound on the coefficient floats sent per call (memory).
        devices: number of local devices the bracket batches are sharded over (default: all;
            1 disables sharding). Counts do not depend on it.
        dtype: ``"float64"`` (default) or ``"float32"``. float32 brackets carry ~1e-7 relative
            rounding, so the band moves with the unit roundoff (and narrows), matrix
            products run at "highest" precision (no TF32 on GPUs), and a warning says the gap may
            not separate; the result reports the dtype.
        algorithm: ``"dense"`` stacks each level and cuts it with one SVD: O(n³) time and O(n²)
            memory per point. ``"streamed"`` adds blocks of ``block`` samples to an orthonormal
            basis of the trace (`conflow.engine.streamed_basis`): O(n r²) time and O(n r) memory for a
            trace of dimension r. ``"auto"`` (default): dense up to n = ``DENSE_MAX_DIM``.
        block: samples per block of the streamed algorithm.
        progress: a progress bar on stderr (levels; blocks and the trace's dimension), shown
            once the count has run `PROGRESS_DELAY` seconds; ``None`` (default): only when
            stderr is a terminal.

    Returns:
        A `LieTrace`. The count of conservation laws is ``state_dim - dim``.
    """
    t_start = time.perf_counter()
    if dtype not in ("float64", "float32"):
        raise InputError(f"dtype must be float64 or float32, got {dtype!r}")
    if algorithm not in ALGORITHMS:
        raise InputError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    if block < 2:
        raise InputError(f"block must be >= 2, got {block}")
    if dtype == "float32":
        warnings.warn("float32 brackets: rounding is ~1e-7, so the singular-value gap may not "
                      "separate directions from noise; prefer float64", stacklevel=2)
    if rtol is not None and not 0 < rtol < 1:
        raise InputError(f"rtol must be in (0, 1), got {rtol}")
    if not min_gap >= 1:
        raise InputError(f"min_gap must be >= 1, got {min_gap}")
    points = _check_points(family, points)
    n, m = family.state_dim, family.n_coeffs
    if n < 1 or m < 1:
        raise InputError(f"a family needs n >= 1 and m >= 1 (got n={n}, m={m})")
    if algorithm == "auto":
        algorithm = "dense" if n <= DENSE_MAX_DIM else "streamed"
    P = points.shape[0]
    rng = np.random.default_rng(seed)
    fast_compile = n <= _FAST_COMPILE_MAX_DIM and not _uses_slow_unoptimised_ops(family)
    sharding = batch_sharding(devices)
    weights = _generator_weights(family, points, fast_compile)
    typed_points = points.astype(dtype)

    def evaluate(which: np.ndarray, first: int, depth: int, n_samples: int):
        with jax.default_matmul_precision("highest"):
            return _evaluate_stage(
                family, typed_points[which], rng, first, depth, n_samples, fast_compile,
                max_chunk, max_chunk_floats, sharding, None if weights is None else weights[which],
            )

    def band_for(n_rows: int, n_cols: int, basis_error: float) -> RankBand:
        return rank_band(n_rows, n_cols, dtype, rtol, basis_error)

    with progress_bar(progress, max_depth + 1, f"Lie trace ({algorithm}, n={n}, {P} points)"
                      ) as bar:
        if algorithm == "dense":
            levels, dims, kept, dropped, converged = _dense_levels(
                evaluate, P, n, m, max_depth, band_for, bar)
        else:
            levels, dims, kept, dropped, converged = _streamed_levels(
                evaluate, P, n, m, max_depth, band_for, block, bar)
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
    elif not converged:
        status, reason = NOT_CONVERGED, (
            f"the trace was still growing at depth {max_depth} (raise max_depth)"
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
        points=np.asarray(points),
        rtol=rtol,
        min_gap=min_gap,
        seconds=time.perf_counter() - t_start,
        dtype=dtype,
        algorithm=algorithm,
        uncertain=tuple(uncertain[:5]),
    )
