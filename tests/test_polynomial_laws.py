"""`polynomial_laws` against MATH.md §1.7, §6.1 (C', D', A, B), §3.4, §4.2, §4.4 and §8: numbers of
laws, the span of the known closed-form laws, readable (rational, matrix-form) output, and the
soundness of the block decomposition (grading) of the unknowns."""

import functools
import importlib
import json
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.cli.main import main
from conflow.errors import InputError
from conflow.flows import GradientFlow, MomentumFlow
from conflow.reference import closed_forms
from conflow.reference.closed_forms import known_count
from conflow.reference.gradient_laws import gradient_laws

pl = importlib.import_module("conflow.laws.find")
# `polynomial_laws` looks the grading up here: the module to monkeypatch
search = importlib.import_module("conflow.laws.find.search")


@functools.lru_cache(maxsize=None)
def laws_of(label: str, degree: int = 2, flow_key: str = "gf", homogeneous: bool = False,
            count: bool = False):
    model, flow = _case(label, flow_key)
    return pl.polynomial_laws(model, flow, degree, homogeneous=homogeneous, count=count)


def _case(label: str, flow_key: str):
    kind, dims = label.split(":")
    bias = dims.endswith("+b")
    dims = [int(x) for x in dims.rstrip("+b").split(",")]
    model = {"linear": lambda: cf.linear(dims), "relu": lambda: cf.relu(dims, bias=bias),
             "product": lambda: cf.product(*dims), "nmf": lambda: cf.nmf(*dims),
             "icnn": lambda: cf.icnn(*dims, bias=bias),
             "factorization": lambda: cf.factorization(*dims)}[kind]()
    flow = {"gf": GradientFlow(), "entropy": GradientFlow("entropy"),
            "mf0": MomentumFlow(0.0), "mf1": MomentumFlow(1.0),
            "nesterov": MomentumFlow("nesterov")}[flow_key]
    return model, flow


def _values(fns, model, flow, points):
    Z = np.asarray(flow.sample_points(model, np.random.default_rng(99), points))
    return np.stack([[float(np.ravel(np.asarray(f(jnp.asarray(z))))[0]) for f in fns]
                     for z in Z]) if fns else np.zeros((points, 0))


def _rank(M):
    if M.size == 0:
        return 0
    M = M / np.maximum(np.linalg.norm(M, axis=0), 1e-300)
    s = np.linalg.svd(M, compute_uv=False)
    return int(np.sum(s > 1e-9 * s[0]))


def _same_span(basis, known_fn, model, flow, n_known):
    """Rank of [basis values | known values] equals both ranks (same linear span of functions)."""
    P = len(basis.laws) + n_known + 12
    B = _values([law.fn for law in basis.laws], model, flow, P)
    Z = np.asarray(flow.sample_points(model, np.random.default_rng(99), P))
    K = np.stack([np.asarray(known_fn(jnp.asarray(z))) for z in Z])
    rb, rk, rbk = _rank(B), _rank(K), _rank(np.concatenate([B, K], axis=1))
    return rb, rk, rbk


# --------------------------------------------------------------------- gradient flows (C', D')

# (case, expected independent laws, expected basis size) — MATH.md §8 and §6.1 C', D'
GF_CASES = [
    ("linear:2,3,2", 6, 6),
    ("linear:3,2,4", 3, 3),
    ("linear:2,2,2,2", 6, 6),
    ("linear:3,4,4,3", 20, 20),
    ("linear:2,5,2", 14, 15),  # wide: the 15 entries of U1ᵀU1 − U2U2ᵀ are dependent (§2.2)
    ("relu:2,3,2", 3, 3),
    ("relu:2,3,2+b", 3, 3),
    ("relu:3,2,2,2", 4, 4),
    ("relu:3,4,4,3", 8, 8),
    ("factorization:2,3,2", 6, 6),
]


@pytest.mark.parametrize("label, n_ind, n_basis", GF_CASES, ids=[c[0] for c in GF_CASES])
def test_degree2_gradient_laws_match_known_counts_and_span(label, n_ind, n_basis):
    basis = laws_of(label)
    model, flow = _case(label, "gf")
    assert basis.status == "ok", basis.reason
    assert basis.n_independent == n_ind and basis.n_laws == n_basis
    assert basis.n_independent == known_count(model)
    rb, rk, rbk = _same_span(basis, gradient_laws(model), model, flow, n_basis)
    assert rb == rbk == rk == n_basis  # the basis spans exactly the known laws
    assert basis.gap > 1e8 and basis.validation_residual < 1e-12
    assert all(law.exact for law in basis.laws)


@pytest.mark.parametrize("label, expected", [("linear:2,3,2", 6), ("relu:3,4,4,3", 8)])
def test_comparison_with_count(label, expected):
    basis = laws_of(label, count=True)
    assert basis.n_count == expected and basis.complete is True
    assert "equal: the polynomial laws are all the laws" in basis.summary()


def test_product_x1x2x3_two_laws_equivalent_to_the_notebook():
    """MATH.md §6.1 B: degree-2 laws −x1² + x3², −x1² + x2²."""
    basis = laws_of("product:3", count=True)
    model, flow = _case("product:3", "gf")
    assert basis.n_laws == 2 and basis.n_independent == 2 and basis.complete
    ref = lambda z: jnp.stack([z[2] ** 2 - z[0] ** 2, z[1] ** 2 - z[0] ** 2])  # noqa: E731
    assert _same_span(basis, ref, model, flow, 2) == (2, 2, 2)
    assert sorted(law.expression for law in basis.laws) == ["x[0]**2 - x[2]**2",
                                                            "x[1]**2 - x[2]**2"]


def test_random_polynomial_field_has_no_polynomial_law():
    """MATH.md §1.7 / §6.1 A: one random polynomial field (D = 5, degree 3) has D − 1 = 4 laws,
    none of them polynomial of degree ≤ 4 — the search must not invent any."""
    rng = np.random.default_rng(5)
    exps = rng.integers(0, 3, size=(8, 5))
    exps[:, 0] = np.maximum(0, 4 - exps[:, 1:].sum(axis=1))  # several monomials of degree 4
    coefs = rng.standard_normal(8)

    def phi(x):
        return jnp.sum(jnp.asarray(coefs) * jnp.prod(x[None, :] ** jnp.asarray(exps), axis=1))

    model = cf.custom(phi, jnp.zeros(5), name="random_field")
    basis = pl.polynomial_laws(model, GradientFlow(), 4, count=True)
    assert basis.n_count == 4 and basis.n_laws == 0 and basis.complete is False
    assert "4 law(s) are not polynomial" in basis.summary()


# ------------------------------------------------------------------------ mirror flows (§4.2, §4.4)


def test_nmf_laws_degree_le_2_non_homogeneous():
    basis = laws_of("nmf:2,5,2", flow_key="entropy", count=True)
    assert basis.n_independent == 5 == basis.n_count and basis.complete
    assert basis.n_laws == 5 + 15  # the 5 linear laws and their 15 products
    assert [f.family for f in basis.families] == ["(colsum(U) − rowsum(V))"]
    assert sum(law.factors is not None for law in basis.laws) == 15
    first = basis.laws[0]
    assert first.expression == "U[0,0] + U[1,0] - V[0,0] - V[0,1]" and first.exact


def test_nmf_homogeneous_degrees():
    assert laws_of("nmf:2,2,2", 1, "entropy", homogeneous=True).n_laws == 2
    quad = laws_of("nmf:2,2,2", 2, "entropy", homogeneous=True)
    assert quad.n_laws == 3 and quad.n_independent == 2  # h0², h0 h1, h1²


def test_icnn_laws_mixed_degree_with_half_coefficients():
    basis = laws_of("icnn:2,2,2+b", flow_key="entropy", count=True)
    model, flow = _case("icnn:2,2,2+b", "entropy")
    assert basis.n_independent == 2 == basis.n_count
    fam = basis.families[0]
    assert fam.family == "(colsum(U) − 1/2·diag(VVᵀ) − 1/2·b²)"
    assert basis.laws[0].coefficients[-1] == Fraction(-1, 2)
    rb, rk, rbk = _same_span(basis, gradient_laws(model), model, flow, 2)
    assert rk == 2 and rbk == rb  # the closed forms Σ U − ½(‖v‖² + b²) lie in the span


# ---------------------------------------------------------------------------- momentum (§3.3, §3.4)


@pytest.mark.parametrize("label, flow_key, degree, expected", [
    ("linear:2,2,2", "mf1", 3, 1),
    ("linear:2,3,2", "mf1", 3, 3),
    ("linear:2,2,2", "mf0", 2, 1),
    ("relu:2,2,1", "mf1", 3, 0),
])
def test_momentum_laws_in_s_theta_v(label, flow_key, degree, expected):
    basis = laws_of(label, degree, flow_key)
    model, flow = _case(label, flow_key)
    assert basis.status == "ok", basis.reason
    assert basis.n_independent == expected == closed_forms.known_count(model, flow)
    if expected:
        assert basis.state_dim == 2 * model.D + 1
        fn = closed_forms.closed_form_laws(model, flow)
        rb, rk, rbk = _same_span(basis, fn, model, flow, expected)
        assert rb == rk == rbk == expected
        prefix = "s·" if flow_key == "mf1" else ""
        assert basis.families[0].family == prefix + "(Asym(U1ᵀdU1) + Asym(U2dU2ᵀ))"


def test_momentum_tau1_law_needs_degree_3():
    """The law is s·(bilinear): none of degree ≤ 2 in (s, θ, v) (MATH.md §1.7)."""
    assert laws_of("linear:2,2,2", 2, "mf1").n_laws == 0


# ----------------------------------------------------------------------- readable output


def test_matrix_form_grouping_and_exact_expressions():
    basis = laws_of("linear:3,4,4,3")
    assert [(f.family, len(f.indices)) for f in basis.families] == [
        ("(U1ᵀU1 − U2U2ᵀ)", 10), ("(U2ᵀU2 − U3U3ᵀ)", 10)]
    assert basis.laws[0].label == "(U1ᵀU1 − U2U2ᵀ)[0,0]"
    assert basis.laws[0].code == "(U1.T @ U1 - U2 @ U2.T)[0,0]"
    small = laws_of("linear:2,2,2")
    assert small.laws[0].expression == "U1[0,0]**2 + U1[1,0]**2 - U2[0,0]**2 - U2[0,1]**2"
    assert "(U1ᵀU1 − U2U2ᵀ)[i,j], 0 ≤ i ≤ j < 2: 3 laws" in small.summary()
    relu = laws_of("relu:2,3,2+b")
    assert relu.families[0].describe().startswith("(W1W1ᵀ − W2ᵀW2 + diag(b1²))[j,j], 0 ≤ j < 3")


def test_echelon_basis_without_recogniser_is_sparse_and_rational():
    model, flow = _case("linear:2,2,2", "gf")
    basis = pl.polynomial_laws(model, flow, 2, count=False, recognise=False)
    assert basis.n_laws == 3 and not basis.families
    assert all(law.exact and all(isinstance(c, Fraction) for c in law.coefficients)
               for law in basis.laws)
    assert max(len(law.monomials) for law in basis.laws) <= 4  # as sparse as the entries
    # reduced echelon form: each pivot monomial appears in exactly one law
    firsts = [law.monomials[0] for law in basis.laws]
    assert all(sum(m in law.monomials for law in basis.laws) == 1 for m in firsts)


# ----------------------------------------------------------------- soundness of the grading


@pytest.mark.parametrize("label, flow_key, degree", [
    ("linear:2,3,2", "gf", 2), ("icnn:2,2,1+b", "entropy", 2), ("linear:1,2,1", "mf1", 3),
    ("relu:2,2,2+b", "gf", 2),
])
def test_grading_loses_no_law(monkeypatch, label, flow_key, degree):
    """Solving every monomial in one dense block gives the same law space."""
    graded = laws_of(label, degree, flow_key)
    model, flow = _case(label, flow_key)
    monkeypatch.setattr(search, "monomial_classes",
                        lambda m, f, n, idx: (np.zeros(idx.shape[0], int), "x"))
    dense = pl.polynomial_laws(model, flow, degree, count=False)
    assert dense.classes == 1 and graded.classes > 1
    assert dense.n_laws == graded.n_laws and dense.n_independent == graded.n_independent
    P = 2 * graded.n_laws + 10
    G = _values([law.fn for law in graded.laws], model, flow, P)
    D = _values([law.fn for law in dense.laws], model, flow, P)
    assert _rank(G) == _rank(D) == _rank(np.concatenate([G, D], axis=1)) == graded.n_laws


def test_grading_is_exact_for_sign_flips_and_weights():
    """Every monomial class is homogeneous for the weights found: the integer weights w satisfy
    M w = 0 exactly for the field-term matrix M (checked inside); spot-check linear nets: the
    square U1[0,0]² and the cross term U1[0,0]·U1[0,1] are in different classes."""
    model, flow = _case("linear:2,2,2", "gf")
    idx, monos = pl.monomial_table(model.D, 2, False)
    cls, desc = pl.monomial_classes(model, flow, model.D, idx)
    col = {m: i for i, m in enumerate(monos)}
    assert cls[col[(0, 0)]] != cls[col[(0, 1)]]
    assert cls[col[(0, 0)]] == cls[col[(4, 4)]]  # U1[0,0]², U2[0,0]²: same class (a law mixes them)
    assert "sign flip" in desc


# ------------------------------------------------------------------------------- input, CLI


def test_bad_input():
    model = cf.linear([2, 2, 2])
    with pytest.raises(InputError, match="degree must be an integer >= 1"):
        pl.polynomial_laws(model, degree=0)
    with pytest.raises(InputError, match="monomials"):
        pl.polynomial_laws(cf.linear([20, 20, 20]), degree=3, count=False)
    assert main(["laws", "linear", "2,2,2", "--degree", "0"]) == 2


def test_cli_laws_json(capsys):
    assert main(["laws", "linear", "2,3,2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_laws"] == out["n_independent"] == out["count"] == 6 and out["complete"]
    assert out["status"] == "ok" and out["gap"] > 1e8 and out["degree"] == 2
    assert out["families"][0]["code"] == "(U1.T @ U1 - U2 @ U2.T)"
    assert len(out["laws"]) == 6 and out["laws"][0]["law"] == "(U1.T @ U1 - U2 @ U2.T)[0,0]"


def test_cli_laws_momentum_default_degree(capsys):
    assert main(["laws", "linear", "2,2,2", "--flow", "momentum", "--tau", "1",
                 "--no-count"]) == 0
    out = capsys.readouterr().out
    assert "1 polynomial conservation law of degree ≤ 3" in out and "s = exp(τ t)" in out
