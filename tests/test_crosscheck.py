"""Cross-checks of the numerical engine (`lie_trace`: autodiff brackets, SVD with a tolerance)
against the exact engine (`exact_lie_trace`: polynomial brackets, ranks mod p): the main guard
against tolerance bugs in the numerical engine.

1. Random polynomial vector fields on R^n (n = 2..6, 1..5 fields, small integer coefficients,
   degree ≤ 3 before the structural modifiers), 12 hypothesis examples for each structure: generic
   fields, a single field, linear fields x ↦ A x (sparse, skew, nilpotent, diagonal), polynomial
   multiples of one or two base fields, fields tangent to the level sets of a polynomial h (S ∇h
   with S skew), triangular fields; then sometimes components zeroed in every field, a common
   polynomial factor (shared zero set), an extra dependent field. Every system is held once as
   plain ``{exponents: coefficient}`` data, from which both a `Poly` field (exact engine) and a JAX
   evaluator (numeric engine) are built. An ``ok`` numeric trace must have the certified
   dimension; a numeric non-answer must be a reasoned ``ambiguous``, at most
   `MAX_NUMERIC_GIVE_UPS` per structure (the band's known blind spot: a bracket that vanishes
   identically, computed as a difference of equal terms, can round above the noise ceiling).
2. The numeric-vs-exact equivalence on models, one parametrised suite over (model, flow) cases:
   random small architectures of every polynomial family (linear, relu ± bias, factorization, nmf,
   icnn ± bias, product) under the gradient flow and the momentum flows τ = 0, τ ∈ (0.1, 2) and
   Nesterov (2 seeded draws per family and flow), and hand-picked cases (the models of part 3 at
   the default tolerance; generators of very different sizes). Each must give ``ok`` with the
   same count from ``method="numeric"`` (no escalation) and ``method="exact"``, and from
   ``method="both"`` for the cheap (gradient-flow) cases.
3. The guard itself: an absurd tolerance (an rtol below rounding, or 0.5, which drops genuine
   directions) makes the numeric engine give no count (``ambiguous``, with the rank band's
   reason); ``method="both"`` then gives no count either, and the escalation's exact engine
   settles it. Generators of very different sizes at the engine level close the module.

Examples are derandomised: every run draws the same systems and architectures (print the
statistics of part 1 with ``pytest -s``).
"""

from __future__ import annotations

import collections
import functools
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conflow as cf
from conflow.engine.trace import VectorFamily, lie_trace
from conflow.exact import Poly, exact_lie_trace
from conflow.flows import AbstractFlow, GradientFlow, MomentumFlow

# A polynomial is {exponent tuple (length n): nonzero int coefficient}; a field is a tuple of n of
# them. The helpers below are deliberately independent of `conflow.exact.polynomial`.
Terms = dict
Field = tuple

N_RANDOM_FIELDS = 9  # examples of part 1, per structure (6 structures)
N_ARCHITECTURES = 2  # draws of part 2, per (family, flow) pair (6 × 4 pairs) ...
N_ARCHITECTURES_MOMENTUM = 1  # ... and per (family, heavy ball) pair: depth-5 brackets, seconds each
MAX_NUMERIC_GIVE_UPS = 1  # part 1: numeric non-answers allowed per structure (of N_RANDOM_FIELDS)
NUMERIC_DEPTH = 6  # part 1: enough for n ≤ 6 (each level adds a direction or stops)


def _settings(n: int):
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------------------------------
# Plain polynomial algebra on {exponents: coefficient}
# ---------------------------------------------------------------------------------------------


def _clean(p: Terms) -> Terms:
    return {e: c for e, c in p.items() if c}


def _padd(p: Terms, q: Terms) -> Terms:
    out = dict(p)
    for e, c in q.items():
        out[e] = out.get(e, 0) + c
    return _clean(out)


def _pmul(p: Terms, q: Terms) -> Terms:
    out: Terms = {}
    for e1, c1 in p.items():
        for e2, c2 in q.items():
            e = tuple(a + b for a, b in zip(e1, e2))
            out[e] = out.get(e, 0) + c1 * c2
    return _clean(out)


def _pscale(p: Terms, c: int) -> Terms:
    return _clean({e: c * a for e, a in p.items()})


def _pdiff(p: Terms, j: int) -> Terms:
    out: Terms = {}
    for e, c in p.items():
        if e[j]:
            f = list(e)
            f[j] -= 1
            out[tuple(f)] = out.get(tuple(f), 0) + c * e[j]
    return _clean(out)


def _var(n: int, j: int) -> Terms:
    return {tuple(int(i == j) for i in range(n)): 1}


def _field_add(F: Field, G: Field) -> Field:
    return tuple(_padd(a, b) for a, b in zip(F, G))


def _field_mul(p: Terms, F: Field) -> Field:
    return tuple(_pmul(p, a) for a in F)


def to_poly_field(F: Field) -> tuple[Poly, ...]:
    """The exact engine's representation."""
    return tuple(Poly.from_exponents(list(p.items())) for p in F)


def to_family(fields, n: int) -> VectorFamily:
    """The numeric engine's representation: G(z, a) = Σ_i a_i F_i(z), every monomial Π z_j^e_j."""
    monos = sorted({e for F in fields for p in F for e in p}) or [(0,) * n]
    index = {e: t for t, e in enumerate(monos)}
    E = np.array(monos, dtype=np.int64)  # (T, n)
    C = np.zeros((len(fields), n, len(monos)))
    for i, F in enumerate(fields):
        for k, p in enumerate(F):
            for e, c in p.items():
                C[i, k, index[e]] += c
    dmax = max(int(E.max()), 1)
    C_, cols = jnp.asarray(C), np.arange(n)

    def field(z, a):
        powers = jnp.stack([jnp.ones_like(z)] + [z**d for d in range(1, dmax + 1)])  # (dmax+1, n)
        mono = jnp.prod(powers[E, cols], axis=1)  # (T,)
        return jnp.einsum("i,ikt,t->k", a, C_, mono)

    return VectorFamily(field, n, len(fields), "random polynomial fields")


# ---------------------------------------------------------------------------------------------
# Part 1: random polynomial vector fields
# ---------------------------------------------------------------------------------------------

COEF = st.integers(-3, 3).filter(bool)


@st.composite
def exponents(draw, n: int, max_deg: int, nvars: int | None = None):
    """A monomial of total degree ≤ max_deg in the first ``nvars`` (default n) variables."""
    nvars = n if nvars is None else nvars
    deg = draw(st.integers(0, max_deg)) if nvars else 0
    e = [0] * n
    for j in draw(st.lists(st.integers(0, max(nvars - 1, 0)), min_size=deg, max_size=deg)):
        e[j] += 1
    return tuple(e)


@st.composite
def polys(draw, n: int, max_deg: int = 3, min_terms: int = 0, max_terms: int = 3,
          nvars: int | None = None):
    terms = draw(st.lists(st.tuples(exponents(n, max_deg, nvars), COEF), min_size=min_terms,
                          max_size=max_terms))
    out: Terms = {}
    for e, c in terms:
        out[e] = out.get(e, 0) + c
    return _clean(out)


def fields_st(n: int, max_deg: int = 3, max_terms: int = 2):
    return st.tuples(*[polys(n, max_deg, 0, max_terms) for _ in range(n)])


@st.composite
def int_matrix(draw, n: int, kind: str):
    entries = st.integers(-2, 2)
    A = [[draw(entries) if draw(st.booleans()) else 0 for _ in range(n)] for _ in range(n)]
    if kind == "skew":
        A = [[A[i][j] - A[j][i] for j in range(n)] for i in range(n)]
    elif kind == "upper":  # strictly upper triangular: a nilpotent Lie algebra
        A = [[A[i][j] if j > i else 0 for j in range(n)] for i in range(n)]
    elif kind == "diagonal":  # commuting fields
        A = [[A[i][j] if j == i else 0 for j in range(n)] for i in range(n)]
    return A


def _linear_field(A, n: int) -> Field:
    return tuple(_clean({e: c for j in range(n) for e, c in _pscale(_var(n, j), A[i][j]).items()})
                 for i in range(n))


STRUCTURES = ("generic", "single", "linear", "multiple", "tangent", "triangular")


@st.composite
def random_system(draw, kind: str):
    """(n, structure label, fields) for a random polynomial system on R^n of structure ``kind``."""
    n = draw(st.integers(2, 6))
    label = [kind]
    if kind == "generic":
        fields = draw(st.lists(fields_st(n), min_size=1, max_size=4))
    elif kind == "single":
        fields = [draw(fields_st(n))]
    elif kind == "linear":
        sub = draw(st.sampled_from(["sparse", "skew", "upper", "diagonal"]))
        label.append(sub)
        k = draw(st.integers(1, 4))
        fields = [_linear_field(draw(int_matrix(n, sub)), n) for _ in range(k)]
    elif kind == "multiple":
        # every field is Σ_b p_b · B_b over one or two base fields B_b (a rank-≤2 module)
        bases = draw(st.lists(fields_st(n, max_deg=2), min_size=1, max_size=2))
        k = draw(st.integers(2, 4))
        fields = []
        for _ in range(k):
            F = tuple({} for _ in range(n))
            for B in bases:
                F = _field_add(F, _field_mul(draw(polys(n, 1, 1, 2)), B))
            fields.append(F)
    elif kind == "tangent":
        # S ∇h with S skew: h is conserved, the trace has dimension ≤ n − 1 where ∇h ≠ 0
        h = draw(polys(n, 3, 1, 4))
        grad = [_pdiff(h, j) for j in range(n)]
        k = draw(st.integers(1, 4))
        fields = []
        for _ in range(k):
            S = draw(int_matrix(n, "skew"))
            fields.append(tuple(
                _clean(functools.reduce(_padd, [_pscale(grad[j], S[i][j]) for j in range(n)], {}))
                for i in range(n)))
    else:  # triangular: component i is a polynomial in x_0 .. x_{i−1} (component 0 constant)
        k = draw(st.integers(1, 4))
        fields = [tuple(draw(polys(n, 3, 0, 2, nvars=i)) for i in range(n)) for _ in range(k)]

    if n > 2 and draw(st.booleans()):  # the same components vanish in every field
        zero = set(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 2)))
        fields = [tuple({} if i in zero else p for i, p in enumerate(F)) for F in fields]
        label.append("zero" + "".join(map(str, sorted(zero))))
    if draw(st.integers(0, 3)) == 0:  # a common factor: shared zero set, same generic rank
        q = draw(polys(n, 2, 1, 2))
        fields = [_field_mul(q, F) for F in fields]
        label.append("factor")
    if len(fields) < 5 and draw(st.integers(0, 3)) == 0:  # a dependent extra field
        q = draw(polys(n, 1, 1, 2))
        extra = functools.reduce(
            _field_add, [_field_mul(_pscale(q, draw(COEF)) if draw(st.booleans()) else
                                    {(0,) * n: draw(COEF)}, F) for F in fields])
        fields = [*fields, extra]
        label.append("dependent")
    return n, "/".join(label), tuple(fields)


def _reproduction(n, fields, seed) -> str:
    return (f"n = {n}; seed = {seed}\nfields = {fields!r}\n"
            "points = np.random.default_rng(seed).standard_normal((3, n))\n"
            "lie_trace(to_family(fields, n), points, seed=seed, max_depth=6) vs "
            "exact_lie_trace([to_poly_field(F) for F in fields], n, seed=seed)\n"
            "(an ambiguous lie_trace is retried at 6 fresh points with seed + 1)")


def _check_values_match(fields, n, family, rng):
    """The two representations are the same fields (exact values at a rational point)."""
    z = [Fraction(int(x), 4) for x in rng.integers(-8, 9, n)]
    zf = jnp.asarray([float(x) for x in z])
    for i, F in enumerate(fields):
        exact = np.array([float(P.evaluate(z)) for P in to_poly_field(F)])
        num = np.asarray(family.field(zf, jnp.eye(len(fields))[i]))
        np.testing.assert_allclose(num, exact, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", STRUCTURES)
def test_random_polynomial_fields_numeric_matches_exact(kind):
    stats: collections.Counter = collections.Counter()

    @_settings(N_RANDOM_FIELDS)
    @given(random_system(kind), st.integers(0, 2**16))
    def check(system, seed):
        n, label, fields = system
        rng = np.random.default_rng(seed)
        family = to_family(fields, n)
        _check_values_match(fields, n, family, rng)
        points = rng.standard_normal((3, n))
        num = lie_trace(family, points, seed=seed, max_depth=NUMERIC_DEPTH)
        if num.status == "ambiguous":  # honest on these points: fresh ones, as escalation does
            points = rng.standard_normal((6, n))
            num = lie_trace(family, points, seed=seed + 1, max_depth=NUMERIC_DEPTH)
        ex = exact_lie_trace([to_poly_field(F) for F in fields], n, seed=seed, max_depth=30)
        repro = _reproduction(n, fields, seed)
        assert ex.status == "ok", f"exact engine: {ex.status}\n{repro}"
        stats[str(num.status)] += 1
        stats["exact: laws" if ex.dim < n else "exact: full"] += 1
        for modifier in label.split("/")[1:]:
            stats[modifier.rstrip("0123456789")] += 1
        if num.status == "ok":
            assert num.dim == ex.dim, (
                f"TOLERANCE BUG: numeric ok with dim {num.dim} (ranks {num.ranks}, gap "
                f"{num.gap:.2e}, σ kept {num.kept_tail} | dropped {num.dropped_head}), exact dim "
                f"{ex.dim} (ranks {ex.ranks}); structure {label}\n{repro}")
        else:  # a reasoned non-answer: no count, and never a trace that did not converge
            assert num.status == "ambiguous" and num.dim is None and num.reason, (
                f"numeric {num.status} ({num.reason!r}), exact dim {ex.dim}; {label}\n{repro}")

    check()
    print(f"\n[crosscheck] random polynomial fields, {kind}: {dict(stats)}")  # pytest -s
    assert stats["ok"] >= N_RANDOM_FIELDS - MAX_NUMERIC_GIVE_UPS, (
        f"{kind}: the numeric engine gave a count for only {stats['ok']} of "
        f"{N_RANDOM_FIELDS} systems: {dict(stats)}")
    assert stats["exact: laws"] >= N_RANDOM_FIELDS // 4, f"too few systems with laws: {stats}"


def test_random_fields_cover_the_structures():
    # Hand-picked members of each structure, with their known dimensions (a check of the
    # representations and of the structures' intent, independent of hypothesis' draws).
    n = 3
    x, y, _ = (_var(n, j) for j in range(n))
    one = {(0, 0, 0): 1}
    rot = [_linear_field(A, n) for A in ([[0, 1, 0], [-1, 0, 0], [0, 0, 0]],
                                         [[0, 0, 0], [0, 0, 1], [0, -1, 0]])]
    multiple = [(x, y, {}), _field_mul(_padd(_pmul(x, x), one), (x, y, {}))]
    nilpotent = [(one, {}, {}), ({}, _pmul(x, _pmul(x, x)), {})]  # ∂x, x³∂y: dim 2, not 3
    heisenberg = [(one, {}, {}), ({}, one, x)]  # ∂x, ∂y + x∂z: dim 3 at level 1
    for fields, expected in [(rot, 2), (multiple, 1), (nilpotent, 2), (heisenberg, 3)]:
        points = np.random.default_rng(0).standard_normal((3, n))
        num = lie_trace(to_family(fields, n), points, max_depth=NUMERIC_DEPTH)
        ex = exact_lie_trace([to_poly_field(F) for F in fields], n)
        assert (num.status, num.dim, ex.status, ex.dim) == ("ok", expected, "ok", expected)


# ---------------------------------------------------------------------------------------------
# Part 2: the numeric-vs-exact equivalence on models, one suite over (model, flow) cases
# ---------------------------------------------------------------------------------------------

FAMILIES = ("linear", "relu", "factorization", "nmf", "icnn", "product")
FLOW_KINDS = ("gradient", "tau0", "tau", "nesterov")


def draw_architecture(rng: np.random.Generator, family: str, kind: str):
    """A random small architecture of ``family`` under flow ``kind`` (state dim ≤ 25 for momentum,
    ≤ 40 for gradient flows): (model, flow, reproduction source)."""
    max_D = 40 if kind == "gradient" else 12
    width = lambda: int(rng.integers(1, 4))  # noqa: E731
    while True:
        metric = "euclidean"
        if family in ("linear", "relu"):
            dims = [width() for _ in range(int(rng.integers(2, 4)) + 1)]  # 2–3 layers
            if family == "linear":
                model, src = cf.linear(dims), f"cf.linear({dims})"
            else:
                bias = bool(rng.integers(2))
                model, src = cf.relu(dims, bias=bias), f"cf.relu({dims}, bias={bias})"
        elif family in ("factorization", "nmf", "icnn"):
            dims = (width(), width(), width())
            if family == "factorization":
                model, src = cf.factorization(*dims), f"cf.factorization(*{dims})"
            elif family == "nmf":
                model, src = cf.nmf(*dims), f"cf.nmf(*{dims})"
            else:
                bias = bool(rng.integers(2))
                model, src = cf.icnn(*dims, bias=bias), f"cf.icnn(*{dims}, bias={bias})"
            if family != "factorization":  # mirror coordinates: mostly the entropy metric
                metric = "euclidean" if rng.integers(3) == 0 else "entropy"
        else:
            # degree ≤ 4 under momentum: the numeric engine's depth-5 brackets of product(5)
            # compile for ~10 s per damping (suite time)
            D = int(rng.integers(2, 6 if kind == "gradient" else 5))
            model, src = cf.product(D), f"cf.product({D})"
        if model.D <= max_D:
            break
    if kind == "gradient":
        return model, GradientFlow(metric), f"{src}, GradientFlow({metric!r})"
    # τ = k/20 ∈ (0.1, 2): a float that the exact engine reads exactly as the rational k/20
    damping = {"tau0": 0.0, "nesterov": "nesterov"}.get(kind) or int(rng.integers(3, 40)) / 20
    return (model, MomentumFlow(damping, metric=metric),
            f"{src}, MomentumFlow({damping!r}, metric={metric!r})")


def _flow_id(flow: AbstractFlow) -> str:
    """An ASCII test id: gradient, mirror, momentum0.35, nesterov, mirror-momentum1.05, …"""
    mirror = flow.metric_name == "entropy"
    if flow.name == "gradient":
        return "mirror" if mirror else "gradient"
    kind = "nesterov" if flow.tau is None else f"momentum{flow.tau:g}"
    return ("mirror-" if mirror else "") + kind


def _two_units_model(scale: float):
    """φ(a) = (scale·a0·a1, a2·a3): two outputs in different units (0 laws under momentum).

    Rescaling a generator by a constant leaves Lie(W) unchanged, but the numeric engine judges
    level 0 against the largest generator at the point, and a bracket against its cancellation
    scale, which the big generator's self-brackets ([B, B] = 0, computed as a difference of two
    equal big terms) dominate. Before generator balancing, sizes 1e8–1e10 apart pushed genuine
    directions below rtol with a clean gap: a confident wrong count.
    """
    return cf.custom(lambda a: jnp.stack([scale * a[0] * a[1], a[2] * a[3]]), jnp.ones(4))


def _case(model, flow, seed: int, src: str, both: bool | None = None, name: str | None = None):
    """One equivalence case; ``both``: also run ``method="both"`` (default: gradient flows, where
    a numeric count is cheap)."""
    both = flow.name == "gradient" if both is None else both
    return pytest.param(model, flow, seed, src, both,
                        id=f"{name or model.label}-{_flow_id(flow)}")


def _random_architecture_cases() -> list:
    cases = []
    for family in FAMILIES:
        for kind in FLOW_KINDS:
            rng = np.random.default_rng([FAMILIES.index(family), FLOW_KINDS.index(kind), 2024])
            draws = N_ARCHITECTURES_MOMENTUM if kind in ("tau0", "tau") else N_ARCHITECTURES
            for _ in range(draws):
                model, flow, src = draw_architecture(rng, family, kind)
                cases.append(_case(model, flow, int(rng.integers(1000)), src,
                                   name=f"random-{model.label}"))
    return cases


EQUIVALENCE_CASES = _random_architecture_cases() + [
    # the models of part 3, at the default tolerance
    _case(cf.linear([2, 3, 2]), GradientFlow(), 0, "cf.linear([2, 3, 2]), GradientFlow()"),
    _case(cf.relu([2, 3, 2]), GradientFlow(), 0, "cf.relu([2, 3, 2]), GradientFlow()"),
    _case(cf.product(3), GradientFlow(), 0, "cf.product(3), GradientFlow()"),
    _case(cf.nmf(2, 2, 2), GradientFlow("entropy"), 0, "cf.nmf(2, 2, 2), GradientFlow('entropy')"),
    _case(cf.linear([2, 2, 2]), MomentumFlow(0.0), 0, "cf.linear([2, 2, 2]), MomentumFlow(0.0)"),
    # generators of very different sizes (`_two_units_model`)
    _case(_two_units_model(1e8), MomentumFlow(0.0), 0,
          "_two_units_model(1e8), MomentumFlow(0.0)", both=True, name="two-units-1e8"),
    _case(_two_units_model(1e10), GradientFlow(), 0, "_two_units_model(1e10), GradientFlow()",
          name="two-units-1e10"),
]


@pytest.mark.parametrize("model, flow, seed, src, both", EQUIVALENCE_CASES)
def test_numeric_engine_matches_exact_engine(model, flow, seed, src, both):
    repro = f"cf.count_laws({src}, method=..., seed={seed})"
    exact = cf.count_laws(model, flow, method="exact", seed=seed)
    assert exact.status == "ok", f"exact engine: {exact.status} ({exact.reason})\n{repro}"
    numeric = cf.count_laws(model, flow, method="numeric", seed=seed, escalate=False)
    if numeric.status == "ambiguous":  # honest on this draw: fresh points, as escalation does
        numeric = cf.count_laws(model, flow, method="numeric", seed=seed + 1, escalate=False)
    assert numeric.status == "ok", f"numeric engine gave no count\n{repro}\n{numeric.summary()}"
    assert numeric.n_laws == exact.n_laws, (
        f"TOLERANCE BUG: numeric {numeric.n_laws} laws, exact {exact.n_laws}\n{repro}\n"
        f"{numeric.summary()}")
    assert numeric.n_agree == numeric.points == 3, numeric.summary()
    if both:
        checked = cf.count_laws(model, flow, method="both", seed=seed)
        assert checked.status == "ok" and checked.n_laws == exact.n_laws, (
            f"{repro}\n{checked.summary()}")


# ---------------------------------------------------------------------------------------------
# Part 3: the guard catches a deliberately wrong tolerance
# ---------------------------------------------------------------------------------------------

# (model, flow): rtol = 1e-18 (below rounding) keeps rounding noise as directions; before the rank
# band the numeric engine alone answered a wrong "ok" here (all of R^D, gap inf: nothing dropped).
NOISE_KEPT = [
    (lambda: cf.linear([2, 3, 2]), GradientFlow()),
    (lambda: cf.relu([2, 3, 2]), GradientFlow()),
    (lambda: cf.product(3), GradientFlow()),
    (lambda: cf.nmf(2, 2, 2), GradientFlow("entropy")),
]
NOISE_KEPT_IDS = ["linear232", "relu232", "product3", "nmf222"]
# rtol = 0.5 drops genuine directions: before the band, a wrong count (15 instead of 16 for
# linear222-momentum with min_gap = 1, which switches the gap evidence off).
DIRECTIONS_DROPPED = [
    (lambda: cf.linear([2, 3, 2]), GradientFlow()),
    (lambda: cf.relu([2, 3, 2]), GradientFlow()),
    (lambda: cf.linear([2, 2, 2]), MomentumFlow(0.0)),
    (lambda: cf.nmf(2, 2, 2), GradientFlow("entropy")),
]
DIRECTIONS_DROPPED_IDS = ["linear232", "relu232", "linear222-momentum", "nmf222"]


def _assert_caught(count: cf.LawCount, exact: cf.LawCount, rtol_text: str):
    """``method="both"`` with a wrong tolerance: no count, the numeric trace ambiguous with the
    σ's the rank band could not settle, the reason naming the tolerance, the exact engine ok."""
    assert count.status == "ambiguous" and count.n_laws is None, count.summary()
    assert rtol_text in count.reason, count.reason
    assert count.trace.status == "ambiguous" and count.trace.uncertain, count.summary()
    assert count.exact.status == "ok" and count.state_dim - count.exact.dim == exact.n_laws


def _assert_settled_by_escalation(settled: cf.LawCount, exact: cf.LawCount, rtol_text: str):
    """``method="numeric"`` with a wrong tolerance: its own try is ambiguous (no count), and the
    escalation's exact engine (on φ, or on the activation regions of ReLU) gives the count."""
    first = settled.attempts[0]
    assert first.step == "numeric" and first.status == "ambiguous" and first.n_laws is None
    assert rtol_text in first.reason, first.reason
    assert settled.status == "ok" and settled.n_laws == exact.n_laws, settled.summary()
    assert settled.settled_by.startswith("exact"), settled.settled_by


@pytest.mark.parametrize("make, flow", NOISE_KEPT, ids=NOISE_KEPT_IDS)
def test_absurd_small_rtol_is_caught_by_the_band(make, flow):
    # the band sees kept σ's at rounding level: "rounding noise was counted (rtol 1e-18 is too
    # small)"; an InputError up front is not what happens, a status is
    model = make()
    exact = cf.count_laws(model, flow, method="exact")
    _assert_caught(cf.count_laws(model, flow, method="both", rtol=1e-18), exact, "rtol 1e-18")
    _assert_settled_by_escalation(cf.count_laws(model, flow, method="numeric", rtol=1e-18),
                                  exact, "rtol 1e-18")


@pytest.mark.parametrize("min_gap", [1e4, 1.0], ids=["gap1e4", "no-gap-check"])
@pytest.mark.parametrize("make, flow", DIRECTIONS_DROPPED, ids=DIRECTIONS_DROPPED_IDS)
def test_absurd_large_rtol_is_caught_by_the_band(make, flow, min_gap):
    # dropped σ's far above the signal floor: "neither rounding nor clear directions … cut at
    # rtol 0.5", with the gap evidence on (min_gap 1e4) or off (min_gap 1)
    model = make()
    exact = cf.count_laws(model, flow, method="exact")
    both = cf.count_laws(model, flow, method="both", rtol=0.5, min_gap=min_gap)
    _assert_caught(both, exact, "cut at rtol 0.5")


@pytest.mark.parametrize("make, flow", DIRECTIONS_DROPPED, ids=DIRECTIONS_DROPPED_IDS)
def test_absurd_large_rtol_is_settled_by_escalation(make, flow):
    model = make()
    exact = cf.count_laws(model, flow, method="exact")
    settled = cf.count_laws(model, flow, method="numeric", rtol=0.5, min_gap=1.0)
    _assert_settled_by_escalation(settled, exact, "cut at rtol 0.5")


def test_guard_fires_on_a_random_field_system_with_a_wrong_tolerance():
    # Part 1's comparison with a wrong tolerance: the numeric engine is confidently wrong on the
    # rotations of R^3 (noise kept as a third direction), which only the exact engine exposes.
    n = 3
    rot = [_linear_field(A, n) for A in ([[0, 1, 0], [-1, 0, 0], [0, 0, 0]],
                                         [[0, 0, 0], [0, 0, 1], [0, -1, 0]])]
    points = np.random.default_rng(0).standard_normal((3, n))
    ex = exact_lie_trace([to_poly_field(F) for F in rot], n)
    good = lie_trace(to_family(rot, n), points, max_depth=NUMERIC_DEPTH)
    bad = lie_trace(to_family(rot, n), points, max_depth=NUMERIC_DEPTH, rtol=1e-18)
    assert ex.dim == good.dim == 2 and good.status == "ok"
    # noise kept as a direction (gap inf, nothing dropped): the band sees a kept σ at rounding
    # level, so no count is given
    assert bad.status == "ambiguous" and bad.dim is None and bad.uncertain


def test_lie_trace_two_constant_fields_of_very_different_sizes():
    # the engine level of `_two_units_model`: ∂x scaled by 1e10 and ∂y span R^2
    family = VectorFamily(lambda z, a: jnp.stack([1e10 * a[0], a[1]]), 2, 2)
    trace = lie_trace(family, np.random.default_rng(0).standard_normal((3, 2)))
    exact = exact_lie_trace([(Poly.const(10**10), Poly()), (Poly(), Poly.const(1))], 2)
    assert exact.status == "ok" and exact.dim == 2
    assert trace.status == "ok" and trace.dim == 2, (trace.status, trace.reason, trace.gap)
