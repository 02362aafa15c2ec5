"""`verify_law`: true laws verified, perturbed laws rejected with the breaking generator named,
the inconclusive band, independence / completeness, and the RK4 simulation check."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.cli.main import main
from conflow.errors import InputError
from conflow.flows import GradientFlow, MomentumFlow
from conflow.laws.find import generator_evaluator
from conflow.laws.verify import (
    CONSERVED,
    INCONCLUSIVE,
    NOT_CONSERVED,
    check_complete,
    gradient_rank,
    verify_law,
)

LIN = cf.linear([2, 3, 2])
BAL = "(U1.T @ U1 - U2 @ U2.T)"

TRUE_LAWS = [
    (LIN, GradientFlow(), f"{BAL}[0,1]"),
    (LIN, GradientFlow(), f"trace({BAL})"),
    (cf.relu([2, 3, 2], bias=True), GradientFlow(), "sum(W1[1,:]**2) + b1[1]**2 - sum(W2[:,1]**2)"),
    (cf.nmf(2, 3, 2), GradientFlow("entropy"), "sum(U[:,2]) - sum(V[2,:])"),
    (cf.icnn(2, 2, 2, bias=True), GradientFlow("entropy"),
     "sum(U[:,0]) - 0.5*(sum(V[0,:]**2) + b[0]**2)"),
    (cf.product(4), GradientFlow(), "x[0]**2 - x[3]**2"),
    (cf.linear([2, 2, 2]), MomentumFlow(1.0),
     "exp(t) * ((U1.T @ dU1 - dU1.T @ U1) + (U2 @ dU2.T - dU2 @ U2.T))[0,1]"),
    (cf.linear([2, 2, 2]), MomentumFlow(1.0),
     "s * ((U1.T @ dU1 - dU1.T @ U1) + (U2 @ dU2.T - dU2 @ U2.T))[0,1]"),
    (cf.linear([2, 2, 2]), MomentumFlow("nesterov"),
     "t**3 * ((U1.T @ dU1 - dU1.T @ U1) + (U2 @ dU2.T - dU2 @ U2.T))[0,1]"),
    (cf.linear([2, 2, 2]), MomentumFlow(0.0),
     "((U1.T @ dU1 - dU1.T @ U1) + (U2 @ dU2.T - dU2 @ U2.T))[0,1]"),
]


@pytest.mark.parametrize("model, flow, text", TRUE_LAWS,
                         ids=[f"{m.label}-{f.name}-{i}" for i, (m, f, _) in enumerate(TRUE_LAWS)])
def test_true_laws_are_conserved(model, flow, text):
    v = verify_law(model, flow, text, points=16)
    assert v.verdict == CONSERVED, v.reason
    assert v.max_residual < 1e-12 and v.generator is None


def _breaks(model, flow, v):
    """⟨∇h, χ_g⟩ at the reported point, recomputed, relative to its terms."""
    import jax

    from conflow.laws.verify import state_function

    h = state_function(model, flow, v.expression)
    _, _, gens = generator_evaluator(model, flow)
    X = np.asarray(gens(jnp.asarray(v.point)[None]))[0]
    g = np.asarray(jax.grad(h)(jnp.asarray(v.point)))
    terms = g * X[v.generator]
    return abs(terms.sum()) / np.abs(terms).sum()


def test_perturbed_law_is_rejected_and_the_generator_named():
    text = f"{BAL}[0,1] + 1e-3 * U1[1,2]"
    v = verify_law(LIN, None, text, points=16)
    assert v.verdict == NOT_CONSERVED and v.max_residual > 1e-6
    assert v.generator_name == f"χ_{v.generator} = ∇φ[{v.generator}]"
    # φ = vec(U1 U2) row-major: only φ[1,k] (indices 2, 3) depend on U1[1,2]
    assert v.generator in (2, 3)
    assert _breaks(LIN, GradientFlow(), v) == pytest.approx(v.max_residual, rel=1e-9)
    assert v.point.shape == (LIN.D,) and v.n_breaking > 0
    assert "broken by χ_" in v.summary(LIN.param_names)


def test_momentum_law_without_its_time_factor_is_broken_by_the_drift():
    flow = MomentumFlow(1.0)
    model = cf.linear([2, 2, 2])
    v = verify_law(model, flow, "((U1.T @ dU1 - dU1.T @ U1) + (U2 @ dU2.T - dU2 @ U2.T))[0,1]",
                   points=16)
    assert v.verdict == NOT_CONSERVED and v.generator == 0
    assert v.generator_name == "χ_0 (drift)"
    # and a GF law is broken under momentum, by a force this time or the drift
    w = verify_law(model, flow, f"{BAL}[0,0]", points=16)
    assert w.verdict == NOT_CONSERVED


def test_relu_perturbed_bias_term_is_rejected():
    model = cf.relu([2, 3, 2], bias=True)
    v = verify_law(model, None, "sum(W1[1,:]**2) + 2*b1[1]**2 - sum(W2[:,1]**2)", points=16)
    assert v.verdict == NOT_CONSERVED and "∇φ" in v.generator_name


def test_inconclusive_band_and_constant_h():
    v = verify_law(LIN, None, f"{BAL}[0,1] + 1e-8 * U1[1,2]**3", points=16)
    assert v.verdict == INCONCLUSIVE and 1e-9 < v.max_residual < 1e-6
    c = verify_law(LIN, None, "U1[0,0] - U1[0,0] + 3", points=4)
    assert c.verdict == CONSERVED and "constant" in c.reason


def test_callable_forms_of_h():
    """h is written on the model's own parameters: the dict of named blocks (built-in models),
    h(t, params, velocity) for momentum flows; h(z) on the flat state with ``state=True``."""
    h = lambda p: (p["U1"].T @ p["U1"] - p["U2"] @ p["U2"].T)[0, 0]  # noqa: E731
    assert verify_law(LIN, None, h, points=8).verdict == CONSERVED
    flat = lambda th: h(LIN.unflatten(th))  # noqa: E731
    assert verify_law(LIN, None, flat, points=8, state=True).verdict == CONSERVED
    model, flow = cf.linear([2, 2, 2]), MomentumFlow(0.5)

    def hm(t, p, q):  # h(t, params, velocity) with the real time t
        m = p["U1"].T @ q["U1"] + p["U2"] @ q["U2"].T
        return jnp.exp(0.5 * t) * (m - m.T)[0, 1]

    assert verify_law(model, flow, hm, points=8).verdict == CONSERVED
    assert verify_law(model, flow, lambda t, p, q: hm(0.0, p, q), points=8).verdict == \
        NOT_CONSERVED
    with pytest.raises(InputError, match="scalar"):
        verify_law(LIN, None, lambda p: p["U1"], points=4)
    with pytest.raises(InputError, match="cannot evaluate h"):
        verify_law(LIN, None, lambda p: p["W1"][0, 0], points=4)  # no such block


def test_h_on_a_custom_pytree_and_on_modules():
    """The issue's examples: h on cf.custom's params dict, on an Equinox module, on an NNX
    module, and a `Law` called on the parameters and used as a monitor."""
    model = cf.custom(lambda p: jnp.stack([p["x"][0] * p["x"][1], p["x"][2]]), {"x": np.ones(3)})
    assert verify_law(model, None, lambda p: p["x"][0] ** 2 - p["x"][1] ** 2).verdict == CONSERVED
    assert verify_law(model, None, lambda p: p["x"][2]).verdict == NOT_CONSERVED
    eqx = pytest.importorskip("equinox")
    net = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.relu, key=jax.random.PRNGKey(0))
    sampled = cf.from_model(net, input_shape=(3,), n_inputs=64)
    neuron = lambda m: (jnp.sum(m.layers[0].weight[0] ** 2) + m.layers[0].bias[0] ** 2  # noqa: E731
                        - jnp.sum(m.layers[1].weight[:, 0] ** 2))
    assert verify_law(sampled, None, neuron).verdict == CONSERVED
    assert verify_law(sampled, None, lambda m: jnp.sum(m.layers[0].weight[0] ** 2)).verdict == \
        NOT_CONSERVED
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1, self.l2 = nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    sampled = cf.from_model(Net(nnx.Rngs(0)), input_shape=(3,), n_inputs=64)
    neuron = lambda m: (jnp.sum(m.l1.kernel[:, 0] ** 2) + m.l1.bias[0] ** 2  # noqa: E731
                        - jnp.sum(m.l2.kernel[0] ** 2))
    assert verify_law(sampled, None, neuron).verdict == CONSERVED


def test_a_found_law_is_called_on_the_parameters():
    basis = cf.polynomial_laws(LIN, None, 2, count=False)
    law = basis.laws[0]
    theta = LIN.sample_points(0, 1)[0]
    params = LIN.to_pytree(theta)
    assert float(law(params)) == pytest.approx(float(law.fn(theta)), abs=1e-14)
    model, flow = cf.factorization(2, 2, 2), MomentumFlow(1.0)
    mlaw = cf.polynomial_laws(model, flow, 3, count=False).laws[0]
    z = flow.sample_points(model, 0, 1)[0]
    t = float(jnp.log(z[0]))  # s = exp(τt), τ = 1
    got = mlaw(t, model.to_pytree(z[1:9]), model.to_pytree(z[9:]))
    assert float(got) == pytest.approx(float(mlaw.fn(z)), rel=1e-12)
    with pytest.raises(InputError, match="takes"):
        law(params, params)


def test_laws_found_by_the_search_are_verified():
    basis = cf.polynomial_laws(cf.icnn(2, 2, 1, bias=True), GradientFlow("entropy"), 2,
                               count=False)
    for law in basis.laws:
        assert verify_law(cf.icnn(2, 2, 1, bias=True), GradientFlow("entropy"), law,
                          points=8).verdict == CONSERVED


def test_independence_and_completeness():
    basis = cf.polynomial_laws(LIN, None, 2, count=False)
    five = list(basis.laws[:5])
    v = verify_law(LIN, None, basis.laws[5], known=five, points=8)
    assert v.independent is True and v.rank_known == 5 and v.rank_with_h == 6
    assert v.n_count == 6 and v.complete is True
    dep = verify_law(LIN, None, f"{BAL}[0,0] + 2*{BAL}[1,2]", known=basis, count=False, points=8)
    assert dep.verdict == CONSERVED and dep.independent is False
    # functionally dependent, not linearly: a product of laws adds nothing either
    prod = verify_law(LIN, None, f"{BAL}[0,0] * {BAL}[1,1]", known=basis, count=False, points=8)
    assert prod.verdict == CONSERVED and prod.independent is False
    c = check_complete(LIN, None, five)
    assert (c.n_independent, c.n_count, c.complete) == (5, 6, False)
    assert gradient_rank(LIN, None, [law.fn for law in basis.laws]) == 6


def test_simulation_separates_true_and_false_laws():
    model = cf.linear([2, 2, 2])
    true = verify_law(model, None, f"{BAL}[0,1]", points=4, empirical=True, inits=1, steps=40,
                      reference=f"{BAL}[0,0]")
    false = verify_law(model, None, f"{BAL}[0,1] + 0.05 * U1[0,0]**2", points=4,
                       empirical=True, inits=1, steps=40)
    assert true.empirical.verdict == CONSERVED, true.empirical.summary()
    assert false.empirical.verdict == NOT_CONSERVED, false.empirical.summary()
    assert {r.loss for r in true.empirical.runs} == {"square", "cross_entropy"}
    for t, f in zip(true.empirical.runs, false.empirical.runs):
        assert t.moved > 0.05 and f.moved > 0.05  # the trajectory actually moved
        assert t.drift[1] < t.drift[0] / 4  # a true law's drift falls with the step (RK4: ~16×)
        assert f.drift[1] > 0.5 * f.drift[0] and f.drift[1] > 1e3 * f.integrator_error
        assert t.reference_drift is not None and t.reference_drift[1] < 1e-6


def test_simulation_momentum():
    model, flow = cf.linear([2, 2, 2]), MomentumFlow(1.0)
    law = "s * ((U1.T @ dU1 - dU1.T @ U1) + (U2 @ dU2.T - dU2 @ U2.T))[0,1]"
    v = verify_law(model, flow, law, points=4, empirical=True, inits=1, steps=40,
                   losses=("square",))
    assert v.empirical.verdict == CONSERVED, v.empirical.summary()
    w = verify_law(model, flow, law.replace("s * ", ""), points=4, empirical=True, inits=1,
                   steps=40, losses=("square",))
    assert w.empirical.verdict == NOT_CONSERVED, w.empirical.summary()


def test_cli_verify_exit_codes_and_report(capsys):
    assert main(["verify", "linear", "2,3,2", "--law", f"{BAL}[0,1]"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("CONSERVED")
    assert "independent of the 6 known independent laws: no" in out
    assert main(["verify", "linear", "2,3,2", "--law", "sum(U1[:,0]) - sum(U2[0,:])",
                 "--no-known"]) == 1
    out = capsys.readouterr().out
    assert "NOT CONSERVED" in out and "broken by χ_" in out and "U1[0,0]=" in out
    assert main(["verify", "linear", "2,3,2", "--law", "U1[0,0]", "--points", "0"]) == 2
