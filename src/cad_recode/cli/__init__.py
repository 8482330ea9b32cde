"""``cad-recode`` command line: argument parsing only.

Each verb group lives in its own module with a ``register(subparsers)``
function that adds its parsers and sets ``func`` to a handler taking the
parsed arguments. Handlers call into the library; they hold no logic of
their own beyond turning flags into arguments.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cad_recode import __version__
from cad_recode.errors import CadRecodeError

# Verb groups, imported lazily so that `cad-recode exec` never pays for torch.
_COMMAND_MODULES = ("geometry", "data", "train", "infer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cad-recode",
        description="Reverse-engineer CAD: point cloud or mesh in, CadQuery program out.",
    )
    parser.add_argument("--version", action="version", version=f"cad-recode {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"cad_recode.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CadRecodeError as err:
        print(f"cad-recode {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"cad-recode {args.command}: interrupted", file=sys.stderr)
        return 130

