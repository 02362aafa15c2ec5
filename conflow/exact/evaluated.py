"""Exact ranks of brackets *evaluated* modulo a prime: the exact engine for polynomial φ too large
to expand.

`exact_lie_trace` brackets sparse polynomials; a deep product (a linear net of 12 layers, an
affine MLP given as code) has far too many monomials for that. Its brackets at one point cost a
few products of small matrices, though: the numeric engine evaluates them by forward-mode
autodiff. `evaluated_lie_trace` runs the *same* programs — right-nested chains of generic
elements G(a) = Σ_j a_j χ_j of the family (`conflow.engine.brackets`), traced once per depth
with `jax.make_jaxpr` — on residues modulo a prime p < 2^61 instead of floats:

    level k:  samples v = ad_{G(a_0)} ⋯ ad_{G(a_{k−1})} G(a_k) (z), with z ∈ F_p^n and the
              coefficients a_i ∈ F_p^m uniform, in batches, each row kept iff it raises the
              rank over F_p (`_Echelon`); the level ends with the first batch that keeps
              fewer than all its rows, and the trace with the first level k ≥ 1 that keeps
              nothing (or rank n).

Every equation of the program is applied to residues exactly (`residues`: float constants are
the binary rationals they are, as in `conflow.exact.extract`): sums and products mod p
(`mul_mod`, limb-split matrix products), layout primitives (reshape, slice, gather, …) as they
are, division only by constants. A primitive that is not polynomial in the point and the
coefficients (max, comparisons, exp, a division by a variable, …) raises `InputError` naming it.
Alongside, each value carries a bound on its total degree in (z, a) (sums: max, products: sum).

Soundness is that of `exact_lie_trace` and of the numeric level loop (MATH.md §1.6): a kept row
raised the rank mod p, so a minor is a nonzero polynomial — keeping is never wrong. A row that
did not raise it is wrong only if some minor of the rows so far with it, a nonzero polynomial in
(z, a) of degree ≤ deg v + Σ deg(kept), vanishes at the random draw: probability ≤ that degree
over p − 1 (Schwartz–Zippel). A level whose span is not yet exhausted therefore keeps every row
of a batch except with that probability; the run's ``failure_bound`` is the sum over the rows
not kept. That bound certifies one run; further primes (independent points) are further runs,
which must agree level by level.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine import jaxpr as jaxpr_walk
from conflow.engine.family import VectorFamily
from conflow.engine.trace import progress_bar
from conflow.errors import InputError
from conflow.exact.polynomial import _combine, _limbs, _sub_mod, mul_mod
from conflow.exact.trace import DEFAULT_PRIMES, ExactRun, ExactTrace, _Echelon, is_prime
from conflow.precision import float64
from conflow.status import Status

__all__ = ["evaluated_lie_trace", "residues"]

#: Rows evaluated per batch (one traced program per depth).
BATCH = 32
_HALF = 31  # sums of residues split in 31-bit halves: 2^32 terms fit in int64
_KMAX = 1 << 19  # contraction length of one limb product (`conflow.exact.polynomial._KCHUNK`)


class _Mod:
    """A value that depends on the point or the coefficients: residues mod p (int64 in [0, p))
    and a bound on their total degree."""

    __slots__ = ("a", "deg")

    def __init__(self, a: np.ndarray, deg: int):
        self.a, self.deg = a, deg


def _pow2(e: np.ndarray, p: int) -> np.ndarray:
    """2^e mod p elementwise for integer e of any sign (p odd)."""
    uniq, inv = np.unique(e, return_inverse=True)
    table = np.array([pow(2, int(k), p) for k in uniq], dtype=np.int64)
    return table[inv].reshape(e.shape)


def residues(x: Any, p: int) -> np.ndarray:
    """An array of integers or floats as int64 residues mod p, exactly: a float64 is the binary
    rational M·2^e it is (|M| < 2^53), so its residue is M·(2^e mod p). `InputError` for a
    non-finite value."""
    if isinstance(x, _Mod):
        return x.a
    a = np.asarray(x)
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        return np.mod(a.astype(np.int64), p)
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError("the exact engine met a NaN or infinite constant")
    mant, exp = np.frexp(a)
    M = np.mod((mant * 2.0**53).astype(np.int64), p)
    return mul_mod(M, _pow2(exp.astype(np.int64) - 53, p), p)


def _deg(x: Any) -> int:
    return x.deg if isinstance(x, _Mod) else 0


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


def _matmul(A: np.ndarray, B: np.ndarray, p: int) -> np.ndarray:
    """Batched A @ B mod p, shapes (b, m, k) and (b, k, n): both split in three 21-bit limbs,
    the nine limb products in one int64 matmul, recombined mod p (`matmul_mod`)."""
    if A.shape[-1] > _KMAX:
        raise InputError(f"the exact engine cannot contract {A.shape[-1]} terms at once")
    a = np.stack(_limbs(A))[:, None]  # (3, 1, b, m, k)
    b = np.stack(_limbs(B))[None]  # (1, 3, b, k, n)
    P = a @ b  # P[i, j] = A_i @ B_j
    S = [P[0, 0], P[0, 1] + P[1, 0], P[0, 2] + P[1, 1] + P[2, 0], P[1, 2] + P[2, 1], P[2, 2]]
    return _combine(S, p)


def _dot_general(params: dict, x: Any, y: Any, p: int) -> _Mod:
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    A, B = residues(x, p), residues(y, p)
    lf = [i for i in range(A.ndim) if i not in lc and i not in lb]
    rf = [i for i in range(B.ndim) if i not in rc and i not in rb]
    batch = [A.shape[i] for i in lb]
    m, k = int(np.prod([A.shape[i] for i in lf])), int(np.prod([A.shape[i] for i in lc]))
    n = int(np.prod([B.shape[i] for i in rf]))
    A3 = A.transpose([*lb, *lf, *lc]).reshape(-1, m, k)
    B3 = B.transpose([*rb, *rc, *rf]).reshape(-1, k, n)
    out = _matmul(A3, B3, p).reshape(batch + [A.shape[i] for i in lf] + [B.shape[i] for i in rf])
    return _Mod(out, _deg(x) + _deg(y))


def _integer_pow(params: dict, x: _Mod, p: int) -> _Mod:
    y = int(params["y"])
    if y < 0:
        raise InputError("φ is not polynomial: a negative integer power of a variable")
    out, base, e = np.ones_like(x.a), x.a, y
    while e:
        if e & 1:
            out = mul_mod(out, base, p)
        base, e = mul_mod(base, base, p), e >> 1
    return _Mod(out, x.deg * y)


def _div(x: Any, y: Any, p: int) -> _Mod:
    if isinstance(y, _Mod):
        raise InputError("φ is not polynomial: a division by a value that depends on θ")
    d = residues(y, p)
    if np.any(d == 0):
        raise InputError(f"the exact engine cannot divide by a multiple of the prime {p}")
    uniq, inv = np.unique(d, return_inverse=True)
    table = np.array([pow(int(v), -1, p) for v in uniq.ravel()], dtype=np.int64)
    return _Mod(mul_mod(residues(x, p), table[inv].reshape(d.shape), p), _deg(x))


def _broadcast_in_dim(a: np.ndarray, params: dict) -> np.ndarray:
    shape, dims = tuple(params["shape"]), tuple(params["broadcast_dimensions"])
    expanded = a.reshape([a.shape[dims.index(i)] if i in dims else 1 for i in range(len(shape))])
    return np.broadcast_to(expanded, shape)


def _slice(a: np.ndarray, params: dict) -> np.ndarray:
    strides = params.get("strides") or (1,) * a.ndim
    return a[tuple(slice(int(b), int(e), int(s)) for b, e, s in
                   zip(params["start_indices"], params["limit_indices"], strides))]


def _pad(a: np.ndarray, value: np.ndarray, params: dict) -> np.ndarray | None:
    config = [(int(lo), int(hi), int(mid)) for lo, hi, mid in params["padding_config"]]
    if any(lo < 0 or hi < 0 or mid for lo, hi, mid in config):
        return None  # negative or interior padding: JAX does it
    return np.pad(a, [(lo, hi) for lo, hi, _ in config], constant_values=int(value))


#: Layout primitives numpy applies directly to one residue operand (the common ones; JAX the rest).
_NUMPY_LAYOUT: dict[str, Callable[[np.ndarray, dict], np.ndarray]] = {
    "reshape": lambda a, q: a.reshape(tuple(q["new_sizes"])),
    "transpose": lambda a, q: np.transpose(a, tuple(q["permutation"])),
    "broadcast_in_dim": _broadcast_in_dim,
    "squeeze": lambda a, q: np.squeeze(a, tuple(q["dimensions"])),
    "expand_dims": lambda a, q: np.expand_dims(a, tuple(q["dimensions"])),
    "slice": _slice,
    "rev": lambda a, q: np.flip(a, tuple(q["dimensions"])),
}


def _bind_int(eqn: Any, invals: list, p: int, mod_at: Sequence[int] | None = None) -> _Mod:
    """A layout primitive (reshape, slice, gather, select_n, …) applied to the residues of the
    operands at ``mod_at`` (default: all), the others (indices, predicates) as they are: by
    numpy for the common ones, else by JAX itself."""
    at = range(len(invals)) if mod_at is None else mod_at
    deg = max(_deg(v) for v in invals)
    name, params = eqn.primitive.name, eqn.params
    if name in _NUMPY_LAYOUT and len(invals) == 1:
        return _Mod(_NUMPY_LAYOUT[name](residues(invals[0], p), params), deg)
    if name in ("concatenate", "stack"):
        join = np.concatenate if name == "concatenate" else np.stack
        axis = int(params["dimension" if name == "concatenate" else "axis"])
        return _Mod(join([residues(v, p) for v in invals], axis=axis), deg)
    if name == "pad" and len(invals) == 2:
        out = _pad(residues(invals[0], p), residues(invals[1], p), params)
        if out is not None:
            return _Mod(out, deg)
    if name == "select_n" and len(invals) == 3 and not isinstance(invals[0], _Mod):
        return _Mod(np.where(np.asarray(invals[0]).astype(bool), residues(invals[2], p),
                             residues(invals[1], p)), deg)
    args = [jnp.asarray(residues(v, p)) if i in at else v for i, v in enumerate(invals)]
    out = jaxpr_walk.bind(eqn, args)[0]
    return _Mod(np.asarray(out).astype(np.int64), deg)


#: Layout primitives applied to residues by JAX, and which operands are residues (None: all).
_LAYOUT: dict[str, tuple[int, ...] | None] = {
    "reshape": (0,), "transpose": None, "broadcast_in_dim": (0,), "squeeze": None,
    "expand_dims": None, "slice": None, "rev": None, "concatenate": None, "stack": None,
    "gather": (0,), "dynamic_slice": (0,), "dynamic_update_slice": (0, 1), "pad": None,
    "scatter": (0, 2),
}
#: Summing primitives: applied to halves of the residues (`_summed`), other operands as they are.
_SUMMING = {"reduce_sum": (0,), "cumsum": (0,), "scatter-add": (0, 2), "scatter_add": (0, 2)}
_IDENTITY = {"copy", "copy_p", "reduce_precision"}


def _apply(eqn: Any, invals: list, p: int, outcomes: Iterator[np.ndarray] | None) -> list:
    name = eqn.primitive.name
    if not any(isinstance(v, _Mod) for v in invals):  # constants: JAX evaluates them
        return [np.asarray(o) for o in jaxpr_walk.bind(eqn, invals)]
    x = invals[0]
    if name in SWITCHES and outcomes is not None:
        return [_replay(name, invals, next(outcomes), p)]
    if name in ("add", "add_any"):
        out = _Mod(_add(residues(x, p), residues(invals[1], p), p),
                   max(_deg(x), _deg(invals[1])))
    elif name == "sub":
        out = _Mod(_sub_mod(residues(x, p), residues(invals[1], p), p),
                   max(_deg(x), _deg(invals[1])))
    elif name == "neg":
        out = _Mod((p - x.a) % p, x.deg)
    elif name == "mul":
        out = _Mod(mul_mod(residues(x, p), residues(invals[1], p), p), _deg(x) + _deg(invals[1]))
    elif name == "square":
        out = _Mod(mul_mod(x.a, x.a, p), 2 * x.deg)
    elif name == "integer_pow":
        out = _integer_pow(eqn.params, x, p)
    elif name == "div":
        out = _div(x, invals[1], p)
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
        if isinstance(x, _Mod):
            raise InputError("φ is not polynomial: a branch chosen by a value that depends on θ")
        out = _bind_int(eqn, invals, p, range(1, len(invals)))
    elif name == "unstack":
        axis = int(eqn.params["axis"])
        return [_Mod(np.take(x.a, i, axis=axis), x.deg) for i in range(x.a.shape[axis])]
    elif name == "split":
        cuts = np.cumsum([int(k) for k in eqn.params["sizes"]])[:-1]
        return [_Mod(part, x.deg) for part in np.split(x.a, cuts, axis=int(eqn.params["axis"]))]
    elif name in _LAYOUT:
        mod_at = _LAYOUT[name]
        if mod_at is not None and any(isinstance(v, _Mod) for i, v in enumerate(invals)
                                      if i not in mod_at):
            raise InputError(f"φ is not polynomial: '{name}' with indices that depend on θ")
        out = _bind_int(eqn, invals, p, mod_at)
    elif name in _SUMMING:
        mod_at = _SUMMING[name]
        rest = [i for i in range(len(invals)) if i not in mod_at]

        def op(half: np.ndarray, at: int) -> np.ndarray:
            args = list(invals)
            for i in mod_at:
                args[i] = jnp.asarray(half if i == at else np.zeros_like(residues(invals[i], p)))
            return np.asarray(jaxpr_walk.bind(eqn, args)[0])

        if any(isinstance(invals[i], _Mod) for i in rest):
            raise InputError(f"φ is not polynomial: '{name}' with indices that depend on θ")
        total = None
        for i in mod_at:  # linear in each summed operand
            part = _summed(lambda h, i=i: op(h, i), residues(invals[i], p), p)
            total = part if total is None else _add(total, part, p)
        out = _Mod(total, max(_deg(v) for v in invals))
    else:
        raise InputError(f"φ is not polynomial: primitive '{name}' is not supported by the "
                         "exact engine's evaluation")
    return [out]


class _TimeUp(Exception):
    """The time limit passed inside an evaluation."""


#: Equations evaluated between two looks at the clock.
_CLOCK_EVERY = 512


@float64  # int64 residues must stay int64 inside JAX
def _evaluate(closed: Any, outcomes: Sequence[np.ndarray] | None, args: Sequence[_Mod],
              p: int, expired: Callable[[], bool] = lambda: False) -> list:
    """The outputs of a closed jaxpr at residue inputs ``args``, modulo p; ``outcomes``: the
    switches' outcomes in the order they occur (`_recorder`), or None (switches refused).
    Raises `_TimeUp` as soon as ``expired()`` (looked at every `_CLOCK_EVERY` equations)."""
    replay = None if outcomes is None else iter(outcomes)
    done = [0]

    def apply(eqn: Any, invals: list) -> list:
        done[0] += 1
        if done[0] % _CLOCK_EVERY == 0 and expired():
            raise _TimeUp
        return _apply(eqn, invals, p, replay)

    with np.errstate(over="ignore"):  # the limb arithmetic wraps uint64 on purpose
        return jaxpr_walk.walk(closed.jaxpr, [np.asarray(c) for c in closed.consts], list(args),
                               apply, literal=lambda v: np.asarray(v))


# ---------------------------------------------------------------------------------------------
# Piecewise-polynomial φ: the switches fixed to their outcomes at a float point
# ---------------------------------------------------------------------------------------------

#: Primitives whose outcome is fixed on an activation region (ReLU, leaky ReLU, abs, clamp, …).
COMPARISONS = frozenset({"gt", "ge", "lt", "le", "eq", "ne"})
SWITCHES = COMPARISONS | {"max", "min", "abs", "sign", "clamp"}


class _Float:
    """A float value that depends on the point or the coefficients (the recording run)."""

    __slots__ = ("a",)

    def __init__(self, a: np.ndarray):
        self.a = a


def _outcome(name: str, raw: list, out: Any) -> tuple[Any, Any]:
    """What a switch chose at the point — comparisons their booleans, max / min / abs whether
    the first (or non-negated) operand won, sign its signs, clamp 0 / 1 / 2 (low / x / high) —
    and whether it is tied anywhere (the point on a boundary of its region). Traceable."""
    x = raw[1] if name == "clamp" else raw[0]
    if name in COMPARISONS or name in ("max", "min"):
        tied = raw[0] == raw[1]
    elif name == "clamp":
        tied = (x == raw[0]) | (x == raw[2])
    else:
        tied = x == 0
    if name == "max":
        out = raw[0] > raw[1]
    elif name == "min":
        out = raw[0] < raw[1]
    elif name == "abs":
        out = x > 0
    elif name == "clamp":
        out = (x >= raw[0]).astype(jnp.int8) + (x > raw[2])
    return out, jnp.any(tied)


def _replay(name: str, invals: list, outcome: np.ndarray, p: int) -> Any:
    """A switch on residues with its recorded outcome: comparisons and sign give that outcome
    (a constant), max / min / abs / clamp the operand it chose."""
    if name in COMPARISONS or name == "sign":
        return outcome
    deg = max(_deg(v) for v in invals)
    r = [residues(v, p) for v in invals]
    if name in ("max", "min"):
        return _Mod(np.where(outcome, r[0], r[1]), deg)
    if name == "abs":
        return _Mod(np.where(outcome, r[0], (p - r[0]) % p), deg)
    return _Mod(np.choose(outcome.astype(np.int64), [r[0] * np.ones_like(r[1]), r[1],
                                                      r[2] * np.ones_like(r[1])]), deg)


def _recorder(closed: Any) -> Callable[[np.ndarray, np.ndarray], list[np.ndarray]]:
    """(float z, float coeffs) ↦ the outcomes of the switches of a closed jaxpr there, in the
    order they occur (one compiled program); `InputError` where one is tied."""
    names: list[str] = []  # filled while `run` is traced

    def run(z: jax.Array, coeffs: jax.Array) -> tuple[list, list]:
        outcomes: list = []
        ties: list = []
        names.clear()

        def apply(eqn: Any, invals: list) -> list:
            if not any(isinstance(v, _Float) for v in invals):
                return jaxpr_walk.bind(eqn, invals)
            raw = [v.a if isinstance(v, _Float) else v for v in invals]
            outs = jaxpr_walk.bind(eqn, raw)
            name = eqn.primitive.name
            if name in SWITCHES:
                outcome, tied = _outcome(name, raw, outs[0])
                outcomes.append(outcome)
                ties.append(tied)
                names.append(name)
                if name in COMPARISONS or name == "sign":  # a constant on the region
                    return [outcome]
            return [_Float(o) for o in outs]

        jaxpr_walk.walk(closed.jaxpr, list(closed.consts), [_Float(z), _Float(coeffs)], apply)
        return outcomes, ties

    compiled = jax.jit(run)

    @float64
    def record(z: np.ndarray, coeffs: np.ndarray) -> list[np.ndarray]:
        outcomes, ties = compiled(jnp.asarray(z, jnp.float64), jnp.asarray(coeffs, jnp.float64))
        tied = [name for name, t in zip(names, ties) if bool(t)]
        if tied:
            raise InputError(f"a '{tied[0]}' switch is tied at the point: it lies on the "
                             "boundary of its activation region")
        return [np.asarray(o) for o in outcomes]

    return record


def region_outcomes(closed: Any, point: np.ndarray, m: int, batch: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """The switches' outcomes of a depth's program at the float ``point``, checked to depend on
    the point only (two draws of the coefficients): `InputError` otherwise (a switch on a
    tangent, as in a sign flow, has no region)."""
    record = _recorder(closed)
    depth1 = closed.in_avals[1].shape[1]
    first, second = (record(point, rng.standard_normal((batch, depth1, m))) for _ in range(2))
    if len(first) != len(second) or any(not np.array_equal(a, b) for a, b in zip(first, second)):
        raise InputError("a switch depends on the coefficients, not on the point only: the "
                         "fields have no polynomial form on a region")
    return first


def _chain(field: Callable, depth: int) -> Callable:
    """(z, coeffs) ↦ ad_{G(a_0)} ⋯ ad_{G(a_{depth−1})} G(a_depth) (z), coeffs of shape
    ``(depth + 1, m)`` (the deepest value of `conflow.engine.brackets.bracket_chain`, without
    its norms, which are not polynomial)."""

    def f(z, coeffs):
        def element(j: int) -> Callable:
            def u(x):
                return field(x, coeffs[depth - j]).astype(x.dtype)

            if j == 0:
                return u
            inner = element(j - 1)

            def bracketed(x):
                ux = u(x)
                vx, dv_u = jax.jvp(inner, (x,), (ux,))
                _, du_v = jax.jvp(u, (x,), (vx,))
                return dv_u - du_v

            return bracketed

        return element(depth)(z)

    return f


def _level_sum(field: Callable, m: int, inner_depth: int) -> Callable:
    """F(z, c) = Σ_{j ≤ s} Y_j(z; c), c = (a_0, …, a_s) of shape ``((s + 1) m,)``, Y_j the
    depth-j element of one right-nested chain (Y_0 = G(a_s), Y_j = [G(a_{s−j}), Y_{j−1}]): the
    generators of `conflow.engine.deep_trace` with unit weights. Its terms have different
    degrees in c, so the fields F(·, c) span exactly W_s, and random c give generic elements of
    it; Lie(F) = Lie(W), and level t of F holds brackets of depth up to (t + 1)(s + 1) − 1."""

    def F(z, c):
        coeffs = c.reshape(inner_depth + 1, m)
        return sum(_chain(field, j)(z, coeffs[inner_depth - j:]) for j in range(inner_depth + 1))

    return F


@float64
def _program(family: VectorFamily, depth: int, batch: int, inner_depth: int = 0) -> Any:
    field, m = family.sampled
    if inner_depth:
        field, m = _level_sum(field, m, inner_depth), (inner_depth + 1) * m
    n = family.state_dim
    batched = jax.vmap(_chain(field, depth), in_axes=(None, 0))
    return jax.make_jaxpr(batched)(jnp.zeros(n), jnp.zeros((batch, depth + 1, m)))


#: A level's program is about this many times the previous level's (a nesting of two
#: forward-mode products), and so is its cost: a level whose estimate would pass the time limit
#: is not started (tracing a program cannot be interrupted).
LEVEL_GROWTH = 3.0


def _run(programs: Callable[[int], Any], n: int, m: int, p: int, rng: np.random.Generator,
         max_depth: int, seconds_left: Callable[[], float], bar: Any) -> ExactRun:
    def expired() -> bool:
        return seconds_left() < 0

    t0 = time.perf_counter()
    level_seconds = 0.0
    z = _Mod(rng.integers(1, p, size=n, dtype=np.int64), 1)
    echelon = _Echelon(n, p)
    ranks: list[int] = []
    kept_per_level: list[int] = []
    sum_deg = max_deg = n_rows = 0
    bound = 0.0
    status, timed_out = Status.NOT_CONVERGED, False
    for depth in range(max_depth + 1):
        if depth >= 2 and LEVEL_GROWTH * level_seconds > seconds_left():  # would not finish
            timed_out = True
            break
        t_level = time.perf_counter()
        kept_here = 0
        while echelon.rank < n:
            if expired():
                timed_out = True
                break
            coeffs = _Mod(rng.integers(0, p, size=(BATCH, depth + 1, m), dtype=np.int64), 1)
            try:
                (values,) = _evaluate(*programs(depth), [z, coeffs], p, expired)
            except _TimeUp:
                timed_out = True
                break
            rows = residues(values, p)
            kept = echelon.select(rows)
            n_rows += len(rows)
            deg = _deg(values)
            max_deg = max(max_deg, deg)
            # each row not kept: Schwartz–Zippel on a minor of degree ≤ deg + Σ deg(kept)
            sum_deg += deg * len(kept)
            bound += (len(rows) - len(kept)) * (deg + sum_deg) / (p - 1)
            kept_here += len(kept)
            if len(kept) < len(rows):
                break
        if timed_out:
            break
        level_seconds = time.perf_counter() - t_level
        ranks.append(echelon.rank)
        kept_per_level.append(kept_here)
        bar.update(1)
        if echelon.rank == n or (depth >= 1 and kept_here == 0):
            status = Status.OK
            break
    return ExactRun(prime=p, dim=echelon.rank if status == Status.OK else None, status=status,
                    ranks=tuple(ranks), kept=tuple(kept_per_level), depth=len(ranks) - 1,
                    n_candidates=n_rows, n_symbolic=0, max_degree=max_deg,
                    failure_bound=min(bound, 1.0), seconds=time.perf_counter() - t0,
                    point=tuple(int(v) for v in z.a), timed_out=timed_out)


def evaluated_lie_trace(family: VectorFamily, *, seed: int = 0, max_depth: int = 30,
                        primes: Sequence[int] = DEFAULT_PRIMES, inner_depth: int = 0,
                        region: Any = None,
                        time_limit: float | None = None,
                        progress: bool | None = None) -> ExactTrace:
    """dim Lie(W)(z) at generic z, exactly, for a family whose fields are polynomial in the
    state and linear in their coefficients: bracket values evaluated modulo each prime (module
    docstring), no polynomial expanded. `InputError` names the first primitive that is not
    polynomial.

    ``region``: a float state of shape ``(n,)`` for piecewise-polynomial fields (ReLU, leaky
    ReLU, abs, clamp, … : `SWITCHES`): every switch of each program is fixed to its outcome
    there (`region_outcomes`), and the count is that of the polynomial fields on its
    activation region, at generic points of that region. A switch tied there, or one that
    depends on the coefficients, raises `InputError`.

    ``primes``: one run per prime p < 2^61 (independent points and coefficients), stopping at
    the first that does not end ``ok``; runs that differ make the status ``disagree``. One run
    is certified by its ``failure_bound`` alone.

    ``inner_depth`` s > 0: the levels are those of the generators F(z, c) = Σ_{j ≤ s} Y_j(z; c)
    (`_level_sum`, generic elements of W_s, as in `conflow.engine.deep_trace`): level t then
    holds brackets of depth up to (t + 1)(s + 1) − 1 at the cost of a plain chain of depth
    t + s, and the trace's ``depth`` and ``ranks`` count levels of F. The stop rule is the same
    (a level of F that adds nothing: MATH.md §1.6, since W_0 ⊆ W_s ⊆ Lie(W)); F's degree in c is
    carried into the failure bound like any other.

    ``time_limit`` (seconds): past it the trace stops with ``not_converged`` and a reason naming
    the limit; a level whose estimated cost (`LEVEL_GROWTH` times the previous level's) would
    pass it is not started. Returns an `ExactTrace` (``n_symbolic`` = 0)."""
    t0 = time.perf_counter()
    n = family.state_dim
    _, m = family.sampled
    if isinstance(inner_depth, bool) or not isinstance(inner_depth, (int, np.integer)) or not (
            0 <= inner_depth <= 4):
        raise InputError(f"evaluated_lie_trace: inner_depth must be an integer in [0, 4], got "
                         f"{inner_depth!r}")
    m *= inner_depth + 1
    primes = tuple(int(q) for q in primes)
    if not primes or not all(2 < q < (1 << 61) and is_prime(q) for q in primes):
        raise InputError("evaluated_lie_trace: give one or more primes in (2, 2^61)")
    if region is not None:
        region = np.asarray(region, dtype=np.float64)
        if region.shape != (n,) or not np.all(np.isfinite(region)):
            raise InputError(f"evaluated_lie_trace: region must be a finite state of shape ({n},)")
    cache: dict[int, Any] = {}
    record_rng = np.random.default_rng(seed + 1)

    def programs(depth: int) -> tuple[Any, list[np.ndarray] | None]:
        if depth not in cache:
            closed = _program(family, depth, BATCH, int(inner_depth))
            cache[depth] = closed, (None if region is None else region_outcomes(
                closed, region, m, BATCH, record_rng))
        return cache[depth]

    def seconds_left() -> float:
        return np.inf if time_limit is None else time_limit - (time.perf_counter() - t0)

    _evaluate(*programs(0), [_Mod(np.ones(n, np.int64), 1),  # refuses a non-polynomial φ early
                             _Mod(np.ones((BATCH, 1, m), np.int64), 1)], primes[0])
    rng = np.random.default_rng(seed)
    runs: list[ExactRun] = []
    for q in primes:
        with progress_bar(progress, max_depth + 1,
                          f"exact trace by evaluation (n={n}, prime {len(runs) + 1} of "
                          f"{len(primes)})") as bar:
            runs.append(_run(programs, n, m, q, rng, int(max_depth), seconds_left, bar))
        if runs[-1].status != Status.OK:
            break
    first = runs[0]
    if any(r.status != Status.OK for r in runs):
        status, dim = Status.NOT_CONVERGED, None
    elif any(r.ranks != first.ranks for r in runs):
        status, dim = Status.DISAGREE, None
    else:
        status, dim = Status.OK, first.dim
    last = runs[-1]
    reason = ""
    if last.timed_out:
        reason = (f"time limit of {time_limit:g} s reached at depth {last.depth + 1} of the run "
                  f"mod {last.prime}")
    elif last.status != Status.OK:
        reason = (f"the trace was still growing at depth {max_depth}"
                  + (f" of the chains of W_{inner_depth}" if inner_depth else ""))
    return ExactTrace(dim=dim, state_dim=n, status=status, ranks=first.ranks, depth=first.depth,
                      primes=tuple(r.prime for r in runs),
                      failure_bound=max(r.failure_bound for r in runs),
                      seconds=time.perf_counter() - t0,
                      n_brackets=sum(r.n_candidates for r in runs), n_symbolic=0,
                      runs=tuple(runs), reason=reason)
