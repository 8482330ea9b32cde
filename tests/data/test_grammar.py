"""The program grammar: it accepts what the generator writes and the public style, and nothing near it."""

import pytest

from cad_recode.data.generator import COMPLEXITIES, generate_program, program_rng
from cad_recode.data.grammar import (
    DEFAULT_FRAME,
    GrammarCheck,
    check_program,
    coordinate_limit,
    in_grammar,
    integer_alternatives,
    program_grammar,
    size_limit,
)

HEAD = "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-2))\n"


def test_every_generated_program_is_in_the_grammar():
    # 10,000 programs over every level and several seeds, drawn as `data generate --no_execute` draws them
    per_level = 10_000 // len(COMPLEXITIES) + 1
    outside = []
    for level in COMPLEXITIES:
        for i in range(per_level):
            seed, index = i % 5, i // 5
            code = generate_program(program_rng(seed, index), level)
            if not in_grammar(code):
                outside.append((level, seed, index, check_program(code).describe(code)))
    assert not outside, f"{len(outside)} generated programs are outside the grammar, first: {outside[:3]}"


# (what it shows, program, line and column of the first bad character)
NEAR_MISSES = [
    ("a literal past the frame", HEAD + "r=w0.box(2000,64,5)", 3, 13),
    ("scientific notation", HEAD + "r=w0.box(1e5,64,5)", 3, 11),
    # a number stays open while it could still become valid: the bad character is the one after it
    ("a quarter, not a half", HEAD + "r=w0.box(12.25,64,5)", 3, 13),
    ("a leading zero", HEAD + "r=w0.box(012,64,5)", 3, 11),
    ("a zero size", HEAD + "r=w0.sketch().circle(0).finalize().extrude(3)", 3, 23),
    ("a zero extrusion", HEAD + "r=w0.sketch().circle(5).finalize().extrude(0)", 3, 45),
    ("a space", HEAD + "r=w0.box(10, 64,5)", 3, 13),
    ("an unknown plane", "import cadquery as cq\nw0=cq.Workplane('XZ',origin=(0,0,0))\nr=w0.box(1,1,1)", 2, 19),
    ("an unknown method", HEAD + "r=w0.sphere(5)", 3, 7),
    ("an unknown mode", HEAD + "r=w0.sketch().circle(5,mode='i').finalize().extrude(3)", 3, 30),
    ("a 2-point arc opening a loop", HEAD + "r=w0.sketch().arc((0,0),(5,5)).close().assemble().finalize().extrude(3)", 3, 30),
    ("a loop without assemble", HEAD + "r=w0.sketch().segment((0,0),(5,0)).segment((0,5)).close().finalize()", 3, 59),
    ("a push with no shape", HEAD + "r=w0.sketch().push([(1,1)]).finalize().extrude(3)", 3, 29),
    ("an unclosed parenthesis", HEAD + "r=w0.box(10,64,5\nr=1", 3, 17),
    ("an extra parenthesis", HEAD + "r=w0.box(10,64,5))", 3, 18),
    ("no workplane", "import cadquery as cq\nr=w0.box(1,1,1)", 2, 1),
    ("a second statement", HEAD + "r=w0.box(1,1,1)\nr=r.union(w0.box(2,2,2))", 4, 1),
    ("a bad import", "import cadquery\nw0=cq.Workplane('XY',origin=(0,0,0))\nr=w0.box(1,1,1)", 1, 16),
    ("code after the program", HEAD + "r=w0.box(1,1,1)\nimport os", 4, 1),
    # names: only workplanes defined above, defined in order w0, w1, ... (a random model wrote w1 with only w0)
    ("an undefined workplane", HEAD + "r=w1.box(1,1,1)", 3, 4),
    ("an undefined workplane in a union", HEAD + "r=w0.box(1,1,1).union(w3.box(2,2,2))", 3, 24),
    ("an undefined workplane in a face",
     HEAD + "r=w0.sketch().face(w1.sketch().circle(5)).finalize().extrude(3)", 3, 21),
    ("a workplane out of order", HEAD + "w2=cq.Workplane('XY',origin=(0,0,0))\nr=w0.box(1,1,1)", 3, 2),
    ("an eleventh workplane", "import cadquery as cq\n" + "".join(f"w{i}=cq.Workplane('XY',origin=(0,0,0))\n"
                                                                 for i in range(10)) + "w10=", 12, 1),
]


@pytest.mark.parametrize("what, code, line, column", NEAR_MISSES, ids=[m[0] for m in NEAR_MISSES])
def test_near_misses_are_rejected_at_their_first_bad_character(what, code, line, column):
    check = check_program(code)
    assert not check.ok and not check.complete_prefix
    assert (check.line, check.column) == (line, column), check.describe(code)
    assert code.splitlines(keepends=True)[line - 1][column - 1] == code[check.position]
    assert f"line {line}, column {column}" in check.describe(code)


def test_every_workplane_defined_above_may_be_used_up_to_ten():
    defs = "".join(f"w{i}=cq.Workplane('XY',origin=({i},0,0))\n" for i in range(10))
    body = ".union(".join(f"w{i}.box(1,1,1)" for i in range(9, -1, -1)) + ")" * 9
    assert in_grammar("import cadquery as cq\n" + defs + "r=" + body)
    assert in_grammar(HEAD + "w1=cq.Workplane('YZ',origin=(0,0,0))\nr=w1.box(1,1,1).cut(w0.box(2,2,2))")


def test_a_cut_program_is_a_valid_start_that_ends_early():
    code = HEAD + "r=w0.sketch().push([(1,1)]).circle(5"
    check = check_program(code)
    assert not check.ok and check.complete_prefix and check.position == len(code)
    assert "ends early" in check.describe(code)


# one hand-written program per form of the public CAD-Recode v1.5 style (design.md, issue 15)
PUBLIC_STYLE = {
    "half-integer centres": HEAD + "r=w0.sketch().push([(-38.5,-21)]).circle(12.5).finalize().extrude(7)",
    "half-integer moveTo": HEAD + "r=w0.workplane(offset=5/2).moveTo(55.5,-94.5).box(10,64,5)",
    "face subtracted": HEAD + (
        "r=w0.sketch().rect(80,60).reset().face(w0.sketch().segment((-10,-10),(10,-10)).segment((0,10))"
        ".close().assemble(),mode='s').finalize().extrude(4)"
    ),
    "face added": HEAD + (
        "r=w0.sketch().circle(30).reset().face(w0.sketch().segment((20,-5),(60,-5)).segment((60,5))"
        ".segment((20,5)).close().assemble()).finalize().extrude(-6)"
    ),
    "3-point arc": HEAD + "r=w0.sketch().arc((-20,0),(0,20),(20,0)).segment((-20,0)).assemble().finalize().extrude(3)",
    "2-point arc": HEAD + (
        "r=w0.sketch().segment((-20,0),(20,0)).arc((0,20),(-20,0)).assemble().finalize().extrude(3)"
    ),
    "assemble after close": HEAD + (
        "r=w0.sketch().segment((0,0),(10,0)).segment((10,10)).close().assemble().finalize().extrude(2)"
    ),
    "chained circles after one push": HEAD + (
        "r=w0.sketch().push([(-38.5,-21)]).circle(20).circle(12,mode='s').finalize().extrude(30)"
    ),
    "several points in one push": HEAD + (
        "r=w0.sketch().rect(100,60).push([(-30,0),(30,0)]).rect(8,8,mode='s').finalize().extrude(5)"
    ),
    "ring (tube)": HEAD + "r=w0.sketch().circle(50).circle(42,mode='s').finalize().extrude(100)",
    "union over three planes": (
        "import cadquery as cq\nw0=cq.Workplane('YZ',origin=(-13,0,0))\nw1=cq.Workplane('ZX',origin=(0,25,0))\n"
        "w2=cq.Workplane('XY',origin=(0,0,-100))\n"
        "r=w0.sketch().segment((-100,-21),(-60,-21)).arc((-47,-8),(-34,-21)).segment((-34,21))"
        ".segment((-100,21)).close().assemble().finalize().extrude(26)"
        ".union(w1.workplane(offset=-27/2).cylinder(27,53)).union(w2.workplane(offset=100).box(200,200,200))"
    ),
    "cut with a box": HEAD + "r=w0.workplane(offset=5/2).box(100,64,5).cut(w0.workplane(offset=5/2).moveTo(10,0).box(20,20,5))",
    "nested union and cut": HEAD + (
        "r=w0.box(10,10,10).union(w0.sketch().circle(3).finalize().extrude(20).cut(w0.cylinder(20,1)))"
    ),
    "origin on every axis": "import cadquery as cq\nw0=cq.Workplane('ZX',origin=(1.5,-2,3))\nr=w0.box(1,1,1)",
    "trailing newline": HEAD + "r=w0.box(100,64,5)\n",
    "the design.md example": HEAD + "r=w0.workplane(offset=5/2).box(100,64,5)",
}


@pytest.mark.parametrize("name", list(PUBLIC_STYLE))
def test_the_public_style_is_in_the_grammar(name):
    code = PUBLIC_STYLE[name]
    assert check_program(code) == GrammarCheck(True), check_program(code).describe(code)


def test_literals_are_bounded_by_the_frame():
    assert (size_limit(DEFAULT_FRAME), coordinate_limit(DEFAULT_FRAME)) == (200, 250)
    sizes = [n for n in range(300) if in_grammar(HEAD + f"r=w0.box({n},1,1)")]
    assert sizes == list(range(1, 201))  # sizes: positive, never past the full extent 2 x frame
    assert in_grammar(HEAD + "r=w0.box(199.5,1,1)") and not in_grammar(HEAD + "r=w0.box(200.5,1,1)")
    coordinates = [n for n in range(-300, 300) if in_grammar(HEAD + f"r=w0.moveTo({n},0).box(1,1,1)")]
    assert coordinates == list(range(-250, 251))
    assert in_grammar(HEAD + "r=w0.moveTo(-249.5,0).box(1,1,1)")
    assert not in_grammar(HEAD + "r=w0.moveTo(-250.5,0).box(1,1,1)")
    # a model trained in a smaller frame gets smaller bounds
    assert in_grammar(HEAD + "r=w0.box(20,1,1)", frame=10) and not in_grammar(HEAD + "r=w0.box(21,1,1)", frame=10)


@pytest.mark.parametrize("limit", [1, 9, 10, 57, 99, 100, 101, 200, 1000])
def test_integer_alternatives_spell_exactly_zero_to_limit(limit):
    import re

    def as_regex(alternative: str) -> str:
        return "".join(re.escape(part[1:-1]) if part.startswith('"') else part
                       for part in re.findall(r'"[^"]*"|\[[^\]]*\]', alternative))

    pattern = re.compile("|".join(f"(?:{as_regex(a)})" for a in integer_alternatives(limit)))
    matched = [n for n in range(2 * limit + 20) if pattern.fullmatch(str(n))]
    assert matched == list(range(limit + 1))
    assert not pattern.fullmatch("0" + str(limit))  # no leading zeros
    nonzero = re.compile("|".join(f"(?:{as_regex(a)})" for a in integer_alternatives(limit, nonzero=True)))
    assert not nonzero.fullmatch("0") and nonzero.fullmatch(str(limit))


def test_bad_frames_are_refused_in_one_line():
    with pytest.raises(ValueError, match="frame must be a positive integer"):
        program_grammar(0)


def test_the_public_style_runs_under_the_strict_profile_and_prepares(sandbox, tmp_path):
    """The public forms are in the model's language end to end: the strict sandbox runs them to valid
    solids, and `data prepare` stores every one of them."""
    from cad_recode.data.prepare import prepare_dataset
    from cad_recode.data.shards import PreparedSplit

    names = list(PUBLIC_STYLE)
    results = sandbox.map([PUBLIC_STYLE[n] for n in names], profile="strict")
    assert {n: r.status.value for n, r in zip(names, results) if not r.ok} == {}
    src = tmp_path / "programs"
    (src / "test").mkdir(parents=True)
    for i, name in enumerate(names):
        (src / "test" / f"{i}.py").write_text(PUBLIC_STYLE[name], encoding="utf-8")
    report = prepare_dataset(src, tmp_path / "prepared", progress=False)
    assert report.num_shapes == len(names)
    assert len(PreparedSplit.open(tmp_path / "prepared", "test")) == len(names)
