"""Model families and the name → constructor registry used by the CLI.

Each family is a function returning a `Model` (φ on flat θ plus its block layout); see
`conflow.models.base`. `get_model(name, dims, bias)` builds one from the command-line spelling,
e.g. ``get_model("relu", "3,4,2", bias=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from conflow.errors import InputError
from conflow.models.attention import (
    attention,
    attention_apply,
    attention_from_dims,
    attention_params,
)
from conflow.models.base import (
    Model,
    ParamBlock,
    blocks_from_shapes,
    check_dims,
    split_flat,
)
from conflow.models.conv import conv, conv_apply, conv_from_dims, conv_params
from conflow.models.custom import custom
from conflow.models.factorization import factorization, nmf
from conflow.models.icnn import icnn
from conflow.models.linear import linear
from conflow.models.product import product
from conflow.models.relu import relu
from conflow.models.residual import (
    ACTIVATIONS,
    mlp,
    residual,
    resnet,
    resnet_from_dims,
    transformer,
    transformer_from_dims,
)
from conflow.models.softmax import softmax_apply, softmax_layer
from conflow.precision import float64

__all__ = [
    "MODEL_NAMES",
    "Model",
    "ParamBlock",
    "attention",
    "attention_apply",
    "attention_params",
    "blocks_from_shapes",
    "check_dims",
    "conv",
    "conv_apply",
    "conv_params",
    "custom",
    "factorization",
    "get_model",
    "icnn",
    "linear",
    "mlp",
    "nmf",
    "product",
    "relu",
    "residual",
    "resnet",
    "softmax_apply",
    "softmax_layer",
    "split_flat",
    "transformer",
]

#: Canonical family names accepted by `get_model` (plus the alias ``"uv"`` for factorization).
MODEL_NAMES: tuple[str, ...] = (
    "linear", "relu", "factorization", "nmf", "icnn", "product",
    "attention", "softmax", "conv", "resnet", "transformer",
    *(f"mlp-{a}" for a in ACTIVATIONS),
)
ALIASES: dict[str, str] = {"uv": "factorization"}
BIAS_FAMILIES: tuple[str, ...] = ("relu", "icnn", "conv", "resnet",
                                  *(f"mlp-{a}" for a in ACTIVATIONS))

# name -> (constructor taking (dims, bias), exact number of dims or None, at least, meaning)
_FAMILIES: dict[str, tuple[Callable[[tuple[int, ...], bool], Model], int | None, int | None, str]] = {
    "linear": (lambda d, b: linear(d), None, 3, "[n0, n1, ..., nq] (at least 2 matrices)"),
    "relu": (lambda d, b: relu(d, bias=b), None, 3, "[n_in, h1, ..., n_out]"),
    "factorization": (lambda d, b: factorization(*d), 3, None, "(n, r, m)"),
    "nmf": (lambda d, b: nmf(*d), 3, None, "(n1, r, n3)"),
    "icnn": (lambda d, b: icnn(*d, bias=b), 3, None, "(n1, n2, n3)"),
    "product": (lambda d, b: product(*d), 1, None, "(D)"),
    # φ-based: attention (QᵀK, VᵀO per head), conv block (path-lifting)
    "attention": (lambda d, b: attention_from_dims(d), None, 2, "(dim, d1[, heads])"),
    "conv": (lambda d, b: conv_from_dims(d, bias=b), None, 3, "(c0, c1, c2[, n_v[, n_u]])"),
    # sampled (generators = output gradients on generic inputs, conflow.from_model)
    "softmax": (lambda d, b: softmax_layer(*d), 2, None, "(n classes, m inputs)"),
    "resnet": (lambda d, b: resnet_from_dims(d, bias=b), None, 2, "(dim, hidden[, blocks])"),
    "transformer": (lambda d, b: transformer_from_dims(d), None, 3, "(dim, d1, hidden[, heads])"),
    **{
        f"mlp-{a}": ((lambda d, b, a=a: mlp(d, a, bias=b)), None, 3, "[n_in, h1, ..., n_out]")
        for a in ACTIVATIONS
    },
}


def _parse_dims(family: str, dims: Sequence[int] | str) -> Sequence[int]:
    """``"3,4,2"`` → ``[3, 4, 2]``; sequences pass through (validated by `check_dims`)."""
    if not isinstance(dims, str):
        return dims
    parts = [p.strip() for p in dims.split(",")]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise InputError(f"{family}: dims must be positive integers, got {dims!r}") from None


@float64
def get_model(name: str, dims: Sequence[int] | str, bias: bool = False) -> Model:
    """Build a model by family name (case-insensitive; ``"uv"`` = ``"factorization"``).

    ``dims`` is a sequence of positive ints or a comma-separated string. Raises `InputError`
    (one line) for an unknown name, non-positive / non-integer dims, the wrong number of dims for
    the family, or ``bias=True`` for a family without biases.
    """
    key = str(name).strip().lower()
    key = ALIASES.get(key, key)
    if key not in _FAMILIES:
        known = ", ".join(MODEL_NAMES) + ", " + ", ".join(f"{a} (= {t})" for a, t in ALIASES.items())
        raise InputError(f"unknown model {name!r}; known models: {known}")
    build, exact, at_least, meaning = _FAMILIES[key]
    dims_t = check_dims(key, _parse_dims(key, dims), exact=exact, at_least=at_least, meaning=meaning)
    if bias and key not in BIAS_FAMILIES:
        raise InputError(
            f"model {key!r} has no bias option (bias is available for {', '.join(BIAS_FAMILIES)})"
        )
    return build(dims_t, bool(bias))
