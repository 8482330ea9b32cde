"""One program must not change what the next one sees (same pool, same worker where the profile allows)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest

from hostile_common import GOOD, GOOD_VOLUME, assert_contained  # noqa: E402

POISON = {
    # name: (program, profile, unchecked)
    "shape_volume_strict": ("import cadquery as cq\ncq.Shape.Volume = cq.Shape.Area\n", "strict", False),
    "workplane_swap_strict": ("import cadquery as cq\ncq.Workplane = cq.Sketch\n", "strict", False),
    "math_ceil_strict": ("import math\nmath.ceil = math.floor\n", "strict", False),
    "workplane_method_unchecked": ("import cadquery as cq\ncq.Workplane.box = cq.Workplane.sphere\n", "strict", True),
    "shape_volume_cadquery": ("import cadquery as cq\ncq.Shape.Volume = cq.Shape.Area\n"
                              "r = cq.Workplane().box(1, 1, 1)\n", "cadquery", True),
    "math_ceil_cadquery": ("import math\nmath.ceil = None\n", "cadquery", True),
    "numpy_state_cadquery": ("import numpy as np\nnp.pi = 3\nnp.seterr(all='raise')\n", "cadquery", False),
}


@pytest.mark.parametrize("code, profile, unchecked", POISON.values(), ids=POISON.keys())
def test_poison_does_not_reach_the_next_program(pool, marker, code, profile, unchecked):
    result = pool.run(code, profile=profile, _unchecked=unchecked)
    if result.ok:  # a cadquery-profile program may change its own process freely...
        assert profile == "cadquery"
    else:
        assert_contained(pool, result, marker)
    for _ in range(4):  # ...but every later program, on any worker, sees a clean one
        good = pool.run(GOOD)
        assert good.volume == pytest.approx(GOOD_VOLUME, rel=1e-6), good.reason
    assert all(r.volume == pytest.approx(GOOD_VOLUME, rel=1e-6) for r in pool.map([GOOD] * 4))


def test_tampering_is_reported_and_retires_the_worker(pool):
    before = set(pool.start().worker_pids)
    result = pool.run("import cadquery as cq\ncq.Workplane.box = cq.Workplane.sphere\n", _unchecked=True)
    assert result.status.value == "error"
    assert "modified the sandbox (cadquery.Workplane.box)" in result.reason
    assert set(pool.start().worker_pids) != before
