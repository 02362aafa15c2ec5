"""The statuses of conflow's results, one enum each, beside `errors` at the bottom of the package.

Both are ``str`` enums: a status compares equal to its value (``count.status == "ok"``), prints
as it (``f"{count.status}"`` is ``ok``) and serialises to JSON as it.
"""

from __future__ import annotations

import enum


class _StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Status(_StrEnum):
    """How a count (`LawCount`, `LieTrace`, `ExactTrace`, `LawBasis`) ended.

    - ``ok``: the answer, with its evidence;
    - ``ambiguous``: the evidence does not settle it (points disagree, a σ inside the rank band,
      a gap below the minimum); no number is reported;
    - ``disagree``: two engines (or the exact engine's two primes) gave different answers;
    - ``not_converged``: the trace still grew at the maximum bracket depth.
    """

    OK = "ok"
    AMBIGUOUS = "ambiguous"
    DISAGREE = "disagree"
    NOT_CONVERGED = "not_converged"


class Conservation(_StrEnum):
    """The verdict of `verify_law` on a hypothesised law."""

    CONSERVED = "conserved"
    NOT_CONSERVED = "not_conserved"
    INCONCLUSIVE = "inconclusive"
