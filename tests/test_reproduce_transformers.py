"""``conflow reproduce --paper transformers`` (P3, MATH.md §2.5–§2.9): the protocols, their
closed forms (`gradient_laws`, `transformer_laws`) and the CLI wiring. The full protocols run
from the command line; here each runs its first configuration(s) only."""

import json
import types

import jax
import numpy as np
import pytest
from conftest import max_generator_cosine

from conflow.cli.main import main
from conflow.flows import GradientFlow, SignFlow
from conflow.laws.count import count_laws
from conflow.models import attention, conv, factorization, linear
from conflow.reference import closed_forms, reproduce, transformer_laws
from conflow.reference.gradient_laws import example_4_8_laws, gradient_laws

NAMES = ["conv", "residual", "attention", "softmax", "resnet", "transformer", "weight-decay",
         "sign"]


def _protocol(name):
    return next(p for p in reproduce.PROTOCOLS["transformers"] if p.name == name)


def test_transformers_paper_is_registered_and_in_all():
    assert "transformers" in reproduce.PAPERS
    assert [p.name for p in reproduce.PROTOCOLS["transformers"]] == NAMES
    assert reproduce.n_cases("all") == sum(reproduce.n_cases(p) for p in reproduce.PROTOCOLS)
    # lifted + network for conv (6) and attention (8); Example 4.8 + 6 residual blocks; weight
    # decay: 7 models × 3 flows; sign: 9 UVᵀ + 4 attention
    assert reproduce.n_cases("transformers") == 12 + 7 + 16 + 8 + 6 + 5 + 21 + 13
    assert reproduce.n_cases("transformers", limit=1) == len(NAMES) + 2  # weight decay: 3 flows


# The first configuration of the conv and attention protocols (the lifted models). The networks
# on inputs (and the softmax layer) are compared with their closed forms in
# tests/test_any_model.py, Example 4.8 (the residual protocol's first) below; the ResNet and
# transformer protocols' first counts cost 4–8 s of compilation, so only their comparison values
# are checked here (test_closed_form_rank_equals_p3_count). The command runs every protocol in
# full.
@pytest.mark.parametrize("name", ["conv", "attention"])
def test_protocol_first_configuration_matches(name):
    rows = list(reproduce._run([_protocol(name)], 1, 3, 0, "auto"))
    assert len(rows) == 1
    bad = [reproduce.format_row(r) for r in rows if not r.match or r.note]
    assert not bad, bad
    for r in rows:  # the comparison value is P3's count, reached through the closed forms
        assert r.known is not None and r.known >= 1


def test_example_4_8_has_three_laws_on_omega_and_the_third_is_derived():
    model = reproduce._example_4_8()
    assert all(b.positive for b in model.blocks)  # Ω: u, v, s, t > 0
    count = count_laws(model, method="both")  # numeric, and exact on the points' regions
    known, note = reproduce._p3_known(model, None)
    assert count.status == "ok" and count.n_laws == known == 3 == transformer_laws.p3_count(model)
    assert note == ""
    assert max_generator_cosine(gradient_laws(model), model) < 1e-10
    # off Ω the third law is not conserved (and the two block laws still are): the check bites
    z = jax.numpy.asarray([1.0, 0.7, -0.8, -1.3])  # (u, v, s, t): sgn t ≠ sgn u
    jac_h = np.asarray(jax.jacfwd(lambda t: example_4_8_laws(t, model))(z))
    jac_g = np.asarray(jax.jacfwd(model.phi)(z))
    cos = np.abs(jac_h @ jac_g.T) / np.outer(np.linalg.norm(jac_h, axis=1),
                                              np.linalg.norm(jac_g, axis=1) + 1e-300)
    assert cos[:2].max() < 1e-10 and cos[2].max() > 1e-3


@pytest.mark.parametrize("model, count", [
    (conv(2, 3, 2, 3, 2), 3),
    (conv(1, 4, 1, 2, 1, bias=True), 4),
    (attention(2, 2), 6),
    (attention(1, 3), 10),  # d1 > 2·dim: the two factorisations saturate
    (attention(2, 1, 2), 4),
])
def test_closed_form_rank_equals_p3_count(model, count):
    assert transformer_laws.p3_count(model) == count == closed_forms.known_count(model)


def test_p3_counts_of_the_networks_on_inputs():
    """P3's numbers for the families without φ (read from name and dims only; their closed-form
    ranks are compared in the full run, where any difference would be a note)."""
    def shape(name, dims):
        return types.SimpleNamespace(name=name, dims=dims)

    assert transformer_laws.p3_count(shape("transformer", (2, 2, 3, 2))) == 2 * 6 + 3
    assert transformer_laws.p3_count(shape("transformer", (3, 1, 2))) == 2 + 2
    assert transformer_laws.p3_count(shape("resnet", (2, 3, 2))) == 6
    assert transformer_laws.p3_count(shape("softmax", (4, 3))) == 3
    assert transformer_laws.p3_count(shape("residual-mlp-relu", (3, 4, 3))) == 4
    assert transformer_laws.p3_count(shape("residual-attention", (1, 3))) == 10
    assert transformer_laws.p3_count(shape("linear", (2, 2, 2))) is None


def test_network_given_as_code_has_the_family_laws_by_block_name():
    """`from_model` sorts a dict's keys (K, O, Q, V): the laws are matched by name, not order."""
    net = reproduce._attention_net(2, 1, 2, 2, seed=0)
    assert [b.name for b in net.blocks] == ["K", "O", "Q", "V"]
    named = net.unflatten(net.sample_points(0, 1)[0])
    lifted = attention(2, 1, 2)
    theta = lifted.flatten({k: named[k] for k in ("Q", "K", "V", "O")})
    flat = net.flatten(named)
    np.testing.assert_allclose(gradient_laws(net)(flat), gradient_laws(lifted)(theta))
    assert closed_forms.known_count(net) == 4


def test_p3_count_differing_from_the_closed_form_rank_is_noted(monkeypatch):
    monkeypatch.setattr(transformer_laws, "p3_count", lambda model: 99)
    known, note = reproduce._p3_known(conv(2, 3, 2, 3, 2), None)
    assert known == 3 and "P3's count is 99" in note


def test_cli_runs_the_transformers_paper(monkeypatch, capsys):
    first = _protocol("conv").cases()[:1]
    cheap = [reproduce.Protocol("conv", "first lifted conv", lambda: first, reproduce._p3_known)]
    monkeypatch.setitem(reproduce.PROTOCOLS, "transformers", cheap)
    assert main(["reproduce", "--paper", "transformers", "--json", "--no-progress"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["paper"] == "transformers"
    assert payload["summary"]["matches"] == payload["summary"]["cases"] == 1
    assert payload["rows"][0]["model"] == "conv[3,3,3,2,3]"


# ---------------------------------------------------------------------- weight decay (§2.10)


def test_decayed_laws_are_laws_of_the_weight_decay_flow():
    """H(e^{Λ(t)}θ) ⊥ every generator of the flow on (s, θ), drift included; H(θ) is not. For
    λ(t) = c/(1 + t) (state s = t), e^{Λ(t)} = (1 + t)^c: the quadrature gives it."""
    model, flow = linear([2, 3, 2]), GradientFlow(weight_decay=0.4)
    laws = closed_forms.closed_form_laws(model, flow)
    assert max_generator_cosine(laws, model, flow) < 1e-10
    plain = gradient_laws(model)
    assert max_generator_cosine(lambda z: plain(z[1:]), model, flow) > 1e-3
    assert closed_forms.known_count(model, flow) == closed_forms.known_count(model) == 6
    schedule = GradientFlow(weight_decay=reproduce.DecaySchedule(0.7))
    z = np.asarray(schedule.sample_points(model, 0, 1)[0])
    np.testing.assert_allclose(closed_forms.closed_form_laws(model, schedule)(z),
                               plain((1 + z[0]) ** 0.7 * z[1:]), rtol=1e-12)


def test_weight_decay_keeps_two_of_example_4_8s_three_laws():
    """The third law of Example 4.8 is not homogeneous: under weight decay the blind count is 2
    with both engines (P3 Thm 2.1 bounds it by the count without weight decay, 3)."""
    model, flow = reproduce._example_4_8(), GradientFlow(weight_decay=0.36)
    count = count_laws(model, flow, method="both")
    assert count.status == "ok" and count.n_laws == 2
    known, note = reproduce._weight_decay_known(model, flow)
    assert known == 2 and "without weight decay is 3" in note


# ---------------------------------------------------------------------- sign flow (§2.11)


@pytest.mark.parametrize("model, derived, stated", [
    (factorization(1, 1, 1), 1, 1),  # |U| − |V|
    (factorization(2, 3, 1), 4, 0),  # m = 1: n(r − 1)  (n = m = 1, r = 2: below)
    (linear([1, 2, 3]), 3, 0),  # n = 1: m(r − 1)
    (attention(1, 2), 6, 0),  # dim = 1: each factor is a scalar UVᵀ with r = 2
])
def test_sign_flow_laws_are_laws_and_their_rank(model, derived, stated):
    flow = SignFlow()
    laws = closed_forms.closed_form_laws(model, flow)
    assert max_generator_cosine(laws, model, flow) < 1e-12
    assert closed_forms.known_count(model, flow) == derived
    assert transformer_laws.sign_flow_count(model) == stated


def test_sign_descent_keeps_the_derived_laws_exactly():
    """Discrete sign descent on UVᵀ with m = 1 (no engine involved): sign(v_k)U_ik − sign(v_1)U_i1
    does not move while the signs of v stay, and UᵀU − VᵀV (the gradient-flow law) does."""
    model = factorization(2, 3, 1)
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((2, 3)), rng.uniform(1.0, 2.0, (1, 3)) * np.array([1, -1, 1])
    x, y = rng.standard_normal((8, 1)), rng.standard_normal((8, 2))
    laws = closed_forms.closed_form_laws(model, SignFlow())
    theta = lambda u, v: jax.numpy.asarray(np.concatenate([u.ravel(), v.ravel()]))
    h0, g0 = np.asarray(laws(theta(u, v))), u.T @ u - v.T @ v
    for _ in range(20):
        r = x @ v @ u.T - y  # residuals of ½‖x VUᵀ − y‖²
        grad_u, grad_v = r.T @ x @ v, (x.T @ r @ u)
        u, v = u - 0.01 * np.sign(grad_u), v - 0.01 * np.sign(grad_v)
    assert np.all(np.sign(v) == [1, -1, 1])
    np.testing.assert_allclose(np.asarray(laws(theta(u, v))), h0, atol=1e-12)
    assert np.abs(u.T @ u - v.T @ v - g0).max() > 1e-3


def test_sign_flow_blind_count_with_the_derived_note():
    model = factorization(1, 2, 1)
    # ``--exact``: the sign flow is not polynomial, so the row is counted by auto, and says so
    count, fallback = reproduce._count(model, SignFlow(), "exact", 3, 0)
    assert count.method == "numeric" and fallback.startswith("no exact count")
    known, note = reproduce._sign_known(model, SignFlow())
    assert count.status == "ok" and count.n_laws == known == 3
    assert "P3 App. R states 0" in note
    assert closed_forms.known_count(factorization(2, 2, 2), SignFlow()) == 0  # n, m ≥ 2: none
