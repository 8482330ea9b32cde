# size: the pool, its zygote and its frame protocol share private state; the OS-confined rewrite (issue 13) splits it.
"""Run untrusted CadQuery programs in a pool of isolated worker processes.

Dataset programs and model outputs are untrusted code: they run only here.

Defences, in order
------------------
1. **Static check** (:mod:`cad_recode.geometry.static_check`) before anything runs:
   only ``cadquery``/``math`` imports and straight-line expressions, no ``_`` names.
2. **Restricted execution** in the worker: a whitelist of builtins (``print`` is a
   no-op), an ``__import__`` that yields only ``math`` and a *view* of ``cadquery``
   holding its public classes and functions (no submodules, so no path to ``os``).
3. **OS limits** per program: a wall-clock timeout (``SIGALRM`` in the worker, and
   a kill from the parent ``KILL_GRACE`` seconds later for code stuck in C), an
   address-space limit (``RLIMIT_AS`` = the worker's size after importing CadQuery
   + ``memory_mb``; ``MemoryError`` -> status ``memory``) and a CPU limit
   (``RLIMIT_CPU``, re-armed per program because it counts the process's total).
4. **Process isolation**: workers are forked from a *zygote*, a fresh interpreter
   (``sys.executable -m cad_recode.geometry._sandbox_worker zygote``, never a fork of
   this process, which may hold torch threads) that imported CadQuery once and
   runs nothing else. A new worker therefore costs milliseconds, not a CadQuery
   import, and shares the imported code copy-on-write. Each worker leads its own
   session; its request/result channel is a pair of private pipes, and its fds
   0/1/2 point at ``/dev/null``, so printing gigabytes blocks nothing. A worker
   that hangs, crashes or exits is killed and replaced; the pool keeps serving.

The zygote starts lazily, on the first ``run``/``map`` (or explicitly with
:meth:`Sandbox.start`, which also waits until every worker is ready); it imports
CadQuery once (a few seconds). ``close()`` (or leaving the ``with`` block) stops
the workers and the zygote; any still running at interpreter exit are stopped by
an ``atexit`` hook. If this process dies, idle workers and the zygote read EOF and
exit, and a busy worker exits after its program's limits stop it.

The timeout covers the whole job in the worker: static check, execution,
validity checks, tessellation and export.

Which shape is the result
-------------------------
The variable ``r``; else ``result``; else the variable most recently assigned in
the source (module level, including inside ``if`` blocks) -- each considered only
if it holds a ``cq.Workplane`` or ``cq.Shape``. From a Workplane the solid is
``findSolid()``: the solids on its stack, else the nearest solid up its parent
chain. When that gives several solids they are fused into one shape (a single
solid when they touch; a compound of disjoint solids otherwise), so volume and
mesh count shared space once.

Validity (the evaluation protocol): ``BRepCheck`` valid (``shape.isValid()``),
more than 2 B-rep faces, positive volume. A shape with no solid (a sketch, a
wire, a face) is ``invalid``; no shape at all is ``no_solid``.

Mesh: ``shape.tessellate(TESSELLATION_TOLERANCE, ANGULAR_TOLERANCE)`` = (0.001, 0.1),
the values of the CAD-Recode/cadrille evaluation. CadQuery meshes with
``BRepMesh_IncrementalMesh(..., isRelative=True, ...)``: the linear deflection is
0.001 x the size of each edge, not 0.001 program units, and the 0.1 rad angular
deflection bounds curved faces. So the mesh density hardly depends on the part's
size (a test part has 510 triangles at 0.01 units, 748 at 1 unit, 808 at 100
units; OCCT's absolute minimum sizes make up the difference), its chord error is
about 0.1% of each edge (far below the CD x10^3 the protocol reports), and it is
fast on 200-unit CAD-Recode parts: there is no reason to deviate from the
protocol values.

Failures are values: ``run`` and ``map`` return an :class:`ExecResult` with a
status and a one-line reason, never raise for a bad program.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

import numpy as np

TESSELLATION_TOLERANCE = 0.001
"""Linear deflection passed to ``Shape.tessellate``, relative to each edge's size (see module doc)."""
ANGULAR_TOLERANCE = 0.1
"""Angular deflection (radians) passed to ``Shape.tessellate``."""
DEFAULT_TIMEOUT = 3.0
"""Seconds per program, as in the evaluation protocol."""
DEFAULT_MEMORY_MB = 2048
KILL_GRACE = 1.0
"""Seconds past the timeout before the parent kills a worker stuck in C code."""
STARTUP_TIMEOUT = 180.0
"""Seconds a worker may take to import CadQuery before it counts as failed."""
_MAX_START_FAILURES = 3


class ExecStatus(str, Enum):
    OK = "ok"
    REJECTED = "rejected"  # failed the static check
    SYNTAX = "syntax_error"
    ERROR = "error"  # raised an exception
    NO_SOLID = "no_solid"  # produced no Workplane/Shape
    INVALID = "invalid"  # produced a shape that is not a valid solid
    TIMEOUT = "timeout"  # wall-clock or CPU limit
    MEMORY = "memory"  # memory limit
    CRASHED = "crashed"  # the worker died (segfault, exit, ...)


@dataclass
class ExecResult:
    """Outcome of one program. ``reason`` is one line, empty when ``ok``."""

    status: ExecStatus
    reason: str = ""
    vertices: np.ndarray | None = None  # (V, 3) float64, program units
    faces: np.ndarray | None = None  # (F, 3) int64, indices into vertices
    num_faces: int = 0  # B-rep faces of the solid
    volume: float = 0.0
    area: float = 0.0
    bbox_min: tuple[float, float, float] | None = None
    bbox_max: tuple[float, float, float] | None = None
    seconds: float = 0.0  # time spent executing (in the worker)

    @property
    def ok(self) -> bool:
        return self.status is ExecStatus.OK

    def to_trimesh(self):
        """The tessellated solid as a ``trimesh.Trimesh``; ``ValueError`` if not ok or not tessellated."""
        if not self.ok or self.vertices is None or self.faces is None:
            raise ValueError(f"no mesh: program status is {self.status.value}: {self.reason or 'not tessellated'}")
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)


def failure(status: ExecStatus, reason: str, seconds: float = 0.0) -> ExecResult:
    """An :class:`ExecResult` for a failure, with ``reason`` squeezed onto one line."""
    one_line = " ".join(str(reason).split())
    if len(one_line) > 300:
        one_line = one_line[:297] + "..."
    return ExecResult(status, one_line, seconds=seconds)


# ---------------------------------------------------------------------------------------------
# Wire format between parent and worker: b"!II" (json length, blob length) + json + blob.
# JSON + raw float64/int64 bytes, never pickle: the parent does not trust what a worker sends.

_FRAME_HEAD = struct.Struct("!II")


def encode_frame(header: dict, blob: bytes | memoryview = b"") -> list[bytes | memoryview]:
    head = json.dumps(header).encode()
    return [_FRAME_HEAD.pack(len(head), len(blob)), head, blob]


def result_to_frame(result: ExecResult, **extra: Any) -> list[bytes | memoryview]:
    header: dict[str, Any] = {**extra,
        "kind": "result", "status": result.status.value, "reason": result.reason,
        "num_faces": result.num_faces, "volume": result.volume, "area": result.area,
        "bbox_min": result.bbox_min, "bbox_max": result.bbox_max, "seconds": result.seconds,
        "nv": 0, "nf": 0,
    }
    blob = b""
    if result.vertices is not None and result.faces is not None:
        v = np.ascontiguousarray(result.vertices, dtype="<f8")
        f = np.ascontiguousarray(result.faces, dtype="<i8")
        header["nv"], header["nf"] = len(v), len(f)
        blob = v.tobytes() + f.tobytes()
    return encode_frame(header, blob)


def result_from_frame(header: dict, blob: bytearray) -> ExecResult:
    nv, nf = int(header["nv"]), int(header["nf"])
    if len(blob) != 24 * (nv + nf):
        raise ValueError("result frame has the wrong size")
    vertices = faces = None
    if nv or nf:
        view = memoryview(blob)  # the arrays share the (writable) frame buffer: no copy
        vertices = np.frombuffer(view[: 24 * nv], dtype="<f8").reshape(nv, 3)
        faces = np.frombuffer(view[24 * nv :], dtype="<i8").reshape(nf, 3)
        if nf and (faces.min() < 0 or faces.max() >= nv):
            raise ValueError("result frame has face indices out of range")
    bbox = lambda b: None if b is None else tuple(float(x) for x in b)  # noqa: E731
    return ExecResult(
        ExecStatus(header["status"]), str(header["reason"]), vertices, faces,
        int(header["num_faces"]), float(header["volume"]), float(header["area"]),
        bbox(header["bbox_min"]), bbox(header["bbox_max"]), float(header["seconds"]),
    )


# ---------------------------------------------------------------------------------------------


def execute_unsandboxed(
    code: str, tessellate: bool = True, *, step_path: str | os.PathLike | None = None,
    stl_path: str | os.PathLike | None = None,
) -> ExecResult:
    """Run ``code`` in *this* process with the worker's exact execution function.

    TRUSTED CODE ONLY: the static check, restricted builtins and import hook
    apply, but there is no timeout, memory limit or process isolation. It is the
    in-process baseline of ``benchmarks/bench_geometry.py``; everything else uses
    :class:`Sandbox`.
    """
    from cad_recode.geometry._sandbox_worker import execute_program

    return execute_program(
        code, tessellate=tessellate,
        step_path=None if step_path is None else str(Path(step_path).absolute()),
        stl_path=None if stl_path is None else str(Path(stl_path).absolute()),
    )


@dataclass
class _Job:
    index: int
    request: dict
    timeout: float


@dataclass
class _Worker:
    requests: int  # fd: we write requests here
    results: int  # fd: the worker writes results here (non-blocking on our side)
    started: float
    pid: int | None = None  # known once the worker says it is ready
    ready: bool = False
    job: _Job | None = None
    deadline: float = 0.0
    buffer: bytearray = field(default_factory=bytearray)
    retiring: bool = False


class _Zygote:
    """A fresh interpreter that imported CadQuery once and forks workers on request.

    Forking *it* (never this process, which may hold torch or other threads) makes a
    new worker cost milliseconds instead of a CadQuery import, so replacing a worker
    after a timeout or crash is cheap, and workers share the imported code
    copy-on-write. See ``_sandbox_worker._zygote`` for its side of the protocol.
    """

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log = tempfile.TemporaryFile()  # its stderr: the reason if it fails to start
        env = dict(os.environ, MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cad_recode.geometry._sandbox_worker", "zygote", str(theirs.fileno())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=env,
            cwd=tempfile.gettempdir(), pass_fds=(theirs.fileno(),), start_new_session=True,
        )
        theirs.close()
        self.sock = ours
        self.exits: dict[int, int] = {}  # worker pid -> waitpid status, as the zygote reports them

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork_worker(self, config: dict) -> tuple[int, int]:
        """Ask for a worker; returns (request fd, result fd). A failed request yields a result fd at EOF."""
        request_r, request_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            socket.send_fds(self.sock, [json.dumps(config).encode()], [request_r, result_w])
        except OSError:
            pass  # the zygote is gone: result_r reads EOF at once and counts as a failed start
        finally:
            os.close(request_r)
            os.close(result_w)
        os.set_blocking(result_r, False)
        return request_w, result_r

    def exit_status(self, pid: int, wait: float) -> int | None:
        """The waitpid status of worker ``pid``, waiting up to ``wait`` s for the zygote's report."""
        end = time.monotonic() + wait
        while pid not in self.exits:
            remaining = end - time.monotonic()
            if remaining <= 0 or not self.alive():
                break
            self.sock.settimeout(remaining)
            try:
                message = self.sock.recv(1 << 16)
            except (socket.timeout, OSError):
                break
            if not message:
                break
            try:
                report = json.loads(message)
                self.exits[int(report["pid"])] = int(report["status"])
            except (ValueError, KeyError, TypeError):
                break
        return self.exits.pop(pid, None)

    def start_error(self) -> str:
        try:
            self.log.seek(0)
            lines = self.log.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError):
            lines = []
        return lines[-1] if lines else f"the worker process could not start (exit code {self.proc.poll()})"

    def close(self) -> None:
        self.sock.close()
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


class Sandbox:
    """A pool of persistent worker processes that run CadQuery programs safely.

    ``workers``: processes; ``timeout``: wall-clock seconds per program (default 3,
    the evaluation protocol); ``memory_mb``: address space a program may add to a
    worker; ``cpu_seconds``: CPU seconds per program (default ``timeout + 1``);
    ``tolerance``/``angular_tolerance``: tessellation (see the module doc).

    Use as a context manager, or call :meth:`close`. Calls from several threads
    are served one after another.
    """

    def __init__(
        self, workers: int = 1, timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
        cpu_seconds: float | None = None, tolerance: float = TESSELLATION_TOLERANCE,
        angular_tolerance: float = ANGULAR_TOLERANCE,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if memory_mb <= 0:
            raise ValueError(f"memory_mb must be > 0, got {memory_mb}")
        if tolerance <= 0 or angular_tolerance <= 0:
            raise ValueError("tessellation tolerances must be > 0")
        self.num_workers = workers
        self.timeout = float(timeout)
        self.memory_mb = int(memory_mb)
        self.cpu_seconds = cpu_seconds
        self.tolerance = float(tolerance)
        self.angular_tolerance = float(angular_tolerance)
        self._workers: list[_Worker] = []
        self._zygote: _Zygote | None = None
        self._start_failures = 0
        self._last_start_error = ""
        self._closed = False
        self._lock = threading.Lock()
        _live_sandboxes.add(self)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start the workers now and wait until all are ready (otherwise they start on first use).

        Raises ``RuntimeError`` when workers cannot start (e.g. CadQuery fails to import).
        """
        if self._closed:
            raise RuntimeError("this Sandbox is closed")
        with self._lock:
            self._drive(deque(), [], None, until_ready=True)
        return self

    def _fill(self) -> None:
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def close(self) -> None:
        """Stop all workers. Idempotent."""
        self._closed = True
        for worker in self._workers:
            self._stop(worker)
        self._workers.clear()
        if self._zygote is not None:
            self._zygote.close()
            self._zygote = None

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # best effort; close() is the contract
        try:
            self.close()
        except Exception:
            pass

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (for monitoring and tests)."""
        return [w.pid for w in self._workers if w.pid is not None]

    # -- running ---------------------------------------------------------------------------------

    def run(
        self, code: str, *, timeout: float | None = None, step_path: str | os.PathLike | None = None,
        stl_path: str | os.PathLike | None = None, tessellate: bool = True, _unchecked: bool = False,
    ) -> ExecResult:
        """Run one program; optionally export the solid to ``step_path``/``stl_path`` (atomic writes).

        ``_unchecked`` skips the static check. It exists only so tests can prove that
        the worker's own defences hold without it; never use it for real programs.
        """
        request = self._request(code, tessellate, _unchecked)
        if step_path is not None:
            request["step_path"] = str(Path(step_path).absolute())
        if stl_path is not None:
            request["stl_path"] = str(Path(stl_path).absolute())
        return self._run_jobs([request], timeout, progress=False)[0]

    def map(
        self, codes: Sequence[str], *, progress: bool | str = False, timeout: float | None = None,
        tessellate: bool = True, tolerances: tuple[float, float] | None = None,
    ) -> list[ExecResult]:
        """Run many programs on all workers; results in input order. ``progress``: tqdm bar (str = label).

        ``tolerances``: (linear, angular) tessellation for these runs instead of the sandbox's own.
        """
        requests = [self._request(code, tessellate, False, tolerances) for code in codes]
        return self._run_jobs(requests, timeout, progress)

    def _request(self, code: str, tessellate: bool, unchecked: bool, tolerances: tuple[float, float] | None = None
                 ) -> dict:
        linear, angular = tolerances if tolerances is not None else (self.tolerance, self.angular_tolerance)
        if linear <= 0 or angular <= 0:
            raise ValueError(f"tessellation tolerances must be > 0, got {linear}, {angular}")
        return {
            "code": code if isinstance(code, str) else None, "tessellate": bool(tessellate),
            "check": not unchecked, "tolerance": float(linear), "angular_tolerance": float(angular),
        }

    def _run_jobs(self, requests: list[dict], timeout: float | None, progress: bool | str) -> list[ExecResult]:
        if self._closed:
            raise RuntimeError("this Sandbox is closed")
        timeout = self.timeout if timeout is None else float(timeout)
        cpu = self.cpu_seconds if self.cpu_seconds is not None else timeout + 1.0
        results: list[ExecResult | None] = [None] * len(requests)
        pending: deque[_Job] = deque()
        for i, request in enumerate(requests):
            if request["code"] is None:
                results[i] = failure(ExecStatus.REJECTED, "a program must be a str")
            else:
                request.update(timeout=timeout, cpu_seconds=cpu)
                pending.append(_Job(i, request, timeout))
        bar = None
        if progress and pending:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(requests), desc=progress if isinstance(progress, str) else "programs",
                       unit="prog", initial=len(requests) - len(pending))
        with self._lock:
            try:
                self._drive(pending, results, bar)
            finally:
                if bar is not None:
                    bar.close()
        return results  # type: ignore[return-value]

    def _drive(self, pending: deque[_Job], results: list, bar, until_ready: bool = False) -> None:
        """Event loop: feed idle workers, collect frames, enforce deadlines, replace dead workers."""
        # size: one select loop whose steps share its locals; split with the OS-confined rewrite (issue 13)
        self._fill()
        outstanding = len(pending)
        sel = selectors.DefaultSelector()
        try:
            for w in self._workers:
                sel.register(w.results, selectors.EVENT_READ, w)

            def finish(job: _Job, result: ExecResult) -> None:
                nonlocal outstanding
                results[job.index] = result
                outstanding -= 1
                if bar is not None:
                    bar.update(1)

            def replace(w: _Worker, kill: bool = False) -> None:
                sel.unregister(w.results)
                self._stop(w, kill)
                new = self._spawn()
                self._workers[self._workers.index(w)] = new
                sel.register(new.results, selectors.EVENT_READ, new)

            for w in list(self._workers):  # workers that died while idle: replace before use
                if w.ready and w.job is None and not self._receive(w)[1]:
                    replace(w)
            while outstanding or (until_ready and not all(w.ready for w in self._workers)):
                now = time.monotonic()
                for w in list(self._workers):
                    if w.ready and w.job is None and pending:
                        job = pending.popleft()
                        if self._send(w, job.request):
                            w.job, w.deadline = job, now + job.timeout + KILL_GRACE
                        else:  # the program never started: give it to the next worker
                            pending.appendleft(job)
                            replace(w)
                if self._start_failures >= _MAX_START_FAILURES:
                    reason = f"sandbox workers fail to start: {self._last_start_error}"
                    for w in self._workers:
                        if w.job is not None:
                            finish(w.job, failure(ExecStatus.CRASHED, reason))
                            w.job = None
                    while pending:
                        finish(pending.popleft(), failure(ExecStatus.CRASHED, reason))
                    self._start_failures = 0  # a later call tries again
                    if until_ready:
                        raise RuntimeError(reason)
                    break
                deadlines = [w.deadline if w.job else w.started + STARTUP_TIMEOUT
                             for w in self._workers if w.job or not w.ready]
                wait = max(0.0, min(deadlines) - now) if deadlines else None
                for key, _ in sel.select(wait):
                    w = key.data
                    frames, alive = self._receive(w)
                    for header, blob in frames:
                        if header.get("kind") == "ready" and not w.ready:
                            w.ready, w.pid = True, int(header["pid"])
                            self._start_failures = 0
                        elif header.get("kind") == "result" and w.job is not None:
                            try:
                                result = result_from_frame(header, blob)
                            except (KeyError, ValueError, TypeError) as exc:
                                result = failure(ExecStatus.CRASHED, f"worker sent a malformed result ({exc})")
                                alive = False
                            finish(w.job, result)
                            w.job = None
                            w.retiring = bool(header.get("retire"))
                        else:
                            alive = False  # protocol violation: do not trust this worker
                    if not alive or w.retiring:
                        if w.job is not None:
                            finish(w.job, self._death_result(w, w.job))
                            w.job = None
                        elif not w.ready:
                            self._note_start_failure(w)
                        replace(w, kill=not w.retiring)  # dead, or not to be trusted
                now = time.monotonic()
                for w in list(self._workers):
                    if w.job is not None and now >= w.deadline:
                        finish(w.job, failure(ExecStatus.TIMEOUT, f"program exceeded the {w.job.timeout:g} s "
                                              "timeout (the worker was killed)", w.job.timeout))
                        w.job = None
                        replace(w, kill=True)
                    elif not w.ready and now >= w.started + STARTUP_TIMEOUT:
                        self._last_start_error = f"no worker ready after {STARTUP_TIMEOUT:g} s"
                        self._start_failures += 1
                        replace(w)
        finally:
            sel.close()
            # Interrupted (e.g. Ctrl-C): a worker still busy with this batch must not
            # answer into the next one.
            for w in [w for w in self._workers if w.job is not None]:
                self._stop(w)
                self._workers.remove(w)

    # -- worker processes ----------------------------------------------------------------------

    def _spawn(self) -> _Worker:
        if self._zygote is None or not self._zygote.alive():
            if self._zygote is not None:
                self._last_start_error = self._zygote.start_error()
                self._zygote.close()
            self._zygote = _Zygote()
        requests, results = self._zygote.fork_worker({"memory_mb": self.memory_mb})
        return _Worker(requests=requests, results=results, started=time.monotonic())

    @staticmethod
    def _send(w: _Worker, request: dict) -> bool:
        try:
            for part in encode_frame({"kind": "run", **request}):
                view = memoryview(part)
                while view:
                    view = view[os.write(w.requests, view):]
            return True
        except OSError:
            return False

    @staticmethod
    def _receive(w: _Worker) -> tuple[list[tuple[dict, bytearray]], bool]:
        """Read what is available; return complete frames and whether the worker is still alive."""
        alive = True
        try:
            chunk = os.read(w.results, max(1 << 16, _frame_remaining(w.buffer)))
            if chunk:
                w.buffer += chunk
            else:
                alive = False
        except BlockingIOError:
            pass
        except OSError:
            alive = False
        frames = []
        while len(w.buffer) >= _FRAME_HEAD.size:
            head_len, blob_len = _FRAME_HEAD.unpack_from(w.buffer)
            end = _FRAME_HEAD.size + head_len + blob_len
            if head_len > 1 << 20 or len(w.buffer) < end:
                alive = alive and head_len <= 1 << 20
                break
            try:
                header = json.loads(bytes(w.buffer[_FRAME_HEAD.size : _FRAME_HEAD.size + head_len]))
                if not isinstance(header, dict):
                    raise ValueError
            except ValueError:
                return frames, False
            frames.append((header, w.buffer[_FRAME_HEAD.size + head_len : end]))
            del w.buffer[:end]
        return frames, alive

    def _death_result(self, w: _Worker, job: _Job) -> ExecResult:
        status = self._zygote.exit_status(w.pid, wait=1.0) if (self._zygote and w.pid) else None
        if status is None:
            how = "it stopped answering"
        elif os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            try:
                how = f"killed by {signal.Signals(number).name}"
            except ValueError:
                how = f"killed by signal {number}"
        else:
            how = f"exited with code {os.waitstatus_to_exitcode(status)}"
        return failure(ExecStatus.CRASHED, f"the worker process died while running the program ({how})")

    def _note_start_failure(self, w: _Worker) -> None:
        self._start_failures += 1
        if self._zygote is not None:
            self._last_start_error = self._zygote.start_error()

    def _stop(self, w: _Worker, kill: bool = True) -> None:
        """Close the worker's pipes; with ``kill`` (it may be alive) also SIGKILL its process group."""
        for fd in (w.requests, w.results):
            try:
                os.close(fd)  # a live worker reads EOF and exits
            except OSError:
                pass
        if kill and w.pid is not None:
            try:
                os.killpg(w.pid, signal.SIGKILL)  # the worker leads its own session
            except (ProcessLookupError, PermissionError):
                pass
            if self._zygote is not None:
                self._zygote.exits.pop(w.pid, None)


def _frame_remaining(buffer: bytearray) -> int:
    if len(buffer) < _FRAME_HEAD.size:
        return 0
    head_len, blob_len = _FRAME_HEAD.unpack_from(buffer)
    return _FRAME_HEAD.size + head_len + blob_len - len(buffer)


_live_sandboxes: weakref.WeakSet[Sandbox] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sandbox in list(_live_sandboxes):
        sandbox.close()


def run_program(code: str, **kwargs) -> ExecResult:
    """Run one program in a fresh one-worker Sandbox (starts CadQuery: seconds). ``kwargs`` go to
    :class:`Sandbox` (workers, timeout, memory_mb, cpu_seconds, tolerance) or :meth:`Sandbox.run`
    (step_path, stl_path, tessellate)."""
    run_keys = {"step_path", "stl_path", "tessellate"}
    run_kwargs = {k: v for k, v in kwargs.items() if k in run_keys}
    with Sandbox(**{k: v for k, v in kwargs.items() if k not in run_keys}) as sandbox:
        return sandbox.run(code, **run_kwargs)
