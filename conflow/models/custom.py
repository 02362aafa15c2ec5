"""A model from any JAX function of a parameter pytree.

`custom(phi, params)` flattens the pytree with `jax.flatten_util.ravel_pytree`, names one
`ParamBlock` per leaf after its pytree path, and wraps φ as flat θ ↦ ravel(phi(unravel(θ))). Since the
generators are the rows of ∂φ (MATH.md §1.3), any φ works through which the network output
factors (φ = the network's own output map on a fixed batch is always valid but rarely minimal).

Block names (leaf order = `jax.tree_util.tree_leaves` order = `ravel_pytree` order; dict keys are
sorted by JAX):

    {"U": a, "V": b}                 ->  "U", "V"
    {"layer1": {"w": a, "b": c}}     ->  "layer1.b", "layer1.w"
    {"layers": [{"w": a}, {"w": b}]} ->  "layers[0].w", "layers[1].w"
    [a, b]  /  (a, b)                ->  "0", "1"
    a single array                   ->  "theta"

Attributes (NamedTuple fields, dataclass / equinox fields) read like dict keys (``"mlp.weight"``).
Entries are then named row-major, e.g. ``"layer1.w[0,2]"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

from conflow.errors import InputError
from conflow.models.base import Model, ParamBlock, split_flat
from conflow.precision import float64

Array = jax.Array

ROOT_NAME = "theta"
#: φ and its jvp must be finite at this many generic Gaussian points (`Model.sample_points`).
N_CHECK_POINTS = 4


def path_name(path: Sequence[Any]) -> str:
    """Readable name of a pytree key path: ``layers[0].w``; the root leaf is ``"theta"``."""
    if not path:
        return ROOT_NAME
    out = []
    for i, key in enumerate(path):
        if isinstance(key, DictKey):
            s, index = str(key.key), False
        elif isinstance(key, GetAttrKey):
            s, index = key.name, False
        elif isinstance(key, SequenceKey):
            s, index = str(key.idx), True
        elif isinstance(key, FlattenedIndexKey):
            s, index = str(key.key), True
        else:
            s, index = str(key), False
        out.append(s if i == 0 else (f"[{s}]" if index else f".{s}"))
    return "".join(out)


def brief_error(exc: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, shortened, for one-line errors."""
    lines = str(exc).strip().splitlines()
    msg = lines[0] if lines else ""
    msg = msg if len(msg) <= limit else msg[: limit - 1] + "…"
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _ravel_output(out: Any) -> Array:
    """φ's output (an array, or a pytree of arrays) as one flat vector, shape ``(d,)``."""
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) == 1:
        return jnp.ravel(jnp.asarray(leaves[0]))
    return jnp.concatenate([jnp.ravel(jnp.asarray(x)) for x in leaves]) if leaves else jnp.zeros(0)


def _check_output(y: Any, where: str) -> None:
    """Raise `InputError` unless ``y`` is a non-empty real floating-point array."""
    kind = np.dtype(y.dtype).kind
    if kind in "biu":
        raise InputError(
            f"custom: phi is not differentiable: its output has dtype {y.dtype} {where} "
            "(need floating point)"
        )
    if kind == "c":
        raise InputError(f"custom: phi returned a complex array {where}; φ must be real")
    if kind != "f":
        raise InputError(f"custom: phi output is not numeric (dtype {y.dtype}) {where}")
    if math.prod(y.shape) == 0:
        raise InputError(f"custom: phi returned an empty array {where}")


@float64
def custom(
    phi: Callable[[Any], Any],
    params: Any,
    name: str = "custom",
    *,
    positive: Sequence[str] = (),
) -> Model:
    """Wrap ``phi(params) -> array`` (any shape) as a `Model` on flat θ = ravel_pytree(params).

    Args:
        phi: a JAX function of a pytree shaped like ``params``; output raveled to shape ``(d,)``.
            Must be traceable by `jax.jit` and differentiable by `jax.jvp`.
        params: an example pytree of real floating-point arrays (values unused except for the
            first call; leaves are cast to float64).
        name: the model's family name, for reports.
        positive: block names (see module docstring) living in the positive orthant (generic
            points drawn positive there, for mirror/entropy metrics).

    Returns a `Model` with ``dims = (D,)`` and no closed-form laws.

    Raises `InputError` (one line) if phi is not callable; params has no leaves / no entries or a
    non-float leaf; phi raises on params; its output is empty, non-numeric, integer or complex; it
    cannot be jit-traced or jvp-differentiated; or it is NaN/inf (or its derivative is) at one of
    `N_CHECK_POINTS` generic Gaussian points.
    """
    if not callable(phi):
        raise InputError(f"custom: phi is not callable (got {type(phi).__name__})")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"custom: name must be a non-empty string, got {name!r}")

    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not leaves_with_paths:
        raise InputError("custom: params is empty (no array leaves)")
    names, leaves = [], []
    for path, leaf in leaves_with_paths:
        leaf_name = path_name(path)
        try:
            arr = np.asarray(leaf)
        except Exception:
            arr = None
        if arr is None or arr.dtype.kind != "f":
            what = type(leaf).__name__ if arr is None else f"dtype {arr.dtype}"
            raise InputError(
                f"custom: parameter {leaf_name!r} has {what}; parameters must be real "
                "floating-point arrays"
            )
        names.append(leaf_name)
        leaves.append(jnp.asarray(np.asarray(arr, dtype=np.float64)))  # no compile per shape
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"custom: parameter names collide after flattening: {duplicates}")
    unknown = sorted(set(positive) - set(names))
    if unknown:
        raise InputError(f"custom: positive names {unknown} are not parameters; have {names}")

    params64 = jax.tree_util.tree_unflatten(treedef, leaves)
    flat0, unravel = ravel_pytree(params64)
    if flat0.size == 0:
        raise InputError("custom: params has no entries (all leaves are empty)")
    blocks = tuple(
        ParamBlock(n, tuple(int(s) for s in x.shape), n in positive) for n, x in zip(names, leaves)
    )
    _check_layout(unravel, blocks, int(flat0.size))

    def flat_phi(theta: Array) -> Array:
        """θ, shape (D,) ↦ ravel(phi(unravel(θ))), shape (d,)."""
        return _ravel_output(phi(unravel(theta)))

    # 1. the example point, abstractly (no compilation); diagnosed eagerly if tracing fails.
    try:
        out_shape = jax.eval_shape(lambda p: _ravel_output(phi(p)), params64)
    except Exception as e_trace:  # noqa: BLE001
        _diagnose_example(phi, params64, e_trace)
        raise  # unreachable: _diagnose_example always raises
    _check_output(out_shape, "on the example params")

    def ravel(p: Any) -> Array:
        return ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), p))[0]

    model = Model(name=name, dims=(int(flat0.size),), phi=flat_phi, blocks=blocks,
                  unravel_params=unravel, ravel_params=ravel)

    # 2. generic points: jit-traceable, jvp-differentiable, finite.
    # (host arrays in: no compilation per shape for drawing the tangent or slicing the points)
    thetas = np.asarray(model.sample_points(jax.random.PRNGKey(0), N_CHECK_POINTS))
    tangent = np.random.default_rng(1).standard_normal(thetas.shape[1:])
    value_and_jvp = jax.jit(lambda t, v: jax.jvp(flat_phi, (t,), (v,)))
    try:
        ys, ydots = zip(*(value_and_jvp(t, tangent) for t in thetas))  # one compilation
    except Exception as e:  # noqa: BLE001
        try:  # which part failed: tracing φ itself, or differentiating it?
            jax.jit(flat_phi)(thetas[0])
        except Exception as e_jit:  # noqa: BLE001
            raise InputError(
                "custom: phi cannot be traced by jax.jit (use jax.numpy only, no Python control "
                f"flow on values): {brief_error(e_jit)}"
            ) from e_jit
        raise InputError(f"custom: phi is not differentiable (jax.jvp failed): {brief_error(e)}") from e
    _check_output(ys[0], "at a generic point")
    # checked on the host: a few values, and no compilation per shape as eager jnp would need
    if not all(np.isfinite(np.asarray(y)).all() for y in ys):
        raise InputError("custom: φ returned NaN/inf at a generic point")
    if not all(np.isfinite(np.asarray(y)).all() for y in ydots):
        raise InputError("custom: the derivative of φ is NaN/inf at a generic point")
    return model


def _diagnose_example(phi: Callable[[Any], Any], params: Any, trace_error: BaseException) -> None:
    """φ failed under tracing at the example params: say why in one line (always raises)."""
    try:
        out = phi(params)
    except Exception as e:  # noqa: BLE001 - any user error becomes one line
        raise InputError(f"custom: phi raised {brief_error(e)} on the example params") from e
    try:
        y = _ravel_output(out)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"custom: phi output is not a numeric array (got {type(out).__name__})") from e
    _check_output(y, "on the example params")
    raise InputError(
        "custom: phi cannot be traced by JAX (use jax.numpy only, no Python control flow on "
        f"values): {brief_error(trace_error)}"
    ) from trace_error


def _check_layout(unravel: Callable[[Array], Any], blocks: Sequence[ParamBlock], D: int) -> None:
    """Check that the blocks are ravel_pytree's layout: unravel(arange) leaf-wise equals the slices."""
    probe = np.arange(D, dtype=np.float64)
    got = [np.asarray(g) for g in jax.tree_util.tree_leaves(jax.jit(unravel)(probe))]
    want = split_flat(probe, blocks)  # one compilation above, numpy here
    if len(got) != len(want) or not all(
        g.shape == w.shape and np.array_equal(g, w) for g, w in zip(got, want)
    ):
        raise RuntimeError("conflow bug: block layout differs from ravel_pytree's order")
