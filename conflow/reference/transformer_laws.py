"""P3's closed-form counts for ResNets and Transformers (MATH.md §2.5–§2.11), for comparison.

`p3_count(model, flow)` is the number of laws P3 states (or that follows from its closed forms
by MATH.md's derivations) for the families of ``conflow reproduce --paper transformers``;
`conflow.reference.reproduce` compares it with the rank of the closed-form laws themselves
(`closed_forms.known_count`) and notes any difference. **Comparison values only**: nothing
below the reference layer imports this module.

- conv ReLU block (§2.5, P3 Thm 3.6): c1, one law per hidden channel (with or without biases);
- residual x + g(θ, x) (§2.6, P3 Prop 3.2): the count of g;
- attention (§2.7, P3 Thm 3.8): d1(d1 + 1) per head when d1 ≤ 2·dim, else
  2(2·dim·d1 − dim(2·dim − 1)) (`gradient_laws.expected_count`); several heads: per head
  (completeness open in P3);
- softmax layer + KL (§2.8, P3 Prop 3.11): m, the column sums;
- ResNet / transformer block (§2.9, P3 Thm 4.6 and its numerics for input width > 1): the block
  laws only, one per hidden neuron of each residual MLP block plus the attention laws;
- P3 Example 4.8 (`resnet` [1,1,2] on Ω = {sgn t = sgn v = sgn u}): 3;
- 2-layer ReLU MLP (§2.4): one per hidden neuron.
"""

from __future__ import annotations

from conflow.models.base import Model
from conflow.reference.gradient_laws import EXAMPLE_4_8, expected_count


def _family(name: str) -> tuple[str, int]:
    """(family, number of residual wrappers) of a model name ``residual-…-<family>``."""
    depth = 0
    while name.startswith("residual-"):
        name, depth = name[len("residual-"):], depth + 1
    return name, depth


def p3_count(model: Model) -> int | None:
    """P3's gradient-flow count for ``model`` (module docstring), or None for other families."""
    family, _ = _family(model.name)
    dims = tuple(model.dims)
    if family == "conv":
        return dims[1]
    if family == "attention":
        return expected_count(dims[0], dims[1], dims[2] if len(dims) == 3 else 1)
    if family == "softmax":
        return dims[1]
    if family == EXAMPLE_4_8:
        return 3
    if family == "resnet":
        _, hidden, n_blocks = dims
        return hidden * n_blocks
    if family == "transformer":
        dim, d1, hidden = dims[:3]
        return expected_count(dim, d1, dims[3] if len(dims) == 4 else 1) + hidden
    if family in ("mlp-relu", "relu") and len(dims) == 3:
        return dims[1]
    return None


def sign_flow_count(model: Model) -> int | None:
    """P3 App. R (MATH.md §2.11): the sign flow of UVᵀ has no law, except n = m = r = 1 where
    |U| − |V| is the one law; "and attention": here applied to each factor QᵀK, VᵀO of each
    head (a UVᵀ with n = m = dim, r = d1), so 2 laws per head when dim = d1 = 1, else 0.
    ``factorization`` (n, r, m), 2-matrix ``linear`` [n, r, m] and ``attention``; None for
    other models. (`closed_forms.sign_flow_laws` derives more laws when n = 1 or m = 1.)"""
    dims = tuple(model.dims)
    if model.name == "attention":
        heads = dims[2] if len(dims) == 3 else 1
        return 2 * heads if dims[:2] == (1, 1) else 0
    if model.name not in ("factorization", "linear") or len(dims) != 3:
        return None
    return 1 if dims == (1, 1, 1) else 0

