"""Errors conflow raises on purpose: each names the problem in one line.

The CLI maps them to its exit codes: `InputError` → 2 (bad input; `TooLargeError`, a count
refused before it starts because its estimate does not fit, is one), `ResourceLimitError` → 3 (a
run that ran out of a resource, or could not reach one).
"""


class InputError(ValueError):
    """Bad user input: wrong shapes, non-finite values, unknown names, impossible dimensions."""


class PiecewiseError(InputError):
    """φ is piecewise polynomial (ReLU, max, abs, …): the exact engine counts it only on the
    activation region of a point (``region=θ0``)."""


class TooLargeError(InputError):
    """A run refused before it allocates anything: its estimated memory does not fit the machine
    or the user's ``max_memory``. The message gives the estimate and the option that would fit."""


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
