"""Softmax classification layer under the KL / cross-entropy loss (MATH.md §2.8, §8 row 27).

g(θ, x) = softmax(θx), θ ∈ R^{n×m} (n classes, m input features). With V_ℓ = R^n (KL loss), the
flow moves in W_θ = span{∂_θ g(θ, x)ᵀ w : x, w} (MATH.md §1.2): these generators are not the
gradients of a polynomial φ with W_θ = range ∂φᵀ, so the model is built like `conflow.from_model`:
φ(θ) = (g(θ, x_1), …, g(θ, x_N)) on a fixed sample of generic inputs, whose Jacobian rows are
exactly the output gradients over the sample.

Why N ≥ m inputs suffice: ∂_θ g(θ, x)ᵀ w = (J(θx) w) xᵀ with J = diag(p) − ppᵀ, whose range is
{u : Σ_i u_i = 0} for every x, so the sample spans {A : 1ᵀA = 0} as soon as its inputs span R^m.
Closed-form laws (P3 Prop 3.11): the m column sums h_j(θ) = Σ_i θ_{i,j}; they are linear, hence
also kept exactly by GD / SGD / heavy ball (MATH.md §5).
"""

from __future__ import annotations

import jax
import numpy as np

from conflow.errors import InputError
from conflow.models.base import check_dims
from conflow.models.from_model import SampledModel, draw_inputs, from_model
from conflow.precision import float64

Array = jax.Array


def softmax_apply(params: dict[str, Array], x: Array) -> Array:
    """softmax(W x), W ∈ R^{n×m}, x ∈ R^m."""
    return jax.nn.softmax(params["W"] @ x)


@float64
def softmax_layer(n: int, m: int, *, n_inputs: int | None = None, seed: int = 0) -> SampledModel:
    """Softmax layer with n classes and m inputs, W ∈ R^{n×m}; D = nm, m laws expected.

    ``n_inputs``: size of the generic input sample (default m + 2; at least m is needed). CLI:
    ``softmax n,m``.
    """
    n, m = check_dims("softmax", (n, m), exact=2, meaning="(n classes, m inputs)")
    if n < 2:
        raise InputError("softmax needs n >= 2 classes (a softmax over one class is constant)")
    N = m + 2 if n_inputs is None else int(n_inputs)
    if N < 1:
        raise InputError(f"softmax: n_inputs must be >= 1, got {n_inputs}")
    inputs = draw_inputs(np.random.default_rng(seed), N, (m,), radius=1.0)  # no saturation
    model = from_model(softmax_apply, {"W": np.zeros((n, m))}, inputs, name="softmax", seed=seed,
                       input_radius=1.0)
    return model.as_family("softmax", (n, m))
