"""The Lie-trace engine on hand-built families with known Lie algebras."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import conflow  # noqa: F401
from conflow.engine import evaluate
from conflow.engine.trace import VectorFamily, lie_trace
from conflow.errors import InputError

rng = np.random.default_rng(0)
POINTS3 = jnp.asarray(rng.standard_normal((3, 3)))


def _linear_family(mats):
    mats = jnp.asarray(mats)
    return VectorFamily(lambda z, a: jnp.einsum("j,jkl,l->k", a, mats, z), mats.shape[1],
                        mats.shape[0])


def _so3():
    e = np.zeros((3, 3, 3))
    for k, (i, j) in enumerate([(0, 1), (1, 2), (0, 2)]):
        e[k, i, j], e[k, j, i] = 1.0, -1.0
    return e


def test_two_rotations_generate_so3_one_law():
    # Two generators of so(3): the orbit is the sphere, dim 2, law |z|².
    trace = lie_trace(_linear_family(_so3()[:2]), POINTS3)
    assert trace.status == "ok" and trace.dim == 2
    assert trace.ranks[0] == (2, 2, 2)
    assert trace.gap > 1e8
    assert trace.n_agree == 3


def test_generic_linear_fields_fill_the_space():
    trace = lie_trace(_linear_family(rng.standard_normal((2, 4, 4))),
                      jnp.asarray(rng.standard_normal((3, 4))))
    assert trace.dim == 4 and trace.status == "ok"


@pytest.mark.parametrize("algorithm,joint", [("dense", True), ("dense", False),
                                             ("streamed", False)])
def test_a_level_with_more_brackets_than_the_last_gets_samples_enough(algorithm, joint,
                                                                       monkeypatch):
    # Five generic symmetric linear fields on R^64: the free Lie algebra's degrees 1, 2, 3 have
    # 5, 10, 40 elements, so level 2 adds 40 directions where level 1 added 10; a stage that
    # drew only level 1's samples (25 + margin) cut level 2 at its sample count (saturated).
    # Dense levels 1 and 2 in one stage (cheap fields) or in two (`costly_field`).
    if not joint:
        monkeypatch.setattr(evaluate, "COSTLY_FIELD_ENTRIES", 0)
    mats = rng.standard_normal((5, 64, 64))
    trace = lie_trace(_linear_family(mats + mats.transpose(0, 2, 1)),
                      jnp.asarray(rng.standard_normal((3, 64))), algorithm=algorithm)
    assert trace.status == "ok" and trace.dim == 64
    assert trace.ranks[:3] == ((5,) * 3, (15,) * 3, (55,) * 3)


@pytest.mark.parametrize("algorithm,linalg", [("dense", "host"), ("streamed", "host"),
                                              ("dense", "device")])
def test_generator_matrices_give_level_zero(algorithm, linalg, monkeypatch):
    """A costly family that gives its generators as matrices (`VectorFamily.generators`) has
    level 0 drawn from them, not from the field: same ranks, same count."""
    monkeypatch.setattr(evaluate, "COSTLY_FIELD_ENTRIES", 0)
    mats = jnp.asarray(_so3()[:2])
    family = dataclasses.replace(_linear_family(mats),
                                 generators=lambda z: jnp.einsum("jkl,l->kj", mats, z))
    trace = lie_trace(family, POINTS3, algorithm=algorithm, linalg=linalg)
    assert trace.status == "ok" and trace.dim == 2 and trace.ranks[0] == (2, 2, 2)
    wrong = dataclasses.replace(family, generators=lambda z: jnp.zeros((3, 2)))
    # level 0 is read from them
    assert lie_trace(wrong, POINTS3, algorithm=algorithm, linalg=linalg).ranks[0] == (0, 0, 0)


def test_generator_matrices_are_kept_beyond_the_balancing_limit(monkeypatch):
    """The matrices (one Jacobian per point) are kept up to `_GENERATOR_MAX_FLOATS`, above the
    limit for evaluating every generator through the field; level 0 is G[p] (w_p ⊙ a_s). Past
    it, while one point's matrix fits, they are formed one point at a time."""
    monkeypatch.setattr(evaluate, "COSTLY_FIELD_ENTRIES", 0)
    monkeypatch.setattr(evaluate, "_BALANCE_MAX_FLOATS", 1)
    mats = jnp.asarray(_so3()[:2])
    family = dataclasses.replace(_linear_family(mats),
                                 generators=lambda z: jnp.einsum("jkl,l->kj", mats, z))
    matrices = evaluate.generator_matrices(family, POINTS3)
    assert matrices is not None and matrices.shape == (3, 3, 2)
    weights = evaluate.generator_weights(family, POINTS3, False, matrices)
    np.testing.assert_allclose(weights * np.linalg.norm(matrices, axis=1), 1.0)
    values, _ = evaluate.evaluate_generators(matrices, np.random.default_rng(1), 4, weights)
    a = np.random.default_rng(1).uniform(-evaluate.COEFF_HALF_WIDTH, evaluate.COEFF_HALF_WIDTH,
                                         (4, 2))
    expected = np.einsum("pnm,psm->psn", np.asarray(matrices),
                         a[None] * np.asarray(weights)[:, None])
    np.testing.assert_allclose(np.asarray(values)[:, :, 0], expected, rtol=1e-13)
    monkeypatch.setattr(evaluate, "_GENERATOR_MAX_FLOATS", 3 * 3 * 2 - 1)
    assert evaluate.generator_matrices(family, POINTS3) is None
    # P·n·m over the limit, n·m under it: one point's matrix at a time, the same level 0
    assert evaluate.by_point(family, 3) and not evaluate.by_point(family, 1)
    assert np.array_equal(evaluate.generator_weights(family, np.asarray(POINTS3), False),
                          weights)
    monkeypatch.setattr(evaluate, "BY_POINT_SAMPLES", 3)  # two blocks of samples
    by_point, scales = evaluate.evaluate_generators_by_point(
        family, POINTS3, np.random.default_rng(1), 4, weights)
    assert by_point.shape == (3, 4, 1, 3) and scales.shape == (3, 4, 1)
    np.testing.assert_allclose(np.asarray(by_point), np.asarray(values), rtol=1e-13)
    wrong = dataclasses.replace(family, generators=lambda z: jnp.zeros((3, 2)))
    assert lie_trace(family, POINTS3).ranks[0] == (2, 2, 2)
    assert lie_trace(wrong, POINTS3).ranks[0] == (0, 0, 0)  # level 0 is read from them


def _needs_a_bracket():
    # X = ∂1, Y = ∂2 + x1 ∂3: [X, Y] = ∂3 is new at level 1 (a contact-like distribution).
    def field(z, a):
        return jnp.array([a[0], a[1], a[1] * z[0]])

    return VectorFamily(field, 3, 2)


def test_level_one_adds_the_bracket_direction():
    trace = lie_trace(_needs_a_bracket(), POINTS3)
    assert trace.ranks[:2] == ((2, 2, 2), (3, 3, 3))
    assert trace.dim == 3 and trace.status == "ok"


def test_depth_cap_gives_not_converged_and_no_count():
    trace = lie_trace(_needs_a_bracket(), POINTS3, max_depth=0)
    assert trace.status == "not_converged"
    assert trace.dim is None
    assert "depth 0" in trace.reason


def test_points_that_disagree_are_ambiguous():
    # At z = 0 every linear field vanishes: that point is not generic.
    points = jnp.concatenate([POINTS3[:2], jnp.zeros((1, 3))])
    trace = lie_trace(_linear_family(_so3()[:2]), points)
    assert trace.status == "ambiguous" and trace.dim is None
    assert trace.point_dims == (2, 2, 0) and trace.n_agree == 2


def test_a_scalar_field_has_a_one_dimensional_trace():
    # One field: [v, v] = 0 must be recognised as zero relative to the terms that cancel.
    def field(z, a):
        return a[0] * jnp.array([z[1] * z[2], z[0] * z[2], z[0] * z[1]]) * jnp.exp(z[0])

    trace = lie_trace(VectorFamily(field, 3, 1), POINTS3)
    assert trace.dim == 1 and trace.status == "ok"


def test_same_seed_same_result_and_seed_matters_only_in_rounding():
    fam = _needs_a_bracket()
    a, b = lie_trace(fam, POINTS3, seed=7), lie_trace(fam, POINTS3, seed=7)
    assert a.point_dims == b.point_dims and a.gap == b.gap and a.ranks == b.ranks
    c = lie_trace(fam, POINTS3, seed=8)
    assert c.dim == a.dim


@pytest.mark.parametrize(
    "points, message",
    [
        (jnp.ones((2, 4)), "shape"),
        (jnp.full((2, 3), jnp.nan), "NaN"),
        (jnp.ones((0, 3)), "at least one point"),
    ],
)
def test_bad_points_are_named(points, message):
    with pytest.raises(InputError, match=message):
        lie_trace(_needs_a_bracket(), points)


def test_non_finite_fields_are_named():
    fam = VectorFamily(lambda z, a: a[0] * jnp.log(z - 10.0), 3, 1)
    with pytest.raises(InputError, match="not finite"):
        lie_trace(fam, POINTS3)


def test_float32_is_opt_in_warns_and_is_reported():
    fam = _linear_family(_so3()[:2])
    f64 = lie_trace(fam, POINTS3)
    with pytest.warns(UserWarning, match="gap may not"):
        f32 = lie_trace(fam, POINTS3, dtype="float32")
    assert (f64.dtype, f32.dtype) == ("float64", "float32")
    assert f32.dim == f64.dim == 2
    assert f32.sigma_r1 > 1e3 * f64.sigma_r1  # float32 noise sits far above float64's
    with pytest.raises(InputError, match="dtype"):
        lie_trace(fam, POINTS3, dtype="float16")
