"""`GradientFlow`: θ' = −M(θ)^{-1}∇L(θ) (MATH.md §1.3, §4.1).

With L(θ) = ℓ(φ(θ)), ∇L = ∂φ(θ)ᵀ c (c = ∇_φ ℓ, arbitrary over data), the flow for any data lies
in the span of the fields χ_i(θ) = M(θ)^{-1} ∇φ_i(θ), i = 1..d: the generator family is
G(θ, a) = M(θ)^{-1} ∂φ(θ)ᵀ a on R^D.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from conflow.engine.trace import VectorFamily
from conflow.errors import InputError
from conflow.exact.polynomial import gradient_fields, scale_coordinates
from conflow.flows.base import AbstractFlow, FlowDynamics
from conflow.flows.metrics import (
    InverseMetric,
    check_metric,
    check_positive,
    inverse_metric,
    mirror_coordinates,
    tree_exp,
    tree_log,
    tree_negative,
    tree_where,
)
from conflow.models.base import Model

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GradientFlow(AbstractFlow):
    """θ' = −M(θ)^{-1}∇L(θ). ``metric`` is ``"euclidean"``, ``"entropy"`` or a callable
    ``(θ, g) -> M(θ)^{-1} g`` (shapes ``(D,), (D,) -> (D,)``; on parameter pytrees when
    integrated)."""

    metric: str | InverseMetric = "euclidean"

    def __post_init__(self):
        check_metric(self.metric)

    @property
    def name(self) -> str:
        return "gradient"

    @property
    def label(self) -> str:
        return {"euclidean": "gradient", "entropy": "mirror"}.get(self.metric_name,
                                                                  "gradient/custom")

    def state_dim(self, model: Model) -> int:
        return model.D

    def theta_of_state(self, model: Model, z: np.ndarray) -> np.ndarray:
        return np.asarray(z)

    def family(self, model: Model) -> VectorFamily:
        """G(θ, a) = M(θ)^{-1} ∂φ(θ)ᵀ a on R^D, with m = d coefficients."""
        phi, inv_metric = model.phi, inverse_metric(self.metric, model)

        def field(theta: Array, a: Array) -> Array:
            _, pullback = jax.vjp(phi, theta)
            return inv_metric(theta, pullback(a)[0])

        sample_field = None
        if model.pairing is not None:
            pairing_grad = jax.grad(model.pairing)

            def sample_field(theta: Array, f: Array) -> Array:
                return inv_metric(theta, pairing_grad(theta, f))

        return VectorFamily(field, model.D, model.d, f"{self.name}/{self.metric_name}",
                            sample_field, model.n_pairing_coeffs or None)

    def polynomial_fields(self, model: Model, phi_polys: Sequence[object]) -> list:
        """χ_i = ∇φ_i, times θ_j on the mirror coordinates for the entropy metric."""
        mask = mirror_coordinates(self.metric, model)
        fields = gradient_fields(phi_polys, model.D)
        return fields if mask is None else scale_coordinates(fields, mask)

    def sample_points(self, model: Model, key: Array | int, n: int) -> Array:
        """Generic points of the state space, shape ``(n, D)``."""
        return model.sample_points(key, n)

    def check_point(self, model: Model, theta: np.ndarray) -> None:
        if self.metric == "entropy" and np.any(np.asarray(theta)[model.positive_mask] <= 0):
            raise InputError("the entropy metric is defined only where mirror coordinates are > 0")

    def dynamics(self, grad: Callable, mask: Any) -> FlowDynamics:
        return _GradientDynamics(self, grad, mask)

    def check_initial(self, params, velocity, mask, t0) -> None:
        if self.metric == "entropy":
            check_positive(params, mask, "the mirror (entropy) flows need θ0 > 0 on positive "
                                         "coordinates")


class _GradientDynamics(FlowDynamics):
    """y = θ (Euclidean, custom metric) or y = log θ on mirror coordinates (entropy: then
    y' = θ'/θ = −∇L there, which keeps θ > 0 exactly)."""

    def __init__(self, flow: GradientFlow, grad: Callable, mask: Any):
        self.flow, self.grad, self.mask = flow, grad, mask
        self.log_coordinates = flow.metric == "entropy"

    def to_state(self, params, velocity, t0):
        return tree_log(self.mask, params) if self.log_coordinates else params

    def params(self, y):
        return tree_exp(self.mask, y) if self.log_coordinates else y

    def velocity(self, t, y, data):
        params = self.params(y)
        g = self.grad(params, data)
        metric = self.flow.metric
        if callable(metric):
            return tree_negative(metric(params, g))
        if metric == "entropy":
            return tree_where(self.mask, jax.tree_util.tree_map(lambda x, gi: -x * gi, params, g),
                              tree_negative(g))
        return tree_negative(g)

    def __call__(self, t, y, data):
        if self.log_coordinates:  # ξ = log θ: ξ' = θ'/θ = −∇L on mirror coordinates
            return tree_negative(self.grad(self.params(y), data))
        return self.velocity(t, y, data)
