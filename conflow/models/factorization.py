"""Two-factor models: matrix factorisation U Vᵀ (Euclidean, MATH.md §2.2) and NMF U V (entropy
mirror flow on the positive orthant, MATH.md §4.2)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax

from conflow.models.base import (
    Model,
    ParamBlock,
    blocks_from_shapes,
    check_dims,
    split_flat,
)
from conflow.precision import float64

Array = jax.Array


def factorization_phi(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """φ(θ) = vec(U Vᵀ), row-major, shape ``(n m,)``; U ∈ R^{n×r}, V ∈ R^{m×r}."""
    u, v = split_flat(theta, blocks)
    return (u @ v.T).ravel()


def factorization_forward(params: dict[str, Array], x: Array) -> Array:
    """The two-layer linear net g(x) = U Vᵀ x; ``x`` (N, m) → (N, n)."""
    return (x @ params["V"]) @ params["U"].T


def nmf_forward(params: dict[str, Array], x: Array | None = None) -> Array:
    """NMF's reconstruction U V, shape (n1, n3); ``x`` is ignored."""
    return params["U"] @ params["V"]


@float64
def factorization(n: int, r: int, m: int) -> Model:
    """Two-layer linear net / matrix factorisation g = U Vᵀ x: U ∈ R^{n×r} ``"U"``, V ∈ R^{m×r} ``"V"``.

    D = (n+m) r, d = n m. Closed-form laws: UᵀU − VᵀV (MATH.md §2.2).
    """
    n, r, m = check_dims("factorization", (n, r, m), exact=3, meaning="(n, r, m)")
    blocks = blocks_from_shapes([("U", (n, r)), ("V", (m, r))])
    return Model(
        name="factorization",
        dims=(n, r, m),
        phi=functools.partial(factorization_phi, blocks=blocks),
        blocks=blocks,
        forward=factorization_forward,
        input_dim=m,
    )


def nmf_phi(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """φ(θ) = vec(U V), row-major, shape ``(n1 n3,)``; U ∈ R^{n1×r}, V ∈ R^{r×n3}."""
    u, v = split_flat(theta, blocks)
    return (u @ v).ravel()


@float64
def nmf(n1: int, r: int, n3: int) -> Model:
    """Non-negative matrix factorisation X ≈ U V, U ∈ R^{n1×r}, V ∈ R^{r×n3}, both positive blocks.

    Meant for the entropy mirror flow θ' = −θ ⊙ ∇E (MATH.md §4.1–4.2); D = (n1+n3) r, d = n1 n3.
    Closed-form laws (for that flow, not for Euclidean GF): Σ_i U[i,k] − Σ_j V[k,j].
    """
    n1, r, n3 = check_dims("nmf", (n1, r, n3), exact=3, meaning="(n1, r, n3)")
    blocks = blocks_from_shapes([("U", (n1, r)), ("V", (r, n3))], positive=("U", "V"))
    return Model(
        name="nmf",
        dims=(n1, r, n3),
        phi=functools.partial(nmf_phi, blocks=blocks),
        blocks=blocks,
        forward=nmf_forward,
        takes_inputs=False,
    )
