"""Two processes on loopback (jax.distributed, CPU gloo collectives) give the single-process
count, with the dense and the streamed engine."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conflow.cli.main import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The count every process runs (the single-process one in the test process itself).
COUNT = ["count", "linear", "2,3,3,2", "--method", "numeric", "--json"]


def _count(extra, env=None):
    cmd = [sys.executable, "-m", "conflow", *COUNT, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


@pytest.mark.parametrize("algorithm", ["dense", "streamed"])
def test_two_processes_match_one(algorithm, capsys):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    coordinator = f"127.0.0.1:{_free_port()}"
    procs = [_count(["--algorithm", algorithm, "--coordinator", coordinator, "--num-processes",
                     "2", "--process-id", str(i)], env) for i in range(2)]
    # the single-process count: the same command, in this process, while the two run
    assert main([*COUNT, "--algorithm", algorithm]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for _, e in outs]
    multi = json.loads(outs[0][0].strip().splitlines()[-1])
    assert outs[1][0].strip() == ""  # only process 0 prints
    assert multi["n_laws"] == one["n_laws"] == 12
    assert multi["ranks_per_level"] == one["ranks_per_level"]
    assert multi["status"] == one["status"] == "ok"
    assert multi["algorithm"] == one["algorithm"] == algorithm


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--coordinator", "127.0.0.1:1"], "needs --coordinator"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
        (["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "5"],
         "--process-id must be"),
    ],
)
def test_bad_multi_process_arguments(argv, message, capsys):
    assert main(["count", "linear", "2,2,2", *argv]) == 2
    assert message in capsys.readouterr().err
