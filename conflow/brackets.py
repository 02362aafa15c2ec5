"""Lie brackets of vector fields by forward-mode autodiff.

Convention (MATH.md §1.4): for vector fields u, v on R^n,

    [u, v](z) = ∂v(z)·u(z) − ∂u(z)·v(z),

computed with two Jacobian–vector products. The sign is irrelevant for spans. For linear fields
u(z) = Az, v(z) = Bz this gives [u, v](z) = (BA − AB)z.

A generator family is a map G(z, a) = Σ_j a_j χ_j(z), linear in the coefficients a ∈ R^m. The
level-k elements of the Lie algebra are spanned by right-nested brackets

    ad_{G(a_0)} ad_{G(a_1)} ⋯ ad_{G(a_{k-1})} G(a_k),      ad_X Y = [X, Y],

which are multilinear in (a_0, …, a_k); random coefficients give generic elements of that image.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
Field = Callable[[Array], Array]
Family = Callable[[Array, Array], Array]


def lie_bracket(u: Field, v: Field) -> Field:
    """The vector field [u, v] = ∂v·u − ∂u·v (shapes: fields map ``(n,)`` to ``(n,)``)."""

    def w(z: Array) -> Array:
        return _bracket_terms(u, v, z)[0]

    return w


def _bracket_terms(u: Field, v: Field, z: Array) -> tuple[Array, Array, Array]:
    """Return ([u, v](z), ∂v(z)·u(z), ∂u(z)·v(z))."""
    uz = u(z)
    vz, dv_u = jax.jvp(v, (z,), (uz,))
    _, du_v = jax.jvp(u, (z,), (vz,))
    return dv_u - du_v, dv_u, du_v


def nested_bracket(family: Family, depth: int) -> Callable[[Array, Array], tuple[Array, Array]]:
    """Right-nested bracket of ``depth + 1`` members of a family, with its cancellation scale.

    Returns ``f(z, coeffs) -> (value, scale)`` with ``z`` of shape ``(n,)`` and ``coeffs`` of
    shape ``(depth + 1, m)``, where

        value = ad_{G(a_0)} ⋯ ad_{G(a_{depth-1})} G(a_depth) (z),
        scale = ‖∂Y·X‖ + ‖∂X·Y‖ for the outermost bracket [X, Y]  (depth ≥ 1),
        scale = ‖G(a_0)(z)‖                                       (depth = 0).

    ``scale`` is the size of the two terms whose difference is the value: a bracket that vanishes
    identically (e.g. [v, v] for a scalar φ) has ``value`` at rounding level *relative to scale*,
    which is how zero brackets are recognised (DESIGN.md, "numerical pitfalls").
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")

    def f(z: Array, coeffs: Array) -> tuple[Array, Array]:
        def member(j: int) -> Field:
            return lambda x: family(x, coeffs[j])

        inner = member(depth)
        if depth == 0:
            value = inner(z)
            return value, jnp.linalg.norm(value)
        for j in range(depth - 1, 0, -1):
            inner = lie_bracket(member(j), inner)
        value, t1, t2 = _bracket_terms(member(0), inner, z)
        return value, jnp.linalg.norm(t1) + jnp.linalg.norm(t2)

    return f
