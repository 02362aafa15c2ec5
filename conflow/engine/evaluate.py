"""Random bracket chains at generic points, evaluated where the data is.

A stage evaluates S right-nested bracket chains of one depth at each of P points (MATH.md §1.6):
chain s uses the coefficients c_s = (a_0, …, a_depth), uniform on [−√3, √3] (unit variance: any
law with a density makes a sample escape every proper subspace of the level's span with
probability one). They are drawn on the host from the count's seed, one stream per count, and
sent with an explicit `put` (a few MB per call; drawing them on the device would compile a
random-number program costing more than small counts themselves); a stage chunked differently
to fit memory draws the same samples. Values stay on the device.

The batch is (points × samples) flattened, point-major, which runs ~10× faster than nested
vmaps; with a `batch_sharding`, the flat batch is split over its devices. Compiled programs are
cached per *structure* of the field (its jaxpr), so counting many nets of equal shapes (as
`conflow reproduce` does) compiles each stage once per process.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from conflow.engine.brackets import Family, bracket_chain
from conflow.engine.distributed import global_array
from conflow.engine.family import VectorFamily
from conflow.engine.jaxpr import bind, n_equations, walk
from conflow.engine.rank import rounding_scales
from conflow.errors import InputError
from conflow.precision import float32_mode

Array = jax.Array

# XLA's LLVM optimisation passes dominate the compile time of deeply nested brackets while buying
# little on small states; below this state dimension the bracket kernels are compiled at -O0,
# without the fusion emitters and in one codegen unit (≈ 2× faster compiles, measured).
FAST_COMPILE_MAX_DIM = 512
FAST_COMPILE_OPTIONS = {
    "xla_backend_optimization_level": 0,
    "xla_cpu_use_fusion_emitters": False,
    "xla_cpu_parallel_codegen_split_count": 1,
}
# Primitives whose -O0 code is far slower than optimised code (an Equinox Conv1d CNN: 673 s at
# -O0 against 11 s optimised, measured): families using them are always compiled optimised.
_SLOW_UNOPTIMISED = ("conv_general_dilated",)
# Fields whose jaxpr holds Python callables (custom derivative rules, host callbacks) are not
# identified by their text: they are compiled as given, never shared.
_UNSHAREABLE = ("custom_jvp_call", "custom_vjp_call", "callback")
# Closed-over constants hashed to share a compiled program: at most this many elements.
_SHARE_MAX_CONST_ELEMENTS = 1 << 20

#: Coefficients are uniform on [−√3, √3] (unit variance).
COEFF_HALF_WIDTH = math.sqrt(3.0)
#: The flat batch of a compiled stage call holds at most this many points' worth of samples.
BATCH_POINTS = 3
#: Bytes of intermediates one compiled stage call may hold (XLA's memory analysis of the
#: program) on a CPU; on an accelerator, this fraction of its memory. A model evaluated on a
#: large input sample (`from_model`: every bracket chain runs the network on all N inputs, with
#: 2^depth tangent copies) needed 11 GB for 768 chains of depth 4 at D = 250; its chunks are cut
#: until the program fits.
EVAL_TEMP_BYTES = 1 << 30
EVAL_TEMP_FRACTION = 1 / 8


#: A field is costly to evaluate when n times the coefficients it is evaluated on (m, or those
#: of a `VectorFamily.sample_field`) exceeds this: a network on a large input sample, whose every
#: evaluation runs all N inputs. Then level 0 is drawn from the generator matrices where the
#: family gives them (`generator_matrices`), and levels 1 and 2 get a stage each: a shared stage
#: saves a compile but evaluates depth-2 chains, drawn for the complement before level 1, where
#: level 1 alone needs depth-1 chains and level 2 (if reached) fewer samples (`from_model`,
#: D = 553 on 4,424 inputs: 8.5 s shared against 4.5 s for level 1 alone, which settled it;
#: D = 390 on 3,120 inputs, level 2 reached: 7.3 s against 2.7 + 2.9 s; measured). Below it,
#: the compiles saved (programs shared across counts of one structure) weigh more.
COSTLY_FIELD_ENTRIES = 1 << 20


def costly_field(family: VectorFamily) -> bool:
    """Whether the family's field is costly to evaluate: as it says (`VectorFamily.costly`),
    else by its size (`COSTLY_FIELD_ENTRIES`)."""
    if family.costly is not None:
        return family.costly
    return family.state_dim * family.sampled[1] > COSTLY_FIELD_ENTRIES


def _compile_options(fast_compile: bool) -> dict | None:
    return FAST_COMPILE_OPTIONS if fast_compile else None


def _abstract(family: VectorFamily, k: int, dtype) -> tuple:
    return (jax.ShapeDtypeStruct((family.state_dim,), dtype), jax.ShapeDtypeStruct((k,), dtype))


def fast_compile(family: VectorFamily) -> bool:
    """Whether the family's bracket kernels are compiled at -O0 (small states, no slow ops)."""
    if family.state_dim > FAST_COMPILE_MAX_DIM:
        return False
    field, k = family.sampled
    text = str(jax.make_jaxpr(field)(*_abstract(family, k, jnp.float64)))
    return not any(name in text for name in _SLOW_UNOPTIMISED)


#: The structures kept, least recently used first; bounded, like the program caches below,
#: because every compiled program holds three memory maps per XLA kernel (a bracket program of
#: a deep net has thousands): unbounded, a process counting 16 random deep linear nets reached
#: the kernel's limit of 65,530 maps, and LLVM failed to allocate and crashed the process.
_SHARED_FIELDS: collections.OrderedDict[tuple, Family] = collections.OrderedDict()
_SHARED_FIELDS_MAX = 8


def _recent(cache: collections.OrderedDict, key: tuple, make: Callable[[], Any]) -> Any:
    """``cache[key]`` (``make()`` if absent), the cache kept to its `_SHARED_FIELDS_MAX` most
    recently used keys."""
    if key not in cache:
        cache[key] = make()
    cache.move_to_end(key)
    while len(cache) > _SHARED_FIELDS_MAX:
        cache.popitem(last=False)
    return cache[key]


#: When the process holds more memory maps than this fraction of the kernel's limit, the
#: compiled programs are dropped before the next count (`relieve_map_pressure`).
MAP_PRESSURE = 0.4


def _map_counts() -> tuple[int, int] | None:
    """(memory maps held by this process, the kernel's limit), or ``None`` off Linux."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read())
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f), limit
    except (OSError, ValueError):
        return None


def relieve_map_pressure() -> bool:
    """Drop the compiled bracket programs (conflow's caches and JAX's) when the process holds
    more than `MAP_PRESSURE` of the kernel's limit of memory maps; returns whether it did.

    XLA's CPU backend maps three pages per compiled kernel, and a bracket program of a deep net
    has thousands of kernels: a process counting a dozen different deep nets reached the limit
    (65,530 maps by default), and LLVM then failed to allocate and crashed the process. Called
    at the start of every numeric trace; costs reading /proc/self/maps (about a millisecond).
    """
    counts = _map_counts()
    if counts is None or counts[0] < MAP_PRESSURE * counts[1]:
        return False
    _stage_evaluator.cache_clear()
    _compiled_stage.cache_clear()
    _columns_program.cache_clear()
    _SHARED_FIELDS.clear()
    _TEMP_PER_CHAIN.clear()
    _PRIMITIVE_PROGRAMS.clear()
    jax.clear_caches()
    return True


def shared_field(family: VectorFamily, dtype) -> Family:
    """The family's sampled field, as one function object per structure (jaxpr text and constants).

    Two models of equal shapes give the same object, so the compiled programs of the first count
    serve the next (`_stage_evaluator` is cached on it). Fields with custom derivative rules or
    callbacks, large constants or a scale of their own (`bracket_chain`) are returned as given.
    """
    field, k = family.sampled
    if hasattr(field, "scale"):  # a field with its own scale (`bracket_chain`) is not a jaxpr
        return field
    closed = jax.make_jaxpr(field)(*_abstract(family, k, dtype))
    text = str(closed.jaxpr)
    if any(name in text for name in _UNSHAREABLE) or sum(
            np.size(c) for c in closed.consts) > _SHARE_MAX_CONST_ELEMENTS:
        return field
    digest = hashlib.sha256(text.encode())
    for const in jax.device_get(list(closed.consts)):
        const = np.asarray(const)
        digest.update(f"{const.dtype}{const.shape}".encode())
        digest.update(np.ascontiguousarray(const).tobytes())
    key = (digest.hexdigest(), family.state_dim, k, str(dtype))

    def shared() -> Family:
        # 0.07 s of import (etils, …): paid by the first count, not by `import conflow`
        from jax.extend.core import jaxpr_as_fun

        evaluate = jaxpr_as_fun(closed)
        return lambda z, a: evaluate(z, a)[0]

    return _recent(_SHARED_FIELDS, key, shared)


def batch_sharding(devices: int | None = None) -> NamedSharding | None:
    """Sharding of the bracket batch over ``devices`` devices (``None``: all of them; in a
    multi-process run, `jax.devices()` lists every process's devices).

    Returns ``None`` (no sharding) for a single device. The batch axis is the only one split:
    every device evaluates its share of the random bracket chains, so results do not depend on
    the number of devices (up to rounding).
    """
    available = jax.devices()
    n = len(available) if devices is None else devices
    if n < 1 or n > len(available):
        raise InputError(f"devices must be between 1 and {len(available)}, got {devices}")
    if n == 1:
        return None
    return NamedSharding(Mesh(np.array(available[:n]), ("batch",)), PartitionSpec("batch"))


def put(x: np.ndarray, sharding: NamedSharding | None = None) -> Array:
    """An explicit host-to-device transfer of ``x`` (replicated over ``sharding``'s mesh, or to
    the default device), valid in a multi-process run too."""
    if sharding is None:
        return jax.device_put(x)
    replicated = NamedSharding(sharding.mesh, PartitionSpec())
    if jax.process_count() > 1:  # every process holds the same host data
        return global_array(np.asarray(x), replicated)
    return jax.device_put(x, replicated)


@functools.lru_cache(maxsize=32)
def _stage_evaluator(
    field: Family, depth: int, first: int, chunk: int, m: int, dtype: str, fast_compile: bool,
    sharding: NamedSharding | None, weighted: bool,
) -> Callable:
    """jit of ``chunk`` random bracket chains of ``depth`` at every point, levels ``first..``.

    Signature of the result: ``(points (P, n), coeffs (chunk, depth + 1, m), weights (P, m) |
    None) -> (values (P, chunk, L, n), scales (P, chunk, L), all finite)`` for the levels
    ``first..depth`` (L of them); the scales are the chain's `rounding_scales`, so every
    normalised row carries rounding noise of about the same relative size. ``weights`` rescale
    each point's coefficients (`generator_weights`).
    """
    chain = bracket_chain(field, depth)

    def levels(z, coeffs):
        values, scales = chain(z, coeffs)
        return values[first:], rounding_scales(values, scales)[first:]

    def evaluate(points, coeffs, weights):
        n_points = points.shape[0]
        z = jnp.repeat(points, chunk, axis=0)  # (P · chunk, n), point-major
        flat = jnp.tile(coeffs, (n_points, 1, 1))
        if weighted:
            flat = flat * jnp.repeat(weights, chunk, axis=0)[:, None, :]
        if sharding is not None:
            z = jax.lax.with_sharding_constraint(z, sharding)
            flat = jax.lax.with_sharding_constraint(flat, sharding)
        values, scales = jax.vmap(levels)(z, flat)
        return (values.reshape(n_points, chunk, *values.shape[1:]),
                scales.reshape(n_points, chunk, -1), jnp.all(jnp.isfinite(values)))

    return jax.jit(evaluate, compiler_options=_compile_options(fast_compile))


def _spec(x: Array | None) -> jax.ShapeDtypeStruct | None:
    return None if x is None else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)


#: A stage program of at least this many equations (its calls' bodies included) is run
#: equation by equation (`Interpreted`) instead of compiled. Each bracket depth nests one
#: more JVP and about triples the program, and XLA's compile time grows with it, where the run
#: of a few chains stays short: the depth-5 stage of ``linear 3,3,7,9,4,3,5,6,4,6,2`` (43,828
#: equations, 16 chains at 3 points) compiled in 65 s at -O0 (118 s optimised) and ran in
#: 1.7 s; interpreted, it ran in 7.5 s the first time (each primitive compiled once per shape)
#: and 1.2 s after, with the same values to the last bit. The depth-6 stage of
#: ``linear 5,14,15,1`` (23,137 equations): 3.1 s, then 0.8 s, against about 10 s of compile
#: (measured).
INTERPRET_MIN_EQNS = 10_000


class Interpreted:
    """A traced stage program run equation by equation (`conflow.engine.jaxpr.walk`): each
    equation through a ``jit`` of its primitive (`_primitive_program`), compiled once per
    primitive, parameters and shapes and shared across programs, on the device of its
    arguments; values no later equation needs are dropped. The program's constants and
    literals are put on the device explicitly, once each. Called like the compiled program."""

    def __init__(self, traced: Any) -> None:
        self.jaxpr = traced.jaxpr.jaxpr
        self.consts = [jax.device_put(c) for c in traced.jaxpr.consts]
        self.out_tree = traced.out_tree
        self.literals: dict[tuple, Array] = {}
        self.programs: dict[int, Callable] = {}  # per equation (by id: the jaxpr holds them)

    def literal(self, value: Any) -> Array:
        """A literal of the program (a scalar) as a device array, put there once."""
        value = np.asarray(value)
        key = (value.dtype.str, value.tobytes())
        if key not in self.literals:
            self.literals[key] = jax.device_put(value)
        return self.literals[key]

    def run_equation(self, eqn: Any, invals: list) -> list:
        program = self.programs.get(id(eqn))
        if program is None:
            program = self.programs[id(eqn)] = _primitive_program(eqn)
        return program(*invals)

    def __call__(self, *args: Any) -> Any:
        outs = walk(self.jaxpr, self.consts, jax.tree_util.tree_leaves(args), self.run_equation,
                    literal=self.literal)
        return jax.tree_util.tree_unflatten(self.out_tree, outs)


#: The programs of `_primitive_program`, per primitive and parameters (first in, first out).
_PRIMITIVE_PROGRAMS: dict[tuple, Callable] = {}
_PRIMITIVE_PROGRAMS_MAX = 4096


def _primitive_program(eqn: Any) -> Callable:
    """``invals -> outvals`` for one equation of an `Interpreted` program: a ``jit`` of its
    primitive, shared by every equation with the same parameters, so that its arguments are
    only device arrays (JAX's own eager path moves some parameters to the device implicitly, a
    ``slice``'s start indices, which a ``transfer_guard`` refuses); `bind` where the
    parameters cannot be a key."""
    try:
        key = (eqn.primitive, tuple(sorted(eqn.params.items())))
        hash(key)
    except TypeError:
        return lambda *invals: bind(eqn, invals)
    if key not in _PRIMITIVE_PROGRAMS:  # any equation with this key serves
        if len(_PRIMITIVE_PROGRAMS) >= _PRIMITIVE_PROGRAMS_MAX:
            del _PRIMITIVE_PROGRAMS[next(iter(_PRIMITIVE_PROGRAMS))]
        _PRIMITIVE_PROGRAMS[key] = jax.jit(lambda *invals: bind(eqn, invals))
    return _PRIMITIVE_PROGRAMS[key]


@functools.lru_cache(maxsize=32)
def _compiled_stage(evaluate: Callable, points: jax.ShapeDtypeStruct,
                    coeffs: jax.ShapeDtypeStruct, weights: jax.ShapeDtypeStruct | None
                    ) -> tuple[Callable, int | None]:
    """The stage program compiled for these argument shapes, and the bytes of intermediates it
    holds (``None`` where the backend does not say); `Interpreted` where it has at least
    `INTERPRET_MIN_EQNS` equations."""
    if hasattr(evaluate, "trace"):  # JAX ≥ 0.4.31: trace once, then compile or interpret
        traced = evaluate.trace(points, coeffs, weights)
        if n_equations(traced.jaxpr.jaxpr) >= INTERPRET_MIN_EQNS:
            return Interpreted(traced), None
        lowered = traced.lower()
    else:
        lowered = evaluate.lower(points, coeffs, weights)
    compiled = lowered.compile()
    try:
        temp = int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - a backend without memory analysis: no bound
        temp = None
    return compiled, temp


def _temp_budget(points: Array) -> int:
    """Bytes of intermediates a stage call may hold on the device of ``points``
    (`EVAL_TEMP_BYTES`, or `EVAL_TEMP_FRACTION` of an accelerator's memory)."""
    device = next(iter(points.devices()))
    if device.platform != "cpu":
        try:
            limit = (device.memory_stats() or {}).get("bytes_limit")
        except Exception:  # noqa: BLE001 - no statistics: the CPU bound
            limit = None
        if limit:
            return int(limit * EVAL_TEMP_FRACTION)
    return EVAL_TEMP_BYTES


@functools.partial(jax.jit, static_argnums=1, compiler_options=FAST_COMPILE_OPTIONS)
def _join(parts: tuple[Array, ...], n_samples: int) -> Array:
    return jnp.concatenate(parts, axis=1)[:, :n_samples]


#: Bytes of intermediates per flat chain (one sample at one point) of each bracket depth of a
#: field's stage programs, as XLA's memory analysis measured them, for the last few fields. A
#: deeper stage's chunk is chosen from them (`_fitting_chunk`), so that its program is not
#: compiled once too large for `_temp_budget` and then again smaller: the depth-5 stage of
#: ``linear 10,5,3,4,3,6,8,7,2,9`` took 31 s to compile at 256 samples (1.7 GB), then 33 s at
#: 128 (measured).
_TEMP_PER_CHAIN: collections.OrderedDict[tuple, dict[int, float]] = collections.OrderedDict()
#: Growth of a chain's intermediates per bracket depth assumed while only one depth ≥ 1 is
#: known (measured: 2.9–3.1× per depth on deep linear nets; each depth nests one more JVP).
TEMP_GROWTH = 4.0
#: A stage's predicted intermediates must fit the budget with this factor to spare.
TEMP_SAFETY = 1.25


def _predicted_temp(known: dict[int, float], depth: int) -> float | None:
    """Bytes per flat chain of ``depth``, from the depths ≥ 1 measured (``known``): the same
    depth as measured, else the deepest shallower one grown by the last measured ratio per
    depth (`TEMP_GROWTH` while only one is known); ``None`` if none is."""
    if depth in known:
        return known[depth]
    shallower = sorted(d for d in known if 1 <= d < depth)
    if not shallower:
        return None
    last = shallower[-1]
    growth = TEMP_GROWTH
    if len(shallower) > 1:
        before = shallower[-2]
        growth = max(1.0, (known[last] / known[before]) ** (1 / (last - before)))
    return known[last] * growth ** (depth - last)


def _fitting_chunk(chunk: int, temp: float, budget: int, n_dev: int) -> int:
    """A smaller chunk (a power of two, a multiple of ``n_dev``) for a program whose ``chunk``
    holds ``temp`` bytes of intermediates, so that it fits ``budget``; intermediates grow in
    proportion to the chunk (measured)."""
    smaller = 1 << max(0, int(chunk * budget / temp).bit_length() - 1)
    return max(n_dev, min(chunk // 2, smaller) // n_dev * n_dev)


def _chunk_size(n_points: int, depth: int, m: int, n_samples: int, max_chunk: int,
                max_chunk_floats: int, n_dev: int) -> int:
    """Samples per compiled call: a power of two bounded by ``max_chunk``, the coefficient floats
    per call and `BATCH_POINTS` × ``max_chunk`` flat chains (their intermediates), then rounded
    up so that the flat batch splits evenly over ``n_dev`` devices."""
    per_call = max(1, max_chunk_floats // (n_points * (depth + 1) * m))
    per_point = max(1, BATCH_POINTS * max_chunk // n_points)
    chunk = min(1 << max(0, (n_samples - 1).bit_length()), max_chunk,
                1 << (per_call.bit_length() - 1), 1 << (per_point.bit_length() - 1))
    return -(-chunk // n_dev) * n_dev


def evaluate_stage(
    field: Family,
    m: int,
    points: Array,
    rng: np.random.Generator,
    first: int,
    depth: int,
    n_samples: int,
    fast_compile: bool,
    max_chunk: int,
    max_chunk_floats: int,
    sharding: NamedSharding | None = None,
    weights: Array | None = None,
) -> tuple[Array, Array]:
    """``n_samples`` random bracket chains of ``depth`` at every point: levels ``first..depth``.

    ``points (P, n)`` and ``weights (P, m)`` are device arrays; ``rng`` draws the coefficients.
    The result stays on the device: ``values (P, S, L, n)``, ``scales (P, S, L)``. The chunk
    (samples per compiled call) is first cut to fit `_temp_budget` by the intermediates that
    the field's shallower programs measured (`_predicted_temp`), then cut again while the
    compiled program's own exceed it; a batch that still does not fit (``RESOURCE_EXHAUSTED``)
    is evaluated again in halves, with the same samples.
    """
    n_points = points.shape[0]
    n_dev = 1 if sharding is None else sharding.mesh.size
    chunk = _chunk_size(n_points, depth, m, n_samples, max_chunk, max_chunk_floats, n_dev)
    dtype = str(points.dtype)
    state = rng.bit_generator.state
    budget = _temp_budget(points)

    def draw() -> Array:
        # one draw serves every point (each point's samples are generic on their own), and
        # draws in chunks of any size are the same stream
        return put(rng.uniform(-COEFF_HALF_WIDTH, COEFF_HALF_WIDTH,
                               (chunk, depth + 1, m)).astype(dtype), sharding)

    known = _recent(_TEMP_PER_CHAIN, (field, m, dtype, fast_compile, sharding,
                                      weights is not None), dict)
    per_chain = _predicted_temp(known, depth)
    if per_chain is not None and chunk > n_dev and (
            predicted := TEMP_SAFETY * per_chain * n_points * chunk) > budget:
        chunk = _fitting_chunk(chunk, predicted, budget, n_dev)  # fits: temp ∝ chunk

    while True:
        evaluate = _stage_evaluator(field, depth, first, chunk, m, dtype, fast_compile, sharding,
                                    weights is not None)
        try:
            coeffs = draw()
            program, temp = _compiled_stage(evaluate, _spec(points), _spec(coeffs),
                                            _spec(weights))
            if temp is not None:
                known[depth] = temp / (n_points * chunk)
            if temp is not None and temp > budget and chunk > n_dev:
                chunk = _fitting_chunk(chunk, temp, budget, n_dev)
                rng.bit_generator.state = state
                continue
            parts = [program(points, coeffs, weights)]
            parts += [program(points, draw(), weights) for _ in range(chunk, n_samples, chunk)]
            finite = all(jax.device_get([f for _, _, f in parts]))
            break
        except Exception as e:
            if "RESOURCE_EXHAUSTED" not in str(e) or chunk <= n_dev:
                raise
            chunk = max(n_dev, chunk // 2 // n_dev * n_dev)
            rng.bit_generator.state = state
    if not finite:
        raise InputError(
            f"the vector fields are not finite at a generic point (bracket depth ≤ {depth}): "
            "check that φ is differentiable there and returns finite values"
        )
    if len(parts) == 1 and chunk == n_samples:
        return parts[0][0], parts[0][1]
    return (_join(tuple(v for v, _, _ in parts), n_samples),
            _join(tuple(s for _, s, _ in parts), n_samples))


# Balancing evaluates every generator at every point: done while that is at most this many floats.
_BALANCE_MAX_FLOATS = 1 << 24
# The generator matrices are kept while they are at most this many floats (1 GiB in float64):
# they cost about one evaluation of the field, and replace the D or so that level 0 needs.
_GENERATOR_MAX_FLOATS = 1 << 27


@functools.lru_cache(maxsize=16)
def _columns_program(field: Family, n: int, m: int, fast_compile: bool, lowered: bool
                     ) -> Callable:
    # ``lowered``: the program the float32 probe runs (`_lowered`): ``points -> (columns, _)``;
    # else ``(points, lowered columns or None) -> (weights, finite)``, weights as `_weights_of`
    # (in the same program: one compilation less per count).
    # The field is linear in a, so its Jacobian in a, (n, m), holds every generator as a column:
    # n reverse passes or m forward ones, whichever is fewer (ReLU path-liftings have m ≫ n).
    jacobian = jax.jacrev if n < m else jax.jacfwd

    def columns(points):
        g = jax.vmap(jacobian(field, argnums=1), in_axes=(0, None))(
            points, jnp.zeros(m, points.dtype))
        return g, jnp.all(jnp.isfinite(g))

    def weights(points, lowered_columns):
        g, finite = columns(points)
        return _inverse_sizes(g, lowered_columns), finite

    return jax.jit(columns if lowered else weights,
                   compiler_options=_compile_options(fast_compile))


#: Generators are recomputed in float32 to see the rounding each carries (`generator_sizes`);
#: its unit roundoff:
_U32 = 2.0**-24
#: ... where their float64 norms lie in this range (far from float32's overflow and underflow).
_PROBE_RANGE = (1e-30, 1e30)
#: A generator's size is its norm unless its float32 error shows a cancellation larger than this:
#: a few operations' rounding (float32 errors of 0.2–1.5 u₃₂ on a small ReLU ResNet) leaves the
#: sizes, and with them the counts that sit near their noise ceiling, as they were.
CANCELLATION_SLACK = 16.0


def generator_sizes(columns: Array, lowered: Array) -> Array:
    """s_j = max(‖χ_j‖, ‖χ̃_j − χ_j‖ / (K u₃₂)) for each generator at each point, shape ``(P, m)``
    (K = `CANCELLATION_SLACK`).

    ``columns (P, n, m)``: the generators computed in float64; ``lowered``: the same computation
    run in float32 (χ̃). A generator computed with relative rounding u carries an error of
    about u · T_j, where T_j is the size of the terms whose cancellation produced it (T_j = ‖χ_j‖
    when nothing cancels). The float32 run shows T_j: its error is u₃₂ · T_j, 2²⁹ times that of
    the float64 one. So s_j is the generator's scale in the sense of the bracket scales
    (`conflow.engine.brackets.bracket_chain`): divided by s_j, every generator carries float64
    rounding of relative size ≲ K u₆₄ — a generator that is small only because large terms
    cancelled (a saturated softmax's output gradient, 1 − s ≈ 1e-5) is not magnified with its
    rounding. Columns whose float32 run is not finite, or whose norm is outside `_PROBE_RANGE`,
    keep s_j = ‖χ_j‖.
    """
    norms = jnp.linalg.norm(columns, axis=1)
    lowered = lowered.astype(columns.dtype)
    error = jnp.linalg.norm(lowered - columns, axis=1)
    probed = (jnp.all(jnp.isfinite(lowered), axis=1) & (norms > _PROBE_RANGE[0])
              & (norms < _PROBE_RANGE[1]))
    return jnp.where(probed, jnp.maximum(norms, error / (CANCELLATION_SLACK * _U32)), norms)


def _inverse_sizes(columns: Array, lowered: Array | None) -> Array:
    """1 / `generator_sizes` ``(P, m)`` (1 for zero sizes); by the norms alone where there are
    no ``lowered`` columns."""
    sizes = generator_sizes(columns, columns if lowered is None else lowered)
    return jnp.where(sizes > 0, 1.0 / jnp.where(sizes > 0, sizes, 1.0), 1.0)


_weights_of = jax.jit(_inverse_sizes)


def _lowered(program: Callable, points: np.ndarray) -> Array | None:
    """``program`` (a jitted ``points -> (columns, finite)``) run in float32 on the host array
    ``points`` (float32 throughout: constants it closes over are converted too; converted on the
    host, which compiles nothing), or ``None`` if that fails."""
    try:
        with warnings.catch_warnings(), float32_mode():
            warnings.simplefilter("ignore")
            return program(np.asarray(points, np.float32))[0]
    except Exception:  # noqa: BLE001 — an optional probe: a model that does not run in float32
        return None


@functools.lru_cache(maxsize=16)
def _matrices_program(generators: Callable, lowered: bool = False) -> Callable:
    # ``lowered``: as in `_columns_program`
    def matrices(points):
        g = jax.vmap(generators)(points).astype(points.dtype)
        return g, jnp.all(jnp.isfinite(g))

    return jax.jit(matrices)


_NOT_FINITE = ("the vector fields are not finite at a generic point: check that φ is "
               "differentiable there and returns finite values")


def generator_matrices(family: VectorFamily, points: Array) -> Array | None:
    """G[p] = (χ_1(z_p), …, χ_m(z_p)), shape ``(P, n, m)``, on the device, for a costly family
    (`costly_field`) that gives its generators as a matrix (`VectorFamily.generators`) while
    P·n·m is at most `_GENERATOR_MAX_FLOATS`; else ``None``. Raises `InputError` if not finite."""
    P, n, m = points.shape[0], family.state_dim, family.n_coeffs
    if family.generators is None or not costly_field(family) or P * m * n > _GENERATOR_MAX_FLOATS:
        return None
    try:
        return _finite(*_matrices_program(family.generators)(points))
    except Exception as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return None


def _finite(matrices: Array, finite: Array) -> Array:
    if not jax.device_get(finite):
        raise InputError(_NOT_FINITE)
    return matrices


def by_point(family: VectorFamily, n_points: int) -> bool:
    """Whether level 0 forms the generator matrices one point at a time
    (`evaluate_generators_by_point`): a costly family that gives them, whose P·n·m exceeds
    `_GENERATOR_MAX_FLOATS` but whose n·m does not."""
    n, m = family.state_dim, family.n_coeffs
    return (family.generators is not None and costly_field(family)
            and n_points * m * n > _GENERATOR_MAX_FLOATS >= m * n)


#: Samples per product of `evaluate_generators_by_point` (its coefficients: this × m floats).
BY_POINT_SAMPLES = 512


def evaluate_generators_by_point(family: VectorFamily, points: Array,
                                 rng: np.random.Generator, n_samples: int,
                                 weights: Array | None = None,
                                 sharding: NamedSharding | None = None) -> tuple[Array, Array]:
    """`evaluate_generators` with each point's matrix G[p] formed in turn, and the products
    taken `BY_POINT_SAMPLES` samples at a time, so that one (n, m) matrix and a block of
    coefficients are held, not P matrices and (S, m) coefficients (`by_point`). Every point
    gets the same coefficients: the first S rows of one stream, as `evaluate_generators`."""
    program = _matrices_program(family.generators)
    m, chunk = family.n_coeffs, min(BY_POINT_SAMPLES, n_samples)
    state = rng.bit_generator.state
    values, scales = [], []
    for p in range(points.shape[0]):
        rng.bit_generator.state = state
        g = _finite(*program(points[p : p + 1]))
        w = None if weights is None else weights[p : p + 1]
        parts = [_combined(g, put(rng.uniform(-COEFF_HALF_WIDTH, COEFF_HALF_WIDTH, (chunk, m))
                                  .astype(g.dtype), sharding), w)
                 for _ in range(0, n_samples, chunk)]
        values.append(_join(tuple(v[:, :, 0] for v, _ in parts), n_samples))
        scales.append(_join(tuple(s for _, s in parts), n_samples))
    return jnp.concatenate(values)[:, :, None], jnp.concatenate(scales)


@jax.jit
def _combined(matrices: Array, coeffs: Array, weights: Array | None) -> tuple[Array, Array]:
    if weights is None:
        values = jnp.einsum("pnm,sm->psn", matrices, coeffs)
    else:  # one point at a time: (S, m) weighted coefficients, never (P, S, m)
        values = jax.lax.map(lambda gw: jnp.einsum("nm,sm->sn", gw[0], coeffs * gw[1]),
                             (matrices, weights))
    return values[:, :, None, :], jnp.linalg.norm(values, axis=-1)[:, :, None]


def evaluate_generators(matrices: Array, rng: np.random.Generator, n_samples: int,
                        weights: Array | None = None, sharding: NamedSharding | None = None
                        ) -> tuple[Array, Array]:
    """``n_samples`` generic elements of W_0 at every point, G[p] (w_p ⊙ a_s), from the
    generator matrices ``(P, n, m)`` (`generator_matrices`), with a_s drawn as
    `evaluate_stage` draws depth-0 coefficients: ``values (P, S, 1, n)``, ``scales (P, S, 1)``
    (their norms), as `evaluate_stage` returns for level 0 — without evaluating the field.
    The coefficients are `put` like the matrices (replicated over ``sharding``'s mesh)."""
    m = matrices.shape[2]
    coeffs = rng.uniform(-COEFF_HALF_WIDTH, COEFF_HALF_WIDTH, (n_samples, m))
    return _combined(matrices, put(coeffs.astype(matrices.dtype), sharding), weights)


def generator_weights(family: VectorFamily, points: np.ndarray, fast_compile: bool,
                      matrices: Array | None = None, sharding: NamedSharding | None = None
                      ) -> Array | None:
    """w[p, j] = 1 / s_j(z_p), shape ``(P, m)``, on the device, with s_j the generator's size
    (`generator_sizes`: its norm, or the size of the terms that cancelled to produce it if
    larger; w = 1 where χ_j(z_p) = 0); ``None`` if too large, or for structured coefficients
    (not rescaled one generator at a time). ``points``: a host array, `put` with ``sharding``
    (the float32 probe gets its own host copy); ``matrices``: the generators at the points
    (`generator_matrices`), if computed.

    Drawing coefficient a_j with scale w_j at point z_p makes every generator contribute at the
    same scale there. The spans of the levels do not change (the coefficients of a bracket are
    constants; only their distribution changes), but without it generators of very different
    sizes (1e10 apart, measured) put the small ones' directions below the cut with a clean gap.
    """
    points = np.asarray(points)
    P, n, m = points.shape[0], family.state_dim, family.n_coeffs
    probe = points.dtype == np.float64  # float32 columns carry their own rounding
    if matrices is not None:
        lowered = _lowered(_matrices_program(family.generators, lowered=True), points) if (
            probe and matrices.dtype == jnp.float64) else None
        return _weights_of(matrices, lowered)
    if by_point(family, P):  # one point's matrices at a time
        return jnp.concatenate([
            generator_weights(family, points[p : p + 1], fast_compile, _finite(
                *_matrices_program(family.generators)(put(points[p : p + 1], sharding))))
            for p in range(P)])
    if P * m * n > _BALANCE_MAX_FLOATS or family.sample_field is not None:
        return None
    lowered = _lowered(_columns_program(family.field, n, m, fast_compile, True),
                       points) if probe else None
    try:
        weights, finite = _columns_program(family.field, n, m, fast_compile, False)(
            put(points, sharding), lowered)
        finite = jax.device_get(finite)
    except Exception as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return None
    if not finite:
        raise InputError(_NOT_FINITE)
    return weights


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What evaluating a family's brackets at some points needs, on the devices.

    Attributes:
        field: the family's sampled field, shared per structure (`shared_field`); n_sample: its
            number of coefficients.
        fast: compile at -O0 (`fast_compile`); sharding: the batch's (`batch_sharding`).
        points: the points ``(P, n)`` in the count's dtype; matrices: the generators at them
            (`generator_matrices`) or ``None``; weights: `generator_weights` or ``None``.
        family: the family; by_point: level 0 forms the matrices one point at a time
            (`by_point`, `evaluate_generators_by_point`).
    """

    field: Family
    n_sample: int
    fast: bool
    sharding: NamedSharding | None
    points: Array
    matrices: Array | None
    weights: Array | None
    family: VectorFamily | None = None
    by_point: bool = False

    def level0(self, rng: np.random.Generator, n_samples: int, points: Array | None = None,
               matrices: Array | None = None, weights: Array | None = None
               ) -> tuple[Array, Array] | None:
        """Level 0 from the generator matrices (all at once, or by point) at ``points`` (default
        all; ``matrices`` and ``weights`` are then theirs), or ``None`` where the family has
        none: the field is evaluated instead."""
        if points is None:
            points, matrices, weights = self.points, self.matrices, self.weights
        if matrices is not None:
            return evaluate_generators(matrices, rng, n_samples, weights, self.sharding)
        if self.by_point:
            return evaluate_generators_by_point(self.family, points, rng, n_samples, weights,
                                                self.sharding)
        return None


def prepare(family: VectorFamily, points: np.ndarray, dtype: str, devices: int | None
            ) -> Prepared:
    """Put ``points (P, n)`` on the devices and evaluate what every stage shares there."""
    fast = fast_compile(family)
    sharding = batch_sharding(devices)
    relieve_map_pressure()
    on_device = put(points.astype(dtype), sharding)
    matrices = generator_matrices(family, on_device)
    weights = generator_weights(family, points, fast, matrices, sharding)
    if weights is not None and dtype != "float64":
        weights = weights.astype(dtype)
    return Prepared(shared_field(family, dtype), family.sampled[1], fast, sharding, on_device,
                    matrices, weights, family,
                    matrices is None and by_point(family, points.shape[0]))
