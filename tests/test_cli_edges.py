"""The command's contract at its edges (issue 18's table): every bad input is one line on stderr
with exit 2, a resource limit exit 3, an interrupt 130, a closed pipe a quiet exit 0; never a
traceback, never lost work, never a silent hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

import conflow as cf
from conflow.cli import count as count_command
from conflow.cli.main import EXIT_CODES, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line_error(capsys, argv, code=2, match=""):
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("conflow: error: "), err
    assert match in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("argv, match", [
    (["count", "linear", "2,3,2", "--seed", "-1"], "--seed: must be an integer >= 0"),
    (["count", "linear", "2,3,2", "--max-depth", "0"], "--max-depth must be an integer >= 1"),
    (["count", "linear", "2,3,2", "--exact", "--method", "numeric"], "contradict"),
    (["count", "linear", "2,3,2", "--points", "1"], "--points must be an integer >= 3"),
    (["reproduce", "--out", "nodir/x/out.json"], "does not exist"),
    (["count", "product", "9" * 30], "beyond any array"),  # found by tests/test_cli_fuzz.py
])
def test_bad_options_are_one_line_and_exit_2(capsys, argv, match):
    _one_line_error(capsys, argv, 2, match)


def test_a_bad_output_path_fails_before_the_run(capsys, tmp_path):
    t0 = time.perf_counter()
    _one_line_error(capsys, ["reproduce", "--out", str(tmp_path)], 2, "is a folder")
    assert time.perf_counter() - t0 < 5  # refused up front, not after minutes of counting


def test_reproduce_writes_rows_as_they_finish_and_the_file_at_the_end(capsys, tmp_path):
    out = tmp_path / "rows.json"
    assert main(["reproduce", "--paper", "gradient", "--limit", "1", "--json", "--out",
                 str(out), "--no-progress"]) == 0
    payload = json.loads(out.read_text())
    assert payload["summary"]["cases"] == len(payload["rows"]) > 0
    assert not (tmp_path / "rows.json.partial.jsonl").exists()


def test_an_interrupt_keeps_the_finished_rows_and_exits_130(capsys, tmp_path, monkeypatch):
    from conflow.reference import reproduce

    real = reproduce.run

    def two_rows_then_ctrl_c(*args, **kwargs):
        for i, row in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield row

    monkeypatch.setattr(reproduce, "run", two_rows_then_ctrl_c)
    out = tmp_path / "rows.json"
    assert main(["reproduce", "--paper", "gradient", "--limit", "3", "--json", "--out",
                 str(out), "--no-progress"]) == EXIT_CODES["interrupted"] == 130
    kept = (tmp_path / "rows.json.partial.jsonl").read_text().splitlines()
    assert len(kept) == 2 and all(json.loads(line)["status"] for line in kept)
    assert not out.exists()
    assert capsys.readouterr().err.strip().splitlines()[-1] == "conflow: error: interrupted"


def test_resource_errors_exit_3(capsys, monkeypatch):
    def out_of_memory(args):
        raise MemoryError

    monkeypatch.setattr(count_command, "run", out_of_memory)
    _one_line_error(capsys, ["count", "linear", "2,3,2"], 3, "out of memory")


def _run(shell: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True)


def test_a_closed_pipe_ends_quietly_and_a_full_disk_is_one_line():
    run = _run(f"{sys.executable} -m conflow count linear 3,4,4,3 --json | head -c 10")
    assert run.returncode == 0 and run.stdout == '{"model": ' and "Traceback" not in run.stderr
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    run = _run(f"{sys.executable} -m conflow count linear 2,3,2 --json > /dev/full")
    assert run.returncode == 3, run.stderr
    assert run.stderr.strip() == ("conflow: error: cannot write the output: No space left on "
                                  "device")


def test_a_count_that_cannot_fit_is_refused_up_front_with_exit_2():
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pytest.skip("cannot read the machine's memory")
    if total > 64 * 2**30:
        pytest.skip("this machine could try the 51 GiB count")
    run = _run(f"{sys.executable} -m conflow count linear 3000,3000,2")
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().startswith("conflow: error: out of memory (estimated before")
    assert len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr


def test_an_unreachable_coordinator_is_one_line_not_a_hang():
    t0 = time.perf_counter()
    run = _run(f"{sys.executable} -m conflow count linear 2,2,2 --coordinator 127.0.0.1:1 "
               "--num-processes 2 --process-id 1 --connect-timeout 2", timeout=60)
    assert run.returncode == 3 and time.perf_counter() - t0 < 30, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith(
        "conflow: error: cannot reach the coordinator 127.0.0.1:1 within 2 s")


@pytest.mark.parametrize("call, match", [
    (lambda: cf.count_laws(cf.linear([2, 3, 2]), points=2.5), "points must be an integer"),
    (lambda: cf.count_laws(None), "model must be a conflow Model"),
    (lambda: cf.count_laws(cf.linear([2, 3, 2]), "sideways"), "unknown flow 'sideways'"),
    (lambda: cf.verify_law(cf.linear([2, 3, 2]), None, lambda p: 1), "floating-point"),
    (lambda: cf.verify_law(None, None, "U1[0,0]"), "model must be a conflow Model"),
    (lambda: cf.linear("2,3,2"), "got the string '2,3,2'"),
    (lambda: cf.verify_law(cf.linear([2, 3, 2]), None, "U1[0,0]", seed=-1), "seed must be"),
    (lambda: cf.polynomial_laws(cf.linear([2, 3, 2]), None, 2, seed=-1), "seed must be"),
])
def test_bad_api_arguments_are_one_line_input_errors(call, match):
    with pytest.raises(cf.InputError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_verify_exit_codes_are_documented_and_kept(capsys):
    assert main(["verify", "linear", "2,3,2", "--law", "U1[0,0]", "--no-known"]) == 1
    assert main(["verify", "linear", "2,3,2", "--law", "(U1.T @ U1 - U2 @ U2.T)[0,1]",
                 "--no-known"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["verify", "--help"])
    assert "exit code" in capsys.readouterr().out.lower()
