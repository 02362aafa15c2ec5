"""Weight decay θ' + λ(t)θ = −∇L (MATH.md §2.10): blind counts against P3's theorem (the laws are
the decay-free laws at e^{Λ(t)}θ, so the count is the decay-free count, for models with
W(cθ) = W(θ)), the time-dependent laws found, verified and integrated, and bad input."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.cli.main import main
from conflow.errors import InputError
from conflow.flows import GradientFlow, MomentumFlow
from conflow.reference import closed_forms
from conflow.training.monitors import decay_integral, rescaled_law


def decay_of_time(t):
    """λ(t) = 1/(1 + t): Λ(t) = log(1 + t), e^{2Λ} = (1 + t)²."""
    return 1.0 / (1.0 + t)


def custom_product():
    """A model given as code: φ = U V (2 × 2 each), homogeneous."""
    return cf.custom(lambda p: (p["U"] @ p["V"]).ravel(),
                     {"U": jnp.zeros((2, 2)), "V": jnp.zeros((2, 2))})


# (model, engine) — the decay-free count is computed here too, never written down
CASES = [
    (lambda: cf.linear([2, 2, 2]), "auto"),
    (lambda: cf.relu([2, 2, 2], bias=True), "auto"),
    (custom_product, "auto"),
]


@pytest.mark.parametrize("make, method", CASES, ids=["linear", "relu-bias", "custom"])
def test_count_equals_decay_free_count(make, method):
    model = make()
    plain = cf.count_laws(model, GradientFlow(), method=method)
    constant = cf.count_laws(model, GradientFlow(weight_decay=0.3), method=method)
    varying = cf.count_laws(model, GradientFlow(weight_decay=decay_of_time))
    for r in (plain, constant, varying):
        assert r.status == "ok", r.summary()
    assert constant.state_dim == varying.state_dim == model.D + 1
    assert plain.n_laws > 0
    assert constant.n_laws == varying.n_laws == plain.n_laws
    assert varying.method == "numeric"  # a function λ(t) has no polynomial form


def test_count_is_blind_for_a_model_outside_the_theorem():
    """φ = a + b² is not homogeneous (W(cθ) ≠ W(θ)): gradient flow has 1 law (a − log|b|/2),
    weight decay none — P3's "exactly" needs W(e^Λθ) = W(θ), and the count is not told."""
    model = cf.custom(lambda p: jnp.stack([p["a"] + p["b"] ** 2]),
                      {"a": jnp.zeros(()), "b": jnp.zeros(())})
    assert cf.count_laws(model, GradientFlow()).n_laws == 1
    r = cf.count_laws(model, GradientFlow(weight_decay=0.5), method="both")
    assert r.status == "ok" and r.n_laws == 0, r.summary()


def test_momentum_with_weight_decay_keeps_the_noether_laws():
    """θ'' + τθ' + λθ = −∇L: ⟨θ, Kθ⟩ = 0 for the rotations K, so e^{τt}⟨θ', Kθ⟩ survives."""
    model = cf.linear([2, 3, 2])
    for damping in (1.0, "nesterov"):
        r = cf.count_laws(model, MomentumFlow(damping, weight_decay=0.5), method="exact")
        assert r.status == "ok", r.summary()
        assert r.n_laws == cf.count_laws(model, MomentumFlow(damping), method="exact").n_laws
    laws = closed_forms.closed_form_laws(model, MomentumFlow(1.0))  # e^{τt}Antisym(U1ᵀU1' + …)
    v = cf.verify_law(model, MomentumFlow(1.0, weight_decay=decay_of_time),  # drift −λ(t)θ
                      lambda z: jnp.sum(laws(z) * jnp.arange(1.0, 4.0)), state=True, points=8)
    assert v.verdict == "conserved", v.summary()


def test_polynomial_laws_in_the_rescaled_form():
    model = cf.factorization(2, 2, 2)
    flow = GradientFlow(weight_decay=0.5)
    basis = cf.polynomial_laws(model, flow, 4)
    assert basis.status == "ok" and basis.complete, basis.summary()
    assert basis.n_laws == basis.n_count == 3
    assert [f.family for f in basis.families] == ["s²·(UᵀU − VᵀV)"]
    text = basis.summary()
    assert "s = exp(λ t)" in text and "λ=0.5" in text
    assert basis.to_json()["weight_decay"] == 0.5
    law = basis.laws[0]
    rng = np.random.default_rng(0)
    params = {"U": rng.standard_normal((2, 2)), "V": rng.standard_normal((2, 2))}
    gram = params["U"].T @ params["U"] - params["V"].T @ params["V"]
    i, j = law.index
    assert np.isclose(float(law(1.3, params)), np.exp(2 * 0.5 * 1.3) * gram[i, j])


def test_verify_time_dependent_laws():
    model = cf.factorization(2, 2, 2)
    constant = GradientFlow(weight_decay=0.5)
    balanced = "s**2*(sum(U**2) - sum(V**2))"
    assert cf.verify_law(model, constant, balanced, points=8).verdict == "conserved"
    broken = cf.verify_law(model, constant, "sum(U**2) - sum(V**2)", points=8)
    assert broken.verdict == "not_conserved" and "weight decay" in broken.generator_name

    varying = GradientFlow(weight_decay=decay_of_time)  # e^{2Λ(t)} = (1 + t)²
    v = cf.verify_law(model, varying, "(1 + t)**2*(sum(U**2) - sum(V**2))", points=8)
    assert v.verdict == "conserved", v.summary()

    def h(t, params):  # a callable law h(t, params)
        return jnp.exp(2 * 0.5 * t) * (jnp.sum(params["U"] ** 2) - jnp.sum(params["V"] ** 2))

    assert cf.verify_law(model, varying, h, points=8).verdict == "not_conserved"


def test_simulate_rescaled_law_holds_while_the_plain_law_decays():
    model = cf.factorization(2, 2, 2)
    rng = np.random.default_rng(1)
    data = (rng.standard_normal((16, 2)), rng.standard_normal((16, 2)))
    theta0 = cf.init_params(model, 0)

    def balancedness(p):
        return jnp.sum(p["U"] ** 2) - jnp.sum(p["V"] ** 2)

    run = cf.simulate(model, "gradient", theta0, data, t1=2.0, weight_decay=0.5, saveat=2,
                      monitors={"plain": balancedness,
                                "rescaled": rescaled_law(balancedness, 0.5)})
    assert run.flow == "gradient+wd(λ=0.5)"
    plain, rescaled = run.values["plain"], run.values["rescaled"]
    assert abs(rescaled[-1] - rescaled[0]) < 1e-6 * abs(rescaled[0])
    assert abs(plain[-1] - plain[0]) > 0.5 * abs(plain[0])  # decays like e^{−2λt}
    assert np.isclose(plain[-1] * np.exp(2.0), rescaled[-1], rtol=1e-9)
    assert np.isclose(float(decay_integral(decay_of_time, 2.0)), np.log(3.0), rtol=1e-12)


def test_discrete_weight_decay_and_its_rescaled_monitor():
    model = cf.factorization(2, 2, 2)
    rng = np.random.default_rng(2)
    data = (rng.standard_normal((16, 2)), rng.standard_normal((16, 2)))
    lr, lam = 0.01, 0.5
    tx, _, label = cf.make_optimizer("sgd", lr, weight_decay=lam)
    assert label == "sgd(lr=0.01)+wd(λ=0.5)"

    def balancedness(p):
        return jnp.sum(p["U"] ** 2) - jnp.sum(p["V"] ** 2)

    res = cf.train(model, tx, cf.init_params(model, 0), data, 200, every=50,
                   monitors={"plain": balancedness,
                             "rescaled": rescaled_law(balancedness, lam, lr=lr)})
    plain, rescaled = res.values["plain"], res.values["rescaled"]
    assert abs(plain[-1] - plain[0]) > 0.5 * abs(plain[0])
    assert abs(rescaled[-1] - rescaled[0]) < 0.05 * abs(rescaled[0])  # GD's own O(lr) drift


def test_flows_hash_and_compare():
    assert GradientFlow(weight_decay=0.0) == GradientFlow()
    assert hash(GradientFlow(weight_decay=0.1)) == hash(GradientFlow(weight_decay=0.1))
    assert GradientFlow(weight_decay=0.1) != GradientFlow()
    assert len({MomentumFlow(1.0, weight_decay=decay_of_time),
                MomentumFlow(1.0, weight_decay=decay_of_time)}) == 1
    assert GradientFlow(weight_decay=0.2).label == "gradient+wd(λ=0.2)"
    assert not GradientFlow(weight_decay=decay_of_time).is_polynomial


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "abc", True,
                                 lambda t: -1.0 + 0 * t, lambda t: jnp.ones(2)])
def test_bad_weight_decay(bad):
    with pytest.raises(InputError):
        GradientFlow(weight_decay=bad)
    with pytest.raises(InputError):
        MomentumFlow(1.0, weight_decay=bad)


def test_cli_weight_decay(capsys):
    assert main(["count", "linear", "2,2,2", "--weight-decay", "0.25", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["state_dim"] == 9 and out["n_laws"] == 3 and out["status"] == "ok"
    assert main(["verify", "factorization", "1,2,1", "--weight-decay", "0.25", "--no-known",
                 "--law", "s**2*(sum(U**2) - sum(V**2))", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "conserved" and out["weight_decay"] == 0.25
    for value in ("-1", "nan", "inf"):
        assert main(["count", "linear", "2,2,2", "--weight-decay", value]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--weight-decay" in err
