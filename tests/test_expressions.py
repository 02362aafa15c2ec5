"""Safe law expressions: values against direct NumPy computations, and rejection (with a clear
one-line error, before anything runs) of everything outside the grammar."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

import conflow as cf
from conflow.cli.main import main
from conflow.errors import InputError
from conflow.flows import GradientFlow, MomentumFlow
from conflow.laws.expressions import compile_law, expression_names, identifier

LIN = cf.linear([2, 3, 2])  # U1 (2×3), U2 (3×2)


def _blocks(model, theta):
    return {k: np.asarray(v) for k, v in model.unflatten(theta).items()}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sum(U1[:,0]) - sum(U2[0,:])", lambda b: b["U1"][:, 0].sum() - b["U2"][0, :].sum()),
        ("(U1.T @ U1 - U2 @ U2.T)[0,1]",
         lambda b: (b["U1"].T @ b["U1"] - b["U2"] @ b["U2"].T)[0, 1]),
        ("trace(U1 @ U1.T) - norm(U2)**2", lambda b: np.trace(b["U1"] @ b["U1"].T)
         - np.linalg.norm(b["U2"]) ** 2),
        ("sum(U1, axis=0)[2] * 0.5", lambda b: b["U1"].sum(axis=0)[2] * 0.5),
        ("U1[-1,0] + U1[0][1] - U2[1:3, 0][1]", lambda b: b["U1"][-1, 0] + b["U1"][0, 1]
         - b["U2"][2, 0]),
        ("2**3 * U1[0,0] / 4 - -U2[0,0]", lambda b: 2.0 * b["U1"][0, 0] + b["U2"][0, 0]),
        ("dot(U1[0,:], U2[:,1]) + sqrt(abs(U1[1,1])) + exp(U1[0,0]) * pi",
         lambda b: b["U1"][0] @ b["U2"][:, 1] + np.sqrt(abs(b["U1"][1, 1]))
         + np.exp(b["U1"][0, 0]) * np.pi),
        ("sum(diag(transpose(U1) @ U1)) + max(U2) + mean(U1)",
         lambda b: np.trace(b["U1"].T @ b["U1"]) + b["U2"].max() + b["U1"].mean()),
    ],
)
def test_expression_values(text, expected):
    law = compile_law(text, LIN)
    theta = LIN.sample_points(3, 1)[0]
    assert float(law(theta)) == pytest.approx(float(expected(_blocks(LIN, theta))), rel=1e-12)


def test_momentum_names_time_and_velocities():
    flow = MomentumFlow(0.5)
    law = compile_law("exp(0.5*t) * (U1.T @ dU1)[0,1] - s * (U1.T @ dU1)[0,1]", LIN, flow)
    z = flow.sample_points(LIN, 5, 1)[0]
    assert abs(float(law(z))) < 1e-12  # s = exp(τ t)
    names = expression_names(LIN, flow)
    assert names[0] == "s" and names[1] == "U1[0,0]" and names[1 + LIN.D] == "dU1[0,0]"
    assert expression_names(LIN, MomentumFlow(0.0))[0] == "t"
    assert expression_names(LIN, GradientFlow()) == LIN.param_names


def test_identifier_spelling():
    assert identifier("layer1.w") == "layer1_w"
    assert identifier("layers[0].w") == "layers_0__w"
    assert identifier("0") == "_0"


@pytest.mark.parametrize(
    "text, message",
    [
        ("U1[0,1", "malformed law expression"),
        ("", "empty law expression"),
        ("foo + U1[0,0]", "unknown name 'foo'"),
        ("open('x')", "function 'open' is not allowed"),
        ("eval('1')", "function 'eval' is not allowed"),
        ("__import__('os')", "function '__import__' is not allowed"),
        ("U1.__class__", "attribute .__class__ is not allowed"),
        ("U1.shape[0]", "attribute .shape is not allowed"),
        ("(lambda: 1)()", "only direct calls"),
        ("[u for u in U1]", "ListComp is not allowed"),
        ("U1[0,0] if U1[0,0] > 0 else 0", "IfExp is not allowed"),
        ("U1[0,0] < 1", "Compare is not allowed"),
        ("'abc'", "constant 'abc' is not allowed"),
        ("True", "constant True is not allowed"),
        ("f'{U1}'", "JoinedStr is not allowed"),
        ("(x := 1)", "NamedExpr is not allowed"),
        ("sum(*U1)", "Starred is not allowed"),
        ("sum(U1, dtype=1)", "keyword dtype= is not allowed"),
        ("sum(U1, **{})", "**kwargs is not allowed"),
        ("U1[U2]", "indices must be integer literals"),
        ("U1[0.5, 0]", "indices must be integer literals"),
        ("U1[5, 0]", "index 5 out of range"),
        ("U1[0, 0, 0]", "too many indices"),
        ("U1", "must be a scalar"),
        ("sum", "must be called"),
        ("(U1[0,0], U1[0,1])", "single scalar expression"),
        ("U1 @ U1", "cannot evaluate"),
        ("dU1[0,0]", "unknown name 'dU1'"),  # velocities exist only for momentum flows
        ("U1[0,0]" + " + U1[0,0]" * 3000, "too long"),
    ],
)
def test_malformed_expressions_are_rejected(text, message):
    with pytest.raises(InputError, match=re.escape(message)):
        compile_law(text, LIN)


def test_rejected_code_never_runs(tmp_path):
    targets = [tmp_path / f"f{i}" for i in range(4)]
    attacks = [
        f"__import__('os').system('touch {targets[0]}')",
        f"(lambda: open('{targets[1]}', 'w'))()",
        f"sum([open('{targets[2]}', 'w') for _ in range(1)])",
        f"U1[0,0] + globals()['__builtins__']['open']('{targets[3]}', 'w')",
    ]
    for text in attacks:
        with pytest.raises(InputError):
            compile_law(text, LIN)
    assert not any(t.exists() for t in targets)


def test_cli_malformed_law_is_one_line_exit_2(capsys, tmp_path):
    target = tmp_path / "pwned"
    code = main(["verify", "linear", "2,3,2", "--law",
                 f"__import__('os').system('touch {target}')"])
    err = capsys.readouterr().err
    assert code == 2 and not target.exists()
    assert err.startswith("conflow: error:") and err.count("\n") == 1
    assert main(["verify", "linear", "2,3,2", "--law", "U1[0,"]) == 2
    assert "malformed law expression" in capsys.readouterr().err


def test_laws_round_trip_through_expressions():
    """Every printed law is itself a valid expression with the same values."""
    basis = cf.polynomial_laws(cf.relu([2, 2, 2], bias=True), degree=2, count=False)
    z = np.asarray(cf.relu([2, 2, 2], bias=True).sample_points(9, 1)[0])
    model = cf.relu([2, 2, 2], bias=True)
    for law in basis.laws:
        for text in (law.expression, law.code):
            assert float(compile_law(text, model)(jnp.asarray(z))) == pytest.approx(
                float(law.fn(z)), rel=1e-12, abs=1e-12)


def test_cli_verify_json(capsys):
    code = main(["verify", "linear", "2,3,2", "--law", "(U1.T @ U1 - U2 @ U2.T)[0,2]",
                 "--json", "--no-known"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["verdict"] == "conserved" and out["max_residual"] < 1e-12
    assert out["law"] == "(U1.T @ U1 - U2 @ U2.T)[0,2]"
