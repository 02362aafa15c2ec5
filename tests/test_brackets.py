"""Brackets by forward-mode AD against hand-computed brackets."""

import jax
import jax.numpy as jnp
import numpy as np

import conflow  # noqa: F401  (float64)
from conflow.engine.brackets import bracket_chain, lie_bracket


def test_linear_fields_bracket_is_commutator():
    rng = np.random.default_rng(0)
    A, B = (jnp.asarray(rng.standard_normal((4, 4))) for _ in range(2))
    z = jnp.asarray(rng.standard_normal(4))
    w = lie_bracket(lambda x: A @ x, lambda x: B @ x)
    np.testing.assert_allclose(w(z), (B @ A - A @ B) @ z, rtol=1e-12, atol=1e-12)


def test_polynomial_fields_bracket_by_hand():
    # u = (x y, 1), v = (y, x²): [u,v] = ∂v·u − ∂u·v
    # ∂v = [[0,1],[2x,0]], ∂u = [[y,x],[0,0]]
    # ∂v·u = (1, 2x·xy) = (1, 2x²y);  ∂u·v = (y·y + x·x², 0) = (y² + x³, 0)
    u = lambda z: jnp.array([z[0] * z[1], 1.0])  # noqa: E731
    v = lambda z: jnp.array([z[1], z[0] ** 2])  # noqa: E731
    x, y = 1.3, -0.7
    expected = np.array([1 - (y**2 + x**3), 2 * x**2 * y])
    np.testing.assert_allclose(lie_bracket(u, v)(jnp.array([x, y])), expected, rtol=1e-13)


def test_bracket_is_antisymmetric_and_zero_on_itself():
    u = lambda z: jnp.array([jnp.sin(z[0]) * z[1], z[0] ** 3])  # noqa: E731
    v = lambda z: jnp.array([z[1], jnp.exp(z[0])])  # noqa: E731
    z = jnp.array([0.3, 0.8])
    np.testing.assert_allclose(lie_bracket(u, v)(z), -lie_bracket(v, u)(z), rtol=1e-13)
    assert np.allclose(lie_bracket(u, u)(z), 0.0, atol=1e-15)


def test_bracket_chain_matches_composition_and_reports_scale():
    rng = np.random.default_rng(1)
    mats = jnp.asarray(rng.standard_normal((3, 3, 3)))

    def family(x, a):  # G(x, a) = Σ_j a_j A_j x, linear in a
        return jnp.einsum("j,jkl,l->k", a, mats, x)

    coeffs = jnp.asarray(rng.standard_normal((3, 3)))
    z = jnp.asarray(rng.standard_normal(3))
    X = [jnp.einsum("j,jkl->kl", coeffs[i], mats) for i in range(3)]
    # ad_{X0} ad_{X1} X2 for linear fields: [u,v] ↔ BA − AB, so [X1, X2] ↔ X2X1 − X1X2 =: C,
    # [X0, C] ↔ C X0 − X0 C.
    C = X[2] @ X[1] - X[1] @ X[2]
    expected = (C @ X[0] - X[0] @ C) @ z
    values, scales = bracket_chain(family, 2)(z, coeffs)
    value, scale = values[2], scales[2]
    np.testing.assert_allclose(values[0], X[2] @ z, rtol=1e-12)
    np.testing.assert_allclose(values[1], (X[2] @ X[1] - X[1] @ X[2]) @ z, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)
    assert scale >= np.linalg.norm(expected) - 1e-12


def test_scalar_field_self_bracket_is_rounding_relative_to_scale():
    # φ = x1⋯x5: G(x, a) = a ∇φ(x); [G_a, G_b] = ab[∇φ, ∇φ] = 0 analytically.
    phi = lambda x: jnp.prod(x)[None]  # noqa: E731
    family = lambda x, a: jax.vjp(phi, x)[1](a)[0]  # noqa: E731
    z = jnp.asarray(np.random.default_rng(2).standard_normal(5))
    values, scales = bracket_chain(family, 1)(z, jnp.array([[0.7], [-1.3]]))
    value, scale = values[1], scales[1]
    assert scale > 1e-3
    assert np.linalg.norm(value) <= 1e-14 * scale
