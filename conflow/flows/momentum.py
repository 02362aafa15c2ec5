"""`MomentumFlow`: θ'' + τ(t) θ' = −M(w)^{-1}∇L(θ), w = τθ + θ' (MATH.md §3.1, §3.2).

Convention: **τ multiplies θ'** (damping rate), constant τ ≥ 0 (heavy ball) or τ(t) = 3/t
(Nesterov). Conserved quantities then carry e^{τt} (t³ for Nesterov). The state is
z = (s, θ, v) ∈ R^{2D+1}, v = θ', with the time variable s = e^{τt} for constant τ > 0 and s = t
for τ = 0 and Nesterov. The flow for data with ∇_φℓ = c is z' = χ_0(z) − Σ_i c_i χ_i(z), with

    drift   χ_0 = (τ s, v, −τ v)  (τ > 0),   (1, v, 0)  (τ = 0),   (1, v, −(3/s) v)  (Nesterov),
    forces  χ_i = (0, 0_D, M ∇φ_i(θ)),   M = I or diag(τθ + v) on mirror coordinates,

and the count is 2D + 1 − dim Lie{χ_0, χ_1, …, χ_d}(z) (MATH.md §3.2). The entropy metric gives
mirror momentum θ'' + τθ' = −diag(τθ + θ')∇L, i.e. d/dt ∇Ψ(θ' + τθ) = −∇L, Ψ = Σ w log w − w.

Weight decay λ (`conflow.flows.decay`, MATH.md §2.10): θ'' + τθ' + λ(t)θ = −M(w)^{-1}∇L, the L2
penalty's force −λθ added to the drift's velocity part, χ_0 = (τs, v, −τv − λθ) (and likewise for
τ = 0 and Nesterov), with λ(t) at t = log(s)/τ (τ > 0) or t = s. The state is unchanged. For an
isometry K (⟨∇L, Kθ⟩ = 0, K antisymmetric) ⟨θ, Kθ⟩ = 0, so the Noether laws e^{τt}⟨θ', Kθ⟩
survive any weight decay; the count, as always, is blind.
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
from conflow.exact.polynomial import Poly, exact_rational, momentum_fields
from conflow.flows import decay
from conflow.flows.base import AbstractFlow, FlowDynamics
from conflow.flows.metrics import (
    InverseMetric,
    check_metric,
    check_positive,
    entropy_mask,
    inverse_metric,
    mirror_coordinates,
    tree_exp,
    tree_log,
    tree_where,
)
from conflow.models.base import Model, as_generator

Array = jax.Array

NESTEROV = "nesterov"


@dataclasses.dataclass(frozen=True)
class MomentumFlow(AbstractFlow):
    """θ'' + τθ' = −M(w)^{-1}∇L with w = τθ + θ', on the state (s, θ, v).

    M = I is heavy ball; the entropy metric gives θ'' + τθ' = −diag(τθ + θ')∇L on the model's
    positive blocks (mirror momentum, MATH.md §3.1).

    Attributes:
        damping: constant τ ≥ 0 (τ multiplies θ'), or ``"nesterov"`` for τ(t) = 3/t.
        metric: ``"euclidean"``, ``"entropy"`` or a callable ``(w, g) -> M(w)^{-1} g`` (e.g.
            `mirror_metric` of a potential Ψ), evaluated at w = τθ + θ' (on parameter pytrees
            when integrated).
        weight_decay: λ ≥ 0, a constant (default 0) or a function of time ``t -> λ(t)``:
            θ'' + τθ' + λθ = −M(w)^{-1}∇L (module docstring).
    """

    damping: float | str = 0.0
    metric: str | InverseMetric = "euclidean"
    weight_decay: decay.WeightDecay = 0.0

    has_velocity = True

    def __post_init__(self):
        check_metric(self.metric)
        object.__setattr__(self, "weight_decay", decay.check_weight_decay(self.weight_decay))
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
    def label(self) -> str:
        prefix = {"euclidean": "", "entropy": "mirror-"}.get(self.metric_name, "custom-")
        wd = decay.decay_label(self.weight_decay)
        suffix = f"+wd({wd})" if wd else ""
        if self.tau is None:
            return prefix + "nesterov" + suffix
        return (prefix + "momentum" if prefix else "heavy-ball") + f"(τ={self.tau:g})" + suffix

    @property
    def time_name(self) -> str:
        return "s" if self.tau else "t"

    @property
    def time_note(self) -> str:
        return "s = exp(τ t)" if self.tau else ""

    def decay_rate(self, s: Array) -> Array:
        """λ(t) at the state's time coordinate s."""
        return decay.rate(self.weight_decay, self.time_of(s))

    @property
    def tau(self) -> float | None:
        """The constant τ, or ``None`` for Nesterov."""
        return None if self.damping == NESTEROV else float(self.damping)

    def rate(self, t: Array) -> Array:
        """τ(t): the constant τ, or 3/t (Nesterov)."""
        return 3.0 / t if self.tau is None else self.tau

    def state_dim(self, model: Model) -> int:
        return 2 * model.D + 1

    def theta_of_state(self, model: Model, z: np.ndarray) -> np.ndarray:
        return np.asarray(z)[1 : model.D + 1]

    def family(self, model: Model) -> VectorFamily:
        """G(z, a) = a_0 χ_0(z) + Σ_i a_i χ_i(z) on R^{2D+1}, m = d + 1 coefficients."""
        D, phi, tau = model.D, model.phi, self.tau
        inv_metric = inverse_metric(self.metric, model)
        decayed = decay.is_decayed(self.weight_decay)

        def make_field(gradient: Callable[[Array, Array], Array]) -> Callable:
            # a_0 χ_0 + (0, 0, M(w)^{-1} gradient(θ, a[1:])), gradient = ∂φ(θ)ᵀa or ∇⟨a(f), φ⟩
            def field(z: Array, a: Array) -> Array:
                s, theta, v = z[0], z[1 : D + 1], z[D + 1 :]
                rate = self.rate(s)  # τ(t), with t = s for Nesterov
                if tau is None:
                    drift = jnp.concatenate([jnp.ones(1), v, -rate * v])
                elif tau == 0.0:
                    drift = jnp.concatenate([jnp.ones(1), v, jnp.zeros(D)])
                else:
                    drift = jnp.concatenate([(tau * s)[None], v, -tau * v])
                if decayed:
                    drift = drift - jnp.concatenate([jnp.zeros(D + 1),
                                                     self.decay_rate(s) * theta])
                force = inv_metric(rate * theta + v, gradient(theta, a[1:]))
                return a[0] * drift + jnp.concatenate([jnp.zeros(D + 1), force])

            return field

        def pullback(theta: Array, a: Array) -> Array:
            return jax.vjp(phi, theta)[1](a)[0]

        sample_field = None if model.pairing is None else make_field(jax.grad(model.pairing))
        return VectorFamily(make_field(pullback), 2 * D + 1, model.d + 1,
                            f"{self.name}/{self.metric_name}", sample_field,
                            model.n_pairing_coeffs + 1 if model.pairing is not None else None)

    def polynomial_fields(self, model: Model, phi_polys: Sequence[object]) -> list:
        """[χ_0, χ_1, …, χ_d] of `conflow.exact.polynomial.momentum_fields` (Nesterov's drift
        multiplied by t, which leaves the trace unchanged); a constant weight decay λ adds −λθ
        to the drift's velocity part (−λtθ for Nesterov's multiplied drift)."""
        fields = momentum_fields(phi_polys, model.D, self.tau,
                                 metric_mask=mirror_coordinates(self.metric, model),
                                 nesterov=self.tau is None)
        if not decay.is_decayed(self.weight_decay):
            return fields
        if not decay.is_constant(self.weight_decay):
            raise InputError("the exact engine needs a polynomial flow: a weight decay λ(t) "
                             "given as a function is not polynomial")
        D = model.D
        lam = exact_rational(self.weight_decay, "weight decay λ")
        factor = Poly.var(0) if self.tau is None else Poly.const(1)  # Nesterov: times t
        drift = list(fields[0])
        for j in range(D):
            drift[1 + D + j] = drift[1 + D + j] - (factor * Poly.var(1 + j)).scale(lam)
        return [tuple(drift), *fields[1:]]

    def sample_points(self, model: Model, key: Array | int, n: int) -> Array:
        """Generic states (s, θ, v), shape ``(n, 2D + 1)``: s ∈ (0.5, 2) (s > 0 is required for
        τ > 0 and Nesterov), θ from the model, v Gaussian and positive on mirror coordinates."""
        rng = as_generator(key)
        s = rng.uniform(0.5, 2.0, (n, 1))
        theta = np.asarray(jax.device_get(model.sample_points(rng, n)))
        v = rng.standard_normal((n, model.D))
        if self.metric == "entropy":
            v = np.where(np.asarray(entropy_mask(model)), np.abs(v) + 0.1, v)
        return jax.device_put(np.concatenate([s, theta, v], axis=1))

    def check_point(self, model: Model, z: np.ndarray) -> None:
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
            rate = self.rate(s)
            if np.any(theta[mask] <= 0) or np.any((rate * theta + v)[mask] <= 0):
                raise InputError("mirror momentum needs θ > 0 and τθ + θ' > 0 on mirror "
                                 "coordinates")

    # ------------------------------------------------------------------------- integration
    def dynamics(self, grad: Callable, mask: Any) -> FlowDynamics:
        return _MomentumDynamics(self, grad, mask)

    def check_initial(self, params, velocity, mask, t0) -> None:
        if self.metric != "entropy":
            return
        check_positive(params, mask, "the mirror (entropy) flows need θ0 > 0 on positive "
                                     "coordinates")
        rate = self.rate(t0)
        pos = jax.tree_util.tree_leaves(mask)
        leaves, vel = jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(velocity)
        if any(bool(jnp.any(m & (v + rate * x <= 0))) for m, x, v in zip(pos, leaves, vel)):
            raise InputError("mirror momentum needs w0 = θ0' + τθ0 > 0 on positive "
                             "coordinates (with τ = 0 and θ0' = 0 the flow does not move)")

    def default_t0(self) -> float:
        return 1e-3 if self.tau is None else 0.0  # Nesterov's 3/t is singular at 0

    def time_variable(self, t: Array) -> Array:
        """s = e^{τt} for τ > 0, s = t for τ = 0 and Nesterov."""
        t = jnp.asarray(t, jnp.float64)
        return jnp.exp(self.tau * t) if self.tau else t

    def time_of(self, s: Array) -> Array:
        """t = log(s)/τ for τ > 0, t = s for τ = 0 and Nesterov."""
        return jnp.log(s) / self.tau if self.tau else s


class _MomentumDynamics(FlowDynamics):
    """y = (θ, v) (Euclidean, callable metric: v' = −τv − M(τθ + v)^{-1}∇L); mirror momentum:
    y = (log θ, log w) on mirror coordinates with w = θ' + τθ > 0, (θ, v) elsewhere."""

    def __init__(self, flow: MomentumFlow, grad: Callable, mask: Any):
        self.flow, self.grad, self.mask = flow, grad, mask
        self.mirror = flow.metric == "entropy"
        self.decayed = decay.is_decayed(flow.weight_decay)

    def to_state(self, params, velocity, t0):
        if not self.mirror:
            return (params, velocity)
        rate = self.flow.rate(t0)
        w = jax.tree_util.tree_map(lambda v, x: v + rate * x, velocity, params)
        return (tree_log(self.mask, params), tree_where(self.mask, tree_log(self.mask, w),
                                                        velocity))

    def params(self, y):
        return tree_exp(self.mask, y[0]) if self.mirror else y[0]

    def velocity(self, t, y, data):
        if not self.mirror:
            return y[1]
        theta, rate = self.params(y), self.flow.rate(t)
        w = tree_exp(self.mask, y[1])
        return tree_where(self.mask, jax.tree_util.tree_map(lambda a, b: a - rate * b, w, theta),
                          y[1])

    def __call__(self, t, y, data):
        rate = self.flow.rate(t)
        lam = decay.rate(self.flow.weight_decay, t) if self.decayed else 0.0
        damped = lambda vi, gi: -rate * vi - gi  # noqa: E731
        if not self.mirror:
            theta, v = y
            g = self.grad(theta, data)
            if callable(self.flow.metric):
                w = jax.tree_util.tree_map(lambda x, vi: rate * x + vi, theta, v)
                g = self.flow.metric(w, g)
            if self.decayed:  # the L2 force −λθ
                g = jax.tree_util.tree_map(lambda gi, x: gi + lam * x, g, theta)
            return (v, jax.tree_util.tree_map(damped, v, g))
        xi, eta = y  # (log θ, log w) on mirror coordinates, (θ, v) elsewhere
        theta = tree_exp(self.mask, xi)
        g = self.grad(theta, data)
        dxi = tree_where(self.mask,
                         jax.tree_util.tree_map(lambda a, b: jnp.exp(a - b) - rate, eta, xi), eta)
        if self.decayed:  # w' gains −λθ: (log w)' = −∇L − λθ/w on mirror coordinates
            mirror_part = jax.tree_util.tree_map(
                lambda m, gi, x, e: -gi - lam * x * jnp.exp(-jnp.where(m, e, 0.0)),
                self.mask, g, theta, eta)
            g = jax.tree_util.tree_map(lambda gi, x: gi + lam * x, g, theta)
        else:
            mirror_part = jax.tree_util.tree_map(jnp.negative, g)
        deta = tree_where(self.mask, mirror_part, jax.tree_util.tree_map(damped, eta, g))
        return (dxi, deta)
