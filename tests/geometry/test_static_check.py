"""The static check accepts CAD-Recode-style programs and names the line of anything else."""

from __future__ import annotations

import re

import pytest

from cad_recode.geometry.static_check import MAX_PROGRAM_BYTES, ProgramRejected, check_program

ACCEPTED = {
    "cad_recode_style": (
        "import cadquery as cq\n"
        "w0=cq.Workplane('XY',origin=(0,0,-2))\n"
        "r=w0.workplane(offset=5/2).box(100,64,5)\n"
    ),
    "sketch_modes": (
        "import cadquery as cq\n"
        "w0 = cq.Workplane('YZ', origin=(-3, 0, 0))\n"
        "r = w0.sketch().segment((0, 0), (20, 0)).arc((20, 0), (25, 5), (20, 10)).segment((0, 10)).close()"
        ".assemble().push([(5, 5)]).circle(2, mode='s').finalize().extrude(4)\n"
    ),
    "math_and_arithmetic": "import math\nfrom math import pi, sqrt as root\nx = 2 ** 3 % 5 // 1 - root(pi) * -1\n",
    "plain_import": "import cadquery\nfrom cadquery import Workplane as W\nr = W().box(1, 2, 3)\n",
    "assignments": "a, (b, c) = 1, (2, 3)\na += b\nd = [a, *[b, c]]\ne = d[0:2]\nf = {'k': a}['k']\n",
    "comprehensions": "x = [i * i for i in range(3) if i]\ny = {i: j for i, j in zip('ab', 'cd')}\nz = sum(i for i in x)\n",
    "conditionals": "x = 1 if 2 > 1 and not 0 else 3\nif x == 1:\n    y = 2\nelse:\n    y = 3\n",
    "pass": "x = 1\npass\n",
    # forms of the public CAD-Recode v1.5 programs
    "public_forms": (
        "import cadquery as cq\n"
        "w0=cq.Workplane('XY',origin=(-38.5,0,55.5))\n"
        "r=w0.sketch().segment((0,0),(20,0)).arc((25,5),(20,10)).arc((10,12),(0,10)).assemble()"
        ".reset().face(w0.sketch().push([(5,5)]).circle(3).circle(1,mode='s'),mode='s').finalize().extrude(2)\n"
    ),
    "public_solids": (
        "import cadquery as cq\nw0=cq.Workplane('ZX',origin=(0,0,0))\n"
        "r=w0.workplane(offset=3/2).moveTo(4.5,-2).cylinder(3,2).union(w0.box(4,4,4)).cut(w0.box(1,1,9))"
        ".transformed(rotate=(0,0,90)).rotate((0,0,0),(0,0,1),45).translate((1,2,3))\n"
    ),
}

REJECTED = {
    # name: (program, line, text that the reason must contain)
    "import_os": ("import cadquery as cq\n\nimport os\n", 3, "import of 'os' is not allowed (only cadquery and math)"),
    "import_submodule": ("import cadquery.occ_impl\n", 1, "import of 'cadquery.occ_impl'"),
    "from_import_os": ("from os import system\n", 1, "import from 'os'"),
    "relative_import": ("from . import x\n", 1, "import from '.'"),
    "star_import": ("from math import *\n", 1, "import *"),
    "dunder_import": ("x = __import__('os')\n", 1, "name '__import__'"),
    "subclasses": ("x = ().__class__.__bases__[0].__subclasses__()\n", 1, "attribute '__class__'"),
    "private_name": ("_x = 1\n", 1, "name '_x'"),
    "open": ("x = 1\nopen('/etc/passwd')\n", 2, "'open' is not allowed"),
    "eval": ("eval('1')\n", 1, "'eval' is not allowed"),
    "exec": ("exec('x = 1')\n", 1, "'exec' is not allowed"),
    "getattr": ("x = getattr(1, 'real')\n", 1, "'getattr' is not allowed"),
    "globals": ("x = globals()\n", 1, "'globals' is not allowed"),
    "compile": ("x = compile('1', 'f', 'eval')\n", 1, "'compile' is not allowed"),
    "exit": ("exit(0)\n", 1, "'exit' is not allowed"),
    "def": ("def f():\n    return 1\n", 1, "function definitions (def) not allowed"),
    "lambda": ("f = lambda n: f(n)\n", 1, "lambda not allowed"),
    "class": ("class A:\n    pass\n", 1, "class definitions not allowed"),
    "while": ("x = 0\nwhile True:\n    x += 1\n", 2, "while loops not allowed"),
    "for": ("for i in range(3):\n    pass\n", 1, "for loops"),
    "with": ("with x:\n    pass\n", 1, "with blocks not allowed"),
    "try": ("try:\n    x = 1\nexcept Exception:\n    pass\n", 1, "try blocks not allowed"),
    "raise_system_exit": ("raise SystemExit\n", 1, "raise not allowed"),
    "global": ("global x\n", 1, "global not allowed"),
    "del": ("x = 1\ndel x\n", 2, "del not allowed"),
    "walrus": ("y = (x := 1)\n", 1, "assignment expressions"),
    "annotation": ("x: int = 1\n", 1, "annotated assignments"),
    "generator_frame": ("g = (i for i in [1])\nx = g.gi_frame\n", 2, "attribute 'gi_frame'"),
    "format_attribute": ("x = '{0.real}'.format(1)\n", 1, "attribute 'format'"),
    "export_file": ("import cadquery as cq\ncq.Workplane().box(1, 1, 1).exportStl('/tmp/x.stl')\n", 2,
                    "attribute 'exportStl' is not allowed (programs may not read or write files)"),
    "import_file": ("import cadquery as cq\nr = cq.Workplane.importBrep('/etc/passwd')\n", 2, "attribute 'importBrep'"),
    "private_keyword": ("x = dict(_a=1)\n", 1, "keyword '_a'"),
}


@pytest.mark.parametrize("code", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepts_cad_recode_programs(code):
    check_program(code)


@pytest.mark.parametrize("code, line, text", REJECTED.values(), ids=REJECTED.keys())
def test_rejects_with_the_line_and_reason(code, line, text):
    with pytest.raises(ProgramRejected) as info:
        check_program(code)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}: ")
    assert text in str(info.value)
    assert "\n" not in str(info.value)


def test_syntax_error_is_a_syntax_error_with_its_line():
    with pytest.raises(SyntaxError) as info:
        check_program("import cadquery as cq\nr = cq.Workplane(\n")
    assert info.value.lineno == 2


def test_rejects_oversized_programs():
    code = "x = 1\n" * (MAX_PROGRAM_BYTES // 6 + 1)
    with pytest.raises(ProgramRejected, match=rf"bytes; the limit is {MAX_PROGRAM_BYTES}"):
        check_program(code)


def test_rejects_nul_bytes_and_non_strings():
    with pytest.raises(ProgramRejected, match="line 2: program contains a NUL byte"):
        check_program("x = 1\ny = '\x00'\n")
    with pytest.raises(ProgramRejected, match="must be a str"):
        check_program(b"x = 1")  # type: ignore[arg-type]


def test_deep_nesting_is_rejected_not_a_crash():
    # Deep but parseable nesting: the check walks it without recursion, or rejects it cleanly.
    code = "x = " + "-" * 5000 + "1\n"
    try:
        check_program(code)
    except (ProgramRejected, SyntaxError):
        pass
    code = "x = " + "[" * 10_000 + "]" * 10_000 + "\n"
    with pytest.raises((ProgramRejected, SyntaxError)):
        check_program(code)


STRICT_ONLY_REJECTED = {
    # name: (program, text)
    "attribute_assignment": ("import cadquery as cq\ncq.Shape = 1\n", "attribute assignment is not allowed"),
    "item_assignment": ("x = [1]\nx[0] = 2\n", "item assignment is not allowed"),
    "not_on_allowlist": ("import cadquery as cq\nv = cq.Workplane().box(1, 1, 1).val()\n", "attribute 'val'"),
    "vtk": ("import cadquery as cq\nv = cq.Workplane().toVtkPolyData()\n", "attribute 'toVtkPolyData'"),
    "wrapped": ("import cadquery as cq\nv = cq.Workplane().wrapped\n", "attribute 'wrapped'"),
    "keyword_not_on_allowlist": ("import cadquery as cq\nr = cq.Workplane().text('a', 1, 1, fontPath='f')\n",
                                 "attribute 'text'"),
    "cadquery_name": ("from cadquery import Shape\n", "'Shape' is not in the strict profile's allowlist"),
    "hash": ("x = hash(1)\n", "'hash' is not allowed in the strict profile"),
    # the keywords inside never meet the allowlist: **{'centered': False} ran before
    "keyword_unpacking": ("import cadquery as cq\nr = cq.Workplane().box(1, 1, 1, **{'centered': False})\n",
                          "keyword unpacking (**) is not allowed"),
    "f_string": ("import cadquery as cq\nw = cq.Workplane()\nx = f'{w!r}'\n", "'JoinedStr' statements not allowed"),
}


@pytest.mark.parametrize("code, text", STRICT_ONLY_REJECTED.values(), ids=STRICT_ONLY_REJECTED.keys())
def test_strict_allowlist_rejects(code, text):
    with pytest.raises(ProgramRejected, match=re.escape(text)):
        check_program(code, "strict")


CADQUERY_ACCEPTED = {
    "loop_def_lambda": "import cadquery as cq\ndef f(n):\n    return n\nfor i in range(2):\n    g = lambda x: x\n",
    "imports": "import numpy as np\nfrom math import *\nimport cadquery.selectors\nfrom cadquery import exporters\n",
    "star_and_names": "from cadquery import *\nfrom numpy import array, linspace\nfrom math import pi, cos\n",
    "class_init": "class A:\n    def __init__(self):\n        self.x = 1\n",
    "main_guard": "if __name__ == '__main__':\n    show_object(1)\n",
    "literal_format": "name = 'part_{}: {:.2f} {w:>{n}} {0!r}'.format(1, 2.0, w='a', n=5)\nx = f'{name}'\n",
}


@pytest.mark.parametrize("code", CADQUERY_ACCEPTED.values(), ids=CADQUERY_ACCEPTED.keys())
def test_cadquery_profile_accepts_ordinary_python(code):
    check_program(code, "cadquery")


CADQUERY_REJECTED = {
    "os": ("import os\n", "import of 'os' is not allowed"),
    "submodule": ("import cadquery.occ_impl\n", "import of 'cadquery.occ_impl'"),
    "dunder": ("x = ().__class__\n", "attribute '__class__'"),
    "vtk": ("v = w.toVtkPolyData()\n", "attribute 'toVtkPolyData' is not allowed"),
    "tofile": ("a.tofile('x')\n", "attribute 'tofile' is not allowed"),
    "font_path": ("r = w.text('a', 1, 1, fontPath='/etc/passwd')\n", "keyword 'fontPath' is not allowed"),
    "reader": ("s = cq.importers.importStep('/x.step')\n", "attribute 'importers' is not allowed"),
    "eval": ("eval('1')\n", "'eval' is not allowed"),
    # the same file readers by the other doors: imported by name, a star import, the readers a regex misses
    "import_from_reader": ("from numpy import fromfile\n", "attribute 'fromfile' is not allowed"),
    "import_from_loader": ("from numpy import zeros, load\n", "attribute 'load' is not allowed"),
    "import_from_dunder": ("from math import __loader__\n", "name '__loader__' is not allowed"),
    "numpy_star": ("from numpy import *\n", "'from numpy import *' is not allowed"),
    "genfromtxt": ("d = np.genfromtxt('/x')\n", "attribute 'genfromtxt' is not allowed"),
    "fromregex": ("d = np.fromregex('/x', 'a', float)\n", "attribute 'fromregex' is not allowed"),
    # a field that reads an attribute or an item, in the literal or in its nested spec; format on a non-literal
    "format_attribute": ("x = '{0.__class__}'.format(1)\n", "attribute 'format' is allowed only on a string literal"),
    "format_item": ("x = '{0[0]}'.format([1])\n", "attribute 'format' is allowed only"),
    "format_nested_spec": ("x = '{:{0.real}}'.format(1)\n", "attribute 'format' is allowed only"),
    "format_variable": ("s = '{}'\nx = s.format(1)\n", "attribute 'format' is allowed only"),
    "format_built": ("x = ('{' + '0.real}').format(1)\n", "attribute 'format' is allowed only"),
    "format_map": ("x = '{a}'.format_map({'a': 1})\n", "attribute 'format_map' is not allowed"),
}


@pytest.mark.parametrize("code, text", CADQUERY_REJECTED.values(), ids=CADQUERY_REJECTED.keys())
def test_cadquery_profile_still_rejects(code, text):
    with pytest.raises(ProgramRejected, match=re.escape(text)):
        check_program(code, "cadquery")
