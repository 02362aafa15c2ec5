"""Residual connections and the networks built from them: MLP blocks, ResNets, a transformer block.

`residual(block)` is x ↦ x + g(θ, x). Its parameter derivative is that of g, so it has exactly
the laws of g (MATH.md §2.6, P3 Prop 3.2):

- for a `conflow.from_model` model (a `SampledModel`) it is the sampled model of x + g(θ, x) on
  the same inputs, so the count is a genuine check of the proposition;
- for a φ-based `Model`, x + f(φ(θ), x) factors through the same φ: the result is the same φ
  relabelled (nothing is computed differently — that *is* the proposition);
- for a function ``apply_fn(params, x)`` it returns the function ``(params, x) ↦ x + apply_fn``.

Residual networks have no finite φ simpler than their outputs, so `mlp`, `resnet` and
`transformer` are sampled models (`conflow.from_model`): the count is over a generic input sample,
with the caveats documented there. Their closed-form laws (comparison only) are the block laws
(MATH.md §2.9, P3 Thm 4.6); P3 finds no further laws numerically for input width > 1, and more for
width 1 (Example 4.8: 3 laws for x + uσ(vx) + sσ(t(x + uσ(vx))) on one activation region).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError
from conflow.models.attention import attention_apply, attention_blocks
from conflow.models.base import Model, check_dims
from conflow.models.from_model import SampledModel, from_model
from conflow.precision import float64

Array = jax.Array

#: Activations of the sampled MLP families (``mlp-<name>`` in the CLI). GELU is the tanh form.
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
}

#: Tokens per input sequence of the sampled transformer block (P3 needs ≥ 2).
TRANSFORMER_TOKENS = 3


# ------------------------------------------------------------------------------------------------
# the wrapper
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ResidualFn:
    """``(params, x) ↦ x + block(params, x)``; the output must have the input's shape."""

    block: Callable[[Any, Any], Any]

    def __call__(self, params: Any, x: Any) -> Any:
        y = self.block(params, x)
        if jnp.shape(y) != jnp.shape(x):
            raise ValueError(f"residual: the block maps shape {jnp.shape(x)} to {jnp.shape(y)}; "
                             "x + g(θ, x) needs equal shapes")
        return x + y


@float64
def residual(block: Any) -> Any:
    """x ↦ x + g(θ, x) for a sampled model, a φ-based model or an ``apply_fn`` (see the module
    docstring)."""
    if isinstance(block, SampledModel):
        model = from_model(ResidualFn(block.apply_fn), block.params, block.inputs,
                           name=f"residual-{block.name}", seed=block.seed,
                           input_radius=block.input_radius)
        return dataclasses.replace(
            model, dims=block.dims, bias=block.bias,
            input_source=block.input_source, kind=f"residual-{block.kind}",
        )
    if isinstance(block, Model):
        return dataclasses.replace(block, name=f"residual-{block.name}")
    if callable(block):
        return ResidualFn(block)
    raise InputError(f"residual: expected a Model or a function (params, x), got "
                     f"{type(block).__name__}")


# ------------------------------------------------------------------------------------------------
# MLP blocks
# ------------------------------------------------------------------------------------------------


def mlp_params(dims: Sequence[int], bias: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    """{W1, b1, …, W_L} like the built-in ``relu``: W_l ∈ R^{n_l×n_{l−1}}, b_l on hidden layers."""
    rng = np.random.default_rng(seed)
    out = {}
    for l in range(1, len(dims)):
        out[f"W{l}"] = rng.standard_normal((dims[l], dims[l - 1]))
        if bias and l < len(dims) - 1:
            out[f"b{l}"] = rng.standard_normal(dims[l])
    return out


@dataclasses.dataclass(frozen=True)
class MLPApply:
    """``(params, x) -> W_L σ(… σ(W_1 x + b_1) …)`` for `mlp_params`-shaped params."""

    depth: int
    activation: str = "relu"

    def __call__(self, params: dict[str, Array], x: Array) -> Array:
        act = ACTIVATIONS[self.activation]
        for l in range(1, self.depth):
            x = params[f"W{l}"] @ x
            if f"b{l}" in params:
                x = x + params[f"b{l}"]
            x = act(x)
        return params[f"W{self.depth}"] @ x


@float64
def mlp(dims: Sequence[int], activation: str = "relu", bias: bool = False, *,
        n_inputs: int | None = None, seed: int = 0) -> SampledModel:
    """MLP ``[n_in, h_1, …, n_out]`` with ``activation``, counted on generic inputs.

    Same parameters as the built-in ``relu`` family (W_l, hidden b_l), but the generators are the
    output gradients on a sample (`conflow.from_model`), not the path-lifting φ: ``mlp-relu`` vs
    ``relu`` is the comparison of MATH.md §1.3 in practice. Closed-form laws only for ReLU (one per
    hidden neuron); smooth activations have none assumed. CLI: ``mlp-<activation> n_in,…,n_out``.
    """
    if activation not in ACTIVATIONS:
        raise InputError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    family = f"mlp-{activation}"
    dims = check_dims(family, dims, at_least=3, meaning="[n_in, h1, ..., n_out]")
    depth = len(dims) - 1
    model = from_model(MLPApply(depth, activation), mlp_params(dims, bias), n_inputs=n_inputs,
                       input_shape=(dims[0],), seed=seed, name=family)
    return dataclasses.replace(model.as_family(family, dims), bias=bool(bias))


# ------------------------------------------------------------------------------------------------
# ResNet: x ↦ (I + g_q) ∘ … ∘ (I + g_1)(x), g_i(x) = U_i σ(V_i x + b_i)
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ResNetApply:
    activation: str = "relu"

    def __call__(self, params: dict[str, Any], x: Array) -> Array:
        act = ACTIVATIONS[self.activation]
        for blk in params["blocks"]:
            h = blk["V"] @ x
            if "b" in blk:
                h = h + blk["b"]
            x = x + blk["U"] @ act(h)
        return x


def resnet_params(dim: int, hidden: int, n_blocks: int, bias: bool = False, seed: int = 0
                  ) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(n_blocks):
        blk = {"V": rng.standard_normal((hidden, dim)), "U": rng.standard_normal((dim, hidden))}
        if bias:
            blk["b"] = rng.standard_normal(hidden)
        blocks.append(blk)
    return {"blocks": blocks}


@float64
def resnet(dim: int, hidden: int, n_blocks: int = 2, bias: bool = False, *,
           n_inputs: int | None = None, seed: int = 0) -> SampledModel:
    """ResNet of ``n_blocks`` residual ReLU blocks x + U σ(V x (+ b)), width ``dim``, ``hidden``
    neurons per block, counted on generic inputs. Block laws (comparison): one per hidden neuron,
    ‖V[j,:]‖² (+ b_j²) − ‖U[:,j]‖². CLI: ``resnet dim,hidden[,blocks]`` (default 2 blocks)."""
    dims = check_dims("resnet", (dim, hidden, n_blocks), exact=3,
                      meaning="(dim, hidden, blocks)")
    model = from_model(ResNetApply(), resnet_params(*dims, bias=bias), n_inputs=n_inputs,
                       input_shape=(dim,), seed=seed, name="resnet")
    return dataclasses.replace(model.as_family("resnet", dims), bias=bool(bias))


def resnet_from_dims(dims: Sequence[int], bias: bool = False) -> SampledModel:
    if len(dims) not in (2, 3):
        raise InputError(f"resnet needs 2 or 3 dims (dim, hidden[, blocks]), got {len(dims)}: "
                         f"{','.join(map(str, dims))}")
    return resnet(*dims, bias=bias)


# ------------------------------------------------------------------------------------------------
# transformer block: Y = X + Attn(X); Z = Y + σ(Y Vᵀ) Uᵀ (token-wise MLP)
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransformerApply:
    activation: str = "relu"

    def __call__(self, params: dict[str, Any], x: Array) -> Array:
        y = x + attention_apply(params["attn"], x)
        return y + ACTIVATIONS[self.activation](y @ params["mlp"]["V"].T) @ params["mlp"]["U"].T


def transformer_params(dim: int, d1: int, hidden: int, heads: int = 1, seed: int = 0
                       ) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    attn = {b.name: rng.standard_normal(b.shape) for b in attention_blocks(dim, d1, heads)}
    mlp_p = {"V": rng.standard_normal((hidden, dim)), "U": rng.standard_normal((dim, hidden))}
    return {"attn": attn, "mlp": mlp_p}


@float64
def transformer(dim: int, d1: int, hidden: int, heads: int = 1, *,
                tokens: int = TRANSFORMER_TOKENS, n_inputs: int | None = None, seed: int = 0
                ) -> SampledModel:
    """One pre-norm-free transformer block on sequences of ``tokens`` tokens of width ``dim``:
    attention (``heads`` heads of width ``d1``) and a token-wise ReLU MLP (``hidden`` neurons),
    each with a residual connection; counted on generic input sequences.

    Block laws (comparison): Q_hQ_hᵀ − K_hK_hᵀ, V_hV_hᵀ − O_hO_hᵀ per head, and
    ‖V[j,:]‖² − ‖U[:,j]‖² per MLP neuron. CLI: ``transformer dim,d1,hidden[,heads]`` (3 tokens).
    """
    check_dims("transformer", (dim, d1, hidden, heads, tokens), exact=5,
               meaning="(dim, d1, hidden, heads, tokens)")
    model = from_model(TransformerApply(), transformer_params(dim, d1, hidden, heads),
                       n_inputs=n_inputs, input_shape=(tokens, dim), seed=seed,
                       name="transformer")
    shown = (dim, d1, hidden) if heads == 1 else (dim, d1, hidden, heads)
    return model.as_family("transformer", shown)


def transformer_from_dims(dims: Sequence[int]) -> SampledModel:
    if len(dims) not in (3, 4):
        raise InputError(f"transformer needs 3 or 4 dims (dim, d1, hidden[, heads]), got "
                         f"{len(dims)}: {','.join(map(str, dims))}")
    return transformer(*dims)

