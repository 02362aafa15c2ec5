"""Blind gradient and mirror flow counts against MATH.md §2, §4 and §8 (the expected numbers live
only here), custom φ, determinism and the reported evidence. The closed-form laws' orthogonality
to the generators is checked in test_models.py (these models included)."""

import jax
import numpy as np
import pytest

import conflow as cf
from conflow.flows import GradientFlow

# (model, expected laws) — MATH.md §8 gradient-flow rows and §2.3's deep and degenerate cases.
GF_ROWS = [
    (lambda: cf.product(3), 2),  # row 1
    (lambda: cf.product(5), 4),  # row 2
    (lambda: cf.linear([1, 1, 1]), 1),  # row 3
    (lambda: cf.linear([2, 2, 2]), 3),  # row 4
    (lambda: cf.linear([3, 2, 4]), 3),  # row 5
    (lambda: cf.linear([2, 3, 2]), 6),  # row 6
    (lambda: cf.linear([3, 3, 3]), 6),  # row 7
    (lambda: cf.linear([2, 5, 2]), 14),  # row 8: wide, not 15
    (lambda: cf.linear([1, 3, 1]), 5),  # row 10: scalar φ, D − 1
    (lambda: cf.linear([2, 2, 2, 2]), 6),  # row 12
    (lambda: cf.linear([2, 3, 2, 2]), 9),  # row 13
    (lambda: cf.linear([2, 5, 2, 2]), 17),  # §2.3: 14 + 3, not 18
    (lambda: cf.linear([1, 2, 3, 1]), 10),  # §2.3: scalar φ, more than the 9 balancedness laws
    (lambda: cf.factorization(3, 2, 4), 3),  # UVᵀ = linear [3,2,4]
    (lambda: cf.relu([2, 3, 2]), 3),  # row 17
    (lambda: cf.relu([2, 3, 2], bias=True), 3),  # row 18
    (lambda: cf.relu([3, 2, 2, 2]), 4),  # row 19
    (lambda: cf.relu([2, 3, 3, 2], bias=True), 6),
]


@pytest.mark.parametrize("make, expected", GF_ROWS, ids=lambda x: "" if callable(x) else str(x))
def test_gradient_flow_counts(make, expected):
    model = make()
    result = cf.count_laws(model, method="numeric")
    assert result.status == "ok", result.summary()
    assert result.n_laws == expected, result.summary()
    assert result.n_agree == result.points == 3
    assert result.gap > 1e8  # these cuts are far from the threshold


@pytest.mark.parametrize(
    "make, expected",
    [(lambda: cf.nmf(2, 2, 2), 2), (lambda: cf.nmf(2, 5, 2), 5), (lambda: cf.nmf(1, 3, 1), 5),
     (lambda: cf.icnn(2, 2, 2), 2), (lambda: cf.icnn(2, 3, 2, bias=True), 3)],
)
def test_entropy_metric_counts(make, expected):
    # MATH.md §4.2, §4.4, rows 21, 22, 24: mirror (entropy) gradient flow.
    result = cf.count_laws(make(), GradientFlow(metric="entropy"))
    assert result.status == "ok" and result.n_laws == expected, result.summary()


def test_custom_phi_matches_builtin_and_non_polynomial_phi_is_counted():
    # custom φ on a pytree = the built-in 2-layer linear net.
    params = {"U": np.zeros((2, 3)), "V": np.zeros((3, 2))}
    model = cf.custom(lambda p: p["U"] @ p["V"], params)
    assert cf.count_laws(model).n_laws == 6
    # A non-polynomial scalar φ still has D − 1 laws (d = 1).
    scalar = cf.custom(lambda p: jax.numpy.tanh(p["x"].sum()) * jax.numpy.exp(p["x"][0]),
                       {"x": np.zeros(4)})
    assert cf.count_laws(scalar).n_laws == 3


def test_same_seed_same_count_and_json():
    a = cf.count_laws(cf.linear([2, 3, 2]), seed=4, method="numeric").to_json()
    b = cf.count_laws(cf.linear([2, 3, 2]), seed=4, method="numeric").to_json()
    for key in ("n_laws", "gap", "sigma_r", "sigma_r1", "ranks_per_level", "point_dims"):
        assert a[key] == b[key]


def test_count_is_blind_and_reports_evidence():
    result = cf.count_laws(cf.linear([2, 2, 2]), method="numeric")
    trace = result.trace
    assert trace.ranks == ((4, 4, 4), (5, 5, 5), (5, 5, 5))
    assert len(trace.kept_tail) == 3 and len(trace.dropped_head) == 3
    assert trace.sigma_r == min(trace.kept_tail) and trace.sigma_r1 == max(trace.dropped_head)
    assert result.gap == pytest.approx(trace.sigma_r / trace.sigma_r1)
    assert trace.points.shape == (3, 8)
    assert result.depth == 2 and result.seconds > 0


def test_mirror_potential_reproduces_the_entropy_metric_and_burg_entropy():
    import jax.numpy as jnp

    from conflow.flows import MomentumFlow, mirror_metric

    entropy = mirror_metric(lambda t: jnp.sum(t * jnp.log(t) - t))
    burg = mirror_metric(lambda t: -jnp.sum(jnp.log(t)))  # θ' = −θ² ⊙ ∇L: laws Σ log u − Σ log v
    model = cf.nmf(2, 2, 2)
    assert cf.count_laws(model, GradientFlow(metric=entropy)).n_laws == 2
    assert cf.count_laws(model, GradientFlow(metric=burg)).n_laws == 2
    # mirror momentum through the potential (numeric: a callable metric has no exact form)
    result = cf.count_laws(model, MomentumFlow(0.5, metric=entropy))
    assert result.method == "numeric" and result.n_laws == 0, result.summary()
