"""Read STEP files in a process of their own, which stays for the next file.

:func:`cad_recode.geometry.loaders.load_geometry` sends STEP files here instead of reading them in
its own process: OCCT parses the file in C++, and a file that makes it loop, balloon or crash would
otherwise hang or kill the caller (in the web app, the server). Here it meets a memory limit
(``RLIMIT_AS``, set before CadQuery is imported) and the caller's timeout, and a crash is one
error; the next file starts a fresh process. The process stays between files because importing
CadQuery takes seconds. It is not the sandbox: the file is data, and OCCT reads it unconfined.

Protocol: one JSON request a line on the child's stdin, ``{"step": path, "out": npz_path}``; one
JSON reply a line on a pipe of its own (OCCT writes to stdout), ``{"ok": true}`` (the ``.npz`` holds
``vertices`` (V, 3) float64 and ``faces`` (F, 3) int64) or ``{"error": one-line reason}``. The child
says ``{"ready": true}`` once CadQuery is imported.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MEMORY_BYTES = 8 << 30  # address space: the interpreter with CadQuery takes about 1.5 GiB of it
START_SECONDS = 120.0  # importing CadQuery, on a loaded machine


class StepReadError(Exception):
    """A file the reader could not read; its message is one line for the user."""


class StepReader:
    """The client: :meth:`read` one file at a time (thread-safe), the reader process started on first use."""

    def __init__(self, command: list[str] | None = None):
        self.command = command or [sys.executable, "-m", "cad_recode.geometry._step_reader"]
        self._process: subprocess.Popen | None = None
        self._replies = -1
        self._pending = b""
        self._lock = threading.Lock()

    def read(self, path: Path, timeout: float) -> tuple[np.ndarray, np.ndarray]:
        """(vertices, faces) of ``path``; StepReadError naming the file when it cannot be read in ``timeout`` s."""
        with self._lock, tempfile.TemporaryDirectory(prefix="cad_recode_step_") as scratch:
            out = Path(scratch) / "mesh.npz"
            self._start()
            try:
                self._process.stdin.write((json.dumps({"step": str(path), "out": str(out)}) + "\n").encode())
                self._process.stdin.flush()
            except OSError:
                pass  # it died: the reply below says how
            reply = self._reply(timeout)
            if reply is None:
                self.close()
                raise StepReadError(f"{path}: reading the STEP file took over {timeout:.0f} s and was stopped; "
                                    "export the part alone, or as a mesh (.stl)")
            if "error" in reply:
                raise StepReadError(reply["error"])
            if not reply.get("ok"):
                raise StepReadError(f"{path}: the STEP reader stopped ({self._how_it_ended()}); the file may be "
                                    "damaged or too large: export the part as a mesh (.stl)")
            with np.load(out) as arrays:
                return arrays["vertices"], arrays["faces"]

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process.stdin.close()
            os.close(self._replies)
            self._process, self._replies, self._pending = None, -1, b""

    def _start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self.close()
        theirs, ours = os.pipe()[::-1]
        try:
            self._process = subprocess.Popen([*self.command, str(theirs)], stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(theirs,))
        finally:
            os.close(theirs)
        self._replies = ours
        if not (self._reply(START_SECONDS) or {}).get("ready"):
            how = self._how_it_ended()
            self.close()
            raise StepReadError(f"the STEP reader did not start ({how}); check that CadQuery imports: "
                                f"{sys.executable} -c 'import cadquery'")

    def _reply(self, timeout: float) -> dict | None:
        """The next reply; {} when the process ended first, None when ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self._replies, selectors.EVENT_READ)
            while b"\n" not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if selector.select(left):
                    chunk = os.read(self._replies, 1 << 16)
                    if not chunk:
                        return {}
                    self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return json.loads(line)

    def _how_it_ended(self) -> str:
        try:
            code = self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            return "no reply"
        return f"signal {-code}" if code < 0 else f"exit {code}"


def read_step_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of the STEP file's shapes, tessellated as the sandbox tessellates solids (in this process)."""
    import cadquery as cq

    from cad_recode.errors import InputError, unreadable
    from cad_recode.geometry.sandbox import ANGULAR_TOLERANCE, TESSELLATION_TOLERANCE

    try:
        shapes = cq.importers.importStep(str(path)).vals()
    except Exception as exc:
        raise unreadable(path, "a STEP file", exc) from None
    shapes = [s for s in shapes if isinstance(s, cq.Shape)]
    if not shapes:
        raise InputError(f"{path}: the STEP file holds no shapes; export the part as a solid")
    shape = shapes[0] if len(shapes) == 1 else cq.Compound.makeCompound(shapes)
    try:
        vertices, triangles = shape.tessellate(TESSELLATION_TOLERANCE, ANGULAR_TOLERANCE)
    except Exception as exc:
        raise unreadable(path, "a STEP file that can be meshed", exc) from None
    if not triangles:
        raise InputError(f"{path}: the STEP file has no faces to mesh (wires or points only); export a solid")
    return (np.array([v.toTuple() for v in vertices], dtype=np.float64).reshape(-1, 3),
            np.array(triangles, dtype=np.int64).reshape(-1, 3))


def serve(requests, reply_fd: int) -> None:
    """The child's loop: read each requested file, reply; a failure that is not the file's ends the process."""
    from cad_recode.errors import InputError

    def say(message: dict) -> None:
        os.write(reply_fd, (json.dumps(message) + "\n").encode())

    say({"ready": True})
    for line in requests:
        request = json.loads(line)
        try:
            vertices, faces = read_step_arrays(Path(request["step"]))
        except InputError as err:
            say({"error": " ".join(str(err).split())})
            continue
        except MemoryError:
            say({"error": f"{request['step']}: reading the STEP file took more than {MEMORY_BYTES >> 30} GiB of "
                          "memory; export the part alone, or as a mesh (.stl)"})
            sys.exit(1)  # the process may be in any state now: the next file starts a fresh one
        with open(request["out"], "wb") as handle:
            np.savez(handle, vertices=vertices, faces=faces)
        say({"ok": True})


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    import cadquery  # noqa: F401  # before the first request: its time is not a file's

    serve(sys.stdin, int(sys.argv[1]))
