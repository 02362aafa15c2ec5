"""What a count will cost before it runs: time and memory of the numeric and exact engines.

Estimates, not measurements: used to choose the cheaper trustworthy engine (``method="auto"``)
and to refuse or bound a count that would not fit (``max_memory``, ``time_limit``).

Numeric engines (`numeric_cost`, stable API)::

    numeric_cost(model, flow=None, points=3, algorithm="auto", *, max_depth=6,
                 max_chunk=256, block=512) -> Cost

``Cost.bytes`` is the peak memory the count adds (host; the device's on an accelerator) and
``Cost.seconds`` the wall time on one core, compilation included, of one `lie_trace` call of the
count (no escalation). Both assume that the trace dimension r is the state dimension n (an upper
bound, and close for every model family known: laws are few next to D) and that the trace stops
growing by depth 3 (gradient flows) or 4 (momentum flows). Calibrated on 14 counts (module
comments below): time 0.5–3×, memory 0.8–1.7× the measured, enough to tell seconds from hours
and megabytes from terabytes.

Also here: `available_memory` (what the machine can give a count now), `parse_size`
(``"4G"``) and `parse_duration` (``"5m"``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from conflow.errors import InputError

_FLOAT = 8  # bytes of a float64


@dataclasses.dataclass(frozen=True)
class Cost:
    """An estimate of what one engine run needs.

    Attributes:
        engine: ``"dense"``, ``"streamed"`` (numeric algorithms) or ``"exact"``.
        bytes: peak memory, bytes.
        seconds: wall time, seconds (compilation included).
        parts: the main terms, ``(name, bytes, seconds)``, largest first: what dominates.
        chunk: samples per compiled bracket call the estimate assumes (numeric engines).
        block: samples per streamed block the estimate assumes (``streamed`` only, else 0).
    """

    engine: str
    bytes: float
    seconds: float
    parts: tuple[tuple[str, float, float], ...] = ()
    chunk: int = 0
    block: int = 0

    def line(self) -> str:
        """``"streamed engine, ~154 GB, ~19 h"``: one line for a human."""
        return f"{self.engine} engine, ~{format_size(self.bytes)}, ~{format_duration(self.seconds)}"

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "bytes": self.bytes, "seconds": self.seconds,
                "parts": [list(p) for p in self.parts], "chunk": self.chunk, "block": self.block}


# --------------------------------------------------------------------------- sizes and durations

_SIZE_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_size(text: str | float, name: str = "--max-memory") -> int:
    """``"4G"``, ``"500M"``, ``"1.5T"``, ``"2048K"``, ``"4GB"``, ``"4GiB"`` or a number of bytes →
    bytes (units are powers of 1024); `InputError` naming ``name`` otherwise."""
    if isinstance(text, bool):
        raise InputError(f"{name} must be a size such as 4G or 500M, got {text!r}")
    if isinstance(text, (int, float)):
        value, unit = _finite(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTkmgt]?)(?:i?[Bb])?\s*",
                             str(text))
        if not match:
            raise InputError(f"{name} must be a size such as 4G or 500M, got {text!r}")
        value, unit = float(match.group(1)), match.group(2).upper()
    size = value * _SIZE_UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise InputError(f"{name} must be a positive size such as 4G or 500M, got {text!r}")
    return int(size)


def parse_duration(text: str | float, name: str = "--time-limit") -> float:
    """``"90"``, ``"90s"``, ``"5m"``, ``"5min"``, ``"1.5h"`` or a number of seconds → seconds;
    `InputError` naming ``name`` otherwise."""
    if isinstance(text, bool):
        raise InputError(f"{name} must be a duration such as 90, 90s, 5m or 2h, got {text!r}")
    if isinstance(text, (int, float)):
        value, unit = _finite(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(s|m|min|h)?\s*",
                             str(text))
        if not match:
            raise InputError(f"{name} must be a duration such as 90, 90s, 5m or 2h, got {text!r}")
        value, unit = float(match.group(1)), match.group(2) or ""
    seconds = value * _DURATION_UNITS[unit]
    if not math.isfinite(seconds) or seconds <= 0:
        raise InputError(f"{name} must be a positive duration such as 90s or 5m, got {text!r}")
    return seconds


def _finite(x: float) -> float:
    """``float(x)``, or ``inf`` for an integer too large for a float (then refused)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf


def format_size(n_bytes: float) -> str:
    """``1.5e9`` → ``"1.4 GB"`` (powers of 1024, as `parse_size` reads them)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n_bytes < 1024 or unit == "PB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.3g} {unit}"
        n_bytes /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``42`` → ``"42 s"``, ``420`` → ``"7 min"``, ``7e4`` → ``"19 h"``, ``1e7`` → ``"116 days"``."""
    if seconds < 90:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.2g} h"
    return f"{seconds / 86400:.3g} days"


# --------------------------------------------------------------------------- the machine


def available_memory() -> int | None:
    """Bytes a count may allocate now: MemAvailable of ``/proc/meminfo`` (else the free physical
    pages of ``os.sysconf``), capped by a cgroup memory limit (containers); ``None`` if unknown."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    limit = _cgroup_room()
    if limit is not None:
        found.append(limit)
    return min(found) if found else None


def _cgroup_room() -> int | None:
    """The room left under this process's cgroup memory limit (v2 or v1), or ``None``."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                text = fh.read().strip()
            if text == "max":
                return None
            limit = int(text)
            if limit >= 1 << 60:  # cgroup v1's "no limit"
                return None
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
            return max(0, limit - usage)
        except (OSError, ValueError):
            continue
    return None


# --------------------------------------------------------------------------- numeric engines
#
# Model. A numeric count at P points evaluates, at depth k, S_k random bracket chains per point
# (S_0 = min(n, m) + margin samples for the generators, then what the complement c_k = n − r_k can
# still take: c_1 = n − min(n, m), then halving per level; the streamed algorithm draws blocks of
# b until a block has samples to spare) and cuts them:
#
#   evaluation   P · S_k · (n + m_s) · EVAL_S · CHAIN_GROWTH^k     (m_s sampled coefficients)
#   compilation  COMPILE_S · COMPILE_GROWTH^k per compiled depth (× COMPILE_BIG above n = 512:
#                the kernels are then compiled with LLVM's optimisations)
#   dense        per point and level: QR of the S × c stack, an SVD with vectors of its c × c
#                factor (26 c³ flops at SVD_FLOPS), the projection on and update of the
#                complement (2 S n c + 2 c² n at GEMM_FLOPS)
#   streamed     per point: 2 n r² + 4 n b r flops (Householder rotations and QRs, at
#                STREAM_FLOPS) plus one b × b SVD per block
#
# with r = n (the trace dimension is not known before the count; laws are few next to D for
# every known family, so this is close, and an upper bound). Gradient flows are assumed to
# stagnate by depth 3 (levels 0–3 evaluated), momentum flows by depth 4 (or the depth cap).
#
# Memory: the complements (dense: P n² floats) or trace bases (streamed: P n (r + levels·b)), the
# stage's samples (device values, host copy and normalised rows), and one compiled call's flat
# batch (≤ 3·max_chunk chains of (depth + 1) n floats, with CHAIN_INTERMEDIATES copies).
#
# Calibration (the 2-core development machine, x86-64, NumPy's OpenBLAS 0.3.31, jax on CPU,
# float64). The machine was shared while this was measured (load average 8–12), so wall times
# were 2–7× the CPU times, and multi-threaded OpenBLAS spin-waits inflated CPU times too: the
# constants are single-threaded CPU seconds (OPENBLAS_NUM_THREADS=1, XLA's intra-op parallelism
# 1), i.e. a quiet machine's wall time on one core; on two cores LAPACK runs ~1.4× faster.
#   - evaluation: `conflow.engine.evaluate.evaluate_stage`, 512–2048 samples × 3 points, second
#     call (compiled): relu [30,30,30,4] (n + m_s = 2014) 4.6e-5 s per chain at depth 0,
#     1.6e-4 at 1, 4.1e-4 at 2; linear [20]×6 (2400) 5.9e-5, 2.7e-4, 1.0e-3; relu
#     [100,100,100]+bias (20 400) 4.8e-4, 1.5e-3: EVAL_S ≈ 2.2e-8 s, growth ≈ 3.5 per depth;
#   - compilation (first call minus the second): linear [3,4,4,3] 0.44, 0.61, 0.70, 1.31 s at
#     depths 0–3; momentum linear [3,3,3] 0.37, 0.42, 0.60, 0.65, 1.40, 2.82 s at depths 0–5;
#     relu [30,30,30,4] 1.8, 4.0, 7.4 s; linear [20]×6 1.4, 2.2, 3.2 s at depths 0–2;
#   - LAPACK, one thread: `conflow.engine.rank.row_space_svd` of 1000 × 1000: 0.61 s, of
#     1200 × 1100: 0.93 s (SVD_FLOPS ≈ 4e10 on 26 c³); a 2000² product 0.26 s (GEMM_FLOPS);
#     `TraceBasis.extend` of 512-row blocks at n = 8000, rank 512–2560: 0.41–0.85 s per block
#     (STREAM_FLOPS ≈ 5e10 on 4 n b r + 4 n b²).
# Whole counts, 3 points, estimate against measured — wall s and peak MB of
# `benchmarks/bench_scaling.py` on the quiet 2-core CI machine (README, "Performance"), or
# single-threaded CPU s and peak RSS growth here (marked *):
#   linear [3,4,4,3]         3.7 s  129 MB  |  3.0 s*  129 MB*
#   linear [20]×6, dense      47 s  1.0 GB  |   17 s   955 MB
#   relu [30,30,30,4], dense  30 s  800 MB  |   25 s   973 MB
#   relu [40,40,40,4], dense 107 s  1.9 GB  |   99 s   2.1 GB;  streamed 24 s 0.9 GB | 49 s 1.2 GB
#   relu [40,40,40] streamed  23 s  890 MB  |   11 s*  561 MB*
#   linear [100,50,100]      173 s  3.6 GB  |  159 s   2.6 GB
#   relu [784,13,10]         177 s  4.3 GB  |  196 s   2.5 GB
#   momentum linear [20,25,20]  61 s  1.1 GB  |  23 s  963 MB
#   momentum linear [3,3,3]  5.7 s  129 MB  |  2.1 s*  114 MB*
# i.e. time 0.5–3× and memory 0.8–1.7× the measured: the estimates lean long and large.
# relu [200,200,200]+bias (D = 80 200), estimated only: streamed, ~157 GB, ~18 h.

#: Seconds per bracket chain and per float of (n + m_s), at depth 0 (CPU).
EVAL_S = 2.2e-8
#: A chain of depth k costs CHAIN_GROWTH**k chains of depth 0.
CHAIN_GROWTH = 3.5
#: Compiling a bracket chain of depth k: COMPILE_S × COMPILE_GROWTH**k seconds (× COMPILE_BIG
#: above `conflow.engine.evaluate.FAST_COMPILE_MAX_DIM`, where LLVM optimises the kernels).
COMPILE_S = 0.4
COMPILE_GROWTH = 1.5
COMPILE_BIG = 4.0
#: flop/s of LAPACK's SVD with vectors (26 c³ flops for c × c), of matrix products, and of the
#: streamed basis's Householder kernels (dgeqrt / dgemqrt).
SVD_FLOPS = 4.0e10
GEMM_FLOPS = 6.0e10
STREAM_FLOPS = 5.0e10
#: Fixed cost of a count: generic points, generator weights, the programs around the chains.
FIXED_S = 1.0
#: Intermediates of a compiled chain, in copies of its output per level.
CHAIN_INTERMEDIATES = 4
#: The deepest level a count is assumed to evaluate (stagnation by then), gradient flows and
#: momentum flows (linear [3,3,3] and [4,5,4] under momentum stagnate at depths 3 and 4).
GRADIENT_DEPTH = 3
MOMENTUM_DEPTH = 4
#: The compiler's and runtime's own growth during a count (peak RSS of the smallest counts).
RUNTIME_BYTES = 128 * 2**20


def numeric_cost(model: Any, flow: Any = None, points: int = 3, algorithm: str = "auto", *,
                 max_depth: int = 6, max_chunk: int = 256, block: int = 512) -> Cost:
    """Memory and time of one numeric `lie_trace` call of ``model`` under ``flow`` (default
    Euclidean gradient flow) at ``points`` generic points, by ``algorithm`` (``"dense"``,
    ``"streamed"``, or ``"auto"``, resolved as `lie_trace` does: dense up to state dim
    ``DENSE_MAX_DIM``).

    Stable signature, shared by the resource guard of `count_laws` and ``method="auto"``.
    ``max_depth`` is the count's depth cap; ``max_chunk`` and ``block`` are `lie_trace`'s batch
    sizes (the guard lowers them to fit). The model of the module comments, from the state
    dimension n, the generators m and sampled coefficients m_s of ``flow.family(model)``: an
    estimate, good to a factor of a few, labelled as such wherever it is shown.
    """
    from conflow.flows import parse_flow

    flow = parse_flow(flow)
    n = int(flow.state_dim(model))
    family = flow.family(model)
    _, m_s = family.sampled
    depth = min(max_depth, MOMENTUM_DEPTH if flow.has_velocity else GRADIENT_DEPTH)
    return estimate_numeric(n, int(family.n_coeffs), int(m_s), int(points),
                            resolve_algorithm(algorithm, n), depth, max_chunk, block)


def resolve_algorithm(algorithm: str, n: int) -> str:
    """``"auto"`` → what `lie_trace` picks for state dim ``n``; other names unchanged."""
    if algorithm != "auto":
        return algorithm
    from conflow.engine import trace

    return "dense" if n <= trace.DENSE_MAX_DIM else "streamed"


def _margin(c: int) -> int:
    return 8 + c // 16


def _samples(c: int, m: int, depth: int) -> int:
    """Samples of a level on a c-dimensional complement (`conflow.engine.levels`), unbucketed."""
    if c <= 0:
        return 0
    bound = c if (depth + 1) * math.log2(max(m, 2)) >= 62 else min(c, m ** (depth + 1))
    return bound + _margin(c)


def _chunk(P: int, depth: int, m_s: int, n_samples: int, max_chunk: int,
           max_chunk_floats: int = 1 << 24, batch_points: int = 3) -> int:
    """Samples per compiled call, as the engine chooses them (`conflow.engine.evaluate`)."""
    per_call = max(1, max_chunk_floats // (P * (depth + 1) * max(m_s, 1)))
    per_point = max(1, batch_points * max_chunk // P)
    return max(1, min(1 << max(0, (n_samples - 1).bit_length()), max_chunk,
                      1 << (per_call.bit_length() - 1), 1 << (per_point.bit_length() - 1)))


def estimate_numeric(n: int, m: int, m_s: int, P: int, algorithm: str, depth: int,
                     max_chunk: int = 256, block: int = 512) -> Cost:
    """`numeric_cost` from the sizes alone: state dim ``n``, ``m`` generators, ``m_s`` sampled
    coefficients, ``P`` points, the ``algorithm`` (``dense`` or ``streamed``) and the deepest
    level evaluated, ``depth``."""
    from conflow.engine.evaluate import FAST_COMPILE_MAX_DIM

    r0 = min(n, m)  # the generators' span
    c1 = n - r0 if r0 < n else min(n, 64)  # what depth 1 may still add (a few, at least)
    # (depth, complement) of each level; deeper levels halve what is left
    levels = [(0, n)] + [(k, max(1, c1 >> (k - 1))) for k in range(1, depth + 1)]
    per_chain = (n + m_s) * EVAL_S
    compile_s = COMPILE_S * (COMPILE_BIG if n > FAST_COMPILE_MAX_DIM else 1.0)
    streamed = algorithm == "streamed"
    b = block if streamed else 0

    eval_s = host_s = 0.0
    compiled: set[int] = set()
    for k, c in levels:
        S = _samples(c, m, k)
        if streamed:  # blocks of b until one has samples to spare
            size = min(S, b)
            spare = min(_margin(c), max(1, size // 4))
            S = size * (1 + (S - _margin(c)) // max(1, size - spare))
        chain_depth = 2 if (not streamed and k in (1, 2)) else k  # dense: stage {1, 2}
        if not (not streamed and k == 2):  # dense: level 2 comes with level 1's chains
            eval_s += P * S * per_chain * CHAIN_GROWTH ** chain_depth
            compiled.add(min(chain_depth, depth))
        if not streamed:
            host_s += P * (2.0 * S * c * c / (GEMM_FLOPS / 3) + 26.0 * c**3 / SVD_FLOPS
                           + (2.0 * S * n * c + 2.0 * c * c * n) / GEMM_FLOPS)
    compile_total = sum(compile_s * COMPILE_GROWTH ** k for k in compiled)
    deepest = max(compiled)

    S0 = _samples(n, m, 0)
    chunk = _chunk(P, deepest, m_s, min(S0, b) if streamed else S0, max_chunk)
    flat = min(P * chunk, 3 * max_chunk)
    batch_b = (flat * (deepest + 1) * n * _FLOAT * (1 + CHAIN_INTERMEDIATES)
               + min(P * chunk * (deepest + 1) * m_s, 1 << 24) * _FLOAT)
    parts = [("bracket evaluation", batch_b, eval_s), ("compilation", 0.0, compile_total)]
    r = n  # the trace dimension (an upper bound)
    if streamed:
        stored = min(n, r + len(levels) * b)  # a block that keeps anything stores b reflectors
        host_s = P * ((2.0 * n * r * r + 4.0 * n * b * r) / STREAM_FLOPS
                      + (r / max(b, 1) + len(levels)) * 22.0 * b**3 / SVD_FLOPS)
        parts += [("trace bases", P * n * stored * _FLOAT, host_s),
                  ("sample blocks", 4 * P * min(S0, b) * n * _FLOAT, 0.0)]
    else:
        S1 = _samples(c1, m, 1) if depth >= 1 else 0
        stage = max(S0, 2 * S1 if depth >= 2 else S1)
        parts += [("complements", P * n * n * _FLOAT, host_s),
                  ("sample stacks", (3 * P * stage * n + 3 * max(S0, n) * n) * _FLOAT, 0.0)]
    parts.append(("compiler and runtime", float(RUNTIME_BYTES), FIXED_S))
    total_b = sum(p[1] for p in parts) + P * n * _FLOAT
    total_s = sum(p[2] for p in parts)
    parts.sort(key=lambda p: -max(p[1] / 1e9, p[2]))
    return Cost(algorithm, float(total_b), float(total_s), tuple(parts), chunk, b)


# --------------------------------------------------------------------------- exact engine
#
# Issue 16 (method="auto"): the exact engine's time, from the size of φ's polynomials. Names
# here start with ``exact_`` / ``polynomial_size`` / ``EXACT_``; the numeric estimate above is
# `numeric_cost`'s.
#
# Model (one run per prime, `conflow.exact.trace._single_run`; a count runs EXACT_PRIMES of
# them). g generators on R^n (g = d, or d + 1 with the drift of a momentum flow); S = Σ over φ's
# monomials of their degree (the terms of the gradient fields), δ the largest degree, f = S / d
# the terms of one generator. Level 0 keeps R0 = min(g, rank bound) generators (the bound is n
# for a gradient flow, D + 1 for a momentum flow: the generators live in the velocity block and
# the drift); the levels ≥ 1 keep K = κ (n − R0) fields in all (κ, measured: 0.35–0.5 under
# gradient flow, 0 for ReLU path-liftings whose generators already span, 0.7–0.8 under momentum).
#
# Where K goes, and how large the kept fields get, is what makes deep models dear:
# * gradient flows: level 1 keeps (1 − β) K, at most CAP · R0 · g (a fraction of its
#   candidates); level 2 the rest, at most CAP · K_1 · g; … up to level δ − 1, the last one
#   taking what is left. A bracket of degree-δ fields multiplies their terms: level-ℓ fields
#   have f_ℓ = f_{ℓ−1} · ρ · (2 if ℓ ≥ 2) terms, ρ = max(1, (δ − 2) f / 20) (measured on the
#   kept brackets of 98 linear and ReLU nets: ρ_1 = 8–21 for δ = 4, f = 80–400; level 2 grows
#   15–47×). Fields of degree-2 φ are linear: ρ = 1.
# * momentum flows: K spread evenly over EXACT_DEPTH["momentum"] levels; fields grow by
#   1 + (δ − 2) per level (measured: flat for δ = 2, 1.4–2.7× for δ = 3).
# The estimate is deliberately pessimistic about depth: whether a deep linear net keeps brackets
# at levels 2 and 3 is not known before the count, and the exact engine on one that does costs
# 10–100× the numeric engine (linear [3,5,5,4,2]: 64 s CPU, the numeric count ~1 s), while
# predicting it wrongly the other way costs a fraction of a second.
#
# Per run:
#   t = c_gen · g + c_term · S δ                    (reduction mod p, values and Jacobians at z)
#     + c_rank · g n R0                             (level 0: rank of the generators)
#     + c_cand · (R0 + K − K_last) g · n² / 4        (each kept field's brackets with every
#                                                    generator, valued at z and eliminated)
#     + c_kept · K + c_terms · Σ_ℓ K_ℓ f_ℓ δ (1 + c_g g)   (the kept brackets: symbolic, values,
#                                                    Jacobians, products with the generators)
# plus c_fixed per count and c_extract · S for the polynomial form.
#
# Calibration (2026-12-01, the 2-core development machine, `conflow.exact` of commit e7199fc):
# non-negative least squares on the relative error of 148 exact counts, CPU time (the machine
# was shared; the engine is single-threaded), with the measured per-level K_ℓ and f_ℓ: the 50
# linear and 50 ReLU nets of `conflow reproduce --paper gradient` and linear [2,3,2] …
# [15,15,15], [4]×5, [4]×6, [5]×5, [2]×7, ReLU [2,3,2] … [8,10,10,4] ± bias, nmf, icnn,
# momentum linear [2,3,2] … [8,10,8] (state dim 25–321), ReLU ± bias. With the measured K_ℓ,
# f_ℓ the model is within 0.41–1.65× of every count (log-ratio s.d. 0.29); with the predicted
# ones (what `exact_cost` uses) within 0.37–1.5× of all but some deep linear nets (degree ≥ 4),
# which it over-estimates by up to 36× (178× for [4]×6, degree 5): never under by more than
# 0.37× (the small counts, whose CPU time the shared machine inflated). Estimate / measured:
# linear [3,4,4,3] 0.045 / 0.12 s; linear [10,10,10] 0.56 / 0.93 s; linear [12,12,12]
# 2.1 / 2.4 s; relu [9,8,7,8] + bias 4.3 / 4.9 s; relu [5,8,9,7,8] + bias 36 / 70 s; linear
# [2,2,4,5,2] 125 / 31 s; linear [3,5,5,4,2] 157 / 64 s; linear [5]×5 98 / 2.7 s; momentum
# linear [5,10,5] 0.34 / 0.51 s, [8,10,8] 1.8 / 2.6 s. Re-measure with
# ``python benchmarks/bench_counts.py --calibrate`` (estimates against measured times).
EXACT_PRIMES = 2
EXACT_KEPT_FRACTION = {"gradient": 0.45, "momentum": 0.75}
#: Levels ≥ 1 that keep fields under a momentum flow (measured 3–9).
EXACT_MOMENTUM_DEPTH = 5
#: Share of the kept brackets past level 1, and the fraction of a level's candidates it keeps at
#: most (measured 0.1–0.35).
EXACT_DEEPER_SHARE = 0.15
EXACT_KEEP_CAP = 0.3
#: s per count: primes, points, the result.
EXACT_FIXED_S = 4.7e-3
#: s per generator and run: reduction mod p, value and Jacobian at z.
EXACT_GENERATOR_S = 9.5e-5
#: s per term × degree of the generators (S δ) and run.
EXACT_TERM_S = 2.4e-6
#: s per g·n·R0 of the level-0 elimination.
EXACT_RANK_S = 9.0e-9
#: s per candidate bracket × n²/4: its value at z and its residual.
EXACT_CANDIDATE_S = 2.1e-9
#: s per kept bracket.
EXACT_KEPT_S = 6.3e-4
#: s per term × degree of a kept bracket (symbolic bracket, value and Jacobian at z) ...
EXACT_KEPT_TERM_S = 8.8e-7
#: ... plus this per generator (the next level's products of its Jacobian with the generators).
EXACT_KEPT_TERM_G_S = 1.5e-9
#: s per unit of S (Σ of φ's monomial degrees): the polynomial form (jaxpr walk).
EXACT_EXTRACT_S = 1.1e-6
_INT = 8  # bytes of an int64
#: Python objects of a sparse polynomial term (dict slot, int monomial, int coefficient), bytes.
_TERM_BYTES = 200


@dataclasses.dataclass(frozen=True)
class PolynomialSize:
    """The size of φ's polynomials (`polynomial_size`).

    Attributes:
        outputs: d, the number of components of φ.
        monomials: M, monomials over all components.
        degree_sum: S, Σ over those monomials of their total degree (the number of terms of the
            gradient fields ∇φ_i, all components together).
        degree: δ, the largest total degree.
    """

    outputs: int
    monomials: int
    degree_sum: int
    degree: int


def polynomial_size(polys: Any) -> PolynomialSize:
    """`PolynomialSize` of φ's polynomials (``conflow.exact.polynomial_form``'s list of `Poly`):
    one pass over their monomials."""
    monomials = degree_sum = degree = 0
    for p in polys:
        terms = p.terms
        monomials += len(terms)
        for m in terms:
            deg = m & 0xFFFF  # the packed monomial's total degree (conflow.exact.polynomial)
            degree_sum += deg
            degree = max(degree, deg)
    return PolynomialSize(len(polys), monomials, degree_sum, degree)


def _exact_levels(n: int, D: int, size: PolynomialSize, momentum: bool,
                  generator_rank: int | None = None) -> tuple[int, int, list[float], list[float]]:
    """(g, R0, [K_ℓ], [f_ℓ]): generators, level-0 rank, and the kept brackets and their terms
    per level ≥ 1, as the model above expects them. ``generator_rank``: the rank of ∂φ at a
    generic point when known (a model on an input sample: many outputs whose gradients span
    few directions, so the brackets, not the generators, fill the state)."""
    d = max(1, size.outputs)
    g = d + 1 if momentum else d
    r0 = min(g, D + 1 if momentum else n, n)
    if generator_rank is not None:
        r0 = min(r0, generator_rank + (1 if momentum else 0))
    kept = EXACT_KEPT_FRACTION["momentum" if momentum else "gradient"] * (n - r0)
    f, deg = size.degree_sum / d, max(1, size.degree)
    ks: list[float] = []
    fs: list[float] = []
    if kept <= 0:
        return g, r0, ks, fs
    if momentum:
        for _ in range(EXACT_MOMENTUM_DEPTH):
            f *= 1 + max(0, deg - 2)
            ks.append(kept / EXACT_MOMENTUM_DEPTH)
            fs.append(f)
        return g, r0, ks, fs
    last = max(1, deg - 1)
    rho = max(1.0, (deg - 2) * f / 20.0)
    prev = float(r0)
    for level in range(1, last + 1):
        share = kept * (1 - EXACT_DEEPER_SHARE) if level == 1 and last > 1 else kept
        if level == 1:  # g (g − 1) / 2 distinct brackets [χ_i, χ_j]: none for one generator
            room = g * (g - 1) / 2 if last == 1 else min(g * (g - 1) / 2,
                                                         EXACT_KEEP_CAP * prev * g)
        else:  # the last level takes what is left (pessimistic: deep levels are the dear ones)
            room = share if level == last else EXACT_KEEP_CAP * prev * g
        k = min(share, room)
        if k <= 0:
            break
        f *= rho * (2 if level >= 2 else 1)
        ks.append(k)
        fs.append(f)
        kept, prev = kept - k, k
        if kept < 0.5:
            break
    return g, r0, ks, fs


def exact_cost(n: int, D: int, size: PolynomialSize, *, momentum: bool = False,
               primes: int = EXACT_PRIMES, generator_rank: int | None = None) -> Cost:
    """Time (and, roughly, memory) of an exact count (`conflow.laws.exact_count.exact_count_laws`)
    with state dimension ``n``, ``D`` parameters and φ's polynomials of size ``size``
    (`polynomial_size`), under a gradient flow or (``momentum``) a momentum flow; the rank of
    ∂φ at a generic point, ``generator_rank``, when known (else min(d, n) is assumed). An
    estimate calibrated on this machine class (the module's comments), pessimistic about deep
    models; the polynomial form's own time is included."""
    n, D = int(n), int(D)
    g, r0, ks, fs = _exact_levels(n, D, size, momentum, generator_rank)
    deg = max(1, size.degree)
    kept = sum(ks)
    kept_terms = sum(k * f for k, f in zip(ks, fs)) * deg
    candidates = (r0 + kept - (ks[-1] if ks else 0.0)) * g if ks else 0.0
    per_run = [
        ("generators", EXACT_GENERATOR_S * g + EXACT_TERM_S * size.degree_sum * deg),
        ("level-0 rank", EXACT_RANK_S * g * n * r0),
        ("candidate brackets", EXACT_CANDIDATE_S * candidates * n * n / 4),
        ("kept brackets", EXACT_KEPT_S * kept
         + kept_terms * (EXACT_KEPT_TERM_S + EXACT_KEPT_TERM_G_S * g)),
    ]
    parts = [(name, 0.0, primes * s) for name, s in per_run]
    parts.append(("polynomial form", float(size.degree_sum * _TERM_BYTES),
                  EXACT_EXTRACT_S * size.degree_sum))
    # per run: the raw fields and the kept brackets with their Jacobians at z (limbs, indices),
    # the echelon basis, one block of candidate values (conflow.exact.trace._CAND_ENTRIES = 2^22)
    terms = size.degree_sum + sum(k * f for k, f in zip(ks, fs))
    run_b = (terms * (_TERM_BYTES + deg * 7 * _INT) + 2 * n * n * _INT
             + 4 * min(g * n * n, 1 << 22) * _INT)
    parts.append(("brackets mod p", float(run_b), 0.0))
    total_s = EXACT_FIXED_S + sum(p[2] for p in parts)
    parts.sort(key=lambda p: -max(p[1] / 1e9, p[2]))
    return Cost("exact", float(sum(p[1] for p in parts)), float(total_s), tuple(parts))


def exact_cost_floor(n: int, D: int, outputs: int, *, momentum: bool = False) -> Cost:
    """A lower bound of `exact_cost` that needs no polynomial form: φ's ``outputs`` components
    each have at least one monomial of degree ≥ 1."""
    return exact_cost(n, D, PolynomialSize(outputs, outputs, outputs, 1), momentum=momentum)
