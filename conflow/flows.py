"""Flows: each turns a model into the generator family handed to the one Lie-trace engine.

Gradient flow under a metric (MATH.md §1.3, §4.1):

    θ' = −M(θ)^{-1} ∇L(θ),   L(θ) = ℓ(φ(θ)),   ∇L = ∂φ(θ)ᵀ c   (c = ∇_φ ℓ, arbitrary over data),

so the flow for any data lies in the span of the fields χ_i(θ) = M(θ)^{-1} ∇φ_i(θ), i = 1..d, and
the generator family is G(θ, a) = M(θ)^{-1} ∂φ(θ)ᵀ a. Metrics:

- ``"euclidean"``: M = I;
- ``"entropy"``: M(θ)^{-1} = diag(θ) on the model's positive blocks (mirror map Ψ = Σ θ log θ − θ,
  multiplicative updates θ' = −θ ⊙ ∇L), identity on the others — so NMF (all blocks positive) and
  ICNN (U positive, V and b Euclidean) are both covered;
- a callable ``inverse_metric(θ, g) -> M(θ)^{-1} g`` supplied by the user.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .errors import InputError
from .models.base import Model
from .trace import VectorFamily

Array = jax.Array
InverseMetric = Callable[[Array, Array], Array]

METRICS = ("euclidean", "entropy")


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """θ' = −M(θ)^{-1}∇L(θ). ``metric`` is ``"euclidean"``, ``"entropy"`` or a callable
    ``(θ, g) -> M(θ)^{-1} g`` (shapes ``(D,), (D,) -> (D,)``)."""

    metric: str | InverseMetric = "euclidean"

    name = "gradient"

    def __post_init__(self):
        if isinstance(self.metric, str) and self.metric not in METRICS:
            raise InputError(f"unknown metric {self.metric!r}; known: {', '.join(METRICS)}")

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else "custom"

    def state_dim(self, model: Model) -> int:
        return model.D

    def inverse_metric(self, model: Model) -> InverseMetric:
        """(θ, g) ↦ M(θ)^{-1} g for this flow on ``model``."""
        if callable(self.metric):
            return self.metric
        if self.metric == "euclidean":
            return lambda theta, g: g
        mask = jnp.asarray(model.positive_mask)
        if not bool(mask.any()):
            raise InputError(
                f"the entropy metric needs positive parameter blocks; {model.label} has none"
            )
        return lambda theta, g: jnp.where(mask, theta * g, g)

    def family(self, model: Model) -> VectorFamily:
        """G(θ, a) = M(θ)^{-1} ∂φ(θ)ᵀ a on R^D, with m = d coefficients."""
        phi, inv_metric = model.phi, self.inverse_metric(model)

        def field(theta: Array, a: Array) -> Array:
            _, pullback = jax.vjp(phi, theta)
            return inv_metric(theta, pullback(a)[0])

        return VectorFamily(field, model.D, model.d, f"{self.name}/{self.metric_name}")

    def sample_points(self, model: Model, key: Array, n: int) -> Array:
        """Generic points of the state space, shape ``(n, D)``."""
        return model.sample_points(key, n)

    def check_point(self, model: Model, theta: np.ndarray) -> None:
        """Raise `InputError` if a state is outside the flow's domain."""
        if self.metric == "entropy" and np.any(np.asarray(theta)[model.positive_mask] <= 0):
            raise InputError("the entropy metric is defined only where mirror coordinates are > 0")
