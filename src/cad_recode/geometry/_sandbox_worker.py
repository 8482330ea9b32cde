"""The sandbox's zygote and worker processes.

Started by :class:`cad_recode.geometry.sandbox.Sandbox` as
``python -m cad_recode.geometry._sandbox_worker zygote SOCKET_FD SCRATCH_ROOT``,
inside bubblewrap (:mod:`cad_recode.geometry.confinement`) unless the caller opted
out. The zygote imports CadQuery, runs a fixed warm-up (never a caller's program),
freezes its heap and then only forks workers and kills them on request (see
:func:`_zygote`). OCCT's thread pool is limited to the calling thread before
anything else, so the zygote stays single-threaded and forking it is safe.

A worker, on the two pipes it was handed:

1. makes its scratch directory ``SCRATCH_ROOT/<pid>``, confines itself (Landlock:
   writes only there; seccomp: no new processes, no ptrace, no sockets, ...; see
   :mod:`cad_recode.geometry._confine_worker`), sets ``RLIMIT_AS`` (its size + the
   allowance) and sends ``{"kind": "ready", ...}``;
2. then, for each ``run`` request: runs the program under a ``SIGALRM`` timer and
   ``RLIMIT_CPU`` (or, for a ``measure`` request, reads a shape from the BREP bytes
   after the header and measures it), writes exactly one ``result`` frame (with the request's token),
   drops everything the program made, and either sends ``{"kind": "idle"}`` or,
   when retiring, exits with code 0. It retires after a ``cadquery``-profile
   program, after any program that ran and failed, after a program that changed
   shared state, after one that left it holding :data:`KEPT_MEMORY_BYTES` more
   memory, and after ``programs_per_worker`` programs.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import shutil
import signal
import sys
import time
import traceback

from cad_recode.geometry.exec_result import ExecResult, ExecStatus, failure
from cad_recode.geometry.profiles import Profile
from cad_recode.geometry.sandbox_frames import FRAME_HEAD, encode_frame, result_to_frame, retires_after

_WARM_UP = "import cadquery as cq\nr = cq.Workplane('XY').box(1, 1, 1).faces('>Z').hole(0.5)\n"
_WARM_UP_CADQUERY = ("import cadquery as cq\nimport math\ndef part(n):\n    return cq.Workplane().box(n, n, n)"
                     ".edges('|Z').fillet(0.1)\nshow_object(part(2).union(cq.Workplane().sphere(0.5)))\n")
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4
KEPT_MEMORY_BYTES = 64 << 20
"""A worker that still holds this much more address space after a program than before its first one retires:
the memory limit counts the whole process, so what one program left behind would be missing from the next's.
128 generated programs in a row leave about 2 MB."""


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _cpu_used() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Limits:
    """Per-program limits of the worker process: SIGALRM timer, RLIMIT_CPU re-armed, RLIMIT_AS fixed."""

    def __init__(self, memory_mb: int):
        import resource

        from cad_recode.geometry.program_exec import ProgramTimeout

        self.resource, self.timeout_error = resource, ProgramTimeout
        base = self.base = _vm_bytes()
        if base:
            try:
                _, hard = resource.getrlimit(resource.RLIMIT_AS)
                limit = base + memory_mb * 2**20
                limit = limit if hard == resource.RLIM_INFINITY else min(hard, limit)
                # the hard limit too: with it left above, a program raised its own soft limit and got past memory_mb
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            except (ValueError, OSError):
                pass
        signal.signal(signal.SIGALRM, self._on_signal)
        signal.signal(signal.SIGXCPU, self._on_signal)
        self.which = ""

    def kept_memory(self) -> int:
        """Bytes of address space the worker holds beyond what it held before its first program."""
        return _vm_bytes() - self.base if self.base else 0

    def _on_signal(self, signum, frame):
        self.which = "cpu" if signum == signal.SIGXCPU else "timeout"
        raise self.timeout_error()

    def arm(self, timeout: float, cpu_seconds: float) -> None:
        self.which = ""
        r = self.resource
        _, hard = r.getrlimit(r.RLIMIT_CPU)
        soft = math.ceil(_cpu_used() + cpu_seconds)  # RLIMIT_CPU counts the whole process: re-arm
        try:
            r.setrlimit(r.RLIMIT_CPU, (soft if hard == r.RLIM_INFINITY else min(soft, hard), hard))
        except (ValueError, OSError):
            pass
        signal.setitimer(signal.ITIMER_REAL, timeout)

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        r = self.resource
        _, hard = r.getrlimit(r.RLIMIT_CPU)
        try:
            r.setrlimit(r.RLIMIT_CPU, (hard, hard))
        except (ValueError, OSError):
            pass


def _run_request(request: dict, blob: bytes, limits: _Limits, tamper, scratch: str) -> tuple[ExecResult, dict, str]:
    """(result, exported files by kind, what the program tampered with) for one request.

    A ``measure`` request carries a shape's BREP bytes (``blob``) instead of a program: the second
    stage of a ``cadquery``-profile program, whose first stage sent the shape as a "BREP" export.
    """
    from cad_recode.geometry.program_exec import (
        ProgramTimeout, execute_program, export_shape, measure_brep, shape_to_brep,
    )

    timeout = float(request["timeout"])
    start = time.perf_counter()
    exports: dict[str, bytes] = {}
    options = dict(tessellate=bool(request["tessellate"]), tolerance=float(request["tolerance"]),
                   angular_tolerance=float(request["angular_tolerance"]), max_triangles=int(request["max_triangles"]))
    try:
        try:
            limits.arm(timeout, float(request["cpu_seconds"]))
            if request.get("stage") == "measure":
                outcome = measure_brep(blob, **options)
            else:
                outcome = execute_program(request["code"], check=bool(request["check"]), profile=request["profile"],
                                          tamper=tamper, **options)
            for kind in request["exports"] if outcome.result.ok else ():
                if kind == "BREP":
                    exports[kind] = shape_to_brep(outcome.shape)
                    continue
                path = os.path.join(scratch, f"export.{kind.lower()}")
                export_shape(outcome.shape, path, kind, float(request["tolerance"]),
                             float(request["angular_tolerance"]))
                with open(path, "rb") as f:
                    exports[kind] = f.read()
                os.unlink(path)
            return outcome.result, exports, outcome.tampered
        finally:
            limits.disarm()
    except ProgramTimeout:
        seconds = time.perf_counter() - start
        if limits.which == "cpu":
            return failure(ExecStatus.TIMEOUT, f"program exceeded the CPU limit of "
                           f"{float(request['cpu_seconds']):g} s", seconds), {}, ""
        return failure(ExecStatus.TIMEOUT, f"program exceeded the {timeout:g} s timeout", seconds), {}, ""
    except MemoryError:
        return failure(ExecStatus.MEMORY, "program exceeded the memory limit", time.perf_counter() - start), {}, ""
    except Exception as exc:  # an export failed: the solid was fine, the file was not
        from cad_recode.geometry.program_exec import exception_text

        return failure(ExecStatus.INVALID, f"cannot export the solid: {exception_text(exc)}",
                       time.perf_counter() - start), {}, ""


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, parts) -> None:
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _clear_scratch(scratch: str) -> None:
    """Empty the worker's scratch directory after a program (best effort: the zygote removes it for good)."""
    remove_tree(scratch, keep_root=True)


def remove_tree(root: str, keep_root: bool = False) -> None:
    """Remove everything under ``root`` (and ``root`` itself unless ``keep_root``) that can be removed.

    Written against what a program may leave: thousands of nested directories (a recursive removal
    overflowed the stack, and a path that deep is too long for the kernel), so each directory is
    first moved up to ``root`` and the walk is a loop; and directories without read permission (made
    with ``mkdir(d, 0o300)``, no chmod needed), which are made readable where chmod is allowed (in
    the zygote; the worker's seccomp filter refuses it). Never raises.
    """
    moved = 0
    pending: list[tuple[str, bool]] = [(root, False)]  # (directory, emptied already: only rmdir is left)
    while pending:
        directory, emptied = pending.pop()
        if emptied:
            _remove_empty(directory)
            continue
        try:
            os.chmod(directory, 0o700)
        except OSError:
            pass
        try:
            entries = list(os.scandir(directory))
        except OSError:
            entries = []
        in_place = []  # subdirectories removed where they are: this directory waits for them
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
                    continue
            except OSError:
                continue
            moved += 1
            flat = os.path.join(root, f".removing-{moved}")
            try:  # up to the root: paths stay short however deep the tree was
                os.rename(entry.path, flat)
                pending.append((flat, False))
            except OSError:  # the name is taken (the program made it)
                in_place.append(entry.path)
        if directory != root:
            pending.append((directory, True))
        pending += [(path, False) for path in in_place]
    if not keep_root:
        _remove_empty(root)


def _remove_empty(directory: str) -> None:
    try:
        os.rmdir(directory)
    except OSError:
        pass


def _serve(proto_in: int, proto_out: int, config: dict, scratch_root: str, tamper) -> int:
    """A worker's life (see the module doc)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # the zygote's end is ours too
    scratch = os.path.join(scratch_root, str(os.getpid()))
    os.mkdir(scratch, 0o700)
    os.chdir(scratch)
    os.environ.update(TMPDIR=scratch, HOME=scratch)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # the program (and OCCT's C++ output) only ever sees /dev/null
        os.dup2(devnull, fd)
    sys.stdout = open(os.devnull, "w")
    confined = {}
    if config.get("confine", True):
        from cad_recode.geometry._confine_worker import confine_worker

        confined = confine_worker(scratch)
    limits = _Limits(int(config["memory_mb"]))
    os.dup2(devnull, 2)  # start-up errors went to the zygote's log; from now on, nowhere
    sys.stderr = open(os.devnull, "w")
    _write_all(proto_out, encode_frame({"kind": "ready", "pid": os.getpid(), **confined}))
    served, most = 0, int(config.get("programs_per_worker", 1))
    while True:
        head = _read_exact(proto_in, FRAME_HEAD.size)
        if head is None:
            return 0
        head_len, blob_len = FRAME_HEAD.unpack(head)
        body = _read_exact(proto_in, head_len + blob_len)
        if body is None:
            return 0
        request = json.loads(body[:head_len])
        try:
            result, exports, tampered = _run_request(request, body[head_len:], limits, tamper, scratch)
        except MemoryError:  # even labelling the failure ran out of memory
            result, exports, tampered = ExecResult(ExecStatus.MEMORY, "program exceeded the memory limit"), {}, ""
        tamper.restore_dispatchers()
        served += 1
        retire = bool(tampered) or retires_after(served, most, result.status, request["profile"]) \
            or _keeps_memory(limits)
        _write_all(proto_out, result_to_frame(result, request["token"], exports, retire=retire))
        del result, exports, request, body
        gc.collect()  # the program's objects die here, while its result is not yet trusted
        _clear_scratch(scratch)
        if retire:
            return 0
        _write_all(proto_out, encode_frame({"kind": "idle"}))


def _keeps_memory(limits: _Limits) -> bool:
    """Does the worker hold :data:`KEPT_MEMORY_BYTES` more than before its first program, even once the
    program's cycles are collected (a class a program made, such as a multimethod key's type, lives in one)?"""
    if limits.kept_memory() <= KEPT_MEMORY_BYTES:
        return False
    gc.collect()
    return limits.kept_memory() > KEPT_MEMORY_BYTES


def _warm_up(scratch_root: str):
    """Run fixed programs so workers inherit a warm CadQuery; return the tamper fingerprints."""
    from OCP.OSD import OSD_ThreadPool

    OSD_ThreadPool.DefaultPool_s(1)  # before any OCCT call: no pool threads, so forking stays safe
    from cad_recode.geometry.first_use import cache_slot_names, refuse_text_annotations, resolve_cadquery_dispatch
    from cad_recode.geometry.program_exec import execute_program, export_shape
    from cad_recode.geometry.program_namespace import TamperCheck, warm_views

    warm_views()
    outcome = execute_program(_WARM_UP)
    execute_program(_WARM_UP_CADQUERY, profile=Profile.CADQUERY)
    # before the fingerprints: what cadquery caches on first use would read as a program's change
    resolve_cadquery_dispatch()
    cache_slot_names()
    refuse_text_annotations()
    warm_dir = os.path.join(scratch_root, "warm-up")
    os.makedirs(warm_dir, exist_ok=True)
    for kind in ("STEP", "STL"):
        export_shape(outcome.shape, os.path.join(warm_dir, f"w.{kind.lower()}"), kind, 0.001, 0.1)
    shutil.rmtree(warm_dir, ignore_errors=True)
    tamper = TamperCheck()
    gc.collect()
    gc.freeze()  # the collector leaves inherited objects alone: fewer copy-on-write pages per worker
    return tamper


def _zygote(sock_fd: int, scratch_root: str) -> int:
    """Warm up, then serve the parent's datagrams on ``sock_fd`` until it closes the socket.

    ``{"op": "fork", "fork": F, ...config}`` with two fds attached (SCM_RIGHTS: the
    read end of the worker's request pipe, the write end of its result pipe) forks a
    worker the parent calls F; ``{"op": "kill", "fork": F}`` kills it. For each worker
    that ends the zygote removes its scratch directory and sends ``{"fork": F,
    "status": ...}`` (a ``waitpid`` status). Workers are named by F, not by pid: a
    pid is reused, and a report that came late for one worker was read as the clean
    exit of the next worker that got its pid, which then ran on, unkilled.
    """
    import socket

    sock = socket.socket(fileno=sock_fd)
    tamper = _warm_up(scratch_root)
    ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/<pid>/mem access by workers
    # pid -> the parent's number for that fork: a pid is reused, and a late report or kill for a worker that
    # is gone must never be read as one for the next worker that happens to get its pid
    workers: dict[int, int] = {}

    def reap(signum, frame):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            fork = workers.pop(pid, None)
            remove_tree(os.path.join(scratch_root, str(pid)))
            try:
                sock.send(json.dumps({"fork": fork, "status": status}).encode(), socket.MSG_DONTWAIT)
            except OSError:
                pass  # never block in a handler: a report nobody reads is dropped

    signal.signal(signal.SIGCHLD, reap)
    try:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2)
            except OSError:
                return 0
            if not message:
                return 0
            request = json.loads(message)
            if request.get("op") == "kill":
                for pid in [pid for pid, fork in workers.items() if fork == request.get("fork")]:
                    os.kill(pid, signal.SIGKILL)
                continue
            if len(fds) != 2:
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:  # the worker
                code = 1
                try:
                    sock.close()
                    os.setsid()  # its own session and group, before seccomp forbids it
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    code = _serve(fds[0], fds[1], request, scratch_root, tamper)
                except BaseException:
                    traceback.print_exc()  # into the zygote's log, which the parent reports
                finally:
                    os._exit(code)
            workers[pid] = request.get("fork")
            for fd in fds:
                os.close(fd)
    finally:
        for pid in list(workers):  # without bwrap's PID namespace, nothing else would stop them
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def main(argv: list[str]) -> int:
    """``zygote SOCKET_FD SCRATCH_ROOT``: run the zygote (see :func:`_zygote`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if len(argv) == 3 and argv[0] == "zygote":
        return _zygote(int(argv[1]), argv[2])
    print("usage: python -m cad_recode.geometry._sandbox_worker zygote SOCKET_FD SCRATCH_ROOT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
