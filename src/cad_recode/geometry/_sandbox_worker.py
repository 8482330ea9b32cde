"""The sandbox's zygote and worker processes, and the execution function they share with the baseline.

Started by :class:`cad_recode.geometry.sandbox.Sandbox` as
``python -m cad_recode.geometry._sandbox_worker zygote SOCKET_FD``. The zygote
imports CadQuery and forks one worker per request on the socket (see
:func:`_zygote`). A worker, on the two pipes it was handed:

1. runs a warm-up program, sets ``RLIMIT_AS`` (its size now + ``memory_mb``),
   points fds 0/1/2 at ``/dev/null`` and sends ``{"kind": "ready", "pid": ...}``;
2. then, until EOF: reads a ``{"kind": "run", ...}`` frame, runs the program
   under a ``SIGALRM`` timer and a re-armed ``RLIMIT_CPU``, and writes one
   ``result`` frame (``"retire": true`` when its address space stayed grown, so
   the parent replaces it).

Frames are those of :mod:`cad_recode.geometry.sandbox` (JSON header + raw arrays).
:func:`execute_program` is also what :func:`cad_recode.geometry.sandbox.execute_unsandboxed`
runs in the calling process.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import signal
import sys
import time
import traceback
import types

import numpy as np

from cad_recode.geometry.sandbox import (
    ANGULAR_TOLERANCE, TESSELLATION_TOLERANCE, ExecResult, ExecStatus, _FRAME_HEAD, encode_frame, failure,
    result_to_frame,
)
from cad_recode.geometry.static_check import ProgramRejected, check_tree, parse_program

_SAFE_BUILTIN_NAMES = (
    "abs", "min", "max", "round", "range", "len", "sum", "int", "float", "bool", "complex", "str",
    "list", "tuple", "dict", "set", "frozenset", "zip", "enumerate", "sorted", "reversed", "map",
    "filter", "any", "all", "pow", "divmod", "isinstance", "slice", "repr", "hash", "chr", "ord",
    "True", "False", "None",
    # exceptions, so that error messages can name them and cadquery can raise them
    "Exception", "ValueError", "TypeError", "ZeroDivisionError", "IndexError", "KeyError",
    "AttributeError", "NameError", "ArithmeticError", "RuntimeError",
)


class _ProgramTimeout(BaseException):
    """Raised by SIGALRM/SIGXCPU inside the program; a BaseException so nothing swallows it."""


def _no_print(*args, **kwargs) -> None:
    """``print`` for programs: output goes nowhere."""


class _CadqueryView(types.SimpleNamespace):
    """What ``import cadquery`` gives a program: its public classes and functions, no submodules.

    Submodules are left out because modules lead to ``os``, ``sys`` and friends by
    plain attribute access (``cq.occ_impl.exporters.os``).
    """

    def __getattr__(self, name: str):  # only called for names the view lacks
        raise AttributeError(f"cadquery.{name} is not available in the sandbox "
                             "(only cadquery's public classes and functions are)")


_cq_view: _CadqueryView | None = None


def _cadquery_view() -> _CadqueryView:
    global _cq_view
    if _cq_view is None:
        import cadquery

        public = {name: getattr(cadquery, name) for name in dir(cadquery) if not name.startswith("_")}
        _cq_view = _CadqueryView(**{n: v for n, v in public.items() if not isinstance(v, types.ModuleType)})
    return _cq_view


def _restricted_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name == "math":
        return math
    if level == 0 and name == "cadquery":
        return _cadquery_view()
    raise ImportError(f"import of '{name}' is not allowed (only cadquery and math)")


def _restricted_builtins() -> dict:
    table = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
    table.update(print=_no_print, __import__=_restricted_import)
    return table


_BUILTINS = _restricted_builtins()


def execute_program(
    code: str, *, tessellate: bool = True, step_path: str | None = None, stl_path: str | None = None,
    tolerance: float = TESSELLATION_TOLERANCE, angular_tolerance: float = ANGULAR_TOLERANCE,
    check: bool = True,
) -> ExecResult:
    """Check, run and measure one program in the calling process (the worker's job).

    Limits (timeouts, memory) are the caller's business; this function turns every
    program failure into an :class:`ExecResult`, except :class:`_ProgramTimeout`
    and ``MemoryError``, which it lets through for the caller to label.
    """
    start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - start  # noqa: E731
    try:
        tree = parse_program(code)
        if check:
            check_tree(tree)
        compiled = compile(tree, "<program>", "exec")
    except ProgramRejected as exc:
        return failure(ExecStatus.REJECTED, str(exc), elapsed())
    except SyntaxError as exc:
        return failure(ExecStatus.SYNTAX, f"line {exc.lineno}: {exc.msg}", elapsed())
    except (ValueError, RecursionError) as exc:  # e.g. too deeply nested to compile
        return failure(ExecStatus.SYNTAX, f"cannot compile the program: {exc}", elapsed())

    namespace: dict = {"__builtins__": _BUILTINS, "__name__": "__program__"}
    try:
        exec(compiled, namespace)
    except (_ProgramTimeout, MemoryError, KeyboardInterrupt):
        raise
    except RecursionError:
        return failure(ExecStatus.ERROR, "RecursionError: maximum recursion depth exceeded", elapsed())
    except SystemExit as exc:
        return failure(ExecStatus.ERROR, f"the program tried to exit (SystemExit {exc.code!r})", elapsed())
    except BaseException as exc:  # anything the program raises is a result, not our failure
        return failure(ExecStatus.ERROR, f"{type(exc).__name__}: {exc}" + _line_of(exc), elapsed())

    try:
        shape, problem = _select_shape(namespace, tree)
        if shape is None:
            return failure(ExecStatus.NO_SOLID, problem, elapsed())
        return _measure(shape, tessellate, step_path, stl_path, tolerance, angular_tolerance, start)
    except (_ProgramTimeout, MemoryError):
        raise
    except Exception as exc:  # OCCT failures on a broken shape
        return failure(ExecStatus.INVALID, f"cannot evaluate the shape: {type(exc).__name__}: {exc}", elapsed())


def _line_of(exc: BaseException) -> str:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<program>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def _assigned_names(tree: ast.Module) -> list[str]:
    """Module-level names in the order of their last assignment in the source."""
    stores = []
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda,
                             ast.FunctionDef, ast.ClassDef)):
            continue  # their names live in their own scope
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            stores.append((node.lineno, node.col_offset, node.id))
        elif isinstance(node, ast.alias):
            stores.append((getattr(node, "lineno", 0), 0, node.asname or node.name.split(".")[0]))
        stack.extend(ast.iter_child_nodes(node))
    stores.sort()
    order: dict[str, None] = {}
    for _, _, name in stores:
        order.pop(name, None)
        order[name] = None
    return list(order)


def _select_shape(namespace: dict, tree: ast.Module):
    """``(shape, "")`` or ``(None, reason)``; the rule is in the sandbox module doc."""
    import cadquery as cq

    candidates = ["r", "result"] + [n for n in reversed(_assigned_names(tree)) if n not in ("r", "result")]
    for name in candidates:
        value = namespace.get(name)
        if isinstance(value, cq.Shape):
            return value, ""
        if isinstance(value, cq.Workplane):
            return _workplane_shape(value), ""
    return None, "the program built no shape: assign a cq.Workplane or cq.Shape to 'r'"


def _workplane_shape(wp):
    import cadquery as cq

    try:
        return wp.findSolid()
    except ValueError:
        shapes = [v for v in wp.vals() if isinstance(v, cq.Shape)]
        if len(shapes) == 1:
            return shapes[0]
        return cq.Compound.makeCompound(shapes)  # no solid: reported as invalid by _measure


def _measure(shape, tessellate, step_path, stl_path, tolerance, angular_tolerance, start) -> ExecResult:
    import cadquery as cq

    elapsed = lambda: time.perf_counter() - start  # noqa: E731
    solids = shape.Solids()
    if not solids:
        kinds = sorted({type(s).__name__ for s in _leaves(shape)})
        if not kinds:
            return failure(ExecStatus.INVALID, "the result is empty: its Workplane holds no shape", elapsed())
        return failure(ExecStatus.INVALID, f"the result has no solid (it holds {', '.join(kinds)}); "
                       "extrude or revolve it", elapsed())
    if len(solids) > 1:
        # One shape per program: fuse so shared space counts once; disjoint solids stay a compound.
        shape = solids[0].fuse(*solids[1:]).clean()
    elif not isinstance(shape, cq.Solid):
        shape = solids[0]
    if not shape.isValid():
        return failure(ExecStatus.INVALID, "the solid fails the B-rep validity check (BRepCheck)", elapsed())
    num_faces = len(shape.Faces())
    if num_faces <= 2:
        return failure(ExecStatus.INVALID, f"the solid has {num_faces} faces; a valid solid has more than 2",
                       elapsed())
    volume = shape.Volume()
    box = shape.BoundingBox()
    extent = max(box.xlen, box.ylen, box.zlen)
    if not volume > 1e-9 * extent**3:
        return failure(ExecStatus.INVALID, f"the solid has no positive volume (volume {volume:.3g})", elapsed())

    vertices = faces = None
    if tessellate:
        points, triangles = shape.tessellate(tolerance, angular_tolerance)
        vertices = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64).reshape(-1, 3)
        faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
        if len(faces) == 0:
            return failure(ExecStatus.INVALID, "the solid tessellates to no triangles", elapsed())
    if step_path or stl_path:
        from cad_recode.atomic import atomic_file

        for path, kind in ((step_path, "STEP"), (stl_path, "STL")):
            if path:
                with atomic_file(path) as tmp:  # the temporary name has no .step/.stl suffix
                    cq.exporters.export(shape, str(tmp), exportType=kind, tolerance=tolerance,
                                        angularTolerance=angular_tolerance)
    return ExecResult(
        ExecStatus.OK, "", vertices, faces, num_faces, float(volume), float(shape.Area()),
        (box.xmin, box.ymin, box.zmin), (box.xmax, box.ymax, box.zmax), elapsed(),
    )


def _leaves(shape):
    import cadquery as cq

    if isinstance(shape, cq.Compound):
        return [leaf for child in shape for leaf in _leaves(child)]
    return [shape]


# ---------------------------------------------------------------------------------------------
# The worker process.


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

        self.resource = resource
        self.base_vm = _vm_bytes()
        self.memory_limit = self.base_vm + memory_mb * 2**20 if self.base_vm else None
        if self.memory_limit:
            try:
                _, hard = resource.getrlimit(resource.RLIMIT_AS)
                limit = self.memory_limit if hard == resource.RLIM_INFINITY else min(hard, self.memory_limit)
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            except (ValueError, OSError):
                self.memory_limit = None
        signal.signal(signal.SIGALRM, self._on_timer)
        signal.signal(signal.SIGXCPU, self._on_cpu)
        self.which = ""

    def _on_timer(self, signum, frame):
        self.which = "timeout"
        raise _ProgramTimeout()

    def _on_cpu(self, signum, frame):
        self.which = "cpu"
        raise _ProgramTimeout()

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

    def grew_too_much(self) -> bool:
        """True when the worker's address space grew by more than half its allowance (leaks, fragments)."""
        if not self.memory_limit:
            return False
        return _vm_bytes() - self.base_vm > (self.memory_limit - self.base_vm) // 2


def _run_request(request: dict, limits: _Limits) -> ExecResult:
    timeout = float(request["timeout"])
    start = time.perf_counter()
    try:
        try:
            limits.arm(timeout, float(request["cpu_seconds"]))
            return execute_program(
                request["code"], tessellate=bool(request.get("tessellate", True)),
                step_path=request.get("step_path"), stl_path=request.get("stl_path"),
                tolerance=float(request.get("tolerance", TESSELLATION_TOLERANCE)),
                angular_tolerance=float(request.get("angular_tolerance", ANGULAR_TOLERANCE)),
                check=bool(request.get("check", True)),
            )
        finally:
            limits.disarm()
    except _ProgramTimeout:
        seconds = time.perf_counter() - start
        if limits.which == "cpu":
            return failure(ExecStatus.TIMEOUT, f"program exceeded the CPU limit of "
                           f"{float(request['cpu_seconds']):g} s", seconds)
        return failure(ExecStatus.TIMEOUT, f"program exceeded the {timeout:g} s timeout", seconds)
    except MemoryError:
        return failure(ExecStatus.MEMORY, "program exceeded the memory limit", time.perf_counter() - start)


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


def _serve(proto_in: int, proto_out: int, config: dict) -> int:
    """A worker's life: warm up, set limits, announce readiness, then run requests until EOF."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):  # the program (and OCCT's C++ output) only ever sees /dev/null
        os.dup2(devnull, fd)
    sys.stdout = open(os.devnull, "w")
    # Warm up CadQuery (first-call costs) before the memory limit, so its size is the baseline.
    execute_program("import cadquery as cq\nr = cq.Workplane('XY').box(1, 1, 1).faces('>Z').hole(0.5)\n")
    limits = _Limits(int(config.get("memory_mb", 2048)))
    os.dup2(devnull, 2)  # start-up errors went to the zygote's log; from now on, nowhere
    sys.stderr = open(os.devnull, "w")
    _write_all(proto_out, encode_frame({"kind": "ready", "pid": os.getpid()}))

    while True:
        head = _read_exact(proto_in, _FRAME_HEAD.size)
        if head is None:
            return 0
        head_len, blob_len = _FRAME_HEAD.unpack(head)
        body = _read_exact(proto_in, head_len + blob_len)
        if body is None:
            return 0
        request = json.loads(body[:head_len])
        try:
            result = _run_request(request, limits)
        except MemoryError:  # even labelling the failure ran out of memory
            result = ExecResult(ExecStatus.MEMORY, "program exceeded the memory limit")
        # A failed allocation is returned whole, so a MemoryError alone is no reason to restart;
        # a worker whose address space stays grown (leaks, fragments) is replaced.
        retire = limits.grew_too_much()
        _write_all(proto_out, result_to_frame(result, retire=retire))
        if retire:
            return 0


def _zygote(sock_fd: int) -> int:
    """Import CadQuery once, then fork a worker for each request that arrives on ``sock_fd``.

    Request: a datagram of JSON config with two fds attached (SCM_RIGHTS): the read end
    of the worker's request pipe and the write end of its result pipe. Reply: for each
    worker that ends, ``{"pid": ..., "status": ...}`` (a ``waitpid`` status), so the
    parent can say how it died. The zygote runs no CadQuery operation itself and stays
    single-threaded, so forking it is safe; it exits when the parent closes the socket.
    """
    import socket

    sock = socket.socket(fileno=sock_fd)
    _cadquery_view()  # the expensive import, shared copy-on-write by every worker

    def reap(signum, frame):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            try:
                sock.send(json.dumps({"pid": pid, "status": status}).encode(), socket.MSG_DONTWAIT)
            except OSError:
                pass  # never block in a handler: a report nobody reads is dropped

    signal.signal(signal.SIGCHLD, reap)
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 2)
        except OSError:
            return 0
        if not message:
            return 0
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                sock.close()
                os.setsid()  # its own session: the parent kills its whole group
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                code = _serve(fds[0], fds[1], json.loads(message))
            except BaseException:
                traceback.print_exc()  # into the zygote's log, which the parent reports
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)


def main(argv: list[str]) -> int:
    """``zygote SOCKET_FD``: run the zygote (see :func:`_zygote`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if len(argv) == 2 and argv[0] == "zygote":
        return _zygote(int(argv[1]))
    print("usage: python -m cad_recode.geometry._sandbox_worker zygote SOCKET_FD", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
