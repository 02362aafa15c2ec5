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
from jaxtyping import Float

from conflow.precision import float64

Array = jax.Array
#: A vector field on R^n.
Field = Callable[[Float[Array, " n"]], Float[Array, " n"]]
#: A generator family G(z, a) on R^n with m coefficients.
Family = Callable[[Float[Array, " n"], Float[Array, " m"]], Float[Array, " n"]]


@float64
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


@float64
def bracket_chain(family: Family, depth: int) -> Callable[[Array, Array], tuple[Array, Array]]:
    """All depths of one right-nested bracket chain, with their cancellation scales.

    Returns ``f(z, coeffs) -> (values, scales)`` with ``z`` of shape ``(n,)``, ``coeffs`` of shape
    ``(depth + 1, m)``, ``values`` of shape ``(depth + 1, n)`` and ``scales`` of shape
    ``(depth + 1,)``. Row j is the depth-j element of the chain ending in G(a_depth):

        values[0] = G(a_depth)(z),
        values[j] = [G(a_{depth-j}), Y_{j-1}](z)  with  Y_{j-1} the depth-(j−1) element,

    i.e. values[j] = ad_{G(a_{depth-j})} ⋯ ad_{G(a_{depth-1})} G(a_depth) (z): a generic element of
    level j for random coefficients. One evaluation yields every level up to ``depth`` (the inner
    values are computed anyway as primals of the outer Jacobian–vector products), so one compiled
    program serves all of them.

    scales[j] = ‖∂Y·X‖ + ‖∂X·Y‖ for the outermost bracket [X, Y] of row j (j ≥ 1), and ‖G(a)(z)‖
    for j = 0 (or ``family.scale(z, a)`` for a family that computes its values with
    cancellations of its own and says how large the cancelled terms were,
    `conflow.engine.deep_trace.LevelSum`): the size of the two terms whose difference is the
    value. A bracket that vanishes identically (e.g. [v, v] for a scalar φ) is at rounding
    level *relative to its scale*, which is how zero brackets are recognised (DESIGN.md,
    "numerical pitfalls").
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")

    own_scale = getattr(family, "scale", None)

    def f(z: Array, coeffs: Array) -> tuple[Array, Array]:
        def member(j: int) -> Field:
            # the state's dtype rules (a family may close over float64 constants)
            return lambda x: family(x, coeffs[j]).astype(x.dtype)

        def element(j: int) -> Callable:
            # x ↦ (depth-j element at x, (lower elements at x, their scales, own scale))
            if j == 0:
                def first(x):
                    value = member(depth)(x)
                    return value, ((), (), jnp.linalg.norm(value))

                return first
            inner, u = element(j - 1), member(depth - j)

            def bracketed(x):
                ux = u(x)
                vx, dv_u, (values, scales, scale) = jax.jvp(inner, (x,), (ux,), has_aux=True)
                _, du_v = jax.jvp(u, (x,), (vx,))
                own = jnp.linalg.norm(dv_u) + jnp.linalg.norm(du_v)
                return dv_u - du_v, (values + (vx,), scales + (scale,), own)

            return bracketed

        value, (values, scales, scale) = element(depth)(z)
        scales = jnp.stack(scales + (scale,))
        if own_scale is not None:  # evaluated once, at z: not inside the nested products
            scales = scales.at[0].set(own_scale(z, coeffs[depth]).astype(z.dtype))
        return jnp.stack(values + (value,)), scales

    return f
