"""The ``conflow`` command: builds the parser from the command modules and dispatches.

One module per subcommand (``count``, ``reproduce``, ``simulate``, ``laws``, ``verify``), each
with ``add_parser(subparsers)`` and ``run(args) -> int``; the arguments they share are in
`conflow.cli.arguments`.

Exit codes, the same for every subcommand (`EXIT_CODES`): 0 success, whatever the status of a
count (also when the reader of the output closes the pipe, as ``| head`` does); 1 a verification
or reproduction that disagrees (``verify`` finds the law not conserved, ``reproduce`` a count
that differs from its closed form); 2 bad input; 3 a resource limit (out of memory, an
unwritable output, an unreachable coordinator); 130 interrupted (Ctrl-C). Every error is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from conflow.cli.arguments import _Parser
from conflow.compile_cache import enable_compile_cache
from conflow.errors import InputError, ResourceLimitError
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
    parser.epilog = EXIT_HELP
    for subparser in sub.choices.values():
        subparser.epilog = EXIT_HELP
    return parser


#: The exit codes of every subcommand.
EXIT_CODES = {"success": 0, "disagrees": 1, "bad input": 2, "resource limit": 3,
              "interrupted": 130}
EXIT_HELP = ("exit codes: 0 success (any status of a count); 1 a verification or reproduction "
             "that disagrees; 2 bad input; 3 a resource limit (memory, output, coordinator); "
             "130 interrupted")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``conflow`` on ``argv`` (default ``sys.argv[1:]``) and return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        for item in argv:  # argparse would take "-1,2" for an option
            if item[:1] == "-" and item[1:2].isdigit() and "," in item:
                raise InputError(f"dims must be positive integers, got {item!r}")
        commands = _commands()
        args = _build_parser(commands).parse_args(argv)
        enable_compile_cache()  # `conflow.compile_cache`: CONFLOW_CACHE_DIR=off turns it off
        with float64_mode():
            code = commands[args.command].run(args)
        sys.stdout.flush()  # a write error surfaces here, not at interpreter exit
        return code
    except InputError as exc:
        return _error(str(exc), "bad input")
    except ResourceLimitError as exc:
        return _error(str(exc), "resource limit")
    except MemoryError:
        return _error("out of memory: this count needs more memory than the machine has (try "
                      "--algorithm streamed, fewer --points, or a smaller model)", "resource limit")
    except BrokenPipeError:  # the reader stopped reading (| head): end quietly
        _silence_stdout()
        return EXIT_CODES["success"]
    except OSError as exc:
        if getattr(exc, "errno", None) is None:
            raise
        _silence_stdout()
        return _error(f"cannot write the output: {exc.strerror or exc}", "resource limit")
    except KeyboardInterrupt:
        return _error("interrupted", "interrupted")
    except Exception as exc:  # noqa: BLE001 - XLA's out-of-memory error has no class of its own
        if "RESOURCE_EXHAUSTED" not in str(exc):
            raise
        return _error("out of device memory: " + str(exc).strip().splitlines()[0][:200],
                      "resource limit")


def _error(message: str, kind: str) -> int:
    print(f"conflow: error: {message}", file=sys.stderr)
    return EXIT_CODES[kind]


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
