"""Procedural CAD-Recode-style programs: `generate_program` draws one, `generate_dataset` a folder.

Four levels (``COMPLEXITIES``):

``broad`` (the default the quickstart trains on) -- the whole family of simple parts,
each program labelled with its family: boxes, cylinders, plates with holes, drawn
outlines (L, U, T, slots, polygons), rings and tubes, stacked and unioned bodies,
pockets and through-cuts (``.cut``), on all three planes, largest extent 200, one
spelling per geometry, valid by construction. See `families` for the weights and
`bodies` / `combined` for the spelling rules.

``simple`` (the CPU default of generator version 2) -- one or two bodies of few primitives, written in
ONE canonical way, so a shape never has two spellings for the model to choose between:
  * a box is always ``box`` on the XY plane, origin at its bottom, positive offset;
  * a cylinder is always ``cylinder`` on the plane normal to its axis;
  * a sketch plate is a rectangle or circle with 1-2 rectangular or round holes
    strictly inside, extruded by a positive depth from its bottom; holes are listed
    in (u, v) order;
  * a second body is a boss on top of the first (a cylinder, or a box on XY parts),
    strictly inside the top face;
  * every number is an integer; the part is centred with its largest extent 200.

``medium`` -- ``simple`` whose plates may also have outlines drawn as loops of
segments and arcs (a slot, a D shape, a chamfered rectangle, a trapezoid, a
triangle, an L, U or T profile, a hexagon) with 0-2 holes; loops start at their
smallest (u, v) vertex and run counter-clockwise. (Generator version 1 called
this level ``simple``; a seed gives the same programs.)

``full`` -- the published recipe: 1-3 bodies on random XY/YZ/ZX planes with
origins along the normal and signed extrusions; each sketch combines 3 to 8
primitives (circles, rectangles, closed loops of segments and arcs) by union and
subtraction (``mode='s'``), sometimes a concentric bore (``circle(a).circle(b,mode='s')``
after one ``push``); boxes and cylinders too; integer coordinates with centres on
half units (``push([(-38.5,-21)])``, ``moveTo(55.5,-94.5)``) as in the public data,
each part centred and scaled so that its largest extent is 200. (Generator version 3;
version 2 wrote integer centres and no bores.)

All are pure functions of the random generator, so a seed fixes the programs.
Whether a program really yields one valid solid is decided by running it in the
sandbox (`generate_dataset` does that); ``simple``, ``medium`` and ``broad`` programs are
valid by construction, ``full`` ones sometimes are not (disjoint pieces, degenerate arcs).
"""

from cad_recode.data.generator.dataset import (
    GenerateReport,
    UniquePrograms,
    generate_dataset,
    geometric_key,
    solid_problem,
)
from cad_recode.data.generator.families import FAMILIES, FAMILY_WEIGHTS
from cad_recode.data.generator.levels import (
    COMPLEXITIES,
    DEFAULT_COMPLEXITY,
    GENERATOR_VERSION,
    LabelledPart,
    generate_labelled,
    generate_part,
    generate_program,
    level_weights,
    program_rng,
    programs_per_second,
)
from cad_recode.data.generator.outlines import SIMPLE_OUTLINES
from cad_recode.data.generator.plane2d import EXTENT, MARGIN
from cad_recode.data.generator.text import OPERATION_PATTERNS, count_operations, normalized_code

__all__ = [
    "COMPLEXITIES",
    "DEFAULT_COMPLEXITY",
    "EXTENT",
    "FAMILIES",
    "FAMILY_WEIGHTS",
    "GENERATOR_VERSION",
    "MARGIN",
    "OPERATION_PATTERNS",
    "SIMPLE_OUTLINES",
    "GenerateReport",
    "LabelledPart",
    "UniquePrograms",
    "count_operations",
    "generate_dataset",
    "generate_labelled",
    "generate_part",
    "generate_program",
    "geometric_key",
    "level_weights",
    "normalized_code",
    "program_rng",
    "programs_per_second",
    "solid_problem",
]
