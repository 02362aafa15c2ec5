"""conflow: conservation laws of training flows (gradient, metric and momentum flows), with JAX.

Public API (float64 is enabled on import):

- models: `linear`, `relu`, `factorization`, `nmf`, `icnn`, `product`, `custom`, `get_model`;
- flows: `GradientFlow`, `MomentumFlow`;
- counting: `count_laws` → `LawCount`; the engine `lie_trace` → `LieTrace` on a `VectorFamily`;
- building blocks: `lie_bracket`, `bracket_chain`, `numerical_rank`.
"""

from . import _config  # noqa: F401  (float64 before anything is traced)
from .brackets import bracket_chain, lie_bracket
from .errors import InputError
from .flows import GradientFlow, MomentumFlow
from .laws import LawCount, count_laws
from .models import (
    Model,
    ParamBlock,
    custom,
    factorization,
    get_model,
    icnn,
    linear,
    nmf,
    product,
    relu,
)
from .rank import RankCut, numerical_rank
from .trace import LieTrace, VectorFamily, lie_trace

__all__ = [
    "GradientFlow",
    "InputError",
    "LawCount",
    "MomentumFlow",
    "LieTrace",
    "Model",
    "ParamBlock",
    "RankCut",
    "VectorFamily",
    "count_laws",
    "custom",
    "factorization",
    "get_model",
    "icnn",
    "lie_bracket",
    "lie_trace",
    "linear",
    "bracket_chain",
    "nmf",
    "numerical_rank",
    "product",
    "relu",
]
__version__ = "0.1.0"
