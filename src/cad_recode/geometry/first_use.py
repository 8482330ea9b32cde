"""What cadquery computes on the first use of a class or method, done once in the zygote; then no text annotation
is evaluated again.

Workers are forked from the zygote, and the tamper check compares cadquery's classes and methods with how they
were at warm-up. What cadquery (or Python for it) caches on first use must therefore be in place before the
fingerprints, or the first program that uses it is failed as one that "modified the sandbox":

- cadquery's multimethods register a method whose hints name a class not yet defined as *pending*, and
  resolve it on its first call, rewriting the multimethod (``Face.trim.__doc__``): :func:`resolve_cadquery_dispatch`;
- ``copy.copy`` stores a class's slot names on the class the first time it copies one of its objects
  (``Workplane.__slotnames__``, from ``workplaneFromTagged``): :func:`cache_slot_names`.

Text annotations. ``typing.get_type_hints`` turns an annotation that is a string into code and runs it with
``eval``. When the globals it picks hold no ``__builtins__`` (an object that is not a function or class gets
``{}``), ``eval`` hands the code the interpreter's real builtins, ``__import__`` included. Programs reach
``get_type_hints`` through ``functools.singledispatch``'s ``register``, cadquery's multimethods (``register``,
and the instance check of a ``Callable`` parameter) and ``typing`` itself, and they can build such an object
without writing an annotation (``type("C", (), {"__annotations__": {...}})``); dropping annotations from the
program's source does not stop that. Once cadquery's own are resolved, none needs evaluating, so
:func:`refuse_text_annotations` makes evaluating one raise ``NameError`` with :data:`REFUSAL` in the zygote
and every worker it forks. multimethod treats a ``NameError`` as "not yet resolvable"; ``singledispatch``
and ``get_type_hints`` pass it to the program, which fails with that message.
"""

from __future__ import annotations

import sys
import typing

REFUSAL = "annotations written as text are not evaluated in the sandbox"
_EVALUATORS = ("_evaluate", "evaluate")  # ForwardRef's evaluating method: the first up to 3.13, the second in 3.14


def _cadquery_values():
    """Every value in cadquery's loaded modules, and every member of the classes among them."""
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "cadquery" or name.startswith("cadquery.")):
            continue
        for value in list(vars(module).values()):
            yield value
            if isinstance(value, type):
                yield from list(vars(value).values())


def cadquery_dispatchers() -> list:
    """Every multimethod (and multidispatch) in cadquery's loaded modules and their classes."""
    from multimethod import multimethod

    found: dict[int, multimethod] = {}
    for value in _cadquery_values():
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if isinstance(value, multimethod):
            found.setdefault(id(value), value)
    return list(found.values())


def resolve_cadquery_dispatch() -> list[str]:
    """Resolve every pending forward reference of cadquery's multimethods now; return those that stay pending.

    One that stays (a hint naming a type an optional dependency would bring) is not an error here: only its
    own method, which could not have been called anyway, then fails in a program; the sandbox still starts.
    """
    unresolved = []
    for dispatcher in cadquery_dispatchers():
        dispatcher.evaluate()
        unresolved += [f"{dispatcher.__qualname__}: {f.__qualname__}" for f in dispatcher.pending]
    return unresolved


def cache_slot_names() -> None:
    """Store every cadquery class's slot names on it now, as ``copy.copy`` would on its first copy of one."""
    import copyreg

    for value in _cadquery_values():
        if isinstance(value, type) and value.__module__.startswith("cadquery"):
            for klass in value.__mro__[:-1]:
                copyreg._slotnames(klass)  # what copy's reduce protocol calls; it sets __slotnames__


def _refuse(self, *args, **kwargs):
    raise NameError(f"{REFUSAL} ({self.__forward_arg__!r})")


def refuse_text_annotations() -> None:
    """From now on, in this process, evaluating an annotation written as text raises ``NameError``.

    Raises ``RuntimeError`` when this Python's ``typing.ForwardRef`` has no method known to evaluate: the
    sandbox must not start with an evaluator it did not replace.
    """
    replaced = [name for name in _EVALUATORS if callable(getattr(typing.ForwardRef, name, None))]
    if not replaced:
        raise RuntimeError(f"typing.ForwardRef has none of {_EVALUATORS} on Python {sys.version.split()[0]}; "
                           "the sandbox does not know how this Python evaluates annotations written as text")
    for name in replaced:
        setattr(typing.ForwardRef, name, _refuse)
