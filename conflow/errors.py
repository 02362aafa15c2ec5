"""Errors raised on bad input: each names the problem in one line (the CLI prints it and exits 2)."""


class InputError(ValueError):
    """Bad user input: wrong shapes, non-finite values, unknown names, impossible dimensions."""


class PiecewiseError(InputError):
    """φ is piecewise polynomial (ReLU, max, abs, …): the exact engine counts it only on the
    activation region of a point (``region=θ0``)."""
