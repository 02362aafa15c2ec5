"""Monitors: the quantities (laws) recorded along a run, as plain JAX functions of the state.

A monitor with one positional argument is called as ``h(params)``; one with two or more as
``h(params, velocity, t)`` with velocity θ'(t) (for gradient flows the field −M⁻¹∇L, evaluated only
if some monitor asks; for discrete runs x_k − x_{k−1}) and the time t (or step index). `Monitor`
makes this explicit; `as_monitors` normalises what users pass.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

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

