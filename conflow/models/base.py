"""The `Model`: a reparameterisation φ of a network, its parameter layout and its generic points.

A model is described, as in MATH.md §1.3, by a map φ: R^D → R^d such that the network output is a
smooth function of φ(θ) (on the region of interest). The gradient-flow generators are the rows of
the Jacobian, χ_i(θ) = ∂φ(θ)ᵀ e_i (MATH.md §1.3), so φ together with the layout of θ is all the
counting engine needs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from conflow.errors import InputError
from conflow.precision import float64

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ParamBlock:
    """One named parameter array inside the flat vector θ.

    Attributes:
        name: the name used when printing laws, e.g. ``"U1"``.
        shape: the array's shape; ``()`` for a scalar.
        positive: the block lives in the open positive orthant (mirror / entropy coordinates,
            MATH.md §4): generic points are drawn positive there.
    """

    name: str
    shape: tuple[int, ...]
    positive: bool = False

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def entry_names(self) -> list[str]:
        """Names of the entries in row-major order: ``U1[0,1]``; a scalar is just ``name``."""
        if not self.shape:
            return [self.name]
        return [
            f"{self.name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*self.shape)
        ]


@dataclasses.dataclass(frozen=True)
class Model:
    """A parameterised model seen through its reparameterisation φ (MATH.md §1.3).

    Attributes:
        name: family name (``"linear"``, ``"relu"``, ...).
        dims: the architecture as given by the user.
        phi: flat parameters θ, shape ``(D,)`` → φ(θ), shape ``(d,)``. Must be a JAX function.
        blocks: the layout of θ: consecutive named blocks, row-major.
        bias: whether the architecture has biases (reported only).
        pairing: optional ``(θ (D,), f (n_pairing_coeffs,)) -> scalar`` equal to ⟨a(f), φ(θ)⟩
            for structured coefficient vectors a(f) ∈ R^d whose image spans R^d (see
            `conflow.engine.trace.VectorFamily.sample_field`). Its θ-gradient is a generic element of
            the gradient-flow generators at the cost of one evaluation, where ∂φ(θ)ᵀa costs a
            pass over all d coordinates of φ (ReLU path-liftings: one per input-output path).
        n_pairing_coeffs: length of f.
        forward: the network g(params, x) on the blocks of `unflatten` (for training and
            simulation), taking ``activation=σ`` as a keyword when ``activation`` is set; None
            when the model is not a network of inputs.
        activation: the default activation name of ``forward`` (None: it has none).
        takes_inputs: training data is ``(x, y)``; False: the target alone (NMF: X ≈ U V).
        input_dim: the size of one input x of ``forward`` (None: no network of inputs).
        init: ``(rng, scale) -> {block: array}``, the model's initialisation (None: the
            default of `init_params`).
        unravel_params: θ ↦ the user's own parameter pytree (None: the dict of named blocks,
            `unflatten`); see `to_pytree`.
        ravel_params: the inverse of ``unravel_params`` (None: `flatten`); see `from_pytree`.
        phi_jacobian: optional θ ↦ ∂φ(θ), shape ``(d, D)``, for models that compute it in far
            fewer passes than the d reverse (or D forward) passes of φ autodiff takes: a network
            on a sample of N inputs (`conflow.from_model`) takes one batched pass per output of
            one input, where each pass of φ runs all N inputs. The gradient flows then hand the
            engine their generators as a matrix (`VectorFamily.generators`).
    """

    name: str
    dims: tuple[int, ...]
    phi: Callable[[Array], Array]
    blocks: tuple[ParamBlock, ...]
    bias: bool = False
    pairing: Callable[[Array, Array], Array] | None = None
    n_pairing_coeffs: int = 0
    forward: Callable[..., Array] | None = None
    activation: str | None = None
    takes_inputs: bool = True
    input_dim: int | None = None
    init: Callable[[np.random.Generator, float], dict[str, np.ndarray]] | None = None
    unravel_params: Callable[[Array], Any] | None = dataclasses.field(default=None, repr=False)
    ravel_params: Callable[[Any], Array] | None = dataclasses.field(default=None, repr=False)
    phi_jacobian: Callable[[Array], Array] | None = dataclasses.field(default=None, repr=False)

    @property
    def D(self) -> int:
        """Number of parameters."""
        return sum(b.size for b in self.blocks)

    @property
    @float64
    def d(self) -> int:
        """Dimension of φ(θ) (number of gradient-flow generators)."""
        return int(jax.eval_shape(self.phi, jax.ShapeDtypeStruct((self.D,), jnp.float64)).shape[0])

    @property
    def param_names(self) -> list[str]:
        """One readable name per coordinate of θ, e.g. ``["U1[0,0]", "U1[0,1]", ...]``."""
        return [n for b in self.blocks for n in b.entry_names()]

    @property
    def positive_mask(self) -> np.ndarray:
        """Boolean mask, shape ``(D,)``: coordinates constrained to be positive."""
        return np.concatenate([np.full(b.size, b.positive) for b in self.blocks])

    @property
    def label(self) -> str:
        """Short architecture label, e.g. ``relu[3,4,2]+bias``."""
        return f"{self.name}[{','.join(map(str, self.dims))}]" + ("+bias" if self.bias else "")

    def unflatten(self, theta: Float[Array, " D"]) -> dict[str, Array]:
        """Split flat θ, shape ``(D,)``, into ``{block name: array of the block's shape}``."""
        out, start = {}, 0
        for b in self.blocks:
            out[b.name] = theta[start : start + b.size].reshape(b.shape)
            start += b.size
        return out

    def flatten(self, params: dict[str, Array]) -> Float[Array, " D"]:
        """Inverse of `unflatten`."""
        return jnp.concatenate([jnp.ravel(jnp.asarray(params[b.name])) for b in self.blocks])

    @float64
    def sample_points(self, key: Array | int | np.random.Generator, n: int) -> Float[Array, "n D"]:
        """``n`` generic points, shape ``(n, D)``, well conditioned: each block by `draw_block`.

        Matrix blocks are a Haar-random matrix with orthonormal rows or columns plus a Gaussian
        perturbation of relative size `PERTURBATION` (singular values in about [0.4, 1.6], so
        products of many blocks stay well conditioned), vectors Gaussian of norm about 0.3,
        scalars standard Gaussian, positive blocks |g| + 0.1. Every block's law has a density (on
        R^{size}, on the open orthant for positive blocks), so the points avoid any Lebesgue-null
        set — in particular the proper analytic subset where dim Lie(W)(z) is below its generic
        value (MATH.md §1.5) — with probability one: they are generic.

        ``key`` is a JAX key, an integer seed or a NumPy generator; points are drawn with NumPy
        (no compilation), block by block in layout order, and returned as a float64 JAX array
        (same key, same points).
        """
        rng = as_generator(key)
        parts = [draw_block(rng, b, n) for b in self.blocks]
        return jax.device_put(np.concatenate(parts, axis=1) if parts else np.zeros((n, 0)))

    def to_pytree(self, theta: Float[Array, " D"]) -> Any:
        """Flat θ, shape ``(D,)`` → the parameters as the user writes laws on them: the dict of
        named blocks for built-in models, the params pytree of `conflow.custom`, the Equinox /
        Flax NNX module of `conflow.from_model`."""
        return self.unflatten(theta) if self.unravel_params is None else self.unravel_params(theta)

    def from_pytree(self, params: Any) -> Float[Array, " D"]:
        """The inverse of `to_pytree`: the flat θ, shape ``(D,)``, of a parameter pytree."""
        if self.ravel_params is None:
            if not isinstance(params, dict):
                raise InputError(f"parameters of {self.label} are a dict of blocks "
                                 f"{[b.name for b in self.blocks]}, got {type(params).__name__}")
            return self.flatten(params)
        return self.ravel_params(params)

    def network(self, activation: str | Callable[[Array], Array] | None = None,
                ) -> Callable[[dict[str, Array], Array], Array]:
        """The network function g(params, x) on the blocks of `unflatten`; ``activation``
        (a name in `ACTIVATIONS` or a callable) replaces the default of models that have one."""
        if self.forward is None:
            raise InputError(f"no forward function for model {self.label}; pass a loss function "
                             "of the parameter pytree instead")
        if self.activation is None:
            if activation is not None:
                raise InputError(f"activation applies to models with an activation (relu, icnn),"
                                 f" not {self.name}")
            return self.forward
        act = activation_fn(self.activation if activation is None else activation)
        return functools.partial(self.forward, activation=act)

    @float64
    def init_params(self, key: Array | int | np.random.Generator = 0, scale: float = 1.0,
                    ) -> dict[str, Array]:
        """Initial parameters as `unflatten` blocks (float64): the model's ``init`` if it has
        one, else `standard_init` (matrices N(0, scale²/fan_in) with fan-in the row count,
        vectors 0, positive blocks uniform in [0.1, 1.1)·scale)."""
        rng = as_generator(key)
        params = (self.init(rng, scale) if self.init is not None
                  else standard_init(self.blocks, rng, scale))
        return {b.name: jnp.asarray(params[b.name], jnp.float64) for b in self.blocks}

    def degenerate_reason(self, theta: np.ndarray) -> str | None:
        """Why θ, shape ``(D,)``, lies in a degenerate region of a piecewise model, or ``None``.

        A piecewise model (ReLU net given as code, `conflow.from_model.SampledModel`) has open
        regions of positive measure where the count differs from the generic one (a hidden unit
        off, or on, for every input): random points land there with positive probability, and
        `conflow.laws.points.generic_points` redraws them. The built-in models are analytic in θ
        (their non-generic points form a null set): this default says ``None``.
        """
        return None



#: Activations a built-in network's forward pass takes by name (any callable works too).
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "identity": lambda z: z,
}


def activation_fn(activation: str | Callable[[Array], Array]) -> Callable[[Array], Array]:
    """A callable activation from a name in `ACTIVATIONS` or a callable."""
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise InputError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[activation]


def standard_init(blocks: Sequence[ParamBlock], rng: np.random.Generator, scale: float = 1.0,
                  fan_in_axis: int = 0, gain: float = 1.0) -> dict[str, np.ndarray]:
    """Matrices N(0, gain·scale²/fan_in) with fan_in = shape[fan_in_axis] (He for gain 2),
    vectors and scalars 0, positive blocks uniform in [0.1, 1.1)·scale."""
    out = {}
    for b in blocks:
        if b.positive:
            out[b.name] = scale * rng.uniform(0.1, 1.1, b.shape)
        elif len(b.shape) < 2:
            out[b.name] = np.zeros(b.shape)
        else:
            fan_in = b.shape[fan_in_axis]
            out[b.name] = scale * math.sqrt(gain / fan_in) * rng.standard_normal(b.shape)
    return out


#: Relative Frobenius size ε of the Gaussian perturbation of a matrix block's orthonormal part.
PERTURBATION = 0.3
#: Norm σ of a vector block (biases): entries N(0, σ²/m) for length m.
VECTOR_SCALE = 0.3
#: Positive blocks: |g| + POSITIVE_FLOOR entrywise, g standard Gaussian.
POSITIVE_FLOOR = 0.1


def draw_block(rng: np.random.Generator, block: ParamBlock, n: int) -> np.ndarray:
    """``n`` draws of one block, flattened row-major: shape ``(n, block.size)``, float64.

    - positive block (mirror coordinates): |g| + 0.1 entrywise, g ~ N(0, 1) (density on
      (0.1, ∞)^size; products of positive matrices are dominated by their Perron direction
      whatever the law, and the mirror models are shallow);
    - scalar: N(0, 1);
    - vector of length m (biases, …): N(0, σ²/m I), σ = `VECTOR_SCALE` = 0.3, norm ≈ 0.3: a
      bias of a ReLU unit then stays small against its input, which shrinks by about 1/√2 per
      ReLU layer when ‖W‖ ≈ 1, so its kink stays inside the cloud of its inputs (measured on
      Equinox ReLU MLPs counted from code: fewer units constant over the input sample than with
      σ = 1 or a standard Gaussian θ);
    - array of rank ≥ 2, seen as the matrix A of shape (a, b) = (shape[0], Π shape[1:]) (first
      axis × the rest: Equinox / PyTorch ``(out, in, …)`` weights, conv kernels):

          A = Q + ε G / √max(a, b),    ε = `PERTURBATION` = 0.3,

      Q Haar on the matrices with orthonormal columns (a ≥ b) or rows (a < b) (QR of a Gaussian,
      columns' signs fixed by diag R), G ~ N(0, 1) entrywise, independent. ‖εG/√max(a,b)‖_F ≈
      ε ‖Q‖_F, and its operator norm ≈ ε (1 + √(min/max)) ≤ 0.6, so by Weyl all min(a, b)
      singular values of A lie in about [0.4, 1.6] (‖A‖ ≈ 1 for every block): a product of q
      blocks has condition number ≲ 4^q, typically far less, where a square Gaussian block alone
      has condition number ~a and a product's grows exponentially in q (measured, ten 8×8
      blocks: 10–14 against 1e6–1e10 for Gaussian ones; linear[8]*10 then counts 288 laws with
      gap 1.9e12 where Gaussian points disagreed, gap 19).

    Each law has a density: the Gaussian term's density convolved with the law of Q (or of the
    other terms) is again a density. Hence the draw is absolutely continuous.
    """
    size = block.size
    shape = block.shape
    if size == 0:
        return np.zeros((n, 0))
    if block.positive:
        return np.abs(rng.standard_normal((n, size))) + POSITIVE_FLOOR
    if len(shape) == 0:
        return rng.standard_normal((n, 1))
    if len(shape) == 1:
        return rng.standard_normal((n, size)) * (VECTOR_SCALE / math.sqrt(size))
    a = shape[0]
    b = size // a
    q = _haar_orthonormal(rng, n, max(a, b), min(a, b))  # (n, max, min), orthonormal columns
    if a < b:
        q = np.swapaxes(q, 1, 2)  # orthonormal rows
    g = rng.standard_normal((n, a, b))
    return (q + PERTURBATION * g / math.sqrt(max(a, b))).reshape(n, size)


def _haar_orthonormal(rng: np.random.Generator, n: int, rows: int, cols: int) -> np.ndarray:
    """``n`` Haar-distributed matrices with orthonormal columns, shape ``(n, rows, cols)``,
    rows ≥ cols: Q of the QR of a Gaussian matrix, column j times sign(R_jj) (Mezzadri 2007)."""
    q, r = np.linalg.qr(rng.standard_normal((n, rows, cols)))
    signs = np.sign(np.diagonal(r, axis1=1, axis2=2))
    return q * np.where(signs == 0, 1.0, signs)[:, None, :]


def as_generator(key: Array | int | np.random.Generator) -> np.random.Generator:
    """A NumPy generator from a JAX PRNG key, an integer seed or a generator (returned as is)."""
    if isinstance(key, np.random.Generator):
        return key
    if isinstance(key, (int, np.integer)):
        return np.random.default_rng(int(key))
    data = key if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else (
        jax.random.key_data(key))
    return np.random.default_rng(np.asarray(data).ravel().tolist())


def blocks_from_shapes(
    shapes: Sequence[tuple[str, tuple[int, ...]]], positive: Sequence[str] = ()
) -> tuple[ParamBlock, ...]:
    """Build the block layout from ``[(name, shape), ...]``; names in ``positive`` are positive."""
    return tuple(ParamBlock(n, tuple(s), n in positive) for n, s in shapes)


def split_flat(theta: Array, blocks: Sequence[ParamBlock]) -> list[Array]:
    """Split flat θ, shape ``(D,)``, into the blocks' arrays (row-major), in block order.

    A functional twin of `Model.unflatten` for use inside φ before the `Model` exists.
    """
    out, start = [], 0
    for b in blocks:
        out.append(theta[start : start + b.size].reshape(b.shape))
        start += b.size
    return out


#: The largest architecture dim accepted (an array axis cannot be longer).
MAX_DIM = 2**31 - 1


def check_model(model: object) -> None:
    """`InputError` unless ``model`` is a conflow `Model`."""
    if not isinstance(model, Model):
        raise InputError(f"model must be a conflow Model (cf.linear(...), cf.custom(fn, params), "
                         f"cf.from_model(...)), got {type(model).__name__}")


def check_dims(
    family: str,
    dims: Sequence[int],
    *,
    exact: int | None = None,
    at_least: int | None = None,
    meaning: str = "",
) -> tuple[int, ...]:
    """Validate an architecture: positive integers, and ``exact`` / ``at_least`` many of them.

    Returns the dims as a tuple of Python ints; raises `InputError` with a one-line message
    otherwise. ``meaning`` (e.g. ``"(n, r, m)"``) is quoted in the count message.
    """
    if isinstance(dims, (str, bytes)):
        raise InputError(f"{family}: dims must be a sequence of positive integers such as "
                         f"[2, 3, 2], got the string {dims!r}")
    try:
        dims = tuple(dims)
    except TypeError:
        raise InputError(f"{family}: dims must be a sequence of positive integers, got {dims!r}")
    bad = [
        x
        for x in dims
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)) or x <= 0
    ]
    if bad:
        raise InputError(
            f"{family}: dims must be positive integers, got {','.join(map(str, dims)) or '(none)'}"
        )
    dims = tuple(int(x) for x in dims)
    if max(dims, default=0) > MAX_DIM:
        raise InputError(f"{family}: a dim of {max(dims)} is beyond any array (at most {MAX_DIM})")
    what = f" {meaning}" if meaning else ""
    if exact is not None and len(dims) != exact:
        raise InputError(
            f"{family} needs exactly {exact} dim{'s' if exact != 1 else ''}{what}, "
            f"got {len(dims)}: {','.join(map(str, dims)) or '(none)'}"
        )
    if at_least is not None and len(dims) < at_least:
        raise InputError(
            f"{family} needs at least {at_least} dims{what}, "
            f"got {len(dims)}: {','.join(map(str, dims)) or '(none)'}"
        )
    return dims
