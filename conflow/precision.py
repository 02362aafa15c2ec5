"""conflow computes in float64 without switching the caller's JAX to it.

Numerical ranks at the gaps met here are wrong in float32 (DESIGN.md), so every computation of
conflow runs with JAX's 64-bit mode on. Importing conflow does **not** change the process-wide
``jax_enable_x64`` flag: each public entry point (`count_laws`, `polynomial_laws`, `verify_law`,
`simulate`, the model constructors, …) is wrapped by `float64`, which turns 64-bit mode on for
the duration of the call with JAX's thread-local `jax.enable_x64` context and restores the
caller's setting on return. Results are float64 NumPy arrays or JAX arrays created inside the
scope (they stay float64).

Callables that conflow hands back and that you evaluate yourself (``model.phi``,
``VectorFamily.field``) compute in your process's precision: use ``with conflow.float64_mode():``
around such calls, or enable x64 for your whole program with
``jax.config.update("jax_enable_x64", True)``. The ``conflow`` command enables it for its own
process.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

import jax

F = TypeVar("F", bound=Callable)


def _x64_context() -> Callable[[bool], contextlib.AbstractContextManager]:
    context = getattr(jax, "enable_x64", None)
    if context is None:  # older JAX
        from jax.experimental import enable_x64 as context
    return context


_ENABLE_X64 = _x64_context()


@contextlib.contextmanager
def float64_mode() -> Iterator[None]:
    """A context in which JAX computes in float64 (the caller's setting is restored after)."""
    if jax.config.jax_enable_x64:
        yield
        return
    with _ENABLE_X64(True):
        yield


@contextlib.contextmanager
def float32_mode() -> Iterator[None]:
    """A context in which JAX computes in float32: float64 constants and arrays that the traced
    code closes over are converted (used to recompute a result at a coarser rounding)."""
    with _ENABLE_X64(False):
        yield


def float64(fn: F) -> F:
    """Decorator: run ``fn`` in `float64_mode`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with float64_mode():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
