"""The sign flow θ' = −sign(∇L) (Adam with β1 = β2 = 0, no ε; MATH.md §2.11): blind counts against
P3's finding for U Vᵀ, the engine's levels (level 1 adds nothing), an independent check of the
sampled span, the piecewise law |u| − |v|, and sign descent / Adam / AdamW runs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import conflow as cf
from conflow.cli.main import main
from conflow.errors import InputError
from conflow.flows import SignFlow


def distinct_lines(model, theta) -> int:
    """The number of distinct lines R·g_j spanned by the nonzero columns g_j = ∂φ/∂θ_j: the
    dimension of W(θ) = span_c sign(J(θ)ᵀc) (derived in `conflow.flows.sign`; the count never
    uses it)."""
    J = np.asarray(jax.jacfwd(model.phi)(jnp.asarray(theta)))
    cols = [g / np.linalg.norm(g) for g in J.T if np.linalg.norm(g) > 1e-12]
    lines: list[np.ndarray] = []
    for g in cols:
        if not any(abs(abs(g @ h) - 1.0) < 1e-9 for h in lines):
            lines.append(g)
    return len(lines)


# factorization(n, r, m), φ = U Vᵀ: P3 (App. R) finds no law except n = m = r = 1 (|U| − |V|).
# The thin cases n = 1 or m = 1 with r ≥ 2 do have laws: there the columns of ∂φ for the entries
# of one row of U (m = 1) or of V (n = 1) are colinear, and the sign fields move them together.
CASES = [
    ((1, 1, 1), 1),  # P3: |U| − |V|
    ((2, 2, 2), 0),  # P3: none
    ((2, 1, 3), 0),  # P3: none
    ((1, 2, 2), 2),  # n = 1, r = 2: m(r − 1) laws, outside P3's statement
]


@pytest.mark.parametrize("dims, expected", CASES, ids=str)
def test_sign_flow_counts_for_uv(dims, expected):
    model = cf.factorization(*dims)
    r = cf.count_laws(model, SignFlow())
    assert r.status == "ok", r.summary()
    assert r.method == "numeric" and r.flow == "sign"
    assert r.n_laws == expected, r.summary()
    # locally constant fields: the brackets vanish, the trace stops after level 1 (or at level
    # 0 when the generators already span R^D)
    if r.depth == 0:
        assert r.dim_lie == model.D
    else:
        assert r.depth == 1 and r.trace.ranks[1] == r.trace.ranks[0]
    # the sampled span is W(θ), whose dimension is the number of distinct column lines of ∂φ
    for z in r.trace.points:
        assert distinct_lines(model, z) == r.dim_lie


def test_sign_flow_on_a_relu_net_matches_the_line_count():
    model = cf.relu([2, 2, 1])
    r = cf.count_laws(model, SignFlow())
    assert r.status == "ok", r.summary()
    assert {distinct_lines(model, z) for z in r.trace.points} == {r.dim_lie}


def test_too_few_samples_overcount_and_the_default_does_not():
    """A family with too few sampled losses misses directions of W(θ) (more laws): the default
    K is what makes the level-0 rank dim W(θ)."""
    model = cf.factorization(2, 2, 2)
    assert cf.count_laws(model, SignFlow(samples=3), escalate=False).n_laws == 8 - 3
    assert SignFlow().n_samples(model) >= 16 * model.D


def test_piecewise_law_and_refusals():
    model = cf.factorization(1, 1, 1)
    assert cf.verify_law(model, SignFlow(), "abs(U[0,0]) - abs(V[0,0])",
                         points=8).verdict == "conserved"
    assert cf.verify_law(model, SignFlow(), "U[0,0]**2 - V[0,0]**2",
                         points=8).verdict == "not_conserved"
    with pytest.raises(InputError, match="piecewise"):
        cf.polynomial_laws(model, SignFlow())
    with pytest.raises(InputError):
        SignFlow().polynomial_fields(model, [])
    for bad in ({"samples": 0}, {"seed": -1}, {"samples": 2.5}):
        with pytest.raises(InputError):
            SignFlow(**bad)
    assert SignFlow() == SignFlow() and hash(SignFlow()) == hash(SignFlow(samples=None))


def test_sign_dynamics_is_minus_the_sign_of_the_gradient():
    model = cf.factorization(2, 1, 2)
    theta = model.sample_points(0, 1)[0]
    c = jnp.asarray([0.3, -1.0, 2.0, 0.5])
    grad = jax.vjp(model.phi, theta)[1](c)[0]
    field = SignFlow().vector_field(model)
    assert np.array_equal(np.asarray(field(theta, c)), -np.sign(np.asarray(grad)))
    dyn = SignFlow().dynamics(lambda p, data: {"w": 2.0 * p["w"] - 1.0}, None)
    out = dyn(0.0, {"w": jnp.asarray([0.2, 0.7, 0.5])}, None)["w"]
    assert np.array_equal(np.asarray(out), [1.0, -1.0, 0.0])


def test_sign_descent_keeps_abs_law_adam_breaks_balancedness():
    """n = m = r = 1: sign descent moves |u| and |v| by the same ±η each step (while no sign
    changes), so |u| − |v| is exact; u² − v² drifts. On U Vᵀ (2, 3, 2) GD with a small step
    nearly keeps UᵀU − VᵀV, Adam and sign descent break it."""
    rng = np.random.default_rng(0)
    scalar = cf.factorization(1, 1, 1)
    data = (rng.standard_normal((8, 1)), 0.2 * rng.standard_normal((8, 1)))
    theta0 = {"U": jnp.asarray([[1.5]]), "V": jnp.asarray([[0.8]])}
    res = cf.train(scalar, cf.sign_descent(0.01), theta0, data, 50, every=50, monitors={
        "abs": lambda p: jnp.abs(p["U"][0, 0]) - jnp.abs(p["V"][0, 0]),
        "square": lambda p: p["U"][0, 0] ** 2 - p["V"][0, 0] ** 2})
    assert res.distance[-1] > 0.1
    assert abs(res.values["abs"][-1] - res.values["abs"][0]) < 1e-12
    assert abs(res.values["square"][-1] - res.values["square"][0]) > 1e-2

    model = cf.factorization(2, 3, 2)
    data = (rng.standard_normal((32, 2)), rng.standard_normal((32, 2)))
    theta0 = cf.init_params(model, 0)

    def balancedness(p):
        return jnp.sum(p["U"] ** 2) - jnp.sum(p["V"] ** 2)

    def drift(tx):  # |Δh| / (‖θ0‖ · ‖θ_T − θ0‖): O(lr) for GD, O(1) for a law broken
        r = cf.train(model, tx, theta0, data, 200, every=200, monitors=balancedness)
        v = r.values["balancedness"]
        return abs(v[-1] - v[0]) / (r.scale * r.distance[-1])

    assert drift(cf.gd(0.01)) < 0.01  # measured 0.002
    assert drift(optax.adam(0.01)) > 0.03  # measured 0.14
    assert drift(cf.make_optimizer("sign", 0.01)[0]) > 0.03  # measured 0.07
    assert cf.make_optimizer("adamw", 0.01, weight_decay=0.1)[2] == "adamw(lr=0.01, λ=0.1)"


def test_cli_sign_flow(capsys):
    assert main(["count", "factorization", "1,1,1", "--flow", "sign", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flow"] == "sign" and out["n_laws"] == 1 and out["status"] == "ok"
    for argv in (["count", "linear", "2,2,2", "--flow", "sign", "--weight-decay", "0.1"],
                 ["count", "nmf", "2,2,2", "--flow", "sign", "--metric", "entropy"],
                 ["laws", "factorization", "1,1,1", "--flow", "sign"],
                 ["simulate", "factorization", "2,2,2", "--optimizer", "adam",
                  "--weight-decay", "0.1"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("conflow: error:")
