"""Momentum and mirror flows: blind counts against MATH.md §3, §4 and §8 (the expected numbers
live only here), the closed-form laws of `conflow.reference.closed_forms` (∇h ⊥ every generator,
drift included; conserved along an ODE solution), bad input, and ``reproduce --paper momentum``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_generator_cosine

import conflow as cf
from conflow.errors import InputError
from conflow.flows import GradientFlow, MomentumFlow
from conflow.reference import closed_forms, reproduce

DAMPINGS = [0.0, 1.0, "nesterov"]  # MATH.md §8: counts hold for τ = 0, τ > 0 and Nesterov
DAMPING_IDS = ["tau0", "tau1", "nesterov"]

# MATH.md §8, MF column (Euclidean momentum). (row, model, expected laws)
MF_ROWS = [
    (1, lambda: cf.product(3), 0),
    (2, lambda: cf.product(5), 0),
    (3, lambda: cf.linear([1, 1, 1]), 0),
    (4, lambda: cf.linear([2, 2, 2]), 1),
    (5, lambda: cf.linear([3, 2, 4]), 1),
    (6, lambda: cf.linear([2, 3, 2]), 3),
    (7, lambda: cf.linear([3, 3, 3]), 3),
    (8, lambda: cf.linear([2, 5, 2]), 10),
    (10, lambda: cf.linear([1, 3, 1]), 6),  # scalar φ: 4r − 6
    (12, lambda: cf.linear([2, 2, 2, 2]), 2),
    (13, lambda: cf.linear([2, 3, 2, 2]), 4),
    (17, lambda: cf.relu([2, 3, 2]), 0),
    (18, lambda: cf.relu([2, 3, 2], bias=True), 0),
    (19, lambda: cf.relu([3, 2, 2, 2]), 0),
    (19, lambda: cf.relu([2, 2, 2, 1]), 0),  # the case §8 row 19 says was checked
]


@pytest.mark.parametrize("damping", DAMPINGS, ids=DAMPING_IDS)
@pytest.mark.parametrize("row, make, expected", MF_ROWS,
                         ids=lambda x: "" if callable(x) else str(x))
def test_momentum_rows_default_method(row, make, expected, damping):
    model = make()
    result = cf.count_laws(model, MomentumFlow(damping))
    assert result.method == "exact"  # auto: the exact engine for momentum of polynomial models
    assert result.state_dim == 2 * model.D + 1
    assert result.status == "ok", result.summary()
    assert result.n_laws == expected, f"MATH.md §8 row {row}: {result.summary()}"
    assert result.flow == ("nesterov" if damping == "nesterov" else "momentum")
    assert result.tau == (None if damping == "nesterov" else damping)


# every damping on each net, except τ = 0 on (1, 3, 1): its depth-5 brackets compile for
# seconds, and τ = 0 is the constant case of τ > 0 (the exact engine checks it in the crosscheck)
SMALL_LINEAR = [pytest.param(dims, expected, damping, id=f"{dims}-{expected}-{name}")
                for dims, expected in [((1, 1, 1), 0), ((2, 2, 2), 1), ((2, 3, 2), 3),
                                       ((1, 3, 1), 6)]
                for damping, name in zip(DAMPINGS, DAMPING_IDS)
                if (dims, name) != ((1, 3, 1), "tau0")]


@pytest.mark.parametrize("dims, expected, damping", SMALL_LINEAR)
def test_small_linear_momentum_numeric_engine(dims, expected, damping):
    result = cf.count_laws(cf.linear(dims), MomentumFlow(damping), method="numeric")
    assert result.method == "numeric"
    assert result.status == "ok" and result.n_laws == expected, result.summary()
    assert result.n_agree == result.points == 3


# MATH.md §8 rows 21, 22 (NMF) and 24 (ICNN), entropy metric. (model, GF laws, MF laws or None)
MIRROR_ROWS = [
    (lambda: cf.nmf(2, 2, 2), 2, 0),  # row 21
    (lambda: cf.nmf(2, 5, 2), 5, 0),  # row 22
    (lambda: cf.icnn(2, 2, 2), 2, None),  # row 24 (GF only in §8)
    (lambda: cf.icnn(2, 3, 2, bias=True), 3, 0),  # §4.4: n2 GF laws, none with momentum
]


@pytest.mark.parametrize("make, gf, mf", MIRROR_ROWS, ids=["row21", "row22", "row24", "icnn+b"])
def test_mirror_rows(make, gf, mf):
    model = make()
    result = cf.count_laws(model, GradientFlow("entropy"))
    assert result.status == "ok" and result.n_laws == gf, result.summary()
    if mf is None:
        return
    for damping in DAMPINGS:
        result = cf.count_laws(model, MomentumFlow(damping, metric="entropy"))
        assert result.metric == "entropy"
        assert result.status == "ok" and result.n_laws == mf, result.summary()


# ---------------------------------------------------------------- closed-form laws
# ∇h ⊥ every generator (the drift included) at generic states (s, θ, v): `max_generator_cosine`.


LINEAR_LAW_MODELS = [(2, 3, 2), (1, 3, 1), (2, 5, 2), (3, 2, 4), (2, 3, 2, 2), (1, 2, 1, 2),
                     (2, 1, 3, 1)]


@pytest.mark.parametrize("damping", [0.0, 0.73, "nesterov"], ids=["tau0", "tau0.73", "nesterov"])
@pytest.mark.parametrize("dims", LINEAR_LAW_MODELS, ids=str)
def test_linear_momentum_laws_orthogonal_to_every_generator(dims, damping):
    model, flow = cf.linear(dims), MomentumFlow(damping)
    laws = closed_forms.closed_form_laws(model, flow)
    assert max_generator_cosine(laws, model, flow) < 1e-12


def test_factorization_momentum_laws_orthogonal():
    model, flow = cf.factorization(2, 3, 2), MomentumFlow(0.5)
    assert max_generator_cosine(closed_forms.closed_form_laws(model, flow), model, flow) < 1e-12
    assert closed_forms.known_count(model, flow) == 3


def test_wrong_sign_or_wrong_time_factor_is_not_a_law():
    # Antisym(U_iᵀV_i − U_{i+1}V_{i+1}ᵀ) (minus sign) is not conserved; neither is the τ = 0 form
    # at τ > 0, nor the τ > 0 form (factor s) under Nesterov (factor t³).
    model = cf.linear([2, 3, 2])
    D = model.D

    def minus_sign(z, flow):
        s, theta, v = z[0], z[1 : D + 1], z[D + 1 :]
        (u1, u2), (v1, v2) = model.unflatten(theta).values(), model.unflatten(v).values()
        m = u1.T @ v1 - u2 @ v2.T
        return closed_forms.time_factor(s, flow) * (m - m.T)[np.triu_indices(3, 1)]

    flow = MomentumFlow(0.7)
    assert max_generator_cosine(lambda z: minus_sign(z, flow), model, flow) > 1e-2
    no_factor = closed_forms.closed_form_laws(model, MomentumFlow(0.0))
    assert max_generator_cosine(no_factor, model, flow) > 1e-2
    nesterov_with_s = closed_forms.closed_form_laws(model, MomentumFlow(0.7))
    assert max_generator_cosine(nesterov_with_s, model, MomentumFlow("nesterov")) > 1e-2


@pytest.mark.parametrize("model", [cf.nmf(2, 3, 2), cf.nmf(1, 3, 1), cf.nmf(3, 4, 1),
                                   cf.icnn(2, 2, 2), cf.icnn(2, 3, 2, bias=True)],
                         ids=lambda m: m.label)
def test_mirror_gradient_laws_orthogonal_to_every_generator(model):
    flow = GradientFlow("entropy")
    assert max_generator_cosine(closed_forms.closed_form_laws(model, flow), model, flow) < 1e-12


@pytest.mark.parametrize("model, damping", [(cf.nmf(2, 3, 2), 0.7), (cf.icnn(2, 2, 2, bias=True),
                                                                       "nesterov")],
                         ids=["nmf", "icnn"])
def test_mirror_gradient_laws_are_not_momentum_laws(model, damping):
    # MATH.md §3.4: no law survives momentum; the GF laws in phase space fail on the drift/forces.
    gf_laws = closed_forms.closed_form_laws(model, GradientFlow("entropy"))
    flow = MomentumFlow(damping, metric="entropy")
    D = model.D
    assert max_generator_cosine(lambda z: gf_laws(z[1 : D + 1]), model, flow) > 1e-2


@pytest.mark.parametrize(
    "dims, expected",
    [((2, 2, 2), 1), ((2, 3, 2), 3), ((3, 3, 3), 3), ((2, 5, 2), 10), ((1, 3, 1), 6),
     ((2, 2, 2, 2), 2), ((2, 3, 2, 2), 4), ((1, 1, 1), 0), ((3, 2, 4), 1)],
    ids=str,
)
def test_known_momentum_counts_match_math(dims, expected):
    model = cf.linear(dims)
    for damping in DAMPINGS:
        assert closed_forms.known_count(model, MomentumFlow(damping)) == expected


def test_known_count_saturates_for_wide_layers():
    # MATH.md §3.4: [n, r, m] with r > 2p (p = n + m) has 2pr − p(2p+1) laws, not r(r−1)/2.
    model, flow = cf.linear([2, 8, 1]), MomentumFlow(0.0)
    p, r = 3, 8
    assert closed_forms.known_count(model, flow) == 2 * p * r - p * (2 * p + 1) == 27
    assert r * (r - 1) // 2 == 28
    assert cf.count_laws(model, flow).n_laws == 27


@pytest.mark.parametrize("dims, expected, math_count", [((1, 2, 1, 2), 2, 1), ((1, 1, 3, 1), 6, 3),
                                                         ((2, 1, 2, 1), 2, 1)], ids=str)
def test_scalar_factor_inside_deep_nets(dims, expected, math_count):
    # A hidden layer between two width-1 layers is a scalar factor ⟨u, w⟩: O(r) × O(r) on
    # a = u + w, b = u − w adds laws that MATH.md §3.4's deep-net formula does not list.
    model = cf.linear(dims)
    for damping in DAMPINGS:
        flow = MomentumFlow(damping)
        assert cf.count_laws(model, flow).n_laws == expected
        assert closed_forms.known_count(model, flow) == expected
        assert closed_forms.known_count(model, flow, deep_scalar_factors=False) == math_count
    known, note = reproduce._momentum_known(model, MomentumFlow(0.0))
    assert known == expected and "closed forms incomplete" in note


def test_momentum_law_is_conserved_along_an_ode_solution():
    # θ'' + τ(t)θ' = −∇E, RK4, random square-loss data: h = e^{∫τ}·Antisym(…) stays constant.
    model = cf.linear([2, 3, 2])
    D = model.D
    key = jax.random.PRNGKey(0)
    kx, ky, k0, k1 = jax.random.split(key, 4)
    x, y = jax.random.normal(kx, (2, 5)), jax.random.normal(ky, (2, 5))

    def loss(theta):
        return 0.5 * jnp.mean((model.phi(theta).reshape(2, 2) @ x - y) ** 2)

    grad = jax.grad(loss)
    theta0 = 0.5 * jax.random.normal(k0, (D,))
    v0 = 0.5 * jax.random.normal(k1, (D,))
    for damping in (0.7, "nesterov"):
        flow = MomentumFlow(damping)
        laws = closed_forms.closed_form_laws(model, flow)
        t0 = 1.0

        def rhs(t, y):
            theta, v = y[:D], y[D:]
            rate = 3.0 / t if damping == "nesterov" else damping
            return jnp.concatenate([v, -rate * v - grad(theta)])

        def step(i, y, h=1e-3):
            t = t0 + i * h
            k1_ = rhs(t, y)
            k2_ = rhs(t + h / 2, y + h / 2 * k1_)
            k3_ = rhs(t + h / 2, y + h / 2 * k2_)
            k4_ = rhs(t + h, y + h * k3_)
            return y + h / 6 * (k1_ + 2 * k2_ + 2 * k3_ + k4_)

        def state(t, y):
            s = t if damping == "nesterov" else np.exp(damping * t)
            return jnp.concatenate([jnp.array([s]), y])

        y0 = jnp.concatenate([theta0, v0])
        y1 = jax.lax.fori_loop(0, 1000, step, y0)
        h0, h1 = laws(state(t0, y0)), laws(state(t0 + 1.0, y1))
        assert np.max(np.abs(h1 - h0)) < 1e-8 * max(1.0, float(np.max(np.abs(h0))))
        assert float(np.max(np.abs(y1[:D] - y0[:D]))) > 1e-2  # the parameters did move


# ---------------------------------------------------------------- bad input


def test_bad_momentum_input():
    with pytest.raises(InputError, match=r"damping τ must be finite and >= 0, got -1"):
        MomentumFlow(damping=-1)
    with pytest.raises(InputError, match=r"damping τ must be finite and >= 0, got nan"):
        MomentumFlow(float("nan"))
    with pytest.raises(InputError,
                       match=r"damping must be a number τ >= 0 or 'nesterov', got 'foo'"):
        MomentumFlow("foo")
    with pytest.raises(InputError, match=r"unknown metric 'foo'"):
        MomentumFlow(0.5, metric="foo")
    with pytest.raises(InputError, match=r"entropy metric needs positive parameter blocks; "
                                         r"linear\[2,3,2\] has none"):
        MomentumFlow(0.5, metric="entropy").family(cf.linear([2, 3, 2]))


def test_bad_momentum_points():
    model = cf.linear([2, 2, 2])
    z = np.ones(2 * model.D + 1)
    for t in (0.0, -1.0):
        z[0] = t
        with pytest.raises(InputError, match=r"Nesterov's τ\(t\) = 3/t needs t > 0"):
            MomentumFlow("nesterov").check_point(model, z)
    with pytest.raises(InputError, match=r"a momentum state has shape \(17,\)"):
        MomentumFlow(0.0).check_point(model, np.ones(8))
    nmf = cf.nmf(2, 2, 2)
    z = np.ones(2 * nmf.D + 1)
    MomentumFlow(1.0, "entropy").check_point(nmf, z)  # fine
    z[3] = -0.5  # a mirror coordinate of θ
    with pytest.raises(InputError, match=r"mirror momentum needs θ > 0"):
        MomentumFlow(1.0, "entropy").check_point(nmf, z)
    z = np.ones(2 * nmf.D + 1)
    z[nmf.D + 2] = -5.0  # θ' with τθ + θ' < 0
    with pytest.raises(InputError, match=r"τθ \+ θ' > 0"):
        MomentumFlow(1.0, "entropy").check_point(nmf, z)


# ---------------------------------------------------------------- reproduce --paper momentum


def test_reproduce_momentum_smoke():
    rows = list(reproduce.run("momentum", limit=1))
    names = [p.name for p in reproduce.PROTOCOLS["momentum"]]
    assert names == ["linear-mf", "relu-mf", "nmf-gf", "nmf-mf", "icnn-gf", "icnn-mf"]
    assert len(rows) == reproduce.n_cases("momentum", limit=1) == 3 + 3 + 1 + 3 + 1 + 3
    bad = [reproduce.format_row(r) for r in rows if not r.match]
    assert not bad, "\n".join(bad)
    labels = {r.protocol: [] for r in rows}
    for r in rows:
        labels[r.protocol].append(r.flow_label)
        j = r.to_json()
        assert j["flow"] == r.count.flow and j["tau"] == r.count.tau and j["match"]
    lin = labels["linear-mf"]
    assert lin[0] == "momentum τ=0" and lin[2] == "nesterov"
    assert lin[1].startswith("momentum τ=") and 0.1 < rows[1].count.tau < 2
    assert labels["nmf-gf"] == ["gradient(entropy)"]
    assert labels["icnn-mf"][2] == "nesterov(entropy)"
    assert "momentum(entropy) τ=" in labels["nmf-mf"][1]


def test_reproduce_papers_and_method():
    assert reproduce.PAPERS == ("gradient", "momentum", "transformers", "all")
    assert reproduce.n_cases("gradient") == 5 + 50 + 50  # the gradient paper is unchanged
    assert reproduce.n_cases("momentum") == 4 * 20 * 3 + 2 * 20
    assert reproduce.n_cases("all") == sum(reproduce.n_cases(p)
                                           for p in ("gradient", "momentum", "transformers"))
    rows = list(reproduce.run("momentum", limit=1, method="exact"))
    assert all(r.count.method == "exact" and r.match for r in rows)
    with pytest.raises(InputError, match="unknown method 'fast'"):
        reproduce.run("momentum", method="fast")
    with pytest.raises(InputError, match="unknown paper 'foo'"):
        reproduce.run("foo")
