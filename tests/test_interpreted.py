"""Stage programs run equation by equation (`conflow.engine.evaluate.Interpreted`) against the
same programs compiled: the same values, the same counts, and only explicit transfers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.engine import evaluate
from conflow.engine.jaxpr import bind, n_equations, walk
from conflow.engine.trace import LINALG_ENV


@pytest.fixture
def threshold(monkeypatch):
    """Sets `INTERPRET_MIN_EQNS` (0: every stage interpreted), with the stage cache cleared
    before each setting and after the test."""

    def set_to(value: int) -> None:
        monkeypatch.setattr(evaluate, "INTERPRET_MIN_EQNS", value)
        evaluate._compiled_stage.cache_clear()

    yield set_to
    evaluate._compiled_stage.cache_clear()


def test_walk_drops_dead_values_and_matches_eval_jaxpr():
    """A chain of brackets of a nonlinear field, walked with `bind`: the values of
    ``jax.core.eval_jaxpr``, with calls (jit, custom_jvp) entered and counted."""

    def field(z, a):
        return jax.nn.softplus(a[0] * z) * jnp.roll(z, 1) + jax.jit(jnp.tanh)(a[1] * z)

    chain = cf.bracket_chain(field, 3)
    z = jnp.asarray(np.random.default_rng(0).standard_normal(4))
    c = jnp.asarray(np.random.default_rng(1).standard_normal((4, 2)))
    closed = jax.make_jaxpr(chain)(z, c)
    walked = walk(closed.jaxpr, closed.consts, [z, c], bind)
    expected = jax.core.eval_jaxpr(closed.jaxpr, closed.consts, z, c)
    for a, b in zip(walked, expected):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-13, atol=0)
    assert n_equations(closed.jaxpr) > len(closed.jaxpr.eqns)  # the calls' bodies counted


CASES = [
    (lambda: cf.relu([3, 4, 2], bias=True), None),
    (lambda: cf.linear([2, 2, 2]), cf.MomentumFlow(0.5)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_interpreted_counts_equal_compiled_ones(threshold, monkeypatch, case):
    """Whole counts with every stage interpreted: the compiled run's ranks per level and σ's
    (to rounding), with the device level loop under ``jax.transfer_guard("disallow")``: the
    program's constants and literals go to the device explicitly."""
    make, flow = CASES[case]
    monkeypatch.setenv(LINALG_ENV, "device")
    threshold(1 << 62)
    compiled = cf.count_laws(make(), flow, method="numeric", progress=False)
    threshold(0)
    with jax.transfer_guard("disallow"):
        interpreted = cf.count_laws(make(), flow, method="numeric", progress=False)
    assert interpreted.status == compiled.status == "ok"
    assert interpreted.n_laws == compiled.n_laws
    assert ([lv.ranks for lv in interpreted.trace.levels]
            == [lv.ranks for lv in compiled.trace.levels])
    np.testing.assert_allclose(interpreted.trace.kept_tail, compiled.trace.kept_tail, rtol=1e-6)


def test_a_stage_at_the_threshold_is_interpreted_with_the_compiled_values(threshold):
    """A stage program of at least `INTERPRET_MIN_EQNS` equations is `Interpreted`; below, it
    is compiled; both give the same chains to rounding."""
    family = cf.GradientFlow().family(cf.linear([2, 3, 2]))
    field, m = family.sampled
    runs = []
    with cf.float64_mode():
        stage = evaluate._stage_evaluator(field, 3, 0, 4, m, "float64", True, None, False)
        points = jnp.asarray(np.random.default_rng(0).standard_normal((2, family.state_dim)))
        coeffs = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (4, 4, m)))
        specs = (evaluate._spec(points), evaluate._spec(coeffs), None)
        size = n_equations(stage.trace(*specs).jaxpr.jaxpr)
        for at in (size + 1, size):
            threshold(at)
            program, _ = evaluate._compiled_stage(stage, *specs)
            runs.append((program, program(points, coeffs, None)))
    (compiled, first), (interpreted, second) = runs
    assert isinstance(interpreted, evaluate.Interpreted)
    assert not isinstance(compiled, evaluate.Interpreted)
    for a, b in zip(first[:2], second[:2]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12,
                                   atol=1e-12 * float(np.abs(np.asarray(a)).max()))
    assert bool(second[2])
