"""Property-based tests of the contract (issue 18, item 5): random argument vectors of the
``conflow`` command and random arguments of the Python API never end in a traceback or an exit
code outside `EXIT_CODES`; bad input is one line.

The vocabularies keep every valid combination small (models of at most 3 widths ≤ 3, a few points),
so that the examples that do run a count stay quick."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conflow as cf
from conflow.cli.main import EXIT_CODES, main

MODELS = ["linear", "relu", "factorization", "nmf", "icnn", "product", "attention", "softmax",
          "conv", "mlp-tanh", "nonsense", "", "-1", "linear;rm"]
DIMS = st.one_of(
    st.lists(st.integers(-2, 3), min_size=0, max_size=4).map(lambda d: ",".join(map(str, d))),
    st.sampled_from(["", ",", "2,,3", "a,b", "1e3", "2.5,3", "+2,3", " 2, 3 ", "0", "9" * 30]),
)
NUMBERS = st.sampled_from(["-1", "0", "1", "2", "3", "4", "2.5", "nan", "inf", "-inf", "x", "",
                           "1e400", "99999999999999999999"])
OPTIONS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["--seed", "--points", "--max-depth", "--tau", "--devices",
                               "--connect-timeout", "--degree", "--weight-decay"]), NUMBERS),
    st.tuples(st.sampled_from(["--max-memory"]), st.sampled_from(["1", "4G", "500M", "0", "-1G",
                                                                   "4X", "", "1e400"])),
    st.tuples(st.sampled_from(["--time-limit"]), st.sampled_from(["90", "5m", "0", "-1", "1h2",
                                                                   "nan", ""])),
    st.tuples(st.sampled_from(["--linalg", "--algorithm"]), st.sampled_from(["auto", "host",
                                                                             "device", "gpu"])),
    st.tuples(st.sampled_from(["--flow"]), st.sampled_from(["gradient", "momentum", "nesterov",
                                                             "sign", ""])),
    st.tuples(st.sampled_from(["--metric"]), st.sampled_from(["euclidean", "entropy", "l2"])),
    st.tuples(st.sampled_from(["--method"]), st.sampled_from(["auto", "numeric", "exact",
                                                               "both", "best"])),
    st.tuples(st.sampled_from(["--bias", "--exact", "--json", "--no-escalate", "--no-progress",
                               "--all", "--bogus"])),
), max_size=4)

CODES = set(EXIT_CODES.values())


def _run(argv: list[str]) -> int:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # --help
            code = exc.code or 0
    if code == EXIT_CODES["bad input"]:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("conflow: error: "), (argv, lines)
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue()[-2000:])
    return code


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(["count", "laws", "verify"]), model=st.sampled_from(MODELS),
       dims=DIMS, options=OPTIONS)
def test_random_command_lines_keep_the_exit_code_contract(command, model, dims, options):
    argv = [command, model, dims]
    if command == "verify":
        argv += ["--law", "U1[0,0]", "--points", "4", "--no-known"]
    for option in options:
        argv += list(option)
    assert _run(argv) in CODES


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(points=st.one_of(st.integers(-3, 5), st.floats(allow_nan=True), st.none(),
                        st.text(max_size=3), st.booleans()),
       seed=st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), st.none(), st.text(max_size=3)),
       max_depth=st.one_of(st.none(), st.integers(-2, 4), st.floats(allow_nan=True)),
       method=st.sampled_from(["auto", "numeric", "exact", "both", "x", None, 3]),
       flow=st.sampled_from([None, "gradient", "momentum", "mirror", "sideways", 3, object()]))
def test_random_api_arguments_give_a_count_or_one_input_error(points, seed, max_depth, method,
                                                               flow):
    model = cf.linear([2, 2, 2])
    try:
        result = cf.count_laws(model, flow, points=points, seed=seed, max_depth=max_depth,
                               method=method)
    except cf.InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert result.status in ("ok", "ambiguous", "disagree", "not_converged")


@pytest.mark.parametrize("argv", [["--help"], ["count", "--help"], ["reproduce", "--help"]])
def test_help_exits_0(argv):
    assert _run(argv) == 0


TOKENS = ["U1", "U2", "U1.T", "@", "+", "-", "*", "/", "**", "(", ")", "[", "]", "0", "1", "2",
          ",", ":", "sum(", "exp(", "log(", "__import__(", "'os'", ".", "__class__", "lambda",
          "x", "open(", "eval(", "[0,0]", "[:,0]", "1e308", "-1", "trace(", " "]


DANGEROUS = ("__import__", "'os'", "__class__", "lambda", "open(", "eval(")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12))
def test_random_law_expressions_evaluate_or_give_one_line(tokens):
    """Token soup over the law language: either a finite scalar law or one `InputError` line.
    Only whitelisted names and syntax compile: a text with an import, a string, an attribute
    other than ``.T``, a lambda or a call of ``open`` / ``eval`` is always refused
    (tests/test_expressions.py checks that refused code never runs)."""
    text = "".join(tokens)
    model = cf.linear([2, 3, 2])
    try:
        law = cf.compile_law(text, model)
    except cf.InputError as exc:
        assert "\n" not in str(exc), (text, str(exc))
        return
    assert not any(bad in text for bad in DANGEROUS), text
    value = float(law(model.sample_points(3, 1)[0]))
    assert value == value  # a number came out
