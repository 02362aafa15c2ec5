"""Numerical rank of a stack of vectors, with the evidence for the cut.

Rows are first divided by a *scale*: the size of the quantities whose cancellation produced them
(for a bracket, ‖∂Y·X‖ + ‖∂X·Y‖). An analytically zero row is then at rounding level, ~1e-16,
whatever its absolute size, whereas a genuine direction is O(1)-ish. Normalising each row by its
own norm would instead turn rounding noise into a unit vector (DESIGN.md).

For singular values σ_1 ≥ σ_2 ≥ … of the normalised stack, the rank is #{σ_i > rtol}; the gap is
σ_r / σ_{r+1}, the ratio across the cut. A small gap means the cut is not trustworthy.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from conflow.precision import float64

Array = jax.Array

DEFAULT_RTOL = 1e-9
DEFAULT_MIN_GAP = 1e4

#: Unit roundoff of the dtypes the engine evaluates in.
UNIT_ROUNDOFF = {"float64": 2.0**-53, "float32": 2.0**-24}
#: σ ≤ NOISE_FACTOR × floor is rounding. Measured on the paper protocols (float64, after the
#: `rounding_amplification` of each row): the largest dropped σ is ≤ 0.6 × floor; generators
#: 1e-14 from dependent sit at ~6 × floor.
NOISE_FACTOR = 3.0
#: σ ≥ SIGNAL_RATIO × noise ceiling is a direction; in between, neither (the count is ambiguous).
SIGNAL_RATIO = {"float64": 1e4, "float32": 1e2}


@dataclasses.dataclass(frozen=True)
class RankBand:
    """The band that separates rounding noise from directions in a normalised stack.

    A stack of S rows on a c-dimensional complement, each row normalised so that its rounding
    noise has norm ~u (`rounding_amplification`), has noise singular values up to about

        floor = u (√S + √c) + β    (largest σ of an S × c matrix of entries ~u/√c),

    where β bounds the error of the complement itself. The trace basis is computed stably
    (Householder / SVD: it is the exact span of its rows perturbed by their own rounding), so
    the direction v_j that a stack with rounding u(√S + √c) kept with singular value σ_j is off
    by ε_j ≲ u(√S + √c) / σ_j (Wedin, first order), without compounding. A new row y with
    coordinates c_j = ⟨y, v_j⟩ on the trace inherits Σ_j |c_j| ε_j of that in its residual
    (`trace_error`): at most max_j ε_j for a row of norm ≤ 1, and far less when the weak
    directions — those found with a small σ_j — carry little of the row, as they usually do.

    so σ ≤ ``noise`` = `NOISE_FACTOR` × floor is rounding, σ ≥ ``signal`` = `SIGNAL_RATIO` ×
    noise is a direction, and a σ in between is neither: a count that meets one is ambiguous
    (and escalated), whatever its largest ratio. ``cut`` (their geometric mean, or the user's
    rtol) is where the trace is cut to go on.

    One exception, on the kept side only: a kept σ below the signal floor is a direction when
    the stack itself shows where its rounding is, far below: everything the stack dropped lies
    at rounding level (≤ noise) and at least ``min_gap`` below that σ (`separated`). The noise
    of a stack is spread over all the directions its rows' errors take, so rounding that the
    floor underestimated enough to reach a kept σ would show in the dropped ones too. Deep
    products reach some directions only weakly (a deep linear net through a width-2 layer:
    the weakest new direction falls about 300× per level, to 4e-10 at depth 3, yet 1e5 above
    everything its stack dropped).
    """

    rounding: float
    floor: float
    noise: float
    signal: float
    cut: float
    min_gap: float = DEFAULT_MIN_GAP

    def separated(self, sigma: np.ndarray, rank: int) -> np.ndarray:
        """Mask of the kept σ's (``sigma`` descending, ``rank`` kept) that the stack separates
        from its rounding: what it dropped is ≤ noise, and min_gap × max(that, rounding) ≤ σ."""
        sigma = np.asarray(sigma)
        kept = np.arange(sigma.size) < rank
        if rank == 0 or rank >= sigma.size or sigma[rank] > self.noise:
            return np.zeros(sigma.size, dtype=bool)
        return kept & (sigma >= self.min_gap * max(float(sigma[rank]), self.rounding))

    def unsettled(self, sigma: np.ndarray, rank: int) -> np.ndarray:
        """The σ's (descending, ``rank`` of them kept) that the band does not settle: those
        strictly inside (noise, signal) and not `separated`, and those the cut put on the wrong
        side of the band (a kept σ at rounding level, a dropped one above the signal floor: a
        user's rtol)."""
        sigma = np.asarray(sigma)
        inside = (sigma > self.noise) & (sigma < self.signal) & ~self.separated(sigma, rank)
        kept = np.arange(sigma.size) < rank
        wrong_side = (kept & (sigma <= self.noise)) | (~kept & (sigma >= self.signal))
        return sigma[inside | wrong_side]


def direction_errors(band: RankBand, sigma: np.ndarray, k: int) -> np.ndarray:
    """ε_j = rounding / σ_j for the ``k`` directions a stack cut in ``band`` kept, shape
    ``(k,)``: how far each new trace direction may be off (Wedin, first order)."""
    return band.rounding / np.asarray(sigma[:k], dtype=np.float64)


def trace_error(coordinates: np.ndarray, errors: np.ndarray) -> float:
    """β of a stack: the largest error its rows' residuals inherit from the trace basis.

    ``coordinates (S, r)``: the normalised rows' coordinates on the trace directions, whose
    errors are ``errors (r,)`` (`direction_errors`). Row i inherits ‖Σ_j c_ij δv_j‖ ≤
    min(Σ_j |c_ij| ε_j, ‖c_i‖ max_j ε_j); β is the largest over the rows.
    """
    if coordinates.size == 0 or errors.size == 0:
        return 0.0
    by_direction = np.abs(coordinates) @ errors
    by_norm = np.linalg.norm(coordinates, axis=1) * float(np.max(errors))
    return float(np.max(np.minimum(by_direction, by_norm)))


def rank_band(n_rows: int, n_cols: int, dtype: str = "float64", rtol: float | None = None,
              basis_error: float = 0.0, min_gap: float = DEFAULT_MIN_GAP) -> RankBand:
    """The `RankBand` of an ``n_rows × n_cols`` normalised stack evaluated in ``dtype``, projected
    on a complement known to ``basis_error`` (β above, `trace_error`); ``min_gap`` separates a
    weak kept σ from the stack's rounding (`RankBand.separated`)."""
    rounding = UNIT_ROUNDOFF[dtype] * (np.sqrt(max(n_rows, 1)) + np.sqrt(max(n_cols, 1)))
    floor = rounding + basis_error
    noise = NOISE_FACTOR * floor
    signal = SIGNAL_RATIO[dtype] * noise
    cut = float(np.sqrt(noise * signal)) if rtol is None else rtol
    return RankBand(float(rounding), float(floor), float(noise), float(signal), cut,
                    float(min_gap))


@dataclasses.dataclass(frozen=True)
class RankCut:
    """Where a spectrum was cut.

    Attributes:
        rank: number of singular values above the threshold.
        sigma_kept: σ_r, the smallest kept singular value (``None`` if rank = 0).
        sigma_dropped: σ_{r+1}, the largest dropped one (``None`` if nothing was dropped).
    """

    rank: int
    sigma_kept: float | None
    sigma_dropped: float | None

    @property
    def gap(self) -> float:
        """σ_r / σ_{r+1} (``inf`` when one side is empty or σ_{r+1} = 0)."""
        return gap_ratio(self.sigma_kept, self.sigma_dropped)


def gap_ratio(sigma_kept: float | None, sigma_dropped: float | None) -> float:
    """σ_r / σ_{r+1}, ``inf`` if either side is missing or the dropped value is exactly 0."""
    if sigma_kept is None or sigma_dropped is None or sigma_dropped == 0.0:
        return float("inf")
    return float(sigma_kept / sigma_dropped)


def cut_spectrum(singular_values: np.ndarray, rtol: float = DEFAULT_RTOL) -> RankCut:
    """Cut a descending spectrum of a *normalised* stack at ``rtol``.

    Args:
        singular_values: shape ``(k,)``, descending, non-negative.
        rtol: threshold below which a singular value is rounding noise (rows are normalised so
            that genuine directions are O(1)).
    """
    s = np.asarray(singular_values, dtype=np.float64)
    r = int(np.sum(s > rtol))
    kept = float(s[r - 1]) if r > 0 else None
    dropped = float(s[r]) if r < s.size else None
    return RankCut(r, kept, dropped)


def row_space_svd(rows: np.ndarray, full: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Singular values σ (descending) and right singular vectors Vᵀ of ``rows (S, c)``: all c of
    them, shape (c, c), or with ``full=False`` the first min(S, c), shape (min(S, c), c).

    Tall stacks are first reduced to their c × c triangular factor R (rows = QR has the same σ
    and right singular vectors), which is cheaper and avoids forming U. The stack is rescaled to
    unit max-entry first: LAPACK's divide-and-conquer SVD can fail to converge on matrices of
    pure rounding noise (~1e-16 entries); JAX's SVD is the fallback if it still does.
    """
    rows = np.asarray(rows, dtype=np.float64)
    c = rows.shape[1]
    size = float(np.max(np.abs(rows))) if rows.size else 0.0
    if size == 0.0:
        return np.zeros(min(rows.shape)), np.eye(c)[: c if full else min(rows.shape)]
    a = rows / size
    if a.shape[0] > c:
        a = np.linalg.qr(a, mode="r")
    try:
        _, sigma, vt = np.linalg.svd(a, full_matrices=full)
    except np.linalg.LinAlgError:
        _, sigma, vt = (np.asarray(x) for x in jnp.linalg.svd(jnp.asarray(a), full_matrices=full))
    return sigma * size, vt


def rounding_amplification(values: Array, scales: Array) -> Array:
    """How much rounding each row of one bracket chain inherited from the brackets inside it.

    Row k of a chain (`conflow.engine.brackets.bracket_chain`) is [X, Y_{k−1}] with Y_{k−1} the row
    below. Computed with relative rounding u, Y_{k−1} carries an error of relative size
    ρ_{k−1} = ε_{k−1} r_{k−1}, where ε_{k−1} u is its error relative to its own scale and
    r_{k−1} = scale_{k−1} / ‖Y_{k−1}‖ ≥ 1 measures the cancellation that produced it; the bracket
    is linear in Y, so that error reaches row k at ρ_{k−1} times row k's scale. Hence

        ε_0 = 1,    ε_k = 1 + r_{k−1} ε_{k−1},

    and a row divided by ``scale_k · ε_k`` carries rounding noise of relative size ~u whatever
    cancellations happened inside it: a row that is zero analytically (a bracket with an inner
    bracket that vanished) stays at rounding level instead of becoming an O(1) random vector.
    Dividing rows by positive numbers leaves their span unchanged. Shapes: ``values (L, n)``,
    ``scales (L,)`` → ε ``(L,)``.
    """
    norms = jnp.linalg.norm(values, axis=-1)
    # a row that is exactly zero makes every row above it exactly zero: its ratio is moot
    ratios = jnp.where(norms > 0, scales / jnp.where(norms > 0, norms, 1.0), 0.0)
    eps = [jnp.ones((), values.dtype)]
    for k in range(1, values.shape[0]):
        eps.append(1.0 + ratios[k - 1] * eps[-1])
    return jnp.stack(eps)


def rounding_scales(values: Array, scales: Array) -> Array:
    """scale_k · ε_k (`rounding_amplification`): what each row of one bracket chain is
    normalised by, the size of the terms whose rounding it carries. Shapes as there."""
    return scales * rounding_amplification(values, scales)


def normalise_rows(rows: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Divide each row by its scale; rows with zero scale are exactly zero and stay zero.

    Shapes: ``rows (k, n)``, ``scales (k,)``.
    """
    scales = np.asarray(scales)
    safe = np.where(scales > 0, scales, 1.0)
    return np.asarray(rows) / safe[:, None]


@float64
def numerical_rank(
    rows: Float[Array, "k n"], scales: Float[Array, " k"] | None = None,
    rtol: float = DEFAULT_RTOL
) -> RankCut:
    """Rank of a stack of row vectors ``(k, n)``, normalised by ``scales`` (default: the largest
    row norm, so that rows are judged relative to the largest of them)."""
    rows = np.asarray(rows, dtype=np.float64)
    if scales is None:
        scales = np.full(rows.shape[0], np.max(np.linalg.norm(rows, axis=1)))
    return cut_spectrum(row_space_svd(normalise_rows(rows, scales))[0], rtol)
