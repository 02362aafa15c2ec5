"""Errors raised on bad input: each names the problem in one line (the CLI prints it and exits 2)."""


class InputError(ValueError):
    """Bad user input: wrong shapes, non-finite values, unknown names, impossible dimensions."""
