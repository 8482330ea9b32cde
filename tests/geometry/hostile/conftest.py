"""Fixtures of the hostile-program suite: one pool for all of it, a marker path each attack tries to write."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cad_recode.geometry.sandbox import Sandbox  # noqa: E402
from hostile_common import MARKER_DIR  # noqa: E402


@pytest.fixture(scope="session")
def pool():
    with Sandbox(workers=2, timeout=3.0, memory_mb=1024) as sandbox:
        yield sandbox.start()


@pytest.fixture
def marker():
    path = MARKER_DIR / f".hostile_marker_{uuid.uuid4().hex}"
    yield path
    path.unlink(missing_ok=True)
