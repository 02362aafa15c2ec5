"""Models from code: a network given as ``apply_fn(params, x)``, counted through its outputs.

For a loss with V_ℓ = R^n (square loss, KL, cross-entropy; MATH.md §1.2), the gradient flow of a
network g(θ, x) moves in

    W_θ = span{ ∂_θ g_k(θ, x) : x an input, k an output coordinate } ⊆ R^D,

so the *output gradients* are generators. Over a finite sample x_1..x_N of inputs they are exactly
the rows of the Jacobian of

    φ_N(θ) = ( g(θ, x_1), …, g(θ, x_N) ) ∈ R^{nN},

and `from_model` returns that φ_N as an ordinary conflow `Model` (a `SampledModel`), so
`count_laws`, every flow and the exact / numeric engines work unchanged. Parameter names come from
the pytree paths (`conflow.models.custom.path_name`): ``layers[0].weight``, ``l1.kernel``, ...

Accepted models:

- plain JAX: ``apply_fn(params, x)`` with ``params`` a pytree of float arrays;
- Equinox: ``from_model(module, inputs=...)`` (calls ``module(x)``) or ``from_model(fn, module)``
  (calls ``fn(module, x)``). The parameters are ``eqx.filter(module, eqx.is_inexact_array)``; the
  rest of the module is static (``eqx.combine``);
- Flax NNX: the same two forms with an ``nnx.Module``. The parameters are its ``nnx.Param``
  variables (``nnx.split(module, nnx.Param, ...)``, names without the trailing ``.value``); other
  variables (batch statistics, RNG state) are held fixed (``nnx.merge``).

``apply_fn`` acts on ONE input (no batch axis); conflow ``vmap``s it over the sample.

How this relates to the φ-based count of the built-in families (MATH.md §1.3). A built-in model's φ
(path products, UVᵀ, QᵀK, …) satisfies W_θ ⊆ range ∂φ(θ)ᵀ, with equality when the inputs are
"rich enough" (P1 Thm 2.14 / P3 Thm 3.4: e.g. the hidden neurons of a ReLU net define pairwise
distinct hyperplanes). The sampled φ_N instead satisfies W_θ(sample) ⊆ W_θ. Hence

    laws(φ-based) ≤ laws(true model) ≤ laws(sampled φ_N)        (counts, near generic θ),

and the two counts agree when the sample covers the model's behaviour and the distinguished-φ
theorem applies. They differ when

- the sample is too small or misses activation regions: the sampled count is too HIGH (some
  generators are missing). `count_laws_from_model` reruns with twice the inputs and warns if the
  count moves, and reports the branch patterns the sample covers;
- the theorem behind φ does not apply: e.g. a bias-free ReLU net with ONE input coordinate has
  all neuron hyperplanes equal to {0}; every input falls in one of two regions, g is
  x·(Σ_{v_j>0} u_j v_j) or x·(Σ_{v_j<0} u_j v_j), and the network really has D − 2 laws, more than
  the one per neuron of the path-lifting count. Here the sampled count is right and stable under
  doubling; the φ-based count is a lower bound;
- hidden units are (almost) never active on the inputs that reach them: deeper ReLU layers see
  only the non-negative outputs of the layer before, so at a generic θ a unit can be dead, or
  active on a sliver of input space. Measured: for ReLU nets [3,4,4,2], at about half of the
  Gaussian θ the output gradients of 720 generic inputs span fewer than D − #hidden directions.
  Where a unit is truly dead the network has more laws there than the path-lifting count; where
  it is merely rare, the sample misses it. Either way the generic points then usually disagree:
  the count is reported ``ambiguous``, with a warning about switches that never change. Such
  points are flagged by `SampledModel.degenerate_reason` (a recorded switch constant over the
  sample or changing on fewer than 1/64 of it, or a parameter whose generator vanishes on it)
  and repaired block by block by `conflow.laws.points.generic_points`.

Smooth activations (tanh, GELU, softplus, SiLU) go through exactly the same path; conflow does not
assume their counts.

Branch patterns ("activation patterns covered"). With no ``patterns_fn``, conflow replays the
network's jaxpr and records, per input, the outcome of every data-dependent switch it can see:
``max``/``min`` (which operand wins; ReLU is ``max(x, 0)``), ``abs``/``sign`` (sign of the
argument), ``select_n`` (``jnp.where``), ``clamp``, ``cond`` (branch index). Library functions with
a custom derivative other than ReLU/ReLU6 (``logaddexp`` inside softplus, …) are treated as smooth
and not looked into; ``scan``/``while`` bodies are not looked into either (both are listed in the
report). Switches that are pure numerical guards (``max(-inf, ·)``) are skipped; switches that
take one outcome on every input at every θ tried (``max(0, variance)`` in a layer norm, a unit dead
by construction) are reported as fixed (`SampledModel.fixed_switches`). A ``patterns_fn(
params, x) -> array`` replaces this with your own notion of pattern.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jax.flatten_util import ravel_pytree

from conflow.engine import jaxpr as jaxpr_walk
from conflow.errors import InputError
from conflow.models.base import Model
from conflow.models.custom import _ravel_output, brief_error, custom
from conflow.precision import float64

Array = jax.Array

#: Custom-derivative functions whose inside is recorded (they are piecewise-linear).
PIECEWISE_CUSTOM = ("relu", "relu6")
_OPAQUE_LOOPS = ("scan", "while")


#: `SampledModel.generator_rank` runs up to this many Jacobian entries (nN × D).
GENERATOR_RANK_MAX = 1 << 22
#: `SampledModel.spanning_sample` evaluates φ_N at up to this many entries (points × nN) ...
SPANNING_MAX_ENTRIES = 1 << 21
#: ... in chunks of this many points ...
SPANNING_CHUNK = 64
#: ... and drops outputs only when the normalised singular values of those evaluations fall
#: into two groups: zero to rounding (below SPANNING_ZERO × the largest) and clear directions
#: (above SPANNING_KEEP × the largest). Anything in between keeps the whole sample.
SPANNING_ZERO = 1e-11
SPANNING_KEEP = 1e-6


class InputsWarning(UserWarning):
    """The count of a sampled model changed when the input sample was doubled."""


# ------------------------------------------------------------------------------------------------
# parameters: plain pytrees, Equinox modules, Flax NNX modules
# ------------------------------------------------------------------------------------------------


def _is_equinox(obj: Any) -> bool:
    eqx = sys.modules.get("equinox")
    return eqx is not None and isinstance(obj, eqx.Module)


def _is_nnx(obj: Any) -> bool:
    nnx_mod = sys.modules.get("flax.nnx")
    return nnx_mod is not None and isinstance(obj, nnx_mod.Module)


def _call_module(module: Any, x: Any) -> Any:
    return module(x)


def split_params(params: Any) -> tuple[Any, Callable[[Any], Any], str]:
    """``params`` ↦ (θ-pytree of float arrays, rebuild: θ-pytree → what apply_fn takes, kind).

    kind is ``"pytree"``, ``"equinox"`` or ``"nnx"`` (see the module docstring).
    """
    if _is_equinox(params):
        import equinox as eqx

        arrays, static = eqx.partition(params, eqx.is_inexact_array)
        return arrays, (lambda p: eqx.combine(p, static)), "equinox"
    if _is_nnx(params):
        from flax import nnx

        graphdef, state, rest = nnx.split(params, nnx.Param, ...)
        to_pure = getattr(nnx, "to_pure_dict", None)
        pure = to_pure(state) if to_pure is not None else state.to_pure_dict()
        state_def = jax.tree_util.tree_structure(state)
        want = [np.shape(x) for x in jax.tree_util.tree_leaves(state)]
        if [np.shape(x) for x in jax.tree_util.tree_leaves(pure)] != want:
            raise RuntimeError("conflow bug: nnx pure-dict leaves differ from the state's")

        def rebuild(p):
            st = jax.tree_util.tree_unflatten(state_def, jax.tree_util.tree_leaves(p))
            return nnx.merge(graphdef, st, rest)

        return pure, rebuild, "nnx"
    return params, (lambda p: p), "pytree"


# ------------------------------------------------------------------------------------------------
# branch patterns: replay a jaxpr and record the outcome of each data-dependent switch
# ------------------------------------------------------------------------------------------------


def _is_guard_literal(v: Any) -> bool:
    from jax.extend.core import Literal

    return isinstance(v, Literal) and not bool(np.all(np.isfinite(np.asarray(v.val))))


def _interpret(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], deps: Sequence[bool],
               records: list, notes: set, smooth: bool,
               frozen: _FrozenSwitches | None = None) -> tuple[list, list]:
    """Evaluate ``jaxpr`` like `jax.core.eval_jaxpr` (`conflow.engine.jaxpr.walk`), appending
    switch outcomes to ``records``.

    ``deps`` marks the arguments that depend on the data (θ or x); only switches on such values
    are recorded (index arithmetic on constants is not a switch). Inside a custom-derivative
    function other than `PIECEWISE_CUSTOM` nothing is recorded (``smooth``). With ``frozen``,
    every recorded switch takes its outcome from ``frozen`` instead of its operands
    (`frozen_apply`), and smooth custom-derivative functions are called whole. Returns
    (outputs, their deps).
    """

    def apply(eqn: Any, invals: list) -> list:
        name = eqn.primitive.name
        values, indeps = [v for v, _ in invals], [d for _, d in invals]
        outs = jaxpr_walk.bind(eqn, values)
        if name in _OPAQUE_LOOPS:
            notes.add(f"{name} body not inspected")
        elif name == "cond":
            notes.add("cond branch index recorded, branch bodies not inspected")
        if not smooth:
            outcome = _switch_outcome(name, eqn, values, indeps, outs)
            if outcome is not None:
                records.append(outcome)
                if frozen is not None:
                    outs = [_frozen_output(name, values, frozen.take(outcome))]
        return [(o, any(indeps)) for o in outs]

    def enter(eqn: Any, sub: Any, sub_consts: list, invals: list) -> list | None:
        inner_smooth = smooth
        if eqn.primitive.name in jaxpr_walk.CUSTOM_DERIVATIVE_PRIMITIVES:
            fname = jaxpr_walk.function_name(eqn)
            if fname not in PIECEWISE_CUSTOM:
                inner_smooth = True
                notes.add(f"custom-derivative function {fname or '?'} taken as smooth")
                if frozen is not None:  # no switch inside: keep its own derivative rule
                    outs = jaxpr_walk.bind(eqn, [v for v, _ in invals])
                    return [(o, any(d for _, d in invals)) for o in outs]
        outs, outdeps = _interpret(sub, sub_consts, [v for v, _ in invals],
                                   [d for _, d in invals], records, notes, inner_smooth, frozen)
        return list(zip(outs, outdeps))

    pairs = jaxpr_walk.walk(jaxpr, [(c, False) for c in consts], list(zip(args, deps)), apply,
                            literal=lambda value: (value, False), enter=enter)
    return [v for v, _ in pairs], [d for _, d in pairs]


def _switch_outcome(name: str, eqn: Any, invals: list, deps: list, outs: list) -> Array | None:
    """The recorded outcome of a data-dependent switch (shape of its output), or None when the
    equation is not one: max/min (which operand wins), abs/sign (sign of the argument),
    select_n (the case index), clamp (−1 above, 1 below, 0 inside), cond (branch index)."""
    shape = jnp.shape(outs[0]) if outs else ()
    if name in ("max", "min"):
        if not any(deps) or any(_is_guard_literal(v) for v in eqn.invars):
            return None
        a, b = invals
        return jnp.broadcast_to(jnp.greater(a, b), shape)
    if name in ("abs", "sign") and deps[0]:
        return jnp.broadcast_to(jnp.greater(invals[0], 0), shape)
    if name == "select_n" and deps[0]:
        return jnp.broadcast_to(jnp.asarray(invals[0]).astype(jnp.int32), shape)
    if name == "clamp" and deps[1]:
        lo, x, hi = invals
        return jnp.broadcast_to(
            jnp.less(x, lo).astype(jnp.int32) - jnp.greater(x, hi).astype(jnp.int32), shape)
    if name == "cond" and deps[0]:
        return jnp.asarray(invals[0]).astype(jnp.int32).reshape(())
    return None


def _frozen_output(name: str, invals: list, outcome: Array) -> Array:
    """A switch's output with its outcome given (`_switch_outcome`'s encoding): the branch that
    outcome selects, as a function of the operands (differentiable along that branch)."""
    if name == "max":
        return jnp.where(outcome != 0, invals[0], invals[1])
    if name == "min":
        return jnp.where(outcome != 0, invals[1], invals[0])
    if name == "abs":
        return jnp.where(outcome != 0, invals[0], -invals[0])
    if name == "sign":
        return jnp.where(outcome != 0, 1.0, -1.0).astype(jnp.result_type(invals[0]))
    if name == "select_n":
        return jax.lax.select_n(outcome.astype(jnp.int32), *invals[1:])
    if name == "clamp":
        lo, x, hi = invals
        return jnp.where(outcome == 1, lo, jnp.where(outcome == -1, hi, x))
    raise InputError(f"a {name} switch cannot be frozen (its branches are not looked into)")


class _FrozenSwitches:
    """The switch outcomes of `frozen_apply`, handed out in the recorder's order."""

    def __init__(self, pattern: Array) -> None:
        self.pattern, self.offset = pattern, 0

    def take(self, like: Array) -> Array:
        n = int(np.prod(jnp.shape(like), dtype=int))
        part = self.pattern[self.offset:self.offset + n]
        self.offset += n
        return part.reshape(jnp.shape(like))


def _walk(closed: Any, p: Any, x: Any, notes: set, frozen: _FrozenSwitches | None = None
          ) -> tuple[list, list]:
    """(outputs, switch outcomes) of a network's closed jaxpr at (p, x) (`_interpret`), the
    switches set by ``frozen`` if given."""
    records: list = []
    leaves = jax.tree_util.tree_leaves((p, x))
    outs = _interpret(closed.jaxpr, closed.consts, leaves, [True] * len(leaves), records, notes,
                      False, frozen)[0]
    return outs, records


def branch_recorder(fn: Callable[[Any, Any], Any], params: Any, x_example: Any
                    ) -> tuple[Callable[[Any, Any], Array], tuple[str, ...]]:
    """``(p, x) -> int32 vector`` of the switch outcomes of ``fn(p, x)`` (see module docstring),
    and notes on what was not inspected. Traced once at (``params``, ``x_example``)."""
    closed = jax.make_jaxpr(fn)(params, x_example)
    notes: set = set()
    # abstract pass: collects the notes, computes nothing
    jax.eval_shape(lambda p, x: _walk(closed, p, x, notes)[0], params, x_example)

    def record(p, x):
        records = _walk(closed, p, x, set())[1]
        if not records:
            return jnp.zeros(0, jnp.int32)
        return jnp.concatenate([jnp.ravel(r).astype(jnp.int32) for r in records])

    return record, tuple(sorted(notes))


def frozen_apply(fn: Callable[[Any, Any], Any], params: Any, x_example: Any
                 ) -> Callable[[Any, Any, Array], Any]:
    """``(p, x, pattern) -> fn(p, x)`` with every recorded switch set to ``pattern`` (a vector
    of `branch_recorder`'s outcomes, e.g. another input's) instead of deciding on its operands.

    On the open set of (θ, x) whose pattern is ``pattern`` the two agree; elsewhere this is the
    same branches continued: for a ReLU / leaky-ReLU / abs network, a polynomial in θ and a
    function of x without switches (affine when the layers are). Raises `InputError` for a
    switch whose branches are not looked into (``cond``). Traced once at (``params``,
    ``x_example``)."""
    closed = jax.make_jaxpr(fn)(params, x_example)
    out_tree = jax.tree_util.tree_structure(jax.eval_shape(fn, params, x_example))

    def frozen(p, x, pattern):
        outs = _walk(closed, p, x, set(), _FrozenSwitches(jnp.asarray(pattern)))[0]
        return jax.tree_util.tree_unflatten(out_tree, outs)

    return frozen


# ------------------------------------------------------------------------------------------------
# the sampled model
# ------------------------------------------------------------------------------------------------


#: Seed of the fixed random cotangent of `SampledModel.idle_parameters`.
IDLE_PROBE_SEED = 0x1D1E
#: Draws of θ at which a switch must hold one outcome on every input to count as fixed by
#: construction (`SampledModel.fixed_switches`): an activation switch passes with probability
#: ≤ 2^(1−K), ~5e-10; each draw costs one pattern replay over the sample (milliseconds).
FIXED_SWITCH_DRAWS = 32
#: ... and the seed of those draws.
FIXED_SWITCH_SEED = 0xF1ED
#: Seed of the random point at which `SampledModel.cell_model` checks affinity.
CELL_CHECK_SEED = 0xCE11
#: ... and the relative error it accepts (rounding of a few layers is ~1e-15).
CELL_AFFINE_RTOL = 1e-9
#: ... and the cells' basis inputs it evaluates: at most max(N, this).
CELL_MIN_BASIS_INPUTS = 1024
#: Radii of the drawn inputs are log-uniform in [1/R, R] (module docstring of `draw_inputs`).
INPUT_RADIUS_RANGE = 8.0


def _check_radius(radius: object) -> None:
    """`InputError` unless ``radius`` is a real number ≥ 1 (an input radius range)."""
    if (isinstance(radius, bool) or not isinstance(radius, (int, float, np.number))
            or not radius >= 1):
        raise InputError(f"from_model: input_radius must be a number >= 1, got {radius!r}")


def draw_inputs(rng: np.random.Generator, n: int, shape: Sequence[int],
                radius: float = INPUT_RADIUS_RANGE) -> np.ndarray:
    """``n`` generic inputs of ``shape``: a standard Gaussian vector times an independent radius,
    log-uniform in [1/R, R], R = ``radius`` (default `INPUT_RADIUS_RANGE` = 8; 1: plain Gaussian).

    Mixed scales cross more activation boundaries than a plain Gaussian: a ReLU unit with a bias
    has its kink at distance |b|/‖w‖ from the origin, often 2–3 for Gaussian weights, where few
    standard Gaussian inputs reach; small radii keep smooth nets out of saturation. (Measured on
    2-layer ReLU nets with biases, e.g. [3,4,2]: the output gradients of 96 such inputs miss
    directions at 0–1% of generic θ, against 19% for 24 standard Gaussian inputs.) Saturating
    models (softmax layers) prefer ``radius=1``: at radius 8 their output gradients are ~e^{-16}.
    """
    _check_radius(radius)
    shape = tuple(shape)
    g = rng.standard_normal((n, *shape))
    r = np.exp(rng.uniform(-np.log(radius), np.log(radius), n))
    return g * r.reshape((n,) + (1,) * len(shape))


@dataclasses.dataclass(frozen=True, eq=False)
class SampledModel(Model):
    """A `Model` whose φ is the network's output on a fixed input sample (see module docstring).

    Extra attributes (the `Model` ones are as usual; ``dims`` is ``(D,)`` unless a built-in family
    sets its own):
        apply_fn: the per-input function of the θ-pytree, ``(tree, x) -> output``.
        params: the θ-pytree (float64), whose paths name the blocks.
        inputs: the sample, shape ``(N, *input_shape)``.
        n_outputs: output size per input (n).
        kind: ``"pytree"``, ``"equinox"``, ``"nnx"`` or a built-in family's name.
        patterns_fn: ``(tree, x) -> array`` given by the user, or ``None`` (jaxpr recorder).
        seed: the seed the inputs were drawn with (if drawn).
        input_source: ``"gaussian"`` (drawn by `draw_inputs`) or ``"given"``.
        input_radius: the radius range R the inputs were (or would be) drawn with.
    """

    apply_fn: Callable[[Any, Any], Any] | None = None
    params: Any = None
    inputs: np.ndarray | None = dataclasses.field(default=None, repr=False)
    n_outputs: int = 0
    kind: str = "pytree"
    patterns_fn: Callable[[Any, Any], Any] | None = None
    seed: int = 0
    input_source: str = "given"
    input_radius: float = INPUT_RADIUS_RANGE

    @property
    def n_inputs(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.inputs.shape[1:])

    @property
    def label(self) -> str:
        return super().label + f" on {self.n_inputs} inputs"

    def as_family(self, name: str, dims: Sequence[int], drawn: bool = True) -> SampledModel:
        """This model relabelled as a built-in family (``name[dims]``, closed forms for
        comparison); ``drawn``: its inputs came from `draw_inputs` (the doubled-sample check
        then draws more the same way)."""
        return dataclasses.replace(
            self, name=name, dims=tuple(int(d) for d in dims), kind=name,
            input_source="gaussian" if drawn else self.input_source,
        )

    def unravel(self, theta: Array) -> Any:
        """Flat θ, shape ``(D,)`` → the θ-pytree."""
        return ravel_pytree(self.params)[1](theta)

    def apply(self, theta: Array, x: Any) -> Any:
        """The network's output at flat θ on one input ``x``."""
        return self.apply_fn(self.unravel(theta), x)

    @float64
    def with_inputs(self, inputs: Any) -> SampledModel:
        """The same model on another input sample (names, closed forms and dims kept)."""
        inputs = as_inputs(inputs, self.input_shape)
        unravel = ravel_pytree(self.params)[1]
        return dataclasses.replace(
            self, phi=_sampled_phi(self.apply_fn, unravel, inputs), inputs=inputs,
            phi_jacobian=batched_jacobian(self.apply_fn, unravel, (inputs,), self.n_outputs))

    def patterns(self, theta: Array) -> np.ndarray:
        """Branch patterns at flat θ, shape ``(N, S)``: one row per input (module docstring)."""
        return np.asarray(self._pattern_eval()[0](self._unravel_compiled()(np.asarray(theta)),
                                                  jnp.asarray(self.inputs)))

    def missed_cells(self, thetas: np.ndarray, probe: np.ndarray) -> np.ndarray:
        """Indices of the ``probe`` inputs (shape ``(K,) + input_shape``, K a multiple of N: a
        remainder is not looked at) whose branch pattern at some flat θ of ``thetas`` no input
        of the sample has there: inputs in activation cells that the sample misses (thin cones
        between nearly parallel kinks), sorted."""
        evaluate = self._pattern_eval()[0]
        n = self.n_inputs  # the probe goes in sample-sized chunks: one compiled program for all
        chunks = [probe[i:i + n] for i in range(0, len(probe) - n + 1, n)]
        missed = np.zeros(len(chunks) * n, dtype=bool)
        for theta in thetas:
            have = self.patterns(theta)
            if have.shape[1] == 0:
                break
            seen = {row.tobytes() for row in have}
            params = self._unravel_compiled()(np.asarray(theta))
            at = np.concatenate([np.asarray(evaluate(params, jnp.asarray(c))) for c in chunks])
            missed |= np.array([row.tobytes() not in seen for row in at])
        return np.flatnonzero(missed)

    def pattern_notes(self) -> tuple[str, ...]:
        return self._pattern_eval()[1]

    def constant_switches(self, theta: Array) -> np.ndarray:
        """Which recorded switches never change over the N inputs at flat θ: bool, shape ``(S,)``
        (`constant_columns` of `patterns`; S = 0 for a model without switches)."""
        return constant_columns(self.patterns(theta))

    def fixed_switches(self) -> np.ndarray:
        """Which recorded switches take one and the same outcome on all N inputs at each of
        `FIXED_SWITCH_DRAWS` independent draws of θ (`sample_points`): bool, shape ``(S,)``.

        These are switches fixed by construction: guards (``max(0, variance)`` in a layer norm,
        a clip the sample never reaches) and units dead whatever θ. An activation switch is
        almost never one. A ReLU-like unit's pre-activation is odd in its own incoming weights
        and bias, and their law is symmetric (`draw_block`: Gaussian biases; Haar-plus-Gaussian
        matrices, invariant under negating a row, a column or a set of columns), so a draw and
        its mirror (those weights negated) are equally likely and swap "on at every input" with
        "off at every input": each has probability ≤ 1/2 per draw, and the same one at all K
        draws ≤ 2^(1−K). Fixed switches are left out of `rare_switches` (the points' degeneracy):
        redrawing θ cannot change them, and the count where they hold is the network's own.
        """
        cache = self.__dict__.setdefault("_patterns_cache", {})
        if "fixed" not in cache:
            fixed = None
            for theta in np.asarray(self.sample_points(FIXED_SWITCH_SEED, FIXED_SWITCH_DRAWS)):
                pat = self.patterns(theta)
                pat = pat.reshape(pat.shape[0], -1)
                if fixed is None:
                    fixed, outcome = constant_columns(pat), pat[0]
                else:
                    fixed &= constant_columns(pat) & (pat[0] == outcome)
                if not fixed.any():
                    break
            cache["fixed"] = fixed
        return cache["fixed"]

    def idle_parameters(self, theta: Array) -> np.ndarray:
        """Which parameters have a zero generator on the whole sample at flat θ: bool, ``(D,)``.

        Column p of ∂φ_N(θ) is zero iff (∂φ_Nᵀ c)_p = Σ_i c_i ∂_p φ_i is, for almost every c; one
        VJP with a fixed Gaussian c tests all p. ReLU zeros are exact (a unit off on every input
        where its weight's input is on), so only exact zeros count: a saturated but smooth unit
        (gradient ~1e-16) is not idle. An idle θ_p is conserved near θ: a law of this region
        that the generic one does not have.
        """
        return np.asarray(self._idle_eval()(jnp.asarray(theta))) == 0.0

    def rare_switches(self, theta: Array) -> np.ndarray:
        """Which recorded switches take their rarer outcomes on fewer than `min_switch_inputs`
        of the N inputs at flat θ (constant ones included, `fixed_switches` not): bool, shape
        ``(S,)`` (`rare_columns` of `patterns`)."""
        rare = rare_columns(self.patterns(theta), min_switch_inputs(self.n_inputs))
        return rare & ~self.fixed_switches()

    def severity(self, theta: Array) -> int:
        """The severity of `degeneracy` at flat θ, without its reason (the redraws' score)."""
        return int(self.rare_switches(theta).sum() + self.idle_parameters(theta).sum())

    def degeneracy(self, theta: Array) -> tuple[int, str | None]:
        """(severity, reason): the number of rare switches plus idle parameters at flat θ
        (`rare_switches`, `idle_parameters`), and a one-line reason (``None`` if 0)."""
        pat = self.patterns(theta)
        fixed = self.fixed_switches()
        rare = rare_columns(pat, min_switch_inputs(self.n_inputs)) & ~fixed
        idle = self.idle_parameters(theta)
        k, q = int(rare.sum()), int(idle.sum())
        parts = []
        if k:
            const = int((constant_columns(pat) & ~fixed).sum())
            what = (f"never change{'s' if k == 1 else ''}" if const == k else
                    f"change{'s' if k == 1 else ''} on fewer than "
                    f"{min_switch_inputs(self.n_inputs)}" + (f" ({const} never)" if const else ""))
            parts.append(f"{k} of {rare.size} recorded switch{'es' if rare.size != 1 else ''} "
                         f"{what} over the {self.n_inputs} inputs "
                         "(a unit always off or on there, or nearly?)")
        if q:
            names = [n for n, i in zip(self.param_names, idle) if i]
            shown = ", ".join(names[:4]) + (", …" if q > 4 else "")
            verb = "moves" if q == 1 else "move"
            parts.append(f"{q} parameter{'s' if q != 1 else ''} ({shown}) {verb} no output on "
                         f"the {self.n_inputs} inputs")
        return k + q, ("; ".join(parts) or None)

    def generator_rank(self, theta: Array) -> int | None:
        """dim W_0(θ): the rank of the output gradients ∂φ_N(θ), shape (nN, D), at flat θ
        (singular values above 1e-10 × the largest), or ``None`` above `GENERATOR_RANK_MAX`
        entries (`conflow.laws.points` then skips its rank pass)."""
        d = self.n_inputs * self.n_outputs
        if d * self.D > GENERATOR_RANK_MAX:
            return None
        cache = self.__dict__.setdefault("_patterns_cache", {})
        if "jacobian" not in cache:
            cache["jacobian"] = jax.jit(self.phi_jacobian)
        s = np.linalg.svd(np.asarray(cache["jacobian"](jnp.asarray(theta))), compute_uv=False)
        return int(np.sum(s > 1e-10 * s[0])) if s.size and s[0] > 0 else 0

    def spanning_sample(self, seed: int = 0) -> tuple[SampledModel, str]:
        """This model on the fewest inputs whose outputs span all of φ_N's output functions,
        and a one-line note; ``(self, "")`` when no input can be dropped (or none is tried).

        Every flow sees φ only through the pullbacks ∂φ(θ)ᵀc, c ∈ R^{nN} (its generator
        family). If the output functions satisfy φ_N = C φ_B identically in θ, for a subset B of
        the outputs (C then has full column rank), then ∂φ_Nᵀc = ∂φ_Bᵀ(Cᵀc) and Cᵀc ranges over
        all of R^{|B|}: the fields, their brackets and the count are those of φ_B, at every
        point. An affine network's outputs, for instance, are affine in x: on any sample they
        span at most n(d + 1) functions of θ, and a count on 680 inputs runs every bracket on
        680 copies of the network where d + 1 suffice.

        The relations are found from φ_N at K random points (`sample_points`), K = nN + 1 or
        fewer (`SPANNING_MAX_ENTRIES`): for functions analytic in θ, K points drawn with a
        density have evaluations of rank min(K, r) almost surely, r = dim span of the
        functions, so a rank r < K is r itself and the evaluations' column relations are the
        functions' relations. B is chosen by QR with column pivoting (rows and columns
        normalised), and every dropped column must lie in B's span to rounding. Tried only
        where φ_N is analytic as far as the branch recorder can tell: no `patterns_fn`, no
        recorded switch (ReLU, max, abs, where, …) and nothing the recorder could not look into
        (custom derivatives, loops). A piecewise network's relations may hold on some regions
        only (inputs sharing an activation pattern), so it keeps its sample. An affine
        network is counted on basis inputs 0, e_1, …, e_d instead of a subset of its sample,
        where they span the same functions (`_basis_inputs`): the better conditioned choice.
        """
        found = self.spanned_functions(seed)
        if found is None:
            return self, ""
        inputs, r, k, on_basis = found
        note = (f"the outputs on {self.n_inputs} inputs span {r} functions of θ "
                f"(φ at {k} random points, relations to rounding): counted on "
                + (f"{len(inputs)} of the basis inputs 0, e_1, …, e_d (outputs affine in x to "
                   f"{on_basis:.0e})" if on_basis is not None else f"{len(inputs)} of the inputs"))
        return self.with_inputs(inputs), note

    def spanned_functions(self, seed: int = 0
                          ) -> tuple[np.ndarray, int, int, float | None] | None:
        """For `spanning_sample`: (the inputs to count on, the number r of functions their
        outputs span, the number K of points φ was evaluated at, the affine error where they
        are basis inputs (`_basis_inputs`) else ``None``), or ``None`` where nothing is dropped
        or the reduction is not tried. Computed once per model and seed."""
        cache = self.__dict__.setdefault("_patterns_cache", {})
        if ("spanned", seed) not in cache:
            cache[("spanned", seed)] = self._spanned_functions(seed)
        return cache[("spanned", seed)]

    def _spanned_functions(self, seed: int) -> tuple[np.ndarray, int, int] | None:
        m = self.n_inputs * self.n_outputs
        k = min(m + 1, SPANNING_MAX_ENTRIES // max(m, 1))
        if self.n_inputs < 2 or k < 2 or self.patterns_fn is not None:
            return None
        rng = np.random.default_rng([seed, 0x5BA5])
        if self.patterns(self.sample_points(rng, 1)[0]).shape[-1] or self.pattern_notes():
            return None
        thetas = np.asarray(self.sample_points(rng, k))
        values = self._values_at(thetas)
        if not np.all(np.isfinite(values)):
            return None
        keep = _spanning_columns(values)
        if keep is None:
            return None
        inputs = np.unique(keep // self.n_outputs)
        basis = self._basis_inputs(thetas, values, keep.size, inputs.size)
        if basis is not None:
            return basis[0], int(keep.size), k, basis[1]
        if inputs.size == self.n_inputs:
            return None
        return self.inputs[inputs], int(keep.size), k, None

    def _basis_inputs(self, thetas: np.ndarray, values: np.ndarray, r: int, n_kept: int
                      ) -> tuple[np.ndarray, float] | None:
        """The inputs among 0, e_1, …, e_d whose outputs span the same r functions of θ as the
        sample's, and the affine error; ``None`` where they do not, where the sample's inputs
        are not floats, or where more of them would be needed than the ``n_kept`` sample
        inputs (not tried where d + 1 is more than twice that).

        Where F(θ, x) = F(θ, 0) + Σ_j x_j (F(θ, e_j) − F(θ, 0)) for every θ (an affine network;
        checked at the K random points ``thetas`` of the sample's ``values``, to
        `CELL_AFFINE_RTOL`), every output of the sample lies in the span of the basis inputs'
        outputs, so the two spans are equal when their dimensions are. Both then have the
        same fields and count; the basis inputs' are the better conditioned: the count of a
        bias-free linear net on e_1, …, e_d is that of the built-in `linear` model, where a
        Gaussian sample's subset multiplies the generators by a random d × d matrix
        (condition number 10–100), enough to push depth-8 brackets of a [5, 14, 15, 1] net
        into the band between rounding and signal."""
        d = math.prod(self.input_shape)
        if self.inputs.dtype.kind != "f" or d + 1 > max(n_kept, 2) * 2:
            return None
        basis = np.concatenate([np.zeros((1, d)), np.eye(d)]).reshape((d + 1,) + self.input_shape)
        on_basis = self.with_inputs(basis)
        x = self.inputs.reshape(self.n_inputs, d)

        def affine_error(at_basis: np.ndarray, at_sample: np.ndarray) -> float:
            # (K, (d + 1) n) and (K, N n): every θ's basis outputs serve every input
            k = len(at_basis)
            return _relative_error(at_basis.reshape(k, 1, d + 1, -1), x,
                                   at_sample.reshape(k, self.n_inputs, -1))

        # one point first, without compiling: most models that are not affine stop here
        if not affine_error(np.asarray(on_basis.phi(jnp.asarray(thetas[0])))[None],
                            values[:1]) <= CELL_AFFINE_RTOL:
            return None
        at_basis = on_basis._values_at(thetas)
        error = affine_error(at_basis, values)
        keep = _spanning_columns(at_basis, all_independent=True)
        if not error <= CELL_AFFINE_RTOL or keep is None or keep.size != r:
            return None
        kept = np.unique(keep // self.n_outputs)
        return (basis[kept], error) if kept.size <= n_kept else None

    def cell_model(self, theta: Array) -> tuple[Model | None, str]:
        """The model of the activation cells the sample reaches at flat θ, and a one-line note;
        ``(None, why not)`` where it does not apply.

        At θ the inputs split into cells of equal branch pattern (`patterns`). With every switch
        frozen to a cell's pattern (`frozen_apply`), a ReLU / leaky-ReLU / abs network is
        affine in x, F_c(θ, x) = F_c(θ, 0) + Σ_j x_j (F_c(θ, e_j) − F_c(θ, 0)), and near θ
        (the patterns do not change on an open set) each sampled output is F_c(θ, x_i) for its
        input's cell c. So the outputs of the d + 1 inputs 0, e_1, …, e_d of every cell span
        every output of the sample, and more where a cell holds fewer than d + 1 affinely
        independent inputs. The returned model's φ is those outputs, shape
        (cells · (d + 1) · n,) less the basis inputs whose n outputs are exactly zero at θ and
        at a random point (a bias-free network's origin): a polynomial in θ whose count at generic
        points is the sample's count on θ's activation region. Its generators are well
        conditioned where the sample's are not: an input near a cell's boundary moves the units
        of that boundary by nearly nothing, where e_j evaluates the same branch at unit scale.

        Applies to networks whose recorded switches can all be frozen (no ``cond``, no loop
        body or user ``patterns_fn`` hiding some), that are affine in x with the switches
        frozen (checked at θ and at a random point, on every input of the sample, to
        `CELL_AFFINE_RTOL`), and whose cells need at most as many inputs as the sample (or
        `CELL_MIN_BASIS_INPUTS`).
        """
        if self.patterns_fn is not None:
            return None, "the patterns come from patterns_fn"
        hidden = [n for n in self.pattern_notes() if "custom-derivative" not in n]
        if hidden:
            return None, f"switches not looked into ({'; '.join(hidden)})"
        theta = np.asarray(theta, dtype=np.float64)
        pat = self.patterns(theta)
        if pat.shape[1] == 0:
            return None, "no recorded switch"
        cells, cell_of = np.unique(pat, axis=0, return_inverse=True)
        cell_of = cell_of.ravel()
        d = math.prod(self.input_shape)
        limit = max(self.n_inputs, CELL_MIN_BASIS_INPUTS)
        if len(cells) * (d + 1) > limit:
            return None, (f"{len(cells)} cells × {d + 1} basis inputs is more than "
                          f"max(N, {CELL_MIN_BASIS_INPUTS}) = {limit} inputs")
        basis = np.concatenate([np.zeros((1, d)), np.eye(d)]).reshape((d + 1,) + self.input_shape)
        grid_x = jnp.asarray(np.concatenate([basis] * len(cells)))  # cell-major
        grid_p = jnp.asarray(np.repeat(cells, d + 1, axis=0))
        frozen = frozen_apply(self.apply_fn, self.params, jnp.asarray(self.inputs[0]))
        unravel = ravel_pytree(self.params)[1]

        def one(p, x, q):  # F at parameters p on one input x with pattern q, raveled
            return _ravel_output(frozen(p, x, q))

        def outputs(t, xs, pats):  # (len(xs), n): F at θ = t on inputs xs with patterns pats
            p = unravel(t)
            return jax.vmap(lambda x, q: one(p, x, q))(xs, pats)

        try:
            outputs = jax.jit(outputs)
            xs, pats = jnp.asarray(self.inputs), jnp.asarray(pat)
            check = (outputs, xs, pats, grid_x, grid_p, cell_of)
            error, at_theta = _affine_error(*check, theta, exact=self._values_at(theta[None])[0])
            other = np.asarray(self.sample_points(np.random.default_rng(CELL_CHECK_SEED), 1))[0]
            error_other, at_other = _affine_error(*check, other)
            error = max(error, error_other)
        except InputError as e:
            return None, str(e)
        if not error <= CELL_AFFINE_RTOL:
            return None, (f"not affine in the input with the switches frozen (relative "
                          f"error {error:.1e})")
        # basis inputs whose outputs are exactly zero at both points (the origin of a bias-free
        # network, F_c(θ, 0) = 0) are zero polynomials: no generator, dropped
        zero = np.all(at_theta == 0, axis=1) & np.all(at_other == 0, axis=1)
        if zero.all():
            return None, "the cells' outputs are zero"
        grid_x, grid_p = grid_x[~zero], grid_p[~zero]

        def phi(t: Array) -> Array:
            """θ (D,) ↦ F_c(θ, b) for every cell c and basis input b ∈ {0, e_1, …, e_d} (but
            the dropped zeros)."""
            return jnp.ravel(outputs(t, grid_x, grid_p))

        model = Model(name=f"{self.name} cells", dims=self.dims, phi=phi, blocks=self.blocks,
                      bias=self.bias, phi_jacobian=batched_jacobian(
                          one, unravel, (grid_x, grid_p), self.n_outputs))
        note = (f"{len(cells)} activation cells of {self.n_inputs} inputs, each on {d + 1} basis "
                f"inputs (affine to {error:.0e}"
                + (f"; {int(zero.sum())} zero at both points dropped)" if zero.any() else ")"))
        return model, note

    def _values_at(self, thetas: np.ndarray) -> np.ndarray:
        """φ_N at each row of ``thetas``, shape (K, nN), in chunks of `SPANNING_CHUNK`."""
        phi = jax.jit(jax.vmap(self.phi))
        pad = -len(thetas) % SPANNING_CHUNK
        padded = np.concatenate([thetas, np.repeat(thetas[:1], pad, axis=0)])
        chunks = [np.asarray(phi(jnp.asarray(padded[i:i + SPANNING_CHUNK])))
                  for i in range(0, len(padded), SPANNING_CHUNK)]
        return np.concatenate(chunks)[: len(thetas)]

    def degenerate_reason(self, theta: np.ndarray) -> str | None:
        """θ is degenerate when some recorded switch has the same outcome on all N inputs (or on all
        but fewer than `min_switch_inputs`), or some parameter has a zero generator on all of
        them (`degeneracy`).

        A ReLU unit off (or on) for the whole sample at θ: on the open set of θ where this holds,
        the unit's generators are missing (off: its weights are conserved) or it acts linearly
        (on), and the count is that of a degenerate region, not the generic one (module
        docstring); likewise a weight whose input unit is off wherever its output unit is on.
        Switches constant for every θ by construction (a unit dead whatever θ, a guard) make
        every θ degenerate: `conflow.laws.points.generic_points` then lists the point after its
        repairs. ``None`` if nothing is degenerate (or nothing is recorded).
        """
        return self.degeneracy(theta)[1]

    def _unravel_compiled(self):
        """`unravel` as one compiled program (eager, it compiles a split and a reshape per
        leaf shape, and ravels the params again at each call)."""
        cache = self.__dict__.setdefault("_patterns_cache", {})
        if "unravel" not in cache:
            cache["unravel"] = jax.jit(ravel_pytree(self.params)[1])
        return cache["unravel"]

    def _idle_eval(self):
        cache = self.__dict__.setdefault("_patterns_cache", {})
        if "idle" not in cache:
            phi = self.phi
            d = int(jax.eval_shape(phi, jax.ShapeDtypeStruct((self.D,), jnp.float64)).shape[0])
            c = jnp.asarray(np.random.default_rng(IDLE_PROBE_SEED).standard_normal(d))
            cache["idle"] = jax.jit(lambda t: jax.vjp(phi, t)[1](c)[0])
        return cache["idle"]

    def _pattern_eval(self):
        cache = self.__dict__.setdefault("_patterns_cache", {})
        if "fn" not in cache:
            if self.patterns_fn is not None:
                fn, notes = (lambda p, x: jnp.ravel(jnp.asarray(self.patterns_fn(p, x)))), ()
            else:
                fn, notes = branch_recorder(self.apply_fn, self.params, jnp.asarray(self.inputs[0]))
            cache["fn"] = (jax.jit(jax.vmap(fn, in_axes=(None, 0))), notes)
        return cache["fn"]


def _affine_error(outputs: Callable, xs: Array, pats: Array, grid_x: Array, grid_p: Array,
                  cell_of: np.ndarray, theta: np.ndarray, exact: np.ndarray | None = None
                  ) -> tuple[float, np.ndarray]:
    """Largest relative error of F_c(θ, x_i) = F_c(θ, 0) + Σ_j x_ij (F_c(θ, e_j) − F_c(θ, 0))
    over the sample (`SampledModel.cell_model`; ``grid_x``, ``grid_p``: the basis inputs of
    every cell, cell-major); with ``exact`` (the network's own outputs at θ, raveled), also of
    F_{c(i)}(θ, x_i) against them. Returns it and the outputs on the basis inputs,
    ``(len(grid_x), n)``."""
    t = jnp.asarray(theta)
    at_x = np.asarray(outputs(t, xs, pats))
    n_cells = int(cell_of.max()) + 1
    at_grid = np.asarray(outputs(t, grid_x, grid_p))
    grid = at_grid.reshape(n_cells, -1, at_x.shape[1])[cell_of]
    x = np.asarray(xs).reshape(len(cell_of), -1)
    error = _relative_error(grid, x, at_x)
    if exact is not None:
        scale = max(np.abs(at_x).max(), np.abs(grid).max(), np.finfo(float).tiny)
        error = max(error, float(np.abs(exact - at_x.ravel()).max() / scale))
    return (error if np.isfinite(error) else np.inf), at_grid


def _relative_error(grid: np.ndarray, x: np.ndarray, outputs: np.ndarray) -> float:
    """Largest error of outputs F(x_i) = F(0) + Σ_j x_ij (F(e_j) − F(0)), relative to the
    largest output, ``inf`` if not finite: ``grid (..., d + 1, n)`` holds F on 0, e_1, …, e_d,
    ``x (..., d)`` the inputs and ``outputs (..., n)`` F on them (leading axes broadcast)."""
    affine = grid[..., 0, :] + np.einsum("...j,...jn->...n", x, grid[..., 1:, :] - grid[..., :1, :])
    scale = max(np.abs(outputs).max(), np.abs(grid).max(), np.finfo(float).tiny)
    error = np.abs(affine - outputs).max() / scale
    return float(error) if np.isfinite(error) else np.inf


def _spanning_columns(values: np.ndarray, all_independent: bool = False) -> np.ndarray | None:
    """Columns of ``values`` (K × m, function j sampled at K points in column j) that span all
    of them, sorted; ``None`` when all are needed (unless ``all_independent`` and K > m) or the
    spectrum is not cleanly split (`SPANNING_ZERO`, `SPANNING_KEEP`). Zero columns (functions
    that vanish) are never kept."""
    rows = np.linalg.norm(values, axis=1, keepdims=True)
    a = values / np.where(rows > 0, rows, 1.0)
    cols = np.linalg.norm(a, axis=0)
    nonzero = cols > 0
    if not nonzero.any():
        return None
    a = a[:, nonzero] / cols[nonzero]
    s = np.linalg.svd(a, compute_uv=False)
    r = int(np.sum(s > SPANNING_ZERO * s[0]))
    if s[r - 1] < SPANNING_KEEP * s[0]:
        return None
    if r == a.shape[1] < a.shape[0] and all_independent:
        return np.flatnonzero(nonzero)
    if r >= min(a.shape):
        return None
    pivots = scipy.linalg.qr(a, mode="r", pivoting=True)[1]
    basis = np.sort(pivots[:r])
    coeffs = np.linalg.lstsq(a[:, basis], a, rcond=None)[0]
    if np.max(np.linalg.norm(a[:, basis] @ coeffs - a, axis=0)) > 1e3 * SPANNING_ZERO:
        return None
    return np.flatnonzero(nonzero)[basis]


def constant_columns(pat: np.ndarray) -> np.ndarray:
    """Columns of a pattern matrix (N inputs × S switches; other shapes are flattened per input)
    that hold one value on all N rows: bool, shape ``(S,)``."""
    return rare_columns(pat, 1)


#: A switch counts as rare at θ when its rarer outcomes hold on fewer than this fraction of the
#: inputs (`min_switch_inputs`): a unit active on a sliver of the sample spans its incoming
#: weights only weakly (measured: σ ~ 1e-6 generator directions on 4-layer Equinox ReLU MLPs).
RARE_SWITCH_FRACTION = 1 / 64


def min_switch_inputs(n_inputs: int) -> int:
    """Fewest inputs on which the outcomes other than a switch's commonest must hold:
    max(1, ⌊N · `RARE_SWITCH_FRACTION`⌋)."""
    return max(1, int(n_inputs * RARE_SWITCH_FRACTION))


def rare_columns(pat: np.ndarray, k_min: int = 1) -> np.ndarray:
    """Columns of a pattern matrix (N inputs × S switches; other shapes are flattened per input)
    whose outcomes other than the commonest hold on fewer than ``k_min`` rows (``k_min = 1``:
    the constant columns): bool, shape ``(S,)``."""
    pat = np.asarray(pat)
    pat = pat.reshape(pat.shape[0], -1) if pat.ndim != 2 else pat
    if pat.size == 0:
        return np.zeros(pat.shape[1], dtype=bool)
    lo = pat.min()
    if pat.dtype == bool or (pat.dtype.kind in "iu" and int(pat.max()) - int(lo) <= 1):
        ones = (pat != lo).sum(axis=0)  # two outcomes (every ReLU-like switch): one count each
        commonest = np.maximum(ones, pat.shape[0] - ones)
    else:
        commonest = np.max([(pat == v).sum(axis=0) for v in np.unique(pat)], axis=0)
    return pat.shape[0] - commonest < k_min


def as_inputs(inputs: Any, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    try:
        arr = np.asarray(inputs)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"from_model: inputs must be an array (N, *input_shape): {brief_error(e)}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"from_model: inputs must be real or integer, got dtype {arr.dtype}")
    if arr.ndim < 1 or arr.shape[0] < 1:
        raise InputError(f"from_model: inputs must have shape (N, *input_shape), N ≥ 1, got "
                         f"{arr.shape}")
    if input_shape is not None and tuple(arr.shape[1:]) != tuple(input_shape):
        raise InputError(f"from_model: inputs have shape {arr.shape[1:]} per item, expected "
                         f"{tuple(input_shape)}")
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise InputError("from_model: inputs contain NaN or inf")
    return arr


def _sampled_phi(apply_fn: Callable, unravel: Callable, inputs: np.ndarray) -> Callable:
    xs = jnp.asarray(inputs)

    def phi(theta: Array) -> Array:
        """θ (D,) ↦ (g(θ, x_1), …, g(θ, x_N)) raveled, shape (nN,)."""
        p = unravel(theta)
        return _ravel_output(jax.vmap(lambda x: apply_fn(p, x))(xs))

    return phi


#: `batched_jacobian` differentiates this many batch items at a time. Under ``vmap`` each item's
#: reverse pass of a convolution gets its own kernel cotangent, a grouped convolution with one
#: group per item, whose cost XLA's CPU backend grows as (items)²: the Jacobian of an eqx Conv2d
#: net (D = 270) on 2,160 inputs took 57 s and 24 GB at once, 0.15 s and 0.4 GB 16 at a time
#: (`lax.map`); an MLP's takes the same time either way.
JACOBIAN_CHUNK = 16


def batched_jacobian(apply_fn: Callable, unravel: Callable, batch: tuple, n_outputs: int
                     ) -> Callable[[Array], Array]:
    """θ ↦ the Jacobian of φ(θ) = `_ravel_output` of ``vmap(apply_fn(unravel(θ), *·))(*batch)``,
    shape ``(len · n_outputs, D)``, rows in φ's order (output leaves, then batch items, then each
    leaf's entries), computed per batch item: ``n_outputs`` reverse passes (or D forward ones,
    if fewer) of one item, batched `JACOBIAN_CHUNK` items at a time, where autodiff of φ takes
    min(d, D) passes over the batch."""
    batch = tuple(jnp.asarray(b) for b in batch)

    def phi_jacobian(theta: Array) -> Array:
        D = theta.shape[0]
        jacobian = jax.jacrev if n_outputs <= D else jax.jacfwd

        def one(*item):
            return jacobian(lambda t: apply_fn(unravel(t), *item))(theta)

        if len(batch[0]) > JACOBIAN_CHUNK:
            out = jax.lax.map(lambda item: one(*item), batch, batch_size=JACOBIAN_CHUNK)
        else:
            out = jax.vmap(one)(*batch)
        rows = [leaf.reshape(-1, D) for leaf in jax.tree_util.tree_leaves(out)]
        return rows[0] if len(rows) == 1 else jnp.concatenate(rows)

    return phi_jacobian


def default_n_inputs(D: int, n_outputs: int) -> int:
    """max(16, ⌈8D / n⌉): 8× the fewest inputs whose n output gradients could span R^D.

    Spanning needs more than ⌈D/n⌉ inputs: each ReLU unit must be active on enough inputs to
    span its incoming weights (see `draw_inputs` for measured coverage)."""
    return max(16, math.ceil(8 * D / max(n_outputs, 1)))


def _rewrite(e: InputError) -> InputError:
    msg = str(e).replace("custom: phi", "from_model: the model", 1).replace(
        "custom:", "from_model:", 1)
    return InputError(msg)


@float64
def from_model(
    apply_fn: Any,
    params: Any = None,
    inputs: Any = None,
    *,
    n_inputs: int | None = None,
    input_shape: Sequence[int] | None = None,
    seed: int = 0,
    name: str = "from_model",
    patterns_fn: Callable[[Any, Any], Any] | None = None,
    input_radius: float = INPUT_RADIUS_RANGE,
) -> SampledModel:
    """A conflow `Model` from ``apply_fn(params, x)``: φ(θ) = (g(θ, x_1), …, g(θ, x_N)).

    Args:
        apply_fn: ``(params, x) -> output`` on ONE input x (any output pytree), or an Equinox /
            Flax NNX module called as ``module(x)`` (then leave ``params`` out).
        params: a pytree of float arrays, an Equinox module or an NNX module (module docstring);
            its values are only an example (generic points are drawn by the engine).
        inputs: the sample, shape ``(N, *input_shape)``. Default: N inputs of ``input_shape``
            drawn with ``seed`` by `draw_inputs` (Gaussian directions, radii log-uniform in
            [1/8, 8]).
        n_inputs: N when ``inputs`` is not given; default `default_n_inputs` (max(16, ⌈8D/n⌉)).
        input_shape: shape of one input, needed when ``inputs`` is not given.
        seed: seed for the drawn inputs.
        input_radius: radius range R of the drawn inputs (`draw_inputs`; 1 for plain Gaussian).
        name: family name for reports (``label`` is ``name[D] on N inputs``).
        patterns_fn: ``(params, x) -> array``: your activation pattern of one input; default: the
            jaxpr branch recorder (module docstring).

    Returns a `SampledModel` (a `Model`); count it with `count_laws` or, with the input checks,
    `count_laws_from_model`. Raises `InputError` (one line) on bad arguments or a model that fails
    on the inputs.
    """
    if params is None:
        if _is_equinox(apply_fn) or _is_nnx(apply_fn):
            apply_fn, params = _call_module, apply_fn
        else:
            raise InputError("from_model: params is required (or pass an Equinox / Flax NNX "
                             "module as the first argument)")
    if not callable(apply_fn):
        raise InputError(f"from_model: apply_fn is not callable (got {type(apply_fn).__name__})")
    tree, rebuild, kind = split_params(params)

    def tree_apply(p, x):
        return apply_fn(rebuild(p), x)

    user_patterns = None
    if patterns_fn is not None:
        if not callable(patterns_fn):
            raise InputError("from_model: patterns_fn must be callable (params, x) -> array")
        user_patterns = lambda p, x: patterns_fn(rebuild(p), x)  # noqa: E731

    if inputs is not None:
        if n_inputs is not None and np.shape(inputs)[0] != n_inputs:
            raise InputError(f"from_model: n_inputs={n_inputs} but {np.shape(inputs)[0]} inputs "
                             "given")
        inputs = as_inputs(inputs)
        shape = tuple(inputs.shape[1:])
        x0 = jax.ShapeDtypeStruct(shape, inputs.dtype)
    else:
        if input_shape is None:
            raise InputError("from_model: give inputs=(N, *input_shape) or input_shape=")
        try:
            shape = tuple(int(s) for s in input_shape)
        except (TypeError, ValueError):
            raise InputError(f"from_model: input_shape must be a tuple of ints, got "
                             f"{input_shape!r}") from None
        if any(s < 0 for s in shape):
            raise InputError(f"from_model: input_shape must be non-negative, got {shape}")
        x0 = jax.ShapeDtypeStruct(shape, jnp.float64)
    if n_inputs is not None and (not isinstance(n_inputs, (int, np.integer)) or n_inputs < 1):
        raise InputError(f"from_model: n_inputs must be a positive integer, got {n_inputs!r}")
    _check_radius(input_radius)

    # Output size on one input, abstractly (no compilation, not even of a dtype conversion).
    tree64 = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.float64)
                                    if np.asarray(a).dtype.kind == "f" else a, tree)
    try:
        out = jax.eval_shape(lambda p, x: _ravel_output(tree_apply(p, x)), tree64, x0)
        n_out = int(out.shape[0])
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - one line for any user error
        raise InputError(f"from_model: the model fails on one input of shape {shape}: "
                         f"{brief_error(e)}") from e
    source = "given"
    if inputs is None:
        source = "gaussian"
        D = sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(tree))
        n = default_n_inputs(D, n_out) if n_inputs is None else int(n_inputs)
        inputs = draw_inputs(np.random.default_rng(seed), n, shape, input_radius)

    phi_tree = lambda p: jax.vmap(lambda x: tree_apply(p, x))(jnp.asarray(inputs))  # noqa: E731
    try:
        base = custom(phi_tree, tree, name=name)
    except InputError as e:
        raise _rewrite(e) from e
    # converted on the host: an eager float32 → float64 conversion compiles once per shape
    params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float64)), tree)
    unravel = ravel_pytree(params64)[1]

    def ravel(module_or_tree: Any) -> Array:
        arrays = split_params(module_or_tree)[0]
        return ravel_pytree(jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64),
                                                   arrays))[0]

    return SampledModel(
        name=base.name,
        dims=base.dims,
        phi=_sampled_phi(tree_apply, unravel, inputs),
        phi_jacobian=batched_jacobian(tree_apply, unravel, (inputs,), n_out),
        blocks=base.blocks,
        apply_fn=tree_apply,
        params=params64,
        inputs=inputs,
        n_outputs=n_out,
        kind=kind,
        patterns_fn=user_patterns,
        seed=seed,
        input_source=source,
        input_radius=float(input_radius),
        unravel_params=lambda theta: rebuild(unravel(theta)),
        ravel_params=ravel,
    )
