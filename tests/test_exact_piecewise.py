"""Exact engine on float coefficients (read as binary rationals) and on piecewise-polynomial models
counted on the activation region of a point θ0 (`conflow.exact.region_polynomial`,
``exact_count_laws(model, region=θ0)``).

Region counts are compared with the numeric engine at the same θ0 (`lie_trace` on that one
point: on θ0's region φ equals the region polynomial, so both count the same algebra) and with the
known answer for positively homogeneous activations with biases: one law per hidden neuron.
"""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.engine.trace import lie_trace
from conflow.errors import InputError
from conflow.exact import (
    DEFAULT_PRIMES,
    Poly,
    binary_rational,
    polynomial_form,
    region_polynomial,
)
from conflow.exact.polynomial import coef_mod
from conflow.flows import GradientFlow, MomentumFlow
from conflow.laws.exact_count import exact_count_laws
from conflow.models.from_model import from_model

X = [Poly.var(j) for j in range(8)]


# ---------------------------------------------------------------------------------------------
# float coefficients
# ---------------------------------------------------------------------------------------------


def _eps_model(eps: float):
    return cf.custom(
        lambda p: jnp.stack([p["x"][0] * p["x"][1], p["x"][0] * p["x"][1] + eps * p["x"][2]]),
        {"x": np.zeros(3)},
    )


@pytest.mark.parametrize("eps", [1e-4, 1e-10, 1e-14, 0.1])
def test_float_coefficient_counts_exactly(eps):
    # fields span {(x1, x0, 0), e3} and [X, e3] = 0: one law (x0² − x1²) whatever ε ≠ 0
    res = cf.count_laws(_eps_model(eps), method="exact")
    assert (res.status, res.n_laws) == ("ok", 1)


def test_float_constants_are_binary_rationals():
    b = binary_rational(0.1)
    assert b == Fraction(0.1) == Fraction(3602879701896397, 2**55) and b != Fraction(1, 10)
    assert binary_rational(2.0) == 2 and isinstance(binary_rational(2.0), int)
    polys = polynomial_form(lambda x: jnp.stack([0.1 * x[0], x[1] * 1e-10 + 0.5]), 2)
    assert polys[0] == Fraction(0.1) * X[0]
    assert polys[1] == Fraction(1e-10) * X[1] + Fraction(1, 2)
    p = DEFAULT_PRIMES[0]
    assert coef_mod(Fraction(0.1), p) * pow(2, 55, p) % p == 3602879701896397
    with pytest.raises(InputError, match="not finite"):
        polynomial_form(lambda x: jnp.nan * x, 2)


# ---------------------------------------------------------------------------------------------
# region counts
# ---------------------------------------------------------------------------------------------


def _switching_point(model, n: int = 20) -> np.ndarray:
    """A generic θ0 at which every recorded switch changes over the model's inputs."""
    for theta in np.asarray(model.sample_points(0, n)):
        pat = model.patterns(theta)
        if np.all(np.any(pat != pat[:1], axis=0)):
            return theta
    raise AssertionError("no sample point where every unit switches over the inputs")


def _numeric_at(model, theta) -> int | None:
    tr = lie_trace(GradientFlow().family(model), jnp.asarray(theta)[None], max_depth=4)
    assert tr.status == "ok", (tr.status, tr.reason)
    return model.D - tr.dim


def _check_region(model, n_hidden: int, primitive: str) -> None:
    theta = _switching_point(model)
    form = region_polynomial(model.phi, model.D, theta)
    # the region polynomial is φ at θ0 (and near it)
    got = np.array([float(P.evaluate([float(t) for t in theta])) for P in form.polys])
    np.testing.assert_allclose(got, np.asarray(model.phi(jnp.asarray(theta))), atol=1e-10)
    res = exact_count_laws(model, region=theta)
    assert res.status == "ok"
    assert res.region is not None and res.region.theta0 == tuple(float(t) for t in theta)
    names = [name for name, _, _ in res.region.by_primitive]
    assert primitive in names and res.region.n_switches >= 1
    # one decision per input and hidden unit, all fixed at once (the (N, width) mask)
    assert res.region.n_decisions == model.n_inputs * n_hidden
    assert res.n_laws == n_hidden  # one law per hidden neuron (positively homogeneous, biases)
    assert res.n_laws == _numeric_at(model, theta)


def test_region_equinox_relu_mlp():
    eqx = pytest.importorskip("equinox")
    mlp = eqx.nn.MLP(3, 2, 3, 2, activation=jax.nn.relu, key=jax.random.PRNGKey(0))
    _check_region(from_model(mlp, input_shape=(3,)), 6, "max")


def test_region_equinox_leaky_relu_mlp():
    eqx = pytest.importorskip("equinox")
    mlp = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.leaky_relu, key=jax.random.PRNGKey(1))
    _check_region(from_model(mlp, input_shape=(3,)), 4, "ge")


def test_region_plain_jax_maximum():
    params = {"W1": np.zeros((4, 3)), "b1": np.zeros(4), "W2": np.zeros((2, 4))}
    model = from_model(
        lambda p, x: p["W2"] @ jnp.maximum(p["W1"] @ x + p["b1"], 0.0), params, input_shape=(3,)
    )
    _check_region(model, 4, "max")


def test_region_abs_net():
    params = {"W1": np.zeros((4, 3)), "b1": np.zeros(4), "W2": np.zeros((2, 4))}
    model = from_model(
        lambda p, x: p["W2"] @ jnp.abs(p["W1"] @ x + p["b1"]), params, input_shape=(3,)
    )
    _check_region(model, 4, "abs")


def test_region_flax_nnx_net():
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 4, rngs=rngs)
            self.l2 = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.l2(nnx.relu(self.l1(x)))

    _check_region(from_model(Net(nnx.Rngs(0)), input_shape=(3,)), 4, "max")


def _check_numeric(model, primitive: str) -> None:
    theta = np.asarray(model.sample_points(1, 1))[0]
    res = exact_count_laws(model, region=theta)
    assert primitive in [name for name, _, _ in res.region.by_primitive]
    assert res.status == "ok" and res.n_laws == _numeric_at(model, theta)


def test_region_maxout_matches_numeric():
    # h_j = max_k (W[j, k] x + b[j, k]): reduce_max over the pieces, one winner per (input, unit)
    maxout = from_model(
        lambda p, x: p["a"] @ jnp.max(p["W"] @ x + p["b"], axis=-1),
        {"W": np.zeros((3, 2, 2)), "b": np.zeros((3, 2)), "a": np.zeros((1, 3))},
        input_shape=(2,),
    )
    _check_numeric(maxout, "reduce_max")


def test_region_max_pooling_matches_numeric():
    def pooled(p, x):
        h = (p["W"] @ x).reshape(1, 6, 1)
        y = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 1), (1, 2, 1), "VALID")
        return p["a"] @ y.reshape(3)

    pool = from_model(pooled, {"W": np.zeros((6, 3)), "a": np.zeros((2, 3))}, input_shape=(3,))
    _check_numeric(pool, "reduce_window_max")


def test_region_of_builtin_relu_is_its_path_lifting():
    model = cf.relu([3, 4, 4, 3], bias=True)
    theta = np.asarray(model.sample_points(0, 1))[0]
    res = exact_count_laws(model, region=theta)
    assert (res.n_laws, res.region.n_switches) == (exact_count_laws(model).n_laws, 0) == (8, 0)


def test_region_cond_and_comparisons_follow_theta0():
    model = cf.custom(
        lambda q: jax.lax.cond(
            q["x"][0] * q["x"][1] > 0.1,
            lambda y: jnp.stack([y[0] * y[1], y[2]]),
            lambda y: jnp.stack([y[0], y[1] ** 2 * y[2]]),
            q["x"],
        ),
        {"x": np.zeros(3)},
    )
    x0, x1, x2 = X[:3]
    assert list(region_polynomial(model.phi, 3, [1.0, 2.0, 3.0]).polys) == [x0 * x1, x2]
    assert list(region_polynomial(model.phi, 3, [-1.0, 2.0, 3.0]).polys) == [x0, x1**2 * x2]


def test_region_ties():
    params = {"W1": np.zeros((4, 3)), "b1": np.zeros(4), "W2": np.zeros((2, 4))}
    model = from_model(
        lambda p, x: p["W2"] @ jax.nn.relu(p["W1"] @ x + p["b1"]), params, input_shape=(3,)
    )
    with pytest.raises(InputError, match="θ0 lies on a switch boundary"):
        exact_count_laws(model, region=np.zeros(model.D))  # every pre-activation is 0
    with pytest.raises(InputError, match="θ0 lies on a switch boundary"):
        region_polynomial(lambda x: jnp.maximum(x, 1.0), 2, np.array([1.0, 3.0]))
    # a tie between identical polynomials is harmless: either side is φ
    form = region_polynomial(
        lambda x: jnp.maximum(0.0 * x, 0.0) + jnp.maximum(x, x) + jnp.abs(x - x),
        2,
        np.array([1.0, -1.0]),
    )
    assert list(form.polys) == [X[0], X[1]] and form.region.n_identical == 6


def test_region_bad_input_and_refusal_without_region():
    params = {"W1": np.zeros((4, 3)), "b1": np.zeros(4), "W2": np.zeros((2, 4))}
    model = from_model(
        lambda p, x: p["W2"] @ jax.nn.relu(p["W1"] @ x + p["b1"]), params, input_shape=(3,)
    )
    with pytest.raises(InputError, match=r"region=θ0"):
        exact_count_laws(model)
    with pytest.raises(InputError, match=r"shape \(24,\)"):
        exact_count_laws(model, region=np.ones(5))
    with pytest.raises(InputError, match="NaN or inf"):
        exact_count_laws(model, region=np.full(model.D, np.nan))
    with pytest.raises(InputError, match="infinite constant operand wins"):
        region_polynomial(lambda x: jnp.maximum(x, jnp.inf), 2, np.ones(2))


def test_level_evaluation_in_blocks_gives_the_same_trace(monkeypatch):
    from conflow.exact import trace as exact_trace

    model = cf.linear([2, 3, 2])
    want = exact_count_laws(model, MomentumFlow(0.5))
    monkeypatch.setattr(exact_trace, "_CAND_ENTRIES", 30)  # one kept field per block
    got = exact_count_laws(model, MomentumFlow(0.5))
    assert want.status == got.status == "ok" and len(want.ranks) > 2
    assert (got.ranks, got.n_laws, [r.kept for r in got.runs]) == (
        want.ranks,
        want.n_laws,
        [r.kept for r in want.runs],
    )
