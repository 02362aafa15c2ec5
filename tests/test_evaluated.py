"""The exact trace by evaluation: the numeric engine's bracket programs run modulo primes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.errors import InputError
from conflow.exact import evaluated_lie_trace, exact_lie_trace, gradient_fields, polynomial_form
from conflow.engine.brackets import bracket_chain
from conflow.engine.deep_trace import LevelSum
from conflow.exact import evaluated as evaluated_module
from conflow.exact.evaluated import residues
from conflow.flows import GradientFlow, MomentumFlow
from conflow.laws import count as count_module
from conflow.laws.exact_count import exact_count_laws
from conflow.status import Status

P = (1 << 61) - 1


def test_residues_are_the_binary_rationals_the_floats_are():
    x = np.array([0.5, -3.0, 1e-10, 0.1, 7])
    r = [int(v) for v in residues(x, P)]
    # 0.5 · 2 = 1, −3 = p − 3, 1e-10 · 2^86 is the integer 1e-10's mantissa says
    assert r[0] * 2 % P == 1 and r[1] == P - 3 and r[4] == 7
    m, e = np.frexp(1e-10)
    assert r[2] * pow(2, 53 - int(e), P) % P == int(m * 2**53) % P
    with pytest.raises(InputError, match="NaN or infinite"):
        residues(np.array([np.inf]), P)


@pytest.mark.parametrize("dims", [[2, 3, 2], [4, 3, 2, 3], [2, 2, 2, 2]])
def test_linear_nets_match_the_symbolic_exact_engine(dims):
    model = cf.linear(dims)
    found = evaluated_lie_trace(GradientFlow().family(model), progress=False)
    fields = gradient_fields(polynomial_form(model.phi, model.D), model.D)
    assert found.status == Status.OK and found.n_symbolic == 0
    assert found.dim == exact_lie_trace(fields, model.D, progress=False).dim
    assert len(found.runs) == 2 and found.runs[0].ranks == found.runs[1].ranks
    assert 0 < found.failure_bound < 1e-9


def test_chains_of_generic_elements_of_W1_give_the_same_trace_in_fewer_levels():
    """Levels 0 and 1 are the plain ones; level 1 + t is level t of F = Y_0 + Y_1 (generic
    elements of W_1), which holds [W_0, … [W_0, W_1]] (plain depth t + 1) and brackets up to
    depth 2t + 1: the same dimension as the plain levels, in fewer levels (linear [2,4,4,1]:
    directions up to depth 4)."""
    family = GradientFlow().family(cf.linear([2, 4, 4, 1]))
    plain = evaluated_lie_trace(family, primes=(P,), progress=False)
    deep = evaluated_lie_trace(family, primes=(P,), inner_depth=1, progress=False)
    assert plain.status == deep.status == Status.OK and deep.dim == plain.dim
    assert deep.ranks[:2] == plain.ranks[:2] and deep.ranks[2] >= plain.ranks[2]
    assert deep.depth < plain.depth
    assert [evaluated_module.bracket_depth(t, 1) for t in range(5)] == [0, 1, 3, 5, 7]
    with pytest.raises(InputError, match="inner_depth"):
        evaluated_lie_trace(family, inner_depth=-1, progress=False)


@pytest.mark.parametrize("eps, laws", [(1e-12, 1), (1e-14, 1)])
def test_nearly_parallel_generators_with_float_coefficients(eps, laws):
    """φ = (x0·x1, x0·x1 + ε·x2): W = span{(x1, x0, 0), e2}, one law, for every float ε."""
    model = cf.custom(lambda x: jnp.stack([x[0] * x[1], x[0] * x[1] + eps * x[2]]), np.zeros(3))
    found = evaluated_lie_trace(GradientFlow().family(model), progress=False)
    assert found.n_laws == laws


def test_a_bracket_only_epsilon_away_from_the_span():
    """φ = (x0, x0·x1 + ε·x0²·x2/2): [∇φ1, ∇φ2] is ε-close to the span, yet Lie(W) = R³."""
    eps = 1e-14
    model = cf.custom(lambda x: jnp.stack([x[0], x[0] * x[1] + eps * x[0] ** 2 * x[2] / 2]),
                      np.zeros(3))
    found = evaluated_lie_trace(GradientFlow().family(model), progress=False)
    assert found.status == Status.OK and found.n_laws == 0 and found.ranks[-1] == 3


def test_momentum_flow_matches_the_exact_count():
    model = cf.linear([2, 2, 1])
    flow = MomentumFlow(damping=1.0)
    found = evaluated_lie_trace(flow.family(model), progress=False)
    assert found.dim == exact_count_laws(model, flow).dim


def test_a_primitive_that_is_not_polynomial_is_named():
    model = cf.custom(lambda x: jnp.stack([jnp.tanh(x[0]) * x[1]]), np.zeros(2))
    with pytest.raises(InputError, match="'tanh'"):
        evaluated_lie_trace(GradientFlow().family(model), progress=False)
    relu = cf.custom(lambda x: jnp.stack([jnp.maximum(x[0], 0.0) * x[1]]), np.zeros(2))
    with pytest.raises(InputError, match="not polynomial"):
        evaluated_lie_trace(GradientFlow().family(relu), progress=False)


def test_one_run_per_prime_and_the_primes_are_checked():
    family = GradientFlow().family(cf.linear([2, 3, 2]))
    found = evaluated_lie_trace(family, primes=(P,), progress=False)
    assert found.status == Status.OK and found.primes == (P,) and len(found.runs) == 1
    for bad in [(), (4,), (1 << 61) + 1]:
        with pytest.raises(InputError, match="one or more primes"):
            evaluated_lie_trace(family, primes=bad if isinstance(bad, tuple) else (bad,),
                                progress=False)


def test_batches_grow_from_one_row_and_change_only_the_cost(monkeypatch):
    """A level whose full batch would be slow evaluates 1, 2, 4, … rows while every row is kept
    (here every level, FULL_BATCH_SECONDS = 0), so the level that adds nothing evaluates one
    row; the ranks are those of full batches, in fewer rows."""
    sizes = evaluated_module._batch_sizes(1, lambda: 100)
    assert [next(sizes) for _ in range(8)] == [1, 2, 4, 8, 16, 32, 32, 32]
    assert next(evaluated_module._batch_sizes(8, lambda: 3)) == 3  # the rank still missing + 1
    family = GradientFlow().family(cf.linear([3, 4, 4, 2]))
    monkeypatch.setattr(evaluated_module, "FULL_BATCH_SECONDS", 0.0)
    grown = evaluated_lie_trace(family, primes=(P,), progress=False).runs[0]
    monkeypatch.setattr(evaluated_module, "_batch_sizes",
                        lambda first, cap: iter(lambda: evaluated_module.BATCH, None))
    full = evaluated_lie_trace(family, primes=(P,), progress=False).runs[0]
    assert grown.status == full.status == Status.OK and grown.kept[-1] == 0
    assert grown.ranks == full.ranks and grown.n_candidates < full.n_candidates


def test_the_time_limit_stops_it_with_a_reason(monkeypatch):
    family = GradientFlow().family(cf.linear([2, 4, 4, 1]))
    found = evaluated_lie_trace(family, time_limit=0.0, progress=False)
    assert found.status == Status.NOT_CONVERGED and found.dim is None
    assert found.reason.startswith("time limit of 0 s")
    # a level whose estimate (LEVEL_GROWTH × the previous level's time) passes it is not started
    monkeypatch.setattr(evaluated_module, "LEVEL_GROWTH", 1e12)
    found = evaluated_lie_trace(family, time_limit=1e3, progress=False)
    assert found.status == Status.NOT_CONVERGED and found.depth == 1
    assert found.reason.startswith("time limit of 1000 s reached at depth 2")


def test_an_ambiguous_count_the_symbolic_engine_cannot_take_is_settled_by_evaluation(
        monkeypatch):
    """The bracket family at ε = 1e-12 is ambiguous numerically (its new bracket, σ ≈ 7e-14,
    lies inside the band); with the symbolic exact engine out of reach (said too large here, as
    for a deep product), the last escalation step settles it: no law."""
    monkeypatch.setattr(count_module, "_exact_candidate", lambda *a, **k: "too large (here)")
    eps = 1e-12
    model = cf.custom(lambda x: jnp.stack([x[0], x[0] * x[1] + eps * x[0] ** 2 * x[2] / 2]),
                      np.zeros(3))
    result = cf.count_laws(model, method="numeric", progress=False)
    assert result.status == Status.OK and result.n_laws == 0
    assert result.settled_by.startswith(count_module.EVALUATED)
    assert result.attempts[-1].step == count_module.EVALUATED
    assert result.exact is not None and result.exact.n_symbolic == 0
    assert result.exact.primes == (P,) and result.exact.failure_bound < 1e-9  # one run
    assert "one prime: True" in result.summary()


def test_relu_networks_from_code_are_counted_on_the_region_of_a_point():
    """An eqx ReLU MLP with biases (one law per hidden neuron): the switches are fixed to their
    outcomes at a float point, as the symbolic engine's region polynomial does."""
    import equinox as eqx
    import jax

    mlp = eqx.nn.MLP(2, 1, 3, 2, activation=jax.nn.relu, key=jax.random.PRNGKey(0))
    model = cf.from_model(mlp, input_shape=(2,), n_inputs=24)
    theta = np.asarray(model.sample_points(3, 1))[0]
    found = evaluated_lie_trace(GradientFlow().family(model), region=theta, progress=False)
    assert found.status == Status.OK and found.n_laws == 6
    assert found.dim == exact_count_laws(model, region=theta).dim
    with pytest.raises(InputError, match="not polynomial"):  # no region: switches refused
        evaluated_lie_trace(GradientFlow().family(model), progress=False)
    with pytest.raises(InputError, match="tied"):  # a point on a boundary: θ = 0
        evaluated_lie_trace(GradientFlow().family(model), region=np.zeros(model.D),
                            progress=False)


def test_an_ambiguous_piecewise_count_is_settled_on_a_region(monkeypatch):
    """With every other step out of the way and a numeric gap asked for that no count reaches,
    the regions' exact count by evaluation settles it (it equals the numeric points' dimension)."""
    import equinox as eqx
    import jax

    monkeypatch.setattr(count_module, "_escalation_steps", lambda *a, **k: [])
    mlp = eqx.nn.MLP(2, 1, 3, 1, activation=jax.nn.leaky_relu, key=jax.random.PRNGKey(1))
    model = cf.from_model(mlp, input_shape=(2,), n_inputs=24)
    result = cf.count_laws(model, method="numeric", min_gap=1e30, progress=False)
    assert result.status == Status.OK and result.n_laws == 3
    assert result.settled_by.startswith(count_module.EVALUATED)
    assert "activation region of 1 point" in result.settled_by


def test_a_polynomial_trace_still_growing_is_settled_exactly_before_the_deeper_brackets(
        monkeypatch):
    """A linear net whose numeric trace still grows at the depth where a polynomial flow's first
    trace stops (set to 1 here): the exact trace by evaluation runs next, settles it, and no
    deeper numeric step runs."""
    monkeypatch.setattr(count_module, "PLAIN_DEPTH_BEFORE_EXACT", 1)
    model = cf.linear([2, 3, 3, 1])
    result = cf.count_laws(model, method="numeric", progress=False)
    assert [a.step for a in result.attempts] == ["numeric", count_module.EVALUATED]
    assert result.attempts[0].status == Status.NOT_CONVERGED
    assert result.status == Status.OK and result.settled_by.startswith(count_module.EVALUATED)
    fields = gradient_fields(polynomial_form(model.phi, model.D), model.D)
    assert result.dim_lie == exact_lie_trace(fields, model.D, progress=False).dim


def test_where_the_exact_step_does_not_settle_it_the_plain_trace_goes_on(monkeypatch):
    """The exact step declining (as for a φ that is not polynomial), the numeric trace stopped
    at `PLAIN_DEPTH_BEFORE_EXACT` is rerun to `PLAIN_DEPTH_BEFORE_DEEPER`, which settles it."""
    monkeypatch.setattr(count_module, "PLAIN_DEPTH_BEFORE_EXACT", 1)
    monkeypatch.setattr(count_module, "_evaluated_trace", lambda *a, **k: None)
    dims = [2, 3, 3, 1]
    result = cf.count_laws(cf.linear(dims), method="numeric", progress=False)
    assert [a.step for a in result.attempts] == ["numeric", count_module.PLAIN_DEEPER]
    assert [a.status for a in result.attempts] == [Status.NOT_CONVERGED, Status.OK]
    assert result.status == Status.OK and result.trace.depth <= 5
    assert result.settled_by == f"{count_module.PLAIN_DEEPER} (to depth 5)"
    assert result.n_laws == model_laws(dims)


def model_laws(dims) -> int:
    fields = gradient_fields(polynomial_form(cf.linear(dims).phi, cf.linear(dims).D),
                             cf.linear(dims).D)
    return cf.linear(dims).D - exact_lie_trace(fields, cf.linear(dims).D, progress=False).dim


@pytest.mark.parametrize("inner_depth", [0, 1])
def test_hyper_dual_chains_are_jax_nested_jvps_exactly(inner_depth):
    """Walking the field on hyper-dual residues gives, mod p, the values JAX's nested jvps give
    (`bracket_chain`, and `deep_trace`'s level sums for W_1): at an integer point with integer
    coefficients every value is an integer, exact in float64."""
    family = GradientFlow().family(cf.linear([2, 3, 2]))
    field, m = family.sampled
    if inner_depth:
        field = LevelSum(field, m, inner_depth, np.ones(inner_depth + 1))
        m *= inner_depth + 1
    rng = np.random.default_rng(1)
    z = rng.integers(-2, 3, family.state_dim).astype(float)
    coeffs = rng.integers(-2, 3, (4, m)).astype(float)
    floats = np.asarray(jax.jit(bracket_chain(field, 3))(jnp.asarray(z), jnp.asarray(coeffs))[0])
    assert np.all(floats == np.round(floats)) and np.abs(floats).max() < 2.0**50
    assert np.count_nonzero(floats[3]) > 0  # a depth-3 bracket that does not vanish
    closed = evaluated_module._field_program(family, 1)
    for depth in range(4):
        got = evaluated_module._level_values(
            closed, None, residues(z, P), residues(coeffs[None, 3 - depth:], P), inner_depth, P,
            lambda: False)
        assert np.array_equal(got.a[0][0], residues(floats[depth], P))
