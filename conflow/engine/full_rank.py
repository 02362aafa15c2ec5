"""Full rank shown directly: a point's samples of every level stacked, one SVD.

The level loop (`conflow.engine.levels`) cuts each level against the trace found so far, so a
weak direction kept at level 0 (σ_j just above the noise ceiling) carries an error
ε_j = rounding / σ_j into the bands of the levels after it. A generator spectrum that decays
smoothly (a smooth network on low-dimensional inputs: its output gradients form a smooth kernel
matrix) thus leaves singular values inside the bands, and the count is ambiguous, although the
brackets fill every direction clearly.

Whether Lie(W)(z) = R^n needs no trace. Stack, at each point, S_0 generic elements of W_0 and
generic elements of levels 1, …, K (random right-nested chains, `conflow.engine.evaluate`),
every row divided by its scale so that its rounding is ~u (`conflow.engine.rank`). The exact rows are elements of
Lie(W)(z); if the stack's n-th singular value is above the signal floor of its `RankBand`
(`SIGNAL_RATIO` × the noise ceiling, itself a bound on the rounding's norm), the exact rows span
R^n too (Weyl: rounding moves σ_n by at most its norm). Then dim Lie(W)(z) = n and there is no
conservation law, without a cut anywhere else. Below the floor the stack shows nothing beyond
its clear rank #{σ ≥ signal floor}, a lower bound of dim Lie(W)(z).

S_0 = n + margin samples (from the generator matrices where the family gives them, as the
level loop draws them); then level 1, then level 2, …, each in rounds of S_1 chains (S_1: the
dimensions level 0 left unclear, plus a margin) added to the stack until σ_n is clear or the
level's chains number S_0. Measured: a smooth network on 2-D inputs (nnx tanh 2-11-22-20-2,
D = 744) needed four rounds of level 1 (σ_n 3e-11 after one, below the floor 2e-10; 7e-8
after four); a bias-free one on 1-D inputs (nnx tanh 1-3-11-15-2, D = 231) needed level 2
(σ_n 8e-14 with level 1, 7e-8 with level 2).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from conflow.engine.device_basis import bucket
from conflow.engine.evaluate import evaluate_stage, prepare
from conflow.engine.family import VectorFamily
from conflow.engine.levels import LevelRecord, margin
from conflow.engine.rank import RankBand, rank_band
from conflow.engine.trace import AMBIGUOUS, NOT_CONVERGED, OK, LieTrace, check_points
from conflow.errors import InputError
from conflow.precision import float64

Array = jax.Array


@jax.jit
def _normalised(values: Array, scales: Array) -> Array:
    """Rows divided by their scales (zero rows stay zero), one stack per point:
    ``values (P, S, L, n)``, ``scales (P, S, L)`` → ``(P, S·L, n)``."""
    rows = values / jnp.where(scales > 0, scales, 1.0)[..., None]
    return rows.reshape(rows.shape[0], -1, rows.shape[-1])


@jax.jit
def _singular_values(stacks: Array) -> Array:
    """σ of each point's stack, descending: ``(P, R, n)`` → ``(P, min(R, n))``."""
    return jax.vmap(lambda rows: jnp.linalg.svd(rows, compute_uv=False))(stacks)


def _record(depth: int, samples: int, sigma: np.ndarray, band: RankBand, below: np.ndarray,
            seconds: float) -> LevelRecord:
    """The `LevelRecord` of a stack: its clear rank per point (σ ≥ the signal floor)."""
    clear = (sigma >= band.signal).sum(axis=1)
    kept = sigma[sigma >= band.signal]
    dropped = sigma[sigma < band.signal]
    return LevelRecord(
        depth=depth, samples=samples, ranks=tuple(int(r) for r in clear),
        added=tuple(int(r) for r in clear - below), seconds=seconds,
        sigma_kept=float(kept.min()) if kept.size else None,
        sigma_dropped=float(dropped.max()) if dropped.size else None,
        uncertain=tuple(sorted(dropped[dropped > band.noise].tolist(), reverse=True)[:5]),
        noise=band.noise, signal=band.signal)


@float64
def full_rank_trace(
    family: VectorFamily,
    points: Float[Array, "P n"],
    *,
    depth: int = 1,
    seed: int = 0,
    dtype: str = "float64",
    devices: int | None = None,
    max_chunk: int = 256,
    max_chunk_floats: int = 1 << 24,
    time_limit: float | None = None,
) -> LieTrace:
    """Whether Lie(W)(z) = R^n at each of ``points``, from one stack of samples per point.

    Args:
        family: the generators, on R^n.
        points: the points, ``(P, n)``.
        depth: the deepest level stacked (≥ 1); a level is stacked only if the ones before
            it did not show full rank.
        seed: seed of the samples' coefficients.
        dtype: ``"float64"`` or ``"float32"``, as `conflow.engine.trace.lie_trace`.
        devices: devices the bracket batches are sharded over, as ``lie_trace``.
        max_chunk: samples per compiled call and point, as ``lie_trace``.
        max_chunk_floats: bound on the coefficient floats per call, as ``lie_trace``.
        time_limit: seconds; once passed, no further round is drawn and a stack that does not
            show full rank yet is ``not_converged`` ("time limit of … s reached …").

    Returns:
        A `LieTrace` (algorithm ``"stacked"``): ``ok`` with ``dim = n`` when every point's stack
        has σ_n above its signal floor; otherwise ``ambiguous``, with each point's clear rank
        (a lower bound) in ``point_dims``. Two `LevelRecord`: level 0's stack and the stack of
        levels 0..K, K (``depth`` of the result) the last level stacked. Only the singular
        values leave the devices.
    """
    t0 = time.perf_counter()
    if depth < 1:
        raise InputError(f"depth must be >= 1, got {depth}")
    points = check_points(family, points)
    n, P = family.state_dim, points.shape[0]
    prep = prepare(family, points, dtype, devices)
    rng = np.random.default_rng([seed, 0xF0])

    def expired() -> bool:
        return time_limit is not None and time.perf_counter() - t0 > time_limit

    with jax.default_matmul_precision("highest"):
        s0 = bucket(n + margin(n))
        level0 = prep.level0(rng, s0)
        if level0 is None:
            level0 = evaluate_stage(prep.field, prep.n_sample, prep.points, rng, 0, 0, s0,
                                    prep.fast, max_chunk, max_chunk_floats, prep.sharding,
                                    prep.weights)
        rows0 = _normalised(*level0)
        sigma0 = np.asarray(jax.device_get(_singular_values(rows0)))
        band0 = rank_band(s0, n, dtype)
        first = _record(0, s0, sigma0, band0, np.zeros(P, int), time.perf_counter() - t0)
        sigma, band, full = sigma0, band0, min(first.ranks) == n
        depth = 0 if full else depth
        # levels K = 1..depth in turn, each in rounds of S_1 chains (their level-K rows), until
        # σ_n is clear or the level's chains number n + margin
        c = n - min(first.ranks)
        s1 = bucket(c + margin(c))  # ≤ s0
        t1, stacks, total = time.perf_counter(), rows0, 0
        for level in range(1, depth + 1):
            drawn = 0
            while not full and drawn + s1 <= s0 and not expired():
                deeper = evaluate_stage(prep.field, prep.n_sample, prep.points, rng, level,
                                        level, s1, prep.fast, max_chunk, max_chunk_floats,
                                        prep.sharding, prep.weights)
                stacks = jnp.concatenate([stacks, _normalised(*deeper)], axis=1)
                drawn, total = drawn + s1, total + s1
                sigma = np.asarray(jax.device_get(_singular_values(stacks)))
                band = rank_band(stacks.shape[1], n, dtype)
                full = bool(np.all((sigma >= band.signal).sum(axis=1) == n))
            if full or expired():
                depth = level
                break
    whole = _record(depth, total, sigma, band, np.asarray(first.ranks), time.perf_counter() - t1)
    clear = np.asarray(whole.ranks)
    sigma_n = sigma[:, n - 1] if sigma.shape[1] >= n else np.zeros(P)
    reason = "" if full else (
        f"levels 0–{depth} stacked ({stacks.shape[1]} rows per point) do not show full rank: "
        f"σ_n = {sigma_n.min():.2e} against a signal floor of {band.signal:.1e} (noise ceiling "
        f"{band.noise:.1e}); clear rank {int(clear.min())} of {n}")
    stopped = not full and expired()
    if stopped:
        reason = f"time limit of {time_limit:g} s reached while stacking level {depth}; {reason}"
    _, counts = np.unique(clear, return_counts=True)
    kept = np.sort(sigma[sigma >= band.signal])
    return LieTrace(
        dim=n if full else None, state_dim=n, reason=reason,
        status=OK if full else NOT_CONVERGED if stopped else AMBIGUOUS,
        point_dims=tuple(int(r) for r in clear), n_agree=int(counts.max()),
        levels=(first, whole), depth=depth,
        sigma_r=float(sigma_n.min()), sigma_r1=None, gap=float("inf"),
        kept_tail=tuple(kept[:3][::-1].tolist()),
        dropped_head=tuple(np.sort(sigma[sigma < band.signal])[::-1][:3].tolist()), points=points,
        seconds=time.perf_counter() - t0, dtype=dtype, algorithm="stacked", linalg="device",
        uncertain=whole.uncertain)
