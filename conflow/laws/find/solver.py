"""The numeric solver: constraint rows ⟨∇z^α, χ_j(z)⟩ at generic points, and the per-class
null space by SVD, validated at fresh points and refined with more points on failure."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine.rank import cut_spectrum
from conflow.errors import InputError
from conflow.flows import AbstractFlow
from conflow.models.base import Model

MAX_DENSE_CLASS = 6_000
VALIDATION_TOL = 1e-8
MAX_REFINE = 5
EVAL_CHUNK = 8
BATCH_ENTRIES = 1_000_000  # rows × columns evaluated at once


def generator_evaluator(model: Model, flow: AbstractFlow):
    """(n, m, f) with f: states (P, n) ↦ generator matrices (P, m, n), row j = χ_j(z) (jitted)."""
    fam = flow.family(model)
    field = fam.field
    zero = jnp.zeros(fam.n_coeffs)

    def gens(z):
        return jax.jacfwd(lambda a: field(z, a))(zero).T

    return fam.state_dim, fam.n_coeffs, jax.jit(jax.vmap(gens))


class Points:
    """Generic states and the generator matrices χ_j(z) there, extended on demand."""

    def __init__(self, model: Model, flow: AbstractFlow, seed: int, share: Points | None = None):
        self.model, self.flow, self.seed = model, flow, seed
        if share is not None:  # same generators: reuse the compiled evaluator
            self.n, self.m, self._eval = share.n, share.m, share._eval
        else:
            self.n, self.m, self._eval = generator_evaluator(model, flow)
        self.Z = np.zeros((0, self.n))
        self.X = np.zeros((0, self.m, self.n))
        self._batches = 0

    def evaluate(self, Z: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, Z.shape[0], EVAL_CHUNK):
            chunk = Z[i : i + EVAL_CHUNK]
            pad = EVAL_CHUNK - chunk.shape[0]
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            out.append(np.asarray(self._eval(jnp.asarray(chunk)))[: EVAL_CHUNK - pad])
        return np.concatenate(out) if out else np.zeros((0, self.m, self.n))

    def get(self, P: int) -> tuple[np.ndarray, np.ndarray]:
        while self.Z.shape[0] < P:
            k = max(P - self.Z.shape[0], EVAL_CHUNK)
            new = np.asarray(self.flow.sample_points(
                self.model, np.random.default_rng([self.seed, self._batches]), k))
            self._batches += 1
            self.Z = np.concatenate([self.Z, new])
            self.X = np.concatenate([self.X, self.evaluate(new)])
        return self.Z[:P], self.X[:P]


def _rows(Z: np.ndarray, X: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Constraint entries ⟨∇z^α, χ_j(z)⟩ and their term magnitudes, shape (P·m, C) each.

    ``idx`` (C, k): monomials as variable indices padded with n (the coordinate ≡ 1).
    """
    P, m, n = X.shape
    C, k = idx.shape
    zext = np.concatenate([Z, np.ones((P, 1))], axis=1)
    xext = np.concatenate([X, np.zeros((P, m, 1))], axis=2)
    zg = zext[:, idx]  # (P, C, k)
    others = np.ones_like(zg)
    for t in range(k):  # product of the other factors
        for u in range(k):
            if u != t:
                others[:, :, t] *= zg[:, :, u]
    xg = xext[:, :, idx]  # (P, m, C, k)
    terms = xg * others[:, None, :, :]
    vals = terms.sum(axis=3).reshape(P * m, C)
    mags = np.abs(terms).sum(axis=3).reshape(P * m, C)
    return vals, mags


def _scaled(vals: np.ndarray, mags: np.ndarray, colscale: np.ndarray | None = None):
    """Columns divided by their RMS magnitude (or the given scales), rows by the norm of their
    term magnitudes. Shapes (..., R, C); returns (scaled values, column scales)."""
    if colscale is None:
        colscale = np.sqrt(np.mean(mags**2, axis=-2, keepdims=True))
        colscale = np.where(colscale > 0, colscale, 1.0)
    v, mg = vals / colscale, mags / colscale
    rs = np.linalg.norm(mg, axis=-1, keepdims=True)
    return v / np.where(rs > 0, rs, 1.0), colscale


@dataclasses.dataclass
class ClassResult:
    cols: np.ndarray  # (C,) monomial columns
    basis: np.ndarray  # (K, C) orthonormal basis of the class's law space (original coords)
    sigma_kept: float | None
    sigma_dropped: float | None
    validation: float  # largest residual of an accepted law at the validation points
    ok: bool
    points: int


def _solve_group(cols: np.ndarray, idx: np.ndarray, pts: Points, val: Points, P: int,
                 rtol: float) -> list[ClassResult]:
    """Null spaces of G classes of equal size C (``cols`` (G, C)) from P points."""
    G, C = cols.shape
    Z, X = pts.get(P)
    vals, mags = _rows(Z, X, idx[cols.ravel()])
    R = vals.shape[0]
    A, colscale = _scaled(vals.reshape(R, G, C).transpose(1, 0, 2),
                          mags.reshape(R, G, C).transpose(1, 0, 2))
    if R < C:
        A = np.concatenate([A, np.zeros((G, C - R, C))], axis=1)
    if A.shape[1] > C:  # tall: reduce to the C × C triangular factor first
        A = np.linalg.qr(A, mode="r")
    sigma, vt = _batched_svd(A)
    Zv, Xv = val.get(2)
    vv, mv = _rows(Zv, Xv, idx[cols.ravel()])
    Rv = vv.shape[0]
    Av, _ = _scaled(vv.reshape(Rv, G, C).transpose(1, 0, 2),
                    mv.reshape(Rv, G, C).transpose(1, 0, 2), colscale)
    out = []
    for g in range(G):
        cut = cut_spectrum(sigma[g], rtol)
        null_hat = vt[g, cut.rank:]  # (K, C), scaled coordinates, orthonormal
        res = np.abs(Av[g] @ null_hat.T).max() if null_hat.shape[0] and Rv else 0.0
        basis = null_hat / colscale[g, 0]
        if basis.shape[0]:
            basis = np.linalg.qr(basis.T)[0].T  # orthonormal in original coordinates
        out.append(ClassResult(cols[g], basis, cut.sigma_kept, cut.sigma_dropped, float(res),
                                bool(res <= VALIDATION_TOL), P))
    return out


def _batched_svd(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """σ (G, C) descending and Vᵀ (G, C, C), rescaled per matrix to unit max entry (LAPACK can
    fail on pure rounding noise otherwise)."""
    size = np.abs(A).max(axis=(1, 2), keepdims=True)
    size = np.where(size > 0, size, 1.0)
    try:
        _, s, vt = np.linalg.svd(A / size, full_matrices=True)
    except np.linalg.LinAlgError:
        s_list, vt_list = [], []
        for a in A / size:
            _, s1, v1 = (np.asarray(x) for x in jnp.linalg.svd(jnp.asarray(a)))
            s_list.append(s1)
            vt_list.append(v1)
        s, vt = np.stack(s_list), np.stack(vt_list)
    return s * size[:, :, 0], vt


def _points_for(C: int, m: int) -> int:
    margin = max(8, C // 3)
    return max(2, math.ceil((C + margin) / max(m, 1)))


def solve_classes(class_of: np.ndarray, idx: np.ndarray, pts: Points, val: Points,
                   rtol: float) -> list[ClassResult]:
    order = np.argsort(class_of, kind="stable")
    bounds = np.flatnonzero(np.diff(class_of[order])) + 1
    groups = np.split(order, bounds)
    if max(len(g) for g in groups) > MAX_DENSE_CLASS:
        raise InputError(
            f"the largest block of unknowns has {max(len(g) for g in groups)} monomials "
            f"(limit {MAX_DENSE_CLASS}) — no exploitable polynomial structure at this size; "
            f"lower the degree or the model size")
    by_size: dict[int, list[np.ndarray]] = {}
    for g in groups:
        by_size.setdefault(len(g), []).append(g)
    results: list[ClassResult] = []
    for C, members in sorted(by_size.items()):
        pending = members
        P = _points_for(C, pts.m)
        for attempt in range(MAX_REFINE + 1):
            batch = max(1, BATCH_ENTRIES // max(1, C * P * pts.m + C * C))
            failed = []
            for i in range(0, len(pending), batch):
                cols = np.stack(pending[i : i + batch])
                for res in _solve_group(cols, idx, pts, val, P, rtol):
                    if res.ok or attempt == MAX_REFINE:
                        results.append(res)
                    else:
                        failed.append(res.cols)
            if not failed:
                break
            pending, P = failed, 2 * P
    return results
