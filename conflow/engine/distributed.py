"""Several processes (machines) through JAX's own multi-process runtime.

`initialize` starts `jax.distributed` with CPU collectives (gloo), after which `jax.devices()`
lists the devices of every process and the engine's batch `Mesh` spans all of them. Every process
runs the same program on the same seeds: each evaluates its share of the bracket batch, the shares
are all-gathered, and the (cheap) rank decisions are then made identically everywhere.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

from conflow.errors import InputError

ENV = ("CONFLOW_COORDINATOR", "CONFLOW_NUM_PROCESSES", "CONFLOW_PROCESS_ID")


def initialize(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Join a multi-process run; returns ``False`` (and does nothing) for a single process.

    Arguments default to the environment variables ``CONFLOW_COORDINATOR`` (``HOST:PORT``),
    ``CONFLOW_NUM_PROCESSES`` and ``CONFLOW_PROCESS_ID``. Must run before any JAX computation.
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
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
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
    return np.asarray(x)
