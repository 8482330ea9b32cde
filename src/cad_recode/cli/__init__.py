"""``cad-recode`` command line: argument parsing only.

Each verb group lives in its own module with a ``register(subparsers)``
function that adds its parsers and sets ``func`` to a handler taking the
parsed arguments. Handlers call into the library; they hold no logic of
their own beyond turning flags into arguments.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from cad_recode import __version__
from cad_recode.errors import CadRecodeError, escape_controls

# Verb groups, imported lazily so that `cad-recode exec` never pays for torch.
_COMMAND_MODULES = ("geometry", "data", "train", "rl", "infer", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cad-recode",
        description="Reverse-engineer CAD: point cloud or mesh in, CadQuery program out.",
    )
    parser.add_argument("--version", action="version", version=f"cad-recode {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"cad_recode.cli.{name}").register(subparsers)
    _mark_leaf_parsers(parser)
    return parser


def _mark_leaf_parsers(parser: argparse.ArgumentParser) -> None:
    """Each verb's parser: no prefix matching (``--use_qlor`` must not pass for
    ``--use_qlora``), and a reference to itself so unknown flags can be named."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _mark_leaf_parsers(sub)
    parser.allow_abbrev = False
    parser.set_defaults(_verb_parser=parser)


def unknown_argument_error(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """One line for what the verb's parser did not take, naming the closest flag."""
    token = extra[0]
    if not token.startswith("--"):
        return f"unexpected argument {token!r} (see --help)"
    name = token.split("=", 1)[0]
    flags = [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
    close = difflib.get_close_matches(name, flags, n=1, cutoff=0.6)
    return f"unknown flag '{name}'" + (f" (did you mean '{close[0]}'?)" if close else " (see --help)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    if extra:
        print(f"cad-recode {args.command}: error: {unknown_argument_error(args._verb_parser, extra)}", file=sys.stderr)
        return 2
    verb = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
    try:
        if getattr(args, "unsafe_no_os_sandbox", False):
            from cad_recode.geometry.sandbox import allow_unconfined_sandboxes

            print(f"cad-recode {args.command}: warning: --unsafe_no_os_sandbox: programs run without the OS "
                  "sandbox", file=sys.stderr)
            allow_unconfined_sandboxes()
        return int(args.func(args) or 0)
    except CadRecodeError as err:
        print(f"cad-recode {verb}: error: {escape_controls(str(err), keep=chr(10))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"cad-recode {args.command}: interrupted", file=sys.stderr)
        return 130

