"""`polynomial_laws`: a basis of all polynomial conservation laws of bounded degree (MATH.md §1.7).

Unknown: P(z) = Σ_α c_α z^α over the monomials of degree 1..k (or exactly k with
``homogeneous=True``; the constant is excluded) in the flow's state variables — θ for gradient
flows, (s, θ, v) for momentum flows (MATH.md §3.2; a law s·(bilinear form) has degree 3). P is a
law iff ⟨∇P(z), χ_j(z)⟩ = 0 for every generator χ_j (drift included) and every z (MATH.md §1.2,
§3.2); each (point, generator) pair gives one linear constraint on c,

    Σ_α c_α ⟨∇z^α, χ_j(z)⟩ = 0,

evaluated numerically (float64) at random generic points; the laws are the null space of the
constraint matrix, found by SVD with the cut and gap reporting of `conflow.engine.rank`.

Structure (what makes D = 200 at degree 2 — 20,300 unknowns — cheap). For polynomial models the
exact generator fields are available (`AbstractFlow.polynomial_fields`). If for a weight vector w every
field χ_j satisfies w·β − w_a = const_j for every monomial z^β of every component a, then
⟨∇z^α, χ_j⟩ only produces monomials of weight w·α + const_j, so a polynomial P is a law iff each of
its w-homogeneous parts is (monomials of different weight cannot cancel). The weights with this
property are the null space of an integer matrix M (differences of the vectors β − e_a within a
field): over Q (torus gradings: total degree, weighted degrees such as U:2, V:1 for ICNN, the
degree in s for momentum) and over GF(2) (sign flips: rows/columns/hidden neurons of linear and
ReLU nets). Monomials are split into classes of equal grade and each class is solved on its own:
the null space of the full system is the direct sum of the classes' null spaces. Any subset of
valid weights keeps this exact; weights are checked exactly (integer arithmetic) before use.
Without exact fields (non-polynomial φ, custom metric) everything is one class.

Per class: rows from P points (P·m ≥ #columns + margin, margin = max(8, #columns/3)), columns
divided by their RMS size, rows by the norm of their terms (so an analytically zero combination
sits at rounding level), SVD,
cut at ``rtol``; each null vector is then checked at fresh validation points (a non-law fails
there with probability one) and a class that fails is redone with twice the points.

Readable output: per class, the null space is brought to reduced row echelon form (monomials
ordered by degree, then variables), coefficients are rounded to small rationals when within 1e-9
and kept only if the rounded law still lies in the law space. A modest recogniser (`_families`)
then matches laws against entries of matrix families built from the parameter blocks:

- Gram differences of two blocks, optionally plus diag(b²) of a bias vector: e.g.
  (U1ᵀU1 − U2U2ᵀ)[i,j] (deep linear), (UᵀU − VᵀV)[i,j] (factorisation),
  (W1W1ᵀ + diag(b1²) − W2ᵀW2)[j,j] (ReLU neurons, diagonal only);
- vector families: column/row sums of two blocks, e.g. (colsum(U) − rowsum(V))[k] (NMF), a
  sum plus a Gram diagonal, e.g. (colsum(U) − 1/2·diag(VVᵀ) − 1/2·b²)[k] (ICNN), and the sums
  of one block, e.g. colsum(W)[k] (softmax layer);
- products of two laws already in the basis whose degrees add up to at most k (e.g. the 15
  products h_k·h_l of the 5 linear NMF laws among its degree-2 laws), printed as such;
- momentum: time factor × antisymmetric cross-Grams of two blocks,
  s·(Asym(U1ᵀdU1) + Asym(U2dU2ᵀ))[k,l] with Asym(X) = X − Xᵀ (linear nets).

The family's coefficients (λ) are fitted, rounded to rationals, and every entry is tested for
membership in the law space; recognised entries replace echelon rows when independent. Laws that
match no family are printed as polynomials.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine.rank import (
    DEFAULT_MIN_GAP,
    DEFAULT_RTOL,
    cut_spectrum,
    gap_ratio,
    normalise_rows,
)
from conflow.errors import InputError
from conflow.exact import polynomial_form
from conflow.flows import AbstractFlow, parse_flow
from conflow.laws.count import count_laws
from conflow.laws.expressions import expression_names, identifier, time_name
from conflow.models.base import Model
from conflow.precision import float64
from conflow.status import Status

Array = jax.Array

OK, AMBIGUOUS = Status.OK, Status.AMBIGUOUS
MAX_MONOMIALS = 2_000_000
MAX_DENSE_CLASS = 6_000
MAX_DENOMINATOR = 64
VALIDATION_TOL = 1e-8
ROUND_TOL = 1e-9
MAX_REFINE = 5
EVAL_CHUNK = 8
BATCH_ENTRIES = 1_000_000  # rows × columns evaluated at once


# ------------------------------------------------------------------------------------ results


@dataclasses.dataclass(frozen=True)
class Law:
    """One polynomial conservation law P(z) = Σ c_α z^α of a flow's state z.

    Attributes:
        expression: P in the model's own names, e.g. ``U1[0,0]**2 + U1[1,0]**2 - U2[0,0]**2 -
            U2[0,1]**2`` (momentum: ``s``/``t`` and velocities ``dU1[0,1]``); a valid
            `conflow.laws.expressions` law, so it can be fed back to ``conflow verify --law``.
        monomials: each monomial as the sorted tuple of its variables' state indices (with
            repetition: ``(3, 3)`` is z_3²).
        coefficients: one per monomial: `fractions.Fraction` when ``exact``, else ``float``.
        exact: the coefficients are small rationals and the rational law was checked to lie in
            the law space.
        family: the recognised matrix family in math notation, e.g. ``(U1ᵀU1 − U2U2ᵀ)``, and
            ``index`` its entry, e.g. ``(0, 1)``; ``None`` if not recognised.
        family_code: the same family in the expression language, e.g.
            ``(U1.T @ U1 - U2 @ U2.T)`` (append the index to get a ``--law``).
        state_dim: D (gradient flows) or 2D + 1 (momentum flows).
        model, flow: what the law was found for (set by `polynomial_laws`); they make the law
            callable on the model's own parameters.

    Call it as ``law(params)`` (gradient flows) or ``law(t, params, velocity)`` (momentum
    flows) on the parameters the way `Model.to_pytree` gives them (the dict of named blocks,
    the pytree of `conflow.custom`, the module of `conflow.from_model`); `fn` is P on the flat
    state, shape ``(state_dim,) -> ()``.
    """

    expression: str
    monomials: tuple[tuple[int, ...], ...]
    coefficients: tuple[Fraction | float, ...]
    exact: bool
    variables: tuple[str, ...] = dataclasses.field(repr=False)
    state_dim: int
    family: str | None = None
    family_code: str | None = None
    index: tuple[int, ...] | None = None
    factors: tuple[tuple[str, str], ...] | None = None
    model: Model | None = dataclasses.field(default=None, repr=False, compare=False)
    flow: AbstractFlow | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def degree(self) -> int:
        return max(len(m) for m in self.monomials)

    @property
    def label(self) -> str:
        """``family[index]`` when recognised, ``label · label`` for a product of laws, else the
        expression."""
        if self.factors is not None:
            return " · ".join(f"{{{lab}}}" if lab[:1] != "(" else lab for lab, _ in self.factors)
        if self.family is None:
            return self.expression
        return f"{self.family}[{','.join(map(str, self.index))}]"

    @property
    def code(self) -> str:
        """A ``--law`` expression: ``family_code[index]`` when recognised, else the expression."""
        if self.factors is not None:
            return "*".join(f"({code})" for _, code in self.factors)
        if self.family_code is None:
            return self.expression
        return f"{self.family_code}[{','.join(map(str, self.index))}]"

    @property
    def fn(self) -> Callable[[Array], Array]:
        """P as a JAX function of the state, shape ``(state_dim,) -> ()``."""
        return _poly_fn(self.monomials, [float(c) for c in self.coefficients], self.state_dim)

    @float64
    def __call__(self, *args: Any) -> Array:
        """P on the model's parameters: ``law(params)`` or ``law(t, params, velocity)``."""
        if self.model is None:
            raise InputError("this Law has no model: evaluate it on the flat state with law.fn(z)")
        return self.fn(self.state(*args))

    def as_monitor(self) -> Callable:
        """The law as a `conflow.simulate` / `conflow.train` monitor: ``h(params)``, or
        ``h(params, velocity, t)`` for momentum flows."""
        if self.model is None:
            raise InputError("this Law has no model to be monitored on")
        if not self.flow.has_velocity:
            return lambda params: self(params)
        return lambda params, velocity, t: self(t, params, velocity)

    def state(self, *args: Any) -> Array:
        """The flat state z of ``(params)`` or ``(t, params, velocity)``."""
        model, flow = self.model, self.flow
        if not flow.has_velocity:
            if len(args) != 1:
                raise InputError(f"a gradient-flow law takes (params), got {len(args)} arguments")
            return model.from_pytree(args[0])
        if len(args) != 3:
            raise InputError(f"a momentum law takes (t, params, velocity), got {len(args)} "
                             "arguments")
        t, params, velocity = args
        return jnp.concatenate([jnp.reshape(flow.time_variable(t), (1,)),
                                model.from_pytree(params), model.from_pytree(velocity)])

    def sympy(self):
        """P as a sympy expression (symbols named like the state variables)."""
        return _sympy_expr(self.monomials, self.coefficients, self.variables)

    def to_json(self) -> dict[str, Any]:
        return {
            "expression": self.expression,
            "label": self.label,
            "law": self.code,
            "family": self.family,
            "index": None if self.index is None else list(self.index),
            "product_of": None if self.factors is None else [lab for lab, _ in self.factors],
            "exact": self.exact,
            "degree": self.degree,
        }


@dataclasses.dataclass(frozen=True)
class FamilyGroup:
    """Laws recognised as entries of one matrix family."""

    family: str
    code: str
    kind: str  # "sym", "antisym" or "vector"
    size: int
    indices: tuple[tuple[int, ...], ...]

    def describe(self) -> str:
        n = len(self.indices)
        if self.kind == "vector":
            full = n == self.size
            idx = "[k], 0 ≤ k < %d" % self.size if full else _index_list(self.indices)
        elif self.kind == "antisym":
            full = n == self.size * (self.size - 1) // 2
            idx = "[k,l], 0 ≤ k < l < %d" % self.size if full else _index_list(self.indices)
        else:
            if n == self.size * (self.size + 1) // 2:
                idx = "[i,j], 0 ≤ i ≤ j < %d" % self.size
            elif all(i == j for i, j in self.indices) and n == self.size:
                idx = "[j,j], 0 ≤ j < %d" % self.size
            else:
                idx = _index_list(self.indices)
        return f"{self.family}{idx}: {n} law{'s' if n != 1 else ''}"

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "code": self.code, "kind": self.kind, "size": self.size,
                "indices": [list(i) for i in self.indices]}


def _index_list(indices) -> str:
    shown = ", ".join("[" + ",".join(map(str, i)) + "]" for i in indices[:6])
    return f" at {shown}" + (", …" if len(indices) > 6 else "")


@dataclasses.dataclass(frozen=True)
class LawBasis:
    """Result of `polynomial_laws`: a basis of the polynomial laws of degree ≤ k (or = k).

    Attributes:
        laws: the basis (`Law`), recognised families first.
        n_independent: rank of the laws' gradients at random points (functional independence,
            MATH.md §1.2); ``independence_gap`` its σ_r/σ_{r+1}.
        count: the `LawCount` of `count_laws` (``None`` if not requested); ``complete`` is
            ``n_independent == count.n_laws``: the polynomial laws are then all the laws, locally
            (MATH.md §1.5).
        status: ``ok`` or ``ambiguous`` (small gap, or a class that failed validation), with
            ``reason``.
        sigma_kept / sigma_dropped / gap: smallest kept and largest dropped normalised singular
            value over all classes, and their ratio.
        validation_residual: the largest residual of an accepted law at the validation points
            (normalised rows: rounding level for a true law).
        monomials, classes, largest_class, grading: size of the search and how it was split.
        points: generic points used by the largest class (plus 2 validation points).
    """

    model: str
    dims: tuple[int, ...]
    flow: str
    tau: float | None
    metric: str
    degree: int
    homogeneous: bool
    state_dim: int
    variables: tuple[str, ...] = dataclasses.field(repr=False)
    laws: tuple[Law, ...] = dataclasses.field(repr=False)
    families: tuple[FamilyGroup, ...] = dataclasses.field(repr=False)
    n_independent: int
    independence_gap: float
    count: Any
    status: Status
    reason: str
    sigma_kept: float | None
    sigma_dropped: float | None
    validation_residual: float
    monomials: int
    classes: int
    largest_class: int
    grading: str
    points: int
    seconds: float
    seconds_count: float

    @property
    def n_laws(self) -> int:
        """Dimension of the space of polynomial laws found (size of the basis)."""
        return len(self.laws)

    @property
    def gap(self) -> float:
        return gap_ratio(self.sigma_kept, self.sigma_dropped)

    @property
    def n_count(self) -> int | None:
        return None if self.count is None else self.count.n_laws

    @property
    def complete(self) -> bool | None:
        """``n_independent == count`` (``None`` without a count or if the count is not ok)."""
        if self.n_count is None:
            return None
        return self.n_independent == self.n_count

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "dims": list(self.dims), "flow": self.flow, "tau": self.tau,
            "metric": self.metric, "degree": self.degree, "homogeneous": self.homogeneous,
            "state_dim": self.state_dim, "n_laws": self.n_laws,
            "n_independent": self.n_independent,
            "independence_gap": _finite(self.independence_gap),
            "count": self.n_count,
            "count_status": None if self.count is None else self.count.status,
            "complete": self.complete, "status": self.status, "reason": self.reason,
            "gap": _finite(self.gap), "sigma_kept": self.sigma_kept,
            "sigma_dropped": self.sigma_dropped, "validation_residual": self.validation_residual,
            "monomials": self.monomials, "classes": self.classes,
            "largest_class": self.largest_class, "grading": self.grading,
            "points": self.points, "seconds": self.seconds, "seconds_count": self.seconds_count,
            "families": [f.to_json() for f in self.families],
            "laws": [law.to_json() for law in self.laws],
        }

    def summary(self, all_laws: bool = False) -> str:
        """Human-readable report: the comparison with the count, the families in matrix form and
        the unrecognised laws (every law with ``all_laws``)."""
        deg = f"degree {'=' if self.homogeneous else '≤'} {self.degree}"
        head = (f"{self.model}: {self.n_laws} polynomial conservation law"
                f"{'s' if self.n_laws != 1 else ''} of {deg} "
                f"({self.n_independent} independent)")
        if self.status != OK:
            head += f"  [{self.status.upper()}: {self.reason}]"
        flow = self.flow + (f" τ={self.tau:g}" if self.tau is not None else "")
        lines = [head]
        if self.count is not None:
            if self.complete:
                verdict = "equal: the polynomial laws are all the laws (locally)"
            elif self.n_count is None:
                verdict = f"count not available ({self.count.status})"
            elif self.n_independent < self.n_count:
                verdict = (f"{self.n_count - self.n_independent} law(s) are not polynomial of "
                           f"{deg}")
            else:
                verdict = "MORE polynomial laws than the count: one of the two is wrong"
            lines.append(f"  count_laws: {self.n_count} → {verdict}")
        kept = "-" if self.sigma_kept is None else f"{self.sigma_kept:.1e}"
        dropped = "-" if self.sigma_dropped is None else f"{self.sigma_dropped:.1e}"
        lines.append(
            f"  flow {flow} ({self.metric}); {self.monomials} monomials in {self.classes} "
            f"classes (largest {self.largest_class}; grading {self.grading}); σ cut {kept} | "
            f"{dropped}, gap {self.gap:.1e}; validation residual {self.validation_residual:.1e}; "
            f"{self.seconds:.2f} s" + (f" + count {self.seconds_count:.2f} s"
                                       if self.count is not None else ""))
        if self.laws and self.laws[0].variables[0] == "s":
            lines.append("  s = exp(τ t)")
        for fam in self.families:
            lines.append(f"  {fam.describe()}    --law \"{fam.code}[...]\"")
        products = [law for law in self.laws if law.factors is not None]
        if products:
            lines.append(f"  {len(products)} product(s) of lower-degree laws, e.g. "
                         f"{products[0].label}")
        rest = [law for law in self.laws if law.family is None and law.factors is None]
        shown = self.laws if all_laws else rest
        if shown:
            lines.append("  laws:" if all_laws else "  other laws:")
            lines += [f"    {law.expression}" + (f"    = {law.label}" if law.label !=
                                                     law.expression else "")
                      for law in shown]
        return "\n".join(lines)


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


# ------------------------------------------------------------------------- polynomials helpers


def _poly_fn(monomials, coefficients, n: int) -> Callable[[Array], Array]:
    k = max(len(m) for m in monomials)
    idx = np.array([m + (n,) * (k - len(m)) for m in monomials], dtype=np.int32)
    coef = np.asarray(coefficients, dtype=np.float64)

    def fn(z: Array) -> Array:
        ext = jnp.concatenate([jnp.asarray(z, dtype=jnp.float64).reshape(n), jnp.ones(1)])
        return jnp.sum(coef * jnp.prod(ext[idx], axis=1))

    return fn


def _sympy_expr(monomials, coefficients, names):
    import sympy as sp

    symbols: dict[int, Any] = {}
    terms = []
    for mono, c in zip(monomials, coefficients):
        coef = sp.Rational(c.numerator, c.denominator) if isinstance(c, Fraction) else (
            sp.Float(float(c), 15))
        factors = []
        for var, e in sorted(_exponents(mono).items()):
            sym = symbols.setdefault(var, sp.Symbol(names[var]))
            factors.append(sym**e if e > 1 else sym)
        terms.append(sp.Mul(coef, *factors))
    return sp.Add(*terms, evaluate=False)


def _expression(monomials, coefficients, names) -> str:
    """P as text in the expression language: terms in monomial order, factors in state order,
    rational coefficients as ``3*x*y/2`` (the form sympy's printer uses; written here directly
    because importing sympy costs ~0.5 s — `Law.sympy` gives the sympy expression)."""
    out = []
    for i, (mono, c) in enumerate(zip(monomials, coefficients)):
        neg = c < 0
        mag = -c if neg else c
        factors = "*".join(names[v] if e == 1 else f"{names[v]}**{e}"
                           for v, e in sorted(_exponents(mono).items()))
        if isinstance(mag, Fraction):
            head = "" if mag.numerator == 1 else f"{mag.numerator}*"
            tail = "" if mag.denominator == 1 else f"/{mag.denominator}"
        else:
            head, tail = ("" if mag == 1.0 else f"{float(mag):.15g}*"), ""
        term = head + factors + tail
        out.append(("-" if neg else "") + term if i == 0 else (" - " if neg else " + ") + term)
    return "".join(out)


def _exponents(mono: tuple[int, ...]) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in mono:
        out[v] = out.get(v, 0) + 1
    return out


def _monomial_table(n: int, degree: int, homogeneous: bool) -> tuple[np.ndarray, list]:
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


# ---------------------------------------------------------------------------------- grading


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
    R, _ = _rref(W, 1e-9)
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


def _classes(model: Model, flow: AbstractFlow, n: int, idx: np.ndarray) -> tuple[np.ndarray, str]:
    """Class id of every monomial (see module docstring) and a description of the grading."""
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


# ------------------------------------------------------------------------- constraint rows


def generator_evaluator(model: Model, flow: AbstractFlow):
    """(n, m, f) with f: states (P, n) ↦ generator matrices (P, m, n), row j = χ_j(z) (jitted)."""
    fam = flow.family(model)
    field = fam.field
    zero = jnp.zeros(fam.n_coeffs)

    def gens(z):
        return jax.jacfwd(lambda a: field(z, a))(zero).T

    return fam.state_dim, fam.n_coeffs, jax.jit(jax.vmap(gens))


class _Points:
    """Generic states and the generator matrices χ_j(z) there, extended on demand."""

    def __init__(self, model: Model, flow: AbstractFlow, seed: int, share: _Points | None = None):
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
class _ClassResult:
    cols: np.ndarray  # (C,) monomial columns
    basis: np.ndarray  # (K, C) orthonormal basis of the class's law space (original coords)
    sigma_kept: float | None
    sigma_dropped: float | None
    validation: float  # largest residual of an accepted law at the validation points
    ok: bool
    points: int


def _solve_group(cols: np.ndarray, idx: np.ndarray, pts: _Points, val: _Points, P: int,
                 rtol: float) -> list[_ClassResult]:
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
        out.append(_ClassResult(cols[g], basis, cut.sigma_kept, cut.sigma_dropped, float(res),
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


def _solve_classes(class_of: np.ndarray, idx: np.ndarray, pts: _Points, val: _Points,
                   rtol: float) -> list[_ClassResult]:
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
    results: list[_ClassResult] = []
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


# ---------------------------------------------------------------------------- echelon, rational


def _rref(V: np.ndarray, tol: float) -> tuple[np.ndarray, list[int]]:
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


def _rationalise(row: np.ndarray) -> list[Fraction] | None:
    fr = [Fraction(float(x)).limit_denominator(MAX_DENOMINATOR) for x in row]
    if max(abs(float(f) - x) for f, x in zip(fr, row)) > ROUND_TOL:
        return None
    return fr


def _in_span(vec: np.ndarray, basis: np.ndarray, tol: float = 1e-9) -> bool:
    """``vec`` lies in the row span of the orthonormal ``basis``."""
    nrm = np.linalg.norm(vec)
    if nrm == 0:
        return False
    r = vec - basis.T @ (basis @ vec) if basis.shape[0] else vec
    return bool(np.linalg.norm(r) <= tol * nrm)


# ---------------------------------------------------------------------------------- recogniser


@dataclasses.dataclass(frozen=True)
class _Piece:
    uni: str
    code: str
    size: int
    kind: str  # "sym", "antisym", "vector", "diag" (a symmetric matrix that is diagonal)
    block: str
    entry: Callable[[tuple[int, ...]], dict[tuple[int, ...], Fraction]]


def _block_vars(model: Model, flow: AbstractFlow) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Block name → (state indices of θ entries, of velocity entries or None), block-shaped."""
    momentum = flow.has_velocity
    D, out, start = model.D, {}, 0
    for b in model.blocks:
        ids = np.arange(start, start + b.size).reshape(b.shape)
        out[b.name] = (ids + 1, ids + 1 + D) if momentum else (ids, None)
        start += b.size
    return out


def _add(poly: dict, mono: tuple[int, ...], c: Fraction) -> None:
    key = tuple(sorted(mono))
    val = poly.get(key, Fraction(0)) + c
    if val:
        poly[key] = val
    else:
        poly.pop(key, None)


def _gram(x: np.ndarray, y: np.ndarray, transpose_first: bool):
    """Entry function of XᵀY (transpose_first) or XYᵀ, X and Y index arrays of equal shape."""
    def entry(ij):
        a, b = ij
        poly: dict = {}
        if transpose_first:
            for i in range(x.shape[0]):
                _add(poly, (int(x[i, a]), int(y[i, b])), Fraction(1))
        else:
            for j in range(x.shape[1]):
                _add(poly, (int(x[a, j]), int(y[b, j])), Fraction(1))
        return poly
    return entry


def _asym(f):
    def entry(ij):
        a, b = ij
        poly = dict(f((a, b)))
        for mono, c in f((b, a)).items():
            _add(poly, mono, -c)
        return poly
    return entry


def _pieces(model: Model, flow: AbstractFlow) -> list[_Piece]:
    """Matrix- and vector-valued pieces built from the blocks (see module docstring)."""
    momentum = flow.has_velocity
    out: list[_Piece] = []
    bvars = _block_vars(model, flow)
    for b in model.blocks:
        x, dx = bvars[b.name]
        nm = identifier(b.name)
        if len(b.shape) == 2:
            r, c = b.shape
            if not momentum:
                out.append(_Piece(f"{nm}ᵀ{nm}", f"{nm}.T @ {nm}", c, "sym", b.name,
                                  _gram(x, x, True)))
                out.append(_Piece(f"{nm}{nm}ᵀ", f"{nm} @ {nm}.T", r, "sym", b.name,
                                  _gram(x, x, False)))
                out.append(_Piece(f"colsum({nm})", f"sum({nm}, axis=0)", c, "vector", b.name,
                                  lambda k, x=x: {(int(x[i, k[0]]),): Fraction(1)
                                                  for i in range(x.shape[0])}))
                out.append(_Piece(f"rowsum({nm})", f"sum({nm}, axis=1)", r, "vector", b.name,
                                  lambda k, x=x: {(int(x[k[0], j]),): Fraction(1)
                                                  for j in range(x.shape[1])}))
                g1, g2 = _gram(x, x, True), _gram(x, x, False)
                out.append(_Piece(f"diag({nm}ᵀ{nm})", f"diag({nm}.T @ {nm})", c, "vector",
                                  b.name, lambda k, g=g1: g((k[0], k[0]))))
                out.append(_Piece(f"diag({nm}{nm}ᵀ)", f"diag({nm} @ {nm}.T)", r, "vector",
                                  b.name, lambda k, g=g2: g((k[0], k[0]))))
            else:
                d = "d" + nm
                out.append(_Piece(f"Asym({nm}ᵀ{d})", f"({nm}.T @ {d} - {d}.T @ {nm})", c,
                                  "antisym", b.name, _asym(_gram(x, dx, True))))
                out.append(_Piece(f"Asym({nm}{d}ᵀ)", f"({nm} @ {d}.T - {d} @ {nm}.T)", r,
                                  "antisym", b.name, _asym(_gram(x, dx, False))))
        elif len(b.shape) == 1 and not momentum:
            (ell,) = b.shape
            out.append(_Piece(f"diag({nm}²)", f"diag({nm}**2)", ell, "diag", b.name,
                              lambda ij, x=x: ({(int(x[ij[0]]), int(x[ij[0]])): Fraction(1)}
                                               if ij[0] == ij[1] else {})))
            out.append(_Piece(f"{nm}²", f"{nm}**2", ell, "vector", b.name,
                              lambda k, x=x: {(int(x[k[0]]), int(x[k[0]])): Fraction(1)}))
            out.append(_Piece(nm, nm, ell, "vector", b.name,
                              lambda k, x=x: {(int(x[k[0]]),): Fraction(1)}))
    return out


@dataclasses.dataclass(frozen=True)
class _Family:
    pieces: tuple[_Piece, ...]
    kind: str  # "sym", "antisym", "vector"
    size: int
    factor: tuple[int, ...]  # monomial multiplying every entry (time factor), () if none
    factor_uni: str
    factor_code: str

    def indices(self) -> list[tuple[int, ...]]:
        n = self.size
        if self.kind == "vector":
            return [(k,) for k in range(n)]
        if self.kind == "antisym":
            return [(a, b) for a in range(n) for b in range(a + 1, n)]
        return [(a, a) for a in range(n)] + [(a, b) for a in range(n) for b in range(a + 1, n)]

    def entries(self, index) -> list[dict]:
        out = []
        for p in self.pieces:
            poly = p.entry(index)
            if self.factor:
                poly = {tuple(sorted(m + self.factor)): c for m, c in poly.items()}
            out.append(poly)
        return out

    def names(self, lam: Sequence[Fraction]) -> tuple[str, str]:
        uni, code = "", ""
        for i, (p, c) in enumerate(zip(self.pieces, lam)):
            sign = "−" if c < 0 else "+"
            mag = abs(c)
            coef_u = "" if mag == 1 else f"{mag}·"
            coef_c = "" if mag == 1 else f"{mag}*"
            if i == 0:
                uni += ("−" if c < 0 else "") + coef_u + p.uni
                code += ("-" if c < 0 else "") + coef_c + p.code
            else:
                uni += f" {sign} {coef_u}{p.uni}"
                code += f" {'-' if c < 0 else '+'} {coef_c}{p.code}"
        uni = uni if len(self.pieces) == 1 and not self.factor_uni else f"({uni})"
        code = f"({code})"
        if self.factor_uni:
            uni, code = f"{self.factor_uni}·{uni}", f"({self.factor_code}*{code})"
        return uni, code


def _families(model: Model, flow: AbstractFlow) -> list[_Family]:
    pieces = _pieces(model, flow)
    fams: list[_Family] = []
    if flow.has_velocity:
        tau = flow.tau
        power = 3 if tau is None else (1 if tau else 0)
        tn = time_name(flow)
        factor = (0,) * power
        fu = "" if power == 0 else (tn if power == 1 else f"{tn}³")
        fc = "" if power == 0 else (tn if power == 1 else f"{tn}**3")
        anti = [p for p in pieces if p.kind == "antisym"]
        for p, q in itertools.combinations(anti, 2):
            if p.block != q.block and p.size == q.size and p.size >= 2:
                fams.append(_Family((p, q), "antisym", p.size, factor, fu, fc))
        return fams
    mats = [p for p in pieces if p.kind == "sym"]
    diags = [p for p in pieces if p.kind == "diag"]
    vecs = [p for p in pieces if p.kind == "vector"]
    for p, q in itertools.combinations(mats, 2):
        if p.block != q.block and p.size == q.size:
            fams.append(_Family((p, q), "sym", p.size, (), "", ""))
            for b in diags:
                if b.size == p.size:
                    fams.append(_Family((p, q, b), "sym", p.size, (), "", ""))
    sums = [p for p in vecs if p.uni.startswith(("colsum", "rowsum"))]
    squares = [p for p in vecs if not p.uni.startswith(("colsum", "rowsum")) and "²" in p.uni
               or p.uni.startswith("diag(")]
    for p, q in itertools.combinations(sums, 2):
        if p.block != q.block and p.size == q.size:
            fams.append(_Family((p, q), "vector", p.size, (), "", ""))
    for p in sums:
        for q in squares:
            if q.block != p.block and q.size == p.size and q.uni.startswith("diag("):
                fams.append(_Family((p, q), "vector", p.size, (), "", ""))
                for b in squares:
                    if b.size == p.size and "²" in b.uni and not b.uni.startswith("diag("):
                        fams.append(_Family((p, q, b), "vector", p.size, (), "", ""))
    for p in sums:  # a single block's sums (softmax layer: column sums, MATH.md §2.8)
        fams.append(_Family((p,), "vector", p.size, (), "", ""))
    return fams


class _Recogniser:
    """Matches family entries against the per-class law spaces."""

    def __init__(self, column_of: dict, class_of: np.ndarray, results: dict[int, _ClassResult],
                 position: dict[int, int]):
        self.column_of, self.class_of, self.results = column_of, class_of, results
        self.position = position  # column -> position inside its class

    def split(self, poly: dict) -> dict[int, np.ndarray] | None:
        """Class id → dense coefficient vector over the class's columns (None if a monomial is
        outside the search space)."""
        parts: dict[int, np.ndarray] = {}
        for mono, c in poly.items():
            col = self.column_of.get(mono)
            if col is None:
                return None
            g = int(self.class_of[col])
            if g not in parts:
                parts[g] = np.zeros(len(self.results[g].cols))
            parts[g][self.position[col]] += float(c)
        return parts

    def residual(self, parts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        out = {}
        for g, v in parts.items():
            B = self.results[g].basis
            out[g] = v - B.T @ (B @ v) if B.shape[0] else v
        return out

    def fit(self, fam: _Family) -> list[Fraction] | None:
        """The family's coefficients λ (first = 1), from its first entries, or None."""
        for index in fam.indices()[:3]:
            polys = fam.entries(index)
            if any(not p for p in polys):
                continue
            splits = [self.split(p) for p in polys]
            if any(s is None for s in splits):
                return None
            keys = sorted(set().union(*[s.keys() for s in splits]))
            cols = []
            for s in splits:
                res = self.residual(s)
                nrm = np.sqrt(sum(float(v @ v) for v in s.values()))
                cols.append(np.concatenate([res.get(g, np.zeros(len(self.results[g].cols)))
                                            for g in keys]) / nrm)
            B = np.stack(cols, axis=1)
            _, sv, vt = np.linalg.svd(B, full_matrices=False)
            sv = np.concatenate([sv, np.zeros(B.shape[1] - sv.size)])
            if sv[-1] > 1e-8 or (sv.size > 1 and sv[-2] < 1e-6):
                continue
            lam = vt[-1]
            norms = [np.sqrt(sum(float(v @ v) for v in s.values())) for s in splits]
            lam = lam / np.asarray(norms)
            if abs(lam[0]) < 1e-9 or np.any(np.abs(lam) < 1e-9):
                continue
            lam = lam / lam[0]
            fr = [Fraction(float(x)).limit_denominator(MAX_DENOMINATOR) for x in lam]
            if max(abs(float(f) - x) for f, x in zip(fr, lam)) > 1e-7:
                continue
            return fr
        return None

    def law(self, fam: _Family, lam, index) -> tuple[int, dict] | None:
        """(class, exact polynomial) if the entry is a nonzero law living in one class."""
        poly: dict = {}
        for c, p in zip(lam, fam.entries(index)):
            for mono, v in p.items():
                _add(poly, mono, c * v)
        if not poly:
            return None
        parts = self.split(poly)
        if parts is None or len(parts) != 1:
            return None
        (g, v), = parts.items()
        if not _in_span(v, self.results[g].basis):
            return None
        return g, poly


# ------------------------------------------------------------------------------ main function


@float64
def polynomial_laws(
    model: Model,
    flow: AbstractFlow | str | None = None,
    degree: int = 2,
    homogeneous: bool = False,
    *,
    seed: int = 0,
    count: Any = True,
    recognise: bool = True,
    rtol: float = DEFAULT_RTOL,
    min_gap: float = DEFAULT_MIN_GAP,
) -> LawBasis:
    """A basis of all polynomial conservation laws of ``model`` under ``flow`` of degree ≤
    ``degree`` (exactly ``degree`` with ``homogeneous=True``), in the flow's state variables.

    See the module docstring for the method. ``count``: ``True`` runs `count_laws(model, flow)`
    for the comparison, ``False``/``None`` skips it, or pass a `LawCount` already computed.
    ``recognise=False`` skips the matrix-family recogniser (echelon basis only).
    """
    t0 = time.perf_counter()
    flow = parse_flow(flow)
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 1:
        raise InputError(f"degree must be an integer >= 1, got {degree!r}")
    degree = int(degree)
    flow.validate(model)
    n = flow.state_dim(model)
    names = tuple(expression_names(model, flow))

    idx, monos = _monomial_table(n, degree, homogeneous)
    class_of, grading = _classes(model, flow, n, idx)
    pts = _Points(model, flow, seed)
    val = _Points(model, flow, seed + 7919, share=pts)
    results = _solve_classes(class_of, idx, pts, val, rtol)
    by_class = {int(class_of[r.cols[0]]): r for r in results}

    kept = [r.sigma_kept for r in results if r.sigma_kept is not None]
    dropped = [r.sigma_dropped for r in results if r.sigma_dropped is not None]
    sigma_kept = min(kept) if kept else None
    sigma_dropped = max(dropped) if dropped else None
    gap = gap_ratio(sigma_kept, sigma_dropped)
    failed = [r for r in results if not r.ok]
    accepted = [r.validation for r in results if r.ok and r.basis.shape[0]]
    status, reason = OK, ""
    if failed:
        status = AMBIGUOUS
        reason = (f"{len(failed)} class(es) still fail validation after {MAX_REFINE} refinements"
                  f" (residual {max(r.validation for r in failed):.1e})")
    elif gap < min_gap:
        status, reason = AMBIGUOUS, f"gap {gap:.1e} below {min_gap:.0e}"

    laws, groups = _readable_basis(model, flow, monos, class_of, by_class, names, n, recognise)
    laws = tuple(dataclasses.replace(law, model=model, flow=flow) for law in laws)
    n_ind, ind_gap = _independent_count(laws, n, model, flow, seed)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    law_count = None
    if count is True:
        law_count = count_laws(model, flow, seed=seed)
    elif count not in (None, False):
        law_count = count
    seconds_count = time.perf_counter() - t1 if count is True else 0.0

    return LawBasis(
        model=model.label, dims=tuple(model.dims), flow=flow.name,
        tau=flow.tau, metric=flow.metric_name, degree=degree,
        homogeneous=bool(homogeneous), state_dim=n, variables=names, laws=laws,
        families=tuple(groups), n_independent=n_ind, independence_gap=ind_gap,
        count=law_count, status=status, reason=reason, sigma_kept=sigma_kept,
        sigma_dropped=sigma_dropped, validation_residual=max(accepted) if accepted else 0.0,
        monomials=len(monos), classes=len(results),
        largest_class=max(len(r.cols) for r in results), grading=grading,
        points=max(r.points for r in results), seconds=seconds, seconds_count=seconds_count,
    )


def _readable_basis(model, flow, monos, class_of, by_class, names, n, recognise):
    """Per class: recognised family entries first, then products of lower-degree laws, then
    echelon rows, each kept only if independent of those already chosen (see module docstring).
    Returns the laws (families first, then products, then echelon rows by pivot) and the
    recognised groups."""
    column_of = {m: i for i, m in enumerate(monos)}
    position = {}
    for r in by_class.values():
        for j, c in enumerate(r.cols):
            position[int(c)] = j
    chosen: dict[int, list[np.ndarray]] = {g: [] for g in by_class}
    entries: list[tuple[tuple, Law, dict | None]] = []  # (sort key, law, exact poly or None)
    groups: list[FamilyGroup] = []
    seen: set[tuple] = set()
    rec = _Recogniser(column_of, class_of, by_class, position)

    def vector(g: int, poly: dict) -> np.ndarray:
        vec = np.zeros(len(by_class[g].cols))
        for mono, c in poly.items():
            vec[position[column_of[mono]]] = float(c)
        return vec

    if recognise:
        for f_id, fam in enumerate(_families(model, flow)):
            lam = rec.fit(fam)
            if lam is None:
                continue
            uni, code = fam.names(lam)
            found = []
            for i_idx, index in enumerate(fam.indices()):
                hit = rec.law(fam, lam, index)
                if hit is None:
                    continue
                g, poly = hit
                key = tuple(sorted(poly.items()))
                vec = vector(g, poly)
                if key in seen or not _independent(vec, chosen[g]):
                    continue
                chosen[g].append(vec)
                seen.add(key)
                ms = sorted(poly, key=lambda m: column_of[m])
                law = _make_law(ms, [poly[m] for m in ms], True, names, n, uni, code, index)
                entries.append(((0, f_id, i_idx), law, poly))
                found.append(index)
            if found:
                groups.append(FamilyGroup(uni, code, fam.kind, fam.size, tuple(found)))

    max_deg = {g: max(len(monos[int(c)]) for c in r.cols) for g, r in by_class.items()}
    for d in sorted(set(max_deg.values())):
        todo = [g for g in sorted(by_class) if max_deg[g] == d
                and len(chosen[g]) < by_class[g].basis.shape[0]]
        if not todo:
            continue
        if recognise:  # products of exact lower-degree laws
            factors = [(law, poly) for _, law, poly in entries
                       if poly is not None and law.degree < d]
            for (a, pa), (b, pb) in itertools.combinations_with_replacement(factors, 2):
                if a.degree + b.degree > d:
                    continue
                poly: dict = {}
                for ma, ca in pa.items():
                    for mb, cb in pb.items():
                        _add(poly, ma + mb, ca * cb)
                parts = rec.split(poly) if poly else None
                if not parts or len(parts) != 1:
                    continue
                (g, _), = parts.items()
                if g not in todo or len(chosen[g]) == by_class[g].basis.shape[0]:
                    continue
                vec = vector(g, poly)
                if not _in_span(vec, by_class[g].basis) or not _independent(vec, chosen[g]):
                    continue
                chosen[g].append(vec)
                ms = sorted(poly, key=lambda m: column_of[m])
                law = _make_law(ms, [poly[m] for m in ms], True, names, n,
                                factors=((a.label, a.code), (b.label, b.code)))
                entries.append(((1, column_of[ms[0]], 0), law, None))
        for g in todo:
            r = by_class[g]
            K = r.basis.shape[0]
            if len(chosen[g]) == K:
                continue
            R, pivots = _rref(r.basis, 1e-8)
            for row, piv in zip(R, pivots):
                if len(chosen[g]) == K:
                    break
                if not _independent(row, chosen[g]):
                    continue
                chosen[g].append(row)
                nz = np.flatnonzero(row)
                ms = [monos[int(r.cols[j])] for j in nz]
                fr = _rationalise(row[nz])
                exact = False
                if fr is not None:
                    exact_vec = np.zeros_like(row)
                    exact_vec[nz] = [float(f) for f in fr]
                    exact = _in_span(exact_vec, r.basis, 1e-10)
                coefs = fr if exact else [float(x) for x in row[nz]]
                law = _make_law(ms, coefs, exact, names, n)
                poly = dict(zip(ms, fr)) if exact else None
                entries.append(((2, int(r.cols[piv]), 0), law, poly))
    laws = tuple(law for _, law, _ in sorted(entries, key=lambda t: t[0]))
    return laws, groups


def _independent(vec: np.ndarray, chosen: list[np.ndarray], tol: float = 1e-8) -> bool:
    if not chosen:
        return bool(np.linalg.norm(vec) > 0)
    Q, _ = np.linalg.qr(np.stack(chosen, axis=1))
    r = vec - Q @ (Q.T @ vec)
    return bool(np.linalg.norm(r) > tol * np.linalg.norm(vec))


def _make_law(monos, coefs, exact, names, n, family=None, code=None, index=None,
              factors=None) -> Law:
    return Law(
        expression=_expression(monos, coefs, names), monomials=tuple(monos),
        coefficients=tuple(coefs), exact=exact, variables=names, state_dim=n,
        family=family, family_code=code, index=None if index is None else tuple(index),
        factors=factors,
    )


def law_gradients(laws: Sequence[Law], z: np.ndarray) -> np.ndarray:
    """Gradients of polynomial laws at one state, shape (K, n), computed from their monomials."""
    n = z.shape[0]
    G = np.zeros((len(laws), n + 1))
    zext = np.concatenate([np.asarray(z, dtype=np.float64), [1.0]])
    for i, law in enumerate(laws):
        for mono, c in zip(law.monomials, law.coefficients):
            c = float(c)
            for t in range(len(mono)):
                rest = mono[:t] + mono[t + 1 :]
                G[i, mono[t]] += c * float(np.prod(zext[list(rest)])) if rest else c
    return G[:, :n]


def gradient_cut(G: np.ndarray, rtol: float = DEFAULT_RTOL):
    """Rank cut of a stack of gradients (K, n), each row divided by its norm (a law's gradient is
    not a cancellation, so its own norm is its scale); singular values only."""
    G = np.asarray(G, dtype=np.float64)
    if G.size == 0:
        return cut_spectrum(np.zeros(0), rtol)
    rows = normalise_rows(G, np.linalg.norm(G, axis=1))
    return cut_spectrum(np.linalg.svd(rows, compute_uv=False), rtol)


def _independent_count(laws, n, model, flow, seed, points: int = 3) -> tuple[int, float]:
    """Rank of the laws' gradients at random points (the largest over the points) and its gap."""
    if not laws:
        return 0, float("inf")
    Z = np.asarray(flow.sample_points(model, np.random.default_rng([seed, 104729]), points))
    ranks, gaps = [], []
    for z in Z:
        cut = gradient_cut(law_gradients(laws, z))
        ranks.append(cut.rank)
        gaps.append(cut.gap)
    r = max(ranks)
    return r, min(g for rk, g in zip(ranks, gaps) if rk == r)
