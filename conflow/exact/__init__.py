"""Exact (certified) counts for polynomial models: sparse polynomials, jaxpr → polynomials, and a
Lie-trace engine that ranks brackets modulo 61-bit primes at random points (Schwartz–Zippel).

- `polynomial_form(phi, D)`: the exact polynomials of a JAX φ (refuses non-polynomial primitives);
- fields: `gradient_fields`, `scale_coordinates` (entropy metric), `momentum_fields` (phase space);
- `exact_lie_trace(fields, n)` → `ExactTrace`; `exact_count_laws(model, ...)` does all three steps.
"""

from .extract import jaxpr_polynomials, polynomial_form
from .polynomial import (
    MAX_DEGREE,
    Poly,
    bracket,
    evaluate_field,
    field_add,
    field_degree,
    field_mul,
    field_scale,
    gradient_fields,
    momentum_fields,
    monomial,
    monomial_degree,
    monomial_exponents,
    scale_coordinates,
    shift_variables,
)
from .trace import (
    DEFAULT_PRIMES,
    ExactRun,
    ExactTrace,
    exact_count_laws,
    exact_lie_trace,
    model_fields,
)

__all__ = [
    "DEFAULT_PRIMES",
    "ExactRun",
    "ExactTrace",
    "MAX_DEGREE",
    "Poly",
    "bracket",
    "evaluate_field",
    "exact_count_laws",
    "exact_lie_trace",
    "field_add",
    "field_degree",
    "field_mul",
    "field_scale",
    "gradient_fields",
    "jaxpr_polynomials",
    "model_fields",
    "momentum_fields",
    "monomial",
    "monomial_degree",
    "monomial_exponents",
    "polynomial_form",
    "scale_coordinates",
    "shift_variables",
]
