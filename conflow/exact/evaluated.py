"""Exact ranks of brackets *evaluated* modulo a prime: the exact engine for polynomial φ too large
to expand.

`exact_lie_trace` brackets sparse polynomials; a deep product (a linear net of 12 layers, an
affine MLP given as code) has far too many monomials for that. Its brackets at one point cost a
few products of small matrices, though. `evaluated_lie_trace` evaluates the same right-nested
chains of generic elements G(a) = Σ_j a_j χ_j of the family as the numeric engine
(`conflow.engine.brackets`) on residues modulo a prime p < 2^61 instead of floats:

    level k:  samples v = ad_{G(a_0)} ⋯ ad_{G(a_{k−1})} G(a_k) (z), with z ∈ F_p^n and the
              coefficients a_i ∈ F_p^m uniform, in batches, each row kept iff it raises the
              rank over F_p (`_Echelon`); the level ends with the first batch that keeps
              fewer than all its rows, and the trace with the first level k ≥ 1 that keeps
              nothing (or rank n).

The field's jaxpr is traced once; a chain's nested jvps are taken by walking it on hyper-dual
residues (`conflow.exact.dual`: one nilpotent ε per open jvp), every equation applied exactly
mod p (float constants are the binary rationals they are). A primitive that is not polynomial
in the point and the coefficients (max, comparisons, exp, a division by a variable, …) raises
`InputError` naming it. Alongside, each value carries a bound on its total degree in (z, a).

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
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine import jaxpr as jaxpr_walk
from conflow.engine.family import VectorFamily
from conflow.engine.trace import progress_bar
from conflow.errors import InputError
from conflow.exact.dual import (
    COMPARISONS,
    SWITCHES,
    Dual,
    TimeUp,
    add,
    evaluate,
    lift,
    residues,
    split,
    sub,
)
from conflow.exact.trace import DEFAULT_PRIMES, ExactRun, ExactTrace, _Echelon, is_prime
from conflow.precision import float64
from conflow.status import Status

__all__ = ["bracket_depth", "evaluated_lie_trace", "residues"]

#: Rows evaluated per batch, at most (`_batch_sizes`).
BATCH = 32


# ---------------------------------------------------------------------------------------------
# Piecewise-polynomial φ: the switches fixed to their outcomes at a float point
# ---------------------------------------------------------------------------------------------

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
    """The switches' outcomes of the field's program (`_field_program`) at the float ``point``,
    checked to depend on the point only (two draws of the coefficients): `InputError` otherwise
    (a switch on a tangent, as in a sign flow, has no region)."""
    record = _recorder(closed)
    states = np.broadcast_to(point, (batch, point.size))
    first, second = (record(states, rng.standard_normal((batch, m))) for _ in range(2))
    if len(first) != len(second) or any(not np.array_equal(a, b) for a, b in zip(first, second)):
        raise InputError("a switch depends on the coefficients, not on the point only: the "
                         "fields have no polynomial form on a region")
    return first


@float64
def _field_program(family: VectorFamily, batch: int) -> Any:
    """The jaxpr of the sampled field on a batch: (states (B, n), coefficients (B, m)) ↦ (B, n)."""
    field, m = family.sampled
    n = family.state_dim
    batched = jax.vmap(lambda z, a: field(z, a).astype(z.dtype))
    return jax.make_jaxpr(batched)(jnp.zeros((batch, n)), jnp.zeros((batch, m)))


def _chain(field: Callable[[Dual, Any], Dual], x: Dual, coeffs: Sequence[Any], p: int) -> Dual:
    """ad_{u_0} ⋯ ad_{u_{t−1}} u_t (x) for u_i = field(·, coeffs[i]) and x in R_k: each
    [u, Y](x) = DY(x)[u(x)] − Du(x)[Y(x)], the two jvps taken in R_{k+1} (`conflow.exact.dual`);
    the values of `conflow.engine.brackets.bracket_chain`'s deepest level."""
    if len(coeffs) == 1:
        return field(x, coeffs[0])
    k = x.k
    u = field(x, coeffs[0])
    v, dv_u = split(_chain(field, lift(x, u), coeffs[1:], p), k)
    _, du_v = split(field(lift(x, v), coeffs[0]), k)
    return sub(dv_u, du_v, p)


def _level_sum(field: Callable[[Dual, Any], Dual], p: int) -> Callable[[Dual, Any], Dual]:
    """F(x, c) = Σ_{j ≤ s} Y_j(x; c), c = (a_0, …, a_s), Y_j the depth-j element of one
    right-nested chain (Y_0 = G(a_s), Y_j = [G(a_{s−j}), Y_{j−1}]): the generators of
    `conflow.engine.deep_trace` with unit weights. Its terms have different degrees in c, so
    the fields F(·, c) span exactly W_s, and random c give generic elements of it;
    Lie(F) = Lie(W), and level t of F holds brackets of depth up to (t + 1)(s + 1) − 1."""

    def F(x: Dual, c: Sequence[Dual]) -> Dual:
        total = _chain(field, x, c[-1:], p)
        for j in range(1, len(c)):
            total = add(total, _chain(field, x, c[len(c) - 1 - j:], p), p)
        return total

    return F


def bracket_depth(level: int, inner_depth: int) -> int:
    """The deepest bracket of the original generators that level ``level`` of
    `evaluated_lie_trace` holds: the plain levels 0 … s, then level s + t is level t of F
    (`_level_sum`), depth ≤ (t + 1)(s + 1) − 1."""
    if level <= inner_depth:
        return level
    return (level - inner_depth + 1) * (inner_depth + 1) - 1


def _level_values(closed: Any, outcomes: Sequence[np.ndarray] | None, z: np.ndarray,
                  coeffs: np.ndarray, inner_depth: int, p: int,
                  expired: Callable[[], bool]) -> Dual:
    """The rows of one batch at level ℓ = t + s of an ``inner_depth`` s > 0 trace:
    ad_{F(c_0)} ⋯ ad_{F(c_{t−1})} F(c_t) (z) with F = `_level_sum`, ``coeffs`` of shape
    ``(B, t + 1, (s + 1) m)``; or, s = 0, the plain chain ad_{G(a_0)} ⋯ G(a_ℓ) (z), ``coeffs``
    of shape ``(B, ℓ + 1, m)``."""
    B, depth1, sm = coeffs.shape
    parts = coeffs.reshape(B, depth1, inner_depth + 1, sm // (inner_depth + 1))

    def G(x: Dual, a: Dual) -> Dual:
        return evaluate(closed, [x, a], p, outcomes, expired)[0]

    def given(i: int, j: int) -> Dual:
        return Dual(parts[:, i, j][None], 0, 1)

    x = Dual(np.broadcast_to(z, (B, z.size))[None], 0, 1)
    if inner_depth == 0:
        return _chain(G, x, [given(i, 0) for i in range(depth1)], p)
    F = _level_sum(G, p)
    return _chain(F, x, [[given(i, j) for j in range(inner_depth + 1)]
                         for i in range(depth1)], p)


#: A level's program is about this many times the previous level's (a nesting of two
#: forward-mode products), and so is its cost per row: a batch whose estimate would pass the
#: time limit is not started (tracing a program cannot be interrupted).
LEVEL_GROWTH = 3.0
#: A level whose batch of `BATCH` rows is estimated to take longer than this (seconds) starts
#: with a smaller one (`_run`).
FULL_BATCH_SECONDS = 2.0


def _batch_sizes(first: int, cap: Callable[[], int]) -> Iterator[int]:
    """The sizes of a level's batches: ``first``, doubled after each batch that keeps all its
    rows up to `BATCH`, and never more than ``cap()`` (the rank still missing plus one: a
    batch of that size cannot keep all its rows)."""
    size = first
    while True:
        yield max(1, min(size, cap()))
        size = min(BATCH, 2 * size)


def _run(values: Callable[..., Dual], n: int, p: int, rng: np.random.Generator,
         max_depth: int, seconds_left: Callable[[], float], bar: Any) -> ExactRun:
    """One run modulo ``p``: levels of batches ``values(level, rows, z, p, rng, expired)``,
    each row kept iff it raises the rank. A level's rows cost about `LEVEL_GROWTH` times the
    level before's; where a batch of `BATCH` would take more than `FULL_BATCH_SECONDS`, the
    level starts with the largest power of two that would not (at least one row), doubled
    while every row is kept: the last levels of a deep trace add a few directions, then none,
    and their rows are the costliest, so the level that confirms the count costs a row or
    two, not a batch, while a level that adds many evaluates about as many rows as with full
    batches. The sizes change only the cost: each row is kept or not on its own."""
    def expired() -> bool:
        return seconds_left() < 0

    t0 = time.perf_counter()
    row_seconds, row_level = 0.0, 0  # the cost of one row of the latest batch, and its level
    z = rng.integers(1, p, size=n, dtype=np.int64)
    echelon = _Echelon(n, p)
    ranks: list[int] = []
    kept_per_level: list[int] = []
    sum_deg = max_deg = n_rows = 0
    bound = 0.0
    status, timed_out = Status.NOT_CONVERGED, False
    for depth in range(max_depth + 1):
        kept_here = 0
        first = BATCH
        while first > 1 and LEVEL_GROWTH * row_seconds * first > FULL_BATCH_SECONDS:
            first //= 2
        for size in _batch_sizes(first, lambda: n - echelon.rank + 1):
            growth = LEVEL_GROWTH if depth > row_level else 1.0
            if expired() or (depth >= 2 and growth * row_seconds * size > seconds_left()):
                timed_out = True  # past the limit, or would not finish before it
                break
            t_batch = time.perf_counter()
            try:
                found = values(depth, size, z, p, rng, expired)
            except TimeUp:
                timed_out = True
                break
            row_seconds, row_level = (time.perf_counter() - t_batch) / size, depth
            rows = found.a[0]
            kept = echelon.select(rows)
            n_rows += len(rows)
            deg = found.deg
            max_deg = max(max_deg, deg)
            # each row not kept: Schwartz–Zippel on a minor of degree ≤ deg + Σ deg(kept)
            sum_deg += deg * len(kept)
            bound += (len(rows) - len(kept)) * (deg + sum_deg) / (p - 1)
            kept_here += len(kept)
            if len(kept) < len(rows) or echelon.rank == n:
                break
        if timed_out:
            break
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
                    point=tuple(int(v) for v in z), timed_out=timed_out)


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

    ``inner_depth`` s > 0: levels 0 … s are the plain ones (together they span W_s), and level
    s + t (t ≥ 1) is level t of the generators F(z, c) = Σ_{j ≤ s} Y_j(z; c) (`_level_sum`,
    generic elements of W_s, as in `conflow.engine.deep_trace`), which holds brackets of depth
    up to (t + 1)(s + 1) − 1 (`bracket_depth`) at the cost of a plain chain of depth t + s. A
    count settled by shallow brackets pays only for those; the stop rule is the same (a level
    that adds nothing: MATH.md §1.6, since W_0 ⊆ W_s ⊆ Lie(W), and the plain levels 0 … s span
    F's level 0); F's degree in c is carried into the failure bound like any other.

    ``time_limit`` (seconds): past it the trace stops with ``not_converged`` and a reason naming
    the limit; a batch whose estimated cost (its rows at the latest cost per row, times
    `LEVEL_GROWTH` on a new level) would pass it is not started. Returns an `ExactTrace`
    (``n_symbolic`` = 0)."""
    t0 = time.perf_counter()
    n = family.state_dim
    m = family.sampled[1]
    if isinstance(inner_depth, bool) or not isinstance(inner_depth, (int, np.integer)) or not (
            0 <= inner_depth <= 4):
        raise InputError(f"evaluated_lie_trace: inner_depth must be an integer in [0, 4], got "
                         f"{inner_depth!r}")
    primes = tuple(int(q) for q in primes)
    if not primes or not all(2 < q < (1 << 61) and is_prime(q) for q in primes):
        raise InputError("evaluated_lie_trace: give one or more primes in (2, 2^61)")
    if region is not None:
        region = np.asarray(region, dtype=np.float64)
        if region.shape != (n,) or not np.all(np.isfinite(region)):
            raise InputError(f"evaluated_lie_trace: region must be a finite state of shape ({n},)")
    rng_region = np.random.default_rng(seed + 1)
    s = int(inner_depth)

    @lru_cache(maxsize=None)
    def program(rows: int) -> tuple[Any, list[np.ndarray] | None]:
        """The field's program on ``rows`` rows, and its switches' outcomes on the region."""
        closed = _field_program(family, rows)
        return closed, (None if region is None else
                        region_outcomes(closed, region, m, rows, rng_region))

    def values(level: int, rows: int, z: np.ndarray, p: int, rng: np.random.Generator,
               expired: Callable[[], bool]) -> Dual:
        """One batch of level ``level``: a plain chain up to s, then chains of F."""
        plain = level <= s
        shape = (rows, level + 1, m) if plain else (rows, level - s + 1, (s + 1) * m)
        coeffs = rng.integers(0, p, size=shape, dtype=np.int64)
        return _level_values(*program(rows), z, coeffs, 0 if plain else s, p, expired)

    def seconds_left() -> float:
        return np.inf if time_limit is None else time_limit - (time.perf_counter() - t0)

    closed, outcomes = program(BATCH)  # refuses a non-polynomial φ early
    evaluate(closed, [Dual(np.ones((1, BATCH, n), np.int64), 0, 1),
                      Dual(np.ones((1, BATCH, m), np.int64), 0, 1)], primes[0], outcomes)
    rng = np.random.default_rng(seed)
    runs: list[ExactRun] = []
    for q in primes:
        with progress_bar(progress, max_depth + 1,
                          f"exact trace by evaluation (n={n}, prime {len(runs) + 1} of "
                          f"{len(primes)})") as bar:
            runs.append(_run(values, n, q, rng, int(max_depth), seconds_left, bar))
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
