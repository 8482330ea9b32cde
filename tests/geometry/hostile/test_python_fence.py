"""The ``cadquery`` profile's Python fence: routes past it that a red-team review found, now closed.

Each route used to hand a checked program the real ``os``/``sys`` (and with them the worker's
channel), or let its own objects answer the measuring code's questions. The OS layer held either
way; these tests hold the Python layer, which is what keeps a program from forging its result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cad_recode.geometry.sandbox_frames import ProtocolViolation, parse_result  # noqa: E402
from hostile_common import assert_contained  # noqa: E402

# Each reached os/sys through the program's own imports, with the static check on.
CLOSED_ROUTES = {
    # numpy.testing.runstring runs a string with the real builtins
    "numpy_runstring": ("import numpy as np\nns = {}\nnp.testing.runstring('import os', ns)\n",
                        "rejected", "attribute 'runstring' is not allowed"),
    # `from m import x` falls back to sys.modules['m.x'] when the view lacks x
    "from_numpy_import_testing": ("from numpy import testing\n", "error", "cannot import name 'testing'"),
    "from_cadquery_import_occ_impl": ("from cadquery import occ_impl\nx = occ_impl.exporters\n", "error",
                                      "cannot import name 'occ_impl'"),
    # reading an attribute by its name, which the static check cannot see
    "operator_attrgetter": ("import operator, random\nos = operator.attrgetter('_os')(random)\n",
                            "rejected", "attribute 'attrgetter' is not allowed"),
    "operator_methodcaller": ("from operator import methodcaller\n", "rejected",
                              "attribute 'methodcaller' is not allowed"),
    "functools_update_wrapper": ("import functools, random\nfunctools.update_wrapper(print, random, assigned=('_os',))\n",
                                 "rejected", "attribute 'update_wrapper' is not allowed"),
    # the OCCT handle, from which OCCT's own classes (and their methods) are one type() away
    "to_occ": ("import cadquery as cq\nh = cq.Workplane().box(1, 1, 1).val().toOCC()\n", "rejected",
               "attribute 'toOCC' is not allowed"),
}

# The same routes with the static check off: the module views themselves do not hold them.
UNCHECKED_ROUTES = {
    "numpy_testing": ("import numpy as np\nx = np.testing\n", "numpy.testing is not available in the sandbox"),
    "random_os": ("import random\nx = random._os\n", "random._os is not available in the sandbox"),
    "attrgetter": ("import operator\nx = operator.attrgetter\n", "operator.attrgetter is not available"),
    "update_wrapper": ("import functools\nx = functools.update_wrapper\n", "functools.update_wrapper is not available"),
    "wraps": ("from functools import wraps\n", "cannot import name 'wraps'"),
    # runs pytest on a test file the program wrote into its scratch directory
    "numpy_test": ("import numpy as np\nx = np.linalg.test\n", "numpy.linalg.test is not available"),
}

# Answers every question the measuring code used to ask it with a consistent unit cube, and is nothing.
FAKE_SOLID = """import cadquery as cq
class Box:
    xmin = ymin = zmin = 0.0
    xmax = ymax = zmax = xlen = ylen = zlen = 1.0
class P:
    def __init__(self, x, y, z):
        self.x, self.y, self.z = x, y, z
class Fake(cq.Solid):
    def __init__(self):
        pass
    def Solids(self):
        return [self]
    def isValid(self):
        return True
    def Faces(self):
        return [1, 2, 3, 4, 5, 6]
    def Volume(self):
        return 1.0
    def Area(self):
        return 6.0
    def BoundingBox(self, tolerance=None):
        return Box()
    def tessellate(self, tolerance, angularTolerance=0.1):
        c = [P(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
        return c, [(0, 2, 1), (1, 2, 3), (4, 5, 6), (5, 7, 6), (0, 1, 4), (1, 5, 4), (2, 6, 3), (3, 6, 7),
                   (0, 4, 2), (2, 4, 6), (1, 3, 5), (3, 7, 5)]
r = Fake()
"""

# A real 1 x 2 x 3 box whose class claims another volume.
LYING_BOX = """import cadquery as cq
class Liar(cq.Solid):
    def Volume(self):
        return 1000.0
    def isValid(self):
        return True
r = Liar.makeBox(1, 2, 3)
"""


@pytest.mark.parametrize("code, status, text", CLOSED_ROUTES.values(), ids=CLOSED_ROUTES.keys())
def test_route_past_the_python_fence_is_closed(pool, marker, code, status, text):
    result = pool.run(code, profile="cadquery")
    assert result.status.value == status, result.reason
    assert text in result.reason
    assert_contained(pool, result, marker)


# typing.get_type_hints, under singledispatch's and cadquery's multimethod's register, evaluates an annotation that is
# text: a literal (a fourth review), a name bound to a string built at run time (a sixth), or text inside a generic.
ESCAPE = ("(o := [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == '_wrap_close'][0]"
          ".__init__.__globals__) and int")
# volume 2: it got out
ESCAPED = "try:\n    o\n    n = 2\nexcept NameError:\n    n = 1\nr = cq.Workplane().box(n, 1, 1)\n"
DISPATCH = ("import functools\nimport cadquery as cq\n@functools.singledispatch\ndef f(x):\n    return 0\n"
            "s = {escape!r}\ndef g(x: {annotation}) -> {annotation}:\n    return 1\n"
            "try:\n    f.register(g)\nexcept TypeError:\n    pass\n")
ANNOTATION_ROUTES = {
    "literal": DISPATCH.format(escape=ESCAPE, annotation=repr(ESCAPE)),
    "name": DISPATCH.format(escape=ESCAPE, annotation="s"),
    "generic": DISPATCH.format(escape=ESCAPE, annotation="list[s]"),
}


@pytest.mark.parametrize("code", ANNOTATION_ROUTES.values(), ids=ANNOTATION_ROUTES.keys())
def test_annotations_are_dropped_so_none_is_evaluated(pool, code):
    result = pool.run(code + ESCAPED, profile="cadquery")
    assert result.ok and result.volume == pytest.approx(1.0), result.reason  # 1: `o` was never bound


# No annotation in the source: an object built with type() carries text annotations, and get_type_hints evaluated
# them with globals {}, that is with the real builtins (a seventh review: `__import__('os')` ran, Landlock held).
BUILT_ANNOTATIONS = (
    "import functools\nimport typing\nimport cadquery as cq\n@functools.singledispatch\ndef f(x):\n    return 0\n"
    "C = type('C', (), {{'__annotations__': {{'x': \"__import__('os') and int\"}}}})\n"
    "try:\n    {evaluate}\n    n = 2\nexcept NameError as err:\n"
    "    n = 1 if 'annotations written as text are not evaluated in the sandbox' in str(err) else 3\n"
    "r = cq.Workplane().box(n, 1, 1)\n"
)
EVALUATORS = {"singledispatch_register": "f.register(C())", "get_type_hints": "typing.get_type_hints(C())",
              "get_type_hints_of_the_class": "typing.get_type_hints(C, globalns={})"}


@pytest.mark.parametrize("evaluate", EVALUATORS.values(), ids=EVALUATORS.keys())
def test_annotations_written_as_text_are_never_evaluated(pool, evaluate):
    result = pool.run(BUILT_ANNOTATIONS.format(evaluate=evaluate), profile="cadquery")
    assert result.ok and result.volume == pytest.approx(1.0), result.reason  # 2: evaluated; 3: another NameError


def test_registering_on_cadquery_s_multimethod_is_tampering_and_evaluates_nothing(pool, marker):
    code = (f"import cadquery as cq\ns = {ESCAPE!r}\ndef g(self, x: s) -> s:\n    return self\n"
            "cq.Sketch.segment.register(g)\n")
    result = pool.run(code + ESCAPED, profile="cadquery")
    assert result.status.value == "error" and "modified the sandbox (cadquery.Sketch.segment" in result.reason
    assert_contained(pool, result, marker)


def test_annotated_scripts_still_run(pool):
    code = ("import cadquery as cq\nclass Size:\n    x: int = 3\n    y: float\nw: float = 2.0\n"
            "def part(d: 'float', h: float = 1.0) -> 'cq.Workplane':\n    return cq.Workplane().box(w, Size.x, d * h)\n"
            "r = part(1.0)\n")
    result = pool.run(code, profile="cadquery")
    assert result.ok and result.volume == pytest.approx(6.0), result.reason


@pytest.mark.parametrize("code, text", UNCHECKED_ROUTES.values(), ids=UNCHECKED_ROUTES.keys())
def test_module_views_hold_without_the_static_check(pool, marker, code, text):
    result = pool.run(code, profile="cadquery", _unchecked=True)
    assert result.status.value == "error", result.reason
    assert text in result.reason
    assert_contained(pool, result, marker)


def test_what_numpy_and_collections_offer_still_works(pool):
    code = ("import cadquery as cq\nimport numpy as np\nfrom numpy import linalg\nimport collections\n"
            "from collections import namedtuple\nfrom collections.abc import Sequence\nimport functools, operator\n"
            "from numpy.linalg import norm\nP = namedtuple('P', 'x y')\n"
            "w = float(np.linalg.norm(np.array([3.0, 4.0])) + linalg.norm([0.0, 1.0]))\n"  # 6
            "h = functools.reduce(operator.add, [1, 1]) * norm([1.0])\n"  # 2
            "d = P(3, 4).x if isinstance([], collections.abc.Sequence) and Sequence else 0\n"  # 3
            "r = cq.Workplane('XY').box(w, h, d + np.random.default_rng(0).integers(1, 2))\n")
    result = pool.run(code, profile="cadquery")
    assert result.ok, result.reason
    assert result.volume == pytest.approx(6 * 2 * 4)


def test_a_fake_solid_is_not_measured_by_its_own_methods(pool, marker):
    result = pool.run(FAKE_SOLID, profile="cadquery")
    assert result.status.value == "invalid", result.reason
    assert "cannot evaluate the shape" in result.reason
    assert_contained(pool, result, marker)


def test_a_subclass_is_measured_as_the_solid_it_holds(pool):
    result = pool.run(LYING_BOX, profile="cadquery")
    assert result.ok, result.reason
    assert result.volume == pytest.approx(6.0)
    assert result.to_trimesh().volume == pytest.approx(6.0, rel=1e-3)


def test_patching_an_occt_class_is_tampering(pool, marker):
    code = ("import cadquery as cq\nP = type(cq.Vector(1, 2, 3).toPnt())\nP.XYZ = P.Coord\n"
            "r = cq.Workplane().box(1, 1, 1)\n")
    result = pool.run(code, profile="cadquery")
    assert result.status.value == "error", result.reason
    assert "modified the sandbox (OCP.gp.gp_Pnt.XYZ)" in result.reason
    assert_contained(pool, result, marker)


def test_patching_cadquery_while_the_shape_is_picked_is_tampering(pool, marker):
    # the property runs when the shape is picked, after the program ended: the check must come later still
    code = ("import cadquery as cq\nclass S(cq.Solid):\n    def get(self):\n"
            "        cq.Shape.Volume = lambda self: 1000.0\n        return self.h\n"
            "    def put(self, value):\n        self.h = value\n    wrapped = property(get, put)\n"
            "r = S.makeBox(1, 2, 3)\n")
    result = pool.run(code, profile="cadquery")
    assert result.status.value == "error", result.reason
    assert "modified the sandbox (cadquery.Shape.Volume)" in result.reason
    assert_contained(pool, result, marker)


def _ok_header(**changes) -> dict:
    header = {"kind": "result", "token": "t", "status": "ok", "reason": "", "num_faces": 6, "volume": 1.0,
              "area": 6.0, "bbox_min": [0, 0, 0], "bbox_max": [1, 1, 1], "seconds": 0.0, "nv": 0, "nf": 0,
              "exports": {}}
    return {**header, **changes}


def test_an_ok_result_without_the_mesh_asked_for_is_a_protocol_violation():
    with pytest.raises(ProtocolViolation, match="without the mesh that was asked for"):
        parse_result(_ok_header(), bytearray(), "t", 1000, (), mesh_asked=True)
    result, _ = parse_result(_ok_header(), bytearray(), "t", 1000, (), mesh_asked=False)
    assert result.ok and result.vertices is None


def test_an_ok_result_must_meet_its_profile_s_face_rule():
    """A strict worker may not report a 2-face solid as ok (the protocol); a cadquery part may be a cone."""
    with pytest.raises(ProtocolViolation, match="without a valid solid's figures"):
        parse_result(_ok_header(num_faces=2), bytearray(), "t", 1000, (), mesh_asked=False)
    result, _ = parse_result(_ok_header(num_faces=2), bytearray(), "t", 1000, (), mesh_asked=False, profile="cadquery")
    assert result.ok and result.num_faces == 2
    with pytest.raises(ProtocolViolation, match="without a valid solid's figures"):
        parse_result(_ok_header(num_faces=0), bytearray(), "t", 1000, (), mesh_asked=False, profile="cadquery")
