"""Bounded resources (issue 18): estimates before a count (`conflow.laws.cost`), the memory
guard (fall back to smaller batches or the streamed engine, or refuse with the estimate and the
option that would fit), ``--max-memory`` / ``--time-limit`` and their keyword arguments. No
timed assertion: the time limits used are tiny (the count stops at once) or simulated."""

from __future__ import annotations

import types

import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.cli.main import main
from conflow.engine import trace as trace_module
from conflow.errors import InputError, TooLargeError
from conflow.exact import bracket, exact_lie_trace, polynomial_form
from conflow.exact.polynomial import TimeLimitError, time_bound
from conflow.flows import parse_flow
from conflow.laws import cost
from conflow.laws import count as count_module
from conflow.laws.count import plan_numeric
from conflow.laws.exact_count import exact_count_laws


@pytest.mark.parametrize("text, expected", [
    ("4G", 4 * 2**30), ("500M", 500 * 2**20), ("1.5T", int(1.5 * 2**40)), ("2048K", 2**21),
    ("4GB", 4 * 2**30), ("4GiB", 4 * 2**30), ("123", 123), (" 2g ", 2 * 2**30), (10**9, 10**9),
])
def test_sizes(text, expected):
    assert cost.parse_size(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("90", 90.0), ("90s", 90.0), ("5m", 300.0), ("5min", 300.0), ("1.5h", 5400.0),
    ("1e-3", 1e-3), (2.5, 2.5),
])
def test_durations(text, expected):
    assert cost.parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["", "4X", "-1G", "0", "G", "nan", "inf", True, "1e400", 10**400,
                                 -1, float("nan"), None])
def test_bad_sizes_are_input_errors(bad):
    with pytest.raises(InputError, match="--max-memory must be a"):
        cost.parse_size(bad)


@pytest.mark.parametrize("bad", ["", "5 minutes", "-3", "0", "0s", "m", "nan", False, "1e400",
                                 10**400, -2.0, float("inf"), None])
def test_bad_durations_are_input_errors(bad):
    with pytest.raises(InputError, match="--time-limit must be a"):
        cost.parse_duration(bad)


def _one_line(capsys, argv, code, match):
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("conflow: error: ") and match in err[0], err
    return err[0]


@pytest.mark.parametrize("option, value", [
    ("--max-memory", "4X"), ("--max-memory", "0"), ("--max-memory", "-1G"),
    ("--time-limit", "abc"), ("--time-limit", "0"), ("--time-limit", "-5"),
])
def test_bad_limit_options_are_one_line_and_exit_2(capsys, option, value):
    _one_line(capsys, ["count", "linear", "2,3,2", f"{option}={value}"], 2,
              f"argument {option}: must be")


def test_estimates_follow_the_engine_and_the_sizes():
    small = cf.linear([20, 20, 20, 20, 20, 20])  # n = 2000: dense
    dense = cost.numeric_cost(small, None, 3)
    assert dense.engine == "dense" and dense.bytes > 3 * 2000**2 * 8  # the complements
    assert cost.numeric_cost(small, None, 6).bytes > dense.bytes
    assert cost.numeric_cost(small, None, 3, "streamed").engine == "streamed"
    big = cf.relu([200, 200, 200], bias=True)  # D = 80 200: streamed, O(P n r) memory
    huge = cost.numeric_cost(big, None, 3)
    assert big.D == 80200 and huge.engine == "streamed"
    assert huge.bytes > 3 * 80200 * 80000 * 8 and huge.seconds > 3600
    line = huge.line()
    assert line.startswith("streamed engine, ~") and "GB" in line
    momentum = cost.numeric_cost(cf.linear([3, 4, 3]), "momentum", 3)
    assert momentum.seconds > cost.numeric_cost(cf.linear([3, 4, 3]), None, 3).seconds


def _room() -> int:
    available = cost.available_memory()
    if available is None:
        pytest.skip("cannot read the machine's available memory")
    return available


def test_the_dense_engine_falls_back_to_the_streamed_one_when_it_does_not_fit():
    model, flow = cf.linear([20, 20, 20, 20, 20, 20]), parse_flow(None)
    dense = cost.numeric_cost(model, flow, 3, "dense", max_chunk=1, block=16)  # its least
    streamed = cost.numeric_cost(model, flow, 3, "streamed")
    assert streamed.bytes < dense.bytes < _room()
    budget = int((streamed.bytes + dense.bytes) / 2)
    assert plan_numeric(model, flow, 3, "auto", 6, None).algorithm == "auto"
    plan = plan_numeric(model, flow, 3, "auto", 6, budget)
    assert plan.algorithm == "streamed" and plan.cost.bytes <= budget and "streamed" in plan.note
    with pytest.raises(TooLargeError, match="--algorithm streamed fits") as info:
        plan_numeric(model, flow, 3, "dense", 6, budget)  # asked for dense: no silent switch
    assert "\n" not in str(info.value)


def test_smaller_batches_are_tried_before_a_refusal():
    model, flow = cf.linear([20, 20, 20, 20, 20, 20]), parse_flow(None)
    full = cost.numeric_cost(model, flow, 3, "dense")
    lean = cost.numeric_cost(model, flow, 3, "dense", max_chunk=8)
    assert lean.bytes < full.bytes < _room()
    plan = plan_numeric(model, flow, 3, "dense", 6, int(lean.bytes) + 1)
    assert plan.algorithm == "dense" and plan.max_chunk <= 8 and "smaller batches" in plan.note


def test_a_refusal_names_the_option_that_fits():
    model, flow = cf.linear([20, 20, 20, 20, 20, 20]), parse_flow(None)
    three = cost.numeric_cost(model, flow, 3, "streamed", max_chunk=1, block=16)
    assert three.bytes < _room()
    with pytest.raises(TooLargeError, match="--points 3 fits") as info:
        plan_numeric(model, flow, 40, "auto", 6, int(three.bytes * 1.05))
    assert str(info.value).startswith("out of memory (estimated before starting)")


def test_a_count_that_cannot_fit_is_refused_up_front_with_its_estimate(capsys):
    err = _one_line(capsys, ["count", "relu", "200,200,200", "--bias", "--max-memory", "1G"], 2,
                    "out of memory (estimated before starting): relu[200,200,200]+bias")
    assert "streamed engine, ~" in err and "more than --max-memory 1 GB" in err or "available" in err
    assert "fits" in err or "no option makes it fit" in err
    with pytest.raises(TooLargeError):
        cf.count_laws(cf.relu([200, 200, 200], bias=True), max_memory="1G", method="numeric")


def test_a_count_runs_streamed_when_only_that_fits():
    model = cf.linear([3, 4, 4, 3])
    dense = cost.numeric_cost(model, None, 3, "dense", max_chunk=1, block=16)
    streamed = cost.numeric_cost(model, None, 3, "streamed", max_chunk=1, block=16)
    assert streamed.bytes < dense.bytes  # the least each needs
    result = cf.count_laws(model, method="numeric", progress=False,
                           max_memory=int(dense.bytes) - 1)
    assert result.status == "ok" and result.n_laws == 20 and result.trace.algorithm == "streamed"


def test_a_tiny_time_limit_stops_the_count_as_not_converged(capsys):
    result = cf.count_laws(cf.linear([3, 4, 4, 3]), method="numeric", time_limit=1e-3,
                           progress=False)
    assert result.status == "not_converged" and result.n_laws is None
    assert result.reason.startswith("time limit of 0.001 s") and result.trace is not None
    payload = result.to_json()
    assert payload["status"] == "not_converged" and payload["reason"] == result.reason


def test_a_count_stopped_by_its_time_limit_keeps_the_levels_done(monkeypatch):
    """The engine's clock is simulated: time runs out once depth 0 is done."""
    real = trace_module.dense_levels

    def out_of_time_after_depth_0(*args):
        args = list(args)
        checks = iter([False])  # the check before depth 0 passes, every later one fails
        args[7] = lambda: next(checks, True)
        return real(*args)

    monkeypatch.setattr(trace_module, "dense_levels", out_of_time_after_depth_0)
    result = cf.count_laws(cf.linear([3, 4, 4, 3]), method="numeric", time_limit=600,
                           progress=False)
    assert result.status == "not_converged" and result.n_laws is None
    assert result.reason.startswith("time limit") and "before depth 1" in result.reason
    assert result.trace.ranks == ((9, 9, 9),)  # depth 0 is kept: the 9 generators


def test_escalation_stops_at_the_deadline(monkeypatch):
    """An ambiguous count (min_gap out of reach) whose time runs out after the first try: the
    escalation is not started, the result is not_converged and keeps the first trace."""
    clock = {"offset": 0.0}
    real_clock, real_trace = count_module.time.perf_counter, count_module.lie_trace
    limits = []

    def lie_trace(*args, **kwargs):
        limits.append(kwargs.get("time_limit"))
        result = real_trace(*args, **kwargs)
        clock["offset"] = 1e6  # the time is up once the first try is done
        return result

    monkeypatch.setattr(count_module, "time",
                        types.SimpleNamespace(perf_counter=lambda: real_clock() + clock["offset"]))
    monkeypatch.setattr(count_module, "lie_trace", lie_trace)
    result = cf.count_laws(cf.linear([3, 4, 4, 3]), method="numeric", min_gap=1e300,
                           time_limit="60s", progress=False)
    assert len(limits) == 1 and 0 < limits[0] <= 60
    assert result.status == "not_converged" and result.n_laws is None
    assert result.reason.startswith("time limit of 60 s reached while escalating")
    assert "gap" in result.reason  # why the first try was ambiguous
    assert [a.step for a in result.attempts] == ["numeric"] and result.trace is not None


def _linear_gradient_fields(dims):
    model = cf.linear(dims)
    polys = polynomial_form(model.phi, model.D)
    return cf.GradientFlow().polynomial_fields(model, polys), model.D


def test_the_exact_trace_stops_at_its_time_limit_and_keeps_the_levels_done():
    fields, n = _linear_gradient_fields([2, 3, 2])
    whole = exact_lie_trace(fields, n)
    assert whole.status == "ok" and len(whole.ranks) > 1 and not whole.reason
    stopped = exact_lie_trace(fields, n, time_limit=1e-9)
    assert stopped.status == "not_converged" and stopped.dim is None
    assert stopped.reason == (f"time limit of 1e-09 s reached at depth 1 of the run mod "
                              f"{whole.primes[0]}")
    assert len(stopped.runs) == 1 and stopped.runs[0].timed_out
    assert stopped.ranks == whole.ranks[:1]  # depth 0 is kept
    with pytest.raises(InputError, match="time_limit"):
        exact_lie_trace(fields, n, time_limit=0)


def test_a_bracket_stops_inside_a_time_bound():
    fields, n = _linear_gradient_fields([2, 3, 2])
    assert any(bracket(fields[0], fields[1]))  # a nonzero bracket: there is work to stop
    with time_bound(1e-9), pytest.raises(TimeLimitError, match="bracket: time limit"):
        bracket(fields[0], fields[1])
    with time_bound(600), time_bound(1e-9), pytest.raises(TimeLimitError):  # the earlier one
        bracket(fields[0], fields[1])


def test_an_exact_count_stops_at_the_time_limit():
    """Stopped while extracting φ's polynomials (exact_count_laws) or in the trace (count_laws):
    never a count, the reason names the limit, and the summary says the engine stopped."""
    model = cf.linear([3, 4, 4, 3])
    extracting = exact_count_laws(model, time_limit=1e-9)
    assert extracting.status == "not_converged" and extracting.runs == ()
    assert extracting.reason == "time limit of 1e-09 s reached while extracting φ's polynomials"
    result = cf.count_laws(model, method="exact", time_limit=1e-3, progress=False)
    assert result.status == "not_converged" and result.n_laws is None
    assert result.reason.startswith("time limit of 0.001 s reached")
    assert "exact: stopped (time limit of 0.001 s" in result.summary()


def test_the_cli_prints_the_estimate_and_honours_the_time_limit(capsys):
    assert main(["count", "relu", "30,30,30,4", "--time-limit", "1e-3", "--method", "numeric"]
                ) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("estimate: dense engine, ~")
    assert "stops at the time limit of 0.001 s" in captured.err.splitlines()[0]
    assert "NOT_CONVERGED (time limit" in captured.out
    assert main(["count", "relu", "30,30,30,4", "--time-limit", "1e-3", "--method", "numeric",
                 "--no-progress"]) == 0
    assert "estimate" not in capsys.readouterr().err



def test_stage_chunks_are_cut_until_the_compiled_program_fits(monkeypatch):
    """A bracket program whose intermediates (XLA's memory analysis) exceed the budget is
    recompiled with fewer samples per call: same samples, same ranks, smaller programs (a
    from_model net on 500 inputs once needed 11 GB for one call)."""
    from conflow.engine import evaluate

    model = cf.relu([3, 6, 2])
    whole = cf.count_laws(model, method="numeric", escalate=False)
    compiled = []  # (samples per call, bytes of intermediates) of each program asked for
    original = evaluate._compiled_stage

    def recording(program, points, coeffs, weights):
        out = original(program, points, coeffs, weights)
        compiled.append((coeffs.shape[0], out[1]))
        return out

    recording.cache_clear = original.cache_clear
    monkeypatch.setattr(evaluate, "_compiled_stage", recording)
    monkeypatch.setattr(evaluate, "EVAL_TEMP_BYTES", 1 << 16)
    monkeypatch.setattr(evaluate, "_TEMP_PER_CHAIN", type(evaluate._TEMP_PER_CHAIN)())
    cut = cf.count_laws(model, method="numeric", escalate=False)
    assert cut.status == whole.status == "ok" and cut.n_laws == whole.n_laws == 6
    assert cut.trace.ranks == whole.trace.ranks
    if any(temp is None for _, temp in compiled):
        pytest.skip("this backend gives no memory analysis")
    assert any(temp > 1 << 16 for _, temp in compiled)  # the budget bit ...
    chunks = [chunk for chunk, _ in compiled]
    assert min(chunks) < max(chunks)  # ... and programs were recompiled with smaller chunks


def test_deeper_stages_get_a_chunk_that_fits_before_they_compile(monkeypatch):
    """A stage's chunk is predicted from the intermediates of the shallower depths' programs,
    so that a deep program (31 s to compile at depth 5 of a 10-layer linear net) is compiled
    once, within the budget, not once too large and again smaller. A shift family on R^7 adds
    one direction per level up to depth 5; same ranks as without a budget."""
    from conflow.engine import evaluate

    n = 7

    def field(z, a):  # a_0 ∂_0 + a_1 Σ_i z_i ∂_{i+1}: level k adds ∂_k
        shift = jnp.concatenate([jnp.zeros(1, z.dtype), z[:-1]])
        return a[0] * jnp.eye(n, dtype=z.dtype)[0] + a[1] * shift

    family = cf.VectorFamily(field, n, 2, "shift")
    points = np.random.default_rng(0).normal(size=(3, n))
    whole = cf.lie_trace(family, points, progress=False)
    compiled = []  # (depth, samples per call, bytes of intermediates) of each program
    original = evaluate._compiled_stage

    def recording(program, points, coeffs, weights):
        out = original(program, points, coeffs, weights)
        compiled.append((coeffs.shape[1] - 1, coeffs.shape[0], out[1]))
        return out

    recording.cache_clear = original.cache_clear
    monkeypatch.setattr(evaluate, "_compiled_stage", recording)
    budget = 20_000
    monkeypatch.setattr(evaluate, "EVAL_TEMP_BYTES", budget)
    monkeypatch.setattr(evaluate, "_TEMP_PER_CHAIN", type(evaluate._TEMP_PER_CHAIN)())
    cut = cf.lie_trace(family, points, seed=1, progress=False)
    assert whole.status == cut.status == "ok" and whole.ranks == cut.ranks
    assert [r[0] for r in cut.ranks] == [2, 3, 4, 5, 6, 7]
    if any(temp is None for _, _, temp in compiled):
        pytest.skip("this backend gives no memory analysis")
    deep = [(depth, chunk, temp) for depth, chunk, temp in compiled if depth >= 3]
    assert [depth for depth, _, _ in deep] == [3, 4, 5]  # each compiled once ...
    assert all(temp <= budget for _, _, temp in deep)  # ... within the budget
    assert any(temp > budget for _, _, temp in compiled)  # the budget bit at depth ≤ 2


def test_predicted_intermediates_grow_by_the_last_measured_ratio():
    from conflow.engine.evaluate import TEMP_GROWTH, _fitting_chunk, _predicted_temp

    assert _predicted_temp({}, 3) is None and _predicted_temp({0: 5.0}, 3) is None
    assert _predicted_temp({2: 7.0}, 2) == 7.0
    assert _predicted_temp({1: 10.0}, 3) == 10.0 * TEMP_GROWTH ** 2
    assert _predicted_temp({1: 10.0, 2: 30.0}, 4) == pytest.approx(270.0)
    assert _fitting_chunk(256, 1700.0, 1024, 1) == 128
    assert _fitting_chunk(256, 4000.0, 1024, 4) == 64
