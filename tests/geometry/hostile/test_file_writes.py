"""Writing a file outside the scratch directory: every route ends in the read-only filesystem or Landlock."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest

from hostile_common import REACH_OS, assert_contained  # noqa: E402


def test_os_open_through_subclass_walk(pool, marker):
    code = REACH_OS + f"fd = o['open']({str(marker)!r}, o['O_WRONLY'] | o['O_CREAT'])\n"
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert "Error" in result.reason  # EROFS or EACCES, as a value
    assert_contained(pool, result, marker)


def test_numpy_tofile(pool, marker):
    code = f"import numpy as np\nnp.zeros(3).tofile({str(marker)!r})\n"
    result = pool.run(code, profile="cadquery")
    assert "attribute 'tofile' is not allowed" in result.reason
    assert_contained(pool, result, marker)
    result = pool.run(code, profile="cadquery", _unchecked=True)
    assert_contained(pool, result, marker)


def test_cadquery_exporter_to_an_outside_path(pool, marker):
    code = f"import cadquery as cq\ncq.exporters.export(cq.Workplane().box(1, 1, 1), {str(marker)!r}, 'STEP')\n"
    result = pool.run(code, profile="cadquery")
    assert_contained(pool, result, marker)


@pytest.mark.parametrize("target", ["/tmp", "/etc", "/dev/shm"])
def test_writable_places_of_a_normal_system_are_not_writable(pool, marker, target):
    code = REACH_OS + f"fd = o['open']('{target}/x', o['O_WRONLY'] | o['O_CREAT'])\n"
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert result.status.value == "error", result.reason
    assert_contained(pool, result, marker)


def test_another_workers_scratch_is_not_writable(pool, marker):
    code = REACH_OS + ("d = [n for n in o['listdir']('/scratch') if n != str(o['getpid']())]\n"
                       "fd = o['open']('/scratch/' + d[0] + '/planted', o['O_WRONLY'] | o['O_CREAT'])\n")
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert "Error" in result.reason
    assert_contained(pool, result, marker)
