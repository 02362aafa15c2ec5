"""Scalar monomial toy φ(x) = x_1 x_2 ⋯ x_D (MATH.md §2.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from conflow.models.base import Model, blocks_from_shapes, check_dims

Array = jax.Array


def product_phi(theta: Array) -> Array:
    """φ(x) = [x_1 x_2 ⋯ x_D], shape ``(1,)``."""
    return jnp.prod(theta, keepdims=True)


def product(D: int) -> Model:
    """The product x_1⋯x_D (d = 1): D − 1 laws wherever ∇φ ≠ 0. Block ``"x"`` of shape (D,)."""
    (D,) = check_dims("product", (D,), exact=1, meaning="(D)")
    return Model(
        name="product",
        dims=(D,),
        phi=product_phi,
        blocks=blocks_from_shapes([("x", (D,))]),
    )
