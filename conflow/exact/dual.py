"""Hyper-dual residues: a polynomial program and its nested forward-mode derivatives, evaluated
exactly modulo a prime.

A bracket chain ad_{u_0} ⋯ ad_{u_{t−1}} u_t (z) is a nested forward-mode derivative: each
[u, Y](x) = DY(x)[u(x)] − Du(x)[Y(x)] is a jvp of a program that may itself contain jvps. Rather
than tracing the nested program (`jax.make_jaxpr` of t nested `jax.jvp`: about 3^t times the
field's equations, each then walked once), the field's own jaxpr is walked on values in

    R_k = F_p[ε_1, …, ε_k] / (ε_1², …, ε_k²),

one nilpotent ε per open jvp: a value is the array of its 2^k coefficients a[S] of Π_{i∈S} ε_i
(S a bitmask; the newest ε is the top bit), shape ``(2^k, *shape)``, or ``(1, *shape)`` while
only its ε-free part is nonzero (values of the coefficients alone, constants). A jvp of f at x
in direction v is f(x + ε_{k+1} v): the top half of the result. Linear primitives act on every
coefficient alike; a product (mul, dot_general) of two full values is the subset convolution
c[S ∪ T] += a[S]·b[T] over disjoint S, T (3^k products, evaluated as one batched product of
gathered pairs); everything is computed mod p with the limb arithmetic of
`conflow.exact.polynomial` (exact for p < 2^61).

Every equation is applied to residues exactly (`residues`: float constants are the binary
rationals they are): sums and products mod p, layout primitives as they are, division only by
constants. A primitive that is not polynomial in the inputs (max, comparisons, exp, a division by
a variable, …) raises `InputError` naming it — unless it is a switch (`SWITCHES`) replayed with
the outcome recorded at a float point of its activation region. Each value carries a bound on
the total degree of its coefficients in the program's inputs (sums: max, products: sum).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine import jaxpr as jaxpr_walk
from conflow.errors import InputError
from conflow.exact.polynomial import _combine, _limbs, _sub_mod, mul_mod
from conflow.precision import float64

__all__ = ["COMPARISONS", "SWITCHES", "Dual", "TimeUp", "add", "evaluate", "lift", "residues",
           "split", "sub"]

_HALF = 31  # sums of residues split in 31-bit halves: 2^32 terms fit in int64
_KMAX = 1 << 19  # contraction length of one limb product (`conflow.exact.polynomial._KCHUNK`)
#: Entries of the gathered pairs of one product, at most (the subset convolution is chunked).
_PAIR_ENTRIES = 1 << 21

#: Primitives whose outcome is fixed on an activation region (ReLU, leaky ReLU, abs, clamp, …).
COMPARISONS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})
SWITCHES = COMPARISONS | {"max", "min", "abs", "sign", "clamp"}


class Dual:
    """A value that depends on the program's inputs: its coefficients in R_k as residues mod p
    (int64 in [0, p)), shape ``(2^k, *shape)`` or ``(1, *shape)`` (ε-free), and a bound on the
    total degree of every coefficient."""

    __slots__ = ("a", "k", "deg")

    def __init__(self, a: np.ndarray, k: int, deg: int):
        self.a, self.k, self.deg = a, (k if a.shape[0] > 1 else 0), deg


class TimeUp(Exception):
    """The time limit passed inside an evaluation."""


def _pow2(e: np.ndarray, p: int) -> np.ndarray:
    """2^e mod p elementwise for integer e of any sign (p odd)."""
    uniq, inv = np.unique(e, return_inverse=True)
    table = np.array([pow(2, int(k), p) for k in uniq], dtype=np.int64)
    return table[inv].reshape(e.shape)


def residues(x: Any, p: int) -> np.ndarray:
    """An array of integers or floats as int64 residues mod p, exactly: a float64 is the binary
    rational M·2^e it is (|M| < 2^53), so its residue is M·(2^e mod p). `InputError` for a
    non-finite value."""
    a = np.asarray(x)
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        return np.mod(a.astype(np.int64), p)
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError("the exact engine met a NaN or infinite constant")
    mant, exp = np.frexp(a)
    M = np.mod((mant * 2.0**53).astype(np.int64), p)
    return mul_mod(M, _pow2(exp.astype(np.int64) - 53, p), p)


# ---------------------------------------------------------------------------------------------
# R_k: lifting, splitting, and the operands of one equation
# ---------------------------------------------------------------------------------------------

def _full(a: np.ndarray, k: int) -> np.ndarray:
    """All 2^k coefficients of a value stored ε-free (zeros but the first)."""
    if a.shape[0] == 1 << k:
        return a
    out = np.zeros((1 << k,) + a.shape[1:], dtype=np.int64)
    out[0] = a[0]
    return out


def lift(x: Dual, v: Dual) -> Dual:
    """x + ε_{k+1}·v in R_{k+1}, for x and v in R_k (the input of a jvp in direction v)."""
    k = max(x.k, v.k)
    return Dual(np.concatenate([_full(x.a, k), _full(v.a, k)]), k + 1, max(x.deg, v.deg))


def split(y: Dual, k: int) -> tuple[Dual, Dual]:
    """(y without ε_{k+1}, the coefficient of ε_{k+1}) for y in R_{k+1}: a jvp's primal and
    tangent."""
    if y.a.shape[0] == 1:
        return y, Dual(np.zeros_like(y.a), 0, 0)
    half = 1 << k
    return Dual(y.a[:half], k, y.deg), Dual(y.a[half:], k, y.deg)


def _deg(x: Any) -> int:
    return x.deg if isinstance(x, Dual) else 0


def _lead(x: Any, p: int) -> np.ndarray:
    """A value's coefficient array: a constant is ε-free, ``(1, *shape)``."""
    return x.a if isinstance(x, Dual) else residues(x, p)[None]


def _operands(invals: Sequence[Any], p: int, ndim: int | None = None
              ) -> tuple[list[np.ndarray], int]:
    """The coefficient arrays of operands that are added, selected or joined: all ε-free, or
    all full in the same R_k; with ``ndim``, their value axes right-aligned to that rank (a
    scalar literal against an array)."""
    k = max((v.k for v in invals if isinstance(v, Dual)), default=0)
    out = [_full(_lead(v, p), k) for v in invals]
    return (out if ndim is None else [_aligned(a, ndim) for a in out]), k


def _add(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    s = a + b
    s -= p * (s >= p)
    return s


def _summed(op: Callable[[np.ndarray], np.ndarray], a: np.ndarray, p: int) -> np.ndarray:
    """op(a) mod p for a linear op that sums entries (reduce_sum, cumsum, scatter-add): applied
    to the 31-bit halves of the residues, which cannot overflow."""
    lo = np.asarray(op(a & ((1 << _HALF) - 1))) % p
    hi = np.asarray(op(a >> _HALF)) % p
    return _add(lo, mul_mod(hi, np.int64(pow(2, _HALF, p)), p), p)


# ---------------------------------------------------------------------------------------------
# Products: broadcast against an ε-free factor, else the subset convolution
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _splits(k: int) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """For each r ≤ k, the subsets U of k elements with |U| = r and their 2^r splits
    U = S ⊔ T: U of shape ``(C(k, r),)``, S and T of shape ``(C(k, r), 2^r)``."""
    out = []
    for r in range(k + 1):
        U = np.array([u for u in range(1 << k) if u.bit_count() == r], dtype=np.int64)
        S = np.array([[s for s in range(1 << k) if s & u == s] for u in U], dtype=np.int64)
        out.append((U, S.reshape(len(U), 1 << r), (U[:, None] ^ S).reshape(len(U), 1 << r)))
    return tuple(out)


#: Contractions up to this length are exact in float64, where BLAS is faster: a limb sum of
#: three products, S_s < 3·K·2^42, stays below 2^53.
_FLOAT_CONTRACTION = 682

#: Limb sums of a bilinear product (`conflow.exact.polynomial._mul_limbs`): five int64 arrays
#: whose Σ_s S_s 2^(21 s) is the product.
LimbSums = list[np.ndarray]


def _stacked_limbs(A: np.ndarray) -> np.ndarray:
    """The three 21-bit limbs of A, stacked first: shape ``(3, *A.shape)``."""
    return np.stack(_limbs(A))


def _limb_sums(P: Any) -> LimbSums:
    """The five limb sums of the nine limb products P[i][j] = A_i B_j: S_s = Σ_{i+j=s} P[i][j]."""
    return [P[0][0], P[0][1] + P[1][0], P[0][2] + P[1][1] + P[2][0], P[1][2] + P[2][1], P[2][2]]


def _product(x: Any, y: Any, p: int, limbs: Callable[[np.ndarray, np.ndarray], tuple],
             times: Callable[[np.ndarray, np.ndarray], LimbSums]) -> Dual:
    """The product of x and y in R_k. ``limbs`` splits both coefficient arrays once (limb
    stacks ``(3, L, …)``); ``times`` takes limb stacks ``(3, N, G, …)`` and gives the limb
    sums of Σ_g a[:, :, g]·b[:, :, g], shape ``(N, …)``. Against an ε-free factor every
    coefficient is scaled alike (G = 1, N broadcast); else each coefficient is the subset
    convolution c[U] = Σ_{S ⊔ T = U} a[S]·b[T], the sets U with |U| = r together (G = 2^r),
    so that only the 2^k sums are reduced mod p."""
    A, B = _lead(x, p), _lead(y, p)
    deg, k = _deg(x) + _deg(y), max(_k(x), _k(y))
    if A.shape[0] == 1 or B.shape[0] == 1:  # ε-free factor: every coefficient scaled alike
        a, b = limbs(A, B)
        return Dual(_combine(times(a[:, :, None], b[:, :, None]), p), k, deg)
    a, b = limbs(_full(A, k), _full(B, k))
    out = None
    chunk = max(1, _PAIR_ENTRIES // max(1, A[0].size + B[0].size))
    for U, S, T in _splits(k):
        step = max(1, chunk // S.shape[1])
        for i in range(0, len(U), step):
            j = slice(i, i + step)
            sums = _combine(times(a[:, S[j]], b[:, T[j]]), p)
            if out is None:
                out = np.empty((len(A),) + sums.shape[1:], dtype=np.int64)
            out[U[j]] = sums
    return Dual(out, k, deg)


def _k(x: Any) -> int:
    return x.k if isinstance(x, Dual) else 0


def _aligned(A: np.ndarray, ndim: int) -> np.ndarray:
    """A coefficient array with its value's axes right-aligned to rank ``ndim``."""
    return A.reshape((A.shape[0],) + (1,) * (ndim + 1 - A.ndim) + A.shape[1:])


def _mul(x: Any, y: Any, p: int, ndim: int) -> Dual:
    def limbs(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _stacked_limbs(_aligned(A, ndim)), _stacked_limbs(_aligned(B, ndim))

    def times(a: np.ndarray, b: np.ndarray) -> LimbSums:  # S_s < 3·G·2^42
        return [s.sum(axis=1) for s in _limb_sums([[ai * bj for bj in b] for ai in a])]

    return _product(x, y, p, limbs, times)


def _dot_general(params: dict, x: Any, y: Any, p: int) -> Dual:
    """dot_general with the coefficient axis as one more batch axis (first in the output, as
    dot_general puts batch axes first): the operands as stacks of matrices ``(L, b, m, K)``
    and ``(L, b, K, n)``, split in three 21-bit limbs; the G terms of a subset convolution are
    one contraction of length G·K, and the nine limb products one matmul (float64 BLAS while
    exact, `_FLOAT_CONTRACTION`, else int64)."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lc, rc = [int(i) + 1 for i in lc], [int(i) + 1 for i in rc]
    lb, rb = [int(i) + 1 for i in lb], [int(i) + 1 for i in rb]
    A_shape, B_shape = (_lead(v, p).shape for v in (x, y))
    lf = [i for i in range(1, len(A_shape)) if i not in lc and i not in lb]
    rf = [i for i in range(1, len(B_shape)) if i not in rc and i not in rb]
    out_shape = ([A_shape[i] for i in lb] + [A_shape[i] for i in lf]
                 + [B_shape[i] for i in rf])
    m, K = int(np.prod([A_shape[i] for i in lf])), int(np.prod([A_shape[i] for i in lc]))
    n = int(np.prod([B_shape[i] for i in rf]))

    def limbs(A: np.ndarray, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A3 = A.transpose([0, *lb, *lf, *lc]).reshape(A.shape[0], -1, m, K)
        B3 = B.transpose([0, *rb, *rc, *rf]).reshape(B.shape[0], -1, K, n)
        return _stacked_limbs(A3), _stacked_limbs(B3)

    def times(a: np.ndarray, b: np.ndarray) -> LimbSums:  # (3, N, G, b, m, K), (3, N, G, b, K, n)
        G = a.shape[2]
        if G * K > _KMAX:
            raise InputError(f"the exact engine cannot contract {G * K} terms at once")
        dtype = np.float64 if G * K <= _FLOAT_CONTRACTION else np.int64
        a = np.moveaxis(a, 2, -2).reshape(a.shape[:2] + a.shape[3:-1] + (G * K,))
        b = np.moveaxis(b, 2, -3).reshape(b.shape[:2] + b.shape[3:-2] + (G * K, n))
        P = a.astype(dtype)[:, None] @ b.astype(dtype)[None]  # P[i, j] = A_i @ B_j
        return [s.astype(np.int64).reshape((s.shape[0],) + tuple(out_shape))
                for s in _limb_sums(P)]

    return _product(x, y, p, limbs, times)


def _integer_pow(params: dict, x: Dual, p: int, ndim: int) -> Dual:
    y = int(params["y"])
    if y < 0:
        raise InputError("φ is not polynomial: a negative integer power of a variable")
    out: Any = np.ones(x.a.shape[1:], dtype=np.int64)
    base, e = x, y
    while e:
        if e & 1:
            out = _mul(out, base, p, ndim)
        e >>= 1
        if e:
            base = _mul(base, base, p, ndim)
    return out if isinstance(out, Dual) else Dual(out[None], 0, 0)


def _div(x: Any, y: Any, p: int, ndim: int) -> Dual:
    if isinstance(y, Dual):
        raise InputError("φ is not polynomial: a division by a value that depends on θ")
    d = residues(y, p)
    if np.any(d == 0):
        raise InputError(f"the exact engine cannot divide by a multiple of the prime {p}")
    uniq, inv = np.unique(d, return_inverse=True)
    table = np.array([pow(int(v), -1, p) for v in uniq.ravel()], dtype=np.int64)
    return _mul(x, table[inv].reshape(d.shape), p, ndim)


# ---------------------------------------------------------------------------------------------
# Linear primitives on coefficient arrays (the leading axis is one more batch axis)
# ---------------------------------------------------------------------------------------------

def _shift(axes: Any) -> tuple[int, ...]:
    return tuple(int(i) + 1 for i in axes)


def _broadcast_in_dim(a: np.ndarray, params: dict) -> np.ndarray:
    shape = (a.shape[0],) + tuple(params["shape"])
    dims = (0,) + _shift(params["broadcast_dimensions"])
    expanded = a.reshape([a.shape[dims.index(i)] if i in dims else 1 for i in range(len(shape))])
    return np.broadcast_to(expanded, shape)


def _slice(a: np.ndarray, params: dict) -> np.ndarray:
    strides = params.get("strides") or (1,) * (a.ndim - 1)
    return a[(slice(None),) + tuple(slice(int(b), int(e), int(s)) for b, e, s in
                                    zip(params["start_indices"], params["limit_indices"], strides))]


#: Linear primitives of one operand that numpy applies directly to coefficient arrays.
_NUMPY_LINEAR: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "reshape": lambda a, q: a.reshape((a.shape[0],) + tuple(q["new_sizes"])),
    "transpose": lambda a, q: np.transpose(a, (0,) + _shift(q["permutation"])),
    "broadcast_in_dim": _broadcast_in_dim,
    "squeeze": lambda a, q: np.squeeze(a, _shift(q["dimensions"])),
    "expand_dims": lambda a, q: np.expand_dims(a, _shift(q["dimensions"])),
    "slice": _slice,
    "rev": lambda a, q: np.flip(a, _shift(q["dimensions"])),
}
_IDENTITY = {"copy", "copy_p", "reduce_precision"}
#: Primitives linear in the operands at the given positions (None: all), the others (indices,
#: predicates) constants; applied by JAX, vmapped over the coefficient axis.
_LINEAR_BY_JAX: dict[str, tuple[int, ...] | None] = {
    "reshape": (0,), "transpose": None, "broadcast_in_dim": (0,), "squeeze": None,
    "expand_dims": None, "slice": None, "rev": None, "concatenate": None, "stack": None,
    "gather": (0,), "dynamic_slice": (0,), "dynamic_update_slice": (0, 1), "pad": None,
    "scatter": (0, 2),
}
#: Summing primitives: applied to halves of the residues (`_summed`), other operands as they are.
_SUMMING = {"cumsum": (0,), "scatter-add": (0, 2), "scatter_add": (0, 2)}


@float64  # int64 residues must stay int64 inside JAX
def _by_jax(eqn: Any, args: list, at: Sequence[int]) -> np.ndarray:
    """An equation applied by JAX to arrays, vmapped over the leading axis of those at ``at``."""
    fn = jax.vmap(lambda *xs: jaxpr_walk.bind(eqn, xs)[0],
                  in_axes=tuple(0 if i in at else None for i in range(len(args))))
    return np.asarray(fn(*[jnp.asarray(a) for a in args])).astype(np.int64)


def _linear(eqn: Any, invals: list, p: int, at: Sequence[int] | None) -> Dual:
    """A primitive linear in the operands at ``at`` (default: all): numpy for the common ones,
    else JAX; the other operands (indices, predicates) must be constants."""
    at = range(len(invals)) if at is None else at
    name, params = eqn.primitive.name, eqn.params
    if any(isinstance(v, Dual) for i, v in enumerate(invals) if i not in at):
        raise InputError(f"φ is not polynomial: '{name}' with indices that depend on θ")
    deg = max(_deg(v) for v in invals)
    moved, k = _operands([invals[i] for i in at], p)
    args = list(invals)
    for i, a in zip(at, moved):
        args[i] = a
    if name in _NUMPY_LINEAR and len(invals) == 1:
        return Dual(_NUMPY_LINEAR[name](args[0], params), k, deg)
    if name in ("concatenate", "stack"):
        join = np.concatenate if name == "concatenate" else np.stack
        axis = int(params["dimension" if name == "concatenate" else "axis"]) + 1
        return Dual(join(args, axis=axis), k, deg)
    if name == "pad" and len(invals) == 2 and not any(
            int(lo) < 0 or int(hi) < 0 or int(mid) for lo, hi, mid in params["padding_config"]):
        if np.any(args[1][1:]):
            raise InputError("φ is not polynomial: a padding value that depends on θ")
        width = [(0, 0)] + [(int(lo), int(hi)) for lo, hi, _ in params["padding_config"]]
        return Dual(np.pad(args[0], width, constant_values=int(args[1][0])), k, deg)
    return Dual(_by_jax(eqn, args, at), k, deg)


def _select(invals: list, p: int, ndim: int) -> Dual:
    which = invals[0]
    if isinstance(which, Dual):
        raise InputError("φ is not polynomial: a branch chosen by a value that depends on θ")
    cases, k = _operands(invals[1:], p, ndim)
    shape = np.broadcast_shapes(*[c.shape for c in cases])
    choice = np.broadcast_to(np.asarray(which).astype(np.int64), shape[1:])[None]
    return Dual(np.choose(np.broadcast_to(choice, shape), cases), k,
                max(_deg(v) for v in invals))


def _reduce_sum(params: dict, x: Dual, p: int) -> Dual:
    axes = _shift(params["axes"])
    return Dual(_summed(lambda h: np.sum(h, axis=axes), x.a, p), x.k, x.deg)


def _replay(name: str, invals: list, outcome: np.ndarray, p: int, ndim: int) -> Any:
    """A switch with its recorded outcome: comparisons and sign give that outcome (a
    constant), max / min / abs / clamp the operand it chose."""
    if name in COMPARISONS or name == "sign":
        return outcome
    deg = max(_deg(v) for v in invals)
    r, k = _operands(invals, p, ndim)
    o = _aligned(np.asarray(outcome)[None], ndim)
    if name in ("max", "min"):
        return Dual(np.where(o, r[0], r[1]), k, deg)
    if name == "abs":
        return Dual(np.where(o, r[0], (p - r[0]) % p), k, deg)
    shape = np.broadcast_shapes(*[c.shape for c in r])
    return Dual(np.choose(np.broadcast_to(o.astype(np.int64), shape), r), k, deg)


def _apply(eqn: Any, invals: list, p: int, outcomes: Iterator[np.ndarray] | None) -> list:
    name = eqn.primitive.name
    if not any(isinstance(v, Dual) for v in invals):  # constants: JAX evaluates them
        return [np.asarray(o) for o in jaxpr_walk.bind(eqn, invals)]
    x = invals[0]
    ndim = max(len(v.aval.shape) for v in eqn.invars)
    if name in SWITCHES and outcomes is not None:
        return [_replay(name, invals, next(outcomes), p, ndim)]
    if name in ("add", "add_any", "sub"):
        (a, b), k = _operands(invals, p, ndim)
        out = Dual(_add(a, b, p) if name != "sub" else _sub_mod(a, b, p), k,
                   max(_deg(x), _deg(invals[1])))
    elif name == "neg":
        out = Dual((p - x.a) % p, x.k, x.deg)
    elif name == "mul":
        out = _mul(x, invals[1], p, ndim)
    elif name == "square":
        out = _mul(x, x, p, ndim)
    elif name == "integer_pow":
        out = _integer_pow(eqn.params, x, p, ndim)
    elif name == "div":
        out = _div(x, invals[1], p, ndim)
    elif name == "dot_general":
        out = _dot_general(eqn.params, x, invals[1], p)
    elif name == "convert_element_type":
        if not jnp.issubdtype(eqn.params["new_dtype"], jnp.floating):
            raise InputError("φ is not polynomial: a value that depends on θ is converted to "
                             f"{eqn.params['new_dtype']}")
        out = x
    elif name in _IDENTITY:
        out = x
    elif name == "select_n":
        out = _select(invals, p, ndim)
    elif name == "reduce_sum":
        out = _reduce_sum(eqn.params, x, p)
    elif name == "unstack":
        axis = int(eqn.params["axis"]) + 1
        return [Dual(np.take(x.a, i, axis=axis), x.k, x.deg) for i in range(x.a.shape[axis])]
    elif name == "split":
        cuts = np.cumsum([int(k) for k in eqn.params["sizes"]])[:-1]
        parts = np.split(x.a, cuts, axis=int(eqn.params["axis"]) + 1)
        return [Dual(part, x.k, x.deg) for part in parts]
    elif name in _LINEAR_BY_JAX:
        out = _linear(eqn, invals, p, _LINEAR_BY_JAX[name])
    elif name in _SUMMING:
        at = _SUMMING[name]
        if any(isinstance(invals[i], Dual) for i in range(len(invals)) if i not in at):
            raise InputError(f"φ is not polynomial: '{name}' with indices that depend on θ")
        moved, k = _operands([invals[i] for i in at], p)
        total = None
        for j, i in enumerate(at):  # linear in each summed operand
            def op(half: np.ndarray, i: int = i) -> np.ndarray:
                args = list(invals)
                for jj, ii in enumerate(at):
                    args[ii] = half if ii == i else np.zeros_like(moved[jj])
                return _by_jax(eqn, args, at)

            part = _summed(op, moved[j], p)
            total = part if total is None else _add(total, part, p)
        out = Dual(total, k, max(_deg(v) for v in invals))
    else:
        raise InputError(f"φ is not polynomial: primitive '{name}' is not supported by the "
                         "exact engine's evaluation")
    return [out]


def evaluate(closed: Any, args: Sequence[Dual], p: int,
             outcomes: Sequence[np.ndarray] | None = None,
             expired: Callable[[], bool] = lambda: False) -> list:
    """The outputs of a closed jaxpr at inputs ``args`` in R_k, modulo p; ``outcomes``: its
    switches' outcomes in the order they occur, or None (switches refused). Raises `TimeUp`
    as soon as ``expired()`` (looked at before every equation)."""
    replay = None if outcomes is None else iter(outcomes)

    def apply(eqn: Any, invals: list) -> list:
        if expired():
            raise TimeUp
        return _apply(eqn, invals, p, replay)

    with np.errstate(over="ignore"):  # the limb arithmetic wraps int64 on purpose
        return jaxpr_walk.walk(closed.jaxpr, [np.asarray(c) for c in closed.consts], list(args),
                               apply, literal=lambda v: np.asarray(v))


def add(x: Dual, y: Dual, p: int) -> Dual:
    """x + y in R_k."""
    (a, b), k = _operands([x, y], p)
    return Dual(_add(a, b, p), k, max(x.deg, y.deg))


def sub(x: Dual, y: Dual, p: int) -> Dual:
    """x − y in R_k."""
    (a, b), k = _operands([x, y], p)
    return Dual(_sub_mod(a, b, p), k, max(x.deg, y.deg))
