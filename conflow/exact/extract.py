"""The exact polynomial form of a JAX φ: interpret its jaxpr over sparse polynomials.

`polynomial_form(phi, D)` traces φ on a float64 ``(D,)`` input with `jax.make_jaxpr` and runs the
jaxpr again with numpy object arrays whose entries are exact `Poly` in the D coordinates of θ.
Values that do not depend on θ stay numeric arrays and their equations are evaluated by JAX itself
(`primitive.bind`); a numeric value meeting a polynomial is converted to exact rationals: integers
as they are, a float64 as the binary rational m·2^e it is (`binary_rational`: 0.1 becomes
3602879701896397/2^55, 1e-10 its own dyadic value). Denominators are powers of two, invertible
modulo the engine's odd primes, so the reduction mod p is exact. The count is then that of the
model with exactly these binary coefficients — which is also what the numeric engine computes
with. NaN / inf constants meeting a polynomial are refused.

Supported on polynomial operands: add, add_any, sub, neg, mul, square, integer_pow (y ≥ 0),
pow (constant integer exponent ≥ 0), div (by a nonzero constant), dot_general, reduce_sum,
reduce_prod, cumsum, cumprod, reshape, transpose, broadcast_in_dim, squeeze, expand_dims, slice,
concatenate, stack, split, rev, select_n (constant predicate), pad, gather / dynamic_slice /
dynamic_update_slice / scatter with constant indices, reduce_window_sum (average pooling),
convert_element_type (to a float type), copy, cond with a constant branch index; call-like
primitives (jit / pjit, closed_call, core_call, custom_jvp_call, custom_vjp_call, remat /
checkpoint) are entered (`conflow.engine.jaxpr`, the walker shared with `conflow.from_model`).

Piecewise primitives (`SWITCHES`: max, min, abs, sign, clamp, comparisons, reduce_max/min,
argmax/argmin, reduce_window_max/min) are refused by `polynomial_form`; `region_polynomial(phi, D,
theta0)` fixes each of them to its outcome at θ0 and returns the polynomial φ is on θ0's
activation region. Anything else on a polynomial operand — exp, tanh, floor, division by a
variable, while / scan loops, … — raises `InputError` naming the primitive.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine import jaxpr as jaxpr_walk
from conflow.errors import InputError, PiecewiseError
from conflow.exact.polynomial import Poly, binary_rational

__all__ = [
    "SWITCHES",
    "Region",
    "RegionForm",
    "jaxpr_polynomials",
    "polynomial_form",
    "region_polynomial",
]


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
                c = binary_rational(xf, "constant")
            except InputError as e:
                raise InputError(
                    f"φ is not polynomial with exact coefficients: {e} (operand of primitive '{prim}')"
                ) from None
            cache[xf] = c
        out[idx] = c
    return out


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
        out[idx] = x ** int(k)  # Poly ** k, or an exact number (region values at θ0)
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
    return _obj(_object_matmul(A.reshape(nb, m, k), B.reshape(nb, k, n))
                .reshape(bshape + lfs + rfs))


def _object_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(nb, m, k) @ (nb, k, n) for object arrays, as k elementwise products and sums.

    Not `np.matmul`: its object loop mishandles an exception raised by an element's
    ``__mul__`` (a `work_limit` reached mid-product): it releases a reference the output still
    holds, and the process later dies of a segmentation fault. The elementwise object loops
    propagate the exception cleanly."""
    out = np.zeros((a.shape[0], a.shape[1], b.shape[2]), dtype=object)
    for j in range(a.shape[2]):
        out = out + a[:, :, j, None] * b[:, None, j, :]
    return out


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
# Linear window reductions (average pooling) and windows of max pooling
# ---------------------------------------------------------------------------------------------


def _window_index(in_shape, out_shape, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Flat input index read by each (output entry, window offset) of a ``reduce_window_*``.

    Returns ``idx`` and ``valid``, both ``(prod(out_shape), prod(window_dimensions))``; ``valid``
    is False where the window reads padding (or a hole of the base dilation). Per dimension d the
    window offset w of output o reads the dilated position q = o·stride + w·window_dilation −
    pad_lo, i.e. the input entry q / base_dilation when that is an integer in range.
    """
    nd = len(in_shape)
    wdims = [int(w) for w in params["window_dimensions"]]
    strides = [int(w) for w in params["window_strides"]]
    pads = [(int(a), int(b)) for a, b in params["padding"]]
    bdil = [int(w) for w in (params.get("base_dilation") or (1,) * nd)]
    wdil = [int(w) for w in (params.get("window_dilation") or (1,) * nd)]
    elem = [math.prod(in_shape[d + 1 :]) for d in range(nd)]
    flat = np.zeros((1,) * (2 * nd), dtype=np.int64)
    valid = np.ones((1,) * (2 * nd), dtype=bool)
    for d in range(nd):
        q = (
            np.arange(out_shape[d])[:, None] * strides[d]
            + np.arange(wdims[d])[None, :] * wdil[d]
            - pads[d][0]
        )
        ok = (q >= 0) & (q <= (in_shape[d] - 1) * bdil[d]) & (q % bdil[d] == 0)
        shape = [1] * (2 * nd)
        shape[2 * d], shape[2 * d + 1] = out_shape[d], wdims[d]
        flat = flat + (np.where(ok, q // bdil[d], 0) * elem[d]).reshape(shape)
        valid = valid & ok.reshape(shape)
    perm = [2 * d for d in range(nd)] + [2 * d + 1 for d in range(nd)]
    M, W = math.prod(out_shape), math.prod(wdims)
    flat = np.broadcast_to(flat, [s for d in range(nd) for s in (out_shape[d], wdims[d])])
    valid = np.broadcast_to(valid, flat.shape)
    return flat.transpose(perm).reshape(M, W), valid.transpose(perm).reshape(M, W)


def _reduce_window_sum(eqn, vals: list[object], sw: _Switches | None) -> list[np.ndarray]:
    x = _exact_array(vals[0], "reduce_window_sum")
    out_shape = tuple(eqn.outvars[0].aval.shape)
    idx, valid = _window_index(x.shape, out_shape, eqn.params)
    flat = x.ravel()
    out = np.empty(idx.shape[0], dtype=object)
    for r in range(idx.shape[0]):
        acc: object = 0
        for k in np.flatnonzero(valid[r]):
            acc = acc + flat[idx[r, k]]
        out[r] = acc
    return [out.reshape(out_shape)]


def _cond(eqn, vals: list[object], sw: _Switches | None) -> list[object]:
    """``cond`` on polynomial operands with a constant branch index: run the chosen branch (in a
    region, an index computed from θ is a constant: its comparisons were fixed at θ0)."""
    index = vals[0]
    if _is_sym(index):
        raise _refuse("cond", "branch index depends on θ")
    branches = eqn.params["branches"]
    k = int(np.clip(int(np.asarray(index)), 0, len(branches) - 1))
    br = branches[k]
    return _eval_jaxpr(br.jaxpr, br.consts, vals[1:], sw)


_EQN_HANDLERS: dict[str, Callable[..., list]] = {
    "reduce_window_sum": _reduce_window_sum,
    "cond": _cond,
}


# ---------------------------------------------------------------------------------------------
# Switches: piecewise primitives, fixed on the activation region of a point θ0
# ---------------------------------------------------------------------------------------------

#: Piecewise primitives. Without a region they are refused; with one, each is replaced by its
#: outcome at θ0 (`region_polynomial`).
SWITCHES = (
    "max",
    "min",
    "abs",
    "sign",
    "clamp",
    "gt",
    "ge",
    "lt",
    "le",
    "eq",
    "ne",
    "reduce_max",
    "reduce_min",
    "argmax",
    "argmin",
    "reduce_window_max",
    "reduce_window_min",
)

_REGION_HINT = (
    "piecewise polynomial: count it on the activation region of a point θ0 with "
    "conflow.laws.exact_count.exact_count_laws(model, region=θ0)"
)


class _Switches:
    """The switch outcomes of one region, in the order the jaxpr's equations meet them.

    Pass 1 (``recording``) interprets the jaxpr on the exact values at θ0 (object arrays of ints /
    Fractions) and appends each switch's outcome (masks, winning indices, signs) and its ties
    (entries where the two sides are equal at θ0) to ``log``. Pass 2 interprets the same jaxpr on
    polynomials and reads the outcomes back; a tie is accepted only if its two sides are the same
    polynomial (then either outcome gives the same φ), otherwise `InputError`.
    """

    def __init__(self) -> None:
        self.recording = True
        self.log: list[tuple[str, object]] = []
        self.pos = 0
        self.eqns: dict[str, int] = {}
        self.decisions: dict[str, int] = {}
        self.n_identical = 0

    def outcome(self, label: str, n: int, compute: Callable[[], object]) -> object:
        if self.recording:
            out = compute()
            self.log.append((label, out))
            self.decisions[label] = self.decisions.get(label, 0) + int(n)
            return out
        if self.pos >= len(self.log) or self.log[self.pos][0] != label:
            raise RuntimeError("exact engine: region replay out of step with its record (bug)")
        out = self.log[self.pos][1]
        self.pos += 1
        return out

    def check_ties(self, label: str, a: np.ndarray, b: object) -> None:
        """Pass 2: the tied entries a[k], b[k] (b may be a scalar) must be the same polynomial."""
        if self.recording or not np.size(a):
            return
        a = np.asarray(a, dtype=object).ravel()
        b = np.asarray(b, dtype=object)
        b = np.broadcast_to(b, a.shape) if b.ndim == 0 else b.ravel()
        bad = sum(1 for x, y in zip(a, b) if not ((x - y) == 0))
        if bad:
            raise InputError(
                f"region: θ0 lies on a switch boundary: {bad} argument(s) of '{label}' are exactly "
                "at the switch there (a tie at θ0); choose a point off the boundaries"
            )
        self.n_identical += int(a.size)


def _signs(d: np.ndarray) -> np.ndarray:
    """Signs (−1, 0, 1) of an object array of exact numbers, as int8."""
    d = np.asarray(d, dtype=object)
    out = np.zeros(d.shape, dtype=np.int8)
    for idx, x in np.ndenumerate(d):
        out[idx] = (x > 0) - (x < 0)
    return out


def _switch_operand(v: object, shape: tuple, name: str) -> tuple[np.ndarray, np.ndarray]:
    """An operand of a binary switch broadcast to ``shape`` as exact values, and its infinite
    entries as signs (±1; 0 where finite). NaN is refused."""
    if _is_sym(v):
        return np.broadcast_to(v, shape), np.zeros(shape, dtype=np.int8)
    arr = np.broadcast_to(np.asarray(v), shape)
    inf = np.zeros(shape, dtype=np.int8)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        if np.any(np.isnan(arr)):
            raise _refuse(name, "a constant operand is NaN")
        inf = np.sign(np.where(np.isinf(arr), arr, 0.0)).astype(np.int8)
        arr = np.where(inf != 0, 0.0, arr)
    return np.broadcast_to(_exact_array(arr, name), shape), inf


def _compare_signs(
    sw: _Switches, label: str, a: object, b: object, shape: tuple
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """sign(a − b) at θ0 elementwise (recorded / replayed), with the exact operands A, B and
    their infinite entries (signs, 0 where finite).

    An infinite constant side decides the sign by itself. A tie (a = b at θ0) has sign 0 and is
    checked in pass 2: the two sides must be the same polynomial.
    """
    A, ia = _switch_operand(a, shape, label)
    B, ib = _switch_operand(b, shape, label)
    forced = (ia != 0) | (ib != 0)

    def compute() -> np.ndarray:
        s = _signs(A - B)
        return np.where(forced, np.where(ia != 0, ia, -ib), s).astype(np.int8)

    s = sw.outcome(label, int(np.sum(~forced)), compute)
    tie = s == 0
    sw.check_ties(label, A[tie], B[tie])
    return s, A, B, (ia, ib)


def _sw_minmax(eqn, vals, sw: _Switches) -> list[np.ndarray]:
    """max(a, b) → a where a > b at θ0, else b (elementwise mask); min likewise."""
    name = eqn.primitive.name
    return [_minmax(sw, name, name == "max", vals[0], vals[1], tuple(eqn.outvars[0].aval.shape))]


def _minmax(sw: _Switches, label: str, largest: bool, a: object, b: object, shape) -> np.ndarray:
    s, A, B, inf = _compare_signs(sw, label, a, b, shape)
    pick_a = (s >= 0) if largest else (s <= 0)
    if np.any(np.where(pick_a, inf[0], inf[1]) != 0):  # max(x, +inf), min(x, −inf)
        raise _refuse(label, "an infinite constant operand wins")
    return _obj(np.array(np.where(pick_a, A, B), dtype=object))


def _sw_clamp(eqn, vals, sw: _Switches) -> list[np.ndarray]:
    """clamp(lo, x, hi) = min(max(x, lo), hi), both switches fixed at θ0."""
    lo, x, hi = vals
    shape = tuple(eqn.outvars[0].aval.shape)
    m = _minmax(sw, "clamp", True, x, lo, shape)
    return [_minmax(sw, "clamp", False, m, hi, shape)]


def _sw_abs(eqn, vals, sw: _Switches) -> list[np.ndarray]:
    """abs(x) → x where x ≥ 0 at θ0, −x elsewhere."""
    x = _exact_array(vals[0], "abs")
    s = sw.outcome("abs", x.size, lambda: _signs(x))
    sw.check_ties("abs", x[s == 0], 0)
    return [_obj(np.where(s >= 0, x, np.negative(x)))]


def _sw_sign(eqn, vals, sw: _Switches) -> list[np.ndarray]:
    """sign(x) → its (constant) value at θ0; a zero is accepted only where x ≡ 0."""
    x = _exact_array(vals[0], "sign")
    s = sw.outcome("sign", x.size, lambda: _signs(x))
    sw.check_ties("sign", x[s == 0], 0)
    return [np.asarray(s, dtype=eqn.outvars[0].aval.dtype)]


_CMP: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gt": lambda s: s > 0,
    "ge": lambda s: s >= 0,
    "lt": lambda s: s < 0,
    "le": lambda s: s <= 0,
    "eq": lambda s: s == 0,
    "ne": lambda s: s != 0,
}


def _sw_compare(eqn, vals, sw: _Switches) -> list[np.ndarray]:
    """A comparison of polynomials → its (constant, boolean) value at θ0."""
    name = eqn.primitive.name
    s, _, _, _ = _compare_signs(sw, name, vals[0], vals[1], tuple(eqn.outvars[0].aval.shape))
    return [np.asarray(_CMP[name](s), dtype=bool)]


def _winners(
    sw: _Switches, label: str, X: np.ndarray, largest: bool, valid: np.ndarray | None = None
) -> np.ndarray:
    """Index of the largest (smallest) entry of each row of X (M, K) at θ0, first on ties.

    ``valid`` (M, K) masks out padding. Ties between distinct polynomials raise in pass 2.
    """
    M, K = X.shape

    def compute() -> tuple[np.ndarray, np.ndarray]:
        win = np.zeros(M, dtype=np.int64)
        ties = []
        for r in range(M):
            cols = range(K) if valid is None else np.flatnonzero(valid[r]).tolist()
            best = None
            for k in cols:
                if best is None or (X[r, k] > X[r, best] if largest else X[r, k] < X[r, best]):
                    best = k
            if best is None:
                raise _refuse(label, "a window lies entirely in the padding")
            win[r] = best
            ties.extend((r, k) for k in cols if k != best and X[r, k] == X[r, best])
        return win, np.asarray(ties, dtype=np.int64).reshape(-1, 2)

    win, ties = sw.outcome(label, M, compute)
    if ties.size:
        sw.check_ties(label, X[ties[:, 0], win[ties[:, 0]]], X[ties[:, 0], ties[:, 1]])
    return win


def _moved(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """x with ``axes`` moved last and flattened: (M, K), and the shape of the kept axes."""
    keep = [i for i in range(x.ndim) if i not in axes]
    shape = tuple(x.shape[i] for i in keep)
    X = np.transpose(x, keep + list(axes)).reshape(math.prod(shape), -1)
    return X, shape


def _sw_reduce_extreme(eqn, vals, sw: _Switches) -> list[np.ndarray]:
    """reduce_max / reduce_min → the entry that wins at θ0 (one winner per output entry)."""
    name = eqn.primitive.name
    x = _exact_array(vals[0], name)
    X, shape = _moved(x, tuple(int(a) % max(x.ndim, 1) for a in eqn.params["axes"]))
    win = _winners(sw, name, X, name == "reduce_max")
    return [_obj(X[np.arange(X.shape[0]), win].reshape(shape))]


def _sw_arg_extreme(eqn, vals, sw: _Switches) -> list[np.ndarray]:
    """argmax / argmin → the (constant) winning index at θ0."""
    name = eqn.primitive.name
    x = _exact_array(vals[0], name)
    X, shape = _moved(x, tuple(int(a) % max(x.ndim, 1) for a in eqn.params["axes"]))
    win = _winners(sw, name, X, name == "argmax")
    return [np.asarray(win.reshape(shape), dtype=eqn.params["index_dtype"])]


def _sw_window_extreme(eqn, vals, sw: _Switches) -> list[np.ndarray]:
    """reduce_window_max / _min (max pooling) → the entry of each window that wins at θ0."""
    name = eqn.primitive.name
    x = _exact_array(vals[0], name)
    out_shape = tuple(eqn.outvars[0].aval.shape)
    idx, valid = _window_index(x.shape, out_shape, eqn.params)
    X = x.ravel()[idx]
    win = _winners(sw, name, X, name == "reduce_window_max", valid)
    return [_obj(X[np.arange(X.shape[0]), win].reshape(out_shape))]


_SWITCH_HANDLERS: dict[str, Callable[..., list]] = {
    "max": _sw_minmax,
    "min": _sw_minmax,
    "clamp": _sw_clamp,
    "abs": _sw_abs,
    "sign": _sw_sign,
    **{c: _sw_compare for c in _CMP},
    "reduce_max": _sw_reduce_extreme,
    "reduce_min": _sw_reduce_extreme,
    "argmax": _sw_arg_extreme,
    "argmin": _sw_arg_extreme,
    "reduce_window_max": _sw_window_extreme,
    "reduce_window_min": _sw_window_extreme,
}
assert set(_SWITCH_HANDLERS) == set(SWITCHES)


# ---------------------------------------------------------------------------------------------
# Interpreter
# ---------------------------------------------------------------------------------------------


def _eval_jaxpr(
    jaxpr, consts: Sequence[object], args: Sequence[object], sw: _Switches | None = None
) -> list[object]:
    """Run ``jaxpr`` (`conflow.engine.jaxpr.walk`) with θ-dependent values as object arrays (of
    `Poly`, or, in pass 1 of a region, of exact numbers); constants stay numeric and go through
    JAX. ``sw``: the region's switches (None: piecewise primitives are refused)."""

    def apply(eqn, vals: list) -> list:
        name = eqn.primitive.name
        if not any(_is_sym(v) for v in vals):
            return [np.asarray(o) for o in jaxpr_walk.bind(eqn, vals)]
        if name in _HANDLERS:
            out = _HANDLERS[name](eqn.params, *vals)
            return list(out) if isinstance(out, list) else [out]
        if name in _BY_INDEX:
            return _by_index(eqn, vals)
        if name in _EQN_HANDLERS:
            return _EQN_HANDLERS[name](eqn, vals, sw)
        if name in _SWITCH_HANDLERS:
            if sw is None:
                raise PiecewiseError(str(_refuse(name, _REGION_HINT)))
            if sw.recording:
                sw.eqns[name] = sw.eqns.get(name, 0) + 1
            return _SWITCH_HANDLERS[name](eqn, vals, sw)
        raise _refuse(name)

    return jaxpr_walk.walk(jaxpr, consts, args, apply)


def _variables(D: int) -> np.ndarray:
    x = np.empty(D, dtype=object)
    for i in range(D):
        x[i] = Poly.var(i)
    return x


def _outputs_as_polys(outs: list[object]) -> list[Poly]:
    if len(outs) != 1:
        raise InputError(f"φ must return one array, got {len(outs)} outputs")
    out = _exact_array(outs[0], "output").ravel()
    return [y if isinstance(y, Poly) else Poly.const(y) for y in out]


def jaxpr_polynomials(closed_jaxpr, D: int) -> list[Poly]:
    """Polynomials of the (single, flattened) output of a closed jaxpr with one ``(D,)`` input."""
    return _outputs_as_polys(_eval_jaxpr(closed_jaxpr.jaxpr, closed_jaxpr.consts, [_variables(D)]))


def polynomial_form(phi: Callable[[jax.Array], jax.Array], D: int) -> list[Poly]:
    """The exact polynomials φ_1..φ_d of a polynomial JAX map φ: R^D → R^d (flattened output).

    Variables: x_j = θ_j, j = 0..D−1. Float constants are read as the binary rationals they are
    (module docstring). Raises `InputError` naming the first primitive that is not polynomial
    (e.g. ``tanh``, ``div`` by a variable; piecewise ones such as ``max`` point to
    `region_polynomial`).
    """
    D = int(D)
    if D < 1:
        raise InputError("polynomial_form: D must be ≥ 1")
    closed = jax.make_jaxpr(phi)(jax.ShapeDtypeStruct((D,), jnp.float64))
    return jaxpr_polynomials(closed, D)


# ---------------------------------------------------------------------------------------------
# Regions
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Region:
    """The activation region of a point θ0 on which φ was replaced by a polynomial.

    Attributes:
        theta0: θ0, flat (D,), as float64 values.
        n_switches: equations of φ's jaxpr whose outcome was fixed (one ``max`` on an
            (N, width) array, as in a network vmapped over N inputs, is one equation).
        n_decisions: scalar outcomes fixed: one per entry of each switch (N·width for that
            ``max``; two per entry of a ``clamp``; one winner per output of a ``reduce_max``).
        n_identical: tied entries at θ0 whose sides are the same polynomial (harmless).
        by_primitive: ``((primitive, equations, decisions), …)`` sorted by primitive name.
    """

    theta0: tuple[float, ...] = dataclasses.field(repr=False)
    n_switches: int
    n_decisions: int
    n_identical: int
    by_primitive: tuple[tuple[str, int, int], ...]


@dataclasses.dataclass(frozen=True)
class RegionForm:
    """`region_polynomial`'s result: the region's polynomials φ_1..φ_d and the `Region`."""

    polys: tuple[Poly, ...] = dataclasses.field(repr=False)
    region: Region


def _check_point(theta0: object, D: int) -> np.ndarray:
    try:
        t = np.asarray(theta0, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("region: θ0 must be a flat float array of shape (D,)") from None
    if t.shape != (D,):
        raise InputError(f"region: θ0 must have shape ({D},) (flat θ), got {t.shape}")
    if not np.all(np.isfinite(t)):
        raise InputError("region: θ0 contains NaN or inf")
    return t


def region_polynomial(phi: Callable[[jax.Array], jax.Array], D: int, theta0: object) -> RegionForm:
    """The polynomial that φ is on the activation region of θ0 (ReLU, leaky ReLU, max pooling, …).

    φ: R^D → R^d is a JAX function built from polynomial primitives and switches (`SWITCHES`):
    ``max``/``min`` (ReLU is ``max(x, 0)``; ``jax.nn.relu`` is a ``custom_jvp_call`` around it,
    which is entered), ``abs``, ``sign``, ``clamp``, comparisons (``jnp.where(x >= 0, x, a·x)``:
    leaky ReLU, hard tanh), ``reduce_max``/``argmax`` (and min), ``reduce_window_max``/``min``
    (max pooling); ``cond`` with a predicate computed from θ follows the branch taken at θ0.

    Pass 1 evaluates φ's jaxpr at θ0 in exact arithmetic (θ0's float64 entries and φ's float
    constants as binary rationals) and records, for every switch, its outcome at θ0 — for
    ``max(a, b)`` elementwise which operand wins (a mask of the full operand shape), for ``abs`` /
    ``sign`` the sign of the argument, for a comparison its value, for ``reduce_max`` the winning
    index. Pass 2 interprets the same jaxpr on polynomials with every switch replaced by its
    recorded outcome (max(a, b) → a or b elementwise, abs(x) → ±x, a comparison → a constant
    predicate, …), which gives polynomials P_1..P_d.

    Why P is the right object. Let R be the set of θ where every switch has the outcome it has at
    θ0 (with strict inequalities). Since no switch is tied at θ0, R is an open neighbourhood of θ0
    (each argument is continuous), and φ = P on R. So ∂φ = ∂P on R, and so are all brackets of
    the generators: the Lie algebra of φ's fields on R is that of P's, and P's generic
    dim Lie(W)(z) (what the exact engine computes, at a random point mod p) is attained on a
    dense open subset of R^D, which meets R. The count is therefore that of φ at generic points
    of the region of θ0. For a network sampled on N inputs (`conflow.from_model`: φ_N is the
    network vmapped over the inputs) one ``max`` equation has an (N, width) mask: every input
    keeps its own activation pattern, and the generators still come from inputs in many
    activation regions of input space — P is φ_N near θ0, not "the network on one linear piece".

    A tie — an argument exactly at its switch at θ0 (e.g. a ReLU unit with pre-activation 0) —
    raises `InputError`, unless its two sides are the same polynomial (e.g. ``max(x, x)``, or a
    unit whose input is identically 0), where either outcome gives the same P.

    Args:
        phi: flat θ, shape ``(D,)`` → φ(θ) (any shape, flattened).
        D: number of parameters.
        theta0: the point, flat float64 of shape ``(D,)``.

    Returns:
        `RegionForm`: ``polys`` (P_1..P_d, exact, on variables x_j = θ_j) and ``region``
        (θ0 and the switches fixed).
    """
    D = int(D)
    if D < 1:
        raise InputError("region_polynomial: D must be ≥ 1")
    t = _check_point(theta0, D)
    closed = jax.make_jaxpr(phi)(jax.ShapeDtypeStruct((D,), jnp.float64))
    sw = _Switches()
    x0 = np.empty(D, dtype=object)
    for j in range(D):
        x0[j] = binary_rational(float(t[j]), "θ0 entry")
    _eval_jaxpr(closed.jaxpr, closed.consts, [x0], sw)  # pass 1: outcomes at θ0
    sw.recording = False
    polys = _outputs_as_polys(_eval_jaxpr(closed.jaxpr, closed.consts, [_variables(D)], sw))
    if sw.pos != len(sw.log):
        raise RuntimeError("exact engine: region replay out of step with its record (bug)")
    names = sorted(set(sw.eqns) | set(sw.decisions))
    by = tuple((n, sw.eqns.get(n, 0), sw.decisions.get(n, 0)) for n in names)
    region = Region(
        theta0=tuple(float(v) for v in t),
        n_switches=sum(sw.eqns.values()),
        n_decisions=sum(sw.decisions.values()),
        n_identical=sw.n_identical,
        by_primitive=by,
    )
    return RegionForm(polys=tuple(polys), region=region)
