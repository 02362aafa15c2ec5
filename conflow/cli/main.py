"""The ``conflow`` command: builds the parser from the command modules and dispatches.

One module per subcommand (``count``, ``reproduce``, ``simulate``, ``laws``, ``verify``), each
with ``add_parser(subparsers)`` and ``run(args) -> int``; the arguments they share are in
`conflow.cli.arguments`.

Exit codes: 0 on success (whatever the status of a count), 1 when ``reproduce`` finds a mismatch
or ``verify`` does not find the law conserved, 2 on bad input with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from conflow.cli.arguments import _Parser
from conflow.errors import InputError
from conflow.precision import float64_mode


def _commands() -> dict[str, ModuleType]:
    """Subcommand name -> its module, in the order of ``conflow --help``.

    Imported when the parser is built, not with this module: each command module keeps its heavy
    imports (engines, diffrax, optax) inside ``run``."""
    from conflow.cli import count, laws, reproduce, simulate, verify

    return {"count": count, "reproduce": reproduce, "simulate": simulate, "laws": laws,
            "verify": verify}


def _build_parser(commands: dict[str, ModuleType]) -> argparse.ArgumentParser:
    parser = _Parser(prog="conflow", description="Conservation laws of training flows.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in commands.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``conflow`` on ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        for item in argv:  # argparse would take "-1,2" for an option
            if item[:1] == "-" and item[1:2].isdigit() and "," in item:
                raise InputError(f"dims must be positive integers, got {item!r}")
        commands = _commands()
        args = _build_parser(commands).parse_args(argv)
        with float64_mode():
            return commands[args.command].run(args)
    except InputError as exc:
        print(f"conflow: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
