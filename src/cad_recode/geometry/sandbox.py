"""Run untrusted CadQuery programs in a pool of confined worker processes.

Dataset programs, model outputs and user-edited programs are untrusted code: they run only here.

Defences, outermost first
-------------------------
1. **OS confinement** (:mod:`cad_recode.geometry.confinement`): the zygote and every
   worker live inside bubblewrap (own user/PID/network/IPC namespaces, read-only
   binds of only what Python needs, one tmpfs for scratch directories, die with
   this process). Each worker then confines itself (:mod:`._confine_worker`):
   Landlock (writes only in its own scratch directory, no signals out of its
   domain) and seccomp (no fork/exec, ptrace, sockets, setsid, namespaces). If this
   layer cannot start, :class:`Sandbox` raises :class:`OsSandboxUnavailable` with how
   to install it, unless the caller passes ``unsafe_no_os_sandbox=True``.
2. **No state between programs.** A ``cadquery``-profile program runs alone in a
   fresh process forked from the zygote, and is measured in another: its worker sends
   only its shape, as binary BREP, which another worker (one that never ran a
   ``cadquery``-profile program: each retires after its one) measures and exports
   (:meth:`Sandbox._measure_elsewhere`), so a program that took over its own process
   can choose the shape but not the figures reported for it (ordinary Python has too
   many doors for the profile's rules to be the boundary).
   A strict worker serves at most
   ``programs_per_worker`` programs, each with fresh globals, builtins and read-only
   module views; a program that changed anything shared (checked after each),
   raised, failed or timed out retires its worker. The parent applies the same rule
   itself (:func:`.sandbox_frames.retires_after`): a worker told to retire that
   offers to stay is killed and its result discarded, so a program that took over its
   worker never sees the next request.
3. **Profiles and static check** (:mod:`.profiles`, :mod:`.static_check`): ``strict``
   allows the model's program language through allowlists of cadquery names,
   attributes and keywords; ``cadquery`` allows ordinary CadQuery.
4. **Limits** per program: a wall-clock timeout (``SIGALRM`` in the worker, and a
   kill ``KILL_GRACE`` s later for code stuck in C), ``RLIMIT_AS`` (the worker's
   size + ``memory_mb``), ``RLIMIT_CPU``, and at most ``max_triangles`` triangles.
5. **Results the parent checks** (:mod:`.sandbox_frames`): capped frame sizes, one
   result per request carrying its job's token, a self-consistent mesh, exported
   files that parse (the parent writes them itself, atomically), and a result
   counts only once the worker has cleaned up after it (an ``idle`` frame) or
   exited with code 0. Whatever a worker sends that does not parse costs its own
   job only, and a request waits at most ``SEND_TIMEOUT`` for a worker to read it.

Workers are forked from a *zygote*: a fresh interpreter inside the boundary that
imported CadQuery and ran a fixed warm-up once, and never runs a caller's program.
It starts lazily, on the first ``run``/``map`` (or :meth:`Sandbox.start`). ``close()``
(or leaving the ``with`` block) ends it, and bwrap's PID namespace takes every
worker with it; an ``atexit`` hook closes sandboxes still open at exit.

Which shape is the result
-------------------------
Objects passed to ``show_object`` (``cadquery`` profile), else the variable ``r``, then
``result`` (``cadquery`` profile: ``result``, then ``r``, as ordinary CadQuery names its part);
else the variable most recently assigned in the source -- each
considered only if it holds a ``cq.Workplane``, ``cq.Shape`` or ``cq.Assembly``.
From a Workplane the solid is ``findSolid()``. Several solids are fused into one
shape (a compound of disjoint solids when they do not touch).

Validity: ``BRepCheck`` valid, positive volume, and for ``strict`` programs (the model's, and
generated data) more than 2 B-rep faces, as the evaluation protocol says; a ``cadquery`` program's
part may have fewer (a ball, a cone). A shape with no solid is ``invalid``; no shape at all is ``no_solid``.

Mesh: ``shape.tessellate(TESSELLATION_TOLERANCE, ANGULAR_TOLERANCE)`` = (0.001, 0.1),
the values of the CAD-Recode/cadrille evaluation; CadQuery meshes with a linear
deflection relative to each edge's size, so the density hardly depends on the
part's size.

Failures are values: ``run`` and ``map`` return an :class:`ExecResult` with a
status and a one-line printable reason, never raise for a bad program.
"""

from __future__ import annotations

import atexit
import os
import secrets
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Sequence

from cad_recode.geometry.confinement import OsSandboxUnavailable, require_os_sandbox  # noqa: F401
from cad_recode.geometry.exec_result import (  # noqa: F401  (re-exported: the public API)
    ANGULAR_TOLERANCE, DEFAULT_MAX_TRIANGLES, TESSELLATION_TOLERANCE, ExecResult, ExecStatus, failure,
    printable_line,
)
from cad_recode.geometry.profiles import DEFAULT_PROFILE, PROTOCOL_TIMEOUT, Profile, as_profile
from cad_recode.geometry.sandbox_loop import EXIT_GRACE, KILL_GRACE, STARTUP_TIMEOUT, Loop  # noqa: F401
from cad_recode.geometry.sandbox_processes import _Job, _Worker, _Zygote, how_it_ended
from cad_recode.geometry.static_check import MAX_PROGRAM_BYTES

DEFAULT_TIMEOUT = PROTOCOL_TIMEOUT
"""Seconds per program, as in the evaluation protocol."""
DEFAULT_MEMORY_MB = 2048
DEFAULT_PROGRAMS_PER_WORKER = 64
"""Strict programs a worker serves before it is replaced (``cadquery``-profile programs: one)."""


def execute_unsandboxed(
    code: str, tessellate: bool = True, *, step_path: str | os.PathLike | None = None,
    stl_path: str | os.PathLike | None = None, profile: Profile | str = DEFAULT_PROFILE,
) -> ExecResult:
    """Run ``code`` in *this* process with the worker's exact execution function.

    TRUSTED CODE ONLY: the static check and restricted namespaces apply, but there
    is no OS confinement, timeout, memory limit or process isolation. It is the
    in-process baseline of ``benchmarks/bench_geometry.py``; everything else uses
    :class:`Sandbox`.
    """
    from cad_recode.geometry.program_exec import execute_program, export_shape

    outcome = execute_program(code, tessellate=tessellate, profile=profile)
    for path, kind in ((step_path, "STEP"), (stl_path, "STL")):
        if path is not None and outcome.result.ok:
            from cad_recode.atomic import atomic_file

            with atomic_file(Path(path).absolute()) as tmp:
                export_shape(outcome.shape, str(tmp), kind, TESSELLATION_TOLERANCE, ANGULAR_TOLERANCE)
    return outcome.result


class Sandbox:
    """A pool of confined worker processes that run CadQuery programs safely.

    ``workers``: programs run at once; ``timeout``: wall-clock seconds per program
    (default 3, the evaluation protocol); ``memory_mb``: address space a program may
    add to a worker; ``cpu_seconds``: CPU seconds per program (default ``timeout +
    1``); ``tolerance``/``angular_tolerance``: tessellation (see the module doc);
    ``profile``: ``"strict"`` (the model's language, the default) or ``"cadquery"``
    (ordinary CadQuery), overridable per call; ``max_triangles``: most triangles a
    result's mesh may have; ``programs_per_worker``: strict programs a worker serves
    before it is replaced; ``unsafe_no_os_sandbox``: run without the OS layer
    (UNSAFE: only for trusted programs on machines without bubblewrap).

    Raises :class:`OsSandboxUnavailable` (one line: what is missing, how to install
    it) when the OS layer cannot start and ``unsafe_no_os_sandbox`` is False. Use as
    a context manager, or call :meth:`close`. Calls from several threads are served
    one after another.
    """

    def __init__(
        self, workers: int = 1, timeout: float = DEFAULT_TIMEOUT, memory_mb: int = DEFAULT_MEMORY_MB,
        cpu_seconds: float | None = None, tolerance: float = TESSELLATION_TOLERANCE,
        angular_tolerance: float = ANGULAR_TOLERANCE, *, profile: Profile | str = DEFAULT_PROFILE,
        max_triangles: int = DEFAULT_MAX_TRIANGLES, programs_per_worker: int = DEFAULT_PROGRAMS_PER_WORKER,
        unsafe_no_os_sandbox: bool | None = None,
    ):
        for name, value in (("workers", workers), ("max_triangles", max_triangles),
                            ("programs_per_worker", programs_per_worker)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        if memory_mb <= 0:
            raise ValueError(f"memory_mb must be > 0, got {memory_mb}")
        if tolerance <= 0 or angular_tolerance <= 0:
            raise ValueError("tessellation tolerances must be > 0")
        self.profile = as_profile(profile)
        if unsafe_no_os_sandbox is None:  # the process-wide choice (the CLI's --unsafe_no_os_sandbox)
            unsafe_no_os_sandbox = _UNCONFINED_BY_DEFAULT
        self.confined = not unsafe_no_os_sandbox
        self._closed = True  # until the checks below pass: nothing to close
        if self.confined:
            require_os_sandbox()
        self.num_workers = workers
        self.timeout = float(timeout)
        self.memory_mb = int(memory_mb)
        self.cpu_seconds = cpu_seconds
        self.tolerance = float(tolerance)
        self.angular_tolerance = float(angular_tolerance)
        self.max_triangles = int(max_triangles)
        self.programs_per_worker = int(programs_per_worker)
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

    def close(self) -> None:
        """Stop all workers. Idempotent."""
        self._closed = True
        for worker in getattr(self, "_workers", ()):
            self._stop(worker)
        if getattr(self, "_workers", None):
            self._workers.clear()
        if getattr(self, "_zygote", None) is not None:
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
        """Process ids of the current workers, as the sandbox's PID namespace numbers them (for tests)."""
        return [w.pid for w in self._workers if w.pid is not None]

    # -- running ---------------------------------------------------------------------------------

    def run(
        self, code: str, *, timeout: float | None = None, step_path: str | os.PathLike | None = None,
        stl_path: str | os.PathLike | None = None, tessellate: bool = True, profile: Profile | str | None = None,
        _unchecked: bool = False,
    ) -> ExecResult:
        """Run one program; optionally export the solid to ``step_path``/``stl_path`` (written atomically here).

        ``_unchecked`` skips the static check. It exists only so tests can prove that
        the worker's own defences hold without it; never use it for real programs.
        """
        request = self._request(code, tessellate, _unchecked, None, profile)
        paths = {kind: Path(p).absolute() for kind, p in (("STEP", step_path), ("STL", stl_path)) if p is not None}
        request["exports"] = list(paths)
        return self._run_jobs([(request, paths)], timeout, progress=False)[0]

    def map(
        self, codes: Sequence[str], *, progress: bool | str = False, timeout: float | None = None,
        tessellate: bool = True, tolerances: tuple[float, float] | None = None,
        profile: Profile | str | None = None,
    ) -> list[ExecResult]:
        """Run many programs on all workers; results in input order. ``progress``: tqdm bar (str = label).

        ``tolerances``: (linear, angular) tessellation for these runs instead of the sandbox's own.
        """
        requests = [(self._request(code, tessellate, False, tolerances, profile), {}) for code in codes]
        return self._run_jobs(requests, timeout, progress)

    def _request(self, code: str, tessellate: bool, unchecked: bool, tolerances: tuple[float, float] | None,
                 profile: Profile | str | None) -> dict:
        linear, angular = tolerances if tolerances is not None else (self.tolerance, self.angular_tolerance)
        if linear <= 0 or angular <= 0:
            raise ValueError(f"tessellation tolerances must be > 0, got {linear}, {angular}")
        return {
            "code": code if isinstance(code, str) else None, "tessellate": bool(tessellate),
            "check": not unchecked, "tolerance": float(linear), "angular_tolerance": float(angular),
            "profile": (self.profile if profile is None else as_profile(profile)).value,
            "max_triangles": self.max_triangles, "exports": [], "token": "",
        }

    def _run_jobs(self, requests: list[tuple[dict, dict]], timeout: float | None,
                  progress: bool | str) -> list[ExecResult]:
        if self._closed:
            raise RuntimeError("this Sandbox is closed")
        timeout = self.timeout if timeout is None else float(timeout)
        cpu = self.cpu_seconds if self.cpu_seconds is not None else timeout + 1.0
        results: list[ExecResult | None] = [None] * len(requests)
        pending: deque[_Job] = deque()
        for i, (request, paths) in enumerate(requests):
            if request["code"] is None:
                results[i] = failure(ExecStatus.REJECTED, "a program must be a str")
            elif (size := len(request["code"].encode("utf-8", "surrogatepass"))) > MAX_PROGRAM_BYTES:  # even unchecked
                results[i] = failure(ExecStatus.REJECTED, f"program is {size} bytes; the limit is {MAX_PROGRAM_BYTES}")
            else:
                request.update(timeout=timeout, cpu_seconds=cpu, token=secrets.token_hex(16))
                pending.append(_Job(i, request, timeout, paths))
        two_stage = [job for job in pending if job.request["profile"] == Profile.CADQUERY.value]
        asked = {job.index: (dict(job.request), job.paths) for job in two_stage}
        for job in two_stage:  # the first stage: run the program, send its shape back as BREP bytes
            job.request.update(tessellate=False, exports=["BREP"])
            job.paths = {}
        bar = None
        if progress and pending:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(requests), desc=progress if isinstance(progress, str) else "programs",
                       unit="prog", initial=len(requests) - len(pending))
        with self._lock:
            try:
                self._drive(pending, results, None if two_stage else bar)
                if two_stage:
                    self._measure_elsewhere(two_stage, asked, results, bar)
            finally:
                if bar is not None:
                    bar.close()
        return results  # type: ignore[return-value]

    def _measure_elsewhere(self, first: list[_Job], asked: dict[int, tuple[dict, dict]], results: list,
                           bar) -> None:
        """The second stage of ``cadquery``-profile programs: each shape, as the BREP bytes its first stage
        sent, is measured (and exported) by a worker that never ran a cadquery-profile program. Whatever the program
        did to its own process, a forged frame included, can then only choose the shape that is measured."""
        measure: deque[_Job] = deque()
        for job in first:
            if results[job.index].ok and job.brep is not None:
                request, paths = asked[job.index]
                request.update(stage="measure", code="", token=secrets.token_hex(16))
                measure.append(_Job(job.index, request, job.timeout, paths, blob=job.brep))
            elif bar is not None:
                bar.update(1)
        ran_for = {job.index: results[job.index].seconds for job in measure}
        self._drive(measure, results, bar)
        for index, seconds in ran_for.items():
            results[index].seconds += seconds

    def _drive(self, pending: deque[_Job], results: list, bar, until_ready: bool = False) -> None:
        """Event loop: feed idle workers, collect frames, settle results, enforce deadlines, replace workers."""
        self._fill()
        loop = Loop(self, pending, results, bar)
        try:
            loop.run(until_ready)
        finally:
            loop.sel.close()
            # Interrupted (e.g. Ctrl-C): a worker still busy with this batch must not answer into the next one.
            for w in [w for w in self._workers if w.job is not None]:
                self._stop(w)
                self._workers.remove(w)

    # -- worker processes ----------------------------------------------------------------------

    def _fill(self) -> None:
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        if self._closed:  # a run still going in another thread when close() came: end it, start nothing
            raise RuntimeError("this Sandbox is closed")
        if self._zygote is None or not self._zygote.alive():
            if self._zygote is not None:
                self._last_start_error = self._zygote.start_error()
                self._zygote.close()
            self._zygote = _Zygote(confine=self.confined)
        requests, results, fork = self._zygote.fork_worker({
            "memory_mb": self.memory_mb, "confine": self.confined, "programs_per_worker": self.programs_per_worker})
        return _Worker(requests=requests, results=results, started=time.monotonic(), fork=fork)

    def _stop(self, w: _Worker, kill: bool = True) -> None:
        """Close the worker's pipes; with ``kill`` (it may be alive) also have the zygote SIGKILL it."""
        for fd in (w.requests, w.results):
            try:
                os.close(fd)  # a live worker reads EOF and exits
            except OSError:
                pass
        if kill and self._zygote is not None:
            self._zygote.kill(w.fork)
            self._zygote.exits.pop(w.fork, None)

    def _death_result(self, w: _Worker) -> ExecResult:
        status = None
        if self._zygote is not None:
            if w.fork not in self._zygote.exits:
                self._zygote.read_reports(wait=1.0)
            status = self._zygote.exits.pop(w.fork, None)
        return failure(ExecStatus.CRASHED, f"the worker process died while running the program ({how_it_ended(status)})")

    def _note_start_failure(self) -> None:
        self._start_failures += 1
        if self._zygote is not None:
            self._last_start_error = self._zygote.start_error()

    def _commit(self, w: _Worker) -> ExecResult:
        """The worker's pending result, now trusted; its files written (atomically) where the caller asked."""
        result, exports = w.pending
        w.pending = None
        w.job.brep = exports.get("BREP") if result.ok else None
        from cad_recode.atomic import atomic_file

        for kind, path in (w.job.paths.items() if result.ok else ()):
            try:
                with atomic_file(path) as tmp:
                    Path(tmp).write_bytes(exports[kind])
            except OSError as exc:
                return failure(ExecStatus.ERROR, f"cannot write the {kind} file {path}: {exc.strerror or exc}")
        return result


_live_sandboxes: weakref.WeakSet[Sandbox] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sandbox in list(_live_sandboxes):
        sandbox.close()


_UNCONFINED_BY_DEFAULT = False


def allow_unconfined_sandboxes() -> None:
    """Every Sandbox made later in this process runs without the OS layer unless told otherwise.

    Only the CLI's explicit ``--unsafe_no_os_sandbox`` calls this: it is the documented, unsafe opt-out.
    """
    global _UNCONFINED_BY_DEFAULT
    _UNCONFINED_BY_DEFAULT = True


def run_program(code: str, **kwargs) -> ExecResult:
    """Run one program in a fresh one-worker Sandbox (starts CadQuery: seconds). ``kwargs`` go to
    :class:`Sandbox` (workers, timeout, memory_mb, cpu_seconds, tolerance, profile, unsafe_no_os_sandbox, ...)
    or :meth:`Sandbox.run` (step_path, stl_path, tessellate)."""
    run_keys = {"step_path", "stl_path", "tessellate"}
    run_kwargs = {k: v for k, v in kwargs.items() if k in run_keys}
    with Sandbox(**{k: v for k, v in kwargs.items() if k not in run_keys}) as sandbox:
        return sandbox.run(code, **run_kwargs)
