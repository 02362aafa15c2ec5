"""Sparse polynomials, polynomial vector fields, their Lie bracket, and evaluation modulo a prime.

Monomials
---------
A monomial x_0^{e_0} ⋯ x_{n−1}^{e_{n−1}} is packed into one Python int:

    m = deg + Σ_j e_j · 2^(16 + 8 j),      deg = Σ_j e_j  (the low 16 bits),

so a product of monomials is one integer addition, dividing by x_j is one subtraction of
``unit(j) = 2^(16+8j) + 1``, hashing is cheap, and the total degree is ``m & 0xFFFF``. Each exponent
has 8 bits, so every operation that builds a polynomial checks that the total degree stays
≤ `MAX_DEGREE` = 255 (then no exponent field can overflow into its neighbour; the degree field
itself has 16 bits and cannot overflow first). The layout does not depend on the number of
variables, so polynomials on θ ∈ R^D embed in phase space (s, θ, v) by `shift_variables`.

Polynomials and fields
----------------------
`Poly` is an exact sparse polynomial: ``{monomial: coefficient}`` with ``int`` or
``fractions.Fraction`` coefficients, never zero coefficients. A polynomial vector field on R^n is a
tuple of n `Poly` (component k is the k-th coordinate of the field).

Modulo p
--------
The Lie-trace engine (`conflow.exact.trace`) works on reduced copies: a "raw" field is a dict
``{component k: {monomial: coefficient mod p}}`` holding only nonzero components. `to_raw` reduces an
exact field (rational coefficients through modular inverses), `bracket_raw` brackets raw fields,
`PointEvaluator` evaluates raw fields and their Jacobians at a point of (F_p^*)^n, vectorised with
numpy. `matmul_mod` / `mul_mod` are exact products mod p < 2^61 on int64 arrays.

Bracket convention (MATH.md §1.4): [u, v] = ∂v·u − ∂u·v, component k: Σ_j u_j ∂_j v_k − v_j ∂_j u_k.
For linear fields u = Ax, v = Bx this is (BA − AB)x.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

import numpy as np

from conflow.errors import InputError

__all__ = [
    "MAX_DEGREE",
    "Poly",
    "PointEvaluator",
    "binary_rational",
    "bracket",
    "bracket_raw",
    "coef_mod",
    "exact_rational",
    "matmul_mod",
    "mul_mod",
    "evaluate_field",
    "field_add",
    "field_degree",
    "field_mul",
    "field_scale",
    "gradient_fields",
    "momentum_fields",
    "monomial",
    "monomial_degree",
    "monomial_exponents",
    "scale_coordinates",
    "shift_variables",
    "to_raw",
    "zero_field",
]

DEG_BITS = 16
BITS = 8
MAX_DEGREE = (1 << BITS) - 1  # 255: exponent fields cannot overflow below this total degree
_DEG_MASK = (1 << DEG_BITS) - 1
_EXP_MASK = (1 << BITS) - 1

Coef = int | Fraction


# --------------------------------------------------------------------------------------------
# Monomials
# --------------------------------------------------------------------------------------------

_UNITS: list[int] = []


def unit(j: int) -> int:
    """The packed monomial x_j (subtracting it from m divides m by x_j)."""
    while len(_UNITS) <= j:
        _UNITS.append((1 << (DEG_BITS + BITS * len(_UNITS))) + 1)
    return _UNITS[j]


def _units(n: int) -> list[int]:
    """``[unit(0), …, unit(n−1)]`` (the shared list, extended as needed)."""
    unit(max(n - 1, 0))
    return _UNITS


def monomial(exponents: Mapping[int, int] | Sequence[int]) -> int:
    """Pack ``{var: exponent}`` or a dense exponent sequence into a monomial."""
    items = exponents.items() if isinstance(exponents, Mapping) else enumerate(exponents)
    m = 0
    for j, e in items:
        j, e = int(j), int(e)
        if j < 0 or e < 0:
            raise InputError(f"monomial: negative variable index or exponent ({j}, {e})")
        if e:
            m += e * (unit(j) - 1) + e
    if m & _DEG_MASK > MAX_DEGREE:
        raise InputError(f"monomial of degree {m & _DEG_MASK} > {MAX_DEGREE} is not supported")
    return m


def monomial_degree(m: int) -> int:
    """Total degree of a packed monomial."""
    return m & _DEG_MASK


_DECOMP: dict[int, tuple[tuple[int, int], ...]] = {0: ()}


def monomial_exponents(m: int) -> tuple[tuple[int, int], ...]:
    """``((var, exponent), …)`` with exponent ≥ 1, increasing var (memoised)."""
    r = _DECOMP.get(m)
    if r is None:
        x = m >> DEG_BITS
        out = []
        while x:
            j = ((x & -x).bit_length() - 1) // BITS
            e = (x >> (BITS * j)) & _EXP_MASK
            out.append((j, e))
            x ^= e << (BITS * j)
        r = tuple(out)
        if len(_DECOMP) > (1 << 22):
            _DECOMP.clear()
            _DECOMP[0] = ()
        _DECOMP[m] = r
    return r


def _max_var(m: int) -> int:
    """Largest variable index in m, −1 for the constant monomial."""
    x = m >> DEG_BITS
    return (x.bit_length() - 1) // BITS if x else -1


class WorkLimitError(InputError):
    """Building polynomials needed more term products than the `work_limit` in force."""


class TimeLimitError(WorkLimitError):
    """Building polynomials (φ's, or brackets) ran past the `time_bound` in force."""


#: Term products left to the `work_limit` in force (a one-element list), or ``None``.
_WORK_LEFT: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "conflow_polynomial_work", default=None)


@contextlib.contextmanager
def work_limit(products: int):
    """Within this block, `Poly` products may multiply at most ``products`` pairs of terms in
    all; one more raises `WorkLimitError`. Bounds the polynomial form of a model whose
    polynomials explode (a product of many matrices has exponentially many monomials) before it
    exhausts time or memory."""
    token = _WORK_LEFT.set([int(products)])
    try:
        yield
    finally:
        _WORK_LEFT.reset(token)


#: `time.perf_counter()` deadline of the `time_bound` in force, or ``None``.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "conflow_polynomial_deadline", default=None)


@contextlib.contextmanager
def time_bound(seconds: float | None):
    """Within this block, `Poly` products and bracket components started after ``seconds`` raise
    `TimeLimitError` (``None``: no bound; an enclosing bound that ends earlier stays in force)."""
    if seconds is None:
        yield
        return
    deadline = time.perf_counter() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _check_time(what: str) -> None:
    deadline = _DEADLINE.get()
    if deadline is not None and time.perf_counter() > deadline:
        raise TimeLimitError(f"{what}: time limit reached")


def _spend(pairs: int) -> None:
    _check_time("polynomial form")
    left = _WORK_LEFT.get()
    if left is not None:
        left[0] -= pairs
        if left[0] < 0:
            raise WorkLimitError("polynomial form: more term products than the work limit")


def _check_degree(deg: int, what: str) -> None:
    if deg > MAX_DEGREE:
        raise InputError(
            f"{what}: total degree {deg} exceeds {MAX_DEGREE}, the limit of the exact engine"
        )


# --------------------------------------------------------------------------------------------
# Exact coefficients
# --------------------------------------------------------------------------------------------


def _exact(c: object) -> Coef:
    """An exact coefficient from an int / Fraction / numpy integer; floats are refused."""
    if isinstance(c, bool):
        return int(c)
    if isinstance(c, numbers.Integral):
        return int(c)
    if isinstance(c, Fraction):
        return int(c) if c.denominator == 1 else c
    if isinstance(c, numbers.Rational):
        f = Fraction(c.numerator, c.denominator)
        return int(f) if f.denominator == 1 else f
    raise TypeError(f"exact polynomial coefficient expected (int or Fraction), got {c!r}")


def _norm(c: Coef) -> Coef:
    if type(c) is Fraction and c.denominator == 1:
        return c.numerator
    return c


_INV: dict[tuple[int, int], int] = {}  # (denominator, p) → denominator^{-1} mod p


def coef_mod(c: Coef, p: int) -> int:
    """An exact rational reduced mod p (through the inverse of its denominator, memoised: float
    constants are binary rationals, whose few distinct denominators 2^k recur everywhere)."""
    if type(c) is int:
        return c % p
    if type(c) is not Fraction:
        c = _exact(c)
        if isinstance(c, int):
            return c % p
    den = c.denominator
    inv = _INV.get((den, p))
    if inv is None:
        if den % p == 0:
            raise InputError(f"coefficient {c} has a denominator divisible by the prime {p}")
        inv = pow(den % p, -1, p)
        if len(_INV) > (1 << 16):
            _INV.clear()
        _INV[(den, p)] = inv
    return c.numerator * inv % p


# --------------------------------------------------------------------------------------------
# Poly
# --------------------------------------------------------------------------------------------


class Poly:
    """An exact sparse polynomial ``{packed monomial: int | Fraction}`` (no zero coefficients).

    Supports ``+ − *`` with other `Poly` and with exact numbers (int, Fraction), ``**`` with a
    nonnegative int, `diff`, `evaluate` (exact or mod p), `mod` (reduction mod p). Instances are
    treated as immutable.
    """

    __slots__ = ("terms",)

    def __init__(self, terms: Mapping[int, Coef] | None = None):
        self.terms: dict[int, Coef] = {}
        if terms:
            for m, c in terms.items():
                c = _exact(c)
                if c:
                    self.terms[int(m)] = c

    @classmethod
    def _wrap(cls, terms: dict[int, Coef]) -> Poly:
        p = cls.__new__(cls)
        p.terms = terms
        return p

    @classmethod
    def var(cls, j: int) -> Poly:
        """The coordinate x_j."""
        return cls._wrap({unit(j): 1})

    @classmethod
    def const(cls, c: object) -> Poly:
        c = _exact(c)
        return cls._wrap({0: c} if c else {})

    @classmethod
    def from_exponents(
        cls, items: Iterable[tuple[Mapping[int, int] | Sequence[int], object]]
    ) -> Poly:
        """Build from ``[(exponents, coefficient), …]``; repeated monomials add up."""
        acc: dict[int, Coef] = defaultdict(int)
        for exps, c in items:
            acc[monomial(exps)] += _exact(c)
        return cls._wrap({m: _norm(c) for m, c in acc.items() if c})

    # -- queries ---------------------------------------------------------------------------
    @property
    def degree(self) -> int:
        """Total degree (0 for constants and for the zero polynomial)."""
        return max((m & _DEG_MASK for m in self.terms), default=0)

    def is_zero(self) -> bool:
        return not self.terms

    def variables(self) -> set[int]:
        return {j for m in self.terms for j, _ in monomial_exponents(m)}

    def max_var(self) -> int:
        """Largest variable index used, −1 if none."""
        return max((_max_var(m) for m in self.terms), default=-1)

    def constant_term(self) -> Coef:
        return self.terms.get(0, 0)

    def items(self) -> list[tuple[tuple[tuple[int, int], ...], Coef]]:
        """``[((var, exp), …), coefficient)]`` in a canonical order (for printing and tests)."""
        return sorted(
            ((monomial_exponents(m), c) for m, c in self.terms.items()), key=lambda t: t[0]
        )

    # -- arithmetic ------------------------------------------------------------------------
    @staticmethod
    def _coerce(other: object) -> Poly | None:
        if isinstance(other, Poly):
            return other
        try:
            return Poly.const(other)
        except TypeError:
            return None

    def __add__(self, other: object) -> Poly:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        if not o.terms:
            return self
        if not self.terms:
            return o
        out = dict(self.terms)
        for m, c in o.terms.items():
            # a new monomial takes c as it is: `0 + c` would rebuild a Fraction (gcd and all)
            if (prev := out.get(m)) is None:
                out[m] = c
            elif s := prev + c:
                out[m] = _norm(s)
            else:
                del out[m]
        return Poly._wrap(out)

    __radd__ = __add__

    def __neg__(self) -> Poly:
        return Poly._wrap({m: -c for m, c in self.terms.items()})

    def __pos__(self) -> Poly:
        return self

    def __sub__(self, other: object) -> Poly:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        return self + (-o)

    def __rsub__(self, other: object) -> Poly:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        return o + (-self)

    def scale(self, c: object) -> Poly:
        c = _exact(c)
        if not c:
            return Poly()
        return Poly._wrap({m: _norm(a * c) for m, a in self.terms.items()})

    def __mul__(self, other: object) -> Poly:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        if not self.terms or not o.terms:
            return Poly()
        if len(o.terms) == 1 and 0 in o.terms:
            return self.scale(o.terms[0])
        if len(self.terms) == 1 and 0 in self.terms:
            return o.scale(self.terms[0])
        _check_degree(self.degree + o.degree, "product")
        _spend(len(self.terms) * len(o.terms))
        for a, b in ((self, o), (o, self)):  # times a monomial of coefficient 1 (a weight)
            if len(b.terms) == 1 and next(iter(b.terms.values())) == 1:
                (shift,) = b.terms
                return Poly._wrap({m + shift: c for m, c in a.terms.items()})
        acc: dict[int, Coef] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in o.terms.items():
                m, c = m1 + m2, c1 * c2
                prev = acc.get(m)
                acc[m] = c if prev is None else prev + c
        return Poly._wrap({m: _norm(c) for m, c in acc.items() if c})

    __rmul__ = __mul__

    def __pow__(self, k: int) -> Poly:
        if not isinstance(k, numbers.Integral) or k < 0:
            raise InputError(f"Poly power needs a nonnegative integer exponent, got {k!r}")
        k = int(k)
        _check_degree(self.degree * k, "power")
        out, base = Poly.const(1), self
        while k:
            if k & 1:
                out = out * base
            k >>= 1
            if k:
                base = base * base
        return out

    def diff(self, j: int) -> Poly:
        """∂/∂x_j."""
        u = unit(j)
        shift = DEG_BITS + BITS * j
        out: dict[int, Coef] = {}
        for m, c in self.terms.items():
            e = (m >> shift) & _EXP_MASK
            if e:
                out[m - u] = _norm(c * e)
        return Poly._wrap(out)

    def gradient(self, n: int) -> tuple[Poly, ...]:
        """(∂_0 P, …, ∂_{n−1} P) in one pass over the terms.

        For a fixed j, distinct monomials m give distinct m / x_j, so every term of ∂_j P comes
        from exactly one term of P: coefficients are set, never summed (no cancellation).
        """
        comps: dict[int, dict[int, Coef]] = {}
        units = _units(n)
        for m, c in self.terms.items():
            for j, e in monomial_exponents(m):
                if j >= n:
                    raise InputError(f"polynomial uses x_{j} but n = {n}")
                d = comps.get(j)
                if d is None:
                    d = comps[j] = {}
                d[m - units[j]] = c if e == 1 else _norm(c * e)
        zero = Poly()
        out = [zero] * n
        for j, d in comps.items():
            out[j] = Poly._wrap(d)
        return tuple(out)

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, point: Sequence[object], p: int | None = None) -> object:
        """Value at ``point``: exact (ints / Fractions / floats as given) if ``p`` is None, else mod p."""
        if p is None:
            total: object = 0
            for m, c in self.terms.items():
                v: object = c
                for j, e in monomial_exponents(m):
                    v = v * point[j] ** e
                total = total + v
            return total
        z = [int(x) % p for x in point]
        total_p = 0
        for m, c in self.terms.items():
            v = coef_mod(c, p)
            for j, e in monomial_exponents(m):
                v = v * pow(z[j], e, p) % p
            total_p += v
        return total_p % p

    def mod(self, p: int) -> dict[int, int]:
        """Raw reduced copy ``{monomial: coefficient mod p}`` (zero coefficients dropped)."""
        out = {}
        for m, c in self.terms.items():
            r = coef_mod(c, p)
            if r:
                out[m] = r
        return out

    # -- comparisons / printing --------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        o = self._coerce(other)
        if o is None:
            return NotImplemented
        return self.terms == o.terms

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        return bool(self.terms)

    def to_string(self, names: Sequence[str] | None = None) -> str:
        if not self.terms:
            return "0"
        parts = []
        for exps, c in self.items():
            mono = "*".join(
                (names[j] if names else f"x{j}") + (f"^{e}" if e > 1 else "") for j, e in exps
            )
            if not mono:
                parts.append(str(c))
            elif c == 1:
                parts.append(mono)
            elif c == -1:
                parts.append("-" + mono)
            else:
                parts.append(f"{c}*{mono}")
        return " + ".join(parts).replace("+ -", "- ")

    def __repr__(self) -> str:
        return f"Poly({self.to_string()})"


def shift_variables(P: Poly, offset: int) -> Poly:
    """Rename x_j → x_{j+offset} (offset ≥ 0), e.g. θ-polynomials into phase space (s, θ, v)."""
    if offset < 0:
        raise InputError("shift_variables: offset must be ≥ 0")
    sh = BITS * offset
    return Poly._wrap(
        {(((m >> DEG_BITS) << sh) << DEG_BITS) | (m & _DEG_MASK): c for m, c in P.terms.items()}
    )


# --------------------------------------------------------------------------------------------
# Exact vector fields (tuples of n Poly)
# --------------------------------------------------------------------------------------------

Field = tuple[Poly, ...]


def _as_poly(x: object) -> Poly:
    return x if isinstance(x, Poly) else Poly.const(x)


def _as_field(u: Sequence[object]) -> Field:
    return tuple(_as_poly(x) for x in u)


def zero_field(n: int) -> Field:
    return tuple(Poly() for _ in range(n))


def field_add(u: Sequence[Poly], v: Sequence[Poly]) -> Field:
    if len(u) != len(v):
        raise InputError(f"field_add: lengths {len(u)} and {len(v)} differ")
    return tuple(_as_poly(a) + _as_poly(b) for a, b in zip(u, v))


def field_scale(u: Sequence[Poly], c: object) -> Field:
    """c·u for an exact constant c."""
    return tuple(_as_poly(a).scale(c) for a in u)


def field_mul(f: Poly, u: Sequence[Poly]) -> Field:
    """f·u for a polynomial f (multiplies every component)."""
    f = _as_poly(f)
    return tuple(f * _as_poly(a) for a in u)


def field_degree(u: Sequence[Poly]) -> int:
    return max((_as_poly(a).degree for a in u), default=0)


def _field_to_raw(u: Sequence[object], p: int | None) -> dict[int, dict[int, Coef]]:
    out = {}
    for k, a in enumerate(u):
        if not isinstance(a, Poly):
            a = _as_poly(a)
        if a.terms:
            out[k] = a.mod(p) if p is not None else dict(a.terms)
            if not out[k]:
                del out[k]
    return out


def to_raw(u: Sequence[object], p: int) -> dict[int, dict[int, int]]:
    """Reduce an exact field mod p to the raw form ``{k: {monomial: coefficient mod p}}``."""
    return _field_to_raw(u, p)


_BATCH = 32  # polynomials with at least this many terms decode their exponents with numpy


def _directional(
    u: Mapping[int, Mapping[int, Coef]],
    P: Mapping[int, Coef],
    acc: dict,
    sign: int,
    units: list[int],
    n: int,
) -> None:
    """acc += sign · Σ_j u_j ∂_j P  (raw polynomials in n variables; unreduced coefficients)."""
    if len(P) >= _BATCH:
        ms = list(P)
        cs = list(P.values())
        cols = list(u)
        ucols = np.array(cols, dtype=np.int64)
        for a in range(0, len(ms), _ROWS):
            E = _exponent_rows(ms[a : a + _ROWS], n)[:, ucols]
            r, c = np.nonzero(E)
            es = E[r, c].tolist()
            for ri, ci, e in zip(r.tolist(), c.tolist(), es):
                j = cols[ci]
                base = ms[a + ri] - units[j]
                ce = sign * cs[a + ri] * e
                for mu, cu in u[j].items():
                    acc[base + mu] += ce * cu
        return
    decomp = _DECOMP
    for m, c in P.items():
        exps = decomp.get(m)
        if exps is None:
            exps = monomial_exponents(m)
        for j, e in exps:
            uj = u.get(j)
            if uj is None:
                continue
            base = m - units[j]
            ce = sign * c * e
            for mu, cu in uj.items():
                acc[base + mu] += ce * cu


def _raw_degree(u: Mapping[int, Mapping[int, object]]) -> int:
    return max((m & _DEG_MASK for P in u.values() for m in P), default=0)


def bracket_raw(
    u: Mapping[int, Mapping[int, Coef]],
    v: Mapping[int, Mapping[int, Coef]],
    p: int | None,
    n_vars: int,
    deg_u: int | None = None,
    deg_v: int | None = None,
) -> dict[int, dict[int, Coef]]:
    """[u, v] on raw fields, reduced mod p (exact if p is None). ``n_vars`` bounds the variables."""
    du = _raw_degree(u) if deg_u is None else deg_u
    dv = _raw_degree(v) if deg_v is None else deg_v
    _check_degree(du + dv - 1, "bracket")
    units = _units(n_vars)
    out: dict[int, dict[int, Coef]] = {}
    for k in set(u) | set(v):
        _check_time("bracket")
        acc: dict[int, Coef] = defaultdict(int)
        vk = v.get(k)
        if vk and u:
            _directional(u, vk, acc, 1, units, n_vars)
        uk = u.get(k)
        if uk and v:
            _directional(v, uk, acc, -1, units, n_vars)
        if p is None:
            comp = {m: _norm(c) for m, c in acc.items() if c}
        else:
            comp = {}
            for m, c in acc.items():
                r = c % p
                if r:
                    comp[m] = r
        if comp:
            out[k] = comp
    return out


def bracket(u: Sequence[object], v: Sequence[object], p: int | None = None) -> Field:
    """[u, v] = ∂v·u − ∂u·v of two polynomial fields (tuples of n `Poly`); exact, or mod p."""
    if len(u) != len(v):
        raise InputError(f"bracket: fields of lengths {len(u)} and {len(v)}")
    n = len(u)
    ru, rv = _field_to_raw(u, p), _field_to_raw(v, p)
    for F in (ru, rv):
        for P in F.values():
            for m in P:
                if _max_var(m) >= n:
                    raise InputError(f"bracket: a component uses x_{_max_var(m)} but n = {n}")
    raw = bracket_raw(ru, rv, p, n)
    return tuple(Poly._wrap(raw.get(k, {})) for k in range(n))


def evaluate_field(
    u: Sequence[object], point: Sequence[object], p: int | None = None
) -> list[object]:
    """Values of the components of u at ``point`` (exact if p is None, else ints mod p)."""
    return [_as_poly(a).evaluate(point, p) for a in u]


# --------------------------------------------------------------------------------------------
# Modular arithmetic on int64 arrays (p < 2^61)
# --------------------------------------------------------------------------------------------
#
# Numbers mod p are int64 in [0, p). A product of two of them has up to 122 bits, so both factors
# are split into three 21-bit limbs: limb products have ≤ 42 bits and up to 2^19 of them add up
# exactly in int64; the five partial sums S_s (weight 2^(21 s)) are recombined mod p by Horner's
# rule, each step x ↦ x·2^21 mod p using a float estimate of the quotient (off by at most one).

_LB = 21
_LMASK = (1 << _LB) - 1
_KCHUNK = 1 << 19  # inner dimension per int64 product: 3 · 2^19 · 2^42 < 2^63, no overflow


def _limbs(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (entries in [0, 2^61)) = A0 + A1·2^21 + A2·2^42, limbs < 2^21 as int64."""
    return A & _LMASK, (A >> _LB) & _LMASK, A >> (2 * _LB)


def _shift21(x: np.ndarray, p: int) -> np.ndarray:
    """x · 2^21 mod p for int64 x in [0, p), p < 2^61 (float quotient estimate, off by ≤ 1)."""
    q = np.floor(x * (float(1 << _LB) / p)).astype(np.uint64)
    r = ((x.astype(np.uint64) << np.uint64(_LB)) - q * np.uint64(p)).view(np.int64)
    r += p * (r < 0)
    r -= p * (r >= p)
    return r


def _combine(S: list[np.ndarray], p: int) -> np.ndarray:
    """Σ_s S_s · 2^(21 s) mod p for int64 S_s ≥ 0 (Horner)."""
    acc = S[-1] % p
    for s in reversed(S[:-1]):
        acc = _shift21(acc, p)
        acc += s % p
        acc -= p * (acc >= p)
    return acc


def matmul_mod(A: np.ndarray, B: np.ndarray, p: int) -> np.ndarray:
    """A @ B mod p, exactly, for int64 arrays with entries in [0, p), p < 2^61.

    Both factors are split into three 21-bit limbs; the nine limb products are exact int64
    matrix products (numpy's integer matmul: no BLAS threads, which cost more than they gain at
    these sizes), recombined mod p by Horner's rule in 2^21.
    """
    m, k = A.shape
    k2, n = B.shape
    if k != k2:
        raise ValueError(f"matmul_mod: shapes {A.shape} and {B.shape}")
    out = None
    for k0 in range(0, max(k, 1), _KCHUNK):
        a = _limbs(A[:, k0 : k0 + _KCHUNK])
        b = _limbs(np.ascontiguousarray(B[k0 : k0 + _KCHUNK]))
        S = [
            a[0] @ b[0],
            a[0] @ b[1] + a[1] @ b[0],
            a[0] @ b[2] + a[1] @ b[1] + a[2] @ b[0],
            a[1] @ b[2] + a[2] @ b[1],
            a[2] @ b[2],
        ]
        part = _combine(S, p)
        if out is None:
            out = part
        else:
            out += part
            out -= p * (out >= p)
    return out


def _sub_mod(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    r = a - b
    r += p * (r < 0)
    return r


def _mul_limbs(al: tuple[np.ndarray, ...], x: np.ndarray) -> list[np.ndarray]:
    """Limb products of a (pre-split) and x, elementwise with broadcasting: Σ_s S_s 2^(21s) = a·x.

    Each S_s < 3·2^42, so up to 2^19 of them can be summed in int64 before `_combine`.
    """
    b0, b1, b2 = _limbs(x)
    a0, a1, a2 = al
    return [a0 * b0, a0 * b1 + a1 * b0, a0 * b2 + a1 * b1 + a2 * b0, a1 * b2 + a2 * b1, a2 * b2]


def mul_mod(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """a · b mod p elementwise (broadcasting), int64 entries in [0, p), p < 2^61."""
    return _combine(
        _mul_limbs(_limbs(np.asarray(a, dtype=np.int64)), np.asarray(b, dtype=np.int64)), p
    )


def _sum_mod_by_key(keys: np.ndarray, vals: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and the sums mod p of the values sharing each key."""
    if not keys.size:
        return keys, vals
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], vals[order]
    first = np.ones(k.size, dtype=bool)
    first[1:] = k[1:] != k[:-1]
    starts = np.flatnonzero(first)
    return k[starts], _combine([np.add.reduceat(x, starts) for x in _limbs(v)], p)


# --------------------------------------------------------------------------------------------
# Evaluation mod p
# --------------------------------------------------------------------------------------------


_ROWS = 1 << 14  # monomials decoded per chunk by `_exponent_rows`


def _exponent_rows(monos: Sequence[int], n: int) -> np.ndarray:
    """Exponent matrix (len(monos), n) uint8 of packed monomials in n variables (vectorised)."""
    L = 2 + n  # 16-bit degree field + one byte per variable
    buf = b"".join([m.to_bytes(L, "little") for m in monos])
    return np.frombuffer(buf, dtype=np.uint8).reshape(len(monos), L)[:, 2:]


class PointEvaluator:
    """Evaluate raw polynomials / fields / Jacobians at one point z ∈ (F_p^*)^n.

    Fields and Jacobians are evaluated in bulk with numpy: the exponents of all terms are decoded
    at once (`_exponent_rows`), z^m is a product of table entries z_j^e, and ∂_j z^m = e·z^m/z_j
    (every coordinate of z is nonzero, so 1/z_j exists). Scalar `mono`/`poly` use a memo.
    """

    def __init__(self, point: Sequence[int], p: int):
        self.p = int(p)
        self.z = [int(x) % self.p for x in point]
        self.n = len(self.z)
        self.units = _units(self.n)
        self.memo: dict[int, int] = {0: 1}
        if any(x == 0 for x in self.z):
            raise ValueError("PointEvaluator: every coordinate must be nonzero mod p")
        self.zinv = [pow(x, -1, self.p) for x in self.z]
        self._zpow = np.ones((self.n, 1), dtype=np.int64)  # z_j^e
        self._ezinv = np.zeros((self.n, 1), dtype=np.int64)  # e / z_j

    def _tables(self, emax: int) -> None:
        if self._zpow.shape[1] > emax:
            return
        p, E = self.p, max(emax + 1, 2 * self._zpow.shape[1])
        zp = [[pow(zj, e, p) for e in range(E)] for zj in self.z]
        ez = [[e * zi % p for e in range(E)] for zi in self.zinv]
        self._zpow = np.array(zp, dtype=np.int64).reshape(self.n, E)
        self._ezinv = np.array(ez, dtype=np.int64).reshape(self.n, E)

    def mono(self, m: int) -> int:
        v = self.memo.get(m)
        if v is None:
            v = 1
            for j, e in monomial_exponents(m):
                v = v * pow(self.z[j], e, self.p) % self.p
            self.memo[m] = v
        return v

    def poly(self, P: Mapping[int, int]) -> int:
        mono = self.mono
        return sum(c * mono(m) for m, c in P.items()) % self.p

    def _small_value_and_jacobian(
        self, F: Mapping[int, Mapping[int, int]]
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """`value_and_jacobian` in plain Python (faster for fields with few terms)."""
        p, n, mono, zinv = self.p, self.n, self.mono, self.zinv
        val = np.zeros(n, dtype=np.int64)
        jac: dict[int, int] = defaultdict(int)
        for k, P in F.items():
            s = 0
            base = k * n
            for m, c in P.items():
                cm = c * mono(m)
                s += cm
                for j, e in monomial_exponents(m):
                    jac[base + j] += cm * e
            val[k] = s % p
        keys = np.fromiter(jac.keys(), dtype=np.int64, count=len(jac))
        vals = np.fromiter(
            (x * zinv[key % n] % p for key, x in jac.items()), dtype=np.int64, count=len(jac)
        )
        nz = vals != 0
        keys, vals = keys[nz], vals[nz]
        return val, (keys // n, keys % n, vals)

    def value_and_jacobian(
        self, F: Mapping[int, Mapping[int, int]]
    ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """F(z) as int64 (n,), and ∂F(z) in COO form (rows k, cols j, values), entries in [0, p)."""
        p, n = self.p, self.n
        val = np.zeros(n, dtype=np.int64)
        ms: list[int] = []
        cs: list[int] = []
        for P in F.values():
            ms.extend(P.keys())
            cs.extend(P.values())
        N = len(ms)
        empty = np.zeros(0, dtype=np.int64)
        if not N:
            return val, (empty, empty, empty)
        if N < _BATCH:
            return self._small_value_and_jacobian(F)
        comp = np.repeat(
            np.fromiter(F.keys(), dtype=np.int64, count=len(F)),
            np.fromiter((len(P) for P in F.values()), dtype=np.int64, count=len(F)),
        )
        coef = np.fromiter(cs, dtype=np.int64, count=N)
        rows_l, cols_l, es_l = [], [], []
        for a in range(0, N, _ROWS):
            E = _exponent_rows(ms[a : a + _ROWS], n)
            r, c = np.nonzero(E)
            rows_l.append(r + a)
            cols_l.append(c)
            es_l.append(E[r, c])
        rows = np.concatenate(rows_l)
        cols = np.concatenate(cols_l).astype(np.int64)
        es = np.concatenate(es_l).astype(np.int64)
        zm = np.ones(N, dtype=np.int64)
        if rows.size:
            self._tables(int(es.max()))
            f = self._zpow[cols, es]
            counts = np.bincount(rows, minlength=N)
            pos = np.arange(rows.size) - (np.cumsum(counts) - counts)[rows]
            for t in range(int(counts.max())):
                sel = pos == t
                r = rows[sel]
                zm[r] = mul_mod(zm[r], f[sel], p)
        cm = mul_mod(coef, zm, p)  # c · z^m per term
        k, s = _sum_mod_by_key(comp, cm, p)
        val[k] = s
        if not rows.size:
            return val, (empty, empty, empty)
        contrib = mul_mod(cm[rows], self._ezinv[cols, es], p)  # c·e·z^m / z_j
        keys, sums = _sum_mod_by_key(comp[rows] * n + cols, contrib, p)
        nz = sums != 0
        keys, sums = keys[nz], sums[nz]
        return val, (keys // n, keys % n, sums)


# --------------------------------------------------------------------------------------------
# Lifts: generator families of the flows (MATH.md §1.3, §3.2, §4.1)
# --------------------------------------------------------------------------------------------


def _check_polys(phi_polys: Sequence[object], n: int, what: str) -> list[Poly]:
    polys = [_as_poly(P) for P in phi_polys]
    for i, P in enumerate(polys):
        if P.max_var() >= n:
            raise InputError(f"{what}: φ_{i} uses x_{P.max_var()} but there are only {n} variables")
    return polys


def gradient_fields(phi_polys: Sequence[object], n: int) -> list[Field]:
    """Gradient-flow generators χ_i = ∇φ_i on R^n (MATH.md §1.3)."""
    return [P.gradient(n) for P in _check_polys(phi_polys, n, "gradient_fields")]


def scale_coordinates(fields: Sequence[Sequence[object]], mask: Sequence[bool]) -> list[Field]:
    """Multiply component j of every field by x_j where ``mask[j]``.

    With ``fields = gradient_fields(φ, D)`` and ``mask`` the positive (mirror) coordinates this is
    the entropy-metric flow θ' = −θ ⊙ ∇L, fields diag(θ)∇φ_i (MATH.md §4.1).
    """
    mask = [bool(b) for b in np.asarray(mask, dtype=bool).ravel()]
    out = []
    for u in fields:
        if len(u) != len(mask):
            raise InputError(
                f"scale_coordinates: field of length {len(u)}, mask of length {len(mask)}"
            )
        out.append(
            tuple(Poly.var(j) * _as_poly(a) if mask[j] else _as_poly(a) for j, a in enumerate(u))
        )
    return out


def binary_rational(x: object, what: str = "value") -> Coef:
    """The exact value of a finite number: ints / Fractions as they are, a float as the binary
    rational m·2^e it is (``Fraction(x)``; e.g. 0.1 ↦ 3602879701896397/2^55, not 1/10).

    The denominator is a power of two, invertible modulo every odd prime, so reducing the
    coefficient mod p is exact. NaN / ±inf raise `InputError`.
    """
    if isinstance(x, (numbers.Rational, np.integer, bool)):
        return _exact(x)
    try:
        xf = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{what} {x!r} is not a number") from None
    if not np.isfinite(xf):
        raise InputError(f"{what} {x!r} is not finite")
    if xf == int(xf):
        return int(xf)
    return Fraction(xf)


def exact_rational(x: object, what: str = "value") -> Coef:
    """A flow constant (τ, Nesterov's c) as an exact rational: ints / Fractions as they are; a
    float as the simple rational it prints as when there is one (denominator ≤ 10^6 and
    ``float(r) == x``: 0.35 ↦ 7/20), otherwise as its exact binary value (`binary_rational`).
    The two readings are the same float, so the numeric engine sees the same flow."""
    if isinstance(x, (numbers.Rational, np.integer, bool)):
        return _exact(x)
    xb = binary_rational(x, what)
    if isinstance(xb, int):
        return xb
    fr = xb.limit_denominator(10**6)
    return _norm(fr) if float(fr) == float(xb) else xb


def momentum_fields(
    phi_polys: Sequence[object],
    D: int,
    tau: object,
    metric_mask: Sequence[bool] | None = None,
    nesterov: bool = False,
) -> list[Field]:
    """Phase-space generators of the momentum flow θ'' + τ(t) θ' = −M ∇E(θ) (MATH.md §3.1–3.2).

    State z = (s, θ_1..θ_D, v_1..v_D), n = 2D + 1, in that order; ``phi_polys`` are polynomials in
    θ (variables 0..D−1), shifted here to variables 1..D. Returns ``[χ_0, χ_1, …, χ_d]``:

    - constant τ ≠ 0: s = e^{τt}, drift χ_0 = (τ s, v, −τ v);  τ = 0: s = t, χ_0 = (1, v, 0);
    - forces χ_i = (0, 0_D, M ∇φ_i(θ)), M = I, or with ``metric_mask`` (mirror/entropy momentum,
      MATH.md §3.1) M = diag(τθ_j + v_j) on the masked coordinates and 1 elsewhere.
    - ``nesterov=True``: τ(t) = c/t with c = 3 (Su–Boyd–Candès), or c = ``tau`` if given; s = t.
      The drift (1, v, −(c/t) v) is not polynomial, so it is multiplied by t: χ_0 = (t, t v, −c v).
      With a mirror metric M = diag(cθ/t + v) the forces are multiplied by t as well:
      t·M = diag(cθ + t v) on masked coordinates, t elsewhere.

    Why multiplying generators by t is harmless (on the domain t ≠ 0): multiplying any generator
    — each by its own nonvanishing function — leaves unchanged the C^∞-module Δ they span. The
    module generated by Lie(W) is involutive ([fX, gY] = fg[X,Y] + f X(g) Y − g Y(f) X) and is
    contained in every involutive module containing W, so it is the involutive closure of Δ; hence
    Lie(W)(z) = Lie(W')(z) at every z with t ≠ 0, and the laws (∇h ⊥ every generator) are the same.
    The function spaces Lie(W) and Lie(W') differ; their traces do not.
    """
    D = int(D)
    if D < 1:
        raise InputError("momentum_fields: D must be ≥ 1")
    polys = [shift_variables(P, 1) for P in _check_polys(phi_polys, D, "momentum_fields")]
    n = 2 * D + 1
    if metric_mask is None:
        mask = [False] * D
    else:
        mask = [bool(b) for b in np.asarray(metric_mask, dtype=bool).ravel()]
        if len(mask) != D:
            raise InputError(
                f"momentum_fields: metric_mask has length {len(mask)}, expected D = {D}"
            )
    s = Poly.var(0)
    th = [Poly.var(1 + j) for j in range(D)]
    v = [Poly.var(1 + D + j) for j in range(D)]
    zero = Poly()

    if nesterov:
        c = exact_rational(3 if tau is None else tau, "Nesterov constant")
        if c <= 0:
            raise InputError(
                f"momentum_fields: with nesterov=True, tau is the constant c > 0 of τ(t) = c/t "
                f"(None for Nesterov's 3); got {tau!r}"
            )
        drift = (s,) + tuple(s * vj for vj in v) + tuple(vj.scale(-c) for vj in v)
        if any(mask):
            mult = [th[j].scale(c) + s * v[j] if mask[j] else s for j in range(D)]
        else:
            mult = [None] * D
    else:
        t = exact_rational(0 if tau is None else tau, "tau")
        if t:
            drift = (s.scale(t),) + tuple(v) + tuple(vj.scale(-t) for vj in v)
        else:
            drift = (Poly.const(1),) + tuple(v) + tuple(zero for _ in v)
        mult = [th[j].scale(t) + v[j] if mask[j] else None for j in range(D)]

    fields: list[Field] = [drift]
    for P in polys:
        g = P.gradient(n)  # components 1..D are ∂φ/∂θ_j
        force = [zero] * (1 + D)
        for j in range(D):
            gj = g[1 + j]
            force.append(gj if mult[j] is None else mult[j] * gj)
        fields.append(tuple(force))
    return fields
