"""Errors conflow raises on purpose: each names the problem in one line.

The CLI maps them to its exit codes: `InputError` → 2 (bad input), `ResourceLimitError` → 3 (a
run that does not fit the machine, or stopped at a limit).
"""


class InputError(ValueError):
    """Bad user input: wrong shapes, non-finite values, unknown names, impossible dimensions."""


class PiecewiseError(InputError):
    """φ is piecewise polynomial (ReLU, max, abs, …): the exact engine counts it only on the
    activation region of a point (``region=θ0``)."""


class ResourceLimitError(RuntimeError):
    """A run needs more than the machine has (memory, disk), or could not reach a resource (a
    coordinator) within its time limit."""


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum``; `InputError` naming ``name`` otherwise (a bool, a float
    such as 2.5, a string are refused)."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
