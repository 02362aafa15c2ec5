"""Echelon form and rationalisation: reduced row echelon form of a null-space basis, rounding
to small rationals, membership of a vector in a law space."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

MAX_DENOMINATOR = 64
ROUND_TOL = 1e-9


def rref(V: np.ndarray, tol: float) -> tuple[np.ndarray, list[int]]:
    """Reduced row echelon form of the rows of V (partial pivoting, columns in order)."""
    A = np.array(V, dtype=np.float64)
    K, C = A.shape
    scale = np.abs(A).max() if A.size else 0.0
    pivots: list[int] = []
    r = 0
    for col in range(C):
        if r == K:
            break
        p = r + int(np.argmax(np.abs(A[r:, col])))
        if abs(A[p, col]) <= tol * max(scale, 1e-300):
            continue
        A[[r, p]] = A[[p, r]]
        A[r] /= A[r, col]
        others = np.arange(K) != r
        A[others] -= np.outer(A[others, col], A[r])
        pivots.append(col)
        r += 1
    A = A[:r]
    A[np.abs(A) < 1e-13] = 0.0
    return A, pivots


def rationalise(row: np.ndarray) -> list[Fraction] | None:
    fr = [Fraction(float(x)).limit_denominator(MAX_DENOMINATOR) for x in row]
    if max(abs(float(f) - x) for f, x in zip(fr, row)) > ROUND_TOL:
        return None
    return fr


def in_span(vec: np.ndarray, basis: np.ndarray, tol: float = 1e-9) -> bool:
    """``vec`` lies in the row span of the orthonormal ``basis``."""
    nrm = np.linalg.norm(vec)
    if nrm == 0:
        return False
    r = vec - basis.T @ (basis @ vec) if basis.shape[0] else vec
    return bool(np.linalg.norm(r) <= tol * nrm)
