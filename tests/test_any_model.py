"""Models beyond the polynomial families: attention, softmax, conv and residual (closed-form laws
⊥ every generator, counts), models from code (`from_model`: plain JAX, Equinox, Flax NNX), smooth
activations, the input-sample checks, and their registry and CLI names."""

from __future__ import annotations

import dataclasses
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_generator_cosine

import conflow as cf
from conflow.cli.main import main
from conflow.engine import evaluate
from conflow.errors import InputError
from conflow.laws.from_model_count import count_laws_from_model
from conflow.models import (
    MODEL_NAMES,
    attention,
    attention_apply,
    attention_params,
    conv,
    conv_apply,
    conv_params,
    get_model,
    mlp,
    relu,
    residual,
    softmax_layer,
)
from conflow.models.from_model import InputsWarning, SampledModel, from_model
from conflow.reference.closed_forms import known_count
from conflow.reference.gradient_laws import expected_count, gradient_laws

# --------------------------------------------------------------------------------------------
# built-in families
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim,d1,heads", [(3, 2, 1), (2, 3, 1), (1, 3, 1), (2, 2, 2)])
def test_attention_laws_orthogonal_and_count(dim, d1, heads):
    m = attention(dim, d1, heads)
    assert [b.name for b in m.blocks] == ["Q", "K", "V", "O"]
    assert m.D == 4 * heads * d1 * dim and m.d == 2 * heads * dim * dim
    assert max_generator_cosine(gradient_laws(m), m) < 1e-12
    # a wrong law (QQᵀ + KKᵀ) is not orthogonal: the check can fail
    def wrong(t):
        p = m.unflatten(t)
        return (jnp.sum(p["Q"] ** 2) + jnp.sum(p["K"] ** 2))[None]

    assert max_generator_cosine(wrong, m) > 1e-3
    r = cf.count_laws(m)
    assert r.status == "ok"
    assert r.n_laws == expected_count(dim, d1, heads) == known_count(m)
    if d1 <= 2 * dim:
        assert r.n_laws == heads * d1 * (d1 + 1)


def test_attention_phi_matches_the_layer():
    """The sampled real layer (softmax and all) has the laws of φ = (QᵀK, VᵀO) (P3 Thm 3.8)."""
    res = count_laws_from_model(attention_apply, attention_params(3, 2), input_shape=(3, 3),
                                input_radius=1.0)
    assert res.status == "ok" and res.stable
    assert res.n_laws == cf.count_laws(attention(3, 2)).n_laws == 6
    assert [b.name for b in res.model.blocks] == ["K", "O", "Q", "V"]  # pytree (sorted) order
    assert res.report.patterns[0].n_switches == 0  # softmax's max(-inf, ·) guard is skipped


def test_softmax_column_sums():
    m = softmax_layer(3, 4)
    assert isinstance(m, SampledModel) and m.label == "softmax[3,4] on 6 inputs"
    assert m.D == 12 and m.param_names[:2] == ["W[0,0]", "W[0,1]"]
    assert max_generator_cosine(gradient_laws(m), m) < 1e-12
    row_sums = lambda t: t.reshape(3, 4).sum(axis=1)  # noqa: E731  (not laws)
    assert max_generator_cosine(row_sums, m) > 1e-3
    r = cf.count_laws(m)
    assert r.status == "ok" and r.n_laws == 4 == known_count(m)  # MATH §8 row 27: m
    # too few inputs (2 < m = 4) span too little: more laws, caught by the doubled sample
    with pytest.warns(InputsWarning, match="changed with more inputs"):
        res = count_laws_from_model(softmax_layer(3, 4, n_inputs=2), patterns=False)
    assert res.stable is False and res.count.n_laws > res.recount.n_laws == 4


@pytest.mark.parametrize("bias", [False, True])
def test_conv_block_has_c1_laws(bias):
    m = conv(2, 3, 2, 3, 2, bias=bias)
    assert [(b.name, b.shape) for b in m.blocks] == (
        [("V", (3, 2, 3))] + ([("b", (3,))] if bias else []) + [("U", (2, 3, 2))])
    assert max_generator_cosine(gradient_laws(m), m) < 1e-12
    r = cf.count_laws(m)
    assert r.status == "ok" and r.n_laws == 3 == known_count(m)


def test_conv_path_lifting_matches_the_block():
    res = count_laws_from_model(conv_apply, conv_params(2, 3, 2), input_shape=(2, 8))
    assert res.status == "ok" and res.stable and res.n_laws == 3
    assert res.report.patterns[0].n_switches == 3 * 6  # c1 channels × 6 hidden positions


def test_residual_keeps_the_block_laws():
    block = mlp([3, 4, 3], n_inputs=96)
    base = cf.count_laws(block)
    res = residual(block)
    assert isinstance(res, SampledModel) and res.name == "residual-mlp-relu"
    assert res.param_names == block.param_names
    x = jnp.asarray(block.inputs[0])
    theta = block.sample_points(0, 1)[0]
    np.testing.assert_allclose(res.apply(theta, x), x + block.apply(theta, x))
    counted = cf.count_laws(res)
    assert base.status == counted.status == "ok" and counted.n_laws == base.n_laws == 4
    assert max_generator_cosine(gradient_laws(block), res) < 1e-12
    # the function form, and the φ form (same φ, relabelled)
    fn = residual(lambda p, x: p["W"] @ x)
    np.testing.assert_allclose(fn({"W": np.eye(2) * 2.0}, np.ones(2)), 3 * np.ones(2))
    with pytest.raises(ValueError, match="equal shapes"):
        fn({"W": np.ones((3, 2))}, np.ones(2))
    phi_block = relu([3, 4, 3])
    phi_res = residual(phi_block)
    assert phi_res.phi is phi_block.phi and phi_res.name == "residual-relu"


# --------------------------------------------------------------------------------------------
# from_model: plain JAX, Equinox, Flax NNX
# --------------------------------------------------------------------------------------------


def _relu_count():
    r = cf.count_laws(relu([3, 4, 2], bias=True))
    assert r.status == "ok"
    return r.n_laws


def test_equinox_mlp_matches_relu():
    eqx = pytest.importorskip("equinox")
    net = eqx.nn.MLP(3, 2, 4, 1, activation=jax.nn.relu, use_final_bias=False,
                     key=jax.random.PRNGKey(0))
    res = count_laws_from_model(net, input_shape=(3,), n_inputs=96)
    assert res.report.kind == "equinox"
    assert [b.name for b in res.model.blocks] == [
        "layers[0].weight", "layers[0].bias", "layers[1].weight"]
    assert res.status == "ok" and res.stable
    assert res.n_laws == _relu_count() == 4
    assert res.report.patterns[0].n_switches == 4


def test_flax_nnx_mlp_matches_relu():
    nnx = pytest.importorskip("flax.nnx")

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(3, 4, rngs=rngs)
            self.l2 = nnx.Linear(4, 2, use_bias=False, rngs=rngs)

        def __call__(self, x):
            return self.l2(jax.nn.relu(self.l1(x)))

    res = count_laws_from_model(MLP(nnx.Rngs(0)), input_shape=(3,), n_inputs=96)
    assert res.report.kind == "nnx"
    assert [b.name for b in res.model.blocks] == ["l1.bias", "l1.kernel", "l2.kernel"]
    assert res.status == "ok" and res.stable
    assert res.n_laws == _relu_count() == 4


def test_plain_pytree_and_apply_forms():
    params = {"l1": {"w": np.zeros((4, 3)), "b": np.zeros(4)}, "l2": {"w": np.zeros((2, 4))}}

    def apply(p, x):
        return p["l2"]["w"] @ jax.nn.relu(p["l1"]["w"] @ x + p["l1"]["b"])

    inputs = np.random.default_rng(0).standard_normal((96, 3)) * 3
    m = from_model(apply, params, inputs)
    assert m.n_inputs == 96 and m.input_shape == (3,) and m.n_outputs == 2 and m.d == 192
    assert [b.name for b in m.blocks] == ["l1.b", "l1.w", "l2.w"]
    r = cf.count_laws(m)
    assert r.status == "ok" and r.n_laws == 4
    with pytest.raises(InputError, match="input_shape"):
        from_model(apply, params)
    with pytest.raises(InputError, match="fails on one input"):
        from_model(apply, params, input_shape=(5,))
    with pytest.raises(InputError, match="params is required"):
        from_model(apply)
    for bad in ((2.0, 6.0), 0.5, "8"):
        with pytest.raises(InputError, match="input_radius must be a number >= 1"):
            from_model(apply, params, input_shape=(3,), input_radius=bad)
    with pytest.raises(InputError, match="n_inputs must be a positive integer"):
        from_model(apply, params, input_shape=(3,), n_inputs=0)


def test_sampled_jacobian_is_the_jacobian_of_phi(monkeypatch):
    """`SampledModel.phi_jacobian` (per-input Jacobians) is autodiff's ∂φ, rows in φ's order,
    for an output pytree of two leaves; the generator matrices of the gradient flows (with and
    without weight decay, a callable metric) reproduce their fields, and a count through them
    equals the count without them."""
    params = {"w": np.zeros((3, 2)), "v": np.zeros(3)}

    def apply(p, x):
        h = jnp.tanh(p["w"] @ x)
        return {"a": h * p["v"], "b": jnp.sum(h)[None] ** 2}

    m = from_model(apply, params, np.random.default_rng(1).standard_normal((7, 2)))
    theta = jnp.asarray(np.random.default_rng(2).uniform(0.2, 1.0, m.D))
    np.testing.assert_allclose(m.phi_jacobian(theta), jax.jacfwd(m.phi)(theta), atol=1e-13)
    a = jnp.asarray(np.random.default_rng(3).standard_normal(m.d + 1))
    for flow in (cf.GradientFlow(), cf.GradientFlow(metric=lambda w, g: (1 + w ** 2) * g),
                 cf.GradientFlow(weight_decay=0.3)):
        family = flow.family(m)
        z = theta if family.state_dim == m.D else jnp.concatenate([jnp.ones(1), theta])
        k = family.n_coeffs
        np.testing.assert_allclose(family.generators(z) @ a[:k], family.field(z, a[:k]),
                                   atol=1e-12)
    monkeypatch.setattr(evaluate, "COSTLY_FIELD_ENTRIES", 0)  # level 0 from the matrices
    net = mlp([3, 4, 2])
    with_matrices = cf.count_laws(net)
    plain = dataclasses.replace(cf.GradientFlow().family(net), generators=None)
    without = cf.lie_trace(plain, net.sample_points(0, 3))
    assert with_matrices.status == "ok" and without.status == "ok"
    assert with_matrices.n_laws == net.D - without.dim == 4


def test_low_input_dimension_differs_from_path_lifting():
    """Bias-free ReLU net with one input: g = x·a(θ) for x > 0, x·b(θ) for x < 0, so the network
    has D − 2 laws; the path-lifting φ gives one per neuron (a lower bound; MATH §1.3)."""
    res = count_laws_from_model(mlp([1, 4, 1]))
    assert res.status == "ok" and res.stable
    assert res.n_laws == 8 - 2
    assert cf.count_laws(relu([1, 4, 1])).n_laws == 4
    assert res.report.patterns[0].n_patterns == 2  # two regions, whatever N


@pytest.mark.parametrize("activation", ["tanh", "gelu", "softplus", "silu"])
def test_smooth_activations_are_counted_not_assumed(activation):
    m = mlp([3, 3, 2], activation)
    assert gradient_laws(m) is None and m.label == f"mlp-{activation}[3,3,2] on 60 inputs"
    res = count_laws_from_model(m, check_inputs=False)
    assert res.status == "ok" and res.n_laws == 0  # no rescaling symmetry left
    assert res.report.patterns[0].n_switches == 0
    if activation == "softplus":
        assert any("logaddexp" in n for n in res.report.notes)


# A classifier's softmax (or log-softmax) head adds h_L + 1 linear laws to the logits' count
# (`trust_models.head_laws`); its output gradients span those of the logit differences z_k − z_0.
# Saturated outputs (1 − s_max ≈ 1e-5 at ordinary θ and inputs) compute ∇s_max by cancellation;
# balanced by their norms alone (not by the size of what cancelled, `generator_sizes`), their
# rounding made these counts ambiguous. The first case also counts the logit differences.
@pytest.mark.parametrize("lib,activation,dims,head", [
    ("eqx", "relu", (4, 6, 3), "softmax"),
    ("nnx", "tanh", (3, 5, 4, 3), "log_softmax"),
    ("eqx", "gelu", (3, 4, 4), "softmax"),
])
def test_classifier_heads_add_the_softmax_laws(lib, activation, dims, head):
    tm = pytest.importorskip("trust_models")
    pytest.importorskip("equinox" if lib == "eqx" else "flax.nnx")
    case = tm.mlp_case(lib, activation, dims, bias=True, seed=1, head=head)
    (apply, net), shape = tm.build(case)
    heads = count_laws_from_model(apply, net, input_shape=shape, check_inputs=False,
                                  patterns=False)
    assert heads.status == "ok" and heads.n_laws == case.expected, heads.summary()
    if activation == "relu":
        differences = count_laws_from_model(lambda m, x: m(x)[1:] - m(x)[0], net,
                                            input_shape=shape, check_inputs=False,
                                            patterns=False)
        assert differences.status == "ok" and differences.n_laws == case.expected


def test_patterns_fn_and_report():
    seen = []

    def pattern(p, x):
        seen.append(1)
        return p["W"] @ x > 0

    res = count_laws_from_model(lambda p, x: p["V"] @ jax.nn.relu(p["W"] @ x),
                                {"W": np.zeros((3, 2)), "V": np.zeros((2, 3))},
                                input_shape=(2,), patterns_fn=pattern, check_inputs=False)
    assert seen and res.report.pattern_source == "patterns_fn"
    assert res.report.patterns[0].n_switches == 3
    js = res.to_json()
    assert js["n_laws"] == res.n_laws == 3 and js["report"]["n_inputs"] == res.model.n_inputs
    assert "3 conservation laws" in res.summary()


# --------------------------------------------------------------------------------------------
# registry and CLI
# --------------------------------------------------------------------------------------------


def test_registry_and_cli(capsys):
    for name in ("attention", "softmax", "conv", "resnet", "transformer", "mlp-tanh"):
        assert name in MODEL_NAMES
    assert get_model("attention", "3,2").label == "attention[3,2]"
    assert get_model("attention", "3,2,2").D == 48
    assert get_model("conv", "2,3,2").dims == (2, 3, 2, 3, 3)
    assert get_model("conv", "2,3,2,4,2", bias=True).D == 3 * (2 * 4 + 1) + 2 * 3 * 2
    assert known_count(get_model("softmax", "3,4")) == 4
    for bad in (("attention", "3"), ("attention", "3,2,1,1"), ("conv", "1,2"),
                ("softmax", "1,3"), ("transformer", "3,2")):
        with pytest.raises(InputError):
            get_model(*bad)
    with pytest.raises(InputError, match="no bias"):
        get_model("attention", "3,2", bias=True)
    assert main(["count", "attention", "3,2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_laws"] == 6 and out["status"] == "ok" and out["D"] == 24
    assert main(["count", "softmax", "3,4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_laws"] == 4
    assert main(["count", "conv", "0,2,2"]) == 2


def test_warnings_are_real_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = count_laws_from_model(mlp([3, 4, 2], n_inputs=3), patterns=False)
    assert res.stable is False and res.warnings
    assert any(issubclass(w.category, InputsWarning) for w in caught)
