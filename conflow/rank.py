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

Array = jax.Array

DEFAULT_RTOL = 1e-9
DEFAULT_MIN_GAP = 1e4


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


def normalise_rows(rows: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Divide each row by its scale; rows with zero scale are exactly zero and stay zero.

    Shapes: ``rows (k, n)``, ``scales (k,)``.
    """
    scales = np.asarray(scales)
    safe = np.where(scales > 0, scales, 1.0)
    return np.asarray(rows) / safe[:, None]


def numerical_rank(
    rows: Array, scales: Array | None = None, rtol: float = DEFAULT_RTOL
) -> RankCut:
    """Rank of a stack of row vectors ``(k, n)``, normalised by ``scales`` (default: the largest
    row norm, so that rows are judged relative to the largest of them)."""
    rows = np.asarray(rows, dtype=np.float64)
    if scales is None:
        scales = np.full(rows.shape[0], np.max(np.linalg.norm(rows, axis=1)))
    return cut_spectrum(row_space_svd(normalise_rows(rows, scales))[0], rtol)
