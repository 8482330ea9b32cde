"""Flag conventions shared by every verb.

One spelling everywhere: ``--output`` names a file, ``--output_dir`` a folder.
An older spelling keeps working for one release, with a one-line notice.
"""

from __future__ import annotations

import argparse
import sys


class DeprecatedFlag(argparse.Action):
    """Stores into the new flag's destination and says, once, which spelling to use."""

    def __init__(self, option_strings, dest, replacement: str, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is deprecated and will be removed in the next release; "
              f"use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_output_flag(parser: argparse.ArgumentParser, *, folder: bool, old: str | None = None, **kwargs) -> None:
    """``--output_dir`` (a folder) or ``--output`` (a file), plus ``old`` as a deprecated spelling."""
    flag = "--output_dir" if folder else "--output"
    dest = flag.removeprefix("--")
    parser.add_argument(flag, dest=dest, **kwargs)
    if old:
        parser.add_argument(old, dest=dest, action=DeprecatedFlag, replacement=flag, type=kwargs.get("type"),
                            metavar=kwargs.get("metavar"), help=argparse.SUPPRESS)


UNSAFE_HELP = ("run programs without the OS sandbox (bubblewrap, Landlock, seccomp). UNSAFE: a hostile program "
               "can read and write your files and reach the network; only for programs you wrote")
PROFILE_HELP = ("what programs may use: strict = the model's CAD-Recode language; cadquery = ordinary CadQuery "
                "(loops, functions, show_object, math/numpy/typing imports). Default: {default}")


def add_sandbox_flags(parser: argparse.ArgumentParser, *, profile_default: str | None = None) -> None:
    """``--unsafe_no_os_sandbox`` on every verb that runs programs; ``--profile`` where the user chooses it."""
    parser.add_argument("--unsafe_no_os_sandbox", action="store_true", help=UNSAFE_HELP)
    if profile_default is not None:
        parser.add_argument("--profile", choices=("strict", "cadquery"), default=profile_default,
                            help=PROFILE_HELP.format(default=profile_default))


def required_output_dir(args: argparse.Namespace):
    """The verb's --output_dir, which it cannot run without."""
    if args.output_dir is None:
        from cad_recode.errors import UsageError

        raise UsageError("--output_dir DIR is required (where the results go)")
    return args.output_dir
