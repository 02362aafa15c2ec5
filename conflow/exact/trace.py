"""Certified Lie-trace dimension for polynomial vector fields: exact brackets, ranks modulo p.

`exact_lie_trace(fields, n)` builds the sequence of MATH.md §1.6 with pointwise pruning,

    level 0:    the generators χ_1..χ_d, each kept iff its value at z raises the rank;
    level k+1:  [χ_i, K] for EVERY generator χ_i and every field K kept at level k, kept iff its
                value at z raises the rank;

and stops when a level keeps nothing (stagnation ⇒ converged) or the rank reaches n. Reaching
``max_depth`` with new fields is ``not_converged`` (no count). It is never given an expected count.

Everything is exact: fields are sparse polynomials reduced mod a prime p < 2^61, the point z is
uniform in {1, …, p−1}^n, and ranks are computed by Gaussian elimination over F_p (reduced row
echelon form, incremental, blocked). Only kept fields are bracketed symbolically: the value of a
candidate [χ_i, K] at z is ∂K(z)·χ_i(z) − ∂χ_i(z)·K(z), computed from the sparse Jacobians at z
for all generators and a block of kept fields at a time (memory bounded by `_CAND_ENTRIES`).
Products mod p split numbers into three 21-bit limbs so that every partial sum is an exact int64
(`matmul_mod`, `mul_mod`). Two independent runs (one per prime, each with its own random point)
must agree.

Stagnation shortcut: before evaluating a level's candidates one by one, the single random element
[Σ_i c_i χ_i, Σ_j b_j K_j](z) (b, c uniform mod p) is tested; if it lies in the span of the kept
values, the level keeps nothing. This answer is wrong with probability ≤ 2/p (Schwartz–Zippel in
(b, c)), which is added to the failure bound. Otherwise every candidate is evaluated.

Soundness (MATH.md §1.6). If no rank test below fails, then on a dense open set every pruned
candidate is a rational combination of the fields kept before it, so [χ_i, fK] = f[χ_i, K] +
(χ_i f)K stays in the module spanned by the kept fields and their brackets with every generator;
hence that module contains every right-nested bracket, i.e. Lie(W), and the kept fields (which are
in Lie(W)) give dim Lie(W)(z) = number of kept fields at generic z.

Failure probability (Schwartz–Zippel). A kept field raised the rank mod p at z, so the
corresponding minor is a nonzero polynomial: keeping is never wrong. A pruned candidate c is wrong
only if the generic rank of (kept so far) ∪ {c} is one more than at z: some minor, of degree at most
deg c + Σ deg(kept), vanishes at z although it is a nonzero polynomial mod p. With z uniform in
(F_p^*)^n this has probability ≤ (deg c + Σ deg kept)/(p − 1). The run's ``failure_bound`` is the
sum of these over all pruned candidates (union bound), with deg [χ_i, K] ≤ deg χ_i + deg K − 1 and
Σ deg kept taken at the end of the candidate's level, plus 2 per stagnation shortcut taken; i.e.
failure_bound = (Σ_pruned (deg c + Σ deg kept) + 2·#shortcuts) / (p − 1). It assumes p is a "good" prime: it divides
neither a denominator of the fields (checked) nor all coefficients of the relevant minors (not
checkable cheaply; the second, independent prime and point guard against it: disagreement is
reported as status ``disagree``). Both runs must be wrong for an agreeing answer to be wrong, so
the agreed answer fails with probability at most the product of the runs' bounds; the reported
``failure_bound`` is the larger single-run bound (conservative).
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Sequence

import numpy as np

from conflow.engine.trace import progress_bar
from conflow.errors import InputError
from conflow.exact.extract import Region
from conflow.exact.polynomial import (
    PointEvaluator,
    TimeLimitError,
    _combine,
    _limbs,
    _mul_limbs,
    _raw_degree,
    _sub_mod,
    bracket_raw,
    matmul_mod,
    mul_mod,
    time_bound,
    to_raw,
)
from conflow.status import Status

__all__ = [
    "DEFAULT_PRIMES",
    "ExactRun",
    "ExactTrace",
    "exact_lie_trace",
    "matmul_mod",
]

#: Two 61-bit primes: the Mersenne prime 2^61 − 1 and 2^61 − 31.
DEFAULT_PRIMES: tuple[int, int] = ((1 << 61) - 1, (1 << 61) - 31)

OK, DISAGREE, NOT_CONVERGED = Status.OK, Status.DISAGREE, Status.NOT_CONVERGED

#: Candidate brackets of a level are evaluated at z in blocks of about this many int64 entries
#: (d generators × block of kept fields × n), so memory stays bounded for large d·r·n.
_CAND_ENTRIES = 1 << 22


def is_prime(n: int) -> bool:
    """Deterministic Miller–Rabin for n < 3.3·10^24 (covers every p < 2^61)."""
    n = int(n)
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41)
    for q in bases:
        if n % q == 0:
            return n == q
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Exact linear algebra mod p < 2^61 on int64 arrays
# ---------------------------------------------------------------------------------------------


class _Echelon:
    """Reduced row echelon basis R over F_p of the values kept so far (incremental).

    R has identity columns at the pivots P; a vector v is in the span iff its residual
    v[N] − v[P]·R[:, N] on the non-pivot columns N vanishes, which costs m·|P|·|N| per batch.
    """

    def __init__(self, n: int, p: int):
        self.n, self.p = n, p
        self.R = np.zeros((0, n), dtype=np.int64)
        self.pivots: list[int] = []
        self.free = np.arange(n)

    @property
    def rank(self) -> int:
        return len(self.pivots)

    def residual(self, V: np.ndarray) -> np.ndarray:
        """(m, |N|) residuals of the rows of V."""
        W = V[:, self.free]
        if self.pivots and V.shape[0]:
            W = _sub_mod(W, matmul_mod(V[:, self.pivots], self.R[:, self.free], self.p), self.p)
        return W

    def select(self, V: np.ndarray, block: int = 64) -> list[int]:
        """Indices of the rows of V that raise the rank, greedily in order; adds them.

        Rows are eliminated in blocks: inside a block one pivot at a time, then the block's new
        rows E (reduced echelon on their pivot columns Q) update every later row at once,
        W ← W − W[:, Q]·E, and the old basis, R ← R − R[:, Q]·E (on the free columns).
        """
        p = self.p
        rows = np.flatnonzero(V.any(axis=1))
        if not rows.size or not self.free.size:
            return []
        W = self.residual(V[rows])
        alive = np.flatnonzero(W.any(axis=1))
        kept: list[int] = []
        while alive.size and self.free.size:
            blk, rest = alive[:block], alive[block:]
            Wb = W[blk].copy()
            E = np.zeros((0, Wb.shape[1]), dtype=np.int64)
            Q: list[int] = []
            for t in range(len(blk)):
                w = Wb[t]
                nzc = np.flatnonzero(w)
                if not nzc.size:
                    continue
                cl = int(nzc[0])
                w = mul_mod(w, pow(int(w[cl]), -1, p), p)
                if E.shape[0]:
                    E = _sub_mod(E, mul_mod(E[:, cl][:, None], w[None, :], p), p)
                E = np.vstack([E, w[None, :]])
                Q.append(cl)
                if t + 1 < len(blk):
                    below = Wb[t + 1 :]
                    hit = np.flatnonzero(below[:, cl])
                    if hit.size:
                        below[hit] = _sub_mod(
                            below[hit], mul_mod(below[hit, cl][:, None], w[None, :], p), p
                        )
                kept.append(int(rows[blk[t]]))
            if not Q:
                alive = rest
                continue
            # old basis rows: clear the new pivot columns
            if self.pivots:
                Rf = self.R[:, self.free]
                self.R[:, self.free] = _sub_mod(
                    Rf, matmul_mod(np.ascontiguousarray(Rf[:, Q]), E, p), p
                )
            new = np.zeros((len(Q), self.n), dtype=np.int64)
            new[:, self.free] = E
            self.R = np.vstack([self.R, new])
            self.pivots.extend(int(self.free[c]) for c in Q)
            keep_cols = np.ones(len(self.free), dtype=bool)
            keep_cols[Q] = False
            if rest.size:
                Wr = W[rest]
                Wr = _sub_mod(Wr, matmul_mod(np.ascontiguousarray(Wr[:, Q]), E, p), p)
                W = Wr[:, keep_cols]
                rest_alive = W.any(axis=1)
                # W is now indexed by position in `rest`; keep the map to V's rows
                rows = rows[rest][rest_alive]
                W = W[rest_alive]
                alive = np.arange(W.shape[0])
            else:
                alive = rest
            self.free = self.free[keep_cols]
        return kept


class _JacobianStack:
    """The Jacobians ∂F_f(z) of a list of fields, stored sparse (COO) for products with vectors."""

    def __init__(self, coos: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int):
        self.n, self.nf = n, len(coos)
        if coos:
            f = np.concatenate([np.full(len(c[0]), t, dtype=np.int64) for t, c in enumerate(coos)])
            k = np.concatenate([c[0] for c in coos]).astype(np.int64)
            j = np.concatenate([c[1] for c in coos]).astype(np.int64)
            v = np.concatenate([c[2] for c in coos]).astype(np.int64)
        else:
            f = k = j = v = np.zeros(0, dtype=np.int64)
        key = f * n + k
        order = np.argsort(key, kind="stable")
        self.f, self.k, self.j, self.key = f[order], k[order], j[order], key[order]
        self.vl = _limbs(v[order])
        if self.key.size:
            first = np.ones(self.key.size, dtype=bool)
            first[1:] = self.key[1:] != self.key[:-1]
            self.starts = np.flatnonzero(first)
            self.out_keys = self.key[self.starts]
        else:
            self.starts = self.out_keys = np.zeros(0, dtype=np.int64)

    def apply_each(self, vecs: np.ndarray, p: int) -> np.ndarray:
        """out[a, f, :] = ∂F_f(z) · vecs[a], shape (m, nf, n)."""
        m, n = vecs.shape[0], self.n
        out = np.zeros((m, self.nf * n), dtype=np.int64)
        if self.key.size and m:
            chunk = max(1, (1 << 19) // self.key.size)
            for a0 in range(0, m, chunk):
                S = _mul_limbs(self.vl, vecs[a0 : a0 + chunk][:, self.j])
                S = [np.add.reduceat(s, self.starts, axis=1) for s in S]
                out[a0 : a0 + chunk, self.out_keys] = _combine(S, p)
        return out.reshape(m, self.nf, n)

    def apply_sum(self, vecs: np.ndarray, p: int) -> np.ndarray:
        """Σ_f ∂F_f(z) · vecs[f], shape (n,)."""
        n = self.n
        if not self.key.size:
            return np.zeros(n, dtype=np.int64)
        out = np.zeros(n, dtype=np.int64)
        step = 1 << 19  # int64 bins stay below 2^63: at most 2^19 terms of < 3·2^42 each
        for e0 in range(0, self.key.size, step):
            sl = slice(e0, e0 + step)
            S = _mul_limbs(tuple(x[sl] for x in self.vl), vecs[self.f[sl], self.j[sl]])
            acc = []
            for s in S:
                a = np.zeros(n, dtype=np.int64)
                np.add.at(a, self.k[sl], s)
                acc.append(a)
            out += _combine(acc, p)
            out -= p * (out >= p)
        return out


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExactRun:
    """One (prime, point) run of the construction.

    Attributes:
        prime: p.
        dim: final rank (dim Lie(W)(z) mod p), or ``None`` if not converged.
        status: ``"ok"`` or ``"not_converged"`` (``max_depth`` reached, or ``timed_out``).
        ranks: cumulative rank after each level 0, 1, …, depth.
        kept: fields kept at each level.
        depth: index of the last level built (the stagnant one when converged).
        n_candidates: brackets evaluated at the point (levels ≥ 1).
        n_symbolic: brackets computed as polynomials (the kept ones).
        max_degree: largest total degree among the kept fields.
        failure_bound: Schwartz–Zippel union bound for this run (module docstring).
        seconds: wall time.
        point: the random point z ∈ {1..p−1}^n (for reproduction).
        timed_out: stopped at the time limit (``status`` is then ``"not_converged"``).
    """

    prime: int
    dim: int | None
    status: Status
    ranks: tuple[int, ...]
    kept: tuple[int, ...]
    depth: int
    n_candidates: int
    n_symbolic: int
    max_degree: int
    failure_bound: float
    seconds: float
    point: tuple[int, ...] = dataclasses.field(default=(), repr=False)
    timed_out: bool = False


@dataclasses.dataclass(frozen=True)
class ExactTrace:
    """Certified dim Lie(W)(z) at generic z for polynomial fields on R^n.

    Attributes:
        dim: the dimension (``None`` unless status is ``"ok"``).
        state_dim: n.
        status: ``"ok"``; ``"disagree"`` if the runs (independent primes and points) differ in
            dimension or rank profile — a bug or a bad prime, never a count; ``"not_converged"``
            if ``max_depth`` was reached while levels still added fields, or the time limit
            (``reason`` then says so).
        ranks: cumulative rank after each level (first run).
        depth: last level built (first run).
        primes: the primes used.
        failure_bound: the largest single-run Schwartz–Zippel bound (see module docstring).
        seconds: total wall time.
        n_brackets: candidate brackets evaluated at a point, summed over runs.
        n_symbolic: brackets computed as polynomials, summed over runs.
        runs: per-run details.
        region: for a count on the activation region of a point (``exact_count_laws(...,
            region=θ0)``), the `Region`: θ0 and the switches fixed; ``None`` for a polynomial φ.
        reason: why there is no count when the run was stopped at the time limit, else ``""``.
    """

    dim: int | None
    state_dim: int
    status: Status
    ranks: tuple[int, ...]
    depth: int
    primes: tuple[int, ...]
    failure_bound: float
    seconds: float
    n_brackets: int
    n_symbolic: int
    runs: tuple[ExactRun, ...]
    region: Region | None = None
    reason: str = ""

    @property
    def n_laws(self) -> int | None:
        """Number of independent conservation laws, n − dim (``None`` without a count)."""
        return None if self.dim is None else self.state_dim - self.dim


# ---------------------------------------------------------------------------------------------
# The construction
# ---------------------------------------------------------------------------------------------


def _random_residual_zero(
    b: np.ndarray,
    c: np.ndarray,
    Xv: np.ndarray,
    k_val: np.ndarray,
    gstack: _JacobianStack,
    kstack: _JacobianStack,
    ech: _Echelon,
    p: int,
) -> bool:
    """Is [Σ_i c_i χ_i, Σ_j b_j K_j](z) in the span of the kept values? (b, c uniform mod p)

    [Σ_i c_i χ_i, Σ_j b_j K_j](z) = Σ_j b_j ∂K_j(z) x − Σ_i c_i ∂χ_i(z) k with x = Σ_i c_i χ_i(z),
    k = Σ_j b_j K_j(z): two sparse Jacobian-vector sums. Its residual is Σ_{j,i} b_j c_i times the
    residual of candidate [χ_i, K_j], a polynomial of degree 2 in (b, c); if some candidate of the
    level is outside the span it is a nonzero polynomial, so the test wrongly answers "in the span"
    with probability ≤ 2/p (Schwartz–Zippel).
    """
    x = matmul_mod(c[None, :], Xv, p)  # (1, n)
    k = matmul_mod(b[None, :], k_val, p)  # (1, n)
    Y = mul_mod(b[:, None], x, p)  # (r, n): b_j x
    w = mul_mod(c[:, None], k, p)  # (d, n): c_i k
    v = _sub_mod(kstack.apply_sum(Y, p), gstack.apply_sum(w, p), p)
    return not ech.residual(v[None, :]).any()


def _single_run(
    gens: list[dict],
    n: int,
    p: int,
    point: list[int],
    max_depth: int,
    rng: random.Random,
    expired: Callable[[], bool],
    bar,
) -> ExactRun:
    t0 = time.perf_counter()
    ev = PointEvaluator(point, p)
    nprng = np.random.default_rng(rng.getrandbits(64))
    g_val, g_jac, g_deg = [], [], []
    for F in gens:
        val, jac = ev.value_and_jacobian(F)
        g_val.append(val)
        g_jac.append(jac)
        g_deg.append(_raw_degree(F))
    d = len(gens)
    Xv = np.array(g_val, dtype=np.int64).reshape(d, n)
    gdeg = np.array(g_deg, dtype=np.int64)
    gstack = _JacobianStack(g_jac, n)

    ech = _Echelon(n, p)
    # Σ over pruned candidates of the degree bound of the minor that must not vanish, plus 2 per
    # random stagnation test that declared a level empty; failure_bound = bound_num / (p − 1).
    bound_num = 0

    # level 0: the generators
    kept_idx = ech.select(Xv) if d else []
    kept = [gens[i] for i in kept_idx]
    k_val = Xv[kept_idx] if kept_idx else np.zeros((0, n), dtype=np.int64)
    k_jac = [g_jac[i] for i in kept_idx]
    k_deg = [int(gdeg[i]) for i in kept_idx]
    sum_deg = sum(k_deg)
    pruned = np.ones(d, dtype=bool)
    pruned[kept_idx] = False
    bound_num += int(gdeg[pruned].sum()) + int(pruned.sum()) * sum_deg
    ranks, kept_counts = [ech.rank], [len(kept_idx)]
    max_deg = max(k_deg, default=0)
    n_cand = n_sym = 0
    depth = 0
    status = OK

    level = 0
    timed_out = False
    bar.update()
    bar.set_postfix(rank=ech.rank)
    while True:
        if ech.rank == n or not kept:
            break  # full trace, or the last level kept nothing: stagnation
        if level == max_depth or expired():
            status, timed_out = NOT_CONVERGED, level < max_depth
            break
        level += 1
        r = len(kept)
        kstack = _JacobianStack(k_jac, n)
        n_cand += r * d
        cand_deg = np.maximum(np.add.outer(np.array(k_deg, dtype=np.int64), gdeg) - 1, 0).ravel()
        cut = False  # the level cut short by the time limit
        cb = nprng.integers(0, p, size=r, dtype=np.int64)
        cc = nprng.integers(0, p, size=d, dtype=np.int64)
        if _random_residual_zero(cb, cc, Xv, k_val, gstack, kstack, ech, p):
            sel: list[int] = []
            V: dict[int, np.ndarray] = {}
            bound_num += 2
        else:
            # values of [χ_i, K_j](z) = ∂K_j(z) χ_i(z) − ∂χ_i(z) K_j(z), candidates ordered (j, i),
            # evaluated for a block of kept fields K_j at a time (memory d·block·n), selected
            # greedily in order (the echelon basis carries over from block to block)
            sel = []
            V = {}
            blk = max(1, _CAND_ENTRIES // max(1, d * n))
            for j0 in range(0, r, blk):
                j1 = min(r, j0 + blk)
                kb = kstack if (j0, j1) == (0, r) else _JacobianStack(k_jac[j0:j1], n)
                A = kb.apply_each(Xv, p)  # (d, b, n): A[i, j] = ∂K_j χ_i
                B = gstack.apply_each(k_val[j0:j1], p)  # (b, d, n): B[j, i] = ∂χ_i K_j
                Vb = _sub_mod(np.ascontiguousarray(A.transpose(1, 0, 2)), B, p)
                Vb = Vb.reshape((j1 - j0) * d, n)
                for t in ech.select(Vb):
                    sel.append(j0 * d + t)
                    V[j0 * d + t] = Vb[t].copy()
                cut = expired()
                if ech.rank == n or cut:
                    break  # the rest is pruned (and counted in the failure bound as such)
        new, new_val, new_jac, new_deg = [], [], [], []
        for built, idx in enumerate(sel):
            if cut or expired():
                cut = True
                break
            bar.set_postfix(rank=ech.rank, level=level, brackets=f"{built}/{len(sel)}")
            j, i = divmod(idx, d)
            try:
                F = bracket_raw(gens[i], kept[j], p, n, int(gdeg[i]), k_deg[j])
            except TimeLimitError:  # the time_bound of exact_lie_trace
                cut = True
                break
            val, jac = ev.value_and_jacobian(F)
            if not np.array_equal(val, V[idx]):
                raise RuntimeError(
                    "exact engine: symbolic bracket disagrees with its value at z (bug)"
                )
            new.append(F)
            new_val.append(val)
            new_jac.append(jac)
            new_deg.append(_raw_degree(F))
        if cut:  # a level cut short is no level: the run stops without a count
            status, timed_out = NOT_CONVERGED, True
            break
        bar.update()
        bar.set_postfix(rank=ech.rank)
        n_sym += len(sel)
        sum_deg += sum(new_deg)
        pr = np.ones(r * d, dtype=bool)
        pr[sel] = False
        bound_num += int(cand_deg[pr].sum()) + int(pr.sum()) * sum_deg
        ranks.append(ech.rank)
        kept_counts.append(len(sel))
        depth = level
        max_deg = max([max_deg, *new_deg])
        kept, k_jac, k_deg = new, new_jac, new_deg
        k_val = np.array(new_val, dtype=np.int64).reshape(len(new), n)

    return ExactRun(
        prime=p,
        dim=ech.rank if status == OK else None,
        status=status,
        ranks=tuple(ranks),
        kept=tuple(kept_counts),
        depth=depth,
        n_candidates=n_cand,
        n_symbolic=n_sym,
        max_degree=max_deg,
        failure_bound=min(1.0, bound_num / (p - 1)),
        seconds=time.perf_counter() - t0,
        point=tuple(point),
        timed_out=timed_out,
    )


def exact_lie_trace(
    fields: Sequence[Sequence[object]],
    n: int,
    *,
    seed: int = 0,
    max_depth: int = 30,
    primes: Sequence[int] = DEFAULT_PRIMES,
    time_limit: float | None = None,
    progress: bool | None = None,
) -> ExactTrace:
    """dim Lie(W)(z) at generic z for polynomial fields W = {χ_1..χ_d} on R^n, certified mod p.

    Args:
        fields: each a sequence of n `Poly` (or exact numbers), e.g. from `gradient_fields`,
            `scale_coordinates` or `momentum_fields`; any polynomial fields are accepted.
        n: state dimension.
        seed: seeds the random points (one per prime, uniform in {1..p−1}^n).
        max_depth: deepest bracket level built; hitting it with new fields gives
            ``not_converged`` (and no dimension).
        primes: at least two primes 2 < p < 2^61; one independent run per prime.
        time_limit: seconds; a run still building brackets then stops (between brackets) with
            ``not_converged`` and a ``reason`` naming the limit.
        progress: a progress bar on stderr (levels; rank and brackets built), shown once the
            trace has run a few seconds; ``None``: only when stderr is a terminal.

    Returns:
        `ExactTrace`; ``n_laws = n − dim``. Runs after a ``not_converged`` run are skipped.
    """
    t0 = time.perf_counter()
    if time_limit is not None and not time_limit > 0:
        raise InputError(f"exact_lie_trace: time_limit must be > 0 seconds, got {time_limit}")

    def _time_left() -> float | None:
        return None if time_limit is None else time_limit - (time.perf_counter() - t0)

    def expired() -> bool:
        return time_limit is not None and _time_left() < 0

    n = int(n)
    if n < 1:
        raise InputError("exact_lie_trace: n must be ≥ 1")
    if int(max_depth) < 0:
        raise InputError("exact_lie_trace: max_depth must be ≥ 0")
    primes = tuple(int(q) for q in primes)
    if len(primes) < 2:
        raise InputError("exact_lie_trace: give at least two primes (independent runs must agree)")
    for q in primes:
        if not (2 < q < (1 << 61)) or not is_prime(q):
            raise InputError(f"exact_lie_trace: {q} is not a prime in (2, 2^61)")
    fields = list(fields)
    for f in fields:
        if len(f) != n:
            raise InputError(f"exact_lie_trace: a field has {len(f)} components, expected n = {n}")
    rng = random.Random(seed)
    runs: list[ExactRun] = []
    for q in primes:
        gens = [to_raw(f, q) for f in fields]
        for F in gens:
            for P in F.values():
                for m in P:
                    if (m >> 16) >> (8 * n):
                        raise InputError("exact_lie_trace: a field uses a variable x_j with j ≥ n")
        point = [rng.randrange(1, q) for _ in range(n)]
        with time_bound(_time_left()), progress_bar(
                progress, max_depth + 1,
                f"exact trace (n={n}, prime {len(runs) + 1} of {len(primes)})") as bar:
            run = _single_run(gens, n, q, point, int(max_depth), rng, expired, bar)
        runs.append(run)
        if run.status == NOT_CONVERGED:
            break
    first = runs[0]
    if any(r.status == NOT_CONVERGED for r in runs):
        status, dim = NOT_CONVERGED, None
    elif any(r.dim != first.dim or r.ranks != first.ranks for r in runs):
        status, dim = DISAGREE, None
    else:
        status, dim = OK, first.dim
    return ExactTrace(
        dim=dim,
        state_dim=n,
        status=status,
        ranks=first.ranks,
        depth=first.depth,
        primes=tuple(r.prime for r in runs),
        failure_bound=max(r.failure_bound for r in runs),
        seconds=time.perf_counter() - t0,
        n_brackets=sum(r.n_candidates for r in runs),
        n_symbolic=sum(r.n_symbolic for r in runs),
        runs=tuple(runs),
        reason=next((f"time limit of {time_limit:g} s reached at depth {r.depth + 1} of the "
                     f"run mod {r.prime}" for r in runs if r.timed_out), ""),
    )
