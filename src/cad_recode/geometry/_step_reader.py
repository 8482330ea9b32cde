"""Read STEP files in a confined process of their own, which stays for the next file.

:func:`cad_recode.geometry.loaders.load_geometry` sends STEP files here instead of reading them in
its own process: OCCT parses the file in C++, and a file that makes it loop, balloon or crash would
otherwise hang or kill the caller (in the web app, the server). Here it meets a memory limit
(``RLIMIT_AS``, set before CadQuery is imported) and the caller's timeout, and a crash is one
error; the next file starts a fresh process. The process stays between files because importing
CadQuery takes seconds.

A file crafted against a bug in OCCT's parser could run code in the reader, so where the sandbox's OS
layer works the reader runs inside it (:mod:`.confinement`: bubblewrap, no network, only Python's
installation bound read-only) and, once CadQuery is imported, confines itself like a sandbox worker
(:mod:`._confine_worker`: Landlock, a file size limit, seccomp). It never sees the caller's files:
the caller sends each file's bytes down a pipe, the reader writes them into its own scratch tmpfs,
and the mesh comes back down another pipe. Where the OS layer is missing (no bubblewrap or
pyseccomp), the same reader runs unconfined, as any CAD program that opens a STEP file does.

Protocol, both ways on pipes: a request is one JSON line on the child's stdin, ``{"name": shown,
"bytes": n}``, then the file's ``n`` bytes; the reply is one JSON line on a pipe of its own (OCCT
writes to stdout), ``{"vertices": V, "faces": F}`` followed by V×3 float64 and F×3 int64 values, or
``{"error": one-line reason}``. The child says ``{"ready": true}`` once CadQuery is imported (and it
is confined).
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from cad_recode.errors import escape_controls
from cad_recode.geometry._confine_worker import WORKER_FILE_BYTES

MEMORY_BYTES = 8 << 30  # address space: the interpreter with CadQuery takes about 1.5 GiB of it
START_SECONDS = 120.0  # importing CadQuery, on a loaded machine
MAX_STEP_BYTES = WORKER_FILE_BYTES  # the largest file the reader's scratch takes (its RLIMIT_FSIZE)
MAX_MESH_BYTES = 4 << 30  # a reply larger than this is refused before it is read (a mesh of ~90M triangles)
_THREADS = dict(MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
_CHUNK = 1 << 20


class StepReadError(Exception):
    """A file the reader could not read; its message is one line for the user."""


def os_layer_works() -> bool:
    """Can the reader run inside the sandbox's OS layer here (bubblewrap, namespaces, seccomp)?"""
    from cad_recode.geometry.confinement import OsSandboxUnavailable, require_os_sandbox

    try:
        require_os_sandbox()
    except OsSandboxUnavailable:
        return False
    return True


class _TimedOut(Exception):
    """The reader did not answer (or take the file) before the deadline."""


class StepReader:
    """The client: :meth:`read` one file at a time (thread-safe), the reader process started on first use.

    ``confine`` None: inside the OS layer where it works (:func:`os_layer_works`). ``python_args`` replace
    the reader's module (``-m cad_recode.geometry._step_reader``); tests use them for readers that hang or
    crash, which run confined the same way. The reader's own arguments follow them: the reply pipe's fd,
    its scratch directory, and ``confine`` or ``unconfined``.
    """

    def __init__(self, python_args: list[str] | None = None, confine: bool | None = None):
        self.python_args = python_args or ["-m", "cad_recode.geometry._step_reader"]
        self.confine = confine
        self._process: subprocess.Popen | None = None
        self._host_scratch: str | None = None
        self._replies = -1
        self._pending = b""
        self._lock = threading.Lock()

    def read(self, path: Path, timeout: float) -> tuple[np.ndarray, np.ndarray]:
        """(vertices, faces) of ``path``; StepReadError naming the file when it cannot be read in ``timeout`` s."""
        size = path.stat().st_size
        if size > MAX_STEP_BYTES:
            raise StepReadError(f"{path}: the STEP file is {size / 2**20:.0f} MiB, over the {MAX_STEP_BYTES >> 20} "
                                "MiB the reader takes; export the part alone, or as a mesh (.stl)")
        with self._lock:
            self._start()
            deadline = time.monotonic() + timeout
            try:
                self._send((json.dumps({"name": str(path), "bytes": size}) + "\n").encode(), path, size, deadline)
                reply = self._reply(deadline)
                if "error" in reply:
                    raise StepReadError(escape_controls(str(reply["error"])))
                mesh = self._mesh(reply, deadline)
            except _TimedOut:
                self.close()
                raise StepReadError(f"{path}: reading the STEP file took over {timeout:.0f} s and was stopped; "
                                    "export the part alone, or as a mesh (.stl)") from None
            if mesh is None:
                how = self._how_it_ended()
                self.close()
                raise StepReadError(f"{path}: the STEP reader stopped ({how}); the file may be damaged or too "
                                    "large: export the part as a mesh (.stl)")
            return mesh

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process.stdin.close()
            os.close(self._replies)
            self._process, self._replies, self._pending = None, -1, b""
        if self._host_scratch is not None:
            shutil.rmtree(self._host_scratch, ignore_errors=True)
            self._host_scratch = None

    @property
    def confined(self) -> bool:
        if self.confine is None:
            self.confine = os_layer_works()
        return self.confine

    def _start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self.close()
        theirs, ours = os.pipe()[::-1]
        try:
            self._process = self._popen(theirs)
        finally:
            os.close(theirs)
        self._replies = ours
        os.set_blocking(self._process.stdin.fileno(), False)
        try:
            ready = self._reply(time.monotonic() + START_SECONDS).get("ready")
        except _TimedOut:
            ready = False
        if not ready:
            how = self._how_it_ended()
            self.close()
            raise StepReadError(f"the STEP reader did not start ({how}); check that CadQuery imports: "
                                f"{sys.executable} -c 'import cadquery'")

    def _popen(self, reply_fd: int) -> subprocess.Popen:
        from cad_recode.geometry.confinement import SCRATCH_ROOT, bwrap_command

        if self.confined:
            command = bwrap_command([*self.python_args, str(reply_fd), SCRATCH_ROOT, "confine"], _THREADS)
            env = None
        else:
            self._host_scratch = tempfile.mkdtemp(prefix="cad_recode_step_")
            command = [sys.executable, *self.python_args, str(reply_fd), self._host_scratch, "unconfined"]
            env = dict(os.environ, **_THREADS)
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=env, pass_fds=(reply_fd,))

    def _send(self, header: bytes, path: Path, size: int, deadline: float) -> None:
        """Write the request and the file's first ``size`` bytes (the count the request announced), never blocking
        past ``deadline`` whatever the reader does; when the reader stops reading (it died), the reply says how."""
        stdin = self._process.stdin.fileno()
        with open(path, "rb") as source, selectors.DefaultSelector() as selector:
            selector.register(stdin, selectors.EVENT_WRITE)
            pending = memoryview(header)
            while pending:
                if deadline <= time.monotonic():
                    raise _TimedOut
                if selector.select(deadline - time.monotonic()):
                    try:
                        pending = pending[os.write(stdin, pending):]
                    except BlockingIOError:
                        continue
                    except OSError:
                        return
                if not pending and size:
                    pending = memoryview(source.read(min(size, _CHUNK)))
                    size -= len(pending)
                    if not pending:  # the file shrank since its size was taken: the reader would wait for the rest
                        self.close()
                        raise StepReadError(f"{path}: the file changed while it was read; read it again")

    def _fill(self, n: int, deadline: float) -> bool:
        """Read until ``n`` bytes are pending; False when the process ended first."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._replies, selectors.EVENT_READ)
            while len(self._pending) < n:
                if deadline <= time.monotonic():
                    raise _TimedOut
                if selector.select(deadline - time.monotonic()):
                    chunk = os.read(self._replies, max(_CHUNK, n - len(self._pending)))
                    if not chunk:
                        return False
                    self._pending += chunk
        return True

    def _reply(self, deadline: float) -> dict:
        """The next JSON line; {} when the process ended first (or sent no JSON object)."""
        while b"\n" not in self._pending:
            if not self._fill(len(self._pending) + 1, deadline):
                return {}
        line, _, self._pending = self._pending.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            return {}
        return reply if isinstance(reply, dict) else {}

    def _mesh(self, reply: dict, deadline: float) -> tuple[np.ndarray, np.ndarray] | None:
        """The arrays the reply announces; None when it is malformed or the process ended before sending them."""
        counts = reply.get("vertices"), reply.get("faces")
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            return None
        sizes = [c * 3 * 8 for c in counts]
        if sum(sizes) > MAX_MESH_BYTES or not self._fill(sum(sizes), deadline):
            return None
        data, self._pending = self._pending[:sum(sizes)], self._pending[sum(sizes):]
        vertices = np.frombuffer(data, dtype="<f8", count=counts[0] * 3).reshape(-1, 3)
        faces = np.frombuffer(data, dtype="<i8", offset=sizes[0]).reshape(-1, 3)
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            return None  # the reader is not trusted to index its own vertices
        return vertices.astype(np.float64), faces.astype(np.int64)

    def _how_it_ended(self) -> str:
        try:
            code = self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            return "no reply"
        if code < 0:
            return f"signal {-code}"
        # bwrap reports a child killed by a signal as 128 + the signal, as a shell does
        return f"signal {code - 128}" if self.confined and code > 128 else f"exit {code}"


def read_step_arrays(path: Path, shown: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of the STEP file's shapes, tessellated as the sandbox tessellates solids (in this
    process); messages name ``shown`` (the caller's name for the file) instead of ``path``."""
    import cadquery as cq

    from cad_recode.errors import InputError, unreadable
    from cad_recode.geometry.sandbox import ANGULAR_TOLERANCE, TESSELLATION_TOLERANCE

    shown = shown or str(path)
    try:
        shapes = cq.importers.importStep(str(path)).vals()
    except Exception as exc:
        raise unreadable(shown, "a STEP file", exc) from None
    shapes = [s for s in shapes if isinstance(s, cq.Shape)]
    if not shapes:
        raise InputError(f"{shown}: the STEP file holds no shapes; export the part as a solid")
    shape = shapes[0] if len(shapes) == 1 else cq.Compound.makeCompound(shapes)
    try:
        vertices, triangles = shape.tessellate(TESSELLATION_TOLERANCE, ANGULAR_TOLERANCE)
    except Exception as exc:
        raise unreadable(shown, "a STEP file that can be meshed", exc) from None
    if not triangles:
        raise InputError(f"{shown}: the STEP file has no faces to mesh (wires or points only); export a solid")
    return (np.array([v.toTuple() for v in vertices], dtype=np.float64).reshape(-1, 3),
            np.array(triangles, dtype=np.int64).reshape(-1, 3))


def _read_exactly(stream, n: int, into) -> bool:
    """Copy ``n`` bytes of ``stream`` into the file ``into``; False at an early end."""
    while n:
        chunk = stream.read(min(n, _CHUNK))
        if not chunk:
            return False
        into.write(chunk)
        n -= len(chunk)
    return True


def serve(requests, reply_fd: int, scratch: str) -> None:
    """The child's loop: take each file into ``scratch``, read it, reply; a failure that is not the file's
    ends the process."""
    from cad_recode.errors import InputError

    def say(message: dict, *arrays: np.ndarray) -> None:
        for part in ((json.dumps(message) + "\n").encode(), *(a.tobytes() for a in arrays)):
            view = memoryview(part)
            while view:
                view = view[os.write(reply_fd, view):]

    say({"ready": True})
    local = Path(scratch) / "input.step"
    for line in iter(requests.readline, b""):
        request = json.loads(line)
        shown = str(request["name"])
        with open(local, "wb") as handle:
            if not _read_exactly(requests, int(request["bytes"]), handle):
                return
        try:
            vertices, faces = read_step_arrays(local, shown)
        except InputError as err:
            say({"error": " ".join(str(err).split())})
            continue
        except MemoryError:
            say({"error": f"{shown}: reading the STEP file took more than {MEMORY_BYTES >> 30} GiB of "
                          "memory; export the part alone, or as a mesh (.stl)"})
            sys.exit(1)  # the process may be in any state now: the next file starts a fresh one
        finally:
            local.unlink()
        say({"vertices": len(vertices), "faces": len(faces)}, vertices.astype("<f8"), faces.astype("<i8"))


def main(argv: list[str]) -> None:
    reply_fd, scratch, mode = int(argv[0]), argv[1], argv[2]
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    import cadquery  # noqa: F401  # before the first request: its time is not a file's

    if mode == "confine":
        from cad_recode.geometry._confine_worker import confine_worker

        confine_worker(scratch)
    serve(sys.stdin.buffer, reply_fd, scratch)


if __name__ == "__main__":
    main(sys.argv[1:])
