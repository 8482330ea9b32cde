"""A program that writes its own result frame (or garbage) into the worker's channel is not believed."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hostile_common import REACH_OS, assert_contained  # noqa: E402

# Writes a well-formed "ok" frame (with a made-up token) to every fd that might be the result pipe.
FORGE = REACH_OS + (
    "import json, struct\n"
    "h = json.dumps({'kind': 'result', 'token': 'forged', 'status': 'ok', 'reason': '', 'num_faces': 6,"
    " 'volume': 1.0, 'area': 6.0, 'bbox_min': [0, 0, 0], 'bbox_max': [1, 1, 1], 'seconds': 0, 'nv': 0,"
    " 'nf': 0, 'exports': {}}).encode()\n"
    "for fd in range(3, 40):\n"
    "    try:\n"
    "        o['write'](fd, struct.pack('!II', len(h), 0) + h)\n"
    "    except OSError:\n"
    "        pass\n"
)


def test_forged_ok_frame_is_discarded(pool, marker):
    result = pool.run(FORGE.replace("import json, struct", "json = o['sys'].modules['json']\n"
                                   "struct = o['sys'].modules['struct']"), _unchecked=True, profile="cadquery")
    assert result.status.value == "crashed", result.reason
    assert "protocol" in result.reason
    assert_contained(pool, result, marker)


def test_garbage_on_the_channel_is_discarded(pool, marker):
    code = REACH_OS + "for fd in range(3, 40):\n    try:\n        o['write'](fd, b'\\xff' * 64)\n" \
                      "    except OSError:\n        pass\n"
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert result.status.value == "crashed", result.reason
    assert_contained(pool, result, marker)


def test_step_export_asked_for_is_written_by_the_parent(pool, tmp_path):
    step = tmp_path / "part.step"
    result = pool.run("import cadquery as cq\nr = cq.Workplane().box(1, 2, 3)\n", step_path=step)
    assert result.ok and step.read_bytes().startswith(b"ISO-10303-21;")
