"""Tests of the exact engine `conflow.exact`: sparse polynomials and brackets, jaxpr → polynomials,
modular linear algebra, and certified counts against MATH.md §8.

The φ's are built here (not from `conflow.models`) so that these tests pin the exact engine alone;
one test also runs the engine on `conflow.models` when that package provides the families.
"""

from __future__ import annotations

import functools
import random
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conflow.errors import InputError
from conflow.exact import (
    DEFAULT_PRIMES,
    MAX_DEGREE,
    Poly,
    bracket,
    evaluate_field,
    exact_lie_trace,
    gradient_fields,
    momentum_fields,
    monomial,
    monomial_degree,
    monomial_exponents,
    polynomial_form,
    scale_coordinates,
    shift_variables,
)
from conflow.exact.polynomial import PointEvaluator, to_raw
from conflow.exact.trace import _Echelon, is_prime, matmul_mod, mul_mod

P1, P2 = DEFAULT_PRIMES
X = [Poly.var(j) for j in range(64)]


# ---------------------------------------------------------------------------------------------
# φ builders (flat θ → φ(θ)), independent of conflow.models
# ---------------------------------------------------------------------------------------------


def linear_phi(dims):
    """φ = vec(U_1 ⋯ U_q), U_i ∈ R^{n_{i−1}×n_i} row-major in θ."""
    shapes = list(zip(dims[:-1], dims[1:]))
    D = sum(a * b for a, b in shapes)

    def phi(theta):
        mats, s = [], 0
        for a, b in shapes:
            mats.append(theta[s : s + a * b].reshape(a, b))
            s += a * b
        return functools.reduce(jnp.matmul, mats).ravel()

    return phi, D


def product_phi(D):
    return (lambda theta: jnp.prod(theta, keepdims=True)), D


def relu_paths_phi(n_in, h1, h2, n_out, bias):
    """Path-lifting of a ReLU net [n_in, h1, h2, n_out] by einsum (biases on hidden layers)."""
    sizes = [("W1", (h1, n_in)), ("W2", (h2, h1)), ("W3", (n_out, h2))]
    if bias:
        sizes += [("b1", (h1,)), ("b2", (h2,))]
    D = sum(int(np.prod(s)) for _, s in sizes)

    def phi(theta):
        p, s = {}, 0
        for name, shape in sizes:
            k = int(np.prod(shape))
            p[name] = theta[s : s + k].reshape(shape)
            s += k
        parts = [jnp.einsum("oc,cb,ba->obac", p["W3"], p["W2"], p["W1"]).ravel()]
        if bias:
            parts.append(jnp.einsum("oc,cb,b->ocb", p["W3"], p["W2"], p["b1"]).ravel())
            parts.append(jnp.einsum("oc,c->oc", p["W3"], p["b2"]).ravel())
        return jnp.concatenate(parts)

    return phi, D, sizes


def nmf_phi(n1, r, n3):
    D = (n1 + n3) * r
    return (lambda th: (th[: n1 * r].reshape(n1, r) @ th[n1 * r :].reshape(r, n3)).ravel()), D


def gf_count(phi, D, mask=None, **kw):
    fields = gradient_fields(polynomial_form(phi, D), D)
    if mask is not None:
        fields = scale_coordinates(fields, mask)
    return exact_lie_trace(fields, D, **kw)


def mf_count(phi, D, flow, mask=None, **kw):
    polys = polynomial_form(phi, D)
    if flow == "nesterov":
        fields = momentum_fields(polys, D, None, metric_mask=mask, nesterov=True)
    else:
        fields = momentum_fields(polys, D, flow, metric_mask=mask)
    return exact_lie_trace(fields, 2 * D + 1, **kw)


# ---------------------------------------------------------------------------------------------
# Monomials, polynomials, brackets
# ---------------------------------------------------------------------------------------------


def test_monomial_packing_round_trip():
    m = monomial({0: 2, 3: 1, 7: 4})
    assert monomial_exponents(m) == ((0, 2), (3, 1), (7, 4))
    assert monomial_degree(m) == 7
    assert monomial([1, 0, 2]) == monomial({0: 1, 2: 2})
    assert monomial({}) == 0
    with pytest.raises(InputError, match="degree"):
        monomial({0: MAX_DEGREE + 1})


def test_poly_arithmetic():
    x0, x1, x2 = X[:3]
    p = (x0 + 2 * x1) * (x0 - x1)
    assert p == x0**2 + x0 * x1 - 2 * x1**2
    assert p.degree == 2 and p.variables() == {0, 1}
    assert (p - p).is_zero() and p - p == 0
    assert (x0 * x1 * x2).diff(1) == x0 * x2
    assert (x0**3 * x1).diff(0) == 3 * x0**2 * x1
    q = Fraction(1, 2) * x0 + Fraction(3, 2) * x0
    assert q == 2 * x0 and isinstance(q.terms[monomial({0: 1})], int)
    assert (x0 + 1) ** 2 == x0 * x0 + 2 * x0 + 1
    assert shift_variables(x0 * x1**2, 3) == X[3] * X[4] ** 2
    f = Fraction(1, 3) * x0 * x1 + 5
    assert f.evaluate([Fraction(3), 2]) == 7
    assert f.evaluate([3, 2], P1) == 7
    assert f.evaluate([1, 1], 7) == (pow(3, -1, 7) + 5) % 7
    with pytest.raises(TypeError):
        Poly({0: 0.5})
    assert x0.gradient(3) == (Poly.const(1), Poly(), Poly())


def _linear_field(A):
    n = A.shape[0]
    return tuple(sum((int(A[k, j]) * X[j] for j in range(n)), Poly()) for k in range(n))


def test_bracket_of_linear_fields_is_commutator():
    rng = np.random.default_rng(0)
    for _ in range(5):
        A = rng.integers(-4, 5, size=(4, 4))
        B = rng.integers(-4, 5, size=(4, 4))
        assert bracket(_linear_field(A), _linear_field(B)) == _linear_field(B @ A - A @ B)


def test_bracket_quadratic_by_hand():
    x0, x1 = X[:2]
    u = (x0**2, x0 * x1)
    v = (x1, x0**2)
    # [u,v]_k = Σ_j u_j ∂_j v_k − v_j ∂_j u_k, computed by hand:
    #   k=0: u_1·1 − v_0·2x0 = x0x1 − 2x0x1;  k=1: u_0·2x0 − (v_0·x1 + v_1·x0) = 2x0³ − x1² − x0³
    assert bracket(u, v) == (-x0 * x1, x0**3 - x1**2)
    assert bracket(v, u) == (x0 * x1, x1**2 - x0**3)


def _random_field(rng, n, terms, deg):
    comps = []
    for _ in range(n):
        items = []
        for _ in range(terms):
            exps = {}
            for j in rng.choice(n, size=int(rng.integers(0, deg + 1))):
                exps[int(j)] = exps.get(int(j), 0) + 1
            items.append((exps, Fraction(int(rng.integers(-5, 6)), int(rng.integers(1, 4)))))
        comps.append(Poly.from_exponents(items))
    return tuple(comps)


def test_bracket_antisymmetry_jacobi_and_mod_p():
    rng = np.random.default_rng(1)
    n = 3
    for _ in range(3):
        u, v, w = (_random_field(rng, n, 3, 2) for _ in range(3))
        uv = bracket(u, v)
        assert uv == tuple(-c for c in bracket(v, u))
        jac = [
            a + b + c
            for a, b, c in zip(
                bracket(u, bracket(v, w)), bracket(v, bracket(w, u)), bracket(w, bracket(u, v))
            )
        ]
        assert all(c.is_zero() for c in jac)
        assert any(not c.is_zero() for c in uv)
        # the mod-p bracket is the reduction of the exact one
        assert bracket(u, v, P2) == tuple(Poly(c.mod(P2)) for c in uv)


def _naive_bracket(u, v):
    n = len(u)
    return tuple(
        sum((u[j] * v[k].diff(j) - v[j] * u[k].diff(j) for j in range(n)), Poly()) for k in range(n)
    )


def test_bracket_matches_naive_formula_on_large_fields():
    # components with ≥ 32 terms take the vectorised exponent-decoding path
    rng = np.random.default_rng(7)
    u = _random_field(rng, 6, 60, 4)
    v = _random_field(rng, 6, 3, 2)
    assert len(u[0].terms) >= 32
    assert bracket(u, v) == _naive_bracket(u, v)
    assert bracket(v, u, P1) == tuple(Poly(c.mod(P1)) for c in _naive_bracket(v, u))


@pytest.mark.parametrize("terms", [2, 40])  # plain-Python path and vectorised path
def test_point_evaluator_value_and_jacobian(terms):
    rng = np.random.default_rng(2)
    n, p = 4, P1
    F = _random_field(rng, n, terms, 3)
    z = [random.Random(3).randrange(1, p) for _ in range(n)]
    val, (rows, cols, vals) = PointEvaluator(z, p).value_and_jacobian(to_raw(F, p))
    assert [int(x) for x in val] == evaluate_field(F, z, p)
    J = np.zeros((n, n), dtype=object)
    J[rows, cols] = vals
    for k in range(n):
        for j in range(n):
            assert int(J[k, j]) == F[k].diff(j).evaluate(z, p)


# ---------------------------------------------------------------------------------------------
# Modular linear algebra
# ---------------------------------------------------------------------------------------------


def test_default_primes():
    assert P1 != P2
    for q in DEFAULT_PRIMES:
        assert is_prime(q) and (1 << 60) < q < (1 << 61)
    assert not is_prime((1 << 61) - 3) and not is_prime(561) and not is_prime(1) and is_prime(2)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(0, 9),
    st.integers(1, 5),
    st.sampled_from([P1, P2, (1 << 31) - 1, 101]),
    st.randoms(use_true_random=False),
)
def test_matmul_mod_matches_python_ints(m, k, n, p, rnd):
    pick = lambda: rnd.choice([0, 1, p - 1, p - 2, rnd.randrange(p)])  # noqa: E731
    A = np.array([[pick() for _ in range(k)] for _ in range(m)], dtype=np.int64).reshape(m, k)
    B = np.array([[pick() for _ in range(n)] for _ in range(k)], dtype=np.int64).reshape(k, n)
    ref = (A.astype(object) @ B.astype(object)) % p if k else np.zeros((m, n), dtype=object)
    out = matmul_mod(A, B, p)
    assert out.dtype == np.int64 and (out.astype(object) == ref).all()
    a = np.array([pick() for _ in range(n)], dtype=np.int64)
    b = np.array([pick() for _ in range(n)], dtype=np.int64)
    assert [int(x) for x in mul_mod(a, b, p)] == [int(x) * int(y) % p for x, y in zip(a, b)]


def _rank_mod(rows, p):
    rows = [list(map(int, r)) for r in rows]
    rank, ncols = 0, len(rows[0]) if rows else 0
    for c in range(ncols):
        piv = next((i for i in range(rank, len(rows)) if rows[i][c] % p), None)
        if piv is None:
            continue
        rows[rank], rows[piv] = rows[piv], rows[rank]
        inv = pow(rows[rank][c], -1, p)
        rows[rank] = [x * inv % p for x in rows[rank]]
        for i in range(len(rows)):
            if i != rank and rows[i][c] % p:
                f = rows[i][c]
                rows[i] = [(x - f * y) % p for x, y in zip(rows[i], rows[rank])]
        rank += 1
    return rank


def test_echelon_selects_greedy_independent_rows():
    p, n = P1, 7
    rng = random.Random(4)
    base = [[rng.randrange(p) for _ in range(n)] for _ in range(4)]
    rows = []
    for t in range(150):  # mostly combinations of the 4 base rows, some zero rows, a few new ones
        if t in (5, 70, 140):
            rows.append([rng.randrange(p) for _ in range(n)])
        elif t % 9 == 0:
            rows.append([0] * n)
        else:
            c = [rng.randrange(p) for _ in range(4)]
            rows.append([sum(ci * b[j] for ci, b in zip(c, base)) % p for j in range(n)])
    expected, kept = [], []
    for i, r in enumerate(rows):
        if _rank_mod([rows[j] for j in kept] + [r], p) > len(kept):
            kept.append(i)
    expected = kept
    ech = _Echelon(n, p)
    V = np.array(rows, dtype=np.int64)
    got = ech.select(V[:60], block=8) + [60 + i for i in ech.select(V[60:], block=8)]
    assert got == expected and ech.rank == len(expected) == 7
    # the basis is in reduced echelon form and spans the kept rows
    assert (ech.R[:, ech.pivots] == np.eye(ech.rank, dtype=np.int64)).all()
    assert _rank_mod(list(ech.R) + [rows[i] for i in expected], p) == ech.rank


# ---------------------------------------------------------------------------------------------
# jaxpr → polynomials
# ---------------------------------------------------------------------------------------------


def test_extract_product_and_matmul():
    (p,) = polynomial_form(lambda x: x[0] * x[1] * x[2], 3)
    assert p == X[0] * X[1] * X[2]
    assert polynomial_form(product_phi(3)[0], 3) == [X[0] * X[1] * X[2]]
    phi, D = linear_phi((2, 3, 2))  # U1 = θ[0:6] (2×3), U2 = θ[6:12] (3×2)
    polys = polynomial_form(phi, D)
    assert len(polys) == 4
    for i in range(2):
        for j in range(2):
            want = sum((X[3 * i + k] * X[6 + 2 * k + j] for k in range(3)), Poly())
            assert polys[2 * i + j] == want


def test_extract_relu_path_lifting_einsum():
    phi, D, sizes = relu_paths_phi(2, 2, 2, 1, bias=True)
    polys = polynomial_form(phi, D)
    offs, s = {}, 0
    for name, shape in sizes:
        offs[name] = (s, shape)
        s += int(np.prod(shape))

    def var(name, *idx):
        start, shape = offs[name]
        return X[start + int(np.ravel_multi_index(idx, shape))]

    want = [
        var("W3", o, c) * var("W2", c, b) * var("W1", b, a)
        for o in range(1)
        for b in range(2)
        for a in range(2)
        for c in range(2)
    ]
    want += [
        var("W3", o, c) * var("W2", c, b) * var("b1", b)
        for o in range(1)
        for c in range(2)
        for b in range(2)
    ]
    want += [var("W3", o, c) * var("b2", c) for o in range(1) for c in range(2)]
    assert polys == want


def test_extract_rational_constants_and_structural_ops():
    def phi(x):
        y = jnp.stack([x, x**2])  # (2, 3)
        return jnp.concatenate(
            [
                (0.5 * x[0] * x[1] + x[2] / 4)[None],
                jnp.cumsum(x),
                jnp.pad(x, 1)[:2],
                jnp.flip(y.T, 0).sum(0),
                x[jnp.array([2, 0])] - 3,
                jnp.where(jnp.arange(3) > 1, x, 0.0),
            ]
        )

    polys = polynomial_form(phi, 3)
    x0, x1, x2 = X[:3]
    assert polys[0] == Fraction(1, 2) * x0 * x1 + Fraction(1, 4) * x2
    assert polys[1:4] == [x0, x0 + x1, x0 + x1 + x2]
    assert polys[4:6] == [Poly(), x0]
    assert polys[6:8] == [x0 + x1 + x2, x0**2 + x1**2 + x2**2]
    assert polys[8:10] == [x2 - 3, x0 - 3]
    assert polys[10:] == [Poly(), Poly(), x2]


@pytest.mark.parametrize(
    "fn, name",
    [
        (lambda x: jnp.tanh(x), "tanh"),
        (lambda x: jnp.maximum(x, 0.0), "max"),
        (lambda x: jax.nn.relu(x), "max"),
        (lambda x: x[:1] / x[1:2], "div"),
        (lambda x: jnp.exp(x), "exp"),
        (lambda x: (x > 0) * x, "gt"),
        (lambda x: x**-1, "integer_pow"),
    ],
)
def test_extract_refuses_non_polynomial(fn, name):
    with pytest.raises(
        InputError, match=f"φ is not polynomial: primitive '{name}' is not supported"
    ):
        polynomial_form(fn, 3)


def test_extract_reads_float_constants_as_binary_rationals():
    # any float64 is the exact binary rational m·2^e (tests/test_exact_piecewise.py has more)
    assert polynomial_form(lambda x: 0.123456789 * x, 2)[0] == Fraction(0.123456789) * X[0]
    with pytest.raises(InputError, match="not finite"):
        polynomial_form(lambda x: jnp.inf * x, 2)


def test_extract_matches_jax_on_models():
    models = pytest.importorskip("conflow.models")
    rng = np.random.default_rng(5)
    for m in [
        models.linear((2, 3, 2, 2)),
        models.relu((3, 4, 4, 3), bias=True),
        models.nmf(2, 3, 2),
    ]:
        polys = polynomial_form(m.phi, m.D)
        theta = rng.normal(size=m.D)
        got = np.array([float(P.evaluate([float(t) for t in theta])) for P in polys])
        np.testing.assert_allclose(
            got, np.asarray(m.phi(jnp.asarray(theta))), rtol=1e-12, atol=1e-12
        )


# ---------------------------------------------------------------------------------------------
# Lifts
# ---------------------------------------------------------------------------------------------


def test_scale_coordinates_and_gradient_fields():
    x0, x1 = X[:2]
    (g,) = gradient_fields([x0**2 * x1], 2)
    assert g == (2 * x0 * x1, x0**2)
    (h,) = scale_coordinates([g], [True, False])
    assert h == (2 * x0**2 * x1, x0**2)


def test_momentum_fields_layout():
    # φ = θ0 θ1, D = 2; state (s, θ0, θ1, v0, v1) = x0..x4
    s, t0, t1, v0, v1 = X[:5]
    phi = [X[0] * X[1]]
    zero = Poly()
    drift, force = momentum_fields(phi, 2, 0)
    assert drift == (Poly.const(1), v0, v1, zero, zero)
    assert force == (zero, zero, zero, t1, t0)
    drift, _ = momentum_fields(phi, 2, Fraction(1, 2))
    assert drift == (Fraction(1, 2) * s, v0, v1, Fraction(-1, 2) * v0, Fraction(-1, 2) * v1)
    drift, force = momentum_fields(phi, 2, None, nesterov=True)
    assert drift == (s, s * v0, s * v1, -3 * v0, -3 * v1) and force == (zero, zero, zero, t1, t0)
    _, force = momentum_fields(phi, 2, 2, metric_mask=[True, False])
    assert force == (zero, zero, zero, (2 * t0 + v0) * t1, t0)
    _, force = momentum_fields(phi, 2, None, metric_mask=[True, False], nesterov=True)
    assert force == (zero, zero, zero, (3 * t0 + s * v0) * t1, s * t0)
    with pytest.raises(InputError, match="nesterov"):
        momentum_fields(phi, 2, 0, nesterov=True)


# ---------------------------------------------------------------------------------------------
# Certified counts (MATH.md §8)
# ---------------------------------------------------------------------------------------------

GF_CASES = [
    ("product", 3, 2),
    ("product", 5, 4),
    ("linear", (2, 2, 2), 3),
    ("linear", (2, 5, 2), 14),
    ("linear", (1, 3, 1), 5),
    ("linear", (2, 2, 2, 2), 6),
    ("linear", (2, 3, 2, 2), 9),
    ("linear", (5, 5, 5), 15),
]


def _phi(kind, dims):
    return product_phi(dims) if kind == "product" else linear_phi(dims)


@pytest.mark.parametrize("kind, dims, laws", GF_CASES)
def test_gradient_flow_counts(kind, dims, laws):
    r = gf_count(*_phi(kind, dims))
    assert r.status == "ok" and r.n_laws == laws
    assert r.dim == r.state_dim - laws == r.ranks[-1]


def test_relu_path_lifting_count():
    phi, D, _ = relu_paths_phi(3, 4, 4, 3, bias=True)
    r = gf_count(phi, D)
    assert (r.status, r.n_laws, r.depth) == ("ok", 8, 1)  # one law per hidden neuron


MF_CASES = [
    ("product", 3, 0),
    ("linear", (2, 2, 2), 1),
    ("linear", (2, 3, 2), 3),
    ("linear", (1, 3, 1), 6),
    ("linear", (2, 5, 2), 10),
    ("linear", (2, 2, 2, 2), 2),
    ("linear", (2, 3, 2, 2), 4),
]


@pytest.mark.parametrize("flow", [0, 1, "nesterov"])
@pytest.mark.parametrize("kind, dims, laws", MF_CASES)
def test_momentum_counts(kind, dims, laws, flow):
    phi, D = _phi(kind, dims)
    r = mf_count(phi, D, flow)
    assert r.state_dim == 2 * D + 1
    assert r.status == "ok" and r.n_laws == laws


@pytest.mark.parametrize(
    "dims, flow, laws",
    [
        ((2, 2, 2), "gf", 2),
        ((2, 5, 2), "gf", 5),
        ((2, 2, 2), 0, 0),
        ((2, 2, 2), 1, 0),
        ((2, 2, 2), "nesterov", 0),
    ],
)
def test_entropy_metric_nmf(dims, flow, laws):
    phi, D = nmf_phi(*dims)
    mask = np.ones(D, dtype=bool)
    r = gf_count(phi, D, mask) if flow == "gf" else mf_count(phi, D, flow, mask)
    assert r.status == "ok" and r.n_laws == laws


def test_exact_count_laws_on_models():
    models = pytest.importorskip("conflow.models")
    from conflow.flows import GradientFlow, MomentumFlow
    from conflow.laws.exact_count import exact_count_laws

    assert exact_count_laws(models.linear((2, 3, 2))).n_laws == 6
    assert exact_count_laws(models.nmf(2, 3, 2), GradientFlow("entropy")).n_laws == 3
    assert exact_count_laws(models.linear((2, 3, 2)), MomentumFlow(1)).n_laws == 3


def test_small_examples():
    x0, x1, x2 = X[:3]
    zero = Poly()
    # so(3) acting on R^3: orbits are spheres, one law |x|²
    rot = [(zero, -x2, x1), (x2, zero, -x0)]
    r = exact_lie_trace(rot, 3)
    assert (r.dim, r.ranks) == (2, (2, 2))
    # Heisenberg: X = ∂0, Y = ∂1 + x0 ∂2, [X, Y] = ∂2: no law, needs one bracket
    heis = [(Poly.const(1), zero, zero), (zero, Poly.const(1), x0)]
    assert exact_lie_trace(heis, 3).ranks == (2, 3)
    assert exact_lie_trace(heis, 3, max_depth=0).status == "not_converged"
    # one random polynomial field (MATH.md §6.1 test A): a 1-dimensional algebra, D − 1 laws
    field = _random_field(np.random.default_rng(6), 5, 3, 3)
    assert exact_lie_trace([field], 5).n_laws == 4
    # no fields: nothing is spanned
    assert exact_lie_trace([], 4).n_laws == 4


def test_two_independent_runs_agree():
    phi, D = linear_phi((2, 3, 2))
    r = gf_count(phi, D, seed=7)
    assert r.status == "ok" and r.primes == DEFAULT_PRIMES and len(r.runs) == 2
    a, b = r.runs
    assert (a.prime, b.prime) == (P1, P2) and a.point != b.point
    assert a.dim == b.dim == r.dim and a.ranks == b.ranks == r.ranks
    assert r.n_brackets == a.n_candidates + b.n_candidates > 0
    assert r.n_symbolic == a.n_symbolic + b.n_symbolic > 0
    # another seed gives other points and the same certified answer
    r2 = gf_count(phi, D, seed=8)
    assert r2.runs[0].point != a.point and r2.dim == r.dim


def test_bad_prime_is_reported_as_disagreement():
    # the coefficient P1 vanishes mod P1 only: the runs differ, no count is given
    field = (P1 * X[0], Poly())
    r = exact_lie_trace([field], 2)
    assert r.status == "disagree" and r.dim is None and r.n_laws is None
    assert [run.dim for run in r.runs] == [0, 1]


def test_depth_cap_gives_not_converged():
    phi, D = linear_phi((2, 2, 2))  # ranks (4, 5, 5): level 2 is needed to see stagnation
    capped = gf_count(phi, D, max_depth=1)
    assert capped.status == "not_converged" and capped.dim is None and capped.n_laws is None
    assert capped.ranks == (4, 5)
    full = gf_count(phi, D, max_depth=2)
    assert (full.status, full.n_laws, full.depth) == ("ok", 3, 2)


def test_failure_bound_derivation():
    # product x0 x1 x2: one generator of degree 2 kept at level 0; level 1 has one candidate
    # [χ, χ] = 0 (degree bound 2 + 2 − 1 = 3), pruned with Σ deg kept = 2, via the random
    # stagnation test (+2): bound = (3 + 2 + 2)/(p − 1) for each run.
    r = gf_count(*product_phi(3))
    for run in r.runs:
        assert run.failure_bound == 7 / (run.prime - 1)
    assert r.failure_bound == max(7 / (P1 - 1), 7 / (P2 - 1))
    big = gf_count(*linear_phi((5, 5, 5)))
    assert 0 < big.failure_bound < 1e-12


def test_input_validation():
    with pytest.raises(InputError, match="components"):
        exact_lie_trace([(X[0],)], 2)
    with pytest.raises(InputError, match="two primes"):
        exact_lie_trace([(X[0],)], 1, primes=(P1,))
    with pytest.raises(InputError, match="not a prime"):
        exact_lie_trace([(X[0],)], 1, primes=(P1, (1 << 61) - 3))
    with pytest.raises(InputError, match="j ≥ n"):
        exact_lie_trace([(X[3], Poly())], 2)
    with pytest.raises(InputError, match="max_depth"):
        exact_lie_trace([(X[0],)], 1, max_depth=-1)
