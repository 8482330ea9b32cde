"""A STEP file crafted against OCCT's parser runs code in the reader process: what that code can reach.

The stand-in for the exploit is a reader whose Python runs, on the first request, what such code would
try. It runs exactly where the real reader runs (inside the OS layer, confined after start), and sends
what it found back as its error message, the one channel the caller shows to a user.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cad_recode.geometry._step_reader import StepReader, StepReadError  # noqa: E402
from cad_recode.geometry.loaders import load_geometry  # noqa: E402
from hostile_common import MARKER_DIR  # noqa: E402

# The real reader (its start, its confinement), with the parse replaced by what taken-over code would try.
EXPLOIT = """
import json, os, socket, sys
from cad_recode.errors import InputError
from cad_recode.geometry import _step_reader

def exploit(path, shown=None):
    found = {}
    def attempt(name, action):
        try:
            found[name] = repr(action())
        except Exception as err:
            found[name] = 'denied: ' + type(err).__name__
    attempt('caller_file', lambda: open(SECRET).read())
    attempt('caller_folder', lambda: os.listdir(os.path.dirname(SECRET)))
    attempt('home', lambda: os.listdir(os.path.expanduser('~root')))
    attempt('network', lambda: socket.create_connection(('127.0.0.1', 22), timeout=1))
    attempt('write_outside', lambda: open(MARKER, 'w').write('x'))
    attempt('spawn', lambda: os.posix_spawn('/bin/true', ['true'], {}))
    attempt('own_scratch', lambda: open(os.path.join(os.path.dirname(path), 'note'), 'w').write('fine'))
    raise InputError(json.dumps(found))

_step_reader.read_step_arrays = exploit
_step_reader.main(sys.argv[1:])
"""


def exploit_reader(secret: Path, marker: Path) -> StepReader:
    return StepReader(["-c", f"SECRET = {str(secret)!r}\nMARKER = {str(marker)!r}\n" + EXPLOIT])


def test_code_running_in_the_step_reader_reaches_none_of_the_callers_files_nor_the_network(tmp_path, marker):
    secret = tmp_path / "keys.txt"
    secret.write_text("the caller's secret")
    part = tmp_path / "part.step"
    part.write_bytes(b"ISO-10303-21;\n" * 10)
    reader = exploit_reader(secret, marker)
    assert reader.confined, "the OS layer works here, so the reader must run inside it"
    try:
        with pytest.raises(StepReadError) as caught:
            reader.read(part, timeout=60)
    finally:
        reader.close()
    found = json.loads(str(caught.value))
    assert "the caller's secret" not in str(caught.value)
    assert found["network"] == "denied: PermissionError"  # no socket at all, not merely nothing listening
    for name in ("caller_file", "caller_folder", "home", "write_outside", "spawn"):
        assert found[name].startswith("denied: "), (name, found[name])
    assert found["own_scratch"] == "4"  # its own scratch is writable: that is where the file's bytes go
    assert not marker.exists()


def test_a_reader_that_sends_a_malformed_mesh_is_refused(tmp_path):
    """A reader taken over could answer with faces that index past its vertices, or with sizes it never sends."""
    part = tmp_path / "part.step"
    part.write_bytes(b"ISO-10303-21;\n")
    replies = {
        "faces past the vertices": ("{\"vertices\": 1, \"faces\": 1}", np.zeros(3).tobytes() + np.array([0, 1, 5]).tobytes()),
        "sizes it never sends": ("{\"vertices\": 100, \"faces\": 100}", b""),
        "sizes past the cap": ("{\"vertices\": 1000000000000, \"faces\": 1}", b""),
        "not an object": ("[1, 2]", b""),
    }
    for header, payload in replies.values():
        answer = header.encode() + b"\n" + payload
        script = ("import os, sys\nout = int(sys.argv[1])\nos.write(out, b'{\"ready\": true}\\n')\n"
                  f"sys.stdin.buffer.readline()\nos.write(out, {answer!r})\n")
        reader = StepReader(["-c", script])
        try:
            with pytest.raises(StepReadError, match="the STEP reader stopped"):
                reader.read(part, timeout=30)
        finally:
            reader.close()


def test_the_real_reader_runs_confined_and_reads_a_part_sent_down_the_pipe(tmp_path):
    import cadquery as cq

    path = tmp_path / "part.step"
    cq.exporters.export(cq.Workplane("XY").box(20, 30, 40), str(path))
    reader = StepReader()
    try:
        vertices, faces = reader.read(path, timeout=120)
        assert reader.confined
        np.testing.assert_allclose([vertices.min(0), vertices.max(0)], [[-10, -15, -20], [10, 15, 20]], atol=1e-6)
        assert len(faces) == 12
        assert not list(MARKER_DIR.glob("input.step"))
    finally:
        reader.close()
    assert len(load_geometry(path).faces) == 12


def test_a_readers_error_reaches_the_user_with_its_control_characters_escaped(tmp_path):
    part = tmp_path / "part.step"
    part.write_bytes(b"ISO-10303-21;\n")
    forged = json.dumps({"error": "fine\r\x1b[2Kpart.step: read OK"}).encode() + b"\n"
    script = ("import os, sys\nout = int(sys.argv[1])\nos.write(out, b'{\"ready\": true}\\n')\n"
              f"sys.stdin.buffer.readline()\nos.write(out, {forged!r})\n")
    reader = StepReader(["-c", script])
    try:
        with pytest.raises(StepReadError) as caught:
            reader.read(part, timeout=30)
    finally:
        reader.close()
    assert str(caught.value) == "fine\\x0d\\x1b[2Kpart.step: read OK"
