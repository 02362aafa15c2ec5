"""Monitors: the quantities (laws) recorded along a run, as plain JAX functions of the state.

A monitor with one positional argument is called as ``h(params)``; one with two or more as
``h(params, velocity, t)`` with velocity θ'(t) (for gradient flows the field −M⁻¹∇L, evaluated only
if some monitor asks; for discrete runs x_k − x_{k−1}) and the time t (or step index). `Monitor`
makes this explicit; `as_monitors` normalises what users pass; `rescaled_law` turns a law of a
flow without weight decay into its conserved form e^{Λ(t)}θ under weight decay (MATH.md §2.10).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError


@dataclasses.dataclass(frozen=True)
class Monitor:
    """A quantity recorded along a run. ``fn(params)`` or, if ``needs_state``,
    ``fn(params, velocity, t)`` (velocity θ' or x_k − x_{k−1}; t the time or step index)."""

    name: str
    fn: Callable
    needs_state: bool = False

    def __call__(self, params, velocity, t):
        return self.fn(params, velocity, t) if self.needs_state else self.fn(params)


#: Gauss–Legendre nodes for Λ(t) = ∫_0^t λ of a weight decay given as a function.
QUADRATURE_NODES = 32


def decay_integral(weight_decay: float | Callable, t: Any) -> Any:
    """Λ(t) = ∫_0^t λ(u) du: λt for a constant, Gauss–Legendre quadrature with
    `QUADRATURE_NODES` nodes for a function λ(u) (exact for polynomials of degree < 64)."""
    t = jnp.asarray(t, jnp.float64)
    if not callable(weight_decay):
        return float(weight_decay) * t
    x, w = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
    u = 0.5 * t * (jnp.asarray(x) + 1.0)
    values = jnp.stack([jnp.asarray(weight_decay(ui), jnp.float64) for ui in u])
    return 0.5 * t * jnp.sum(jnp.asarray(w) * values)


def rescaled_law(h: Callable, weight_decay: float | Callable, *, lr: float | None = None,
                 name: str | None = None) -> Monitor:
    """The law H of a flow without weight decay, evaluated at e^{Λ(t)}θ: the form in which it
    is conserved under θ' + λ(t)θ = −∇L (P3's theorem, MATH.md §2.10; Λ = ∫_0^t λ).

    ``h(params)`` is H on the parameter pytree. For a continuous run (`conflow.simulate`) the
    monitor's third argument is the time t; with ``lr`` it is the step index k of a discrete run
    with decoupled decay x_{k+1} = (1 − lr·λ)x_k − lr·u_k (`make_optimizer(..., weight_decay=λ)`),
    and the factor is (1 − lr·λ)^{−k} (constant λ only), which undoes the decay exactly (the
    optimizer's own steps still move H, as without decay).
    """
    if lr is not None:
        if callable(weight_decay):
            raise InputError("rescaled_law with lr (a discrete run) needs a constant λ")
        keep = 1.0 - float(lr) * float(weight_decay)
        if not keep > 0:
            raise InputError(f"1 − lr·λ must be > 0, got {keep}")

        def factor(k):
            return keep ** (-k)
    else:
        def factor(t):
            return jnp.exp(decay_integral(weight_decay, t))

    def law(params, velocity, t):
        c = factor(t)
        return h(jax.tree_util.tree_map(lambda x: c * x, params))

    base = name or getattr(h, "__name__", None) or "law"
    return Monitor(f"{base}(e^Λθ)" if name is None else name, law, needs_state=True)


def _positional_arity(fn: Callable) -> int:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return 1
    n = 0
    for p in sig.parameters.values():
        if p.kind == p.VAR_POSITIONAL:
            return 3
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty:
            n += 1
    return n


def as_monitors(monitors: Any) -> tuple[Monitor, ...]:
    """Normalise monitors: a callable, a `Law`, a sequence of callables / `Monitor`s / laws, or
    a mapping name → callable. Names default to the function's ``__name__`` (a law's label),
    made unique."""
    if monitors is None:
        return ()
    if callable(monitors) or isinstance(monitors, Monitor):
        monitors = [monitors]
    items = list(monitors.items()) if isinstance(monitors, Mapping) else [(None, m)
                                                                           for m in monitors]
    out: list[Monitor] = []
    seen: set[str] = set()
    for name, m in items:
        if hasattr(m, "as_monitor"):  # a `conflow.Law`
            name = name or getattr(m, "label", None)
            m = m.as_monitor()
        if isinstance(m, Monitor):
            mon = m if name is None else dataclasses.replace(m, name=str(name))
        elif callable(m):
            base = name or getattr(m, "__name__", None) or getattr(
                getattr(m, "func", None), "__name__", "law")
            if base == "<lambda>":
                base = "law"
            arity = _positional_arity(m)
            if arity == 0:
                raise InputError(f"monitor {base!r} takes no positional argument")
            mon = Monitor(str(base), m, needs_state=arity >= 2)
        else:
            raise InputError(f"a monitor must be callable, got {type(m).__name__}")
        if mon.name in ("loss", "distance"):
            raise InputError(f"monitor name {mon.name!r} is reserved")
        name_u, i = mon.name, 2
        while name_u in seen:
            name_u, i = f"{mon.name}_{i}", i + 1
        seen.add(name_u)
        out.append(dataclasses.replace(mon, name=name_u))
    return tuple(out)

