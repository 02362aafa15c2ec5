"""Discrete optimizers and the `train` loop against the exact identities of MATH.md §3.5, §4.2, §5.

- one GD / SGD step changes a quadratic law h = ½θᵀQθ by exactly (η²/2) gᵀQg (for UᵀU − VᵀV:
  η²(G_UᵀG_U − G_VᵀG_V); for a ReLU neuron: η²(‖g_in‖² + g_b² − ‖g_out‖²));
- heavy ball keeps β^{−k}⟨x_k − x_{k−1}, K x_k⟩ exactly, for any minibatch sequence;
- the explicit mirror step keeps NMF's Σ_i U_ik − Σ_j V_kj exactly;
- GD drift of a gradient-flow law scales as η² per step and as η at a fixed time;
- the heavy ball of (δ, μ, ν) converges to the momentum flow at first order in δ.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import conflow as cf
from conflow.errors import InputError
from conflow.reference.closed_forms import model_laws
from conflow.training import optimizers, problem
from conflow.training.drift import loglog_slope
from conflow.training.optimizers import batch_indices, train
from conflow.training.simulate import simulate


@pytest.fixture(scope="module")
def fac():
    model = cf.factorization(3, 3, 4)
    rng = np.random.default_rng(11)
    data = (jnp.asarray(rng.standard_normal((32, 4))), jnp.asarray(rng.standard_normal((32, 3))))
    return model, data, problem.init_params(model, 5), problem.make_loss(model)


def balancedness(p):
    return p["U"].T @ p["U"] - p["V"].T @ p["V"]


def test_momentum_coefficients_mapping():
    alpha, beta = optimizers.momentum_coefficients(0.1, mu=2.0, nu=3.0)
    assert alpha == pytest.approx(0.1 / (3.0 + 2.0 / 0.1))
    assert beta == pytest.approx(2.0 / (0.1 * 3.0 + 2.0))
    assert optimizers.momentum_coefficients(0.2, mu=0.0, nu=4.0) == pytest.approx((0.05, 0.0))
    a1, b1 = optimizers.momentum_coefficients(0.01, 1.0, 0.5)  # β ≈ 1/(1 + δτ) ≈ e^{−δτ}
    assert b1 == pytest.approx(1 / (1 + 0.005)) and a1 == pytest.approx(0.01**2 * b1)
    for bad in [(0.0, 1.0, 1.0), (0.1, -1.0, 1.0), (0.1, 0.0, 0.0)]:
        with pytest.raises(InputError):
            optimizers.momentum_coefficients(*bad)
    with pytest.raises(InputError):
        optimizers.heavy_ball(0.1, 1.0)
    with pytest.raises(InputError, match="unknown optimizer"):
        optimizers.make_optimizer("lion", 0.1)


def test_one_gd_step_changes_quadratic_laws_by_eta_squared(fac):
    model, (x, y), p0, loss = fac
    eta = 0.07
    for batch in [(x, y), (x[:5], y[:5])]:  # GD, then one SGD minibatch
        g = jax.grad(loss)(p0, batch)
        tx = optimizers.gd(eta)
        updates, _ = tx.update(g, tx.init(p0), p0)
        p1 = optax.apply_updates(p0, updates)
        delta = balancedness(p1) - balancedness(p0)
        expected = eta**2 * (g["U"].T @ g["U"] - g["V"].T @ g["V"])
        assert np.max(np.abs(expected)) > 1e-4
        np.testing.assert_allclose(delta, expected, rtol=1e-10, atol=1e-15)
    # through `train` with minibatches: each step's increment is η²(G_UᵀG_U − G_VᵀG_V)
    res = train(model, optimizers.gd(eta), p0, (x, y), 3, every=1, batch_size=8, key=4,
                monitors={"H": balancedness})
    p = p0
    key = jax.random.PRNGKey(4)
    for k in range(3):
        idx = batch_indices(key, k, 32, 8)
        g = jax.grad(loss)(p, (x[idx], y[idx]))
        np.testing.assert_allclose(res.values["H"][k + 1] - res.values["H"][k],
                                   eta**2 * (g["U"].T @ g["U"] - g["V"].T @ g["V"]),
                                   rtol=1e-9, atol=1e-15)
        p = jax.tree_util.tree_map(lambda a, b: a - eta * b, p, g)


def test_one_gd_step_on_a_relu_neuron_law():
    model = cf.relu([3, 4, 2], bias=True)
    rng = np.random.default_rng(2)
    data = (jnp.asarray(rng.standard_normal((16, 3))), jnp.asarray(rng.standard_normal((16, 2))))
    p0 = problem.init_params(model, 1)
    p0 = {**p0, "b1": jnp.asarray(rng.standard_normal(4) * 0.3)}
    law = model_laws(model)  # ‖W1[j,:]‖² + b1[j]² − ‖W2[:,j]‖²
    eta = 0.05
    g = jax.grad(problem.make_loss(model))(p0, data)
    res = train(model, optimizers.gd(eta), p0, data, 1, monitors={"h": law})
    expected = eta**2 * (jnp.sum(g["W1"] ** 2, 1) + g["b1"] ** 2 - jnp.sum(g["W2"] ** 2, 0))
    assert np.max(np.abs(expected)) > 1e-5
    np.testing.assert_allclose(res.values["h"][1] - res.values["h"][0], expected, rtol=1e-9,
                               atol=1e-16)


def test_heavy_ball_keeps_the_discrete_noether_law_exactly(fac):
    model, data, p0, loss = fac
    alpha, beta = optimizers.momentum_coefficients(0.1, mu=1.0, nu=1.0)
    tx = optimizers.heavy_ball(alpha, beta)
    # a nonzero initial velocity d0 = x0 − x_{−1}: optax's trace m0 = −d0/α
    rng = np.random.default_rng(1)
    d0 = {k: jnp.asarray(0.05 * rng.standard_normal(v.shape)) for k, v in p0.items()}
    state0 = tx.init(p0)
    state0 = (state0[0]._replace(trace=jax.tree_util.tree_map(lambda d: -d / alpha, d0)),
              *state0[1:])

    def noether(p, v, k):  # β^{−k} Antisym(UᵀΔU + VᵀΔV), ΔX = x_k − x_{k−1}
        m = p["U"].T @ v["U"] + p["V"].T @ v["V"]
        return beta ** (-k) * (m - m.T)

    steps = 60
    res = train(model, tx, p0, data, steps, every=1, batch_size=6, key=3, opt_state0=state0,
                monitors={"noether": noether, "H": balancedness})
    law = res.values["noether"][1:]  # k ≥ 1 (the k = 0 record sees no velocity)
    assert np.max(np.abs(law[0])) > 1e-3
    np.testing.assert_allclose(law, np.broadcast_to(law[0], law.shape), rtol=1e-7, atol=1e-12)
    H = res.values["H"]
    assert np.max(np.abs(H - H[0])) > 1e-3  # the gradient-flow law drifts under heavy ball
    # the loop is exactly the heavy-ball recursion x_{k+1} = x_k − α g_k + β (x_k − x_{k−1})
    prev = jax.tree_util.tree_map(jnp.subtract, p0, d0)
    x = p0
    key = jax.random.PRNGKey(3)
    for k in range(steps):
        idx = batch_indices(key, k, 32, 6)
        g = jax.grad(loss)(x, (data[0][idx], data[1][idx]))
        x, prev = jax.tree_util.tree_map(lambda a, b, c: a - alpha * c + beta * (a - b),
                                         x, prev, g), x
    for k in p0:
        np.testing.assert_allclose(res.final.params[k], x[k], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(res.final.velocity[k], x[k] - prev[k], rtol=1e-8, atol=1e-13)


def test_mirror_step_keeps_the_nmf_law_exactly():
    model = cf.nmf(4, 3, 5)
    rng = np.random.default_rng(9)
    X = jnp.asarray(rng.uniform(0.1, 1.0, (4, 5)))
    p0 = problem.init_params(model, 2)
    law = model_laws(model, "mirror")
    res = train(model, optimizers.mirror_descent(0.2), p0, X, 100, every=10,
                monitors={"h": law})
    h = res.values["h"]
    assert np.max(np.abs(h - h[0])) < 1e-13 * np.max(np.abs(h[0])) + 1e-14
    assert res.loss[-1] < 0.3 * res.loss[0] and res.distance[-1] > 0.1
    assert all(bool(jnp.all(v > 0)) for v in res.final.params.values())
    # Euclidean GD does not keep it; the exponentiated form x e^{−ηg} does not either
    gd = train(model, optimizers.gd(0.2), p0, X, 100, every=10, monitors={"h": law})
    assert np.max(np.abs(gd.values["h"] - h[0])) > 1e-3
    # mirror heavy ball with μ = 0 is the mirror step
    mhb = train(model, optimizers.mirror_heavy_ball(0.2, mu=0.0, nu=1.0), p0, X, 100, every=10,
                monitors={"h": law})
    np.testing.assert_allclose(mhb.values["h"], h, rtol=1e-12)
    for k in p0:
        np.testing.assert_allclose(mhb.final.params[k], res.final.params[k], rtol=1e-12)
    # a mask: mirror on U only, GD on V
    mixed = optimizers.mirror_descent(0.2, positive={"U": True, "V": False})
    g = jax.grad(problem.make_loss(model))(p0, X)
    up, _ = mixed.update(g, mixed.init(p0), p0)
    np.testing.assert_allclose(up["U"], -0.2 * p0["U"] * g["U"])
    np.testing.assert_allclose(up["V"], -0.2 * g["V"])


def test_gd_drift_slopes_one_at_fixed_time_two_per_step(fac):
    model, data, p0, _ = fac
    law = model_laws(model)
    lrs = [0.0025, 0.005, 0.01]

    def drift(lr, steps):
        res = train(model, optimizers.gd(lr), p0, data, steps, every=steps, monitors={"h": law})
        return float(np.max(np.abs(res.values["h"][-1] - res.values["h"][0])))

    fixed_time = [drift(lr, int(round(0.4 / lr))) for lr in lrs]
    fixed_steps = [drift(lr, 8) for lr in lrs]
    assert 0.9 < loglog_slope(lrs, fixed_time) < 1.1
    assert 1.9 < loglog_slope(lrs, fixed_steps) < 2.1


def test_heavy_ball_converges_to_the_momentum_flow_at_first_order(fac):
    model, data, p0, _ = fac
    tau, T = 1.5, 1.0
    flow = simulate(model, "heavy-ball", p0, data, T, tau=tau, saveat=2, rtol=1e-11,
                    atol=1e-13)
    errors = []
    for delta in (0.02, 0.01):
        res = train(model, optimizers.heavy_ball_flow(delta, mu=1.0, nu=tau), p0, data,
                    int(round(T / delta)), every=int(round(T / delta)))
        errors.append(max(float(np.max(np.abs(res.final.params[k] - flow.final.params[k])))
                          for k in p0))
    assert errors[1] < 0.1
    assert 1.6 < errors[0] / errors[1] < 2.4  # first order in δ


def test_nesterov_is_the_look_ahead_recursion():
    target = jnp.asarray([1.0, -2.0, 3.0])
    loss = lambda p: 0.5 * jnp.sum(jnp.asarray([1.0, 3.0, 10.0]) * (p["w"] - target) ** 2)  # noqa
    delta, steps = 0.1, 30
    p0 = {"w": jnp.zeros(3)}
    res = train(loss, optimizers.nesterov(delta), p0, None, steps, every=steps)
    x_prev = y = np.zeros(3)
    for k in range(steps):
        g = np.asarray(jax.grad(loss)({"w": jnp.asarray(y)})["w"])
        x = y - delta**2 * g
        t = (k + 1) * delta
        y = x + t / (t + 3 * delta) * (x - x_prev)
        x_prev = x
    np.testing.assert_allclose(res.final.params["w"], y, rtol=1e-12)
    assert res.loss[-1] < 0.2 * res.loss[0]


def test_adam_minibatches_records_and_determinism(fac):
    model, data, p0, _ = fac
    kw = dict(every=5, batch_size=8, monitors={"H": balancedness})
    a = train(model, optax.adam(0.01), p0, data, 20, key=1, **kw)
    b = train(model, optax.adam(0.01), p0, data, 20, key=1, progress=True, **kw)  # 4 chunks
    c = train(model, optax.adam(0.01), p0, data, 20, key=2, **kw)
    assert a.values["H"].shape == (5, 3, 3)
    np.testing.assert_array_equal(a.steps, [0, 5, 10, 15, 20])
    for k in p0:
        np.testing.assert_allclose(a.final.params[k], b.final.params[k], rtol=1e-13)
    assert not np.allclose(a.final.params["U"], c.final.params["U"])
    assert a.loss[-1] < a.loss[0] and a.final.velocity is None
    with pytest.raises(InputError, match="multiple"):
        train(model, optax.adam(0.01), p0, data, 7, every=5)
    with pytest.raises(InputError, match="batch_size"):
        train(model, optax.adam(0.01), p0, data, 5, batch_size=100)
    with pytest.raises(InputError, match="GradientTransformation"):
        train(model, "adam", p0, data, 5)
    with pytest.raises(InputError, match="whole matrix"):
        train(cf.nmf(2, 2, 2), optimizers.gd(0.1), problem.init_params(cf.nmf(2, 2, 2)),
              jnp.ones((2, 2)), 5, batch_size=1)
