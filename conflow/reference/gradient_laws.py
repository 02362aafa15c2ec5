"""Closed-form gradient-flow laws of the literature, per model family (MATH.md §2, §4).

**Comparison values only** (tests, `conflow reproduce`, the CLI's monitors): nothing below the
reference layer imports this module, so the engines cannot see these laws.

`gradient_laws(model)` looks the family up by the model's name: θ ↦ (h_1(θ), …, h_K(θ)) for the
Euclidean gradient flow (the entropy flow for ``nmf`` and ``icnn``), or ``None``; a residual
wrapper ``residual-<family>`` has its block's laws (x + g(θ, x) keeps g's rescaling symmetries).
A family's network given as code (`conflow.from_model` on ``conv_apply`` / ``attention_apply``,
relabelled with `SampledModel.as_family`) holds the same named arrays in another order (a dict's
keys sorted); its laws are looked up by block name (`_in_family_layout`).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from conflow.models.attention import NAMES as ATTENTION_NAMES
from conflow.models.attention import attention_blocks, attention_heads
from conflow.models.base import Model, ParamBlock, split_flat
from conflow.models.conv import conv_blocks, conv_neurons
from conflow.models.icnn import split_icnn
from conflow.models.relu import split_relu

Array = jax.Array


def balancedness_laws(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """Upper triangles (diagonal included) of U_iᵀU_i − U_{i+1}U_{i+1}ᵀ, i = 1..q−1, concatenated.

    Each hidden width n_i contributes n_i(n_i+1)/2 entries, in `jnp.triu_indices` order.
    """
    mats = split_flat(theta, blocks)
    parts = []
    for u_in, u_out in itertools.pairwise(mats):
        m = u_in.T @ u_in - u_out @ u_out.T  # (n_i, n_i)
        rows, cols = np.triu_indices(m.shape[0])  # static: cheaper to trace than jnp
        parts.append(m[rows, cols])
    return jnp.concatenate(parts)


def relu_laws(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """Per hidden neuron j of layer l (l = 1..L−1, in order):
    ‖W_l[j,:]‖² + b_l[j]² − ‖W_{l+1}[:,j]‖²."""
    weights, biases = split_relu(theta, blocks)
    parts = []
    for l in range(1, len(weights)):
        h = jnp.sum(weights[l - 1] ** 2, axis=1) - jnp.sum(weights[l] ** 2, axis=0)
        if biases:
            h = h + biases[l - 1] ** 2
        parts.append(h)
    return jnp.concatenate(parts)


def conv_laws(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """h_j = Σ_k ‖u_{k,j}‖² − Σ_i ‖v_{j,i}‖² (− b_j²), j = 1..c1."""
    outgoing, incoming = conv_neurons(theta, blocks)
    return jnp.sum(outgoing**2, axis=1) - jnp.sum(incoming**2, axis=1)


def attention_laws(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """Per head: upper triangles (i ≤ j) of Q_hQ_hᵀ − K_hK_hᵀ, then of V_hV_hᵀ − O_hO_hᵀ."""
    q, k, v, o = attention_heads(theta, blocks)
    d1 = q.shape[1]
    iu = np.triu_indices(d1)
    gram = lambda a: jnp.einsum("hia,hja->hij", a, a)
    parts = [(gram(q) - gram(k))[:, iu[0], iu[1]], (gram(v) - gram(o))[:, iu[0], iu[1]]]
    return jnp.stack(parts, axis=1).ravel()


def expected_count(dim: int, d1: int, heads: int = 1) -> int:
    """The count derived from MATH.md §2.7 (two factorizations per head, §2.2 with p = 2·dim)."""
    p = 2 * dim
    per_factor = d1 * (d1 + 1) // 2 if d1 <= p else p * d1 - p * (p - 1) // 2
    return 2 * heads * per_factor


def factorization_laws(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """Upper triangle (diagonal included) of UᵀU − VᵀV, shape ``(r(r+1)/2,)``."""
    u, v = split_flat(theta, blocks)
    m = u.T @ u - v.T @ v
    rows, cols = np.triu_indices(m.shape[0])  # static: cheaper to trace than jnp
    return m[rows, cols]


def nmf_laws(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """h_k = Σ_i U[i,k] − Σ_j V[k,j], k = 1..r, shape ``(r,)`` (laws of the entropy mirror flow)."""
    u, v = split_flat(theta, blocks)
    return jnp.sum(u, axis=0) - jnp.sum(v, axis=1)


def icnn_laws(theta: Array, blocks: Sequence[ParamBlock]) -> Array:
    """h_k = Σ_i U[i,k] − ½(‖V[k,:]‖² + b_k²), k = 1..n2, shape ``(n2,)``."""
    u, v, b = split_icnn(theta, blocks)
    sq = jnp.sum(v**2, axis=1) if b is None else jnp.sum(v**2, axis=1) + b**2
    return jnp.sum(u, axis=0) - 0.5 * sq


def product_laws(theta: Array) -> Array:
    """x_1² − x_j², j = 2..D, shape ``(D−1,)``."""
    return theta[0] ** 2 - theta[1:] ** 2


def _neuron_laws(params: dict[str, Array], depth: int, prefix: str = "") -> list[Array]:
    """‖W_l[j,:]‖² + b_l[j]² − ‖W_{l+1}[:,j]‖² per hidden neuron (MATH.md §2.4)."""
    parts = []
    for l in range(1, depth):
        h = jnp.sum(params[f"{prefix}W{l}"] ** 2, axis=1) - jnp.sum(
            params[f"{prefix}W{l + 1}"] ** 2, axis=0)
        if f"{prefix}b{l}" in params:
            h = h + params[f"{prefix}b{l}"] ** 2
        parts.append(h)
    return parts


def softmax_laws(theta: Array, n: int, m: int) -> Array:
    """The m column sums Σ_i W[i, j] of a softmax layer W ∈ R^{n×m} (flat θ is W row-major)."""
    return theta.reshape(n, m).sum(axis=0)


def _resnet_laws(theta: Array, model: Model) -> Array:
    """‖V_i[j,:]‖² + b_i[j]² − ‖U_i[:,j]‖² per residual block i, hidden neuron j."""
    parts = []
    for blk in model.unravel(theta)["blocks"]:
        h = jnp.sum(blk["V"] ** 2, axis=1) - jnp.sum(blk["U"] ** 2, axis=0)
        parts.append(h + blk["b"] ** 2 if "b" in blk else h)
    return jnp.concatenate(parts)


def _transformer_laws(theta: Array, model: Model) -> Array:
    """Attention laws per head, then ‖V[j,:]‖² − ‖U[:,j]‖² per MLP neuron."""
    dim, d1 = model.dims[:2]
    heads = model.dims[3] if len(model.dims) == 4 else 1
    p = model.unravel(theta)
    flat_attn = jnp.concatenate([jnp.ravel(p["attn"][n]) for n in ATTENTION_NAMES])
    mlp_law = jnp.sum(p["mlp"]["V"] ** 2, axis=1) - jnp.sum(p["mlp"]["U"] ** 2, axis=0)
    return jnp.concatenate([attention_laws(flat_attn, attention_blocks(dim, d1, heads)), mlp_law])


def _mlp_relu_laws(theta: Array, model: Model) -> Array:
    return jnp.concatenate(_neuron_laws(model.unravel(theta), len(model.dims) - 1))


#: Name of the P3 Example 4.8 model: `resnet` [1,1,2] with its points drawn in Ω (the model is
#: built by `conflow.reference.reproduce`).
EXAMPLE_4_8 = "ex4.8-resnet"


def _asinh_part(a: Array, alpha: Array) -> Array:
    """F(a, α) = ½ asinh(2a/|α|) + ¼ √(α² + 4a²), so ∂F/∂a = (1 + a)/√(α² + 4a²)."""
    return 0.5 * jnp.arcsinh(2 * a / jnp.abs(alpha)) + 0.25 * jnp.sqrt(alpha**2 + 4 * a**2)


def example_4_8_laws(theta: Array, model: Model) -> Array:
    """P3 Example 4.8, g = x + uσ(vx) + sσ(t(x + uσ(vx))) (`resnet` [1,1,2]) on the region
    Ω = {sgn t = sgn v = sgn u} (MATH.md §2.9): u² − v², s² − t² and a third law

        F(uv, u² − v²) − F(st, s² − t²),   F(a, α) = ½ asinh(2a/|α|) + ¼ √(α² + 4a²)

    (derived here; P3 gives the count 3, not the law). On Ω, g(θ, x) is x or x(1 + uv)(1 + st)
    depending on the sign of x, so W = R∇φ with φ = (1 + uv)(1 + st). Along φ's flow,
    (uv)' = −c(1 + st)(u² + v²) and (st)' = −c(1 + uv)(s² + t²), with u² + v² = √(α² + 4(uv)²)
    (α = u² − v² conserved) and likewise for (s, t); so (1 + a)da/√(α² + 4a²) =
    (1 + b)db/√(β² + 4b²) for a = uv, b = st: the third law. Needs α, β ≠ 0 (generic).
    """
    b0, b1 = model.unravel(theta)["blocks"]
    u, v, s, t = (jnp.ravel(x)[0] for x in (b0["U"], b0["V"], b1["U"], b1["V"]))
    alpha, beta = u**2 - v**2, s**2 - t**2
    return jnp.stack([alpha, beta, _asinh_part(u * v, alpha) - _asinh_part(s * t, beta)])


#: family name -> laws(θ, model)
_BY_BLOCKS = {
    "linear": balancedness_laws,
    "relu": relu_laws,
    "conv": conv_laws,
    "attention": attention_laws,
    "factorization": factorization_laws,
    "nmf": nmf_laws,
    "icnn": icnn_laws,
}
_BY_MODEL = {
    "mlp-relu": _mlp_relu_laws,
    "resnet": _resnet_laws,
    "transformer": _transformer_laws,
    "softmax": lambda theta, model: softmax_laws(theta, *model.dims),
    "product": lambda theta, model: product_laws(theta),
    EXAMPLE_4_8: example_4_8_laws,
}

#: A short formula per family, for reports.
DESCRIPTIONS = {
    "linear": "U_iᵀU_i − U_{i+1}U_{i+1}ᵀ (upper triangle), i = 1..q−1",
    "relu": "‖W_l[j,:]‖² + b_l[j]² − ‖W_{l+1}[:,j]‖² per hidden neuron j of layer l",
    "mlp-relu": "‖W_l[j,:]‖² + b_l[j]² − ‖W_{l+1}[:,j]‖² per hidden neuron",
    "conv": "Σ_k ‖u_{k,j}‖² − Σ_i ‖v_{j,i}‖² (− b_j²) per hidden channel j",
    "attention": "Q_hQ_hᵀ − K_hK_hᵀ and V_hV_hᵀ − O_hO_hᵀ per head (upper triangles)",
    "factorization": "UᵀU − VᵀV (upper triangle)",
    "nmf": "Σ_i U[i,k] − Σ_j V[k,j], k = 1..r (entropy metric)",
    "icnn": "Σ_i U[i,k] − ½(‖V[k,:]‖² + b_k²), k = 1..n2 (entropy metric on U)",
    "product": "x_1² − x_j², j = 2..D",
    "resnet": "‖V_i[j,:]‖² + b_i[j]² − ‖U_i[:,j]‖² per block i, hidden neuron j",
    "transformer": "attention laws per head + ‖V[j,:]‖² − ‖U[:,j]‖² per MLP neuron",
    "softmax": "column sums Σ_i W[i,j] (one per input feature)",
    EXAMPLE_4_8: "u² − v², s² − t², F(uv, u² − v²) − F(st, s² − t²) on Ω (P3 Example 4.8)",
}


def _family(model: Model) -> str:
    name = model.name
    while name.startswith("residual-"):
        name = name[len("residual-"):]
    return name


def gradient_laws(model: Model) -> Callable[[Array], Array] | None:
    """The family's closed-form gradient-flow laws θ ↦ h(θ), shape ``(D,) -> (K,)``, or None."""
    family = _family(model)
    if family in _BY_BLOCKS:
        laws = _BY_BLOCKS[family]
        own = _family_blocks(model, family)
        if own is None or _layout(own) == _layout(model.blocks):
            return functools.partial(laws, blocks=model.blocks)
        if sorted(_layout(own)) != sorted(_layout(model.blocks)):
            return None
        return functools.partial(_in_family_layout, laws=laws, model=model, blocks=own)
    if family in _BY_MODEL:
        return functools.partial(_BY_MODEL[family], model=model)
    return None


def _layout(blocks: Sequence[ParamBlock]) -> list[tuple[str, tuple[int, ...]]]:
    return [(b.name, tuple(b.shape)) for b in blocks]


def _family_blocks(model: Model, family: str) -> tuple[ParamBlock, ...] | None:
    """The built-in layout of ``conv`` / ``attention`` for the model's dims (None otherwise)."""
    if family == "conv" and len(model.dims) == 5:
        return conv_blocks(*model.dims, bias=model.bias)
    if family == "attention" and len(model.dims) in (2, 3):
        return attention_blocks(*model.dims[:2], model.dims[2] if len(model.dims) == 3 else 1)
    return None


def _in_family_layout(theta: Array, laws: Callable, model: Model,
                      blocks: Sequence[ParamBlock]) -> Array:
    """``laws`` (written for the family's layout ``blocks``) at θ in the model's layout: the
    same named arrays, matched by name."""
    named = model.unflatten(theta)
    return laws(jnp.concatenate([jnp.ravel(named[b.name]) for b in blocks]), blocks)


def homogeneous_laws(model: Model) -> Callable[[Array], Array] | None:
    """The closed-form laws h with h(cθ) = c^k h(θ) for c > 0: all of `gradient_laws(model)`
    except Example 4.8's third law (every other family's laws are linear or quadratic forms).
    Under weight decay these are the ones kept as H(e^{Λ(t)}θ) (`closed_forms.decayed_laws`)."""
    laws = gradient_laws(model)
    if laws is None or _family(model) != EXAMPLE_4_8:
        return laws
    return lambda theta: laws(theta)[:2]


def description(model: Model) -> str:
    """The family's closed-form laws as a short formula ('' if none)."""
    return DESCRIPTIONS.get(_family(model), "") if gradient_laws(model) is not None else ""
