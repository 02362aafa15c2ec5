"""`method="auto"` runs the engine its cost estimate says is cheaper, and says which and why.

Decisions only on clear-cut cases (the estimates differ by orders of magnitude there), so no test
depends on the machine's speed; no timed assertion.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.cli.main import main
from conflow.exact import polynomial_form
from conflow.flows import GradientFlow, MomentumFlow, mirror_metric
from conflow.laws import cost
from conflow.laws import count as count_module
from conflow.laws.count import _auto_choice
from conflow.precision import float64


@float64
def auto(model, flow=None):
    return _auto_choice(model, GradientFlow() if flow is None else flow)[:2]


def test_tiny_polynomial_model_is_counted_exactly_and_says_why():
    result = cf.count_laws(cf.linear([2, 3, 2]))
    assert result.method == "exact" and result.status == "ok" and result.n_laws == 6
    assert result.method_reason.startswith("auto: polynomial, 12 monomials, est. ")
    assert result.to_json()["method_reason"] == result.method_reason
    assert f"method: exact ({result.method_reason})" in result.summary()
    # ReLU's path-lifting and momentum flows of small polynomial models too
    assert auto(cf.relu([3, 4, 2], bias=True))[0] == "exact"
    assert auto(cf.linear([2, 8, 1]), MomentumFlow(0.5))[0] == "exact"


def test_large_model_goes_numeric_without_extracting_its_polynomials(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the size gate should have decided before the polynomial form")

    monkeypatch.setattr(count_module, "polynomial_form", refuse)
    for model in (cf.linear([20, 20, 20, 20, 20, 20]), cf.relu([30, 30, 30, 4])):
        method, reason = auto(model)
        assert method == "numeric" and reason.startswith("auto: too large for the exact engine")


def test_exploding_polynomials_stop_at_the_work_limit():
    """A product of eight 10×10 blocks has 10⁷ monomials per output: auto stops building them
    at `AUTO_EXTRACT_PRODUCTS` term products (it once exhausted 17 GB) and goes numeric."""
    from conflow.exact.polynomial import WorkLimitError, work_limit

    method, reason = _auto_choice(cf.linear([10] * 9), GradientFlow())[:2]
    assert method == "numeric" and "too large for the exact engine" in reason
    with work_limit(100), pytest.raises(WorkLimitError):
        polynomial_form(cf.linear([3, 4, 4, 3]).phi, 40)  # needs 192
    with work_limit(192):
        assert len(polynomial_form(cf.linear([3, 4, 4, 3]).phi, 40)) == 9


def test_a_work_limit_reached_inside_a_matrix_product_is_a_clean_error():
    """`np.matmul`'s object loop releases a reference the output still holds when an element's
    product raises at its first term (the work limit reached mid-product); the heap damage
    killed a later count with a segmentation fault (bench_trust, two affine MLPs in a row —
    not reproducible in a small test). Products are now elementwise: a limit below the 192
    products needed stops inside one and raises the clean error; the result is np.matmul's."""
    import gc
    from fractions import Fraction

    from conflow.exact.extract import _object_matmul
    from conflow.exact.polynomial import WorkLimitError, work_limit

    phi = cf.linear([3, 4, 4, 3]).phi
    for limit in (0, 1, 47, 96, 150, 191):
        with work_limit(limit), pytest.raises(WorkLimitError):
            polynomial_form(phi, 40)
        gc.collect()
    assert len(polynomial_form(phi, 40)) == 9
    rng = np.random.default_rng(0)
    a, b = (np.vectorize(Fraction, otypes=[object])(rng.integers(-5, 5, s)) for s in
            ((2, 3, 4), (2, 4, 5)))
    assert np.array_equal(_object_matmul(a, b), np.matmul(a, b))
    assert np.array_equal(_object_matmul(a[:, :, :0], b[:, :0, :]), np.zeros((2, 3, 5)))


def test_non_polynomial_models_and_metrics_go_numeric():
    assert auto(cf.mlp([3, 4, 2], "tanh")) == ("numeric", "auto: φ is not polynomial")
    method, reason = auto(cf.mlp([3, 4, 2], "relu"))
    assert method == "numeric" and "branches" in reason
    burg = GradientFlow(metric=mirror_metric(lambda t: -jnp.sum(jnp.log(t))))
    method, reason = auto(cf.nmf(2, 2, 2), burg)
    assert method == "numeric" and "callable" in reason


def test_the_cheaper_estimate_wins(monkeypatch):
    # linear [10,10,10]: the exact estimate is about 0.7 s; make the numeric one far above and
    # far below it
    model = cf.linear([10, 10, 10])
    for numeric_s, expected in ((1e3, "exact"), (1e-3, "numeric")):
        fake = cost.Cost("dense", 0.0, numeric_s)
        monkeypatch.setattr(cost, "numeric_cost", lambda *a, fake=fake, **k: fake)
        method, reason = auto(model)
        assert method == expected, reason
        assert f"vs numeric {numeric_s:.2g} s" in reason
    assert reason.startswith("auto: too large for the exact engine (state dim 200, 100 outputs")
    monkeypatch.setattr(cost, "numeric_cost", lambda *a, **k: cost.Cost("dense", 0.0, 1e3))
    assert auto(model)[1].startswith("auto: polynomial, 1000 monomials, est. ")


def test_forced_methods_are_honoured(monkeypatch):
    model = cf.linear([2, 3, 2])  # auto: exact
    numeric = cf.count_laws(model, method="numeric")
    assert numeric.method == "numeric" and numeric.method_reason == "requested"
    assert numeric.trace is not None and numeric.exact is None and numeric.n_laws == 6
    # numeric-only options imply the numeric engine, and say so
    tuned = cf.count_laws(model, rtol=1e-9)
    assert tuned.method == "numeric"
    assert tuned.method_reason == "auto: numeric options given (rtol=1e-09)"
    # where auto would pick the numeric engine, the exact one still runs on request
    monkeypatch.setattr(count_module, "NUMERIC_MIN_SECONDS", 0.0)
    monkeypatch.setattr(cost, "numeric_cost", lambda *a, **k: cost.Cost("dense", 0.0, 1e-6))
    assert auto(model)[0] == "numeric"
    exact = cf.count_laws(model, method="exact")
    assert exact.method == "exact" and exact.method_reason == "requested"
    assert exact.trace is None and exact.n_laws == 6


def test_command_reports_the_engine_and_why(capsys):
    assert main(["count", "relu", "2,3,2", "--bias", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "exact" and out["method_reason"].startswith("auto: polynomial, 18 ")
    assert main(["count", "relu", "2,3,2", "--bias", "--exact"]) == 0
    assert "method: exact (requested)" in capsys.readouterr().out


def test_polynomial_size_and_the_exact_estimate():
    model = cf.linear([2, 3, 2])  # 4 outputs, each a sum of 3 monomials of degree 2
    size = cost.polynomial_size(polynomial_form(model.phi, model.D))
    assert size == cost.PolynomialSize(outputs=4, monomials=12, degree_sum=24, degree=2)
    # the floor (no polynomial form) never exceeds the estimate; both grow with the model
    est = cost.exact_cost(12, 12, size)
    assert cost.exact_cost_floor(12, 12, 4).seconds <= est.seconds
    big = cost.PolynomialSize(outputs=16, monomials=4096, degree_sum=20480, degree=5)
    assert cost.exact_cost(80, 80, big).seconds > 100 * est.seconds
    assert cost.exact_cost(49, 24, size, momentum=True).seconds > est.seconds
    assert est.engine == "exact" and est.bytes > 0


def test_a_deep_net_on_an_input_sample_is_left_to_the_numeric_engine():
    # an affine 3-2-2-2-2-1 net given as code, counted on its inputs: 232 outputs whose
    # gradients span 4 directions, so brackets (degree-5 fields, dear) must fill the state; the
    # estimate that assumed the generators span min(d, n) said 2 s and the count took 44 s
    eqx = pytest.importorskip("equinox")
    import jax

    net = eqx.nn.MLP(3, 1, 2, 4, activation=lambda x: x, key=jax.random.PRNGKey(0))
    model = cf.from_model(net, input_shape=(3,))
    size = cost.polynomial_size(polynomial_form(model.phi, model.D))
    rank = model.generator_rank(np.asarray(model.sample_points(0, 1))[0])
    assert rank < model.D
    assumed = cost.exact_cost(model.D, model.D, size)
    assert cost.exact_cost(model.D, model.D, size, generator_rank=rank).seconds > (
        10 * assumed.seconds)
    count = cf.count_laws(model)
    assert count.method == "numeric" and count.method_reason.startswith("auto: polynomial")
    assert count.status == "ok" and count.n_laws == 12  # the affine-net formula (bench_trust)


def test_custom_polynomial_model_counted_exactly():
    # nearly dependent brackets: only the exact engine tells them apart (see test_band)
    model = cf.custom(lambda x: jnp.stack([x[0], x[0] * x[1] + 1e-14 * x[0] ** 2 * x[2] / 2]),
                      np.zeros(3))
    result = cf.count_laws(model)
    assert result.method == "exact" and result.n_laws == 0
    assert "auto: polynomial, 3 monomials" in result.method_reason


@pytest.mark.parametrize("dims", [[3, 4, 4, 3], [5, 5, 5]])
def test_sage_table_linear_nets_are_counted_exactly(dims):
    result = cf.count_laws(cf.linear(dims))
    assert result.method == "exact" and result.status == "ok"
