"""Deep ReLU network through its path-lifting φ (MATH.md §2.4).

On a region of fixed activation pattern, a ReLU net is linear in the path products, so φ = (all
path products) is a valid reparameterisation there (P1 code, MATH.md §1.3, §2.4).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError
from conflow.models.base import (
    Model,
    ParamBlock,
    activation_fn,
    blocks_from_shapes,
    check_dims,
    split_flat,
    standard_init,
)
from conflow.precision import float64

Array = jax.Array


def relu_blocks(dims: Sequence[int], bias: bool) -> tuple[ParamBlock, ...]:
    """Layout ``W1, b1, W2, b2, …, W_{L−1}, b_{L−1}, W_L`` (the ``b``'s only if ``bias``).

    W_l ∈ R^{n_l×n_{l−1}} maps layer l−1 to layer l; b_l ∈ R^{n_l} for hidden layers only.
    """
    L = len(dims) - 1
    shapes: list[tuple[str, tuple[int, ...]]] = []
    for l in range(1, L + 1):
        shapes.append((f"W{l}", (dims[l], dims[l - 1])))
        if bias and l < L:
            shapes.append((f"b{l}", (dims[l],)))
    return blocks_from_shapes(shapes)


def split_relu(theta: Array, blocks: Sequence[ParamBlock]) -> tuple[list[Array], list[Array]]:
    """θ ↦ ([W_1, …, W_L], [b_1, …, b_{L−1}] or [])."""
    arrs = dict(zip((b.name for b in blocks), split_flat(theta, blocks)))
    weights = [arrs[b.name] for b in blocks if b.name.startswith("W")]
    biases = [arrs[b.name] for b in blocks if b.name.startswith("b")]
    return weights, biases


def _expand(v: Array, ndim: int) -> Array:
    """Append trailing axes to ``v`` until it has ``ndim`` axes (for outer products)."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def relu_phi(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """Path-lifting of a ReLU net, shape ``(d,)``.

    With S_l[j_l, …, j_L] = Π_{k=l+1}^{L} W_k[j_k, j_{k−1}] (products along paths from neuron j_l of
    layer l to output j_L), built backwards by outer products S_{l−1} = W_lᵀ ⊗ S_l:

        φ = ( vec S_0,  vec(b_1 ⊙ S_1),  …,  vec(b_{L−1} ⊙ S_{L−1}) ),

    i.e. first every input→output path product, indexed [i, j_1, …, j_{L−1}, o] row-major, then
    for each hidden layer l = 1..L−1 (if biased) b_l[j] × (path product from j to the output).
    d = Π_{k=0}^{L} n_k + Σ_{l=1}^{L−1} Π_{k=l}^{L} n_k (second term only with biases).
    """
    weights, biases = split_relu(theta, blocks)
    s = weights[-1].T  # S_{L−1}: (n_{L−1}, n_L)
    bias_parts = []
    for l in range(len(weights) - 1, 0, -1):  # hidden layer l; s = S_l, shape (n_l, …, n_L)
        if biases:
            bias_parts.append((_expand(biases[l - 1], s.ndim) * s).ravel())
        s = _expand(weights[l - 1].T, s.ndim + 1) * s[None]  # S_{l−1}
    return jnp.concatenate([s.ravel(), *reversed(bias_parts)])


def relu_pairing(theta: Array, factors: Array, blocks: Sequence[ParamBlock],
                 dims: Sequence[int]) -> Array:
    """⟨a(g), φ(θ)⟩ for the structured coefficients a(g) of `relu_phi`, as one forward pass.

    ``factors`` (shape ``(Σ_k n_k,)``) holds g_0 ∈ R^{n_0}, …, g_L ∈ R^{n_L}, and

        a(g) = ( g_0 ⊗ g_1 ⊗ ⋯ ⊗ g_L,  g_1 ⊗ ⋯ ⊗ g_L,  …,  g_{L−1} ⊗ g_L ),

    laid out as φ (the bias parts only with biases). Then ⟨a(g), φ(θ)⟩ is the linear network
    with input g_0 whose hidden units are gated by g_l:

        h_0 = g_0,   h_l = g_l ⊙ (W_l h_{l−1} + b_l)  (l = 1..L−1),   ⟨a(g), φ(θ)⟩ = g_Lᵀ W_L h_{L−1},

    O(D) work where ∂φ(θ)ᵀa sums over every path. The parts of a(g) have distinct multidegrees in
    (g_0, …, g_L) and rank-one tensors span each tensor space, so the image of a spans R^d: its
    θ-gradients at random g are generic elements of the generator span (`Model.pairing`).
    """
    weights, biases = split_relu(theta, blocks)
    offsets = np.cumsum([0, *dims])
    g = [factors[offsets[k] : offsets[k + 1]] for k in range(len(dims))]
    h = g[0]
    for l in range(1, len(weights)):
        pre = weights[l - 1] @ h
        h = g[l] * (pre + biases[l - 1] if biases else pre)
    return g[-1] @ (weights[-1] @ h)


def mlp_forward(params: Mapping[str, Array], x: Array,
                activation: str | Callable = "relu") -> Array:
    """MLP on the layout of `conflow.relu` blocks: ``W1, b1, …, W_{L−1}, b_{L−1}, W_L``.

    W_l has shape (n_l, n_{l−1}); the biases b_l (hidden layers, optional) shape (n_l,); an output
    bias ``b{L}`` is used if present. ``x``: shape (N, n_0) → output (N, n_L); a single input
    (n_0,) → (n_L,).
    """
    act = activation_fn(activation)
    L = sum(1 for k in params if k.startswith("W"))
    if L == 0:
        raise InputError("mlp_forward: params need weights named W1, W2, ...")
    h = x
    for l in range(1, L + 1):
        h = h @ params[f"W{l}"].T
        if f"b{l}" in params:
            h = h + params[f"b{l}"]
        if l < L:
            h = act(h)
    return h


@float64
def init_mlp(key: Array | int, sizes: Sequence[int], bias: bool = True, scale: float = 1.0,
             ) -> dict[str, Array]:
    """He-initialised MLP parameters for `mlp_forward`: W_l ~ N(0, 2 scale²/n_{l−1}), b_l = 0
    (hidden layers only, as in `conflow.relu`)."""
    key = jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key
    params = {}
    for l in range(1, len(sizes)):
        key, sub = jax.random.split(key)
        fan_in = sizes[l - 1]
        params[f"W{l}"] = (scale * math.sqrt(2.0 / fan_in)
                           * jax.random.normal(sub, (sizes[l], fan_in), jnp.float64))
        if bias and l < len(sizes) - 1:
            params[f"b{l}"] = jnp.zeros(sizes[l], jnp.float64)
    return params


@float64
def relu(dims: Sequence[int], bias: bool = False) -> Model:
    """Deep ReLU net ``[n_in, h_1, …, h_{L−1}, n_out]`` (L ≥ 2 layers), optionally with biases.

    Blocks: see `relu_blocks`; φ: see `relu_phi`. Closed-form laws: one per hidden neuron,
    ‖incoming‖² (+ b²) − ‖outgoing‖² (MATH.md §2.4).
    """
    dims = check_dims(
        "relu", dims, at_least=3, meaning="[n_in, h1, ..., n_out] (at least one hidden layer)"
    )
    blocks = relu_blocks(dims, bias)
    return Model(
        name="relu",
        dims=dims,
        phi=functools.partial(relu_phi, blocks=blocks),
        blocks=blocks,
        bias=bool(bias),
        pairing=functools.partial(relu_pairing, blocks=blocks, dims=dims),
        n_pairing_coeffs=sum(dims),
        forward=mlp_forward,
        input_dim=dims[0],
        activation="relu",
        init=functools.partial(standard_init, blocks, fan_in_axis=1, gain=2.0),
    )
