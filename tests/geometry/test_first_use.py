"""What the zygote does before its fingerprints: cadquery's first-use caches filled, text annotations refused."""

from __future__ import annotations

import subprocess
import sys

import cadquery as cq

from cad_recode.geometry.first_use import (
    REFUSAL, cache_slot_names, cadquery_dispatchers, resolve_cadquery_dispatch,
)


def test_every_cadquery_multimethod_is_resolved_and_every_class_has_its_slot_names():
    dispatchers = cadquery_dispatchers()
    assert any(d is vars(cq.Face)["trim"] for d in dispatchers)  # a method in a class
    assert any(d is vars(cq.Solid)["extrudeLinear"].__func__ for d in dispatchers)  # a classmethod's
    assert resolve_cadquery_dispatch() == [] and not any(d.pending for d in dispatchers)
    cache_slot_names()
    assert "__slotnames__" in vars(cq.Workplane) and "__slotnames__" in vars(cq.Sketch)


def test_refused_text_annotations_raise_while_real_ones_still_resolve():
    """In a process of its own: refusing patches typing for the whole process."""
    code = (
        "import typing\nfrom cad_recode.geometry.first_use import refuse_text_annotations\n"
        "def real(x: int) -> float: ...\n"
        "def text(x: 'int'): ...\n"
        "refuse_text_annotations()\n"
        "assert typing.get_type_hints(real) == {'x': int, 'return': float}\n"
        "try:\n    typing.get_type_hints(text)\nexcept NameError as err:\n    print(err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{REFUSAL} ('int')"
