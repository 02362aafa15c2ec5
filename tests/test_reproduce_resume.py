"""``conflow reproduce --resume`` (issue 18, "no lost work"): the rows an interrupted run left in
``OUT.partial.jsonl`` are read back, not counted again, and part of the final table; a partial
file that is corrupt, written with other options, or about to be overwritten is one line and
exit 2."""

from __future__ import annotations

import json

import pytest

from conflow.cli.main import EXIT_CODES, main
from conflow.reference import reproduce

RUN = ["reproduce", "--paper", "gradient", "--limit", "1", "--json", "--no-progress"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The partial file of a run (3 rows) interrupted after its first 2 rows, and the first
    run's final output for comparison."""
    folder = tmp_path_factory.mktemp("interrupted")
    out = folder / "rows.json"
    real = reproduce.run

    def two_rows_then_ctrl_c(*args, **kwargs):
        for i, row in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield row

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reproduce, "run", two_rows_then_ctrl_c)
        assert main([*RUN, "--out", str(out)]) == EXIT_CODES["interrupted"]
    lines = (folder / "rows.json.partial.jsonl").read_text().splitlines()
    assert len(lines) == 2 and not out.exists()
    return lines


def _partial(tmp_path, lines, end="\n"):
    out = tmp_path / "rows.json"
    (tmp_path / "rows.json.partial.jsonl").write_text("\n".join(lines) + end)
    return out


def _counting(monkeypatch):
    """Count the `count_laws` calls of `conflow.reference.reproduce`."""
    calls = []
    real = reproduce.count_laws

    def counted(model, flow, **kwargs):
        calls.append(model.label)
        return real(model, flow, **kwargs)

    monkeypatch.setattr(reproduce, "count_laws", counted)
    return calls


def test_resume_counts_only_the_rows_left_and_keeps_the_others(interrupted, tmp_path,
                                                                monkeypatch, capsys):
    out = _partial(tmp_path, interrupted)
    calls = _counting(monkeypatch)
    assert main([*RUN, "--out", str(out), "--resume"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload == json.loads(out.read_text())
    assert not (tmp_path / "rows.json.partial.jsonl").exists()
    rows = payload["rows"]
    assert len(calls) == 1 and len(rows) == 3 == reproduce.n_cases("gradient", 1)
    assert payload["summary"]["cases"] == 3 and payload["summary"]["resumed"] == 2
    kept = [json.loads(line) for line in interrupted]
    for restored, line in zip(rows[:2], kept):
        assert restored == {k: v for k, v in line.items() if k != "resume"}
    assert rows[2]["model"] == calls[0] and "resume" not in rows[2]
    assert [r["protocol"] for r in rows] == ["product", "linear", "relu"]


def test_resume_with_every_row_done_counts_nothing_and_prints_the_table(interrupted, tmp_path,
                                                                       monkeypatch, capsys):
    last = json.loads(interrupted[1])
    third = {**last, "protocol": "relu", "model": "relu[made,up]",
             "resume": {**last["resume"], "protocol": "relu"}}
    out = _partial(tmp_path, [*interrupted, json.dumps(third)])
    calls = _counting(monkeypatch)
    argv = [a for a in RUN if a != "--json"]
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    text = capsys.readouterr().out
    assert calls == [] and "relu[made,up]" in text
    assert "(3 rows resumed from the partial file)" in text


def test_a_row_cut_short_is_counted_again(interrupted, tmp_path, monkeypatch, capsys):
    out = _partial(tmp_path, [interrupted[0], interrupted[1][:40]], end="")
    calls = _counting(monkeypatch)
    assert main([*RUN, "--out", str(out), "--resume"]) == 0
    assert len(calls) == 2 and len(json.loads(out.read_text())["rows"]) == 3
    assert "cut short" in capsys.readouterr().err


def _one_line(capsys, argv, match):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("conflow: error: ") and match in err[0], err


@pytest.mark.parametrize("edit, match", [
    (lambda lines: ["{not json", *lines], "line 1 is not a row of conflow reproduce"),
    (lambda lines: [json.dumps({"resume": {}}), *lines], "line 1 has no valid 'paper'"),
    (lambda lines: [lines[0], lines[0]], "line 2 repeats a row"),
    (lambda lines: [json.dumps({**json.loads(lines[0]), "D": "many"})], "no valid 'D'"),
    (lambda lines: [json.dumps({**json.loads(lines[0]),
                                "resume": {**json.loads(lines[0])["resume"], "seed": 7}})],
     "written with seed 7, this run has 0"),
    (lambda lines: [json.dumps({**json.loads(lines[0]),
                                "resume": {**json.loads(lines[0])["resume"], "case": 5}})],
     "are not rows of this run"),
])
def test_a_corrupt_or_mismatched_partial_file_is_one_line_and_exit_2(interrupted, tmp_path,
                                                                     monkeypatch, capsys, edit,
                                                                     match):
    out = _partial(tmp_path, edit(interrupted))
    calls = _counting(monkeypatch)
    _one_line(capsys, [*RUN, "--out", str(out), "--resume"], match)
    assert calls == []  # refused before counting anything


def test_a_partial_file_is_never_overwritten_without_resume(interrupted, tmp_path, capsys):
    out = _partial(tmp_path, interrupted)
    _one_line(capsys, [*RUN, "--out", str(out)], "add --resume to keep them")
    assert (tmp_path / "rows.json.partial.jsonl").read_text().splitlines() == interrupted


def test_resume_needs_out(capsys):
    _one_line(capsys, [*RUN, "--resume"], "--resume needs --out")
