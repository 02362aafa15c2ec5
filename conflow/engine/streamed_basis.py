"""A growing orthonormal basis of the trace, extended block by block (the streamed engine).

The streamed engine never stacks a whole level: it evaluates brackets in blocks of b rows and
keeps, per point, an orthogonal change of coordinates Q (n × n) whose first r columns span the
trace found so far, stored as the Householder reflectors that built it (left-looking blocked
QR). A block Y (b × n) of normalised rows is added by

    X = Qᵀ Yᵀ                      (n, b): rows [:r] lie in the trace, rows [r:] are new
    X[r:] = H [R; 0]               Householder QR of the residual (LAPACK geqrt), R (b, b)
    R = U Σ Wᵀ                     small SVD; k = #{σ_i > rtol}
    Q ← Q · diag(I_r, H · diag(U, I))

so that the k kept directions become coordinates r … r + k − 1. Householder reflectors are
orthogonal to rounding whatever σ is, so one pass suffices (Gram–Schmidt needs two), and applying
them uses matrix-matrix products (compact WY form). A level of c directions added to a trace of
dimension r₀ costs O(n c (r₀ + c)) flops ((4/3) n³ for r₀ = 0, c = n: the cost of one QR), against
the dense engine's O(n³) SVD per level; memory: the reflectors, about n floats per direction
kept (a block that keeps k < b directions still stores b reflectors).

The singular values are those of the block's residual, so they measure each direction against
the trace found before the block (with the dense engine, against the trace before the level).
"""

from __future__ import annotations

import functools

import numpy as np

from conflow.engine.rank import cut_spectrum, row_space_svd

# LAPACK's block size for the compact WY form: 512 made a 10⁴-dimensional trace 1.3× faster than 32.
_WY_BLOCK = 512


@functools.cache
def _lapack():
    """SciPy's LAPACK wrappers, loaded on the first streamed count on the host (0.1 s of
    import that dense counts and `import conflow` do not pay)."""
    from scipy.linalg import lapack

    return lapack


class TraceBasis:
    """The trace found so far at one point, as coordinates 0 … rank − 1 of a rotation Q of R^n.

    Each extension stores (offset, V, T, U): Householder vectors V and their WY factor T acting
    on coordinates offset … n − 1, then the small rotation U acting on the first columns of V.
    """

    def __init__(self, n: int):
        self.n = n
        self.rank = 0
        self._factors: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []

    @classmethod
    def of_rows(cls, rows: np.ndarray) -> TraceBasis:
        """The trace spanned by orthonormal ``rows (r, n)``, its coordinates 0 … r − 1 being
        theirs, in order, up to sign (a Householder QR of ``rowsᵀ``, whose R is diagonal ±1)."""
        basis = cls(rows.shape[1])
        r = rows.shape[0]
        if r:
            a, t, _ = _lapack().dgeqrt(min(_WY_BLOCK, r), np.asfortranarray(rows.T))
            basis._factors.append((0, np.asfortranarray(a[:, :r]), t, np.eye(r)))
            basis.rank = r
        return basis

    def rotate(self, x: np.ndarray) -> np.ndarray:
        """Qᵀ x for ``x (n, b)``: coordinates in which the trace is the first ``rank`` rows."""
        x = np.array(x, dtype=np.float64, order="F")
        for offset, v, t, u in self._factors:
            x[offset:], _ = _lapack().dgemqrt(v, t, x[offset:], trans="T")
            x[offset : offset + u.shape[0]] = u.T @ x[offset : offset + u.shape[0]]
        return x

    @property
    def rows(self) -> np.ndarray:
        """An orthonormal basis of the trace, shape ``(rank, n)`` (Q's first columns)."""
        x = np.zeros((self.n, self.rank), order="F")
        x[: self.rank] = np.eye(self.rank)
        for offset, v, t, u in reversed(self._factors):
            x[offset : offset + u.shape[0]] = u @ x[offset : offset + u.shape[0]]
            x[offset:], _ = _lapack().dgemqrt(v, t, x[offset:], trans="N")
        return x.T

    def project(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The normalised rows ``y (b, n)`` in the trace's coordinates: their coordinates on the
        trace directions, ``(b, rank)`` (in the order the directions were added), and their
        residual off the trace, ``(n − rank, b)``, for `add`."""
        x = self.rotate(np.asarray(y).T)
        return x[: self.rank].T, x[self.rank :]

    def add(self, residual: np.ndarray, rtol: float) -> tuple[np.ndarray, int]:
        """Add the directions of a `project` residual ``(n − rank, b)`` whose σ > ``rtol``.

        Returns the singular values σ of the residual (descending, min(b, n − r) of them) and
        the number k of directions added.
        """
        if self.rank == self.n:
            return np.zeros(0), 0
        a, t, _ = _lapack().dgeqrt(min(_WY_BLOCK, *residual.shape), residual)
        width = min(residual.shape)
        r_factor = np.triu(a[:width])  # (width, b)
        sigma, ut = row_space_svd(r_factor.T, full=False)  # left singular vectors of R, as rows
        k = cut_spectrum(sigma, rtol).rank
        if k:
            self._factors.append((self.rank, np.asfortranarray(a[:, :width]), t, ut.T.copy()))
            self.rank += k
        return sigma, k

    def extend(self, y: np.ndarray, rtol: float) -> tuple[np.ndarray, int]:
        """Add the directions of the normalised rows ``y (b, n)`` that are new to the trace
        (`project`, then `add`)."""
        if self.rank == self.n:
            return np.zeros(0), 0
        return self.add(self.project(y)[1], rtol)
