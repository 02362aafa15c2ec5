"""Generic points: the well-conditioned draw of `Model.sample_points` and the redraws of degenerate
points of piecewise models (`conflow.laws.points.generic_points`)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.errors import InputError
from conflow.flows import GradientFlow, MomentumFlow
from conflow.laws.points import GenericPoints, generic_points
from conflow.models.base import PERTURBATION, ParamBlock, draw_block
from conflow.models.from_model import from_model

# --------------------------------------------------------------------------------------------
# the conditioned draw
# --------------------------------------------------------------------------------------------


def test_sample_points_shapes_determinism_and_keys():
    m = cf.linear([3, 4, 5, 2])
    a = np.asarray(m.sample_points(0, 4))
    assert a.shape == (4, m.D) and a.dtype == np.float64 and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, np.asarray(m.sample_points(0, 4)))
    assert not np.allclose(a, np.asarray(m.sample_points(1, 4)))
    k = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(m.sample_points(k, 2), m.sample_points(k, 2))
    np.testing.assert_array_equal(m.sample_points(np.random.default_rng(5), 2),
                                  m.sample_points(np.random.default_rng(5), 2))
    assert len({row.tobytes() for row in a}) == 4  # distinct points


def test_positive_blocks_stay_positive():
    for model in (cf.nmf(2, 3, 4), cf.icnn(3, 4, 2)):
        z = np.asarray(model.sample_points(jax.random.PRNGKey(0), 50))
        mask = model.positive_mask
        assert mask.any() and np.all(z[:, mask] >= 0.1)
        if not mask.all():
            assert np.any(z[:, ~mask] < 0)  # the other blocks are not folded


@pytest.mark.parametrize("shape", [(8, 8), (3, 7), (7, 3), (1, 5), (5, 1), (4, 2, 3)])
def test_matrix_blocks_have_singular_values_near_one(shape):
    block = ParamBlock("A", shape)
    draws = draw_block(np.random.default_rng(0), block, 200).reshape(200, shape[0], -1)
    s = np.linalg.svd(draws, compute_uv=False)
    assert s.min() > 0.25 and s.max() < 2.0
    # the Gaussian part is there: the draws are not on the Stiefel manifold
    assert np.abs(s - 1).max() > PERTURBATION / 3


def test_vectors_and_scalars():
    rng = np.random.default_rng(1)
    v = draw_block(rng, ParamBlock("b", (50,)), 400)
    assert v.shape == (400, 50) and 0.2 < np.median(np.linalg.norm(v, axis=1)) < 0.4
    assert abs(np.mean(v)) < 0.01
    s = draw_block(rng, ParamBlock("c", ()), 400)
    assert s.shape == (400, 1) and 0.8 < np.std(s) < 1.2
    assert draw_block(rng, ParamBlock("e", (0, 3)), 2).shape == (2, 0)


def test_products_of_ten_blocks_are_well_conditioned():
    m = cf.linear([8] * 11)
    gauss = np.random.default_rng(0)
    conds, conds_gauss = [], []
    for theta in np.asarray(m.sample_points(0, 5)):
        mats = [np.asarray(x) for x in m.unflatten(theta).values()]
        conds.append(np.linalg.cond(functools.reduce(np.matmul, mats)))
        g = [gauss.standard_normal((8, 8)) for _ in mats]
        conds_gauss.append(np.linalg.cond(functools.reduce(np.matmul, g)))
    assert max(conds) < 1e3
    assert np.median(conds_gauss) > 1e3 * np.median(conds)


def test_pytree_leaves_are_drawn_as_matrices():
    """custom / from_model models inherit the draw: an (out, in) weight leaf is a matrix block."""
    params = {"W": np.zeros((6, 4)), "b": np.zeros(6), "a": np.zeros(())}
    model = cf.custom(lambda p: p["W"] @ jnp.ones(4) + p["b"] + p["a"], params)
    theta = np.asarray(model.sample_points(0, 1)[0])
    w = np.asarray(model.unflatten(theta)["W"])
    s = np.linalg.svd(w, compute_uv=False)
    assert s.min() > 0.25 and s.max() < 2.0


# --------------------------------------------------------------------------------------------
# redraws of degenerate points
# --------------------------------------------------------------------------------------------


def _relu_apply(p, x):
    """Two hidden ReLU layers with biases: W3 relu(W2 relu(W1 x + b1) + b2)."""
    h = jax.nn.relu(p["W1"] @ x + p["b1"])
    return p["W3"] @ jax.nn.relu(p["W2"] @ h + p["b2"])


def _small_relu_model():
    """2-3-3-1 with biases on 32 drawn inputs: about 3 in 4 draws have a second-layer unit
    constant over the sample (or a weight that moves no output)."""
    params = {"W1": np.zeros((3, 2)), "b1": np.zeros(3), "W2": np.zeros((3, 3)),
              "b2": np.zeros(3), "W3": np.zeros((1, 3))}
    return from_model(_relu_apply, params, input_shape=(2,), n_inputs=32)


def test_analytic_models_keep_the_flows_points():
    for model, flow in ((cf.linear([2, 3, 2]), GradientFlow()), (cf.relu([2, 3, 2]), None),
                        (cf.linear([2, 2, 2]), MomentumFlow(0.5))):
        gp = generic_points(model, flow, 4, 3)
        assert isinstance(gp, GenericPoints)
        want = (flow or GradientFlow()).sample_points(model, 4, 3)
        np.testing.assert_array_equal(gp.points, np.asarray(want))
        assert gp.redrawn == 0 and gp.reasons == () and gp.degenerate == ()


def test_degenerate_point_is_redrawn_with_reason():
    model = _small_relu_model()
    found = None
    for seed in range(20):
        first = np.asarray(model.sample_points(seed, 3))
        if any(model.degenerate_reason(t) for t in first):
            found = seed, first
            break
    assert found is not None, "no degenerate first draw in 20 seeds"
    seed, first = found
    gp = generic_points(model, None, seed, 3)
    assert gp.points.shape == (3, model.D) and gp.redrawn >= 1 and gp.degenerate == ()
    assert any("never change" in r or "no output" in r for r in gp.reasons)
    for i, (p, f) in enumerate(zip(gp.points, first)):
        assert model.degenerate_reason(p) is None
        if model.degenerate_reason(f) is None:  # generic first draws are kept as they are
            np.testing.assert_array_equal(p, f)
        else:
            assert not np.array_equal(p, f) and any(r.startswith(f"point {i}:") for r in gp.reasons)
    again = generic_points(model, None, seed, 3)  # deterministic
    np.testing.assert_array_equal(again.points, gp.points)
    assert again.reasons == gp.reasons and again.redrawn == gp.redrawn


def test_momentum_states_are_checked_on_their_theta_part():
    model = _small_relu_model()
    gp = generic_points(model, MomentumFlow(0.3), 0, 4)
    assert gp.points.shape == (4, 2 * model.D + 1) and gp.degenerate == ()
    assert np.all(gp.points[:, 0] > 0)
    for z in gp.points:
        assert model.degenerate_reason(z[1 : model.D + 1]) is None


def test_unit_dead_by_construction_is_listed_degenerate():
    def apply(p, x):  # the ReLU's pre-activation is < 0 for every input and every θ
        return p["W"] @ x + p["v"] * jax.nn.relu(-(x ** 2).sum() - 1.0)

    model = from_model(apply, {"W": np.zeros((2, 3)), "v": np.zeros(2)}, input_shape=(3,),
                       n_inputs=16)
    theta = np.asarray(model.sample_points(0, 1)[0])
    assert model.constant_switches(theta).tolist() == [True]
    # fixed whatever θ: not a degeneracy of the point (no redraw changes it) ...
    assert model.fixed_switches().tolist() == [True]
    assert model.idle_parameters(theta).tolist() == [False] * 6 + [True, True]
    # ... but its weights v move no output, at every θ: the point stays degenerate
    reason = model.degenerate_reason(theta)
    assert "recorded switch" not in reason and "2 parameters (v[0], v[1]) move no output" in reason
    gp = generic_points(model, None, 0, 2, max_redraws=3)
    assert gp.degenerate == (0, 1) and gp.redrawn == 6
    assert len(gp.reasons) == 2 and all("still degenerate after 3 redraws" in r for r in gp.reasons)
    with pytest.warns(cf.InputsWarning, match=r"2 parameter\(s\) \(v\[0\], v\[1\]\) move no output"):
        res = cf.count_laws_from_model(model, progress=False)
    assert res.status == "ok" and res.n_laws == 2  # v is conserved: W x moves with every W_ij
    assert res.report.patterns[0].n_fixed == 1 and res.report.patterns[0].n_constant == 0


def _layer_norm_relu_apply(p, x):
    """Linear 3 → 4, a layer norm written as Equinox writes it (its variance guarded by
    max(0, ·), a switch that never changes), a ReLU on its affine output, Linear 4 → 2."""
    h = p["W"] @ x + p["b"]
    var = jnp.maximum(0.0, jnp.var(h))
    n = (h - jnp.mean(h)) * jax.lax.rsqrt(var + 1e-5)
    return p["V"] @ jax.nn.relu(p["g"] * n + p["beta"]) + p["c"]


def test_a_guard_switch_is_fixed_and_does_not_hold_up_the_points():
    """The guard is constant at every θ: before it was set apart, every point was degenerate,
    the redraw budget (1,024) went on it, and the units that were really off kept their state.
    Count: (W, b) → (W + 1uᵀ, b + c1) leaves the layer norm unchanged (3 + 1 linear laws; the
    scaling (W, b) → λ(W, b) is not exact, the ε = 1e-5 breaks it), and each ReLU unit's
    (g_j, β_j) → λ(g_j, β_j), V[:, j] → V[:, j]/λ (4 laws): 8."""
    params = {"W": np.zeros((4, 3)), "b": np.zeros(4), "g": np.zeros(4), "beta": np.zeros(4),
              "V": np.zeros((2, 4)), "c": np.zeros(2)}
    model = from_model(_layer_norm_relu_apply, params, input_shape=(3,))
    fixed = model.fixed_switches()
    assert fixed.sum() == 1 and fixed.size == 5  # the guard; the 4 ReLU switches are not fixed
    res = cf.count_laws_from_model(model, check_inputs=False, progress=False)
    assert res.status == "ok" and res.n_laws == 8 and res.warnings == ()
    assert res.count.points_redrawn < 200
    for t in res.count.trace.points:
        assert model.degeneracy(t) == (0, None)


def test_activation_switches_are_never_fixed():
    """Deep narrow ReLU nets, whose units are often constant over the sample at a random θ: by
    the sign symmetry of the draw no unit takes the same constant outcome at all 32 draws."""
    for width, seed in ((6, 0), (3, 1)):
        params = {"hidden": [np.zeros((width, 4))] + [np.zeros((width, width))] * 3,
                  "out": np.zeros((1, width))}
        model = from_model(_deep_relu_apply, params, input_shape=(4,), n_inputs=256, seed=seed)
        assert model.fixed_switches().shape == (4 * width,)
        assert not model.fixed_switches().any()


def _deep_relu_apply(p, x):
    """A bias-free ReLU MLP 4-6-6-6-6-1 as a plain JAX function."""
    for w in p["hidden"]:
        x = jax.nn.relu(w @ x)
    return p["out"] @ x


def test_deep_narrow_net_is_repaired_block_by_block():
    """4 hidden layers of width 6: nearly every whole draw has a dead or rarely active unit
    (fewer than 1 in 300 is clean); block redraws clean every point, and the rarer outcome of
    each switch then holds on at least 1/64 of the inputs."""
    params = {"hidden": [np.zeros((6, 4))] + [np.zeros((6, 6))] * 3, "out": np.zeros((1, 6))}
    model = from_model(_deep_relu_apply, params, input_shape=(4,), n_inputs=512)
    first = np.asarray(model.sample_points(0, 3))
    assert sum(model.degeneracy(t)[0] > 0 for t in first) >= 2
    gp = generic_points(model, None, 0, 3)
    assert gp.redrawn > 0
    for t in gp.points:
        assert model.degeneracy(t) == (0, None)
        assert not model.rare_switches(t).any()
        # a repaired point keeps the blocks that were fine: it is not a whole fresh draw
    bounds = [(0, 24), (24, 60), (60, 96), (96, 132), (132, 138)]
    assert any(np.array_equal(p[a:b], f[a:b]) for p, f in zip(gp.points, first) for a, b in bounds)


def test_rare_columns():
    from conflow.models.from_model import constant_columns, min_switch_inputs, rare_columns

    pat = np.array([[0, 1, 1, -1], [0, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 1]] * 4)
    assert constant_columns(pat).tolist() == [True, False, False, False]
    assert rare_columns(pat, 5).tolist() == [True, True, True, False]
    assert rare_columns(pat, 4).tolist() == [True, False, False, False]
    assert rare_columns(np.zeros((3, 0)), 2).shape == (0,)
    assert min_switch_inputs(10) == 1 and min_switch_inputs(640) == 10


def test_smooth_sampled_model_is_never_degenerate():
    model = from_model(lambda p, x: jnp.tanh(p["W"] @ x), {"W": np.zeros((2, 3))},
                       input_shape=(3,), n_inputs=16)
    gp = generic_points(model, None, 1, 2)
    assert gp.redrawn == 0 and gp.degenerate == ()
    np.testing.assert_array_equal(gp.points, np.asarray(model.sample_points(1, 2)))


def test_bad_arguments():
    model = cf.linear([2, 2, 2])
    for kwargs in ({"seed": -1, "n": 2}, {"seed": 0, "n": 0}, {"seed": 1.5, "n": 2}):
        with pytest.raises(InputError):
            generic_points(model, None, **kwargs)
    with pytest.raises(InputError):
        generic_points(model, None, 0, 2, max_redraws=-1)


def test_generic_region_step_takes_the_largest_dimension_of_a_piecewise_model():
    """Disagreeing points of a model with switches, each cut clean: the largest dimension is
    the generic one when at least two and half of the points reach it; never for smooth models."""
    import dataclasses

    from conflow.engine.trace import AMBIGUOUS, OK
    from conflow.laws.count import _generic_region

    relu = _small_relu_model()
    trace = cf.count_laws(relu, points=3, escalate=False, method="numeric").trace
    dim = max(trace.point_dims)
    split = dataclasses.replace(trace, status=AMBIGUOUS, dim=None, point_dims=(dim, dim - 1, dim),
                                reason=f"points disagree: dimensions {(dim, dim - 1, dim)}")
    step, detail, settled = _generic_region(relu, GradientFlow(), split)
    assert step == "generic region" and settled.status == OK and settled.dim == dim
    assert "2 of 3 points" in detail
    lonely = dataclasses.replace(split, point_dims=(dim, dim - 1, dim - 1))
    assert _generic_region(relu, GradientFlow(), lonely) is None
    other = dataclasses.replace(split, reason="1 singular value(s) neither rounding nor clear")
    assert _generic_region(relu, GradientFlow(), other) is None
    smooth = from_model(lambda p, x: jnp.tanh(p["W"] @ x), {"W": np.zeros((2, 3))},
                        input_shape=(3,), n_inputs=16)
    own = dataclasses.replace(split, points=np.asarray(smooth.sample_points(0, 3)))
    assert _generic_region(smooth, GradientFlow(), own) is None
    assert _generic_region(cf.linear([2, 2, 2]), GradientFlow(), split) is None


def test_repair_moves_are_whole_blocks_then_single_rows_and_columns():
    from conflow.laws.points import _moves

    model = cf.linear([2, 3, 4])  # blocks (2, 3) and (3, 4)
    moves = _moves(model)
    sizes = [len(entries) for _, _, entries in moves]
    assert sizes == [6, 12] + [3] * 2 + [2] * 3 + [4] * 3 + [3] * 4
    block, offset, row = moves[2 + 2 + 3 + 1]  # the second row of the (3, 4) block
    assert block is model.blocks[1] and offset == 6 and row.tolist() == [4, 5, 6, 7]
    every = np.concatenate([offset + entries for _, offset, entries in moves[2:]])
    assert np.array_equal(np.bincount(every), np.full(18, 2))  # each entry: its row and column


def test_vector_blocks_are_also_redrawn_entry_by_entry():
    """A bias (or a layer norm's scale) is one entry per unit: after the whole blocks and the
    rows and columns, each entry alone, so that one unit is repaired without the others."""
    from conflow.laws.points import _moves

    model = cf.relu([2, 3, 1], bias=True)
    shapes = [b.shape for b in model.blocks]
    moves = _moves(model)
    vectors = [(b, o) for b, o, _ in moves[len(shapes):] if len(b.shape) == 1]
    assert len(vectors) == sum(int(np.prod(s)) for s in shapes if len(s) == 1 and s[0] > 1)
    tail = moves[-len(vectors):]
    assert all(len(entries) == 1 and len(b.shape) == 1 for b, _, entries in tail)
