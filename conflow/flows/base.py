"""`AbstractFlow`: what every consumer of a training flow needs from it.

A flow acts on a `Model` (φ: R^D → R^d). Whatever the data, the training dynamics lie in the span
of the flow's generator fields on its state space R^n (n = D for first-order flows, D + 1 for
first-order flows with weight decay (a time coordinate s), 2D + 1 for momentum flows; MATH.md §1.3,
§2.10, §3.2). The same object serves

- the numeric engine: `family` (the generator family G(z, a) as a `VectorFamily`), generic points
  (`sample_points`, `check_point`, `theta_of_state`);
- the exact engine: `polynomial_fields` (the generators as exact polynomial vector fields);
- the integrators: `dynamics` (the ODE on the caller's parameter pytree);
- reports: `name`, `label`, `metric_name`, `tau`, `weight_decay`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine.trace import VectorFamily
from conflow.flows.metrics import entropy_mask
from conflow.models.base import Model

Array = jax.Array
PyTree = Any


class FlowDynamics(abc.ABC):
    """A flow on a parameter pytree, in the coordinates y it is integrated in.

    Built by `AbstractFlow.dynamics` from ``grad(params, data)`` (∇L on the pytree) and a pytree
    of bools marking the mirror (positive) coordinates. y is the flow's own representation of the
    state (e.g. log θ for the entropy metric), so that y' = ``self(t, y, data)`` is smooth where
    the flow is defined.
    """

    @abc.abstractmethod
    def to_state(self, params: PyTree, velocity: PyTree, t0: float) -> PyTree:
        """y at time t0 from θ0 and θ0' (``velocity`` is ignored by first-order flows)."""

    @abc.abstractmethod
    def params(self, y: PyTree) -> PyTree:
        """θ from y."""

    @abc.abstractmethod
    def velocity(self, t: Array, y: PyTree, data: Any) -> PyTree:
        """θ'(t) from y."""

    @abc.abstractmethod
    def __call__(self, t: Array, y: PyTree, data: Any) -> PyTree:
        """dy/dt."""


class AbstractFlow(abc.ABC):
    """A training flow: gradient flow under a metric, or a damped second-order flow.

    Implementations: `conflow.flows.GradientFlow`, `conflow.flows.MomentumFlow` (both with an
    optional weight decay), `conflow.flows.SignFlow`. Flow objects are frozen dataclasses, so they
    hash and compare by value.
    """

    #: Whether the state carries a velocity (z = (s, θ, v)); first-order flows: state = θ.
    has_velocity: bool = False
    metric: Any

    # ----------------------------------------------------------------------- identification
    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short kind: ``"gradient"``, ``"momentum"``, ``"nesterov"`` or ``"sign"`` (weight
        decay shows in `label` and `weight_decay`)."""

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """Readable label: ``gradient``, ``mirror``, ``heavy-ball(τ=0.5)``, ``nesterov``, …"""

    @property
    def metric_name(self) -> str:
        """``"euclidean"``, ``"entropy"`` or ``"custom"`` (a callable metric)."""
        return self.metric if isinstance(self.metric, str) else "custom"

    @property
    def tau(self) -> float | None:
        """The constant damping τ of a second-order flow; None for Nesterov's τ(t) = 3/t and for
        first-order flows."""
        return None

    @property
    def is_polynomial(self) -> bool:
        """Whether the generators are polynomial when φ is (the exact engine can count): a named
        metric, and no weight decay or a constant one (its drift (λs, −λθ) is linear)."""
        return isinstance(self.metric, str) and not callable(self.weight_decay)

    @property
    def not_polynomial_reason(self) -> str:
        """Why the exact engine cannot take this flow (empty when `is_polynomial`)."""
        if self.is_polynomial:
            return ""
        if callable(self.weight_decay):
            return "the weight decay λ(t) is a function of time: the drift is not polynomial"
        return "the metric is a callable: its fields are not polynomial"

    @property
    def locally_constant(self) -> bool:
        """Whether the generators are locally constant in θ (`SignFlow`): their brackets vanish
        and the laws are only piecewise polynomial (no global polynomial search)."""
        return False

    @property
    def weight_decay(self) -> Any:
        """The weight decay λ (a float ≥ 0 or a function of t) of flows that have one, else
        ``None`` (`conflow.flows.decay`)."""
        return None

    @property
    def has_time(self) -> bool:
        """Whether the state starts with a time coordinate s: z = (s, θ) or (s, θ, v) (momentum
        flows, and first-order flows with weight decay)."""
        return self.has_velocity

    @property
    def time_name(self) -> str:
        """How the time coordinate s is written in laws: ``"s"`` when s = e^{ct} (a constant
        rate c), ``"t"`` when s = t."""
        return "t"

    @property
    def time_note(self) -> str:
        """What s stands for, e.g. ``"s = exp(τ t)"`` (empty when s = t or there is none)."""
        return ""

    # ----------------------------------------------------------------------- state space
    @abc.abstractmethod
    def state_dim(self, model: Model) -> int:
        """n, the dimension of the state space."""

    @abc.abstractmethod
    def theta_of_state(self, model: Model, z: np.ndarray) -> np.ndarray:
        """The parameters θ, shape ``(D,)``, of a state z, shape ``(n,)``."""

    @abc.abstractmethod
    def sample_points(self, model: Model, key: Array | int, n: int) -> Array:
        """Generic states, shape ``(n, state_dim)``."""

    @abc.abstractmethod
    def check_point(self, model: Model, z: np.ndarray) -> None:
        """Raise `InputError` if a state is outside the flow's domain."""

    def validate(self, model: Model) -> None:
        """Raise `InputError` if the flow cannot act on ``model`` at all (the entropy metric on
        a model without positive blocks)."""
        if self.metric == "entropy":
            entropy_mask(model)

    # ----------------------------------------------------------------------- engines
    def generator_names(self, model: Model) -> list[str]:
        """A readable name for every generator, in the order of `family` (for reports)."""
        metric = "" if self.metric_name == "euclidean" else "M⁻¹"
        if not self.has_time:
            return [f"χ_{j} = {metric}∇φ[{j}]" for j in range(model.d)]
        wd = self.weight_decay
        decayed = wd is not None and (callable(wd) or wd > 0)
        drift = "χ_0 (drift" + (", weight decay)" if decayed else ")")
        return [drift] + [f"χ_{j + 1} (force {metric}∇φ[{j}])" for j in range(model.d)]

    @abc.abstractmethod
    def family(self, model: Model) -> VectorFamily:
        """The generator family G(z, a) on R^n, for the numeric engine."""

    @abc.abstractmethod
    def polynomial_fields(self, model: Model, phi_polys: Sequence[object]) -> list:
        """The generators as exact polynomial vector fields on R^n (`conflow.exact`), from φ's
        polynomials ``phi_polys`` (variables θ_0..θ_{D−1}). Raises `InputError` when the flow's
        fields are not polynomial (a callable metric)."""

    # ----------------------------------------------------------------------- integration
    @abc.abstractmethod
    def dynamics(self, grad: Callable[[PyTree, Any], PyTree], mask: PyTree) -> FlowDynamics:
        """The flow on a parameter pytree, for a loss with gradient ``grad(params, data)``."""

    def check_initial(self, params: PyTree, velocity: PyTree, mask: PyTree, t0: float) -> None:
        """Raise `InputError` if an initial state (pytree) is outside the flow's domain."""

    def default_t0(self) -> float:
        """Start time of an integration when none is given."""
        return 0.0

    def time_variable(self, t: Array) -> Array:
        """The state's time coordinate s at time t (momentum flows; t itself otherwise)."""
        return t

    def time_of(self, s: Array) -> Array:
        """The time t of the state's time coordinate s (the inverse of `time_variable`)."""
        return s

    def split_state(self, model: Model, z: Array) -> tuple[Array | None, Array, Array | None]:
        """(s, θ, v) of a flat state z, shape ``(state_dim,)``: s ``None`` without a time
        coordinate (`has_time`), v ``None`` for first-order flows."""
        D = model.D
        if not self.has_time:
            return None, z, None
        if not self.has_velocity:
            return z[0], z[1 : D + 1], None
        return z[0], z[1 : D + 1], z[D + 1 :]

    def vector_field(self, model: Model) -> Callable[[Array, Array], Array]:
        """The flow on the flat state for one data set: ``(z, c) -> z'`` with c = ∇_φℓ(φ(θ)),
        shape ``(d,)``, the loss gradient at the output (MATH.md §1.3). For flows that are a
        drift plus generators, z' = χ_0(z) − Σ_i c_i χ_i(z) (drift coefficient 1, when there is
        one, `has_time`); a flow whose field is not linear in c overrides this (`SignFlow`)."""
        field = self.family(model).field
        if not self.has_time:
            return lambda z, c: field(z, -c)
        return lambda z, c: field(z, jnp.concatenate([jnp.ones(1, c.dtype), -c]))
