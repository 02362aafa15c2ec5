"""Exact (certified) counts for polynomial models: sparse polynomials, jaxpr → polynomials, and a
Lie-trace engine that ranks brackets modulo 61-bit primes at random points (Schwartz–Zippel).

- `polynomial_form(phi, D)`: the exact polynomials of a JAX φ (refuses non-polynomial primitives;
  float constants are read as the binary rationals they are);
- `region_polynomial(phi, D, theta0)`: for a piecewise-polynomial φ (ReLU, leaky ReLU, abs, max
  pooling, …) the polynomial it is on the activation region of θ0;
- fields: `gradient_fields`, `scale_coordinates` (entropy metric), `momentum_fields` (phase space);
- `exact_lie_trace(fields, n)` → `ExactTrace`; `evaluated_lie_trace(family)` → `ExactTrace` for
  polynomial fields too large to expand (the numeric engine's bracket programs run modulo
  primes). Counting a model under a flow (φ's polynomials →
  the flow's fields → the trace) is `conflow.laws.exact_count.exact_count_laws`.
"""

from conflow.exact.evaluated import evaluated_lie_trace
from conflow.exact.extract import (
    SWITCHES,
    Region,
    RegionForm,
    jaxpr_polynomials,
    polynomial_form,
    region_polynomial,
)
from conflow.exact.polynomial import (
    MAX_DEGREE,
    Poly,
    binary_rational,
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
from conflow.exact.trace import (
    DEFAULT_PRIMES,
    ExactRun,
    ExactTrace,
    exact_lie_trace,
)

__all__ = [
    "DEFAULT_PRIMES",
    "ExactRun",
    "ExactTrace",
    "MAX_DEGREE",
    "Poly",
    "Region",
    "RegionForm",
    "SWITCHES",
    "binary_rational",
    "bracket",
    "evaluate_field",
    "evaluated_lie_trace",
    "exact_lie_trace",
    "field_add",
    "field_degree",
    "field_mul",
    "field_scale",
    "gradient_fields",
    "jaxpr_polynomials",
    "momentum_fields",
    "monomial",
    "monomial_degree",
    "monomial_exponents",
    "polynomial_form",
    "region_polynomial",
    "scale_coordinates",
    "shift_variables",
]
