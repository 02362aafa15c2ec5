"""Result types of `polynomial_laws`: `Law`, `FamilyGroup`, `LawBasis`, and the polynomial
helpers they use (JAX function, sympy expression and expression-language text of a law)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine.rank import gap_ratio
from conflow.errors import InputError
from conflow.flows import AbstractFlow
from conflow.models.base import Model
from conflow.precision import float64
from conflow.status import Status

Array = jax.Array

OK = Status.OK


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
        state_dim: D (gradient flows), D + 1 (with weight decay) or 2D + 1 (momentum flows).
        model, flow: what the law was found for (set by `polynomial_laws`); they make the law
            callable on the model's own parameters.

    Call it as ``law(params)`` (gradient flows), ``law(t, params)`` (gradient flows with weight
    decay) or ``law(t, params, velocity)`` (momentum flows) on the parameters the way
    `Model.to_pytree` gives them (the dict of named blocks,
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
        """P on the model's parameters: ``law(params)``, ``law(t, params)`` (weight decay) or
        ``law(t, params, velocity)``."""
        if self.model is None:
            raise InputError("this Law has no model: evaluate it on the flat state with law.fn(z)")
        return self.fn(self.state(*args))

    def as_monitor(self) -> Callable:
        """The law as a `conflow.simulate` / `conflow.train` monitor: ``h(params)``, or
        ``h(params, velocity, t)`` for momentum flows and weight decay."""
        if self.model is None:
            raise InputError("this Law has no model to be monitored on")
        if not self.flow.has_time:
            return lambda params: self(params)
        if not self.flow.has_velocity:
            return lambda params, velocity, t: self(t, params)
        return lambda params, velocity, t: self(t, params, velocity)

    def state(self, *args: Any) -> Array:
        """The flat state z of ``(params)``, ``(t, params)`` or ``(t, params, velocity)``."""
        model, flow = self.model, self.flow
        if not flow.has_time:
            if len(args) != 1:
                raise InputError(f"a gradient-flow law takes (params), got {len(args)} arguments")
            return model.from_pytree(args[0])
        if not flow.has_velocity:
            if len(args) != 2:
                raise InputError(f"a law of a flow with weight decay takes (t, params), got "
                                 f"{len(args)} arguments")
            t, params = args
            return jnp.concatenate([jnp.reshape(flow.time_variable(t), (1,)),
                                    model.from_pytree(params)])
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
        weight_decay: the flow's weight decay λ (``"function"`` for λ(t); ``None`` without).
        time_note: what the time variable s of the laws stands for, e.g. ``s = exp(λ t)``.
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
    weight_decay: float | str | None = None
    time_note: str = ""

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
            "weight_decay": self.weight_decay,
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
        if self.weight_decay is not None:
            flow += (" λ(t)" if isinstance(self.weight_decay, str)
                     else f" λ={self.weight_decay:g}")
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
            lines.append(f"  {self.time_note or 's = exp(τ t)'}")
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


def law_expression(monomials, coefficients, names) -> str:
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
