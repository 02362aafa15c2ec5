"""One jaxpr walker, shared by the exact engine (φ → exact polynomials, `conflow.exact.extract`)
and the branch recorder of models given as code (`conflow.models.from_model`).

`walk` evaluates a jaxpr equation by equation like ``jax.core.eval_jaxpr``, with values of the
caller's own kind (exact polynomials, (value, depends-on-data) pairs, or device arrays: a stage
program run equation by equation, `conflow.engine.evaluate.Interpreted`): the caller says how to
read a literal and how to evaluate one equation; a value is dropped after the last equation
that reads it; call-like primitives (`CALL_PRIMITIVES`: jit,
closed_call, custom_jvp_call, remat, …) are entered — their body is walked with the same
rules — unless the caller's ``enter`` handles them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from jax.extend.core import Literal

#: Primitives that call a sub-jaxpr (`body`): their inside is walked.
CALL_PRIMITIVES = frozenset({
    "jit", "pjit", "closed_call", "core_call", "remat", "remat2", "checkpoint",
    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr", "custom_lin",
})
#: Call primitives with a custom derivative rule (the function's name tells what it is).
CUSTOM_DERIVATIVE_PRIMITIVES = frozenset({
    "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
})


def body(eqn: Any) -> tuple[Any, list] | None:
    """The sub-jaxpr of a call-like equation and its constants, or None."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in eqn.params:
            sub = eqn.params[key]
            if hasattr(sub, "jaxpr") and hasattr(sub, "consts"):  # ClosedJaxpr
                return sub.jaxpr, list(sub.consts)
            return sub, []
    return None


def function_name(eqn: Any) -> str:
    """The name of the function a call-like equation calls ('' if unknown)."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in eqn.params:
            jaxpr = getattr(eqn.params[key], "jaxpr", eqn.params[key])
            info = getattr(jaxpr, "debug_info", None)
            return str(getattr(info, "func_name", "") or "")
    return ""


def bind(eqn: Any, invals: Sequence[Any]) -> list:
    """Evaluate a primitive equation on concrete (or traced) values, as ``jax.core.eval_jaxpr``
    does (old JAX: with sub-functions; the equation's context manager if any); a list of
    outputs."""
    bound = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(bound, tuple) and len(bound) == 2 and isinstance(bound[1], dict):
        subfuns, params = bound
    else:
        subfuns, params = (), bound
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is None:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    else:
        with ctx:
            out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


Apply = Callable[[Any, list], list]
Enter = Callable[[Any, Any, list, list], "list | None"]


def walk(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], apply: Apply, *,
         literal: Callable[[Any], Any] = lambda value: value,
         enter: Enter | None = None) -> list:
    """The outputs of ``jaxpr`` at ``args``.

    Args:
        jaxpr: an open jaxpr.
        consts: its constants, already in the caller's value kind.
        args: the inputs, in the caller's value kind.
        apply: ``(eqn, invals) -> outvals`` (a list) for every equation that is not entered.
        literal: a literal's value → the caller's value kind.
        enter: ``(eqn, sub_jaxpr, sub_consts, invals) -> outvals or None`` for call-like
            equations; None (or no ``enter``) walks the body with the same rules.
    """
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return literal(v.val) if isinstance(v, Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    dead_after = _dead_after(jaxpr)
    for eqn, dead in zip(jaxpr.eqns, dead_after):
        invals = [read(v) for v in eqn.invars]
        for v in dead:  # values no later equation reads are dropped (a long walk's memory)
            del env[v]
        sub = body(eqn) if eqn.primitive.name in CALL_PRIMITIVES else None
        outs = None
        if sub is not None:
            if enter is not None:
                outs = enter(eqn, sub[0], sub[1], invals)
            if outs is None:
                outs = walk(sub[0], sub[1], invals, apply, literal=literal, enter=enter)
        else:
            outs = apply(eqn, invals)
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]


def _dead_after(jaxpr: Any) -> list[list]:
    """For each equation, the variables it reads last (none of the jaxpr's outputs)."""
    last: dict[Any, int] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, Literal):
                last[v] = i
    for v in jaxpr.outvars:
        if not isinstance(v, Literal):
            last.pop(v, None)
    dead: list[list] = [[] for _ in jaxpr.eqns]
    for v, i in last.items():
        dead[i].append(v)
    return dead


def n_equations(jaxpr: Any) -> int:
    """The equations of an open jaxpr, those of the sub-jaxprs it calls included."""
    total = 0
    for eqn in jaxpr.eqns:
        sub = body(eqn) if eqn.primitive.name in CALL_PRIMITIVES else None
        total += 1 if sub is None else n_equations(sub[0])
    return total
