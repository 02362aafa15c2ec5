"""The search space and its grading: the monomial table, and the split of the monomials into
classes of equal grade (exact weights over Q and GF(2)) that are solved independently."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np

from conflow.errors import InputError
from conflow.exact import polynomial_form
from conflow.flows import AbstractFlow
from conflow.laws.find.echelon import rref
from conflow.models.base import Model

MAX_MONOMIALS = 2_000_000


def monomial_table(n: int, degree: int, homogeneous: bool) -> tuple[np.ndarray, list]:
    """idx (N, degree) int32 (padded with n) and the monomials as tuples, ordered by degree then
    lexicographically."""
    degrees = [degree] if homogeneous else list(range(1, degree + 1))
    total = sum(math.comb(n + d - 1, d) for d in degrees)
    if total > MAX_MONOMIALS:
        raise InputError(f"degree {degree} in {n} variables gives {total} monomials "
                         f"(limit {MAX_MONOMIALS}); lower --degree or use a smaller model")
    monos: list[tuple[int, ...]] = []
    idx = np.full((total, degree), n, dtype=np.int32)
    start = 0
    for d in degrees:
        block = list(itertools.combinations_with_replacement(range(n), d))
        idx[start : start + len(block), :d] = np.asarray(block, dtype=np.int32).reshape(-1, d)
        monos.extend(block)
        start += len(block)
    return idx, monos


def _exact_fields(model: Model, flow: AbstractFlow):
    """The flow's generators as exact polynomial fields, or ``None`` if unavailable."""
    if not flow.is_polynomial:
        return None  # a user metric: no exact fields
    try:
        return flow.polynomial_fields(model, polynomial_form(model.phi, model.D))
    except InputError:
        return None


def _grading_matrix(fields, n: int) -> np.ndarray:
    """Integer rows (β − e_a) − (β₀ − e_a₀) over the terms of each field (deduplicated)."""
    rows = []
    for field in fields:
        base = None
        for a, P in enumerate(field):
            for mono, _ in P.items():
                v = np.zeros(n, dtype=np.int64)
                for var, e in mono:
                    v[var] += e
                v[a] -= 1
                if base is None:
                    base = v
                else:
                    rows.append(v - base)
    if not rows:
        return np.zeros((0, n), dtype=np.int64)
    return np.unique(np.asarray(rows), axis=0)


def _gf2_nullspace(M: np.ndarray, n: int) -> np.ndarray:
    """Basis (f, n) of {s ∈ GF(2)^n : M s = 0 mod 2}."""
    A = (np.abs(M) % 2).astype(np.uint8)
    A = A[A.any(axis=1)]
    if A.size:
        A = np.unique(A, axis=0)
    pivots: list[int] = []
    r = 0
    for col in range(n):
        if r == A.shape[0]:
            break
        nz = np.nonzero(A[r:, col])[0]
        if nz.size == 0:
            continue
        p = r + nz[0]
        if p != r:
            A[[r, p]] = A[[p, r]]
        mask = A[:, col].astype(bool)
        mask[r] = False
        A[mask] ^= A[r]
        pivots.append(col)
        r += 1
    free = [c for c in range(n) if c not in set(pivots)]
    basis = np.zeros((len(free), n), dtype=np.uint8)
    for i, f in enumerate(free):
        basis[i, f] = 1
        for row, pc in enumerate(pivots):
            basis[i, pc] = A[row, f]
    if basis.size:
        assert not ((M.astype(np.int64) @ basis.T.astype(np.int64)) % 2).any()
    return basis


def _rational_nullspace(M: np.ndarray, n: int) -> np.ndarray:
    """Integer vectors w (f, n) with M w = 0 exactly: the rational null space found by SVD +
    RREF + rounding; any row failing the exact check is dropped (a coarser grading is still
    valid)."""
    if M.shape[0] == 0:
        return np.eye(n, dtype=np.int64)
    A = M.astype(np.float64)
    if A.shape[0] > n:  # the n × n triangular factor has the same row space
        A = np.linalg.qr(A, mode="r")
    _, s, vt = np.linalg.svd(A, full_matrices=True)
    r = int(np.sum(s > 1e-9 * s[0])) if s.size and s[0] > 0 else 0
    W = vt[r:]
    if W.shape[0] == 0:
        return np.zeros((0, n), dtype=np.int64)
    R, _ = rref(W, 1e-9)
    out = []
    for row in R:
        fr = [Fraction(float(x)).limit_denominator(1000) for x in row]
        if max(abs(float(f) - x) for f, x in zip(fr, row)) > 1e-8:
            continue
        lcm = 1
        for f in fr:
            lcm = lcm * f.denominator // math.gcd(lcm, f.denominator)
        w = np.array([int(f * lcm) for f in fr], dtype=np.int64)
        if w.any() and not (M @ w).any():
            out.append(w)
    return np.asarray(out, dtype=np.int64).reshape(-1, n)


def monomial_classes(model: Model, flow: AbstractFlow, n: int,
                     idx: np.ndarray) -> tuple[np.ndarray, str]:
    """Class id of every monomial (see `conflow.laws.find`) and a description of the grading."""
    fields = _exact_fields(model, flow)
    if fields is None:
        return np.zeros(idx.shape[0], dtype=np.int64), "none (no exact polynomial fields)"
    M = _grading_matrix(fields, n)
    wq = _rational_nullspace(M, n)
    w2 = _gf2_nullspace(M, n)
    keys = []
    if wq.shape[0]:
        ext = np.concatenate([wq.T, np.zeros((1, wq.shape[0]), dtype=np.int64)])
        keys.append(ext[idx].sum(axis=1))
    if w2.shape[0]:
        ext = np.concatenate([w2.T.astype(np.int64), np.zeros((1, w2.shape[0]), np.int64)])
        keys.append(ext[idx].sum(axis=1) % 2)
    desc = f"{wq.shape[0]} weight(s) over Q, {w2.shape[0]} sign flip(s) over GF(2)"
    if not keys:
        return np.zeros(idx.shape[0], dtype=np.int64), desc
    _, inverse = np.unique(np.concatenate(keys, axis=1), axis=0, return_inverse=True)
    return inverse.ravel().astype(np.int64), desc
