"""Trace bases on the device: the level loop's linear algebra where the brackets are.

At each of P points the trace found so far is an orthonormal basis T_p (rows), kept on the
device(s) that evaluated the brackets, in one array ``basis (P, cap, n)`` whose rows
rank_p … cap − 1 are zero. A stack Y (S × n) of normalised rows — a level's samples, or a block of
them — is cut by

    R = Y − (Y Tᵀ) T, twice          block classical Gram–Schmidt, re-orthogonalised (CGS2)
    Rᵀ = q r,  r = U Σ Wᵀ            one batched QR, and the SVD of its S × S factor
    k_p = #{σ > cut}                 on the host, from the σ's alone (`conflow.engine.rank`)
    T ← [T; (q U)[:, :k]ᵀ]           rows rank_p … rank_p + k_p − 1 (R = W Σ (q U)ᵀ)

(a stack taller than wide, S > n, is cut by the SVD of R's n × n QR factor instead).

Matrix products, one QR and one small SVD per stack: what GPUs do well. The σ's are those of Y
projected on the complement of the trace, as in the host engine (`conflow.engine.levels`), so
both cut the same ranks; only the σ's (P × min(S, n) numbers) leave the device. Shapes are
static: the capacity grows by doubling on accelerators (a handful of compiled programs per
count) and to one of 4 sizes per octave on CPUs (projections never run over more than 25 % zero
rows: `DeviceBases._grown`), and with several devices the points are split over them (each
point's trace is independent; P is padded to a multiple of the device count with zero points,
which no one reads).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from conflow.engine.distributed import global_array, to_host
from conflow.engine.evaluate import FAST_COMPILE_OPTIONS

Array = jax.Array
#: Bases of at most this many floats (P · n · n) are allocated whole from the start.
FULL_CAPACITY_FLOATS = 1 << 18
_HIGHEST = jax.lax.Precision.HIGHEST


def _project_out(y: Array, basis: Array) -> Array:
    """y − (y Tᵀ) T for ``y (P, S, n)``, ``basis (P, cap, n)`` (orthonormal rows or zero)."""
    coordinates = jnp.einsum("psn,pcn->psc", y, basis, precision=_HIGHEST)
    return y - jnp.einsum("psc,pcn->psn", coordinates, basis, precision=_HIGHEST)


def _trace_error(coordinates: Array, errors: Array) -> Array:
    """β per point (`conflow.engine.rank.trace_error`): ``coordinates (P, S, cap)`` of the
    normalised rows on the trace directions, whose errors are ``errors (P, cap)``."""
    by_direction = jnp.einsum("psc,pc->ps", jnp.abs(coordinates), errors, precision=_HIGHEST)
    by_norm = jnp.linalg.norm(coordinates, axis=2) * jnp.max(errors, axis=1)[:, None]
    return jnp.max(jnp.minimum(by_direction, by_norm), axis=1)


def _spectrum(basis, errors, values, scales, scale0, *, generators, project, n_points, out):
    """σ and Vᵀ of each point's normalised rows projected off its trace, and β.

    ``values (P, S, L, n)``, ``scales (P, S, L)``: level 0 of the L given is cut.
    ``generators``: the rows are judged against the largest generator seen so far at the point
    (``scale0 (P,)``, updated and returned). Returns σ ``(P, q)``, Vᵀ ``(P, q, n)`` with
    q = min(S, n), the error β ``(P,)`` the rows inherit from the trace (``errors (P, cap)``:
    each trace row's ε), the new scale0 and whether every row was finite.
    """
    values, scales = values[:, :, 0], scales[:, :, 0]
    pad = n_points - values.shape[0]
    values = jnp.pad(values, ((0, pad), (0, 0), (0, 0)))
    scales = jnp.pad(scales, ((0, pad), (0, 0)))
    if generators:
        scale0 = jnp.maximum(scale0, jnp.max(scales, axis=1))
        scales = jnp.broadcast_to(scale0[:, None], scales.shape)
    y = values / jnp.where(scales > 0, scales, 1.0)[..., None]
    finite = jnp.all(jnp.isfinite(y))
    beta = jnp.zeros(y.shape[0], y.dtype)
    if project:
        coordinates = jnp.einsum("psn,pcn->psc", y, basis, precision=_HIGHEST)
        beta = _trace_error(coordinates, errors)
        y = _project_out(y - jnp.einsum("psc,pcn->psn", coordinates, basis, precision=_HIGHEST),
                         basis)
    q = None
    if y.shape[1] > y.shape[2]:  # tall: the n × n triangular factor has the same σ and V
        y = jnp.linalg.qr(y, mode="r")
    else:  # wide: Yᵀ = q r, r = u Σ wᵀ, so Y's right singular vectors are (q u)ᵀ; QR, the
        # S × S SVD and q u took 0.64 s where the SVD of Y took 1.49 s (3 × 512 × 3,600)
        q, y = jnp.linalg.qr(jnp.swapaxes(y, 1, 2))
    # LAPACK's SVD can fail to converge on pure rounding noise (~1e-16 entries): unit max-entry
    size = jnp.max(jnp.abs(y), axis=(1, 2), keepdims=True)
    size = jnp.where(size > 0, size, 1.0)
    u, sigma, vt = jnp.linalg.svd(y / size, full_matrices=False)
    sigma = sigma * size[:, :, 0]
    if q is not None:
        vt = jnp.einsum("pns,psk->pkn", q, u, precision=_HIGHEST)
    if out is not None:
        sigma, vt, beta = (jax.lax.with_sharding_constraint(x, out) for x in (sigma, vt, beta))
    return sigma, vt, beta, scale0, finite


def _insert(basis: Array, errors: Array, vt: Array, new_errors: Array, ranks: Array,
            added: Array) -> tuple[Array, Array]:
    """Rows ``ranks[p] … ranks[p] + added[p] − 1`` of ``basis`` (and ``errors``) ← the first
    ``added[p]`` rows of ``vt[p]`` (and entries of ``new_errors[p]``, zero past them).

    Only the rows from ranks[p] on are written (zero past the new rank, as they were; rows
    past the capacity are dropped), so with donated buffers the update is in place."""
    keep = jnp.arange(vt.shape[1])[None, :] < added[:, None]  # (P, S)
    points = jnp.arange(basis.shape[0])[:, None]
    slots = ranks[:, None] + jnp.arange(vt.shape[1])[None, :]
    return (basis.at[points, slots].set(jnp.where(keep[..., None], vt, 0.0), mode="drop"),
            errors.at[points, slots].set(new_errors, mode="drop"))


@functools.cache
def _programs(backend: str) -> tuple:
    """The compiled `_spectrum`, `_insert` and `_grow` for ``backend``. On CPU they are compiled
    at -O0 (`FAST_COMPILE_OPTIONS`): their time goes to LAPACK and BLAS calls, which -O0 leaves
    as they are, and optimising the code around them took 0.3-0.6 s per program (measured,
    against 0.05 s), the larger part of a small count. Other backends compile them optimised.
    `_insert` updates the basis in place (its buffers are donated)."""
    options = FAST_COMPILE_OPTIONS if backend == "cpu" else None
    return (jax.jit(_spectrum, static_argnames=("generators", "project", "n_points", "out"),
                    compiler_options=options),
            jax.jit(_insert, compiler_options=options, donate_argnums=(0, 1)),
            jax.jit(_grow, compiler_options=options, static_argnames=("cap",)))


def bucket(k: int, per_octave: int = 8) -> int:
    """k rounded up to one of ``per_octave`` sizes per octave (a power of 2; 8: at most 12.5 %
    more): sizes that vary from count to count then compile a handful of programs."""
    step = 1 << max(0, k.bit_length() - per_octave.bit_length())
    return -(-k // step) * step


def _grow(basis: Array, errors: Array, cap: int) -> tuple[Array, Array]:
    more = cap - basis.shape[1]
    return jnp.pad(basis, ((0, 0), (0, more), (0, 0))), jnp.pad(errors, ((0, 0), (0, more)))


class DeviceBases:
    """The traces found so far at P points, as orthonormal rows on the device.

    ``ranks`` (host, shape ``(P,)``) are the dimensions found; `spectrum` cuts a stack against
    the traces and `extend` adds the first k_p of its directions at each point.
    """

    def __init__(self, n_points: int, n: int, dtype, sharding: NamedSharding | None = None):
        n_dev = 1 if sharding is None else sharding.mesh.size
        self.n = n
        self.n_points = n_points
        self._padded = -(-n_points // n_dev) * n_dev
        self._sharding = None if sharding is None else NamedSharding(
            sharding.mesh, PartitionSpec(sharding.mesh.axis_names[0]))
        self.ranks = np.zeros(n_points, dtype=int)
        # small traces get their full capacity at once: no growth, fewer compiled programs
        cap = n if self._padded * n * n <= FULL_CAPACITY_FLOATS else 0
        self._basis = self._put(np.zeros((self._padded, cap, n), dtype))
        self._errors = self._put(np.zeros((self._padded, cap), dtype))  # each row's ε
        self._scale0 = self._put(np.zeros(self._padded, dtype))
        self._vt: Array | None = None

    def start_from(self, rows: tuple[np.ndarray, ...], errors: tuple[np.ndarray, ...]) -> None:
        """Make the traces the orthonormal ``rows[p] (r_p, n)`` with errors ``errors[p]``
        (`conflow.engine.levels.TraceBases`), before any stack."""
        ranks = np.array([r.shape[0] for r in rows], dtype=int)
        cap = max(self.capacity, min(self.n, self._grown(int(ranks.max(initial=0)))))
        basis = np.zeros((self._padded, cap, self.n), self._basis.dtype)
        errs = np.zeros((self._padded, cap), self._basis.dtype)
        for p, (r, e) in enumerate(zip(rows, errors)):
            basis[p, : r.shape[0]], errs[p, : r.shape[0]] = r, e
        self._basis, self._errors = self._put(basis), self._put(errs)
        self.ranks = ranks

    def rows(self) -> list[np.ndarray]:
        """Each point's trace as orthonormal rows ``(r_p, n)``, on the host."""
        basis = to_host(self._basis)
        return [basis[p, : self.ranks[p]] for p in range(self.n_points)]

    def _put(self, x: np.ndarray) -> Array:
        if self._sharding is None:
            return jax.device_put(x)
        if jax.process_count() > 1:
            return global_array(x, self._sharding)
        return jax.device_put(x, self._sharding)

    def _pad(self, x: np.ndarray) -> np.ndarray:
        return np.pad(x, (0, self._padded - self.n_points))

    @property
    def capacity(self) -> int:
        return self._basis.shape[1]

    def _grown(self, need: int) -> int:
        """The capacity for ``need`` rows. On CPU one of 4 sizes per octave: every stack is
        projected off all the capacity, and a zero row costs more there than copying it on a
        growth (-O0 programs compile in ~0.05 s). Elsewhere at least double: each capacity
        compiles optimised programs, and matrix products are cheap."""
        if jax.default_backend() == "cpu":
            return bucket(need, 4)
        return bucket(max(need, 2 * self.capacity))

    def spectrum(self, values: Array, scales: Array, generators: bool
                 ) -> tuple[np.ndarray, np.ndarray, bool]:
        """σ of each point's stack ``values (P, S, 1, n)`` (scales ``(P, S, 1)``, as
        `conflow.engine.evaluate` gives one level) off its trace, on the host: shape
        ``(P, min(S, n))``, descending; the error β each point's rows inherit from its trace
        (`conflow.engine.rank.trace_error`), shape ``(P,)``; and whether every row was finite.

        ``generators``: depth 0, where rows are judged against the largest generator seen so
        far at the point (over every stack given so far), not their own scale.
        """
        spectrum = _programs(jax.default_backend())[0]
        sigma, self._vt, beta, self._scale0, finite = spectrum(
            self._basis, self._errors, values, scales, self._scale0, generators=generators,
            project=bool(self.capacity and self.ranks.any()), n_points=self._padded,
            out=self._sharding)
        sigma, beta = to_host(sigma), to_host(beta)
        return sigma[: self.n_points], beta[: self.n_points], bool(to_host(finite))

    def extend(self, added: np.ndarray, errors: list[np.ndarray]) -> None:
        """Add the first ``added[p]`` directions of the last `spectrum`'s stack at each point,
        with their errors ε: the last ``added[p]`` of ``errors[p]`` (each trace direction's ε
        at point p, in the order found)."""
        added = np.asarray(added, dtype=int)
        if not added.any():
            return
        need = int(np.max(self.ranks + added))
        if need > self.capacity:
            self._basis, self._errors = _programs(jax.default_backend())[2](
                self._basis, self._errors, cap=min(self.n, self._grown(need)))
        new_errors = np.zeros((self._padded, self._vt.shape[1]), self._vt.dtype)
        for p, k in enumerate(added):
            new_errors[p, :k] = errors[p][len(errors[p]) - k:]
        self._basis, self._errors = _programs(jax.default_backend())[1](
            self._basis, self._errors, self._vt, self._put(new_errors),
            self._put(self._pad(self.ranks)), self._put(self._pad(added)))
        self.ranks = self.ranks + added
