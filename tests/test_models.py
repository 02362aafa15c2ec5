"""Model families: layouts, φ values by hand, closed-form gradient-flow laws ⊥ every generator
(the one home of that check for the polynomial families), closed-form counts, custom(), registry."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_generator_cosine
from jax.flatten_util import ravel_pytree

import conflow  # noqa: F401  (float64)
from conflow.errors import InputError
from conflow.flows import GradientFlow
from conflow.models import (
    MODEL_NAMES,
    Model,
    custom,
    factorization,
    get_model,
    icnn,
    linear,
    nmf,
    product,
    relu,
)
from conflow.reference.closed_forms import known_count
from conflow.reference.gradient_laws import gradient_laws


def _arr(x):
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------


def test_linear_layout():
    m = linear([2, 3, 2])
    assert isinstance(m, Model)
    assert m.name == "linear" and m.dims == (2, 3, 2) and not m.bias
    assert [(b.name, b.shape) for b in m.blocks] == [("U1", (2, 3)), ("U2", (3, 2))]
    assert m.D == 12 and m.d == 4
    assert m.param_names[:4] == ["U1[0,0]", "U1[0,1]", "U1[0,2]", "U1[1,0]"]
    assert m.param_names[6] == "U2[0,0]" and m.param_names[-1] == "U2[2,1]"
    assert not m.positive_mask.any()
    assert m.label == "linear[2,3,2]"


def test_relu_layout_with_and_without_bias():
    m = relu([3, 2, 4, 2], bias=True)
    assert [(b.name, b.shape) for b in m.blocks] == [
        ("W1", (2, 3)),
        ("b1", (2,)),
        ("W2", (4, 2)),
        ("b2", (4,)),
        ("W3", (2, 4)),
    ]
    assert m.D == 6 + 2 + 8 + 4 + 8 and m.bias and m.label == "relu[3,2,4,2]+bias"
    # d = paths 3·2·4·2 + bias paths from layer 1 (2·4·2) and layer 2 (4·2)
    assert m.d == 48 + 16 + 8
    m0 = relu([3, 2, 4, 2])
    assert [b.name for b in m0.blocks] == ["W1", "W2", "W3"] and m0.D == 22 and m0.d == 48
    assert m.param_names[6:9] == ["b1[0]", "b1[1]", "W2[0,0]"]


def test_other_layouts():
    f = factorization(2, 3, 4)
    assert [(b.name, b.shape) for b in f.blocks] == [("U", (2, 3)), ("V", (4, 3))]
    assert f.name == "factorization" and f.dims == (2, 3, 4) and f.D == 18 and f.d == 8

    n = nmf(2, 3, 4)
    assert [(b.name, b.shape, b.positive) for b in n.blocks] == [
        ("U", (2, 3), True),
        ("V", (3, 4), True),
    ]
    assert n.positive_mask.all() and n.D == 18 and n.d == 8
    assert (n.sample_points(jax.random.PRNGKey(0), 5) > 0).all()

    c = icnn(4, 3, 2, bias=True)
    assert [(b.name, b.shape, b.positive) for b in c.blocks] == [
        ("U", (2, 3), True),
        ("V", (3, 4), False),
        ("b", (3,), False),
    ]
    assert c.D == 6 + 12 + 3 and c.d == 3 * 2 * 5 and c.bias
    assert c.positive_mask.tolist() == [True] * 6 + [False] * 15
    assert icnn(4, 3, 2).D == 18 and icnn(4, 3, 2).d == 24

    p = product(4)
    assert p.dims == (4,) and p.D == 4 and p.d == 1 and p.param_names == [
        "x[0]", "x[1]", "x[2]", "x[3]"
    ]


# --------------------------------------------------------------------------------------------
# φ and laws by hand
# --------------------------------------------------------------------------------------------


def test_linear_phi_by_hand():
    m = linear([1, 2, 1])  # U1 = [a b], U2 = [c; d]  →  ac + bd
    np.testing.assert_allclose(m.phi(jnp.array([2.0, 3.0, 5.0, 7.0])), [2 * 5 + 3 * 7])
    m = linear([2, 2, 1, 2])
    th = jnp.arange(1.0, m.D + 1)
    u1, u2, u3 = (_arr(x) for x in m.unflatten(th).values())
    np.testing.assert_allclose(m.phi(th), (u1 @ u2 @ u3).ravel())
    # laws: U1ᵀU1 − U2U2ᵀ for U1 = [[1,2],[3,4]], U2 = [[5],[6]]:  [[10,14],[14,20]] − [[25,30],[30,36]]
    # then U2ᵀU2 − U3U3ᵀ = 61 − (7² + 8²) = −52; upper triangles in triu order
    np.testing.assert_allclose(gradient_laws(m)(th), [10 - 25, 14 - 30, 20 - 36, -52])


def test_relu_phi_by_hand_bias():
    # [1,2,1]+bias: θ = (W1[0,0], W1[1,0], b1[0], b1[1], W2[0,0], W2[0,1]) = (a1, a2, c1, c2, e1, e2)
    # paths: a1 e1, a2 e2; bias paths: c1 e1, c2 e2
    m = relu([1, 2, 1], bias=True)
    th = jnp.arange(1.0, 7.0)
    np.testing.assert_allclose(m.phi(th), [1 * 5, 2 * 6, 3 * 5, 4 * 6])
    # laws: a_j² + c_j² − e_j²
    np.testing.assert_allclose(gradient_laws(m)(th), [1 + 9 - 25, 4 + 16 - 36])


def test_relu_phi_by_hand_no_bias():
    # [2,2,1]: W1 = [[1,2],[3,4]], W2 = [[5,6]]; φ[i, j] = W1[j, i] W2[0, j]
    m = relu([2, 2, 1])
    th = jnp.arange(1.0, 7.0)
    np.testing.assert_allclose(m.phi(th), [1 * 5, 3 * 6, 2 * 5, 4 * 6])
    np.testing.assert_allclose(gradient_laws(m)(th), [1 + 4 - 25, 9 + 16 - 36])


def test_relu_phi_by_hand_deep_bias():
    # [1,1,2,1]+bias: W1 = a, b1 = β, W2 = [c, d]ᵀ, b2 = [e, f], W3 = [g, h]
    m = relu([1, 1, 2, 1], bias=True)
    a, beta, c, d, e, f, g, h = 2.0, 3.0, 5.0, 7.0, 11.0, 13.0, 17.0, 19.0
    th = jnp.array([a, beta, c, d, e, f, g, h])
    expected = [a * c * g, a * d * h, beta * c * g, beta * d * h, e * g, f * h]
    np.testing.assert_allclose(m.phi(th), expected)
    laws = [a**2 + beta**2 - (c**2 + d**2), c**2 + e**2 - g**2, d**2 + f**2 - h**2]
    np.testing.assert_allclose(gradient_laws(m)(th), laws)


def _relu_paths_reference(m: Model, th) -> np.ndarray:
    """Brute-force path enumeration with Python loops (independent of relu_phi's einsum order)."""
    p = m.unflatten(np.asarray(th))  # numpy in, numpy out: no JAX ops
    dims, L = m.dims, len(m.dims) - 1
    out = []
    for path in itertools.product(*(range(n) for n in dims)):
        out.append(math.prod(p[f"W{l}"][path[l], path[l - 1]] for l in range(1, L + 1)))
    if m.bias:
        for l in range(1, L):
            for path in itertools.product(*(range(n) for n in dims[l:])):
                w = math.prod(p[f"W{k}"][path[k - l], path[k - l - 1]] for k in range(l + 1, L + 1))
                out.append(p[f"b{l}"][path[0]] * w)
    return np.array(out)


@pytest.mark.parametrize("dims,bias", [([2, 3, 2], False), ([2, 3, 2, 2], True), ([3, 2, 1, 2], True)])
def test_relu_phi_matches_loops(dims, bias):
    m = relu(dims, bias=bias)
    th = np.random.default_rng(sum(dims)).normal(size=m.D)
    np.testing.assert_allclose(jax.jit(m.phi)(th), _relu_paths_reference(m, th), rtol=1e-13)


def test_factorization_nmf_icnn_product_by_hand():
    f = factorization(2, 1, 2)  # U = [[1],[2]], V = [[3],[4]]  →  U Vᵀ
    np.testing.assert_allclose(f.phi(jnp.array([1.0, 2.0, 3.0, 4.0])), [3, 4, 6, 8])
    f = factorization(1, 2, 1)  # U = [a b], V = [c d]: φ = ac + bd, laws a²−c², ab−cd, b²−d²
    np.testing.assert_allclose(f.phi(jnp.array([2.0, 3.0, 5.0, 7.0])), [31])
    np.testing.assert_allclose(
        gradient_laws(f)(jnp.array([2.0, 3.0, 5.0, 7.0])), [4 - 25, 6 - 35, 9 - 49]
    )

    n = nmf(2, 2, 1)  # U = [[1,2],[3,4]], V = [[5],[6]]
    th = jnp.arange(1.0, 7.0)
    np.testing.assert_allclose(n.phi(th), [1 * 5 + 2 * 6, 3 * 5 + 4 * 6])
    np.testing.assert_allclose(gradient_laws(n)(th), [1 + 3 - 5, 2 + 4 - 6])

    c = icnn(1, 2, 1, bias=True)  # U = [u1 u2], V = [v1; v2], b = [b1, b2]
    th = jnp.arange(1.0, 7.0)  # u = (1, 2), v = (3, 4), b = (5, 6)
    np.testing.assert_allclose(c.phi(th), [1 * 3, 1 * 5, 2 * 4, 2 * 6])
    np.testing.assert_allclose(gradient_laws(c)(th), [1 - 0.5 * (9 + 25), 2 - 0.5 * (16 + 36)])
    c0 = icnn(2, 1, 2)  # U = [[1],[2]], V = [[3, 4]]: φ = u vᵀ
    np.testing.assert_allclose(c0.phi(jnp.array([1.0, 2.0, 3.0, 4.0])), [3, 4, 6, 8])

    p = product(3)
    np.testing.assert_allclose(p.phi(jnp.array([2.0, 3.0, -4.0])), [-24])
    np.testing.assert_allclose(gradient_laws(p)(jnp.array([2.0, 3.0, -4.0])), [4 - 9, 4 - 16])


# --------------------------------------------------------------------------------------------
# closed-form laws are orthogonal to the generators (MATH.md §1.3, §4.1)
# --------------------------------------------------------------------------------------------


def _random_cases() -> list[Model]:
    rng = np.random.default_rng(2024)
    cases = []
    for _ in range(2):
        q = int(rng.integers(2, 5))
        cases.append(linear(rng.integers(1, 5, size=q + 1).tolist()))
    for _ in range(2):
        L = int(rng.integers(2, 4))
        cases.append(relu(rng.integers(1, 4, size=L + 1).tolist(), bias=bool(rng.integers(2))))
    for fam in (factorization, nmf):
        cases.append(fam(*rng.integers(1, 5, size=3).tolist()))
    cases += [
        linear([2, 3, 2]),
        linear([2, 3, 2, 2]),
        linear([2, 3, 3, 2]),
        icnn(3, 2, 1),
        icnn(2, 3, 2, bias=True),
        relu([2, 3, 2], bias=True),
        relu([3, 2, 2, 2]),
        product(4),
        product(5),
    ]
    return cases


CASES = _random_cases()


def _flow(m: Model) -> GradientFlow:
    """The flow of the closed-form laws: the entropy metric for families with positive blocks."""
    return GradientFlow("entropy") if m.positive_mask.any() else GradientFlow()


@pytest.mark.parametrize("m", CASES, ids=[m.label for m in CASES])
def test_closed_form_laws_orthogonal_to_generators(m):
    # ⟨∇h_k, χ_j⟩ = 0 at generic points for every closed-form law h_k and generator χ_j.
    assert max_generator_cosine(gradient_laws(m), m, _flow(m)) < 1e-12


def test_orthogonality_check_detects_wrong_laws_and_wrong_metric():
    """Negative controls: the check above is not vacuous."""
    m = linear([2, 3, 2])
    assert max_generator_cosine(lambda t: jnp.sum(t**2)[None], m) > 1e-3  # ‖U1‖² + ‖U2‖²
    # NMF laws are NOT laws of the Euclidean flow: without the entropy metric they fail
    n = nmf(2, 2, 2)
    assert max_generator_cosine(gradient_laws(n), n, GradientFlow()) > 1e-3
    assert max_generator_cosine(gradient_laws(n), n, GradientFlow("entropy")) < 1e-12


@pytest.mark.parametrize("m", CASES, ids=[m.label for m in CASES])
def test_phi_supports_the_transforms_the_engine_needs(m):
    """φ under jit, vmap, jvp and jacrev, in float64: jvp along 1 = row sums of the Jacobian."""

    def one(theta):
        value, tangent = jax.jvp(m.phi, (theta,), (jnp.ones_like(theta),))
        return value, tangent, jax.jacrev(m.phi)(theta)

    thetas = m.sample_points(7, 2)
    value, tangent, jac = jax.jit(jax.vmap(one))(thetas)
    assert value.dtype == jac.dtype == jnp.float64 and value.shape == (2, m.d)
    assert jac.shape == (2, m.d, m.D) and bool(jnp.all(jnp.isfinite(tangent)))
    np.testing.assert_allclose(tangent, jac.sum(axis=2), rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------------
# closed-form counts (MATH.md §2.1–2.4, §4.2, §4.4, §8)
# --------------------------------------------------------------------------------------------


def _linear_count(dims) -> int:
    total = 0
    for i in range(1, len(dims) - 1):
        n, p = dims[i], dims[i - 1] + dims[i + 1]
        total += n * (n + 1) // 2 if n <= p else p * n - p * (p - 1) // 2
    return total


@pytest.mark.parametrize(
    "dims,expected",
    [
        ([2, 5, 2], 14),  # wide: not 15
        ([2, 3, 2, 2], 9),
        ([2, 5, 2, 2], 17),  # not 18
        ([2, 4, 1, 2], 10),  # not 11
        ([2, 2, 2, 2, 2], 9),
    ],
)
def test_linear_closed_form_count(dims, expected):
    assert _linear_count(dims) == expected
    assert known_count(linear(dims)) == expected


def test_linear_closed_form_count_random():
    rng = np.random.default_rng(11)
    for _ in range(3):
        dims = rng.integers(1, 5, size=int(rng.integers(3, 5))).tolist()
        if any(dims[i] > dims[i - 1] + dims[i + 1] for i in range(1, len(dims) - 1)):
            continue
        assert known_count(linear(dims)) == sum(n * (n + 1) // 2 for n in dims[1:-1])


@pytest.mark.parametrize(
    "dims,bias", [([2, 3, 2], True), ([3, 2, 2, 2], False), ([2, 4, 3, 1], True)]
)
def test_relu_closed_form_count(dims, bias):
    assert known_count(relu(dims, bias=bias)) == sum(dims[1:-1])


@pytest.mark.parametrize("n,r,m,expected", [(2, 2, 2, 3), (2, 5, 2, 14), (1, 3, 1, 5)])
def test_factorization_closed_form_count(n, r, m, expected):
    assert known_count(factorization(n, r, m)) == expected


@pytest.mark.parametrize("dims", [(2, 2, 2), (2, 5, 2), (3, 7, 1)])
def test_nmf_closed_form_count(dims):
    assert known_count(nmf(*dims), GradientFlow("entropy")) == dims[1]


@pytest.mark.parametrize("dims,bias", [((2, 2, 2), False), ((2, 3, 2), True), ((3, 2, 1), True)])
def test_icnn_closed_form_count(dims, bias):
    assert known_count(icnn(*dims, bias=bias), GradientFlow("entropy")) == dims[1]


@pytest.mark.parametrize("D", [1, 5])
def test_product_closed_form_count(D):
    assert known_count(product(D)) == D - 1


# --------------------------------------------------------------------------------------------
# custom()
# --------------------------------------------------------------------------------------------


def test_custom_dict_matches_linear():
    ref = linear([2, 3, 2])
    m = custom(lambda p: p["U1"] @ p["U2"], {"U2": np.zeros((3, 2)), "U1": np.zeros((2, 3))})
    assert m.name == "custom" and m.D == ref.D == 12 and m.d == ref.d == 4 and m.dims == (12,)
    assert [b.name for b in m.blocks] == ["U1", "U2"]  # dict keys sorted, as ravel_pytree does
    assert m.param_names == ref.param_names
    assert gradient_laws(m) is None and known_count(m) is None
    th = ref.sample_points(jax.random.PRNGKey(2), 1)[0]
    np.testing.assert_allclose(m.phi(th), ref.phi(th), rtol=1e-14)
    jac = jax.jit(lambda t: (jax.jacrev(m.phi)(t), jax.jacrev(ref.phi)(t)))
    np.testing.assert_allclose(*jac(th), rtol=1e-14)


def test_custom_nested_names_follow_ravel_pytree_order():
    params = {
        "layers": [{"w": np.ones((2, 3)), "b": np.ones(2, dtype=np.float32)}, {"w": np.ones((1, 2))}],
        "scale": 1.0,
    }

    def phi(p):
        h = p["layers"][0]["w"] @ jnp.arange(3.0) + p["layers"][0]["b"]
        return p["scale"] * (p["layers"][1]["w"] @ h)

    m = custom(phi, params, name="mlp")
    assert m.name == "mlp"
    assert [(b.name, b.shape) for b in m.blocks] == [
        ("layers[0].b", (2,)),
        ("layers[0].w", (2, 3)),
        ("layers[1].w", (1, 2)),
        ("scale", ()),
    ]
    assert m.param_names[:3] == ["layers[0].b[0]", "layers[0].b[1]", "layers[0].w[0,0]"]
    assert m.param_names[-1] == "scale"
    # block layout == ravel_pytree layout: flatten(name -> leaf) equals ravel_pytree(params)
    rng = np.random.default_rng(0)
    rand = jax.tree_util.tree_map(lambda x: rng.normal(size=np.shape(x)), params)
    flat, _ = ravel_pytree(rand)
    named = {
        "layers[0].b": rand["layers"][0]["b"],
        "layers[0].w": rand["layers"][0]["w"],
        "layers[1].w": rand["layers"][1]["w"],
        "scale": rand["scale"],
    }
    np.testing.assert_array_equal(m.flatten(named), flat)
    np.testing.assert_allclose(m.phi(flat), np.ravel(phi(rand)), rtol=1e-14)
    assert m.phi(flat).dtype == jnp.float64  # the float32 leaf was promoted


def test_custom_list_and_single_array_names_and_positive():
    m = custom(lambda p: p[0] * p[1], [np.ones(2), np.ones(2)], positive=["1"])
    assert [b.name for b in m.blocks] == ["0", "1"] and m.param_names == ["0[0]", "0[1]", "1[0]", "1[1]"]
    assert m.positive_mask.tolist() == [False, False, True, True]
    s = custom(lambda x: jnp.prod(x), np.ones(3))
    assert [b.name for b in s.blocks] == ["theta"] and s.d == 1
    np.testing.assert_allclose(s.phi(jnp.array([2.0, 3.0, 4.0])), product(3).phi(jnp.array([2.0, 3.0, 4.0])))


@pytest.mark.parametrize(
    "phi,params,match",
    [
        (3, {"a": np.zeros(2)}, "phi is not callable"),
        (lambda p: p, {}, "params is empty"),
        (lambda p: p, {"a": np.zeros(0)}, "no entries"),
        (lambda p: p["a"], {"a": np.zeros(2, dtype=np.int32)}, "parameter 'a' has dtype int32"),
        (lambda p: p["b"], {"a": np.zeros(2)}, "phi raised KeyError"),
        (lambda p: p["a"] @ p["a"].T, {"a": np.zeros((2, 3))[:, :, None]}, "phi raised"),
        (lambda p: "abc", {"a": np.zeros(2)}, "not a numeric array"),
        (lambda p: jnp.zeros(0), {"a": np.zeros(2)}, "empty array"),
        (lambda p: jnp.round(p["a"]).astype(int), {"a": np.zeros(2)}, "not differentiable"),
        (lambda p: jnp.sqrt(-1.0 - p["a"] ** 2), {"a": np.zeros(2)}, r"φ returned NaN/inf at a generic point"),
        (lambda p: p["a"] * jnp.nan, {"a": np.zeros(2)}, r"φ returned NaN/inf at a generic point"),
        (lambda p: np.asarray(p["a"]) * 2.0, {"a": np.zeros(2)}, "phi cannot be traced by JAX"),
        (lambda p: p["a"] if p["a"][0] > 0 else -p["a"], {"a": np.ones(2)}, "phi cannot be traced by JAX"),
        (
            lambda p: jax.pure_callback(lambda x: x, jax.ShapeDtypeStruct((2,), jnp.float64), p["a"]),
            {"a": np.zeros(2)},
            "not differentiable",
        ),
    ],
)
def test_custom_bad_inputs(phi, params, match):
    with pytest.raises(InputError, match=match) as info:
        custom(phi, params)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def test_registry_builds_every_family():
    assert MODEL_NAMES[:6] == ("linear", "relu", "factorization", "nmf", "icnn", "product")
    assert get_model("linear", [3, 4, 4, 3]).D == 12 + 16 + 12
    assert get_model("linear", "3,4,4,3").blocks == linear([3, 4, 4, 3]).blocks
    r = get_model("ReLU", (3, 4, 4, 3), bias=True)
    assert r.name == "relu" and r.bias and [b.name for b in r.blocks] == ["W1", "b1", "W2", "b2", "W3"]
    assert get_model("uv", [2, 3, 4]).name == "factorization"
    assert get_model("factorization", [2, 3, 4]).D == 18
    assert get_model("nmf", "2,5,2").D == 20
    assert get_model("icnn", [2, 2, 2], bias=True).D == 10
    assert get_model("product", [5]).D == 5
    assert get_model("product", np.array([4])).dims == (4,)


@pytest.mark.parametrize(
    "name,dims,bias,match",
    [
        ("mlp", [2, 2], False, r"unknown model 'mlp'; known models: linear, relu, factorization, nmf, icnn, product"),
        ("linear", "0", False, "linear: dims must be positive integers, got 0"),
        ("linear", "2,x,2", False, "dims must be positive integers"),
        ("linear", [2, 0, 2], False, "dims must be positive integers"),
        ("relu", [2, -1, 2], False, "dims must be positive integers"),
        ("relu", [2, 2.5, 2], False, "dims must be positive integers"),
        ("linear", [2, 2], False, "linear needs at least 3 dims"),
        ("relu", [4], False, "relu needs at least 3 dims"),
        ("factorization", [2, 2], False, r"factorization needs exactly 3 dims \(n, r, m\), got 2"),
        ("nmf", [2, 2, 2, 2], False, "nmf needs exactly 3 dims"),
        ("icnn", [2], True, "icnn needs exactly 3 dims"),
        ("product", [2, 3], False, "product needs exactly 1 dim"),
        ("linear", [2, 2, 2], True, "model 'linear' has no bias option"),
        ("nmf", [2, 2, 2], True, "model 'nmf' has no bias option"),
    ],
)
def test_registry_errors(name, dims, bias, match):
    with pytest.raises(InputError, match=match) as info:
        get_model(name, dims, bias=bias)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: linear([2, 0, 2]), "linear: dims must be positive integers"),
        (lambda: linear([2, 3]), "at least 3 dims"),
        (lambda: relu([2, True, 2]), "dims must be positive integers"),
        (lambda: factorization(2, 0, 2), "factorization: dims must be positive"),
        (lambda: nmf(2, 2.0, 2), "nmf: dims must be positive"),
        (lambda: icnn(-1, 2, 2), "icnn: dims must be positive"),
        (lambda: product(0), "product: dims must be positive"),
    ],
)
def test_constructors_validate_dims(build, match):
    with pytest.raises(InputError, match=match):
        build()
