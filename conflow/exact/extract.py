"""The exact polynomial form of a JAX φ: interpret its jaxpr over sparse polynomials.

`polynomial_form(phi, D)` traces φ on a float64 ``(D,)`` input with `jax.make_jaxpr` and runs the
jaxpr again with numpy object arrays whose entries are exact `Poly` in the D coordinates of θ.
Values that do not depend on θ stay numeric arrays and their equations are evaluated by JAX itself
(`primitive.bind`); a numeric value meeting a polynomial is converted to exact rationals: integers
as they are, floats only if they are simple rationals (``Fraction(x).limit_denominator(10**6)``
equal to x), otherwise refused.

Supported on polynomial operands: add, add_any, sub, neg, mul, square, integer_pow (y ≥ 0),
pow (constant integer exponent ≥ 0), div (by a nonzero constant), dot_general, reduce_sum,
reduce_prod, cumsum, cumprod, reshape, transpose, broadcast_in_dim, squeeze, expand_dims, slice,
concatenate, stack, split, rev, select_n (constant predicate), pad, gather / dynamic_slice /
dynamic_update_slice / scatter with constant indices, convert_element_type (to a float type),
copy; call-like primitives (jit / pjit, closed_call, core_call, custom_jvp_call, custom_vjp_call,
remat / checkpoint) are entered. Anything else on a polynomial operand — exp, tanh, max, min,
abs, comparisons, division by a variable, … — raises `InputError` naming the primitive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

from .. import _config  # noqa: F401  (float64)
from ..errors import InputError
from .polynomial import Poly, exact_rational

__all__ = ["polynomial_form", "jaxpr_polynomials"]


def _refuse(name: str, detail: str = "") -> InputError:
    msg = f"φ is not polynomial: primitive '{name}' is not supported by the exact engine"
    return InputError(msg + (f" ({detail})" if detail else ""))


def _is_sym(v: object) -> bool:
    return isinstance(v, np.ndarray) and v.dtype == object


def _obj(x: object) -> np.ndarray:
    """Wrap a reduction result (possibly a bare Poly / number) as an object array."""
    if isinstance(x, np.ndarray) and x.dtype == object:
        return x
    if isinstance(x, np.ndarray):
        return x.astype(object)
    out = np.empty((), dtype=object)
    out[()] = x
    return out


def _exact_array(v: object, prim: str) -> np.ndarray:
    """A constant (numpy / jax array or scalar) as an object array of exact ints / Fractions."""
    if _is_sym(v):
        return v  # type: ignore[return-value]
    a = np.asarray(v)
    out = np.empty(a.shape, dtype=object)
    if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
        for idx, x in np.ndenumerate(a):
            out[idx] = int(x)
        return out
    if not np.issubdtype(a.dtype, np.floating):
        raise _refuse(prim, f"constant of dtype {a.dtype}")
    cache: dict[float, object] = {}
    for idx, x in np.ndenumerate(a):
        xf = float(x)
        c = cache.get(xf)
        if c is None:
            try:
                c = exact_rational(xf, "constant")
            except InputError as e:
                raise InputError(
                    f"φ is not polynomial with exact coefficients: {e} (operand of primitive '{prim}')"
                ) from None
            cache[xf] = c
        out[idx] = c
    return out


def _sub_jaxpr(params: dict) -> tuple[object, list]:
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        if key in params:
            j = params[key]
            if hasattr(j, "jaxpr") and hasattr(j, "consts"):  # ClosedJaxpr
                return j.jaxpr, list(j.consts)
            return j, []
    raise KeyError("no sub-jaxpr")


_CALLS = {
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "remat2",
    "checkpoint",
}


# ---------------------------------------------------------------------------------------------
# Handlers for polynomial operands: (params, *values) -> value (or list for multiple results)
# ---------------------------------------------------------------------------------------------


def _binary(op: Callable[[np.ndarray, np.ndarray], np.ndarray], name: str):
    def h(params: dict, a: object, b: object) -> np.ndarray:
        return _obj(op(_exact_array(a, name), _exact_array(b, name)))

    return h


def _div(params: dict, a: object, b: object) -> np.ndarray:
    if _is_sym(b):
        raise _refuse("div", "division by a variable")
    den = _exact_array(b, "div")
    if any(x == 0 for x in den.ravel()):
        raise _refuse("div", "division by zero")
    inv = np.empty(den.shape, dtype=object)
    for idx, x in np.ndenumerate(den):
        f = Fraction(1) / Fraction(x)
        inv[idx] = f.numerator if f.denominator == 1 else f
    return _obj(_exact_array(a, "div") * inv)


def _integer_pow(params: dict, a: np.ndarray) -> np.ndarray:
    y = int(params["y"])
    if y < 0:
        raise _refuse("integer_pow", f"negative exponent {y}")
    return _obj(_powers(a, np.full(a.shape, y, dtype=object)))


def _powers(a: np.ndarray, exps: np.ndarray) -> np.ndarray:
    a, exps = np.broadcast_arrays(a, exps)
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(*a.shape):
        x, k = a[idx], exps[idx]
        out[idx] = (x if isinstance(x, Poly) else Poly.const(x)) ** int(k)
    return out


def _pow(params: dict, a: object, b: object) -> np.ndarray:
    if _is_sym(b):
        raise _refuse("pow", "variable exponent")
    e = np.asarray(b)
    ee = np.empty(e.shape, dtype=object)
    for idx, x in np.ndenumerate(e):
        xf = float(x)
        if xf != int(xf) or xf < 0:
            raise _refuse("pow", f"exponent {xf} is not a nonnegative integer")
        ee[idx] = int(xf)
    return _obj(_powers(_exact_array(a, "pow"), ee))


def _dot_general(params: dict, a: object, b: object) -> np.ndarray:
    a = _exact_array(a, "dot_general")
    b = _exact_array(b, "dot_general")
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lc, rc, lb, rb = (tuple(int(i) for i in t) for t in (lc, rc, lb, rb))
    lf = [i for i in range(a.ndim) if i not in lc and i not in lb]
    rf = [i for i in range(b.ndim) if i not in rc and i not in rb]
    A = np.transpose(a, list(lb) + lf + list(lc))
    B = np.transpose(b, list(rb) + list(rc) + rf)
    bshape = [a.shape[i] for i in lb]
    lfs = [a.shape[i] for i in lf]
    rfs = [b.shape[i] for i in rf]
    nb, m, k, n = (
        math.prod(bshape),
        math.prod(lfs),
        math.prod(a.shape[i] for i in lc),
        math.prod(rfs),
    )
    if k == 0:
        C = np.empty((nb, m, n), dtype=object)
        C.fill(0)
    else:
        C = np.matmul(A.reshape(nb, m, k), B.reshape(nb, k, n))
    return _obj(C.reshape(bshape + lfs + rfs))


def _reduce(ufunc):
    def h(params: dict, a: np.ndarray) -> np.ndarray:
        axes = tuple(int(i) for i in params["axes"])
        if not axes:
            return a
        return _obj(ufunc.reduce(a, axis=axes))

    return h


def _cumulative(ufunc):
    def h(params: dict, a: np.ndarray) -> np.ndarray:
        axis = int(params["axis"])
        x = np.flip(a, axis) if params.get("reverse", False) else a
        y = ufunc.accumulate(x, axis=axis, dtype=object)
        return _obj(np.flip(y, axis) if params.get("reverse", False) else y)

    return h


def _reshape(params: dict, a: np.ndarray, *rest: object) -> np.ndarray:
    dims = params.get("dimensions")
    if dims is not None:
        a = np.transpose(a, dims)
    return a.reshape(tuple(int(s) for s in params["new_sizes"]))


def _broadcast_in_dim(params: dict, a: np.ndarray, *rest: object) -> np.ndarray:
    shape = tuple(int(s) for s in params["shape"])
    bdims = tuple(int(i) for i in params["broadcast_dimensions"])
    tmp = [1] * len(shape)
    for src, dst in enumerate(bdims):
        tmp[dst] = a.shape[src]
    return np.array(np.broadcast_to(a.reshape(tmp), shape), dtype=object)


def _slice(params: dict, a: np.ndarray) -> np.ndarray:
    start, limit = params["start_indices"], params["limit_indices"]
    strides = params.get("strides") or (1,) * len(start)
    return a[tuple(slice(int(b), int(e), int(t)) for b, e, t in zip(start, limit, strides))]


def _concatenate(params: dict, *xs: object) -> np.ndarray:
    return np.concatenate(
        [_exact_array(x, "concatenate") for x in xs], axis=int(params["dimension"])
    )


def _stack(params: dict, *xs: object) -> np.ndarray:
    return np.stack([_exact_array(x, "stack") for x in xs], axis=int(params["axis"]))


def _split(params: dict, a: np.ndarray) -> list[np.ndarray]:
    sizes = [int(s) for s in params["sizes"]]
    cuts = np.cumsum(sizes)[:-1]
    return list(np.split(a, cuts, axis=int(params["axis"])))


def _select_n(params: dict, pred: object, *cases: object) -> np.ndarray:
    if _is_sym(pred):
        raise _refuse("select_n", "predicate depends on θ")
    pr = np.asarray(pred).astype(np.int64)
    cs = [_exact_array(c, "select_n") for c in cases]
    shape = np.broadcast_shapes(pr.shape, *(c.shape for c in cs))
    pr = np.broadcast_to(pr, shape)
    out = np.empty(shape, dtype=object)
    for k, c in enumerate(cs):
        mask = pr == k
        out[mask] = np.broadcast_to(c, shape)[mask]
    return out


def _identity(params: dict, a: np.ndarray, *rest: object) -> np.ndarray:
    return a


def _convert(params: dict, a: np.ndarray) -> np.ndarray:
    dt = np.dtype(params["new_dtype"])
    if not np.issubdtype(dt, np.floating):
        raise _refuse("convert_element_type", f"conversion of a polynomial to {dt}")
    return a


_HANDLERS: dict[str, Callable[..., object]] = {
    "add": _binary(np.add, "add"),
    "add_any": _binary(np.add, "add_any"),
    "sub": _binary(np.subtract, "sub"),
    "mul": _binary(np.multiply, "mul"),
    "neg": lambda params, a: _obj(np.negative(a)),
    "square": lambda params, a: _obj(a * a),
    "div": _div,
    "integer_pow": _integer_pow,
    "pow": _pow,
    "dot_general": _dot_general,
    "reduce_sum": _reduce(np.add),
    "reduce_prod": _reduce(np.multiply),
    "cumsum": _cumulative(np.add),
    "cumprod": _cumulative(np.multiply),
    "reshape": _reshape,
    "transpose": lambda params, a: np.transpose(a, tuple(int(i) for i in params["permutation"])),
    "broadcast_in_dim": _broadcast_in_dim,
    "squeeze": lambda params, a: a.reshape(
        [
            s
            for i, s in enumerate(a.shape)
            if i not in {int(d) % a.ndim for d in params["dimensions"]}
        ]
    ),
    "expand_dims": lambda params, a: np.expand_dims(a, tuple(int(d) for d in params["dimensions"])),
    "slice": _slice,
    "concatenate": _concatenate,
    "stack": _stack,
    "split": _split,
    "rev": lambda params, a: np.flip(a, tuple(int(d) for d in params["dimensions"])),
    "select_n": _select_n,
    "convert_element_type": _convert,
    "copy": _identity,
    "copy_p": _identity,
    "reduce_precision": _identity,
}

# Structural primitives done by running the primitive itself on integer index arrays: which
# operands carry data (copied into the output); the others must be constants (indices, predicates).
_BY_INDEX: dict[str, tuple[int, ...]] = {
    "gather": (0,),
    "dynamic_slice": (0,),
    "dynamic_update_slice": (0, 1),
    "scatter": (0, 2),
    "pad": (0, 1),
}


def _by_index(eqn, vals: list[object]) -> list[np.ndarray]:
    name = eqn.primitive.name
    data = _BY_INDEX[name]
    pool, args, offset = [], [], 0
    for pos, v in enumerate(vals):
        if pos in data:
            arr = _exact_array(v, name)
            pool.append(arr.ravel())
            args.append(np.arange(offset, offset + arr.size, dtype=np.int64).reshape(arr.shape))
            offset += arr.size
        else:
            if _is_sym(v):
                raise _refuse(name, "index depends on θ")
            args.append(v)
    try:
        out = eqn.primitive.bind(*args, **eqn.params)
    except Exception as e:  # noqa: BLE001 — report as unsupported, not as an internal crash
        raise _refuse(name, f"could not replay it on index arrays: {type(e).__name__}") from None
    outs = out if eqn.primitive.multiple_results else [out]
    flat = np.concatenate(pool) if pool else np.empty(0, dtype=object)
    res = []
    for o in outs:
        o = np.asarray(o)
        if not np.issubdtype(o.dtype, np.integer) or (
            o.size and (o.min() < 0 or o.max() >= offset)
        ):
            raise _refuse(name, "out-of-bounds or filled entries")
        res.append(flat[o])
    return res


# ---------------------------------------------------------------------------------------------
# Interpreter
# ---------------------------------------------------------------------------------------------


def _eval_jaxpr(jaxpr, consts: Sequence[object], args: Sequence[object]) -> list[object]:
    env: dict[object, object] = {}

    def read(v):
        if isinstance(v, Literal):
            return v.val
        return env[v]

    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val in zip(jaxpr.invars, args):
        env[var] = val

    for eqn in jaxpr.eqns:
        vals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in _CALLS:
            sub, sub_consts = _sub_jaxpr(eqn.params)
            outs = _eval_jaxpr(sub, sub_consts, vals)
        elif not any(_is_sym(v) for v in vals):
            out = eqn.primitive.bind(*vals, **eqn.params)
            outs = list(out) if eqn.primitive.multiple_results else [out]
            outs = [np.asarray(o) for o in outs]
        elif name in _HANDLERS:
            out = _HANDLERS[name](eqn.params, *vals)
            outs = list(out) if isinstance(out, list) else [out]
        elif name in _BY_INDEX:
            outs = _by_index(eqn, vals)
        else:
            raise _refuse(name)
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def jaxpr_polynomials(closed_jaxpr, D: int) -> list[Poly]:
    """Polynomials of the (single, flattened) output of a closed jaxpr with one ``(D,)`` input."""
    x = np.empty(D, dtype=object)
    for i in range(D):
        x[i] = Poly.var(i)
    outs = _eval_jaxpr(closed_jaxpr.jaxpr, closed_jaxpr.consts, [x])
    if len(outs) != 1:
        raise InputError(f"φ must return one array, got {len(outs)} outputs")
    out = _exact_array(outs[0], "output").ravel()
    return [y if isinstance(y, Poly) else Poly.const(y) for y in out]


def polynomial_form(phi: Callable[[jax.Array], jax.Array], D: int) -> list[Poly]:
    """The exact polynomials φ_1..φ_d of a polynomial JAX map φ: R^D → R^d (flattened output).

    Variables: x_j = θ_j, j = 0..D−1. Raises `InputError` naming the first primitive that is not
    polynomial (e.g. ``tanh``, ``max``, ``div`` by a variable) or a constant that is not a simple
    rational.
    """
    D = int(D)
    if D < 1:
        raise InputError("polynomial_form: D must be ≥ 1")
    closed = jax.make_jaxpr(phi)(jax.ShapeDtypeStruct((D,), jnp.float64))
    return jaxpr_polynomials(closed, D)
