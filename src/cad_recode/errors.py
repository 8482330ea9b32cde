"""Expected errors: the CLI prints them as one line and exits with their code.

Anything raised as a CadRecodeError is a mistake the user can fix (a bad file,
a bad flag, a bad config). It carries a message that says what, where and how
to fix it, and the CLI shows it without a traceback.
"""

import unicodedata


def escape_controls(text: str, keep: str = "") -> str:
    """``text`` with control and format characters (all but those in ``keep``) shown as ``\\xNN``.

    Messages reach terminals and web pages, and they quote file names and programs that someone else
    may have chosen: raw escape sequences (``\\x1b[``, ``\\x9b``, ``\\r``), a newline that starts a fake
    line, or bidi overrides could forge or hide output.
    """
    out = []
    for char in str(text):
        if char not in keep and unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)


class CadRecodeError(Exception):
    """Base class of the errors a user can fix. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(CadRecodeError):
    """A bad flag, config key, or value: exit code 2, like argparse."""

    exit_code = 2


class InputError(CadRecodeError):
    """A bad input file (point cloud, mesh, program, dataset, checkpoint)."""

    exit_code = 2


class ProgramFailed(InputError):
    """A CadQuery program that was rejected, failed or built no valid solid: exit code 1.

    The program, not the command line, is at fault, so scripts can tell the two apart.
    """

    exit_code = 1


def unreadable(path, what: str, exc: BaseException) -> InputError:
    """The InputError for a file at ``path`` that its reader could not parse as ``what``."""
    detail = " ".join(str(exc).split())[:120] or type(exc).__name__
    if isinstance(exc, ImportError):  # a reader's optional fallback is missing: not what is wrong with the file
        detail = "not a valid file of this type"
    return InputError(f"{path}: could not be read as {what} ({detail}); check the file is not truncated or garbled")


def unexpected(where, exc: Exception) -> InputError:
    """The InputError for an input that failed in a way no check foresaw: where a batch records it and goes on to
    the next input, instead of losing the rest of the batch to one traceback."""
    detail = " ".join(str(exc).split())[:200]
    return InputError(f"{where}: failed unexpectedly ({type(exc).__name__}{': ' + detail if detail else ''}); "
                      "this is a bug: please report it with the file")
