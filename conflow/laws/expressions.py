"""Safe evaluation of a law written as a Python expression over a model's parameter names.

``compile_law("sum(U1[:,0]) - sum(U2[0,:])", model)`` returns a JAX function of the flow's state.
The text is parsed with `ast` and interpreted node by node by this module; ``eval``/``exec`` are
never called, and anything outside the grammar below is rejected with an `InputError` naming the
offending construct, *before* anything is evaluated.

Grammar (everything else is refused):

- numbers (``int``/``float`` literals; ``True``/``False``, strings, bytes, complex are refused);
- names: the model's parameter blocks (``U1``, ``W2``, ``b1``, ``U``, ``V``, ``x``, …: the arrays of
  `Model.unflatten`), the constant ``pi``, and, for momentum flows, the velocity blocks ``dU1``,
  ``dW2``, … (θ' in the same layout, prefix ``d``), the time ``t`` and the state's time variable
  ``s`` (s = exp(τ t) for constant τ > 0; s = t for τ = 0 and Nesterov, MATH.md §3.2); for
  first-order flows with weight decay, ``t`` and ``s`` (s = exp(λ t) for a constant λ, s = t for a
  function λ(t), MATH.md §2.10);
- ``+ - * / ** @`` and unary ``+ -``;
- subscripts with integer literals, slices of integer literals and tuples of those
  (``U1[0,1]``, ``U1[:,0]``, ``V[-1, 1:3]``); integer indices are bounds-checked;
- attribute ``.T`` only (transpose);
- calls of the whitelisted functions in `FUNCTIONS` (``sum``, ``mean``, ``prod``, ``abs``,
  ``sqrt``, ``exp``, ``log``, ``sin``, ``cos``, ``tanh``, ``square``, ``dot``, ``matmul``,
  ``outer``, ``trace``, ``transpose``, ``diag``, ``norm``, ``min``, ``max``), positional
  arguments plus an optional ``axis=`` integer (or tuple of integers) keyword.

Block names that are not Python identifiers (custom models, e.g. ``layer1.w``) are spelled with
every non-identifier character replaced by ``_`` (``layer1_w``); a name starting with a digit gets a
leading ``_``. `expression_names` gives the spelling of every state coordinate.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conflow.errors import InputError
from conflow.flows import AbstractFlow
from conflow.models.base import Model
from conflow.precision import float64

Array = jax.Array

MAX_LENGTH = 20_000
MAX_NODES = 5_000
MAX_INT_POWER = 64
VELOCITY_PREFIX = "d"

FUNCTIONS: dict[str, Callable[..., Array]] = {
    "sum": jnp.sum,
    "mean": jnp.mean,
    "prod": jnp.prod,
    "abs": jnp.abs,
    "sqrt": jnp.sqrt,
    "exp": jnp.exp,
    "log": jnp.log,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "tanh": jnp.tanh,
    "square": jnp.square,
    "dot": jnp.dot,
    "matmul": jnp.matmul,
    "outer": jnp.outer,
    "trace": jnp.trace,
    "transpose": jnp.transpose,
    "diag": jnp.diag,
    "norm": jnp.linalg.norm,
    "min": jnp.min,
    "max": jnp.max,
}
#: Functions that accept the ``axis=`` keyword.
AXIS_FUNCTIONS = frozenset({"sum", "mean", "prod", "norm", "min", "max"})
CONSTANTS: dict[str, float] = {"pi": math.pi}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
    ast.MatMult: lambda a, b: jnp.matmul(a, b),
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: lambda a: -a, ast.UAdd: lambda a: +a}
_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Load, ast.Constant,
    ast.Subscript, ast.Slice, ast.Tuple, ast.Attribute, ast.keyword,
    *_BINOPS, *_UNARY,
)


def identifier(name: str) -> str:
    """The expression spelling of a block name: non-identifier characters become ``_``."""
    out = re.sub(r"\W", "_", name)
    return "_" + out if out[:1].isdigit() or not out else out


def _is_momentum(flow: AbstractFlow) -> bool:
    return flow is not None and flow.has_velocity


def _has_time(flow: AbstractFlow) -> bool:
    return flow is not None and flow.has_time


def time_name(flow: AbstractFlow) -> str:
    """How the state's time coordinate is printed: ``t`` if s = t (τ = 0, Nesterov, λ(t)), else
    ``s`` (s = e^{τt} or e^{λt})."""
    return "t" if flow is None else flow.time_name


def expression_names(model: Model, flow: AbstractFlow | str | None = None) -> list[str]:
    """One expression-language name per state coordinate: ``U1[0,1]`` (θ), and for momentum flows
    ``t``/``s`` first and ``dU1[0,1]`` (velocities) after θ."""
    names = []
    for b in model.blocks:
        ident = identifier(b.name)
        names += [ident + n[len(b.name):] for n in b.entry_names()]
    if not _has_time(flow):
        return names
    if not _is_momentum(flow):
        return [time_name(flow)] + names
    return [time_name(flow)] + names + [VELOCITY_PREFIX + n for n in names]


def _namespace_keys(model: Model, flow: AbstractFlow) -> set[str]:
    keys = {identifier(b.name) for b in model.blocks}
    if len(keys) != len(model.blocks):
        raise InputError("two parameter blocks have the same expression name; rename them")
    if _has_time(flow):
        vel = {VELOCITY_PREFIX + k for k in keys} if _is_momentum(flow) else set()
        clash = (vel | {"s", "t"}) & keys
        if clash:
            raise InputError(f"block name(s) {sorted(clash)} clash with the names of the state's "
                             f"time and velocity (s, t, d<block>); rename them")
        keys |= vel | {"s", "t"}
    clash = keys & (set(FUNCTIONS) | set(CONSTANTS))
    if clash:
        raise InputError(f"block name(s) {sorted(clash)} clash with function/constant names")
    return keys


def _namespace(model: Model, flow: AbstractFlow, z: Array) -> dict[str, Array]:
    """Name → array at the state ``z`` (θ for gradient flows, (s, θ) with weight decay, (s, θ, v)
    for momentum flows)."""
    if not _has_time(flow):
        return {identifier(k): v for k, v in model.unflatten(z).items()}
    s, theta, vel = flow.split_state(model, z)
    env = {identifier(k): v for k, v in model.unflatten(theta).items()}
    if vel is not None:
        env.update({VELOCITY_PREFIX + identifier(k): v for k, v in model.unflatten(vel).items()})
    env["s"] = s
    env["t"] = flow.time_of(s)
    return env


# ----------------------------------------------------------------------------------- validation


def _construct(node: ast.AST) -> str:
    return type(node).__name__


def parse_expression(text: str, names: set[str]) -> ast.Expression:
    """Parse and validate ``text`` against the grammar of the module docstring.

    ``names`` are the admissible variable names. Raises `InputError` naming the first offending
    construct; nothing is evaluated.
    """
    if not isinstance(text, str):
        raise InputError(f"a law expression must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InputError("empty law expression")
    if len(text) > MAX_LENGTH:
        raise InputError(f"law expression too long ({len(text)} > {MAX_LENGTH} characters)")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise InputError(f"malformed law expression: {exc.msg} at column {exc.offset}") from None
    except (RecursionError, MemoryError, ValueError):
        raise InputError("malformed law expression: too deeply nested or invalid") from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise InputError(f"law expression too large ({len(nodes)} > {MAX_NODES} syntax nodes)")
    call_funcs = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
    for node in nodes:
        if not isinstance(node, _ALLOWED_NODES):
            raise InputError(f"{_construct(node)} is not allowed in a law expression "
                             f"(names, numbers, + - * / ** @, indexing, .T and whitelisted "
                             f"functions only)")
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"constant {v!r} is not allowed in a law expression "
                                 f"(numbers only)")
        elif isinstance(node, ast.Name):
            if id(node) in call_funcs:
                if node.id not in FUNCTIONS:
                    raise InputError(f"function {node.id!r} is not allowed; allowed: "
                                     f"{', '.join(sorted(FUNCTIONS))}")
            elif node.id in FUNCTIONS:
                raise InputError(f"function {node.id!r} must be called, not used as a value")
            elif node.id not in names and node.id not in CONSTANTS:
                raise InputError(f"unknown name {node.id!r}; known names: "
                                 f"{', '.join(sorted(names | set(CONSTANTS)))}")
        elif isinstance(node, ast.Attribute):
            if node.attr != "T":
                raise InputError(f"attribute .{node.attr} is not allowed (only .T)")
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise InputError(f"only direct calls of whitelisted functions are allowed, got "
                                 f"a call of {_construct(node.func)}")
            for kw in node.keywords:
                if kw.arg != "axis" or node.func.id not in AXIS_FUNCTIONS:
                    what = "**kwargs" if kw.arg is None else f"keyword {kw.arg}="
                    raise InputError(f"{what} is not allowed in {node.func.id}(...)"
                                     + (" (only axis= on sum, mean, prod, norm, min, max)"))
                _static_axis(kw.value)
        elif isinstance(node, ast.Subscript):
            _static_index(node.slice)  # validates; bounds are checked at evaluation
        elif isinstance(node, ast.Tuple):
            pass  # only meaningful inside subscripts / axis=; checked there
    for node in nodes:  # tuples anywhere else are not values
        if isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Call, ast.Attribute)):
            children = [getattr(node, f, None) for f in ("left", "right", "operand", "value")]
            children += list(getattr(node, "args", []))
            if any(isinstance(c, (ast.Tuple, ast.Slice)) for c in children):
                raise InputError("tuples and slices are allowed only inside [...] and axis=")
    if isinstance(tree.body, (ast.Tuple, ast.Slice)):
        raise InputError("a law expression must be a single scalar expression, not a tuple")
    return tree


def _int_literal(node: ast.AST) -> int:
    """An integer literal, possibly negated; otherwise `InputError`."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return sign * node.value
    raise InputError("indices must be integer literals, slices of integer literals, or tuples of "
                     f"those; got {_construct(node)}")


def _static_axis(node: ast.AST) -> int | tuple[int, ...]:
    if isinstance(node, ast.Tuple):
        return tuple(_int_literal(e) for e in node.elts)
    return _int_literal(node)


def _static_index(node: ast.AST) -> tuple[int | slice, ...]:
    """A subscript as a static tuple of ints and slices."""
    items = node.elts if isinstance(node, ast.Tuple) else [node]
    out: list[int | slice] = []
    for item in items:
        if isinstance(item, ast.Slice):
            parts = [None if p is None else _int_literal(p)
                     for p in (item.lower, item.upper, item.step)]
            if parts[2] == 0:
                raise InputError("slice step cannot be zero")
            out.append(slice(*parts))
        else:
            out.append(_int_literal(item))
    return tuple(out)


# ----------------------------------------------------------------------------------- evaluation


def _evaluate(node: ast.AST, env: dict[str, Array]) -> Any:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, env)
    if isinstance(node, ast.Constant):
        return jnp.asarray(float(node.value))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return jnp.asarray(CONSTANTS[node.id])
        return env[node.id]
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, env)
        if isinstance(node.op, ast.Pow):
            try:  # small integer powers by repeated multiplication (exact, good gradients at 0)
                k = _int_literal(node.right)
            except InputError:
                k = None
            if k is not None and abs(k) <= MAX_INT_POWER:
                return jax.lax.integer_pow(jnp.asarray(left), k)
        return _BINOPS[type(node.op)](left, _evaluate(node.right, env))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, env))
    if isinstance(node, ast.Attribute):  # .T only (validated)
        return jnp.transpose(_evaluate(node.value, env))
    if isinstance(node, ast.Subscript):
        value = jnp.asarray(_evaluate(node.value, env))
        index = _static_index(node.slice)
        if len(index) > value.ndim:
            raise InputError(f"too many indices ({len(index)}) for an array of shape "
                             f"{tuple(value.shape)}")
        for axis, i in enumerate(index):
            if isinstance(i, int) and not -value.shape[axis] <= i < value.shape[axis]:
                raise InputError(f"index {i} out of range for axis {axis} of size "
                                 f"{value.shape[axis]} (shape {tuple(value.shape)})")
        return value[index]
    if isinstance(node, ast.Call):
        fn = FUNCTIONS[node.func.id]
        args = [_evaluate(a, env) for a in node.args]
        kwargs = {kw.arg: _static_axis(kw.value) for kw in node.keywords}
        return fn(*args, **kwargs)
    raise InputError(f"{_construct(node)} is not allowed in a law expression")  # unreachable


@dataclasses.dataclass(frozen=True)
class LawExpression:
    """A validated law expression, callable on the flow's state.

    Attributes:
        text: the expression as given.
        tree: the validated syntax tree.
        state_dim: D for gradient flows, D + 1 with weight decay, 2D + 1 for momentum flows.
    """

    text: str
    tree: ast.Expression = dataclasses.field(repr=False)
    model: Model = dataclasses.field(repr=False)
    flow: AbstractFlow = dataclasses.field(repr=False)
    state_dim: int

    @float64
    def __call__(self, z: Array) -> Array:
        """Value at the state ``z`` (shape ``(state_dim,)``), a scalar."""
        out = _evaluate(self.tree, _namespace(self.model, self.flow, z))
        return jnp.reshape(out, ())


@float64
def compile_law(text: str, model: Model, flow: AbstractFlow | str | None = None) -> LawExpression:
    """Validate ``text`` and return it as a function of the flow's state (see module docstring).

    The expression is evaluated once, at a generic state, to check that it is a finite scalar;
    every problem is an `InputError` (one line).
    """
    names = _namespace_keys(model, flow)
    tree = parse_expression(text, names)
    n = model.D if flow is None else flow.state_dim(model)
    law = LawExpression(text.strip(), tree, model, flow, n)
    if flow is not None and hasattr(flow, "sample_points"):
        z = flow.sample_points(model, 7, 1)[0]
    else:
        z = model.sample_points(7, 1)[0]
    try:
        out = _evaluate(tree, _namespace(model, flow, z))
    except InputError:
        raise
    except (TypeError, ValueError, IndexError, ZeroDivisionError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot evaluate law expression: {msg[:200]}") from None
    out = jnp.asarray(out)
    if out.size != 1:
        raise InputError(f"a law must be a scalar; the expression has shape {tuple(out.shape)}")
    if not np.isfinite(np.asarray(out, dtype=np.float64)).all():
        raise InputError("the law expression is not finite at a generic point")
    return law
