"""The globals a program runs with, per profile, fresh for every program; and the tamper check.

Every program gets a new globals dict, a new builtins table, read-only views of
``cadquery`` and ``math`` (:class:`~cad_recode.geometry.profiles.ReadOnlyModule`)
and an ``__import__`` that hands out only its profile's modules. The views are
built once per process (they hold only references) and cannot be modified.

A strict worker serves several programs, so after each it checks that nothing
it shares with the next program was changed (:class:`TamperCheck`: the class
dictionaries of cadquery's classes, the real ``math`` and ``builtins`` modules);
a change fails the program and retires the worker. ``cadquery``-profile programs
run one per process, so nothing they change can outlive them.
"""

from __future__ import annotations

import builtins
import math

from cad_recode.geometry.profiles import (
    CADQUERY_BUILTIN_NAMES, CADQUERY_MODULES, CADQUERY_SUBMODULES, STRICT_BUILTIN_NAMES, STRICT_CADQUERY_NAMES,
    Profile, ReadOnlyModule, builtins_table, read_only_copy,
)


class ShownObjects(list):
    """What ``show_object`` collected, in call order (the result when not empty)."""


def _no_print(*args, **kwargs) -> None:
    """``print``/``debug``/``log`` for programs: output goes nowhere."""


_views: dict[str, ReadOnlyModule] = {}


def _view(name: str) -> ReadOnlyModule:
    """A read-only view of module ``name`` as a program sees it (built once)."""
    if name not in _views:
        import cadquery

        if name == "math":
            _views[name] = read_only_copy(math)
        elif name == "cadquery/strict":
            _views[name] = read_only_copy(cadquery, sorted(STRICT_CADQUERY_NAMES))
        elif name == "cadquery":
            subs = {sub: _view(f"cadquery.{sub}") for sub in CADQUERY_SUBMODULES}
            _views[name] = read_only_copy(cadquery, extra=subs)
        else:  # cadquery.<submodule>, as the package exposes it (cadquery.exporters is occ_impl.exporters)
            import importlib

            sub = name.partition(".")[2]
            module = getattr(cadquery, sub, None) or importlib.import_module(name)
            _views[name] = read_only_copy(module)
    return _views[name]


def _strict_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name == "math":
        return _view("math")
    if level == 0 and name == "cadquery":
        return _view("cadquery/strict")
    raise ImportError(f"import of '{name}' is not allowed (only cadquery and math)")


def _cadquery_import(name, globals=None, locals=None, fromlist=(), level=0):
    top, _, rest = name.partition(".")
    if level != 0 or top not in CADQUERY_MODULES or (rest and (top != "cadquery" or rest not in CADQUERY_SUBMODULES)):
        raise ImportError(f"import of '{name}' is not allowed in the sandbox")
    if top == "math":
        return _view("math")
    if top == "cadquery":
        return _view(name) if (rest and fromlist) else _view("cadquery")
    import importlib

    module = importlib.import_module(name)  # one process per program: nothing it changes survives
    return module


def program_globals(profile: Profile) -> dict:
    """Fresh globals for one program of ``profile``."""
    if profile is Profile.STRICT:
        table = builtins_table(STRICT_BUILTIN_NAMES)
        table.update(print=_no_print, __import__=_strict_import)
        return {"__builtins__": table, "__name__": "__program__"}
    shown = ShownObjects()

    def show_object(obj, name=None, options=None, **kwargs):
        shown.append(obj)

    table = builtins_table(CADQUERY_BUILTIN_NAMES)
    table.update(print=_no_print, __import__=_cadquery_import)
    return {"__builtins__": table, "__name__": "__main__", "show_object": show_object, "debug": _no_print,
            "log": _no_print, "__shown__": shown}


def warm_views() -> None:
    """Build every view now (in the zygote, so workers share them)."""
    for name in ("math", "cadquery/strict", "cadquery"):
        _view(name)


class TamperCheck:
    """Fingerprints of what programs share within a worker; :meth:`changed` names the first difference."""

    def __init__(self):
        import cadquery

        self.targets: dict[str, object] = {"math": math, "builtins": builtins}
        for name in dir(cadquery):
            value = getattr(cadquery, name)
            if isinstance(value, type):
                for klass in value.__mro__[:-1]:  # not object
                    self.targets.setdefault(f"cadquery.{klass.__qualname__}", klass)
        self.prints = {name: self._fingerprint(t) for name, t in self.targets.items()}

    @staticmethod
    def _fingerprint(target) -> dict:
        return {key: id(value) for key, value in vars(target).items()}

    def changed(self) -> str:
        """'' when nothing changed, else 'cadquery.Shape.Volume' (the first changed attribute)."""
        for name, target in self.targets.items():
            now = self._fingerprint(target)
            if now != self.prints[name]:
                keys = sorted(k for k in set(now) | set(self.prints[name]) if now.get(k) != self.prints[name].get(k))
                return f"{name}.{keys[0] if keys else '?'}"
        return ""
