"""Weight decay λ(t) of a flow (MATH.md §2.10): θ' + λ(t)θ = −M(θ)^{-1}∇L for gradient flows,
θ'' + τθ' + λ(t)θ = −M(w)^{-1}∇L for momentum flows.

λ is a constant λ ≥ 0 or a function of time ``t -> λ(t)`` (a JAX-traceable scalar function,
non-negative where the flow runs); Λ(t) = ∫_0^t λ. The decay is *decoupled* from the metric
(as in AdamW): it is −λθ whatever M is, which for the Euclidean metric is also the gradient of
the L2 penalty λ/2 ‖θ‖².

State coordinate. With weight decay a first-order flow's state gains a time coordinate s, as
momentum flows have one: z = (s, θ) ∈ R^{D+1}, with s = e^{λt} for a constant λ > 0 (then the
drift χ_0 = (λs, −λθ) is polynomial, and a law of the form H(e^{Λ(t)}θ) = H(sθ) is polynomial in
(s, θ) when H is: e.g. s²(‖U‖² − ‖V‖²)) and s = t for a function λ(t) (drift (1, −λ(t)θ), not
polynomial: the exact engine does not run).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError
from conflow.precision import float64

Array = jax.Array
WeightDecay = float | Callable[[Array], Array]

#: Times at which a function λ(t) is checked to be a finite scalar ≥ 0 when a flow is built.
CHECK_TIMES = (0.0, 0.5, 1.0, 2.0)


def check_weight_decay(value: object) -> WeightDecay:
    """λ as a float ≥ 0 (finite), or a callable λ(t) checked at `CHECK_TIMES` to return a finite
    scalar ≥ 0; `InputError` (one line) otherwise. A bool is refused."""
    if callable(value):
        _check_rate_function(value)
        return value
    if isinstance(value, bool):
        raise InputError(f"weight decay λ must be a number >= 0 or a function of t, got {value!r}")
    try:
        lam = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"weight decay λ must be a number >= 0 or a function of t, got "
                         f"{value!r}") from None
    if not (math.isfinite(lam) and lam >= 0):
        raise InputError(f"weight decay λ must be finite and >= 0, got {lam}")
    return lam


@float64
def _check_rate_function(fn: Callable) -> None:
    for t in CHECK_TIMES:
        try:
            out = np.asarray(fn(jnp.asarray(t, jnp.float64)), dtype=np.float64)
        except Exception as exc:  # noqa: BLE001  (user code: report it in one line)
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise InputError(f"weight decay λ(t) fails at t = {t}: {msg}") from None
        if out.shape != ():
            raise InputError(f"weight decay λ(t) must return a scalar, got shape {out.shape} "
                             f"at t = {t}")
        if not (np.isfinite(out) and out >= 0):
            raise InputError(f"weight decay λ(t) must be finite and >= 0, got {float(out)} at "
                             f"t = {t}")


def is_decayed(weight_decay: WeightDecay) -> bool:
    """Whether there is any weight decay (a function, or a constant λ > 0)."""
    return callable(weight_decay) or weight_decay > 0


def is_constant(weight_decay: WeightDecay) -> bool:
    return not callable(weight_decay)


def rate(weight_decay: WeightDecay, t: Array) -> Array:
    """λ(t)."""
    return weight_decay(t) if callable(weight_decay) else jnp.asarray(weight_decay)


def decay_label(weight_decay: WeightDecay) -> str:
    """``"λ=0.1"`` or ``"λ(t)"`` (empty without weight decay)."""
    if not is_decayed(weight_decay):
        return ""
    return "λ(t)" if callable(weight_decay) else f"λ={weight_decay:g}"


def decay_json(weight_decay: WeightDecay | None) -> float | str | None:
    """λ for reports: the constant, ``"function"``, or None without weight decay (``None``: a
    flow without the option)."""
    if weight_decay is None or not is_decayed(weight_decay):
        return None
    return "function" if callable(weight_decay) else float(weight_decay)
