"""The `Model`: a reparameterisation φ of a network, its parameter layout and its generic points.

A model is described, as in MATH.md §1.3, by a map φ: R^D → R^d such that the network output is a
smooth function of φ(θ) (on the region of interest). The gradient-flow generators are the rows of
the Jacobian, χ_i(θ) = ∂φ(θ)ᵀ e_i (MATH.md §1.3), so φ together with the layout of θ is all the
counting engine needs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import InputError

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
        closed_form_laws: θ ↦ (h_1(θ), …, h_K(θ)), the laws known from the literature. Used
            **only** to compare with computed counts (tests, reports); never by the engine.
        closed_form_description: the same laws as a short formula, for reports.
    """

    name: str
    dims: tuple[int, ...]
    phi: Callable[[Array], Array]
    blocks: tuple[ParamBlock, ...]
    bias: bool = False
    closed_form_laws: Callable[[Array], Array] | None = None
    closed_form_description: str = ""

    @property
    def D(self) -> int:
        """Number of parameters."""
        return sum(b.size for b in self.blocks)

    @property
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

    def unflatten(self, theta: Array) -> dict[str, Array]:
        """Split flat θ, shape ``(D,)``, into ``{block name: array of the block's shape}``."""
        out, start = {}, 0
        for b in self.blocks:
            out[b.name] = theta[start : start + b.size].reshape(b.shape)
            start += b.size
        return out

    def flatten(self, params: dict[str, Array]) -> Array:
        """Inverse of `unflatten`."""
        return jnp.concatenate([jnp.ravel(jnp.asarray(params[b.name])) for b in self.blocks])

    def sample_points(self, key: Array | int | np.random.Generator, n: int) -> Array:
        """``n`` generic points, shape ``(n, D)``: standard Gaussian, |·| + 0.1 on positive blocks.

        ``key`` is a JAX key, an integer seed or a NumPy generator; points are drawn with NumPy
        (no compilation) and returned as a float64 JAX array.
        """
        z = as_generator(key).standard_normal((n, self.D))
        return jnp.asarray(np.where(self.positive_mask, np.abs(z) + 0.1, z))

    def closed_form_count(self, key: Array | None = None) -> int | None:
        """Number of independent closed-form laws: rank of their gradients at a generic point.

        This is how the reference notebooks obtain the "known" count (MATH.md §1.5, §2.3). It is a
        comparison value only; `count_laws` never uses it.
        """
        if self.closed_form_laws is None:
            return None
        key = jax.random.PRNGKey(12345) if key is None else key
        theta = self.sample_points(key, 1)[0]
        jac = np.asarray(jax.jit(jax.jacfwd(self.closed_form_laws))(theta))  # jit: 5x faster
        if jac.size == 0:
            return 0
        s = np.linalg.svd(jac, compute_uv=False)
        return int(np.sum(s > s[0] * 1e-9)) if s[0] > 0 else 0


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
