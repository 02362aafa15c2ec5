"""Trust suite (issue 13, item 8): models as users write them, counted blind, against counts from
closed forms — never from the engine under test.

- Equinox / Flax NNX MLPs (ReLU, leaky ReLU, GELU, tanh, softplus, identity; with and without
  biases; widths 2–8, 1–4 hidden layers), drawn with a FIXED seed, counted with
  ``cf.count_laws_from_model(net, input_shape=...)`` exactly as the README shows;
- small conv nets (Conv1d / Conv2d + ReLU + flatten + Linear);
- deep linear and ReLU nets from the built-ins;
- adversarial generator families through ``cf.custom``: nearly parallel generators, generators of
  wildly different sizes, brackets nearly inside the span of the generators.

Every ordinary model must be counted ``ok`` AND right. An adversarial family must be ``ok`` and
right, or ``ambiguous`` — never ``ok`` and wrong; its well-separated member (ε = 1) must be ``ok``
and equal to the hand-derived count written next to it (`trust_models.ADVERSARIAL`). No test here
passes when the engine gives up on an ordinary model.

The models and the closed forms live in ``benchmarks/trust_models.py`` (shared with
``benchmarks/bench_trust.py``, which runs a larger draw); the closed forms that are not textbook are
checked here against the exact engine (an independent computation, certified modulo two primes).
"""

from __future__ import annotations

import dataclasses
import unittest.mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trust_models as tm

import conflow as cf
from conflow.models.from_model import InputsWarning, _spanning_columns
from conflow.reference.closed_forms import known_count
from conflow.status import Status

SEED = 2026


def _draw():
    rng = np.random.default_rng(SEED)
    # 12 MLPs: every activation × {no bias, bias}, each activation in both libraries. D ≤ 60
    # (identity nets need brackets: D ≤ 30) to keep the file near a minute of CPU; the benchmark
    # draws larger ones.
    mlps = [tm.draw_mlp(rng, i, max_D=60, max_D_identity=30) for i in range(12)]
    convs = [tm.draw_conv(rng, i, max_D=30) for i in range(2)]
    builtins = []
    for w in (2, 3):  # deep linear [w]*k, k = 5..9
        builtins.append(tm.linear_case([w] * int(rng.integers(5, 10))))
    for j in range(2):  # deep ReLU, 5..8 layers, widths 2..5
        dims = [int(x) for x in rng.integers(2, 6, int(rng.integers(5, 9)))]
        builtins.append(tm.relu_case(dims, bias=bool(j % 2 == 0)))
    return mlps, convs, builtins


MLPS, CONVS, BUILTINS = _draw()


def _params(cases):
    return [pytest.param(c, id=c.id) for c in cases]


def _requires(case):
    if case.kind.startswith("eqx-"):
        pytest.importorskip("equinox")
    elif case.kind.startswith("nnx-"):
        pytest.importorskip("flax.nnx")


def _assert_ok_and_right(case, result):
    assert result.status == "ok", f"{case.id}: {result.status} — expected ok with " \
        f"{case.expected} laws\n{result.summary()}"
    assert result.n_laws == case.expected, f"{case.id}: ok with {result.n_laws} laws, the " \
        f"closed form says {case.expected}\n{result.summary()}"


# ------------------------------------------------------------------------------------------------
# the expected values themselves (closed forms, checked independently)
# ------------------------------------------------------------------------------------------------


def test_draw_is_fixed_and_covers_the_kinds():
    assert {c.activation for c in MLPS} == set(tm.ACTIVATIONS)
    assert {(c.activation, c.bias) for c in MLPS} == {(a, b) for a in tm.ACTIVATIONS
                                                      for b in (False, True)}
    assert {c.kind for c in MLPS} == {"eqx-mlp", "nnx-mlp"}
    assert all(c.dims[0] >= 2 and c.D <= 60 for c in MLPS)
    assert {c.kind for c in CONVS} == {"eqx-conv1d", "eqx-conv2d"}
    assert len({c.id for c in MLPS + CONVS + BUILTINS}) == len(MLPS + CONVS + BUILTINS)
    assert _draw()[0] == MLPS  # same seed, same models


def test_closed_forms_agree_with_the_literature_values():
    """`linear_formula` and `hidden_neurons` against `known_count(Model)` (the rank of the
    known laws' gradients, the reference notebooks' comparison value)."""
    assert [tm.layer_laws(r, p) for r, p in [(3, 4), (5, 4), (8, 4), (2, 2)]] == [6, 14, 26, 3]
    dims_list = [[2, 5, 2], [2, 4, 1, 2]]  # saturated hidden layers: 14 (not 15), 10 (not 11)
    dims_list += [list(c.dims) for c in BUILTINS if c.kind == "linear"]
    dims_list += [list(c.dims) for c in MLPS if c.activation == "identity" and not c.bias]
    for dims in dims_list:
        assert tm.linear_formula(dims) == known_count(cf.linear(dims)), dims
    for c in BUILTINS:
        if c.kind == "relu":
            assert c.expected == known_count(cf.relu(list(c.dims), bias=c.bias)), c.id
    with pytest.raises(ValueError, match="scalar"):
        tm.linear_formula([1, 2, 3, 1])  # D − 1 laws, not the per-layer count (MATH.md §2.3)


def _affine_apply(dims, bias):
    params = {f"W{i}": np.zeros((b, a)) for i, (a, b) in enumerate(zip(dims[:-1], dims[1:]))}
    if bias:
        params.update({f"b{i}": np.zeros(b) for i, b in enumerate(dims[1:])})

    def apply(p, x):
        for i in range(len(dims) - 1):
            x = p[f"W{i}"] @ x + (p[f"b{i}"] if bias else 0.0)
        return x

    return apply, params


@pytest.mark.parametrize("dims,bias", [([2, 1, 4, 1, 2], True), ([2, 5, 2, 2], False)],
                         ids=["affine-[2,1,4,1,2]", "linear-[2,5,2,2]"])
def test_identity_formulas_match_the_exact_engine(dims, bias):
    """Deep nets with saturated hidden layers: the per-layer formula (with one more neighbour unit
    for biases) against the certified count of the same network given as code."""
    apply, params = _affine_apply(dims, bias)
    r = cf.count_laws(cf.from_model(apply, params, input_shape=(dims[0],)), method="exact")
    assert r.status == "ok"
    assert r.n_laws == (tm.affine_formula(dims) if bias else tm.linear_formula(dims))


def test_affine_net_is_counted_on_a_spanning_sample():
    """An affine net's outputs are affine in x, so on any sample they span n_out·(d + 1)
    functions of θ: the count runs on that many inputs at most, and equals the whole sample's
    count and the closed form. A ReLU net's relations hold per region only: it keeps its sample."""
    dims = [3, 3, 2]
    apply, params = _affine_apply(dims, bias=True)
    model = cf.from_model(apply, params, input_shape=(3,))
    reduced, note = model.spanning_sample()
    assert 1 < reduced.n_inputs <= dims[-1] * (dims[0] + 1) < model.n_inputs
    assert f"span {dims[-1] * (dims[0] + 1)} functions" in note
    basis = np.concatenate([np.zeros((1, 3)), np.eye(3)])  # the better conditioned inputs
    assert all(any(np.array_equal(x, b) for b in basis) for x in reduced.inputs)
    assert "of the basis inputs 0, e_1, …, e_d" in note
    fast, full = cf.count_laws(model), cf.count_laws(model, reduce_inputs=False)
    assert fast.sample_reduction == note and not full.sample_reduction
    assert fast.model == full.model == model.label
    assert fast.status == full.status == "ok"
    assert fast.n_laws == full.n_laws == tm.affine_formula(dims)
    relu_net = cf.from_model(lambda p, x: p["W1"] @ jax.nn.relu(p["W0"] @ x + p["b0"]),
                             {"W0": np.zeros((3, 3)), "b0": np.zeros(3), "W1": np.zeros((2, 3))},
                             input_shape=(3,))
    assert relu_net.spanning_sample() == (relu_net, "")
    # outputs W x²: 2·3 functions of θ, but not affine in x: a subset of the sample, not e_j
    squares = cf.from_model(lambda p, x: p["W"] @ x**2, {"W": np.zeros((2, 3))}, input_shape=(3,))
    with cf.float64_mode():
        reduced, note = squares.spanning_sample()
    assert reduced.n_inputs < squares.n_inputs
    assert note.endswith(f"{reduced.n_inputs} of the inputs")
    assert all(any(np.array_equal(x, y) for y in squares.inputs) for x in reduced.inputs)


def test_recount_of_a_spanning_sample_is_its_count_when_the_functions_are_the_same():
    """Twice the inputs of an affine net span the same n_out·(d + 1) functions: the recount
    is the first count, said so, not counted again. Given extra inputs that span more (a first
    sample on one line spans 2·n_out functions), it counts again, and the counts differ."""
    dims = [3, 3, 2]
    apply, params = _affine_apply(dims, bias=True)
    res = cf.count_laws_from_model(apply, params, input_shape=(3,))
    assert res.stable and res.recount.n_laws == res.n_laws == tm.affine_formula(dims)
    assert "span the same 8 functions of θ as on" in res.recount.sample_reduction
    assert res.recount.model == f"from_model[{res.model.D}] on {2 * res.model.n_inputs} inputs"
    line = np.outer(np.linspace(-1, 1, 16), [1.0, 2.0, -1.0])  # one direction: x = t·v
    with pytest.warns(InputsWarning, match="the count changed with more inputs"):
        on_line = cf.count_laws_from_model(apply, params, inputs=line, check_inputs=np.random
                                           .default_rng(0).standard_normal((16, 3)))
    assert "span 4 functions" in on_line.count.sample_reduction  # e_j span 8: not used
    assert on_line.count.sample_reduction.endswith("of the inputs")
    assert "span 8 functions" in on_line.recount.sample_reduction and not on_line.stable
    assert on_line.recount.n_laws == tm.affine_formula(dims) < on_line.count.n_laws


def test_missed_cells_are_the_probe_inputs_in_cells_the_sample_does_not_reach():
    """relu(W x) with W = ±I on R²: the cells are the four quadrants. A sample in three of them
    misses the fourth; of a probe in all four, exactly its inputs in the fourth are returned,
    and none of the sample's own inputs."""
    from jax.flatten_util import ravel_pytree

    rng = np.random.default_rng(0)
    signs = np.array([[1, 1], [-1, 1], [-1, -1]])
    sample = np.abs(rng.standard_normal((30, 2))) * np.repeat(signs, 10, axis=0)
    params = {"W": np.eye(2), "v": np.ones((1, 2))}
    model = cf.from_model(lambda p, x: p["v"] @ jax.nn.relu(p["W"] @ x), params, inputs=sample)
    probe = rng.standard_normal((90, 2))
    fourth = np.flatnonzero((probe[:, 0] > 0) & (probe[:, 1] < 0))
    thetas = np.stack([np.asarray(ravel_pytree({"W": w, "v": np.ones((1, 2))})[0])
                       for w in (np.eye(2), -np.eye(2))])
    with cf.float64_mode():
        for theta in thetas:
            np.testing.assert_array_equal(model.missed_cells(theta[None], probe), fourth)
        assert model.missed_cells(thetas, np.concatenate([sample] * 3)).size == 0
    # the recount gets N more inputs drawn like the sample, and those of the missed quadrant
    res = cf.count_laws_from_model(model, patterns=False)
    assert res.report.n_inputs_checked > 2 * len(sample)


def test_spanning_columns_keeps_a_basis_and_refuses_near_relations():
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((40, 5))
    values = np.column_stack([basis, basis @ rng.standard_normal((5, 7)), np.zeros(40)])
    keep = _spanning_columns(values)
    assert keep is not None and keep.size == 5
    assert np.linalg.matrix_rank(values[:, keep]) == 5
    assert _spanning_columns(basis) is None  # independent: nothing to drop
    nearly = np.column_stack([values, basis[:, 0] + 1e-8 * rng.standard_normal(40)])
    assert _spanning_columns(nearly) is None  # one column neither spanned nor clearly new


def _relu_net(p, x):
    return p["W2"] @ jax.nn.leaky_relu(p["W1"] @ jax.nn.relu(p["W0"] @ x + p["b0"]), 0.1)


_RELU_PARAMS = {"W0": np.zeros((4, 2)), "b0": np.zeros(4), "W1": np.zeros((3, 4)),
                "W2": np.zeros((1, 3))}


def test_frozen_switches_follow_the_given_branch():
    """`frozen_apply` with an input's own pattern is the network; with another pattern, the
    network whose units take that pattern's branches (ReLU: on or off, leaky ReLU: slope 1 or
    0.1), written out by hand."""
    from conflow.models.from_model import branch_recorder, frozen_apply

    rng = np.random.default_rng(1)
    p = {k: rng.standard_normal(v.shape) for k, v in _RELU_PARAMS.items()}
    x, y = rng.standard_normal(2), rng.standard_normal(2)
    with cf.float64_mode():
        record = branch_recorder(_relu_net, p, x)[0]
        frozen = frozen_apply(_relu_net, p, x)
        own, other = np.asarray(record(p, x)), np.asarray(record(p, y))
        assert own.shape == (7,)
        np.testing.assert_allclose(frozen(p, x, own), _relu_net(p, x), rtol=1e-14)
        h = (p["W0"] @ x + p["b0"]) * other[:4]
        z = p["W1"] @ h
        by_hand = p["W2"] @ np.where(other[4:] == 1, z, 0.1 * z)
        np.testing.assert_allclose(frozen(p, x, other), by_hand, rtol=1e-12)


def test_cell_model_counts_the_region_as_the_exact_engine_does():
    """The activation cells' model at θ (`SampledModel.cell_model`: every cell's outputs on
    the basis inputs 0, e_1, e_2) is counted at generic points of its polynomial; the exact
    engine counts the sample's own polynomial on θ's activation region, and the cells' model
    (as escalation does when the numeric count of the cells is not ok). They agree when
    every cell holds d + 1 = 3 affinely independent inputs: here triples 1e-7 apart, which make
    the sample's generators nearly parallel, not the cells'."""
    from conflow.flows import parse_flow
    from conflow.laws.count import _exact_cells
    from conflow.laws.exact_count import exact_count_laws

    rng = np.random.default_rng(0)
    u = rng.standard_normal((8, 2))
    triples = [u] + [u + 1e-7 * rng.standard_normal(u.shape) for _ in range(2)]
    model = cf.from_model(_relu_net, _RELU_PARAMS, inputs=np.concatenate(triples))
    with cf.float64_mode():
        for theta in np.asarray(model.sample_points(3, 1)):
            cells, note = model.cell_model(theta)
            assert "activation cells of 24 inputs, each on 3 basis inputs" in note
            np.testing.assert_allclose(cells.phi_jacobian(jnp.asarray(theta)),
                                       jax.jacfwd(cells.phi)(jnp.asarray(theta)), atol=1e-13)
            exact = exact_count_laws(model, parse_flow(None), region=theta)
            numeric = cf.count_laws(cells, method="numeric")
            exact_cells = _exact_cells(cells, parse_flow(None), model.D, 0, 30)
            assert exact.status == numeric.status == exact_cells.status == "ok"
            assert numeric.dim_lie == exact.dim == exact_cells.dim


def test_exact_cells_confirm_the_numeric_dimension_once():
    """Numeric counts of the cells' models that are not ``ok`` (weak directions) but whose every
    point reached one dimension are settled by one region's ``ok`` count: a numeric one where
    there is one (no exact count then), else ONE exact count, of the first region's cells, when
    it finds that dimension; a numeric dimension it contradicts is not taken from it: then every
    region that is not ``ok`` is counted exactly."""
    from conflow.flows import parse_flow
    from conflow.laws.count import _exact_cell_runs

    model = cf.from_model(_relu_net, _RELU_PARAMS, input_shape=(2,))
    flow = parse_flow(None)
    with cf.float64_mode():
        thetas = np.asarray(model.sample_points(5, 2))
        cells = [model.cell_model(t)[0] for t in thetas]
    numeric = cf.count_laws(cells[0], method="numeric")
    assert numeric.status == "ok"
    weak = dataclasses.replace(numeric.trace, status=Status.AMBIGUOUS, dim=None)
    notes = ["cells", "cells"]
    runs = _exact_cell_runs([weak, weak], cells, notes, flow, model.D, 0, 30, None)
    assert runs[0] is runs[1] and runs[0].status == "ok" and runs[0].dim == numeric.dim_lie
    assert notes[0].endswith("exact on the first, the same dimension as all 6 numeric points")
    notes = ["cells", "cells"]
    with unittest.mock.patch("conflow.laws.count._exact_cells") as never:
        runs = _exact_cell_runs([weak, numeric.trace], cells, notes, flow, model.D, 0, 30, None)
    never.assert_not_called()
    assert runs == [numeric.trace] * 2
    assert notes[0].endswith("numeric and ok on region 2, the same dimension as all 6 numeric "
                             "points")
    off = dataclasses.replace(weak, point_dims=tuple(d - 1 for d in weak.point_dims))
    runs = _exact_cell_runs([off, off], cells, ["cells", "cells"], flow, model.D, 0, 30, None)
    assert runs[0] is not runs[1] and [r.dim for r in runs] == [numeric.dim_lie] * 2


def test_cell_model_applies_to_piecewise_affine_networks_only():
    smooth = cf.from_model(lambda p, x: p["W1"] @ jax.numpy.tanh(p["W0"] @ x),
                           {"W0": np.zeros((3, 2)), "W1": np.zeros((1, 3))}, input_shape=(2,))
    squared = cf.from_model(lambda p, x: _relu_net(p, x) ** 2, _RELU_PARAMS, input_shape=(2,))
    with cf.float64_mode():
        assert smooth.cell_model(np.asarray(smooth.sample_points(0, 1))[0]) == (
            None, "no recorded switch")
        cells, why = squared.cell_model(np.asarray(squared.sample_points(0, 1))[0])
        assert cells is None and why.startswith("not affine in the input")


def test_activation_cells_settle_nearly_parallel_generators():
    """A bias-free ReLU net [2, 4, 4, 1] on inputs in 40 narrow cones (triples 1e-8 apart):
    within a cell the sample's generators are nearly parallel, and the numeric count alone is
    not ``ok``. Escalation counts the activation cells' model instead (each cell's outputs at
    0, e_1, e_2) and settles it at one law per hidden neuron (MATH.md: ‖w_in‖² − ‖w_out‖²)."""
    rng = np.random.default_rng(0)
    u = rng.standard_normal((40, 2))
    inputs = np.concatenate([u] + [u + 1e-8 * rng.standard_normal(u.shape) for _ in range(2)])
    model = cf.from_model(lambda p, x: p["W2"] @ jax.nn.relu(p["W1"] @ jax.nn.relu(p["W0"] @ x)),
                          {"W0": np.zeros((4, 2)), "W1": np.zeros((4, 4)), "W2": np.zeros((1, 4))},
                          inputs=inputs)
    assert cf.count_laws(model, escalate=False).status != "ok"
    r = cf.count_laws(model)
    assert r.status == "ok" and r.n_laws == 8
    assert r.settled_by.startswith("activation cells")
    assert r.model == model.label  # the model's label, not the step's


def test_affine_formula_on_an_equinox_mlp_matches_the_exact_engine():
    """eqx.nn.MLP(2 → 6 → 1), identity, biases: saturated, p = 2 + 1 + 1 = 4 < 6, so
    4·6 − 4·3/2 = 18 laws, not 6·7/2 = 21."""
    pytest.importorskip("equinox")
    case = tm.mlp_case("eqx", "identity", (2, 6, 1), True)
    assert case.expected == 18
    net, shape = tm.build(case)
    r = cf.count_laws(cf.from_model(net, input_shape=shape), method="exact")
    assert r.status == "ok" and r.n_laws == 18 and r.D == case.D


def _conv_path_lifting(nd, c0, c1, k, size, out, bias):
    """The path-lifting φ of Conv + ReLU + flatten + Linear: for each path input → (channel j,
    position t) → output o, U[o, (j, t)]·V[j, i, s]; with biases also U[o, (j, t)]·b_j and the
    output bias c_o. On each activation region the net is linear in φ, and the hidden units
    (j, t) have pairwise distinct hyperplanes (windows of c0·k^nd ≥ 2 inputs at distinct
    offsets), so the net's laws are those of φ (P1 Thm 2.14 / P3 Thm 3.4, MATH.md §1.3)."""
    import jax.numpy as jnp

    positions = (size - k + 1) ** nd
    params = {"V": np.zeros((c1, c0 * k**nd)), "U": np.zeros((out, c1 * positions))}
    if bias:
        params.update(b=np.zeros(c1), c=np.zeros(out))

    def phi(p):
        U = p["U"].reshape(out, c1, positions)
        paths = [jnp.einsum("ojt,js->ojts", U, p["V"]).ravel()]
        if bias:
            paths += [jnp.einsum("ojt,j->ojt", U, p["b"]).ravel(), p["c"]]
        return jnp.concatenate(paths)

    return cf.custom(phi, params, name=f"conv{nd}d-path")


@pytest.mark.parametrize("geometry", [(1, 1, 2, 2, 4, 2, True), (2, 1, 2, 2, 3, 1, False),
                                      (1, 2, 3, 2, 5, 1, True)],
                         ids=["conv1d-bias-ch[1,2]-k2-n4-out2", "conv2d-nobias-ch[1,2]-k2-n3-out1",
                              "conv1d-bias-ch[2,3]-k2-n5-out1"])
def test_conv_one_law_per_channel_is_certified(geometry):
    """One law per hidden CHANNEL, not per (channel, position): the rescaling v_j, b_j → λ·, the
    outgoing U[:, (j, ·)] → ·/λ is shared by all positions of channel j. Certified by the exact
    engine on the path-lifting φ. By eye, numeric on the net itself (count_laws_from_model,
    conv1d-bias-ch[1,2]-k2-n4-out2, D = 20): rank 18 at levels 0 and 1 on 3/3 points, σ kept
    0.080 0.079 0.050 | dropped 3.9e-16 3.4e-16 3.0e-16 — a clean cut leaving 2 = c1 laws."""
    nd, c0, c1, k, size, out, bias = geometry
    model = _conv_path_lifting(nd, c0, c1, k, size, out, bias)
    assert model.D == tm.conv_D(f"conv{nd}d", c0, c1, k, size, out, bias)
    r = cf.count_laws(model, method="exact")
    assert r.status == "ok" and r.n_laws == c1 == tm.conv_case(f"conv{nd}d", c0, c1, k, size,
                                                               out, bias).expected


# ------------------------------------------------------------------------------------------------
# models as users write them: ok AND right
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(MLPS + CONVS))
def test_model_from_code_count(case):
    """MLPs — ReLU / leaky ReLU: one law per hidden neuron; GELU / tanh / softplus: none;
    identity: the linear / affine formula — and conv nets (one law per hidden channel). For
    (leaky) ReLU nets with ≥ 2 hidden layers this is the count of the region where every unit
    switches on its inputs: at some Gaussian θ a deeper unit is dead, always on, or active on a
    sliver the sample misses, and the local count there differs — the engine must avoid or detect
    such points (`trust_models` docstring), not count them."""
    _requires(case)
    r = tm.count(case, points=3)
    assert r.model.D == case.D
    _assert_ok_and_right(case, r)


@pytest.mark.parametrize("case", _params(BUILTINS))
def test_builtin_deep_count(case):
    r = tm.count(case, points=3)
    assert r.D == case.D
    _assert_ok_and_right(case, r)


# ------------------------------------------------------------------------------------------------
# adversarial families: ok and right, or ambiguous — never ok and wrong
# ------------------------------------------------------------------------------------------------

ADVERSARIAL = [
    ("parallel", (1.0, 1e-4, 1e-10, 1e-14)),
    ("parallel-linear", (1.0, 1e-8, 1e-14)),
    ("scale", (1.0, 1e-8, 1e8)),
    ("bracket", (1.0, 1e-6, 1e-10, 1e-14)),
]


@pytest.mark.parametrize("case", _params([tm.adversarial_case(f, e) for f, eps in ADVERSARIAL
                                          for e in eps]))
def test_adversarial_family(case):
    family = case.kind[4:]
    truth, _, _ = tm.ADVERSARIAL[family]
    assert case.expected == truth
    r = tm.count(case, points=3)
    assert r.D == case.D
    # every member, the well-separated one and the near-degenerate ones: the
    # engine must find the hand-derived count (escalating to the exact engine where it has to)
    _assert_ok_and_right(case, r)
