"""What a program may touch, per profile: allowlists for the static check and the namespaces a worker hands out.

Two profiles share one OS boundary (see :mod:`cad_recode.geometry.confinement`):

``strict``
    The program language the model writes (CAD-Recode style). Straight-line code,
    imports of ``cadquery`` and ``math`` only, and an *allowlist* of cadquery
    classes, methods and keywords: those the data generator emits
    (:mod:`cad_recode.data.generator`) plus the forms seen in public CAD-Recode
    v1.5 programs (``reset().face(sketch, mode='s')``, 2- and 3-point ``arc``,
    ``assemble()`` with or without ``close()``, ``circle(a).circle(b, mode='s')``,
    ``union``/``cut``/``intersect``, ``workplane(offset=)``, ``moveTo``,
    ``transformed``, ``rotate``, ``translate``). No attribute or item assignment,
    no f-strings, no ``hash``/``repr``/``id`` (they leak addresses). Default for
    model outputs and dataset preparation.
``cadquery``
    Ordinary CadQuery as people write it: loops, functions, classes, lambdas,
    ``try``, ``show_object``/``debug``/``log``, imports of ``math``, ``numpy``,
    ``random``, ``itertools``, ``functools``, ``operator``, ``collections`` and of
    ``cadquery`` (its public names plus ``selectors``, ``exporters`` and ``func``), and the
    submodules of :data:`VIEW_SUBMODULES` (``numpy.linalg``, ``collections.abc``, ...).
    Its Python-level rules shut the doors to the interpreter that reviews found (no
    ``_``-prefixed attributes, no ``exec``/``eval``/``open``/``getattr``, none of the
    library functions that read an attribute by its name or run a string, no ``wrapped``
    or ``toOCC``, VTK, ``fontPath`` or file readers), but ordinary Python has more (a
    numpy object array over raw memory): they are a fence. The OS layer bounds what
    such a program reaches, and measuring its shape in a second process bounds what it
    can claim (:mod:`cad_recode.geometry.sandbox`).
    Default for ``exec``, ``compare``, ground-truth programs and programs edited in
    the web app.

No profile hands out a real module: programs get read-only copies of a module's
public names (:class:`ReadOnlyModule`), with the submodules of
:data:`VIEW_SUBMODULES` as copies of their own and the names of :data:`WITHHELD_NAMES`
left out. So ``numpy.testing.runstring`` (it runs a string with the real builtins),
``random._os`` and ``from cadquery import occ_impl`` are not there to reach.
"""

from __future__ import annotations

import builtins
import math
import types
from enum import Enum


class Profile(str, Enum):
    STRICT = "strict"
    CADQUERY = "cadquery"


DEFAULT_PROFILE = Profile.STRICT
"""The profile of a :class:`~cad_recode.geometry.sandbox.Sandbox` when none is given (model outputs)."""
PROFILE_NAMES = tuple(p.value for p in Profile)


PROTOCOL_TIMEOUT = 3.0
"""Seconds a program may run under the evaluation protocol: the model's programs, generated data."""
USER_PROGRAM_TIMEOUT = 30.0
"""Seconds a part someone wrote may run (a ground truth, ``exec``): it can take longer than the model's
programs (a flange with 24 holes, 12 ribs and fillets: 7 s on 2 cores)."""


def default_timeout(profile: Profile | str) -> float:
    """:data:`PROTOCOL_TIMEOUT` for ``strict`` programs, :data:`USER_PROGRAM_TIMEOUT` for ``cadquery`` ones."""
    return PROTOCOL_TIMEOUT if as_profile(profile) is Profile.STRICT else USER_PROGRAM_TIMEOUT


def min_faces(profile: Profile | str) -> int:
    """The fewest B-rep faces a valid solid has under ``profile``.

    ``strict`` programs (the model's, and generated data) are judged by the evaluation protocol: more than
    2 faces. A ``cadquery`` program is a part someone wrote, which may be a ball (1 face) or a cone (2).
    """
    return 3 if as_profile(profile) is Profile.STRICT else 1


def as_profile(value: Profile | str) -> Profile:
    """``value`` as a :class:`Profile`; ``ValueError`` naming the choices otherwise."""
    try:
        return Profile(value)
    except ValueError:
        raise ValueError(f"unknown sandbox profile {value!r}; choose one of {', '.join(PROFILE_NAMES)}") from None


# ----------------------------------------------------------------------------- strict allowlists

STRICT_CADQUERY_NAMES = frozenset({"Workplane", "Sketch", "Vector", "Location"})
"""The cadquery classes a strict program may name (``cq.Workplane``, ``from cadquery import Sketch``)."""

STRICT_ATTRIBUTES = STRICT_CADQUERY_NAMES | frozenset({
    # sketches (generator output and public CAD-Recode forms)
    "sketch", "segment", "arc", "circle", "rect", "push", "close", "assemble", "finalize", "reset",
    "face", "edges", "vertices", "fillet", "chamfer", "slot", "polygon", "regularPolygon", "trapezoid",
    "ellipse", "clean",
    # workplanes and solids
    "workplane", "moveTo", "move", "lineTo", "line", "hLine", "vLine", "polyline", "threePointArc",
    "radiusArc", "center", "transformed", "extrude", "revolve", "box", "cylinder", "sphere", "hole",
    "union", "cut", "intersect", "rotate", "translate", "mirror", "faces", "rarray", "polarArray",
    "pushPoints",
    # what inference appends to restore input units (trusted line, same language): Workplane/Shape methods
    "newObject", "findSolid", "scale",
})
"""Every attribute name a strict program may read. Nothing else: no ``wrapped``, ``toVtkPolyData``, ``val``, ..."""

STRICT_KEYWORDS = frozenset({
    "mode", "origin", "offset", "centered", "combine", "clean", "both", "angle", "tag", "forConstruction",
    "invert", "rotate", "taper", "axisStart", "axisEnd", "angleDegrees", "xDir", "normal",
})
"""Keyword argument names a strict program may pass (``fontPath`` and friends are not among them)."""

STRICT_MATH_NAMES = frozenset(n for n in dir(math) if not n.startswith("_"))

STRICT_BUILTIN_NAMES = (
    "abs", "min", "max", "round", "range", "len", "sum", "int", "float", "bool", "list", "tuple", "dict",
    "zip", "enumerate", "pow", "divmod", "sorted", "reversed", "any", "all", "print", "True", "False", "None",
)

# ----------------------------------------------------------------------------- cadquery profile lists

# typing: scripts import names for their hints; none evaluates text (cad_recode.geometry.first_use).
# Not dataclasses: it builds __init__ as source text from field names, which a class made with type() chooses
# freely.
CADQUERY_MODULES = ("cadquery", "math", "numpy", "random", "itertools", "functools", "operator", "collections",
                    "typing", "copy", "__future__")
"""Top-level modules a ``cadquery``-profile program may import (their submodules: :data:`VIEW_SUBMODULES`)."""

VIEW_SUBMODULES = {
    "cadquery": ("selectors", "exporters", "func"),
    "numpy": ("linalg", "random", "fft", "polynomial"),  # not testing (runstring), f2py, lib, ctypeslib
    "collections": ("abc",),
}
"""The submodules a module's view holds (as views of their own), and the only ones a program may
import (``from numpy.linalg import norm``); a view holds no other module."""

WITHHELD_NAMES = {
    # each reads or writes an attribute named by a string, which the static check cannot see
    "operator": frozenset({"attrgetter", "methodcaller"}),
    "functools": frozenset({"update_wrapper", "wraps"}),
    # numpy's test() runs pytest on whatever test file a program wrote into its scratch directory
    **{name: frozenset({"test"})
       for name in ("numpy", "numpy.linalg", "numpy.random", "numpy.fft", "numpy.polynomial")},
}
"""Public names left out of a module's view."""

CADQUERY_BUILTIN_NAMES = STRICT_BUILTIN_NAMES + (
    "str", "repr", "set", "frozenset", "map", "filter", "isinstance", "issubclass", "slice", "chr", "ord",
    "complex", "hasattr", "iter", "next", "callable", "print", "object", "super", "property",
    "staticmethod", "classmethod", "type", "NotImplemented", "Ellipsis", "bytes", "bin", "hex", "oct",
    "ascii", "id",
    "BaseException", "Exception", "ValueError", "TypeError", "ZeroDivisionError", "IndexError", "KeyError",
    "AttributeError", "NameError", "ArithmeticError", "RuntimeError", "StopIteration", "AssertionError",
    "NotImplementedError", "LookupError", "OverflowError", "ImportError", "OSError",
    "__build_class__",
)

FORBIDDEN_NAMES = frozenset({
    "exec", "eval", "open", "compile", "getattr", "setattr", "delattr", "globals", "locals", "vars",
    "dir", "input", "breakpoint", "exit", "quit", "help", "memoryview", "copyright", "credits", "license",
    "format", "__import__", "__builtins__", "__loader__", "__spec__",
})
"""Names no profile may use: they reach the interpreter, files, or attributes by string."""

CADQUERY_FORBIDDEN_ATTRIBUTES = frozenset({
    "wrapped", "toOCC", "attrgetter", "methodcaller", "update_wrapper", "wraps", "runstring", "rundocs",
    "toVtkPolyData", "toVtk", "vtk", "tofile", "fromfile", "ctypes", "ctypeslib", "mro",
    "format", "format_map", "system", "popen", "fontPath", "memmap", "DataSource", "lib", "genfromtxt",
    "fromregex",
})
"""Attributes a ``cadquery``-profile program may not read, on top of ``_``-names, frames and file readers."""

FORBIDDEN_KEYWORDS = frozenset({"fontPath"})


# ----------------------------------------------------------------------------- read-only modules


class ReadOnlyModule(types.ModuleType):
    """A module object whose attributes cannot be set or deleted: what ``import math`` gives a program.

    A module (not a plain object) so that ``from m import *`` and ``dir(m)`` work as usual. Its
    ``__name__`` is not the module's: ``from m import x``, when the view lacks ``x``, falls back to
    ``sys.modules["<__name__>.x"]``, which would hand out the real submodule ``m.x``.
    """

    def __init__(self, name: str, items: dict):
        super().__init__(f"{name} (sandbox view)")
        super().__setattr__("_shown_name", name)
        for key, value in items.items():
            super().__setattr__(key, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"module '{self._shown_name}' is read-only in the sandbox")

    def __delattr__(self, name):
        raise AttributeError(f"module '{self._shown_name}' is read-only in the sandbox")

    def __getattr__(self, name: str):  # only called for names the module lacks
        raise AttributeError(f"{self._shown_name}.{name} is not available in the sandbox")


def read_only_copy(module: types.ModuleType, names=None, extra: dict | None = None) -> ReadOnlyModule:
    """A :class:`ReadOnlyModule` holding ``module``'s public non-module names (or just ``names``),
    less its :data:`WITHHELD_NAMES`, plus ``extra``."""
    withheld = WITHHELD_NAMES.get(module.__name__, frozenset())
    chosen = names if names is not None else [n for n in dir(module) if not n.startswith("_")]
    items = {n: getattr(module, n) for n in chosen if n not in withheld and hasattr(module, n)}
    items = {n: v for n, v in items.items() if not isinstance(v, types.ModuleType)}
    items.update(extra or {})
    return ReadOnlyModule(module.__name__, items)


def builtins_table(names) -> dict:
    """The ``__builtins__`` dict a program runs with: only ``names`` (those this Python has)."""
    return {n: getattr(builtins, n) for n in names if hasattr(builtins, n)}
