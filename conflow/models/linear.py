"""Deep linear network: φ(θ) = U_1 U_2 ⋯ U_q (MATH.md §2.2–2.3)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from conflow.models.base import (
    Model,
    ParamBlock,
    blocks_from_shapes,
    check_dims,
    split_flat,
)
from conflow.precision import float64

Array = jax.Array


def linear_phi(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """φ(θ) = vec(U_1 U_2 ⋯ U_q), row-major, shape ``(n_0 n_q,)``.

    θ, shape ``(D,)``, holds U_i ∈ R^{n_{i−1}×n_i} as consecutive row-major blocks.
    """
    mats = split_flat(theta, blocks)
    return functools.reduce(jnp.matmul, mats).ravel()


def linear_forward(params: dict[str, Array], x: Array) -> Array:
    """The deep linear net g(x) = U_1 U_2 ⋯ U_q x, U_i of shape (n_{i−1}, n_i); ``x`` (N, n_q) →
    (N, n_0)."""
    q = sum(1 for k in params if k.startswith("U"))
    h = x
    for i in range(q, 0, -1):
        h = h @ params[f"U{i}"].T
    return h


@float64
def linear(dims: Sequence[int]) -> Model:
    """Deep linear net with dims ``[n_0, …, n_q]`` (q ≥ 2 matrices).

    Blocks ``U1..Uq``, U_i ∈ R^{n_{i−1}×n_i}; D = Σ n_{i−1} n_i; φ = vec(U_1⋯U_q), d = n_0 n_q.
    Closed-form laws: U_iᵀU_i − U_{i+1}U_{i+1}ᵀ for each hidden layer (Arora et al.; MATH.md §2.3).
    """
    dims = check_dims("linear", dims, at_least=3, meaning="[n0, n1, ..., nq] (at least 2 matrices)")
    blocks = blocks_from_shapes(
        [(f"U{i}", (dims[i - 1], dims[i])) for i in range(1, len(dims))]
    )
    return Model(
        name="linear",
        dims=dims,
        phi=functools.partial(linear_phi, blocks=blocks),
        blocks=blocks,
        bias=False,
        forward=linear_forward,
        input_dim=dims[-1],
    )
