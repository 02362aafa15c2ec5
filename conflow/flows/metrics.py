"""Metrics of gradient and momentum flows: θ' = −M(θ)^{-1}∇L (MATH.md §1.3, §4.1).

A metric is given by name or as a callable:

- ``"euclidean"``: M = I;
- ``"entropy"``: M(θ)^{-1} = diag(θ) on the model's positive blocks (mirror map
  Ψ = Σ θ log θ − θ, multiplicative updates θ' = −θ ⊙ ∇L), identity on the others;
- a callable ``inverse_metric(θ, g) -> M(θ)^{-1} g`` (shapes ``(D,), (D,) -> (D,)``), e.g.
  `mirror_metric` of a potential.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError
from conflow.models.base import Model

Array = jax.Array
InverseMetric = Callable[[Array, Array], Array]

METRICS = ("euclidean", "entropy")


def mirror_metric(potential: Callable[[Array], Array]) -> InverseMetric:
    """The inverse metric of the mirror map ∇Ψ: (θ, g) ↦ ∇²Ψ(θ)^{-1} g.

    The mirror flow d/dt ∇Ψ(θ) = −∇L is θ' = −∇²Ψ(θ)^{-1}∇L (MATH.md §4.1). ``potential`` maps
    θ, shape ``(D,)``, to a scalar; its Hessian must be invertible on the domain. Use it as
    ``GradientFlow(metric=mirror_metric(Ψ))`` or ``MomentumFlow(τ, metric=mirror_metric(Ψ))``.
    """
    hessian = jax.hessian(potential)
    return lambda theta, g: jnp.linalg.solve(hessian(theta), g)


def check_metric(metric: object) -> None:
    """Raise `InputError` unless ``metric`` is a known name or a callable."""
    if isinstance(metric, str):
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    elif not callable(metric):
        raise InputError(f"metric must be {' or '.join(METRICS)} or a callable (w, g) -> "
                         f"M(w)^-1 g, got {metric!r}")


def entropy_mask(model: Model) -> Array:
    """The model's positive (mirror) coordinates, shape ``(D,)``; `InputError` if there are none."""
    mask = jnp.asarray(model.positive_mask)
    if not bool(mask.any()):
        raise InputError(
            f"the entropy metric needs positive parameter blocks; {model.label} has none"
        )
    return mask


def inverse_metric(metric: str | InverseMetric, model: Model) -> InverseMetric:
    """(w, g) ↦ M(w)^{-1} g on flat vectors of shape ``(D,)``: identity, entropy (w ⊙ g on
    positive blocks) or the user's callable."""
    if callable(metric):
        return metric
    if metric == "euclidean":
        return lambda w, g: g
    mask = entropy_mask(model)
    return lambda w, g: jnp.where(mask, w * g, g)


def mirror_coordinates(metric: str | InverseMetric, model: Model) -> np.ndarray | None:
    """Boolean mask of the coordinates the entropy metric scales (None for the Euclidean one);
    the exact engine multiplies field components there by the coordinate."""
    if callable(metric):
        raise InputError("the exact engine needs a polynomial flow: metric 'euclidean' or "
                         "'entropy', not a callable")
    return np.asarray(entropy_mask(model), dtype=bool) if metric == "entropy" else None


# --------------------------------------------------------------------------- pytree helpers

def tree_where(mask, a, b):
    """Leafwise ``jnp.where(mask, a, b)``."""
    return jax.tree_util.tree_map(jnp.where, mask, a, b)


def tree_log(mask, x):
    """log x on masked entries, x elsewhere (safe where x ≤ 0 off the mask)."""
    return jax.tree_util.tree_map(lambda m, v: jnp.where(m, jnp.log(jnp.where(m, v, 1.0)), v),
                                  mask, x)


def tree_exp(mask, x):
    """exp x on masked entries, x elsewhere."""
    return jax.tree_util.tree_map(lambda m, v: jnp.where(m, jnp.exp(jnp.where(m, v, 0.0)), v),
                                  mask, x)


def tree_negative(tree):
    return jax.tree_util.tree_map(jnp.negative, tree)


def check_positive(params, mask, what: str) -> None:
    """`InputError` unless some coordinate is marked positive and every marked one is > 0."""
    pos, leaves = jax.tree_util.tree_leaves(mask), jax.tree_util.tree_leaves(params)
    if not any(bool(jnp.any(m)) for m in pos):
        raise InputError("the entropy metric needs positive coordinates; none is marked")
    if any(bool(jnp.any(m & (x <= 0))) for m, x in zip(pos, leaves)):
        raise InputError(what)
