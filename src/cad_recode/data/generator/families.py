"""The ``broad`` level: the whole family of simple parts, each program labelled with its family.

Families and their mixture weights (`FAMILY_WEIGHTS`); the plane is uniform over
XY, YZ and ZX for every family, and every part is centred with its largest extent
200 (the whole [-100, 100] frame). Valid by construction: features keep a wall of
`MARGIN` from edges and each other, cuts lie inside their base.
"""

from __future__ import annotations

import numpy as np

from cad_recode.data.cadcode import PLANES
from cad_recode.data.generator.bodies import box_part, cylinder_part, outline_part, plate_part, ring_part
from cad_recode.data.generator.combined import pocket_part, stacked_part, through_cut_part

# family -> share of the broad level (drawn outlines get the most: they are the most varied)
FAMILY_WEIGHTS = {
    "box": .10, "cylinder": .10, "plate": .14, "outline": .18, "ring": .12, "stacked": .14, "pocket": .11,
    "through_cut": .11,
}
FAMILIES = tuple(FAMILY_WEIGHTS)
_BUILDERS = {
    "box": box_part, "cylinder": cylinder_part, "plate": plate_part, "outline": outline_part, "ring": ring_part,
    "stacked": stacked_part, "pocket": pocket_part, "through_cut": through_cut_part,
}


def broad_part(rng: np.random.Generator, family: str | None = None) -> tuple[str, tuple]:
    """(family, part) of the broad level, not yet centred; `family` forces one (tests, stats)."""
    drawn = str(rng.choice(FAMILIES, p=list(FAMILY_WEIGHTS.values())))
    plane = str(rng.choice(PLANES))
    family = drawn if family is None else family
    part, _, _ = _BUILDERS[family](rng, plane)
    return family, part
