"""Single- and multi-head attention through φ = (Q_hᵀK_h, V_hᵀO_h) per head (MATH.md §2.7).

One head: g(θ, X) = softmax(X QᵀK Xᵀ) X Vᵀ O with X ∈ R^{N×dim} (N tokens, rows), Q, K, V, O ∈
R^{d1×dim}, softmax row-wise (P3 Thm 3.8). The output is a function of φ = (QᵀK, VᵀO); with N ≥ 2
tokens and V_ℓ = R^n, W_θ = range ∂φ(θ)ᵀ on Θ_att. Each factor is a two-layer linear net
(U, V) = (Qᵀ, Kᵀ) with n = m = dim, r = d1 (MATH.md §2.2), so the laws are QQᵀ − KKᵀ and VVᵀ − OOᵀ
and the count is d1(d1 + 1) when d1 ≤ 2·dim (2 × (2·dim·d1 − dim(2·dim − 1)) otherwise).

H heads: g = Σ_h softmax(X Q_hᵀK_h Xᵀ) X V_hᵀ O_h, one (QᵀK, VᵀO) pair per head, laws per head
(completeness for several heads is open in P3; `conflow.from_model` on `attention_apply` counts the
real multi-head layer for comparison). No 1/√d1 scaling (it is absorbed in Q).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError
from conflow.models.base import (
    Model,
    ParamBlock,
    blocks_from_shapes,
    check_dims,
    split_flat,
)
from conflow.precision import float64

Array = jax.Array

NAMES = ("Q", "K", "V", "O")


def attention_blocks(dim: int, d1: int, heads: int) -> tuple[ParamBlock, ...]:
    """Blocks Q, K, V, O: shape (d1, dim) for one head, (heads, d1, dim) for several."""
    shape = (d1, dim) if heads == 1 else (heads, d1, dim)
    return blocks_from_shapes([(n, shape) for n in NAMES])


def attention_heads(theta: Array, blocks: Sequence[ParamBlock]) -> list[Array]:
    """θ ↦ [Q, K, V, O], each of shape (H, d1, dim)."""
    arrs = split_flat(theta, blocks)
    return [a if a.ndim == 3 else a[None] for a in arrs]


def attention_phi(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """φ = (vec Q_hᵀK_h, vec V_hᵀO_h) for h = 1..H, head-major; d = 2·H·dim²."""
    q, k, v, o = attention_heads(theta, blocks)
    qk = jnp.einsum("hia,hib->hab", q, k)
    vo = jnp.einsum("hia,hib->hab", v, o)
    return jnp.concatenate([qk, vo], axis=1).ravel()


@float64
def attention(dim: int, d1: int, heads: int = 1) -> Model:
    """Attention layer on tokens of width ``dim``, ``heads`` heads of key width ``d1`` each.

    Blocks Q, K, V, O (see `attention_blocks`); φ: `attention_phi`; closed-form laws (for
    comparison, `conflow.reference.gradient_laws`): Q_hQ_hᵀ − K_hK_hᵀ and V_hV_hᵀ − O_hO_hᵀ,
    d1(d1 + 1) per head when d1 ≤ 2·dim. CLI: ``attention dim,d1[,heads]``.
    """
    dims = check_dims("attention", (dim, d1, heads), exact=3, meaning="(dim, d1, heads)")
    dim, d1, heads = dims
    blocks = attention_blocks(dim, d1, heads)
    return Model(
        name="attention",
        dims=dims if heads > 1 else (dim, d1),
        phi=functools.partial(attention_phi, blocks=blocks),
        blocks=blocks,
    )


def attention_from_dims(dims: Sequence[int]) -> Model:
    """``(dim, d1)`` or ``(dim, d1, heads)`` → `attention` (the CLI's DIMS)."""
    if len(dims) not in (2, 3):
        raise InputError(
            f"attention needs 2 or 3 dims (dim, d1[, heads]), got {len(dims)}: "
            f"{','.join(map(str, dims))}"
        )
    return attention(*dims)


# ------------------------------------------------------------------------------------------------
# the layer itself, for `conflow.from_model`
# ------------------------------------------------------------------------------------------------


def attention_params(dim: int, d1: int, heads: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Example parameters {Q, K, V, O} with the shapes of `attention_blocks` (Gaussian)."""
    rng = np.random.default_rng(seed)
    shape = (d1, dim) if heads == 1 else (heads, d1, dim)
    return {n: rng.standard_normal(shape) for n in NAMES}


def attention_apply(params: dict[str, Array], x: Array) -> Array:
    """The layer on one sequence x ∈ R^{N×dim}: Σ_h softmax(x Q_hᵀK_h xᵀ) x V_hᵀ O_h, (N, dim)."""
    q, k, v, o = (params[n] if params[n].ndim == 3 else params[n][None] for n in NAMES)
    scores = jnp.einsum("na,hia,hib,mb->hnm", x, q, k, x)
    weights = jax.nn.softmax(scores, axis=-1)
    values = jnp.einsum("mb,hib,hic->hmc", x, v, o)
    return jnp.einsum("hnm,hmc->nc", weights, values)
