"""The globals a program runs with, per profile, fresh for every program; and the tamper check.

Every program gets a new globals dict, a new builtins table and an ``__import__``
that hands out only its profile's modules, each as a read-only view
(:class:`~cad_recode.geometry.profiles.ReadOnlyModule`: public names, no real
module inside). The views are built once per process (they hold only references)
and cannot be modified.

After each program, before its shape is measured, the worker checks that nothing
the measuring code or the next program relies on was changed (:class:`TamperCheck`:
the class dictionaries of cadquery's classes and the attributes of their methods
and multimethods, the real ``math`` and ``builtins`` modules, and for the ``cadquery``
profile OCCT's classes too); a change fails the program and retires the worker. After
each program the multimethods' entries are put back as they were at warm-up.
``cadquery``-profile programs run one per process, so nothing they change can outlive them, and their shapes are measured in another
(see :mod:`cad_recode.geometry.sandbox`); the check is kept for them as a second
line: a program that patched ``Shape.Volume`` or ``gp_Pnt.XYZ`` fails outright.
"""

from __future__ import annotations

import builtins
import math
import types

from cad_recode.geometry.profiles import (
    CADQUERY_BUILTIN_NAMES, CADQUERY_MODULES, STRICT_BUILTIN_NAMES, STRICT_CADQUERY_NAMES,
    VIEW_SUBMODULES, Profile, ReadOnlyModule, builtins_table, read_only_copy,
)


class ShownObjects(list):
    """What ``show_object`` collected, in call order (the result when not empty)."""


def _no_print(*args, **kwargs) -> None:
    """``print``/``debug``/``log`` for programs: output goes nowhere."""


_views: dict[str, ReadOnlyModule] = {}


def _view(name: str) -> ReadOnlyModule:
    """A read-only view of module ``name`` as a program sees it (built once)."""
    if name not in _views:
        import importlib

        if name == "cadquery/strict":
            _views[name] = read_only_copy(importlib.import_module("cadquery"), sorted(STRICT_CADQUERY_NAMES))
        else:
            parent, _, sub = name.rpartition(".")
            # a submodule as its package exposes it (cadquery.exporters is occ_impl.exporters)
            module = getattr(importlib.import_module(parent), sub, None) if parent else None
            module = module or importlib.import_module(name)
            subs = {s: _view(f"{name}.{s}") for s in VIEW_SUBMODULES.get(name, ())}
            _views[name] = read_only_copy(module, extra=subs)
    return _views[name]


def _strict_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name == "math":
        return _view("math")
    if level == 0 and name == "cadquery":
        return _view("cadquery/strict")
    raise ImportError(f"import of '{name}' is not allowed (only cadquery and math)")


def _cadquery_import(name, globals=None, locals=None, fromlist=(), level=0):
    top, _, rest = name.partition(".")
    if level != 0 or top not in CADQUERY_MODULES or (rest and rest not in VIEW_SUBMODULES.get(top, ())):
        raise ImportError(f"import of '{name}' is not allowed in the sandbox")
    return _view(name) if (rest and fromlist) else _view(top)


def program_globals(profile: Profile, module_name: str = "__main__") -> dict:
    """Fresh globals for one program of ``profile`` (a ``cadquery``-profile program's ``__name__``: ``module_name``)."""
    if profile is Profile.STRICT:
        table = builtins_table(STRICT_BUILTIN_NAMES)
        table.update(print=_no_print, __import__=_strict_import)
        return {"__builtins__": table, "__name__": "__program__"}
    shown = ShownObjects()

    def show_object(obj, name=None, options=None, **kwargs):
        shown.append(obj)

    table = builtins_table(CADQUERY_BUILTIN_NAMES)
    table.update(print=_no_print, __import__=_cadquery_import)
    return {"__builtins__": table, "__name__": module_name, "show_object": show_object, "debug": _no_print,
            "log": _no_print, "__shown__": shown}


def warm_views() -> None:
    """Build every view now (in the zygote, so workers share them)."""
    for name in ("cadquery/strict", *CADQUERY_MODULES):
        _view(name)


OCCT_MODULES = ("gp", "TopoDS", "TopLoc", "TopAbs", "TopExp", "TopTools", "Bnd", "BRepBndLib", "Poly", "BRep",
                "BRepCheck", "GProp", "BRepGProp", "BRepMesh", "BRepAlgoAPI", "BRepBuilderAPI", "BRepTools",
                "BOPAlgo", "ShapeFix", "ShapeUpgrade", "StlAPI", "STEPControl", "IFSelect", "Interface",
                "TColgp", "TColStd")
"""OCP modules whose classes measuring and exporting a shape call from Python. A ``cadquery``-profile
program can reach some of them (``type(v.toPnt())`` is ``gp_Pnt``) and patch their methods."""


class TamperCheck:
    """Fingerprints of what programs share within a worker; :meth:`changed` names the first difference."""

    def __init__(self):
        import importlib

        import cadquery

        self.targets: dict[str, object] = {"math": math, "builtins": builtins}
        for name in dir(cadquery):
            value = getattr(cadquery, name)
            if isinstance(value, type):
                for klass in value.__mro__[:-1]:  # not object
                    self.targets.setdefault(f"cadquery.{klass.__qualname__}", klass)
        self.occt_targets: dict[str, object] = {}
        for module_name in OCCT_MODULES:
            module = importlib.import_module(f"OCP.{module_name}")
            for name in dir(module):
                value = getattr(module, name)
                if isinstance(value, type):
                    self.occt_targets.setdefault(f"OCP.{module_name}.{name}", value)
        self.prints = {name: self._fingerprint(t) for name, t in {**self.targets, **self.occt_targets}.items()}
        # cadquery's multimethods (Sketch.segment, Shape.move, ...) are dicts that every program of a worker
        # shares. Dispatch caches its answers in them, and a program can add entries too, whose keys may
        # hold any object (cq.Sketch.segment[(tuple[(big,)], ...)] kept 500 MB for every later program).
        # Their own attributes are fingerprinted; their entries are put back after each program.
        from multimethod import multimethod

        self.dispatchers = self._class_members(multimethod)
        self.dispatcher_entries = {name: dict(mm) for name, mm in self.dispatchers.items()}
        # A method read from its class is a plain function that takes any `self`: cq.Sketch.push(cq.Sketch.rect,
        # [...]) stored a 250 MB list as an attribute of the function `rect`, shared like the class itself.
        methods = self._class_members(types.FunctionType)
        # almost all have no attributes: those are checked together, in C, for staying so (0.05 ms, not 1 ms)
        self.bare_methods = [f for f in methods.values() if not vars(f)]
        self.dressed_methods = {name: f for name, f in methods.items() if vars(f)}
        self.prints.update({name: self._fingerprint(target) for name, target in {**self.dispatchers,
                                                                                 **self.dressed_methods}.items()})

    def _class_members(self, kind: type) -> dict[str, object]:
        """Every ``kind`` in the class dictionaries of cadquery's classes, by 'cadquery.Class.name'."""
        return {f"{name}.{key}": value for name, klass in self.targets.items() if isinstance(klass, type)
                for key, value in vars(klass).items() if isinstance(value, kind)}

    @staticmethod
    def _fingerprint(target) -> dict:
        return {key: id(value) for key, value in vars(target).items()}

    def restore_dispatchers(self) -> None:
        """Put every multimethod's entries back as they were at warm-up (registered methods and cache)."""
        for name, mm in self.dispatchers.items():
            dict.clear(mm)
            dict.update(mm, self.dispatcher_entries[name])

    def changed(self, occt: bool = False) -> str:
        """'' when nothing changed, else 'cadquery.Shape.Volume' (the first changed attribute).

        ``occt``: check OCCT's classes too (about 6 ms): for the ``cadquery`` profile, whose programs
        can reach them; a strict program names no attribute that leads to one.
        """
        if any(map(vars, self.bare_methods)):
            dressed = next(f for f in self.bare_methods if vars(f))
            return f"{dressed.__module__}.{dressed.__qualname__}.{next(iter(vars(dressed)))}"
        targets = {**self.targets, **self.dispatchers, **self.dressed_methods, **(self.occt_targets if occt else {})}
        for name, target in targets.items():
            now = self._fingerprint(target)
            if now != self.prints[name]:
                keys = sorted(k for k in set(now) | set(self.prints[name]) if now.get(k) != self.prints[name].get(k))
                return f"{name}.{keys[0] if keys else '?'}"
        return ""
