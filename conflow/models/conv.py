"""Convolutional ReLU block through its path-lifting (MATH.md §2.5, P3 Thm 3.6).

g(θ, x) = ( Σ_{j=1}^{c1} u_{k,j} ⋆ σ( Σ_{i=1}^{c0} v_{j,i} ⋆ x^{(i)} (+ b_j) ) )_{k=1..c2},
σ = ReLU, 1-D filters u_{k,j} ∈ R^{n_u}, v_{j,i} ∈ R^{n_v};
D = c1(c2 n_u + c0 n_v) (+ c1 with biases).

On a region where every hidden position keeps its activation, the output is linear in the products
u_{k,j}[a] · v_{j,i}[b] (and u_{k,j}[a] · b_j): hidden channel j acts like one hidden neuron of a
two-layer ReLU net with incoming weights v_j = (v_{j,i})_i (+ b_j) and outgoing weights
u_j = (u_{k,j})_k. So φ = (u_j v_jᵀ)_{j=1..c1} is a valid reparameterisation, and on Θ_conv it is
the distinguished one (P3 Thm 3.6: exactly c1 laws),

    h_j = Σ_k ‖u_{k,j}‖² − Σ_i ‖v_{j,i}‖² (− b_j²).

Nothing here depends on the filters being 1-D (a filter enters only as a flat vector); `conv_apply`
is the 1-D block itself, for `conflow.from_model` on generic signals.
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

DEFAULT_FILTER = 3


def conv_blocks(c0: int, c1: int, c2: int, n_v: int, n_u: int, bias: bool
                ) -> tuple[ParamBlock, ...]:
    """Layout ``V`` (c1, c0, n_v), ``b`` (c1,) if biased, ``U`` (c2, c1, n_u)."""
    shapes = [("V", (c1, c0, n_v))] + ([("b", (c1,))] if bias else []) + [("U", (c2, c1, n_u))]
    return blocks_from_shapes(shapes)


def _split(theta: Array, blocks: Sequence[ParamBlock]) -> tuple[Array, Array | None, Array]:
    arrs = dict(zip((b.name for b in blocks), split_flat(theta, blocks)))
    return arrs["V"], arrs.get("b"), arrs["U"]


def conv_neurons(theta: Array, blocks: Sequence[ParamBlock]) -> tuple[Array, Array]:
    """Per hidden channel j: outgoing u_j ∈ R^{c2 n_u}, incoming v_j ∈ R^{c0 n_v (+1)}."""
    v, b, u = _split(theta, blocks)
    c1 = v.shape[0]
    incoming = v.reshape(c1, -1)
    if b is not None:
        incoming = jnp.concatenate([incoming, b[:, None]], axis=1)
    outgoing = jnp.transpose(u, (1, 0, 2)).reshape(c1, -1)
    return outgoing, incoming


def conv_phi(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """φ = (vec u_j v_jᵀ)_{j=1..c1}; d = c1 · c2 n_u · (c0 n_v (+1))."""
    outgoing, incoming = conv_neurons(theta, blocks)
    return jnp.einsum("ja,jb->jab", outgoing, incoming).ravel()


@float64
def conv(c0: int, c1: int, c2: int, n_v: int = DEFAULT_FILTER, n_u: int | None = None,
         bias: bool = False) -> Model:
    """Conv-ReLU-conv block: c0 input channels, c1 hidden, c2 output; filter sizes n_v, n_u.

    ``n_u`` defaults to ``n_v``. CLI: ``conv c0,c1,c2[,n_v[,n_u]]`` (default filters 3), ``--bias``
    adds one bias per hidden channel. Closed-form laws (c1 of them, one per hidden
    channel): `conflow.reference.gradient_laws`.
    """
    n_u = n_v if n_u is None else n_u
    dims = check_dims("conv", (c0, c1, c2, n_v, n_u), exact=5,
                      meaning="(c0, c1, c2, n_v, n_u)")
    blocks = conv_blocks(*dims, bias=bias)
    return Model(
        name="conv",
        dims=dims,
        phi=functools.partial(conv_phi, blocks=blocks),
        blocks=blocks,
        bias=bool(bias),
    )


def conv_from_dims(dims: Sequence[int], bias: bool = False) -> Model:
    """``c0,c1,c2[,n_v[,n_u]]`` → `conv` (the CLI's DIMS)."""
    if not 3 <= len(dims) <= 5:
        raise InputError(
            f"conv needs 3 to 5 dims (c0, c1, c2[, n_v[, n_u]]), got {len(dims)}: "
            f"{','.join(map(str, dims))}"
        )
    return conv(*dims, bias=bias)


# ------------------------------------------------------------------------------------------------
# the block itself, for `conflow.from_model`
# ------------------------------------------------------------------------------------------------


def conv_params(c0: int, c1: int, c2: int, n_v: int = DEFAULT_FILTER, n_u: int | None = None,
                bias: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """Example parameters {V, b?, U} with the shapes of `conv_blocks` (Gaussian)."""
    n_u = n_v if n_u is None else n_u
    rng = np.random.default_rng(seed)
    out = {"V": rng.standard_normal((c1, c0, n_v)), "U": rng.standard_normal((c2, c1, n_u))}
    if bias:
        out["b"] = rng.standard_normal(c1)
    return out


def conv1d(x: Array, w: Array) -> Array:
    """Valid 1-D cross-correlation: x (c_in, L), w (c_out, c_in, n) → (c_out, L − n + 1).

    Written with patches and an einsum: under the engine's vmap / jvp / vjp nesting this
    compiles and runs ~10× faster on CPU than `jax.lax.conv_general_dilated` (measured).
    """
    n = w.shape[-1]
    length = x.shape[-1] - n + 1
    if length < 1:
        raise ValueError(f"conv1d: signal of length {x.shape[-1]} shorter than the filter ({n})")
    idx = np.arange(length)[:, None] + np.arange(n)[None, :]
    return jnp.einsum("cln,ocn->ol", x[:, idx], w)


def conv_apply(params: dict[str, Array], x: Array) -> Array:
    """The block on one signal x ∈ R^{c0×L}: U ⋆ relu(V ⋆ x (+ b)), shape
    (c2, L − n_v − n_u + 2)."""
    h = conv1d(x, params["V"])
    if "b" in params:
        h = h + params["b"][:, None]
    return conv1d(jax.nn.relu(h), params["U"])
