"""Two-layer input-convex net g = U σ(V x + b), U ≥ 0 (MATH.md §4.4).

Meant for the mixed metric flow: entropy mirror on U (U' = −U ⊙ ∇_U E), Euclidean on V and b.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from conflow.models.base import (
    Model,
    ParamBlock,
    blocks_from_shapes,
    check_dims,
    split_flat,
    standard_init,
)
from conflow.precision import float64

Array = jax.Array


def split_icnn(theta: Array, blocks: Sequence[ParamBlock]) -> tuple[Array, Array, Array | None]:
    """θ ↦ (U (n3, n2), V (n2, n1), b (n2,) or None)."""
    arrs = split_flat(theta, blocks)
    return arrs[0], arrs[1], (arrs[2] if len(arrs) == 3 else None)


def icnn_phi(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """φ = (vec(u_k [v_k; b_k]ᵀ))_{k=1..n2}, shape ``(n2 n3 (n1 [+1]),)``.

    u_k = U[:,k] ∈ R^{n3}, v_k = V[k,:] ∈ R^{n1}; with bias, b_k is appended to v_k. Row-major over
    [k, i, j]: ``φ[k, i, j] = U[i,k] · [V | b][k, j]``.
    """
    u, v, b = split_icnn(theta, blocks)
    vb = v if b is None else jnp.concatenate([v, b[:, None]], axis=1)
    return jnp.einsum("ik,kj->kij", u, vb).ravel()


def icnn_forward(params: dict[str, Array], x: Array,
                 activation: Callable[[Array], Array] = jax.nn.relu) -> Array:
    """The ICNN g(x) = U σ(V x + b), U (n3, n2), V (n2, n1); ``x`` (N, n1) → (N, n3)."""
    h = x @ params["V"].T
    if "b" in params:
        h = h + params["b"]
    return activation(h) @ params["U"].T


@float64
def icnn(n1: int, n2: int, n3: int, bias: bool = False) -> Model:
    """2-layer ICNN, input n1, hidden n2, output n3: blocks ``U`` (n3×n2, positive), ``V`` (n2×n1),
    ``b`` (n2,) if ``bias``. D = n2 (n3 + n1 [+1]). See `icnn_phi`, `icnn_laws`.
    """
    n1, n2, n3 = check_dims("icnn", (n1, n2, n3), exact=3, meaning="(n1, n2, n3)")
    shapes = [("U", (n3, n2)), ("V", (n2, n1))] + ([("b", (n2,))] if bias else [])
    blocks = blocks_from_shapes(shapes, positive=("U",))
    return Model(
        name="icnn",
        dims=(n1, n2, n3),
        phi=functools.partial(icnn_phi, blocks=blocks),
        blocks=blocks,
        bias=bool(bias),
        forward=icnn_forward,
        input_dim=n1,
        activation="relu",
        init=functools.partial(standard_init, blocks, fan_in_axis=1),
    )
