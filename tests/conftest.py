"""Shared test setup.

`benchmarks/trust_models.py` holds the models of the trust suite and their closed-form expected
counts (`hidden_neurons`, `linear_formula`, `affine_formula`, …); ``benchmarks/bench_trust.py``
uses the same module, so the tests and the benchmark share one copy. Its folder is appended to
``sys.path`` here so that ``import trust_models`` works in the tests. conflow enables float64 on
import: no fixture is needed for it.
"""

import sys
from pathlib import Path

BENCHMARKS = str(Path(__file__).resolve().parents[1] / "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.append(BENCHMARKS)
