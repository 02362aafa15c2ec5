"""Scalar monomial toy φ(x) = x_1 x_2 ⋯ x_D (MATH.md §2.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from conflow.models.base import Model, blocks_from_shapes, check_dims
from conflow.precision import float64

Array = jax.Array


def product_phi(theta: Array) -> Array:
    """φ(x) = [x_1 x_2 ⋯ x_D], shape ``(1,)``."""
    return jnp.prod(theta, keepdims=True)


def product_forward(params: dict[str, Array], x: Array) -> Array:
    """g(x) = (x_1⋯x_D)·x for the parameter block ``"x"``."""
    return jnp.prod(params["x"]) * x


def product_init(rng: np.random.Generator, scale: float, D: int) -> dict[str, np.ndarray]:
    """x ~ N(1, 0.1²)·scale entrywise (away from the singular set where some x_j = 0)."""
    return {"x": scale * (1.0 + 0.1 * rng.standard_normal(D))}


@float64
def product(D: int) -> Model:
    """The product x_1⋯x_D (d = 1): D − 1 laws wherever ∇φ ≠ 0. Block ``"x"`` of shape (D,)."""
    (D,) = check_dims("product", (D,), exact=1, meaning="(D)")
    return Model(
        name="product",
        dims=(D,),
        phi=product_phi,
        blocks=blocks_from_shapes([("x", (D,))]),
        forward=product_forward,
        input_dim=1,
        init=lambda rng, scale: product_init(rng, scale, D),
    )
