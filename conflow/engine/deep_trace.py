"""Deep levels at the cost of shallow ones: right-nested chains of generic elements of W_s.

The level construction reaches bracket depth k with chains of k Jacobian–vector products nested
in one another, and each nesting about triples the compiled program (linear [5,14,15,1]: 53 k
jaxpr lines and a 10 s compile at depth 6, 155 k and 49 s at depth 7, 455 k and 431 s at depth
8; measured). A model whose W_0 is small next to its Lie algebra (a net with one output: W_0 of
dimension 5, Lie algebra of dimension 70, reached at depth 8) is out of reach that way.

`deep_trace` runs the same level construction (`conflow.engine.trace.lie_trace`) on the
generators

    F(z, c) = Σ_{j ≤ s} w_j Y_j(z; c),    c = (a_0, …, a_s),

where Y_j is the depth-j element of one right-nested chain of the original generators
(`conflow.engine.brackets.bracket_chain`) and w_j > 0 are constants. F is a polynomial map in c
whose terms of different Y_j have different degrees, so the fields F(·, c) span, over c, exactly
W_s (as fields, not only at a point), and random c give generic elements of it. Since
W_0 ⊆ W_s ⊆ Lie(W), Lie(F) = Lie(W); level t of F holds brackets of depth up to
(t + 1)(s + 1) − 1 of the original generators, at the cost of a plain chain of depth t + s.
Stagnation of F's levels at generic points gives dim Lie(W)(z) as the plain construction's does
(MATH.md §1.6: a distribution of locally constant rank spanned by fields whose brackets stay in
it is involutive, and it contains W).

The weights w_j = 1 / (median size of Y_j over a probe) put every inner level at the same size,
so that no level's directions sink below another's rounding. F carries its own scale
(`LevelSum.scale`, the size of the terms whose cancellation produced it, with the inner chain's
`conflow.engine.rank.rounding_amplification`), so the chains over F normalise their rows by
what their rounding really is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from conflow.engine.brackets import Family, bracket_chain
from conflow.engine.evaluate import COEFF_HALF_WIDTH
from conflow.engine.family import VectorFamily
from conflow.engine.rank import rounding_scales
from conflow.engine.trace import LieTrace, lie_trace
from conflow.precision import float64

Array = jax.Array

#: Depth s of the inner chains: level t of F reaches bracket depth 3t + 2.
INNER_DEPTH = 2
#: Samples per point of the probe that sizes the inner levels.
PROBE_SAMPLES = 8
#: Cap on the generator count reported for F (only a bound on what a level can span).
_MAX_COEFFS = 1 << 40


class LevelSum:
    """F(z, c) = Σ_{j ≤ s} w_j Y_j(z; c): a generic element of W_s for random c (module doc).

    ``field``: the original generators (z ``(n,)``, a ``(m,)``) ↦ ``(n,)``; c has shape
    ``((s + 1) m,)``. ``weights``: w_0 … w_s (constants).
    """

    def __init__(self, field: Family, m: int, depth: int, weights: np.ndarray):
        self.m, self.depth = m, depth
        self.chain = bracket_chain(field, depth)
        self.weights = tuple(float(w) for w in weights)

    def _levels(self, z: Array, c: Array) -> tuple[Array, Array]:
        return self.chain(z, c.reshape(self.depth + 1, self.m))

    def __call__(self, z: Array, c: Array) -> Array:
        values, _ = self._levels(z, c)
        return jnp.asarray(self.weights, z.dtype) @ values

    def scale(self, z: Array, c: Array) -> Array:
        """Σ_j w_j · scale_j · ε_j: the size of the terms whose rounding F(z, c) carries."""
        values, scales = self._levels(z, c)
        return jnp.asarray(self.weights, z.dtype) @ rounding_scales(values, scales)


@float64
def level_weights(family: VectorFamily, points: np.ndarray, depth: int, seed: int) -> np.ndarray:
    """w_j = 1 / median over points and `PROBE_SAMPLES` random chains of Y_j's scale (with its
    inherited rounding), shape ``(depth + 1,)``; 1 where that median is 0."""
    field, m = family.sampled
    chain = bracket_chain(field, depth)

    def sizes(z, coeffs):
        return rounding_scales(*chain(z, coeffs))

    rng = np.random.default_rng(seed)
    coeffs = rng.uniform(-COEFF_HALF_WIDTH, COEFF_HALF_WIDTH, (PROBE_SAMPLES, depth + 1, m))
    probe = jax.jit(jax.vmap(jax.vmap(sizes, (None, 0)), (0, None)))
    found = np.asarray(jax.device_get(probe(jax.device_put(np.asarray(points)),
                                            jax.device_put(coeffs))))
    median = np.median(found.reshape(-1, depth + 1), axis=0)
    ok = np.isfinite(median) & (median > 0)
    return np.where(ok, 1.0 / np.where(ok, median, 1.0), 1.0)


def deep_family(family: VectorFamily, weights: np.ndarray) -> VectorFamily:
    """The generators F of the module doc for inner depth ``len(weights) − 1``. Its
    ``n_coeffs`` is m + m² + … + m^{s+1} (capped), the number of chains that span W_s: the bound
    the level loop puts on what a level can span."""
    depth = len(weights) - 1
    field, m_sampled = family.sampled
    m = family.n_coeffs
    level_sum = LevelSum(field, m_sampled, depth, weights)
    # F is not linear in c: given as the sampled field, it is never weighed generator by
    # generator (`conflow.engine.evaluate.generator_weights`)
    return VectorFamily(
        field=level_sum,
        state_dim=family.state_dim,
        n_coeffs=min(sum(m ** (j + 1) for j in range(depth + 1)), _MAX_COEFFS),
        name=f"W_{depth} of {family.name}" if family.name else f"W_{depth}",
        sample_field=level_sum,
        n_sample_coeffs=(depth + 1) * m_sampled,
        costly=True,  # one evaluation is a chain: every bracket level starts with a probe
    )


def reached_depth(level: int, inner_depth: int = INNER_DEPTH) -> int:
    """The deepest bracket of the original generators in level ``level`` of F."""
    return (level + 1) * (inner_depth + 1) - 1


def deep_trace(family: VectorFamily, points: np.ndarray, *, inner_depth: int = INNER_DEPTH,
               max_depth: int = 4, seed: int = 0, **options) -> LieTrace:
    """`conflow.engine.trace.lie_trace` of F (module doc) at ``points (P, n)``: levels
    0 … ``max_depth`` of F, i.e. brackets of depth up to `reached_depth` (``max_depth``) of
    ``family``'s generators. ``options`` go to `lie_trace` (dtype, algorithm, linalg, …)."""
    weights = level_weights(family, points, inner_depth, seed)
    return lie_trace(deep_family(family, weights), points, seed=seed, max_depth=max_depth,
                     **options)
