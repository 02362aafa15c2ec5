"""Several processes (machines) through JAX's own multi-process runtime.

`initialize` starts `jax.distributed` with CPU collectives (gloo), after which `jax.devices()`
lists the devices of every process and the engine's batch `Mesh` spans all of them. Every process
runs the same program on the same seeds: each evaluates its share of the bracket batch, the shares
are all-gathered, and the (cheap) rank decisions are then made identically everywhere.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from conflow.errors import InputError, ResourceLimitError

ENV = ("CONFLOW_COORDINATOR", "CONFLOW_NUM_PROCESSES", "CONFLOW_PROCESS_ID")
ENV_TIMEOUT = "CONFLOW_CONNECT_TIMEOUT"
#: Seconds a process waits for the coordinator (and the coordinator for the others).
CONNECT_TIMEOUT = 60.0


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
    timeout: float | None = None,
) -> bool:
    """Join a multi-process run; returns ``False`` (and does nothing) for a single process.

    Arguments default to the environment variables ``CONFLOW_COORDINATOR`` (``HOST:PORT``),
    ``CONFLOW_NUM_PROCESSES``, ``CONFLOW_PROCESS_ID`` and ``CONFLOW_CONNECT_TIMEOUT`` (seconds,
    default `CONNECT_TIMEOUT`). Must run before any JAX computation.

    JAX's runtime aborts the whole process (a C++ check failure) when it cannot reach the
    coordinator, so the address is checked first: process 0 must be able to listen on it (else
    `InputError`), the others must reach it within ``timeout`` seconds (else
    `ResourceLimitError`, one line naming the address).
    """
    coordinator = coordinator or os.environ.get(ENV[0])
    num_processes = num_processes or _int_env(ENV[1])
    process_id = process_id if process_id is not None else _int_env(ENV[2])
    if coordinator is None and num_processes in (None, 1):
        return False
    if coordinator is None or num_processes is None or process_id is None:
        raise InputError("a multi-process run needs --coordinator HOST:PORT, --num-processes N "
                         "and --process-id I (or CONFLOW_COORDINATOR, ...)")
    if ":" not in coordinator:
        raise InputError(f"--coordinator must be HOST:PORT, got {coordinator!r}")
    if not 0 <= process_id < num_processes:
        raise InputError(f"--process-id must be in [0, {num_processes}), got {process_id}")
    if timeout is None:
        timeout = float(os.environ.get(ENV_TIMEOUT, CONNECT_TIMEOUT))
    if not timeout > 0:
        raise InputError(f"the connect timeout must be > 0 seconds, got {timeout}")
    host, _, port_text = coordinator.rpartition(":")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InputError(f"--coordinator must be HOST:PORT with a port in 1..65535, got "
                         f"{coordinator!r}")
    if process_id == 0:
        _check_can_listen(host, int(port_text), coordinator)
    else:
        _wait_for_coordinator(host, int(port_text), coordinator, timeout)
    print(f"conflow: process {process_id}: joining {num_processes} processes at {coordinator} "
          f"(timeout {timeout:g} s)", file=sys.stderr)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id,
                               initialization_timeout=max(1, math.ceil(timeout)))
    # Gloo announces its connections on file descriptor 1 at the first collective: make that
    # happen now, with fd 1 sent to stderr, so that stdout keeps only conflow's own output.
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        multihost_utils.sync_global_devices("conflow: connect")
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    return True


def _check_can_listen(host: str, port: int, coordinator: str) -> None:
    """`InputError` unless this machine can listen on HOST:PORT (process 0 hosts the service)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host.strip("[]") or "0.0.0.0", port))
    except OSError as exc:
        raise InputError(f"--coordinator {coordinator}: process 0 cannot listen there "
                         f"({exc.strerror or exc})") from None


def _wait_for_coordinator(host: str, port: int, coordinator: str, timeout: float) -> None:
    """Return once HOST:PORT accepts a TCP connection; `ResourceLimitError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), port), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                raise ResourceLimitError(
                    f"cannot reach the coordinator {coordinator} within {timeout:g} s "
                    f"({exc.strerror or exc}); is process 0 running there?") from None
            time.sleep(0.2)


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise InputError(f"{name} must be an integer, got {value!r}") from exc


def global_array(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from the same host data on every process (each keeps its own shards)."""
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-process) array on every process."""
    if jax.process_count() > 1 and not x.is_fully_addressable:
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
