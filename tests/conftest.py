"""Shared test setup.

`benchmarks/trust_models.py` holds the models of the trust suite and their closed-form expected
counts (`hidden_neurons`, `linear_formula`, `affine_formula`, …); ``benchmarks/bench_trust.py``
uses the same module, so the tests and the benchmark share one copy. Its folder is appended to
``sys.path`` here so that ``import trust_models`` works in the tests.

conflow computes in float64 inside its own calls without touching the process's setting
(`conflow.precision`; tests/test_precision.py checks that in a fresh interpreter). The tests
also compute by hand (Jacobians of closed forms, reference trajectories), so the test process
enables x64 globally, as a user who wants float64 in their own code would.

Shared helper: `max_generator_cosine`, the check "∇h ⊥ every generator" of a closed-form law h
(test_models, test_momentum, test_any_model use it; ``from conftest import
max_generator_cosine``).
"""

import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)
# The CLI turns on JAX's persistent compilation cache; tests run main() in this process and
# leave the user's cache folder alone (tests/test_compile_cache.py checks the cache).
os.environ.setdefault("CONFLOW_CACHE_DIR", "off")

BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.append(BENCHMARKS)


def max_generator_cosine(laws, model, flow=None, n_points=3, seed=0) -> float:
    """max |⟨∇h_k(z), χ_j(z)⟩| / (‖∇h_k(z)‖ ‖χ_j(z)‖) over generic states z, law components k and
    generators j: 0 (up to rounding) exactly when every h_k is conserved by the flow.

    ``laws``: state ↦ (h_1, …, h_K), K ≥ 1; ``flow`` defaults to the Euclidean gradient flow; the
    states are ``flow.sample_points(model, seed, n_points)`` (``seed`` an int or a JAX key) and
    the generators are ``family.field(z, e_j)``, j < ``family.n_coeffs``, of
    ``family = flow.family(model)`` (for momentum flows: the drift and the forces). A vanishing
    ∇h_k at a generic state, which would make the check vacuous, fails it; generators that vanish
    at z are skipped (they are orthogonal to everything).
    """
    from conflow.flows import GradientFlow

    flow = GradientFlow() if flow is None else flow
    family = flow.family(model)
    points = jnp.asarray(flow.sample_points(model, seed, n_points))
    n_laws = jax.eval_shape(laws, points[0]).shape
    assert len(n_laws) == 1 and n_laws[0] > 0, f"laws must return a non-empty vector, got {n_laws}"
    basis = jnp.eye(family.n_coeffs)

    @jax.jit
    @jax.vmap
    def at(z):
        grads = jax.jacfwd(laws)(z)  # (K, n)
        fields = jax.vmap(lambda a: family.field(z, a))(basis)  # (m, n): the generators χ_j(z)
        grad_norm = jnp.linalg.norm(grads, axis=1)
        field_norm = jnp.linalg.norm(fields, axis=1)
        cos = jnp.abs(grads @ fields.T) / grad_norm[:, None] / jnp.where(
            field_norm > 0, field_norm, 1.0)[None, :]
        return jnp.max(cos), jnp.min(grad_norm), jnp.max(field_norm)

    worst, grad_min, field_max = at(points)
    assert float(jnp.min(grad_min)) > 0, "a law's gradient vanishes at a generic state"
    assert float(jnp.min(field_max)) > 0, "every generator vanishes at a generic state"
    return float(jnp.max(worst))
