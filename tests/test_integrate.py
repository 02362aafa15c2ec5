"""Continuous flows (`conflow.training.simulate`), drift reports, plots and ``conflow simulate``.

Expected behaviour from MATH.md: gradient flow keeps UᵀU − VVᵀ (§2.2) and heavy ball breaks it
(§3.5); e^{τt}Antisym(UᵀU' + VᵀV') holds along heavy ball and t³·Antisym(…) along Nesterov (§3.3,
§8); the entropy mirror flow keeps Σ_i U_ik − Σ_j V_kj for NMF (§4.2). Each conservation check is
paired with a check that the trajectory moved and that a non-law drifts, so a flow that does
nothing, or the wrong flow, fails.
"""

import json

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.cli.main import main
from conflow.errors import InputError
from conflow.flows import GradientFlow, MomentumFlow
from conflow.reference.closed_forms import model_laws
from conflow.training import drift, problem
from conflow.training.monitors import Monitor
from conflow.training.simulate import simulate

RTOL, ATOL = 1e-10, 1e-12


def rel_drift(values):
    v = np.asarray(values).reshape(len(values), -1)
    return np.max(np.abs(v - v[0])) / max(np.max(np.abs(v[0])), 1e-300)


def antisym(params, velocity):
    """Antisym(UᵀU' + VᵀV') for the factorisation U Vᵀ (U: n×r, V: m×r)."""
    u, v, du, dv = params["U"], params["V"], velocity["U"], velocity["V"]
    m = u.T @ du + v.T @ dv
    return m - m.T


@pytest.fixture(scope="module")
def lin():
    model = cf.factorization(3, 3, 4)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 4)), rng.standard_normal((24, 3))
    p0 = problem.init_params(model, 1)
    v0 = {k: jnp.asarray(0.5 * rng.standard_normal(p.shape)) for k, p in p0.items()}
    return model, (jnp.asarray(x), jnp.asarray(y)), p0, v0


@pytest.fixture(scope="module")
def heavy_ball_run(lin):
    model, data, p0, v0 = lin
    tau = 0.7
    monitors = {
        "balancedness": lambda p: p["U"].T @ p["U"] - p["V"].T @ p["V"],
        "momentum": lambda p, v, t: jnp.exp(tau * t) * antisym(p, v),
        "raw": lambda p, v, t: antisym(p, v),
        "closed_form": model_laws(model, MomentumFlow(tau)),
    }
    return simulate(model, MomentumFlow(tau), p0, data, 4.0, saveat=41, monitors=monitors,
                    velocity0=v0, rtol=RTOL, atol=ATOL)


def test_forward_functions_agree_with_phi():
    rng = np.random.default_rng(3)
    lin = cf.linear([2, 3, 4])
    theta = lin.sample_points(0, 1)[0]
    x = jnp.asarray(rng.standard_normal((5, 4)))
    phi = lin.phi(theta).reshape(2, 4)
    np.testing.assert_allclose(lin.network()(lin.unflatten(theta), x), x @ phi.T,
                               rtol=1e-12)
    fac = cf.factorization(2, 3, 4)
    theta = fac.sample_points(1, 1)[0]
    np.testing.assert_allclose(fac.network()(fac.unflatten(theta), x),
                               x @ fac.phi(theta).reshape(2, 4).T, rtol=1e-12)
    nmf = cf.nmf(2, 3, 4)
    theta = nmf.sample_points(2, 1)[0]
    np.testing.assert_allclose(nmf.network()(nmf.unflatten(theta), None).ravel(), nmf.phi(theta))
    # ReLU MLP with biases: the relu model's layout (W_l: n_l × n_{l−1})
    relu = cf.relu([4, 3, 2], bias=True)
    p = relu.unflatten(relu.sample_points(4, 1)[0])
    expected = np.maximum(x @ p["W1"].T + p["b1"], 0) @ p["W2"].T
    np.testing.assert_allclose(relu.network()(p, x), expected, rtol=1e-12)
    np.testing.assert_allclose(relu.network("tanh")(p, x),
                               np.tanh(x @ p["W1"].T + p["b1"]) @ p["W2"].T, rtol=1e-12)
    mlp = cf.init_mlp(0, [4, 8, 3])
    assert set(mlp) == {"W1", "b1", "W2"} and mlp["W1"].shape == (8, 4)
    # cross-entropy with labels = with one-hot rows
    logits = jnp.asarray(rng.standard_normal((5, 3)))
    labels = jnp.asarray([0, 2, 1, 1, 0])
    np.testing.assert_allclose(problem.cross_entropy_loss(logits, labels),
                               problem.cross_entropy_loss(logits, jax.nn.one_hot(labels, 3)))


def test_gradient_flow_keeps_balancedness_to_solver_tolerance(lin):
    model, data, p0, _ = lin
    law = model_laws(model)  # upper triangle of UᵀU − VᵀV
    res = simulate(model, "gradient", p0, data, 5.0, saveat=26, monitors={"H": law,
                   "U_norm": lambda p: jnp.sum(p["U"] ** 2)}, rtol=RTOL, atol=ATOL,
                   estimate_error=True)
    assert res.values["H"].shape == (26, 6) and res.times.shape == (26,)
    assert rel_drift(res.values["H"]) < 1e-8
    assert rel_drift(res.values["U_norm"]) > 1e-2  # UᵀU alone is not conserved
    assert res.distance[-1] / res.scale > 0.1 and res.loss[-1] < 0.9 * res.loss[0]
    assert np.all(np.diff(res.loss) <= 1e-12)  # gradient flow decreases the loss
    assert res.stats["num_accepted_steps"] > 10
    report = drift.drift_report(res, reference="H")
    assert report.moved
    assert report.laws["H"].verdict == "conserved"  # judged against its error estimate
    assert report.laws["U_norm"].verdict == "drifts"
    assert "conserved" in report.summary() and report.to_json()["laws"]["H"]["conserved"]


def test_heavy_ball_breaks_balancedness_and_keeps_the_momentum_law(heavy_ball_run):
    res = heavy_ball_run
    assert res.flow == "heavy-ball(τ=0.7)"
    assert rel_drift(res.values["balancedness"]) > 1e-2  # MATH.md §3.5: GF laws drift
    assert np.max(np.abs(res.values["momentum"][0])) > 0.1  # not trivially zero
    assert rel_drift(res.values["momentum"]) < 1e-7
    assert rel_drift(res.values["raw"]) > 0.5  # without e^{τt} it decays
    # conflow's closed form (strict upper triangle, a sign convention of its own) agrees
    iu = np.triu_indices(3, k=1)
    np.testing.assert_allclose(np.abs(res.values["closed_form"]),
                               np.abs(res.values["momentum"][:, iu[0], iu[1]]), rtol=1e-9,
                               atol=1e-12)
    assert res.final.t == pytest.approx(4.0)
    assert res.final.velocity["U"].shape == res.final.params["U"].shape == (3, 3)


def test_nesterov_keeps_the_t_cubed_law(lin):
    model, data, p0, v0 = lin
    monitors = {"t3": lambda p, v, t: t**3 * antisym(p, v), "raw": lambda p, v, t: antisym(p, v),
                "closed_form": model_laws(model, "nesterov")}
    res = simulate(model, "nesterov", p0, data, 3.0, t0=0.5, saveat=31, monitors=monitors,
                   velocity0=v0, rtol=RTOL, atol=ATOL)
    assert res.times[0] == 0.5
    assert rel_drift(res.values["t3"]) < 1e-7
    assert rel_drift(res.values["closed_form"]) < 1e-7
    assert rel_drift(res.values["raw"]) > 0.5
    assert res.distance[-1] / res.scale > 0.05


def test_mirror_flow_nmf_in_log_coordinates(lin):
    nmf = cf.nmf(3, 2, 4)
    rng = np.random.default_rng(5)
    X = jnp.asarray(rng.uniform(0.1, 1.0, (3, 4)))
    p0 = problem.init_params(nmf, 2)
    law = model_laws(nmf, "mirror")  # Σ_i U_ik − Σ_j V_kj
    euclid = lambda p: p["U"].T @ p["U"] - p["V"] @ p["V"].T  # noqa: E731
    res = simulate(nmf, "mirror", p0, X, 30.0, saveat=16, monitors={"h": law, "e": euclid},
                   rtol=RTOL, atol=ATOL)
    assert rel_drift(res.values["h"]) < 1e-8
    assert rel_drift(res.values["e"]) > 1e-2
    assert res.loss[-1] < 0.2 * res.loss[0]
    assert all(bool(jnp.all(x > 0)) for x in res.final.params.values())
    # the same flow integrated directly in θ through a callable metric: same end point
    direct = simulate(nmf, GradientFlow(lambda p, g: jax.tree_util.tree_map(jnp.multiply, p, g)),
                      p0, X, 30.0, saveat=2, rtol=RTOL, atol=ATOL)
    for k in p0:
        np.testing.assert_allclose(res.final.params[k], direct.final.params[k], rtol=1e-6)
    # a model-free loss with an explicit positive mask: only "a" is a mirror coordinate
    loss = lambda p: (p["a"] * p["b"] - 2.0) ** 2  # noqa: E731
    r2 = simulate(loss, "mirror", {"a": 0.5, "b": 0.5}, None, 2.0, saveat=3,
                  positive={"a": True, "b": False},
                  monitors={"h": lambda p: p["a"] - 0.5 * p["b"] ** 2})  # MATH.md §4.3 mixed
    assert rel_drift(r2.values["h"]) < 1e-6 and r2.distance[-1] > 0.1


def test_mirror_momentum_matches_a_direct_second_order_integration():
    nmf = cf.nmf(2, 2, 3)
    rng = np.random.default_rng(7)
    X = jnp.asarray(rng.uniform(0.1, 1.0, (2, 3)))
    p0 = problem.init_params(nmf, 3)
    tau, t1 = 0.8, 6.0
    res = simulate(nmf, "mirror-momentum", p0, X, t1, tau=tau, saveat=2, rtol=RTOL, atol=ATOL,
                   monitors={"h": model_laws(nmf, "mirror")})
    loss = problem.make_loss(nmf)

    def field(t, y, args):  # θ'' + τθ' = −(τθ + θ') ⊙ ∇L, written out
        theta, v = y
        g = jax.grad(loss)(theta, X)
        dv = jax.tree_util.tree_map(lambda x, vi, gi: -tau * vi - (tau * x + vi) * gi, theta, v, g)
        return (v, dv)

    y0 = (p0, jax.tree_util.tree_map(jnp.zeros_like, p0))
    sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Tsit5(), 0.0, t1, None, y0,
                              stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
                              max_steps=100_000)
    for k in p0:
        np.testing.assert_allclose(res.final.params[k], sol.ys[0][k][-1], rtol=1e-6)
        np.testing.assert_allclose(res.final.velocity[k], sol.ys[1][k][-1], rtol=1e-5,
                                   atol=1e-9)
    assert rel_drift(res.values["h"]) > 1e-4  # mirror momentum has no law (MATH.md §3.4)
    # the same metric as a callable on the parameter pytree, integrated in (θ, v)
    callable_metric = cf.MomentumFlow(tau, metric=lambda w, g: jax.tree_util.tree_map(
        jnp.multiply, w, g))
    res = simulate(nmf, callable_metric, p0, X, t1, saveat=2, rtol=RTOL, atol=ATOL)
    for k in p0:
        np.testing.assert_allclose(res.final.params[k], sol.ys[0][k][-1], rtol=1e-6)


def test_loss_function_on_a_nested_pytree_and_state_monitors():
    target = jnp.asarray([1.0, -2.0, 0.5])

    def loss(params):
        w, (a, b) = params["w"], params["ab"]
        return jnp.sum((a * b * w - target) ** 2) / 2

    p0 = {"w": jnp.ones(3), "ab": (jnp.asarray(0.7), jnp.asarray(1.2))}

    def residual(p, v, t):  # along gradient flow the velocity is −∇L
        g = jax.grad(loss)(p)
        return sum(jnp.sum((vi + gi) ** 2) for vi, gi in zip(jax.tree_util.tree_leaves(v),
                                                               jax.tree_util.tree_leaves(g)))

    res = simulate(loss, "gradient", p0, None, 1.0, saveat=[0.0, 0.5, 1.0],
                   monitors=[residual, lambda p: p["ab"][0], Monitor(
                       "time", lambda p, v, t: t, needs_state=True)])
    assert list(res.values) == ["residual", "law", "time"]
    assert np.max(res.values["residual"]) < 1e-20
    np.testing.assert_allclose(res.values["time"], [0.0, 0.5, 1.0])
    assert res.loss[-1] < res.loss[0]
    assert jax.tree_util.tree_structure(res.final.params) == jax.tree_util.tree_structure(
        jax.tree_util.tree_map(jnp.asarray, p0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(flow="warp"), "unknown flow"),
    (dict(flow="nesterov", t0=0.0), "t0 > 0"),
    (dict(flow="gradient", t1=-1.0), "t0 < t1"),
    (dict(flow="gradient", tau=0.5), "tau applies"),
    (dict(flow="gradient", solver="euler"), "unknown solver"),
    (dict(flow="gradient", saveat=1), "saveat"),
    (dict(flow="gradient", rtol=0.0), "rtol"),
])
def test_bad_setup_raises_input_error(lin, kwargs, message):
    model, data, p0, _ = lin
    kwargs = {"t1": 1.0, **kwargs}
    flow = kwargs.pop("flow")
    t1 = kwargs.pop("t1")
    with pytest.raises(InputError, match=message):
        simulate(model, flow, p0, data, t1, **kwargs)


def test_bad_states_raise_input_error(lin):
    model, data, p0, v0 = lin
    with pytest.raises(InputError, match="data is required"):
        simulate(model, "gradient", p0, None, 1.0)
    with pytest.raises(InputError, match="shape"):
        simulate(model, "gradient", {**p0, "U": jnp.zeros((2, 2))}, data, 1.0)
    with pytest.raises(InputError, match="velocity0 applies"):
        simulate(model, "gradient", p0, data, 1.0, velocity0=v0)
    with pytest.raises(InputError, match="positive"):
        simulate(model, "mirror", p0, data, 1.0)  # factorisation has no positive block
    nmf = cf.nmf(2, 2, 2)
    q0 = problem.init_params(nmf, 0)
    X = jnp.ones((2, 2))
    with pytest.raises(InputError, match="θ0 > 0"):
        simulate(nmf, "mirror", {**q0, "U": -q0["U"]}, X, 1.0)
    with pytest.raises(InputError, match="w0"):
        simulate(nmf, MomentumFlow(0.0, "entropy"), q0, X, 1.0)
    with pytest.raises(InputError, match="no forward function"):
        simulate(cf.custom(lambda p: p["a"] * p["b"], {"a": 1.0, "b": 1.0}), "gradient",
                 {"a": 1.0, "b": 1.0}, (jnp.ones((2, 1)), jnp.ones((2, 1))), 1.0)


def _fake_result(values, distance, scale=1.0, error=None):
    class R:
        pass
    r = R()
    r.times = np.linspace(0, 1, len(distance))
    r.values, r.distance, r.scale, r.error = values, np.asarray(distance), scale, error
    r.loss = np.linspace(1.0, 0.5, len(distance))
    r.flow = "fake"
    return r


def test_drift_report_floor_scales_and_unmoved_trajectories():
    T = 5
    values = {
        "known": np.full(T, 2.0) + np.array([0, 1e-9, -1e-9, 2e-9, 0]),
        "good": np.full((T, 2), 3.0) + 1e-9,
        "bad": np.array([1.0, 1.1, 1.2, 1.3, 1.4]),
        "zero": np.array([0.0, 1e-6, 2e-6, 0.0, 0.0]),
    }
    values["good"][0] = 3.0
    rep = drift.drift_report(_fake_result(values, [0, 0.1, 0.2, 0.3, 0.4], scale=2.0),
                             reference="known")
    assert rep.moved and rep.displacement == pytest.approx(0.2)
    assert rep.reference_floor == pytest.approx(1e-9)
    assert rep.laws["known"].verdict == "reference"
    assert rep.laws["good"].verdict == "conserved"
    assert rep.laws["bad"].verdict == "drifts"
    assert rep.laws["bad"].max_relative == pytest.approx(0.4)
    zero = rep.laws["zero"]  # h(0) = 0: relative to ‖θ(0)‖² = 4
    assert zero.scale_kind == "‖θ(0)‖²" and zero.max_relative == pytest.approx(2e-6 / 4)
    # a law's own error estimate beats the reference floor (here a poorly conditioned one)
    err = {"bad": np.full(T, 0.1), "good": np.full(T, 1e-12)}
    values2 = {**values, "known": np.array([1e-9, 2e-9, 1e-9, 1e-9, 1e-9])}
    rep2 = drift.drift_report(_fake_result(values2, [0, 0.1, 0.2, 0.3, 0.4], error=err),
                              reference="known")
    assert rep2.reference_floor == pytest.approx(1.0)
    assert rep2.laws["good"].verdict == "drifts"  # 3.3e-10 > 10 × its error 3.3e-13
    assert rep2.laws["bad"].verdict == "conserved"  # 0.4 ≤ 10 × its error 0.1
    still = drift.drift_report(_fake_result(values, np.zeros(T)), reference="known")
    assert not still.moved and still.laws["bad"].verdict == "not moved"
    assert "did NOT move" in still.summary()
    with pytest.raises(InputError, match="no monitor"):
        drift.drift_report(_fake_result(values, np.zeros(T)), reference="nope")
    assert drift.loglog_slope([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    with pytest.raises(InputError):
        drift.loglog_slope([1, 2], [0, 0])


def test_plots_write_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    from conflow.training import plots

    T = 6
    values = {"a": np.linspace(1, 1.1, T), "b": np.full(T, 1.0) + np.arange(T) * 1e-12}
    rep = drift.drift_report(_fake_result(values, np.linspace(0, 1, T),
                                          error={"a": np.full(T, 1e-9), "b": np.full(T, 1e-9)}))
    f1 = tmp_path / "drift.png"
    plots.plot_drift({"run 1": rep, "run 2": rep}, path=str(f1))
    plots.plot_drift(rep, path=str(tmp_path / "single.png"))
    f2 = tmp_path / "slope.png"
    plots.plot_drift_vs_step([0.01, 0.02, 0.04], {"h": [1e-4, 4e-4, 1.6e-3]}, path=str(f2))
    for f in (f1, f2, tmp_path / "single.png"):
        assert f.stat().st_size > 5000 and f.read_bytes()[:4] == b"\x89PNG"


def test_cli_simulate_continuous_json(capsys):
    assert main(["simulate", "factorization", "2,2,3", "--t1", "3", "--json", "--no-progress",
                 "--flow", "momentum", "--tau", "0.5", "--velocity-scale", "0.3",
                 "--saves", "11"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "continuous" and out["flow"] == "heavy-ball(τ=0.5)"
    laws = out["drift"]["laws"]
    assert laws["momentum_laws"]["max_relative"] < 1e-5
    assert laws["gf_laws"]["verdict"] == "drifts" and out["drift"]["moved"]
    assert out["drift"]["reference"] == "momentum_laws"
    assert laws["momentum_laws"]["verdict"] == "conserved"  # against its error estimate


def test_cli_simulate_sweep_slope_and_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    fig = tmp_path / "sweep.png"
    assert main(["simulate", "factorization", "2,2,3", "--optimizer", "sgd", "--sweep-lr",
                 "0.001,0.002,0.004", "--steps", "20", "--every", "5", "--json", "--no-progress",
                 "--plot", str(fig)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "discrete" and out["sweep"]["steps"] == [20, 20, 20]
    assert 1.8 < out["sweep"]["slopes"]["gf_laws"] < 2.2  # MATH.md §5: slope 2 per step
    assert fig.stat().st_size > 5000


def test_cli_simulate_human_output_and_errors(capsys):
    assert main(["simulate", "nmf", "2,2,3", "--optimizer", "mirror", "--lr", "0.1", "--steps",
                 "40", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mirror_laws" in out and "trajectory moved" in out
    for argv, msg in [
        (["simulate", "factorization", "2,2,2", "--optimizer", "mirror"], "positive blocks"),
        (["simulate", "factorization", "2,2,2", "--lr", "0.1"], "--optimizer runs only"),
        (["simulate", "factorization", "2,2,2", "--optimizer", "sgd", "--flow", "momentum"],
         "continuous flows"),
        (["simulate", "factorization", "2,2,2", "--optimizer", "sgd", "--sweep-lr", "0.1"],
         "at least two"),
        (["simulate", "warp", "2,2,2"], "unknown model"),
        (["simulate", "factorization", "2,2,2", "--steps", "5", "--t1", "1"], "not allowed"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("conflow: error:") and msg in err, (argv, err)
