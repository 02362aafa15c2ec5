"""`GradientFlow`: θ' + λ(t)θ = −M(θ)^{-1}∇L(θ) (MATH.md §1.3, §2.10, §4.1); λ = 0 by default.

With L(θ) = ℓ(φ(θ)), ∇L = ∂φ(θ)ᵀ c (c = ∇_φ ℓ, arbitrary over data), the flow for any data lies
in the span of the fields χ_i(θ) = M(θ)^{-1} ∇φ_i(θ), i = 1..d: the generator family is
G(θ, a) = M(θ)^{-1} ∂φ(θ)ᵀ a on R^D.

Weight decay (`conflow.flows.decay`). The state gains a time coordinate, z = (s, θ) ∈ R^{D+1}
(s = e^{λt} for a constant λ > 0, s = t for a function λ(t)), and the flow for data with
∇_φℓ = c is z' = χ_0(z) − Σ_i c_i χ_i(z) with

    drift   χ_0 = (λ s, −λ θ)   (constant λ),    (1, −λ(s) θ)   (λ(t), s = t),
    forces  χ_i = (0, M(θ)^{-1} ∇φ_i(θ)),

so G(z, a) = a_0 χ_0 + Σ_i a_i χ_i, m = d + 1 coefficients, and the count is
D + 1 − dim Lie{χ_0, χ_1, …, χ_d}(z), blind as for every flow. A law h(s, θ) is orthogonal to
the drift, so constant along s ↦ (e^{Λ}s, e^{−Λ}θ) — a function of e^{Λ(t)}θ; P3's theorem
(MATH.md §2.10) says the laws are exactly H(e^{Λ(t)}θ) with H a law without weight decay (when
every θ has a data set with ∇L = 0 and W(cθ) = W(θ), e.g. homogeneous φ), hence the same count.
The count never uses this: a model where it fails shows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine.trace import VectorFamily
from conflow.errors import InputError
from conflow.exact.polynomial import (
    Poly,
    exact_rational,
    gradient_fields,
    scale_coordinates,
    shift_variables,
)
from conflow.flows import decay
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
from conflow.models.base import Model, as_generator

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class GradientFlow(AbstractFlow):
    """θ' + λ(t)θ = −M(θ)^{-1}∇L(θ).

    Attributes:
        metric: ``"euclidean"``, ``"entropy"`` or a callable ``(θ, g) -> M(θ)^{-1} g`` (shapes
            ``(D,), (D,) -> (D,)``; on parameter pytrees when integrated).
        weight_decay: λ: a constant ≥ 0 (default 0: no decay, state θ) or a function of time
            ``t -> λ(t) ≥ 0`` (JAX-traceable); with decay the state is z = (s, θ) (module
            docstring). The decay is decoupled from the metric: −λθ for every M.
    """

    metric: str | InverseMetric = "euclidean"
    weight_decay: decay.WeightDecay = 0.0

    def __post_init__(self):
        check_metric(self.metric)
        object.__setattr__(self, "weight_decay", decay.check_weight_decay(self.weight_decay))

    @property
    def name(self) -> str:
        return "gradient"

    @property
    def label(self) -> str:
        base = {"euclidean": "gradient", "entropy": "mirror"}.get(self.metric_name,
                                                                  "gradient/custom")
        wd = decay.decay_label(self.weight_decay)
        return f"{base}+wd({wd})" if wd else base

    @property
    def has_time(self) -> bool:
        return decay.is_decayed(self.weight_decay)

    @property
    def time_name(self) -> str:
        return "s" if self.has_time and decay.is_constant(self.weight_decay) else "t"

    @property
    def time_note(self) -> str:
        return "s = exp(λ t)" if self.time_name == "s" else ""

    def rate(self, t: Array) -> Array:
        """λ(t)."""
        return decay.rate(self.weight_decay, t)

    def time_variable(self, t: Array) -> Array:
        """s = e^{λt} for a constant λ > 0, s = t otherwise."""
        t = jnp.asarray(t, jnp.float64)
        return jnp.exp(self.weight_decay * t) if self.time_name == "s" else t

    def time_of(self, s: Array) -> Array:
        return jnp.log(s) / self.weight_decay if self.time_name == "s" else s

    def state_dim(self, model: Model) -> int:
        return model.D + 1 if self.has_time else model.D

    def theta_of_state(self, model: Model, z: np.ndarray) -> np.ndarray:
        return np.asarray(z)[1:] if self.has_time else np.asarray(z)

    def family(self, model: Model) -> VectorFamily:
        """G(θ, a) = M(θ)^{-1} ∂φ(θ)ᵀ a on R^D, with m = d coefficients; with weight decay
        G(z, a) = a_0 χ_0(z) + (0, M(θ)^{-1} ∂φ(θ)ᵀ a_{1:}) on R^{D+1}, m = d + 1."""
        phi, inv_metric = model.phi, inverse_metric(self.metric, model)

        def pullback(theta: Array, a: Array) -> Array:
            return jax.vjp(phi, theta)[1](a)[0]

        pairing_grad = None if model.pairing is None else jax.grad(model.pairing)
        n_sample = model.n_pairing_coeffs or None
        name = f"{self.name}/{self.metric_name}"
        jacobian = model.phi_jacobian
        forces = None
        if jacobian is not None:
            def forces(theta: Array) -> Array:  # (D, d): column j is M(θ)^{-1} ∇φ_j(θ)
                return jax.vmap(lambda g: inv_metric(theta, g), in_axes=1, out_axes=1)(
                    jacobian(theta).T)

        if not self.has_time:
            sample_field = None
            if pairing_grad is not None:
                def sample_field(theta: Array, f: Array) -> Array:
                    return inv_metric(theta, pairing_grad(theta, f))

            return VectorFamily(lambda theta, a: inv_metric(theta, pullback(theta, a)), model.D,
                                model.d, name, sample_field, n_sample, forces)

        drift = self._drift
        generators = None
        if forces is not None:
            def generators(z: Array) -> Array:  # (D + 1, d + 1): χ_0 = the drift, then (0, force)
                f = forces(z[1:])
                return jnp.concatenate([drift(z)[:, None], jnp.pad(f, ((1, 0), (0, 0)))], axis=1)

        def make_field(gradient: Callable[[Array, Array], Array]) -> Callable:
            def field(z: Array, a: Array) -> Array:
                theta = z[1:]
                force = inv_metric(theta, gradient(theta, a[1:]))
                return a[0] * drift(z) + jnp.concatenate([jnp.zeros(1, force.dtype), force])

            return field

        sample_field = None if pairing_grad is None else make_field(pairing_grad)
        return VectorFamily(make_field(pullback), model.D + 1, model.d + 1, name + "+wd",
                            sample_field, None if n_sample is None else n_sample + 1, generators)

    def _drift(self, z: Array) -> Array:
        """χ_0(z) = (λs, −λθ) (constant λ) or (1, −λ(s)θ) (s = t)."""
        s, theta = z[0], z[1:]
        if decay.is_constant(self.weight_decay):
            lam = self.weight_decay
            return jnp.concatenate([(lam * s)[None], -lam * theta])
        return jnp.concatenate([jnp.ones(1, z.dtype), -self.rate(s) * theta])

    def polynomial_fields(self, model: Model, phi_polys: Sequence[object]) -> list:
        """χ_i = ∇φ_i, times θ_j on the mirror coordinates for the entropy metric; with a
        constant weight decay λ, [χ_0, χ_1, …, χ_d] on (s, θ) with χ_0 = (λs, −λθ) (a function
        λ(t) has no polynomial form: `InputError`)."""
        mask = mirror_coordinates(self.metric, model)
        if not self.has_time:
            fields = gradient_fields(phi_polys, model.D)
            return fields if mask is None else scale_coordinates(fields, mask)
        if not decay.is_constant(self.weight_decay):
            raise InputError("the exact engine needs a polynomial flow: a weight decay λ(t) "
                             "given as a function is not polynomial")
        n = model.D + 1
        fields = gradient_fields([shift_variables(P, 1) for P in phi_polys], n)
        if mask is not None:
            fields = scale_coordinates(fields, [False, *mask])
        lam = exact_rational(self.weight_decay, "weight decay λ")
        drift = (Poly.var(0).scale(lam),) + tuple(Poly.var(j).scale(-lam) for j in range(1, n))
        return [drift, *fields]

    def sample_points(self, model: Model, key: Array | int, n: int) -> Array:
        """Generic points of the state space, shape ``(n, D)``; with weight decay
        ``(n, D + 1)``: s uniform in (0.5, 2) (s = e^{λt} > 0, or t), then θ from the model."""
        if not self.has_time:
            return model.sample_points(key, n)
        rng = as_generator(key)
        s = rng.uniform(0.5, 2.0, (n, 1))
        theta = np.asarray(model.sample_points(rng, n))
        return jnp.asarray(np.concatenate([s, theta], axis=1))

    def check_point(self, model: Model, theta: np.ndarray) -> None:
        z = np.asarray(theta)
        n = self.state_dim(model)
        if z.shape != (n,):
            raise InputError(f"a state of {self.label} has shape ({n},), got {z.shape}")
        if self.time_name == "s" and z[0] <= 0:
            raise InputError(f"the time variable s = exp(λt) must be > 0, got {z[0]}")
        theta = self.theta_of_state(model, z)
        if self.metric == "entropy" and np.any(theta[model.positive_mask] <= 0):
            raise InputError("the entropy metric is defined only where mirror coordinates are > 0")

    def dynamics(self, grad: Callable, mask: Any) -> FlowDynamics:
        return _GradientDynamics(self, grad, mask)

    def check_initial(self, params, velocity, mask, t0) -> None:
        if self.metric == "entropy":
            check_positive(params, mask, "the mirror (entropy) flows need θ0 > 0 on positive "
                                         "coordinates")


class _GradientDynamics(FlowDynamics):
    """y = θ (Euclidean, custom metric) or y = log θ on mirror coordinates (entropy: then
    y' = θ'/θ = −∇L − λ(t) there, which keeps θ > 0 exactly). Weight decay adds −λ(t)θ to θ'."""

    def __init__(self, flow: GradientFlow, grad: Callable, mask: Any):
        self.flow, self.grad, self.mask = flow, grad, mask
        self.log_coordinates = flow.metric == "entropy"
        self.decayed = decay.is_decayed(flow.weight_decay)

    def to_state(self, params, velocity, t0):
        return tree_log(self.mask, params) if self.log_coordinates else params

    def params(self, y):
        return tree_exp(self.mask, y) if self.log_coordinates else y

    def velocity(self, t, y, data):
        params = self.params(y)
        g = self.grad(params, data)
        metric = self.flow.metric
        if callable(metric):
            out = tree_negative(metric(params, g))
        elif metric == "entropy":
            out = tree_where(self.mask, jax.tree_util.tree_map(lambda x, gi: -x * gi, params, g),
                             tree_negative(g))
        else:
            out = tree_negative(g)
        if not self.decayed:
            return out
        lam = self.flow.rate(t)
        return jax.tree_util.tree_map(lambda o, x: o - lam * x, out, params)

    def __call__(self, t, y, data):
        if self.log_coordinates:  # ξ = log θ: ξ' = θ'/θ = −∇L − λ on mirror coordinates
            params = self.params(y)
            g = self.grad(params, data)
            if not self.decayed:
                return tree_negative(g)
            lam = self.flow.rate(t)
            return tree_where(self.mask, jax.tree_util.tree_map(lambda gi: -gi - lam, g),
                              jax.tree_util.tree_map(lambda gi, x: -gi - lam * x, g, params))
        return self.velocity(t, y, data)
