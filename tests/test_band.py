"""The rank band (rounding floor, noise ceiling, signal floor), escalation, progress, and the
structured coefficients that make deep ReLU counts cost a forward pass."""

import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.engine import trace as trace_module
from conflow.engine.rank import (
    NOISE_FACTOR,
    UNIT_ROUNDOFF,
    rank_band,
    rounding_amplification,
    trace_error,
)
from conflow.models.relu import relu_phi


def test_band_floor_grows_with_the_stack_and_the_basis_error():
    small, large = rank_band(10, 3), rank_band(1000, 1000)
    assert small.floor == pytest.approx(UNIT_ROUNDOFF["float64"] * (np.sqrt(10) + np.sqrt(3)))
    assert large.floor > small.floor
    assert small.noise == pytest.approx(NOISE_FACTOR * small.floor)
    assert small.noise < small.cut < small.signal
    assert rank_band(10, 3, basis_error=1e-10).floor > 1e-10
    assert rank_band(10, 3, "float32").floor > 1e8 * small.floor
    assert rank_band(10, 3, rtol=1e-3).cut == 1e-3


def _levels(s0, dropped1, noise1=1e-11):
    from conflow.engine.levels import LevelRecord

    return [LevelRecord(0, 8, (5,), (5,), s0, 1e-16, 0.0, noise=1e-14, signal=1e-10),
            LevelRecord(1, 8, (5,), (0,), None, dropped1, 0.0, noise=noise1, signal=1e-7)]


def test_weak_generators_settled_only_by_a_level_one_stack_far_below_their_brackets():
    weak = trace_module._weak_generators
    # brackets of weak generators (~s0² = 1e-12) under the noise ceiling of depth 1 (1e-11) ...
    assert "weak generator directions" in weak(_levels(1e-6, 5e-13))  # ... and near its σ's
    assert "weak generator directions" in weak(_levels(1e-6, None))  # ... and nothing to see
    # ... where the level-1 stack shows nothing within WEAK_BRACKET_MARGIN of them: settled
    assert weak(_levels(1e-6, 1e-12 / trace_module.WEAK_BRACKET_MARGIN / 2)) == ""
    assert weak(_levels(1e-4, 5e-13)) == ""  # brackets above the noise ceiling


def test_band_unsettled_values():
    band = rank_band(10, 3)
    sigma = np.array([1.0, 1e-12, 1e-17])
    # cut at the band: 1e-12 is inside the band
    assert band.unsettled(sigma, 1).tolist() == [1e-12]
    # a user's cut that keeps rounding noise, or drops a clear direction, is unsettled too
    assert band.unsettled(np.array([1.0, 1e-17]), 2).tolist() == [1e-17]
    assert band.unsettled(np.array([1.0, 0.5]), 1).tolist() == [0.5]
    assert band.unsettled(np.array([1.0, 1e-17]), 1).size == 0


def test_a_weak_kept_direction_is_settled_only_far_above_what_its_stack_dropped():
    band = rank_band(10, 3)  # rounding 5.4e-16, noise ceiling 1.6e-15, signal floor 1.6e-11
    assert band.noise < 1e-11 < band.signal
    # kept, inside the band, and 1e4 × above the dropped σ and the rounding: a direction
    assert band.unsettled(np.array([1.0, 1e-11, 1e-17]), 2).size == 0
    # less than min_gap above the rounding: unsettled
    assert band.unsettled(np.array([1.0, 1e-12, 1e-17]), 2).tolist() == [1e-12]
    assert rank_band(10, 3, min_gap=1e2).unsettled(np.array([1.0, 1e-12, 1e-17]), 2).size == 0
    # what the stack dropped is above the noise ceiling: its rounding is not known, no exception
    assert band.unsettled(np.array([1.0, 1e-11, 1e-14]), 2).tolist() == [1e-11, 1e-14]
    # nothing dropped: no evidence either
    assert band.unsettled(np.array([1.0, 1e-11]), 2).tolist() == [1e-11]
    # the exception is for kept σ's only: a dropped one inside the band stays unsettled
    assert band.unsettled(np.array([1.0, 1e-11, 1e-17]), 1).tolist() == [1e-11]


def test_rounding_amplification_follows_inner_cancellation():
    values = jnp.array([[1.0, 0.0], [1e-6, 0.0], [1.0, 1.0]])
    scales = jnp.array([1.0, 1.0, 2.0])  # row 1 came out of a cancellation by 1e6
    eps = np.asarray(rounding_amplification(values, scales))
    assert eps[0] == 1.0 and eps[1] == pytest.approx(2.0)
    assert eps[2] == pytest.approx(1.0 + 1e6 * 2.0)
    # an exactly zero inner row makes the rows above it zero: no amplification is invented
    zero = np.asarray(rounding_amplification(jnp.zeros((3, 2)), jnp.zeros(3)))
    assert np.all(np.isfinite(zero))


def _near_parallel(eps):
    """φ = (x0 x1, x0 x1 + ε x2): the fields span {(x1, x0, 0), e3} and [X, e3] = 0: 1 law."""
    return cf.custom(lambda p: jnp.stack([p["x"][0] * p["x"][1],
                                          p["x"][0] * p["x"][1] + eps * p["x"][2]]),
                     {"x": np.zeros(3)})


@pytest.mark.parametrize("eps", [1e-12, 1e-14])
def test_near_parallel_generators_are_never_a_wrong_ok(eps):
    model = _near_parallel(eps)
    plain = cf.count_laws(model, method="numeric", escalate=False)
    assert plain.status == "ambiguous" and plain.n_laws is None, plain.summary()
    assert plain.trace.uncertain and "neither rounding nor clear" in plain.reason
    settled = cf.count_laws(model, method="numeric")
    assert settled.status == "ok" and settled.n_laws == 1, settled.summary()
    assert settled.settled_by.startswith("exact")
    assert [a.step for a in settled.attempts] == ["numeric", "exact"]
    assert settled.to_json()["settled_by"] == settled.settled_by
    assert "settled by exact" in settled.summary()


def test_exact_escalation_is_skipped_when_its_estimate_is_too_dear(monkeypatch):
    """The exact step runs only when `exact_cost` is below ESCALATE_EXACT_MAX_SECONDS (a deep
    linear net's exact count, estimated at 6.6e8 s, once exhausted 20 GB)."""
    from conflow.laws import count as count_module

    monkeypatch.setattr(count_module, "ESCALATE_EXACT_MAX_SECONDS", 0.0)
    monkeypatch.setattr(count_module, "_evaluated_trace", lambda *a, **k: None)  # the last step
    result = cf.count_laws(_near_parallel(1e-14), method="numeric")
    assert "exact" not in [a.step for a in result.attempts]
    assert result.status == "ambiguous" and result.n_laws is None
    assert "not tried: exact (the exact engine's estimated cost is too high)" in result.reason


def test_well_separated_generators_need_no_escalation():
    count = cf.count_laws(_near_parallel(1.0), method="numeric")
    assert count.status == "ok" and count.n_laws == 1 and not count.attempts
    assert not count.trace.uncertain


def test_an_unsettled_count_names_what_was_tried():
    # a smooth, non-polynomial φ, cut by a user's rtol below rounding: no exact step
    # applies, the points reach R^4 with noise kept but the stacked levels do not show full
    # rank, fresh points keep the same cut, so the count stays ambiguous and says so
    model = cf.custom(lambda p: jnp.tanh(p["w"]) * p["v"], {"w": np.zeros(2), "v": np.zeros(2)})
    count = cf.count_laws(model, rtol=1e-30)
    assert count.status == "ambiguous" and count.n_laws is None
    assert "escalation did not settle it" in count.reason and "fresh points" in count.reason
    assert [a.step for a in count.attempts][:3] == ["numeric", "full rank", "fresh points"]


def test_relu_pairing_is_the_structured_coefficient_pairing():
    for dims, bias in [([3, 4, 4, 3], True), ([2, 3, 2], False), ([3, 2, 4, 2, 2], True)]:
        model = cf.relu(dims, bias=bias)
        rng = np.random.default_rng(0)
        theta, f = rng.standard_normal(model.D), rng.standard_normal(sum(dims))
        g = np.split(f, np.cumsum(dims)[:-1])
        parts = []
        for first in range(len(dims) - 1 if bias else 1):
            t = g[first]
            for k in range(first + 1, len(dims)):
                t = np.multiply.outer(t, g[k])
            parts.append(t.ravel())
        a = np.concatenate(parts)
        assert model.n_pairing_coeffs == f.size
        expected = float(a @ relu_phi(jnp.asarray(theta), model.blocks))
        assert float(model.pairing(jnp.asarray(theta), jnp.asarray(f))) == pytest.approx(expected)


def test_deep_relu_counts_cost_a_forward_pass():
    # 4·6⁵·2 ≈ 62k input-output paths: the structured coefficients never enumerate them
    count = cf.count_laws(cf.relu([4, 6, 6, 6, 6, 6, 2], bias=True))
    assert count.status == "ok" and count.n_laws == 30, count.summary()


def test_progress_bar_on_request(capsys, monkeypatch):
    monkeypatch.setattr(trace_module, "PROGRESS_DELAY", 0.0)
    cf.count_laws(cf.linear([2, 3, 2]), method="numeric", progress=True)
    assert "Lie trace" in capsys.readouterr().err
    cf.count_laws(cf.linear([2, 3, 2]), method="numeric", progress=False)
    assert "Lie trace" not in capsys.readouterr().err


def test_auto_counts_tiny_polynomial_models_exactly():
    # nearly dependent brackets at 1e-14 sit at rounding level: only the exact engine tells them
    # apart (φ = (x0, x0 x1 + ε x0² x2 / 2): [X, Y] is ε-close to span{X, Y}, and 0 laws)
    model = cf.custom(lambda x: jnp.stack([x[0], x[0] * x[1] + 1e-14 * x[0] ** 2 * x[2] / 2]),
                      np.zeros(3))
    count = cf.count_laws(model)
    assert count.method == "exact" and count.status == "ok" and count.n_laws == 0
    # numeric options ask for the numeric engine
    assert cf.count_laws(cf.linear([2, 3, 2]), algorithm="dense").method == "numeric"
    assert cf.count_laws(cf.linear([2, 3, 2]), linalg="host").method == "numeric"


def test_method_both_cross_checks_a_relu_network_given_as_code():
    # the exact engine counts the polynomial φ is on the activation regions of the numeric points
    eqx = pytest.importorskip("equinox")
    import jax

    mlp = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.relu, key=jax.random.PRNGKey(1))
    count = cf.count_laws(cf.from_model(mlp, input_shape=(3,)), method="both")
    assert count.status == "ok" and count.n_laws == 4, count.summary()
    assert count.exact.region is not None


def test_method_both_retries_an_ambiguous_numeric_count_at_fresh_points(monkeypatch):
    # a σ at the edge of the band on one draw must not leave the cross-check undone
    import dataclasses

    from conflow.laws import count as count_module

    calls, original = [], count_module.lie_trace

    def first_ambiguous(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        if len(calls) == 1:
            return dataclasses.replace(calls[0], status="ambiguous", dim=None, reason="forced")
        return calls[-1]

    monkeypatch.setattr(count_module, "lie_trace", first_ambiguous)
    checked = cf.count_laws(cf.linear([2, 3, 2]), method="both")
    assert checked.status == "ok" and checked.n_laws == 6, checked.summary()
    assert [a.step for a in checked.attempts] == ["numeric", "fresh points"]
    assert checked.attempts[0].status == "ambiguous" and checked.trace.points.shape[0] == 6
    assert checked.settled_by.startswith("fresh points")
    # without escalation the cross-check stays undone: ambiguous
    calls.clear()
    assert cf.count_laws(cf.linear([2, 3, 2]), method="both", escalate=False).status == "ambiguous"


def test_exact_on_regions_counts_one_region_when_the_numeric_points_agree_with_it():
    # the escalation step "exact on regions": all regions are counted unless every numeric point
    # reached the dimension the first region's exact count certifies
    eqx = pytest.importorskip("equinox")
    import jax

    from conflow.flows import parse_flow
    from conflow.laws.count import _region_trace
    from conflow.laws.points import generic_points

    mlp = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.relu, key=jax.random.PRNGKey(1))
    model = cf.from_model(mlp, input_shape=(3,))
    flow = parse_flow(None)
    states = generic_points(model, flow, 0, 3).points
    run, used = _region_trace(model, flow, 0, 30, states)
    assert run.status == "ok" and model.D - run.dim == 4 and used == 3
    run, used = _region_trace(model, flow, 0, 30, states, numeric_dim=model.D - 4)
    assert run.status == "ok" and run.dim == model.D - 4 and used == 1
    # a numeric dimension the exact count contradicts: every region is counted
    run, used = _region_trace(model, flow, 0, 30, states, numeric_dim=model.D - 5)
    assert run.status == "ok" and run.dim == model.D - 4 and used == 3


def test_trace_error_weighs_each_direction_by_the_rows_coordinates():
    errors = np.array([1e-16, 1e-8])  # a strong direction and a weak one
    # rows with a tiny component on the weak direction inherit little of its error
    assert trace_error(np.array([[1.0, 1e-7], [0.5, 0.0]]), errors) == pytest.approx(1.1e-15)
    # a row along the weak direction inherits all of it: the old worst case, never more
    assert trace_error(np.array([[0.0, 1.0]]), errors) == pytest.approx(1e-8)
    assert trace_error(np.array([[1.0, 1.0]]), errors) == pytest.approx(1e-8)
    assert trace_error(np.zeros((3, 0)), np.zeros(0)) == 0.0


class _Bar:
    def set_postfix_str(self, *args, **kwargs):
        pass

    def update(self, *args):
        pass


def _synthetic_levels(rng, n=6):
    """Rows of each level as random combinations of fixed vectors: level 0 spans u and a weak
    w (σ ~ 1e-7: u and u + 1e-7 w), level 1 adds v at 1e-6 with no component on w, level 2
    adds nothing. The dimensions are 2, 3, 3."""
    u, w, v = np.eye(n)[:3]
    spans = [np.stack([u, u + 1e-7 * w]), np.stack([u, 1e-6 * v]), np.stack([u, w])]

    def evaluate(which, first, depth, n_samples):
        values = np.stack([rng.uniform(-1, 1, (len(which), n_samples, 2)) @ spans[min(k, 2)]
                           for k in range(first, depth + 1)], axis=2)
        scales = np.ones(values.shape[:3])
        return jnp.asarray(values), jnp.asarray(scales)

    return evaluate


@pytest.mark.parametrize("loop", ["dense", "streamed", "device"])
def test_a_weak_trace_direction_does_not_blur_the_next_levels(loop):
    """Later rows with no component on a weak direction do not inherit its error: the 1e-6
    direction of level 1 is a clean direction (it was in the band when every row was charged
    the weakest direction's error)."""
    from conflow.engine import levels as lv
    from conflow.engine.device_basis import DeviceBases

    evaluate, P, n = _synthetic_levels(np.random.default_rng(0)), 2, 6
    band_for = lambda rows, cols, beta: rank_band(rows, cols, "float64", None, beta)  # noqa: E731
    args = (band_for,)
    if loop == "dense":
        found = lv.dense_levels(evaluate, P, n, 2, 4, *args, _Bar(), lambda: False)
    elif loop == "streamed":
        found = lv.streamed_levels(evaluate, P, n, 2, 4, *args, 8, _Bar(), lambda: False)
    else:
        found = lv.device_levels(evaluate, DeviceBases(P, n, "float64"), 2, 4, *args, None,
                                 _Bar(), lambda: False)
    assert found.dims == [3, 3]
    assert [r.ranks for r in found.records[:2]] == [(2, 2), (3, 3)]
    assert not any(r.uncertain for r in found.records)


@pytest.mark.parametrize("loop", ["dense", "streamed", "device"])
def test_a_costly_field_probes_each_bracket_level_first(loop):
    """For a costly field each bracket level starts with a probe of `PROBE_SAMPLES` samples: a
    level that adds nothing (the last of every count) stops there, one that adds more than a
    probe can show (20 directions) gets its full stack, and the ranks are those of the
    one-stack loop."""
    from conflow.engine import levels as lv
    from conflow.engine.device_basis import DeviceBases

    n, P, m = 40, 2, 30
    eye = np.eye(n)
    spans = [eye[:2], np.concatenate([eye[:1], eye[2:22]]), eye[:22]]  # +2, +20, +0

    def run(costly):
        rng, calls = np.random.default_rng(0), []

        def evaluate(which, first, depth, n_samples, chunk=None):
            calls.append((depth, n_samples, chunk))
            values = np.stack([rng.uniform(-1, 1, (len(which), n_samples, len(spans[k])))
                               @ spans[k] for k in range(first, depth + 1)], axis=2)
            return jnp.asarray(values), jnp.asarray(np.ones(values.shape[:3]))

        band_for = lambda rows, cols, beta: rank_band(rows, cols, "float64", None, beta)  # noqa: E731
        if loop == "dense":
            found = lv.dense_levels(evaluate, P, n, m, 2, band_for, _Bar(), lambda: False,
                                    costly_field=costly)
        elif loop == "streamed":
            found = lv.streamed_levels(evaluate, P, n, m, 2, band_for, 512, _Bar(),
                                       lambda: False, costly_field=costly)
        else:
            found = lv.device_levels(evaluate, DeviceBases(P, n, "float64"), m, 2, band_for,
                                     None, _Bar(), lambda: False, costly_field=costly)
        return found, calls

    plain, _ = run(False)
    probed, calls = run(True)
    assert plain.dims == probed.dims == [22, 22] and plain.converged and probed.converged
    assert [r.ranks for r in probed.records] == [r.ranks for r in plain.records] == [
        (2, 2), (22, 22), (22, 22)]
    level = {r.depth: r.samples for r in probed.records}
    assert level[2] == lv.PROBE_SAMPLES < {r.depth: r.samples for r in plain.records}[2]
    assert level[1] > lv.PROBE_SAMPLES  # the probe filled: more samples were drawn
    assert calls[1][:2] == (1, lv.PROBE_SAMPLES)  # level 1 starts with the probe
    if loop == "dense":  # the rest of a filled probe reuses the probe's program (its chunk)
        assert [c for c in calls if c[0] == 1][1][2] == lv.PROBE_SAMPLES


def test_a_smooth_net_on_one_dimensional_inputs_is_settled_by_stacking_its_levels():
    """A tanh MLP 1-6-6-1 (biases, D = 61) on 1-D inputs: its output gradients over x form a
    smooth kernel whose spectrum decays to rounding, so level 0 keeps weak directions and level
    1 inherits their errors up to a signal floor above 1. The level loop stops there (it used
    to go on, one direction per level, compiling brackets of depth 4 and more for minutes);
    levels 0–1 stacked at each point show full rank clearly: no law, as for every tanh net."""
    import jax

    from conflow.engine.levels import BLIND

    eqx = pytest.importorskip("equinox")
    net = eqx.nn.MLP(1, 1, 6, 2, activation=jax.nn.tanh, key=jax.random.PRNGKey(0))
    model = cf.from_model(net, input_shape=(1,))
    count = cf.count_laws(model)
    first = count.attempts[0]
    assert first.step == "numeric" and first.status == "ambiguous" and BLIND in first.reason
    assert "depth 1 " in first.reason
    assert count.status == "ok" and count.n_laws == 0, count.summary()
    assert count.settled_by.startswith("full rank")
    stacked = count.trace
    assert stacked.algorithm == "stacked" and stacked.point_dims == (61, 61, 61)
    assert stacked.sigma_r >= stacked.levels[-1].signal


def test_full_rank_is_tried_again_at_the_fresh_points(monkeypatch):
    """Full rank applies to a trace with R^n in sight (a point at n, a blind level, or as many
    undecided values as missing dimensions); when only the fresh points' trace has it, the
    step runs again there. Forced here: the first trace of the tanh 1-6-6-1 net is made to
    fall short of n without a blind level or undecided values."""
    import dataclasses

    import jax

    from conflow.laws import count as count_module

    eqx = pytest.importorskip("equinox")
    net = eqx.nn.MLP(1, 1, 6, 2, activation=jax.nn.tanh, key=jax.random.PRNGKey(0))
    model = cf.from_model(net, input_shape=(1,))
    calls, original = [], count_module.lie_trace

    def first_short(*args, **kwargs):
        calls.append(original(*args, **kwargs))
        if len(calls) == 1:
            levels = tuple(dataclasses.replace(level, uncertain=()) for level in calls[0].levels)
            return dataclasses.replace(calls[0], status="ambiguous", dim=None, reason="forced",
                                       point_dims=(model.D - 1,) * 3, levels=levels)
        return calls[-1]

    monkeypatch.setattr(count_module, "lie_trace", first_short)
    count = cf.count_laws(model)
    assert [a.step for a in count.attempts] == ["numeric", "fresh points", "full rank"]
    assert count.status == "ok" and count.n_laws == 0, count.summary()
    assert count.trace.points.shape[0] == 6


@pytest.mark.parametrize("model, dim", [(cf.linear([2, 3, 2]), 6),
                                        (cf.relu([2, 3, 2], bias=True), 12)])
def test_stacked_levels_give_a_lower_bound_and_full_rank_only_when_clear(model, dim):
    """Below full rank the stacked levels show nothing more than their clear rank, which is
    a lower bound of dim Lie(W)(z) (here equal to it: 6 of 12, 12 of 15)."""
    from conflow.engine.full_rank import full_rank_trace
    from conflow.errors import InputError

    flow = cf.GradientFlow()
    with cf.float64_mode():
        points = np.asarray(flow.sample_points(model, 0, 3))
    found = full_rank_trace(flow.family(model), points, depth=2)
    assert found.status == "ambiguous" and found.dim is None
    assert found.point_dims == (dim,) * 3
    assert "do not show full rank" in found.reason
    with pytest.raises(InputError, match="depth must be >= 1"):
        full_rank_trace(flow.family(model), points, depth=0)
    stopped = full_rank_trace(flow.family(model), points, depth=2, time_limit=1e-9)
    assert stopped.status == "not_converged" and stopped.reason.startswith("time limit of 1e-09")


def test_a_blind_level_that_added_nothing_has_not_converged():
    """A level whose band cannot tell directions from rounding (signal floor ≥ 1) and that kept
    nothing ends the loop as blind, not as converged: it could not see what it would add."""
    from conflow.engine import levels as lv
    from conflow.engine.rank import RankBand

    tally = lv._Tally(1, 2, None, [np.zeros(0), np.zeros(0)])
    tally.bands.append(RankBand(rounding=1e-16, floor=1e-4, noise=3e-4, signal=3.0, cut=0.03))
    tally.uncertain.extend([1e-2, 1e-3])
    ended = lv._ended(tally, [], [5, 5], [], [1e-2, 1e-3])
    assert ended is not None and not ended.converged and lv.BLIND in ended.blind
    tally.uncertain.clear()  # the same level with a clean band has converged
    ended = lv._ended(tally, [], [5, 5], [], [1e-2, 1e-3])
    assert ended is not None and ended.converged and not ended.blind


def test_full_rank_is_in_sight_when_the_undecided_values_cover_the_missing_dimensions():
    """`_full_rank_in_sight`: a point at n, a blind level, or as many undecided values (over
    points and levels) as a point's missing dimensions; not otherwise."""
    import dataclasses

    from conflow.engine.levels import BLIND, LevelRecord
    from conflow.laws.count import _full_rank_in_sight

    trace = cf.count_laws(cf.linear([2, 3, 2]), method="numeric", escalate=False).trace
    record = dataclasses.replace(trace.levels[0], uncertain=(1e-11,) * 5)
    short = dataclasses.replace(trace, point_dims=(6, 6, 6), levels=(record,))
    assert isinstance(record, LevelRecord) and trace.state_dim == 12
    assert not _full_rank_in_sight(short)  # 6 + 5 < 12
    assert _full_rank_in_sight(dataclasses.replace(short, point_dims=(6, 7, 6)))  # 7 + 5
    assert _full_rank_in_sight(dataclasses.replace(short, point_dims=(6, 12, 6)))
    assert _full_rank_in_sight(dataclasses.replace(short, reason=f"depth 1 {BLIND}: …"))
    assert _full_rank_in_sight(dataclasses.replace(short, levels=(record, record)))  # 6 + 10
