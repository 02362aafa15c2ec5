"""The `conflow` command: the JSON contract, exit codes and one-line errors."""

import json
import subprocess
import sys

import pytest

from conflow.cli.arguments import parse_dims
from conflow.cli.main import main

CONTRACT_KEYS = {"model", "dims", "flow", "metric", "D", "state_dim", "dim_lie", "n_laws",
                 "status", "gap", "depth", "points", "seconds"}


def test_count_json_contract(capsys):
    assert main(["count", "linear", "3,2,4", "--json", "--points", "4", "--seed", "1",
                 "--method", "numeric"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert CONTRACT_KEYS <= set(out)
    assert out["n_laws"] == 3 and out["D"] == 14 and out["state_dim"] == 14
    assert out["dim_lie"] == 11 and out["status"] == "ok" and out["points"] == 4
    assert out["flow"] == "gradient" and out["metric"] == "euclidean"
    assert out["n_laws"] == out["state_dim"] - out["dim_lie"]


def test_count_streamed_algorithm(capsys):
    assert main(["count", "linear", "3,2,4", "--json", "--algorithm", "streamed"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_laws"] == 3 and out["status"] == "ok" and out["algorithm"] == "streamed"


def test_count_human_readable(capsys):
    assert main(["count", "relu", "2,3,2", "--bias", "--flow", "gradient",
                 "--method", "numeric"]) == 0
    out = capsys.readouterr().out
    assert "relu[2,3,2]+bias: 3 conservation laws" in out
    assert "gap" in out and "3/3 points agree" in out


def test_nmf_defaults_to_the_entropy_metric(capsys):
    assert main(["count", "nmf", "2,2,2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "entropy" and out["n_laws"] == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["count", "gpt5", "2,3"], "unknown model 'gpt5'"),
        (["count", "linear", "2,0,2"], "positive integers"),
        (["count", "linear", "2,a,2"], "positive integers"),
        (["count", "linear", "-1,2,2"], "positive integers"),
        (["count", "linear", "3"], "at least 3 dims"),
        (["count", "product", "2,3"], "product"),
        (["count", "linear", "2,2,2", "--points", "0"], "--points"),
        (["count", "linear", "2,2,2", "--flow", "heavy"], "invalid choice"),
        (["count", "linear", "2,2,2", "--tau", "1"], "--tau"),
        (["count", "linear", "2,2,2", "--metric", "entropy"], "entropy"),
        (["reproduce", "--limit", "0"], "--limit"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_has_no_traceback_on_bad_input():
    proc = subprocess.run([sys.executable, "-m", "conflow", "count", "linear", "2,x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "conflow: error: dims must be comma-separated positive integers, got '2,x'")


def test_reproduce_small_run_matches_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["reproduce", "--paper", "gradient", "--limit", "2", "--no-progress", "--out",
                 str(out)]) == 0
    text = capsys.readouterr().out
    assert "total: 6/6 counts match" in text
    payload = json.loads(out.read_text())
    assert payload["summary"]["matches"] == payload["summary"]["cases"] == 6
    assert {r["protocol"] for r in payload["rows"]} == {"product", "linear", "relu"}
    assert all(r["n_laws"] == r["known"] for r in payload["rows"])


def test_parse_dims():
    assert parse_dims("3, 4,4") == (3, 4, 4)


@pytest.mark.parametrize(
    "argv, flow, tau, state_dim, n_laws",
    [
        (["count", "linear", "2,3,2", "--flow", "momentum"], "momentum", 0.0, 25, 3),
        (["count", "linear", "2,3,2", "--flow", "momentum", "--tau", "0.5"], "momentum", 0.5, 25, 3),
        (["count", "linear", "2,2,2", "--flow", "nesterov", "--method", "both"], "nesterov", None,
         17, 1),
        (["count", "nmf", "2,2,2", "--flow", "momentum", "--metric", "entropy"], "momentum", 0.0,
         17, 0),
        (["count", "linear", "3,4,4,3", "--exact"], "gradient", None, 40, 20),
    ],
)
def test_count_flows_json(argv, flow, tau, state_dim, n_laws, capsys):
    assert main(argv + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["flow"], out["tau"], out["state_dim"], out["n_laws"]) == (flow, tau, state_dim,
                                                                           n_laws)
    assert out["status"] == "ok" and out["n_laws"] == out["state_dim"] - out["dim_lie"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["count", "linear", "2,2,2", "--flow", "momentum", "--tau", "-1"], "τ must be"),
        (["count", "linear", "2,2,2", "--flow", "nesterov", "--tau", "1"], "--tau applies"),
        (["count", "linear", "2,2,2", "--flow", "momentum", "--metric", "entropy"],
         "positive parameter blocks"),
        (["count", "linear", "2,2,2", "--method", "symbolic"], "invalid choice"),
    ],
)
def test_bad_flow_input_exits_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
