"""The training problem: a loss on a parameter pytree (of a conflow model or a user function), and
which of its entries are positive (the mirror coordinates).

The problem is either a **loss function** of the parameter pytree — ``loss(params)`` when no data
is given, ``loss(params, data)`` otherwise — or a conflow `Model` with data and a loss name, whose
own network g(θ, x) (`Model.network`, `forward_fn`) runs on its unflattened blocks
(`Model.unflatten`): an MLP with ReLU (or tanh) and biases for ``relu``, the linear net
U_1⋯U_q x, the factorisation U Vᵀ x, NMF X ≈ U V, the ICNN U σ(V x + b) and the product model. Losses: ``"square"`` (mean of squared errors), ``"cross-entropy"`` (integer labels or
probability rows); NMF uses the mean square error mean((UV − X)²) on data X.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from conflow.errors import InputError
from conflow.models.base import Model

Array = jax.Array
PyTree = Any

# ---------------------------------------------------------------------------------------------
# Forward models g(θ, x) on parameter pytrees and losses
# ---------------------------------------------------------------------------------------------

def forward_fn(model: Model, activation: str | Callable | None = None,
               ) -> Callable[[PyTree, Array], Array]:
    """The network function g(params, x) of a conflow model (`Model.network`)."""
    return model.network(activation)


def square_loss(pred: Array, target: Array) -> Array:
    """Mean of the squared errors over all entries, mean((pred − target)²)."""
    return jnp.mean((pred - target) ** 2)


def cross_entropy_loss(logits: Array, target: Array) -> Array:
    """Mean cross-entropy; ``target`` is integer labels (N,) or probability rows (N, n)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    if jnp.issubdtype(target.dtype, jnp.integer):
        return -jnp.mean(jnp.take_along_axis(logp, target[..., None], axis=-1))
    return -jnp.mean(jnp.sum(target * logp, axis=-1))


LOSSES: dict[str, Callable[[Array, Array], Array]] = {
    "square": square_loss,
    "cross-entropy": cross_entropy_loss,
}


def make_loss(model: Model, loss: str | Callable = "square",
              activation: str | Callable | None = None) -> Callable[[PyTree, Any], Array]:
    """``loss(params, data)`` for a conflow model: data ``(x, y)`` for networks, the target
    matrix X for ``nmf`` (loss mean((UV − X)²)). ``loss`` is a name in `LOSSES` or a callable
    ``(prediction, target) -> scalar``."""
    g = forward_fn(model, activation)
    if callable(loss):
        ell = loss
    elif loss in LOSSES:
        ell = LOSSES[loss]
    else:
        raise InputError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    if not model.takes_inputs:
        return lambda p, data: ell(g(p, None), data)

    def network_loss(p, data):
        x, y = data
        return ell(g(p, x), y)

    return network_loss


def init_params(model: Model, key: Array | int = 0, scale: float = 1.0) -> dict[str, Array]:
    """Initial parameters for a conflow model, as ``model.unflatten`` blocks
    (`Model.init_params`: He-style 2/fan_in for ``relu``, positive blocks uniform in
    [0.1, 1.1)·scale, the product model N(1, 0.1²)·scale)."""
    return model.init_params(key, scale)


# ---------------------------------------------------------------------------------------------
# Problem: loss, parameters, positive mask
# ---------------------------------------------------------------------------------------------


def tree_norm(tree: PyTree) -> Array:
    """The Euclidean norm of a pytree (all its leaves as one vector)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in leaves)) if leaves else jnp.zeros(())


def to_float(tree: PyTree) -> PyTree:
    """The pytree as arrays, non-floating leaves cast to float64."""
    def conv(x):
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float64)
        return x
    return jax.tree_util.tree_map(conv, tree)


@dataclasses.dataclass(frozen=True)
class Problem:
    """A loss ``fn(params, data)`` on a parameter pytree, and which entries are positive."""

    loss: Callable[[PyTree, Any], Array]
    model: Model | None = None
    positive: PyTree = None  # pytree of bools (per leaf, or per entry) or None = every leaf

    def params(self, theta0: PyTree) -> PyTree:
        """θ0 as the problem's pytree (a model's flat (D,) vector is unflattened)."""
        if self.model is not None and not isinstance(theta0, Mapping):
            arr = jnp.asarray(theta0, jnp.float64)
            if arr.shape != (self.model.D,):
                raise InputError(f"θ0 for {self.model.label} must be a dict of blocks or a flat "
                                 f"vector of shape ({self.model.D},), got shape {arr.shape}")
            return self.model.unflatten(arr)
        params = to_float(theta0)
        if self.model is not None:
            names = [b.name for b in self.model.blocks]
            if set(params) != set(names):
                raise InputError(f"θ0 for {self.model.label} needs blocks {names}, got "
                                 f"{sorted(params)}")
            for b in self.model.blocks:
                if params[b.name].shape != b.shape:
                    raise InputError(f"block {b.name} of {self.model.label} has shape {b.shape}, "
                                     f"got {params[b.name].shape}")
        return params

    def mask(self, params: PyTree) -> PyTree:
        """Boolean pytree (leaf-shaped) of the positive (mirror) coordinates."""
        if self.model is not None and self.positive is None:
            pos = {b.name: b.positive for b in self.model.blocks}
            return {k: jnp.full(jnp.shape(v), pos[k]) for k, v in params.items()}
        if self.positive is None:
            return jax.tree_util.tree_map(lambda x: jnp.ones(jnp.shape(x), bool), params)
        try:
            return jax.tree_util.tree_map(
                lambda m, x: jnp.broadcast_to(jnp.asarray(m, bool), jnp.shape(x)),
                self.positive, params)
        except (ValueError, TypeError) as exc:
            raise InputError(f"positive must be a pytree of bools shaped like the parameters: "
                             f"{exc}") from None


def as_problem(problem: Any, *, loss: str | Callable = "square",
               activation: str | Callable | None = None, positive: PyTree = None) -> Problem:
    """A `Problem` from a conflow `Model` (+ loss name) or a loss function of the pytree."""
    if isinstance(problem, Problem):
        return problem
    if isinstance(problem, Model):
        return Problem(make_loss(problem, loss, activation), problem, positive)
    if callable(problem):
        if activation is not None:
            raise InputError("activation applies to conflow models, not to a loss function")
        fn = problem
        return Problem(lambda p, data: fn(p) if data is None else fn(p, data), None, positive)
    raise InputError(f"expected a conflow Model or a loss function, got {type(problem).__name__}")


def check_data(problem: Problem, data: Any) -> None:
    """Raise `InputError` if the problem is a conflow model and ``data`` is missing."""
    if problem.model is not None and data is None:
        raise InputError(f"{problem.model.label}: data is required ("
                         + ("(x, y)" if problem.model.takes_inputs else "the target matrix X")
                         + ")")

