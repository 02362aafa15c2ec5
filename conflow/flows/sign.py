"""`SignFlow`: θ' = −sign(∇L_Z(θ)), Adam with β1 = β2 = 0 and no ε (MATH.md §2.11).

The fields and their span
-------------------------
With L_Z(θ) = ℓ_Z(φ(θ)), ∇L_Z(θ) = J(θ)ᵀ c with J = ∂φ(θ) (d × D) and c = ∇_φ ℓ_Z ∈ R^d, which
ranges over all of R^d as the data set Z varies (MATH.md §1.3). The flows of all data sets span,
at θ,

    W(θ) = span{ sign(J(θ)ᵀ c) : c ∈ R^d } ⊆ R^D.

Each field θ ↦ sign(J(θ)ᵀ c) is locally constant in θ wherever no entry of J(θ)ᵀc vanishes (an
open dense set), so all Lie brackets vanish there and Lie(W)(θ) = W(θ): the count is
D − dim W(θ) (P3 §2.3).

The family handed to the engine (sampling)
-----------------------------------------
The engine wants finitely many fields, linear in coefficients. `SignFlow.family` samples K
"losses" — data sets whose loss gradient at the output is a fixed c_k, i.e. L_k(θ) = ⟨c_k, φ(θ)⟩,
a legitimate loss of the model (any loss's output gradient is some c) — with
c_1, …, c_K i.i.d. N(0, I_d), drawn once from ``seed`` (the same fields at every point), and uses

    χ_k(θ) = sign(J(θ)ᵀ c_k),   k = 1..K,     G(θ, a) = Σ_k a_k χ_k(θ) = S(θ)ᵀ a,

S(θ) the K × D matrix of the K sign patterns. Then

- level 0: the engine's random elements S(θ)ᵀa span the row space of S(θ), so its rank is
  dim span{χ_k(θ)} ≤ dim W(θ), with equality once the K patterns span W(θ);
- level 1: [χ_j, χ_k](θ) = ∂χ_k·χ_j − ∂χ_j·χ_k = 0, since ∂χ_k(θ) = 0 (autodiff differentiates
  sign to exactly 0, which is the true derivative off the switching set), so every bracket row is
  exactly zero and the trace stagnates at level 1: dim Lie = the level-0 rank.

Why K samples span W(θ). sign(Jᵀc) depends only on the chamber of c in the arrangement of the
hyperplanes H_j = {c : ⟨g_j, c⟩ = 0}, g_j = ∂φ/∂θ_j (column j of J), and a Gaussian c lands in
every chamber with positive probability. If the K draws contain, for every distinct hyperplane,
two chambers adjacent across it, their sign patterns differ only on the coordinates of that
hyperplane, and the patterns span W(θ). [derived] Crossing one hyperplane flips exactly the
coordinates j whose g_j span that hyperplane's normal line, so W(θ) has dimension the number of
distinct lines R g_j (g_j ≠ 0), and the laws are locally the ± differences of the coordinates
sharing a line, e.g. |u| − |v| for φ = uv. K (``samples``, default max(256, 16 D)) is large
against D so that the sampled span is W(θ) with high probability at well-conditioned generic
points; a sample that misses a direction would *over*-count laws, and the points then disagree
(``ambiguous``) unless all of them miss it. The count never uses the line characterisation.

Cost: one evaluation of G computes J(θ) (min(d, K) autodiff passes) and the K × D patterns, so
the family suits small and medium models (K grows with D).

Integration: θ' = −sign(∇L(θ)) is discontinuous where an entry of ∇L crosses 0; `dynamics`
integrates it as is (adaptive steps shrink at the switches, and near a minimum the flow chatters),
so short horizons suit it; the discrete sign descent is ``optax.sign_sgd``
(`conflow.training.optimizers.make_optimizer`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine.trace import VectorFamily
from conflow.errors import InputError, check_int
from conflow.flows.base import AbstractFlow, FlowDynamics
from conflow.models.base import Model

Array = jax.Array

#: Default number of sampled losses: max(MIN_SAMPLES, SAMPLES_PER_PARAMETER · D).
MIN_SAMPLES = 256
SAMPLES_PER_PARAMETER = 16


@dataclasses.dataclass(frozen=True)
class SignFlow(AbstractFlow):
    """θ' = −sign(∇L(θ)) (sign descent, Adam with β1 = β2 = 0 and ε = 0; MATH.md §2.11).

    Attributes:
        samples: the number K of sampled losses whose sign fields form the generator family
            (module docstring); default ``None``: max(256, 16 D).
        seed: the seed of the sampled loss gradients c_1..c_K ~ N(0, I_d).
    """

    samples: int | None = None
    seed: int = 0

    metric = "euclidean"  # the sign of the Euclidean gradient (steepest descent for ‖·‖_∞)

    def __post_init__(self):
        if self.samples is not None:
            check_int("samples", self.samples, 1)
        check_int("seed", self.seed, 0)

    @property
    def name(self) -> str:
        return "sign"

    @property
    def label(self) -> str:
        return "sign"

    @property
    def is_polynomial(self) -> bool:
        return False

    @property
    def not_polynomial_reason(self) -> str:
        return "sign(∇L) is locally constant, not polynomial"

    @property
    def locally_constant(self) -> bool:
        return True

    def n_samples(self, model: Model) -> int:
        """K, the number of sampled losses."""
        if self.samples is not None:
            return int(self.samples)
        return max(MIN_SAMPLES, SAMPLES_PER_PARAMETER * model.D)

    def loss_gradients(self, model: Model) -> np.ndarray:
        """c_1..c_K ~ N(0, I_d), shape ``(K, d)``: the sampled output gradients."""
        rng = np.random.default_rng([self.seed, 0x5167])
        return rng.standard_normal((self.n_samples(model), model.d))

    # ----------------------------------------------------------------------- state space
    def state_dim(self, model: Model) -> int:
        return model.D

    def theta_of_state(self, model: Model, z: np.ndarray) -> np.ndarray:
        return np.asarray(z)

    def sample_points(self, model: Model, key: Array | int, n: int) -> Array:
        """Generic points of the state space, shape ``(n, D)``."""
        return model.sample_points(key, n)

    def check_point(self, model: Model, z: np.ndarray) -> None:
        z = np.asarray(z)
        if z.shape != (model.D,):
            raise InputError(f"a state of the sign flow has shape ({model.D},), got {z.shape}")

    # ----------------------------------------------------------------------- engines
    def family(self, model: Model) -> VectorFamily:
        """G(θ, a) = Σ_k a_k sign(J(θ)ᵀ c_k) on R^D, m = K coefficients (module docstring)."""
        C = jnp.asarray(self.loss_gradients(model))
        patterns = _sign_patterns(model.phi, C, model.D)

        def field(theta: Array, a: Array) -> Array:
            return a @ patterns(theta)

        return VectorFamily(field, model.D, int(C.shape[0]), "sign")

    def generator_names(self, model: Model) -> list[str]:
        return [f"χ_{k} = sign(∂φᵀc_{k}) (sampled loss {k})" for k in range(self.n_samples(model))]

    def polynomial_fields(self, model: Model, phi_polys: Sequence[object]) -> list:
        raise InputError("the sign flow is not polynomial (sign(∇L) is locally constant); "
                         "count it with the numeric engine")

    def vector_field(self, model: Model) -> Callable[[Array, Array], Array]:
        """θ' = −sign(J(θ)ᵀ c) for the loss gradient c at the output."""
        phi = model.phi

        def field(theta: Array, c: Array) -> Array:
            return -jnp.sign(jax.vjp(phi, theta)[1](c)[0])

        return field

    # ----------------------------------------------------------------------- integration
    def dynamics(self, grad: Callable, mask: Any) -> FlowDynamics:
        return _SignDynamics(grad)


def _sign_patterns(phi: Callable[[Array], Array], C: Array, D: int) -> Callable[[Array], Array]:
    """θ ↦ sign(C J(θ)), shape ``(K, D)``: from the Jacobian when d ≤ K (d passes), else by K
    vector–Jacobian products."""
    K, d = C.shape
    if d <= K:
        jac = jax.jacrev(phi) if d <= D else jax.jacfwd(phi)
        return lambda theta: jnp.sign(C @ jac(theta))

    def patterns(theta: Array) -> Array:
        pullback = jax.vjp(phi, theta)[1]
        return jnp.sign(jax.vmap(lambda c: pullback(c)[0])(C))

    return patterns


class _SignDynamics(FlowDynamics):
    """y = θ, y' = −sign(∇L(θ)) leafwise."""

    def __init__(self, grad: Callable):
        self.grad = grad

    def to_state(self, params, velocity, t0):
        return params

    def params(self, y):
        return y

    def velocity(self, t, y, data):
        return jax.tree_util.tree_map(lambda g: -jnp.sign(g), self.grad(y, data))

    def __call__(self, t, y, data):
        return self.velocity(t, y, data)
