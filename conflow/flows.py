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

Momentum flows (MATH.md §3.1, §3.2). Convention: **τ multiplies θ'** (damping rate),

    θ'' + τ(t) θ' = −∇L(θ)                       (Euclidean),
    θ'' + τ(t) θ' = −diag(τθ + θ') ∇L(θ)          (mirror / entropy momentum, on positive blocks),

with constant τ ≥ 0 (heavy ball) or τ(t) = 3/t (Nesterov). Conserved quantities then carry e^{τt}
(t³ for Nesterov). The state is z = (s, θ, v) ∈ R^{2D+1}, v = θ', with the time variable s = e^{τt}
for constant τ > 0 and s = t for τ = 0 and Nesterov. The flow for data with ∇_φℓ = c is
z' = χ_0(z) − Σ_i c_i χ_i(z), with

    drift   χ_0 = (τ s, v, −τ v)  (τ > 0),   (1, v, 0)  (τ = 0),   (1, v, −(3/s) v)  (Nesterov),
    forces  χ_i = (0, 0_D, M ∇φ_i(θ)),   M = I or diag(τθ + v) on mirror coordinates,

and the count is 2D + 1 − dim Lie{χ_0, χ_1, …, χ_d}(z) (MATH.md §3.2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .errors import InputError
from .models.base import Model, as_generator
from .trace import VectorFamily

Array = jax.Array
InverseMetric = Callable[[Array, Array], Array]

METRICS = ("euclidean", "entropy")
NESTEROV = "nesterov"


class _MetricFlow:
    """What gradient and momentum flows share: a metric (name or callable) and its checks."""

    metric: str | InverseMetric

    @property
    def metric_name(self) -> str:
        return self.metric if isinstance(self.metric, str) else "custom"

    def validate(self, model: Model) -> None:
        """Raise `InputError` if the flow cannot act on ``model`` (entropy metric, no positive
        blocks)."""
        if self.metric == "entropy":
            _entropy_mask(model)


@dataclasses.dataclass(frozen=True)
class GradientFlow(_MetricFlow):
    """θ' = −M(θ)^{-1}∇L(θ). ``metric`` is ``"euclidean"``, ``"entropy"`` or a callable
    ``(θ, g) -> M(θ)^{-1} g`` (shapes ``(D,), (D,) -> (D,)``)."""

    metric: str | InverseMetric = "euclidean"

    name = "gradient"

    def __post_init__(self):
        _check_metric(self.metric)

    def state_dim(self, model: Model) -> int:
        return model.D

    def inverse_metric(self, model: Model) -> InverseMetric:
        """(θ, g) ↦ M(θ)^{-1} g for this flow on ``model``."""
        return _inverse_metric(self.metric, model)

    def family(self, model: Model) -> VectorFamily:
        """G(θ, a) = M(θ)^{-1} ∂φ(θ)ᵀ a on R^D, with m = d coefficients."""
        phi, inv_metric = model.phi, self.inverse_metric(model)

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

    def sample_points(self, model: Model, key: Array | int, n: int) -> Array:
        """Generic points of the state space, shape ``(n, D)``."""
        return model.sample_points(key, n)

    def check_point(self, model: Model, theta: np.ndarray) -> None:
        """Raise `InputError` if a state is outside the flow's domain."""
        if self.metric == "entropy" and np.any(np.asarray(theta)[model.positive_mask] <= 0):
            raise InputError("the entropy metric is defined only where mirror coordinates are > 0")


def mirror_metric(potential: Callable[[Array], Array]) -> InverseMetric:
    """The inverse metric of the mirror map ∇Ψ: (θ, g) ↦ ∇²Ψ(θ)^{-1} g.

    The mirror flow d/dt ∇Ψ(θ) = −∇L is θ' = −∇²Ψ(θ)^{-1}∇L (MATH.md §4.1). ``potential`` maps
    θ, shape ``(D,)``, to a scalar; its Hessian must be invertible on the domain. Use it as
    ``GradientFlow(metric=mirror_metric(Ψ))`` or ``MomentumFlow(τ, metric=mirror_metric(Ψ))``.
    """
    hessian = jax.hessian(potential)
    return lambda theta, g: jnp.linalg.solve(hessian(theta), g)


def _inverse_metric(metric: str | InverseMetric, model: Model) -> InverseMetric:
    """(w, g) ↦ M(w)^{-1} g: identity, entropy (w ⊙ g on positive blocks) or the user's."""
    if callable(metric):
        return metric
    if metric == "euclidean":
        return lambda w, g: g
    mask = _entropy_mask(model)
    return lambda w, g: jnp.where(mask, w * g, g)


def _check_metric(metric: object) -> None:
    if isinstance(metric, str):
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    elif not callable(metric):
        raise InputError(f"metric must be {' or '.join(METRICS)} or a callable (w, g) -> "
                         f"M(w)^-1 g, got {metric!r}")


def _entropy_mask(model: Model) -> jax.Array:
    mask = jnp.asarray(model.positive_mask)
    if not bool(mask.any()):
        raise InputError(
            f"the entropy metric needs positive parameter blocks; {model.label} has none"
        )
    return mask


@dataclasses.dataclass(frozen=True)
class MomentumFlow(_MetricFlow):
    """θ'' + τθ' = −M(w)^{-1}∇L with w = τθ + θ', on the state (s, θ, v).

    M = I is heavy ball; the entropy metric gives θ'' + τθ' = −diag(τθ + θ')∇L on the model's
    positive blocks (mirror momentum, d/dt ∇Ψ(θ' + τθ) = −∇L with Ψ = Σ w log w − w, MATH.md §3.1).

    Attributes:
        damping: constant τ ≥ 0 (τ multiplies θ'), or ``"nesterov"`` for τ(t) = 3/t.
        metric: ``"euclidean"``, ``"entropy"`` or a callable ``(w, g) -> M(w)^{-1} g`` (e.g.
            `mirror_metric` of a potential Ψ), evaluated at w = τθ + θ'.
    """

    damping: float | str = 0.0
    metric: str = "euclidean"

    def __post_init__(self):
        _check_metric(self.metric)
        if isinstance(self.damping, str):
            if self.damping != NESTEROV:
                raise InputError(f"damping must be a number τ >= 0 or 'nesterov', got "
                                 f"{self.damping!r}")
        elif not (np.isfinite(self.damping) and self.damping >= 0):
            raise InputError(f"damping τ must be finite and >= 0, got {self.damping}")

    @property
    def name(self) -> str:
        return NESTEROV if self.damping == NESTEROV else "momentum"

    @property
    def tau(self) -> float | None:
        """The constant τ, or ``None`` for Nesterov."""
        return None if self.damping == NESTEROV else float(self.damping)

    def state_dim(self, model: Model) -> int:
        return 2 * model.D + 1

    def family(self, model: Model) -> VectorFamily:
        """G(z, a) = a_0 χ_0(z) + Σ_i a_i χ_i(z) on R^{2D+1}, m = d + 1 coefficients."""
        D, phi, tau = model.D, model.phi, self.tau
        inv_metric = _inverse_metric(self.metric, model)

        def make_field(gradient: Callable[[Array, Array], Array]) -> Callable:
            # a_0 χ_0 + (0, 0, M(w)^{-1} gradient(θ, a[1:])), gradient = ∂φ(θ)ᵀa or ∇⟨a(f), φ⟩
            def field(z: Array, a: Array) -> Array:
                s, theta, v = z[0], z[1 : D + 1], z[D + 1 :]
                rate = 3.0 / s if tau is None else tau  # τ(t), with t = s for Nesterov
                if tau is None:
                    drift = jnp.concatenate([jnp.ones(1), v, -rate * v])
                elif tau == 0.0:
                    drift = jnp.concatenate([jnp.ones(1), v, jnp.zeros(D)])
                else:
                    drift = jnp.concatenate([(tau * s)[None], v, -tau * v])
                force = inv_metric(rate * theta + v, gradient(theta, a[1:]))
                return a[0] * drift + jnp.concatenate([jnp.zeros(D + 1), force])

            return field

        def pullback(theta: Array, a: Array) -> Array:
            return jax.vjp(phi, theta)[1](a)[0]

        sample_field = None if model.pairing is None else make_field(jax.grad(model.pairing))
        return VectorFamily(make_field(pullback), 2 * D + 1, model.d + 1,
                            f"{self.name}/{self.metric_name}", sample_field,
                            model.n_pairing_coeffs + 1 if model.pairing is not None else None)

    def sample_points(self, model: Model, key: Array | int, n: int) -> Array:
        """Generic states (s, θ, v), shape ``(n, 2D + 1)``: s ∈ (0.5, 2) (s > 0 is required for
        τ > 0 and Nesterov), θ from the model, v Gaussian and positive on mirror coordinates."""
        rng = as_generator(key)
        s = rng.uniform(0.5, 2.0, (n, 1))
        theta = np.asarray(model.sample_points(rng, n))
        v = rng.standard_normal((n, model.D))
        if self.metric == "entropy":
            v = np.where(np.asarray(_entropy_mask(model)), np.abs(v) + 0.1, v)
        return jnp.asarray(np.concatenate([s, theta, v], axis=1))

    def check_point(self, model: Model, z: np.ndarray) -> None:
        """Raise `InputError` if a state (s, θ, v) is outside the flow's domain."""
        z = np.asarray(z)
        D = model.D
        if z.shape != (2 * D + 1,):
            raise InputError(f"a momentum state has shape ({2 * D + 1},), got {z.shape}")
        s, theta, v = z[0], z[1 : D + 1], z[D + 1 :]
        if self.tau is None and s <= 0:
            raise InputError(f"Nesterov's τ(t) = 3/t needs t > 0, got t = {s}")
        if self.tau and s <= 0:
            raise InputError(f"the time variable s = exp(τt) must be > 0, got {s}")
        if self.metric == "entropy":
            mask = model.positive_mask
            rate = 3.0 / s if self.tau is None else self.tau
            if np.any(theta[mask] <= 0) or np.any((rate * theta + v)[mask] <= 0):
                raise InputError("mirror momentum needs θ > 0 and τθ + θ' > 0 on mirror "
                                 "coordinates")
