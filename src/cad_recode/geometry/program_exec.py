"""Check, run and measure one program in the calling process: the job of a sandbox worker.

:func:`execute_program` is what a worker runs for each request, and what
:func:`cad_recode.geometry.sandbox.execute_unsandboxed` runs in the calling process
(the benchmark's baseline); :func:`measure_brep` is the second stage of a
``cadquery``-profile program, run by another worker on the shape's BREP bytes.
Limits (timeouts, memory) and confinement are the caller's business; every program
failure becomes an :class:`ExecResult`, except :class:`ProgramTimeout` and
``MemoryError``, which go to the caller to label.
The rule that picks the result shape, and validity, are in the sandbox module doc.
"""

from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass

import numpy as np

from cad_recode.geometry.program_namespace import ShownObjects, TamperCheck, program_globals
from cad_recode.geometry.profiles import Profile, as_profile, min_faces
from cad_recode.geometry.exec_result import (
    ANGULAR_TOLERANCE, DEFAULT_MAX_TRIANGLES, TESSELLATION_TOLERANCE, ExecResult, ExecStatus, failure,
)
from cad_recode.geometry.static_check import ProgramRejected, check_tree, parse_program


class ProgramTimeout(BaseException):
    """Raised by SIGALRM/SIGXCPU inside the program; a BaseException so ``except Exception`` misses it."""


@dataclass
class Outcome:
    """A program's result, the shape it was measured on (None unless ok) and whether it tampered."""

    result: ExecResult
    shape: object = None
    tampered: str = ""


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def exception_text(exc: BaseException) -> str:
    """``"Name: message"`` for any exception, even one whose ``__str__`` raises (never raises itself)."""
    try:
        name = type(exc).__name__
        name = name if isinstance(name, str) else "Exception"
    except Exception:
        name = "Exception"
    try:
        message = str(exc)
        if not isinstance(message, str):
            raise TypeError
    except (ProgramTimeout, MemoryError):
        raise
    except BaseException:
        message = "<the exception's message could not be formatted>"
    message = _ADDRESS.sub("0x…", message)  # an object's repr in a message tells the program where it lives
    return f"{name}: {message}" if message else name


def execute_program(
    code: str, *, tessellate: bool = True, tolerance: float = TESSELLATION_TOLERANCE,
    angular_tolerance: float = ANGULAR_TOLERANCE, check: bool = True, profile: Profile | str = Profile.STRICT,
    max_triangles: int = DEFAULT_MAX_TRIANGLES, tamper: TamperCheck | None = None,
) -> Outcome:
    """Check (unless ``check`` is False: tests only), run and measure ``code`` under ``profile``."""
    profile = as_profile(profile)
    start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - start  # noqa: E731
    try:
        tree = parse_program(code)
        if check:
            check_tree(tree, profile)
        if profile is Profile.STRICT:  # a strict worker serves many programs: nothing shared may change in place
            tree = ast.fix_missing_locations(_PlainAugmentedAssignment().visit(tree))
        else:  # typing.get_type_hints (under singledispatch's and multimethod's register) evaluates text annotations
            tree = ast.fix_missing_locations(_WithoutAnnotations().visit(tree))
        # dont_inherit: this module's `from __future__ import annotations` stays this module's
        compiled = compile(tree, "<program>", "exec", dont_inherit=True)
    except ProgramRejected as exc:
        return Outcome(failure(ExecStatus.REJECTED, str(exc), elapsed()))
    except SyntaxError as exc:
        return Outcome(failure(ExecStatus.SYNTAX, f"line {exc.lineno}: {exc.msg}", elapsed()))
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. too deeply nested to compile
        return Outcome(failure(ExecStatus.SYNTAX, f"cannot compile the program: {type(exc).__name__}", elapsed()))

    namespace = program_globals(profile, _module_name(tree))
    try:
        exec(compiled, namespace)
    except (ProgramTimeout, MemoryError, KeyboardInterrupt):
        raise
    except RecursionError:
        return Outcome(failure(ExecStatus.ERROR, "RecursionError: maximum recursion depth exceeded", elapsed()))
    except SystemExit as exc:
        return Outcome(failure(ExecStatus.ERROR, "the program tried to exit (SystemExit "
                               f"{exception_text(exc).partition(': ')[2] or 'None'})", elapsed()))
    except BaseException as exc:  # anything the program raises is a result, not our failure
        return Outcome(failure(ExecStatus.ERROR, exception_text(exc) + _line_of(exc), elapsed()))
    # Picking the shape may still run the program's code (a subclass's methods), so the tamper check
    # comes after it; what is measured is a fresh cadquery object on the OCCT shape (see _as_shape).
    try:
        shape, problem = _select_shape(namespace, tree, profile)
        status = ExecStatus.NO_SOLID
    except (ProgramTimeout, MemoryError):
        raise
    except Exception as exc:  # OCCT failures on a broken shape, or not a CadQuery shape
        shape, status, problem = None, ExecStatus.INVALID, f"cannot evaluate the shape: {exception_text(exc)}"
    changed = tamper.changed(occt=profile is Profile.CADQUERY) if tamper is not None else ""
    if changed:
        return Outcome(failure(ExecStatus.ERROR, f"the program modified the sandbox ({changed}); programs may "
                               "not change cadquery, OCCT's classes, math or builtins", elapsed()), tampered=changed)
    if shape is None:
        return Outcome(failure(status, problem, elapsed()))
    try:
        result, shape = _measure(shape, tessellate, tolerance, angular_tolerance, max_triangles, min_faces(profile),
                                 start)
        return Outcome(result, shape if result.ok else None)
    except (ProgramTimeout, MemoryError):
        raise
    except Exception as exc:  # OCCT failures on a broken shape
        return Outcome(failure(ExecStatus.INVALID, f"cannot evaluate the shape: {exception_text(exc)}", elapsed()))


class _WithoutAnnotations(ast.NodeTransformer):
    """Type annotations dropped: ``x: int = 1`` runs as ``x = 1``, ``def f(a: T) -> U`` as ``def f(a)``.

    Annotations do nothing when a script runs, except for what reads them back, and what does
    (``typing.get_type_hints``, under ``functools.singledispatch`` and cadquery's multimethods) evaluates
    one that is text as code no check sees. Refusing literal text was not enough: ``def g(x: s)`` with ``s``
    a string built at run time reached the worker's ``os`` (a sixth review's find). So none is kept.
    """

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node):
        node.returns = None
        return self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:  # a bare declaration binds nothing
            return ast.copy_location(ast.Pass(), node)
        return ast.copy_location(ast.Assign(targets=[node.target], value=self.visit(node.value)), node)


class _PlainAugmentedAssignment(ast.NodeTransformer):
    """``x op= y`` becomes ``x = x op y``: an in-place operator on a shared object (``cq.Sketch.arc |= {...}``
    on cadquery's multimethod, a dict) would change it for every later program of the worker."""

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        if not isinstance(node.target, ast.Name):  # strict refuses attribute and item assignment anyway
            return node
        value = ast.BinOp(left=ast.Name(id=node.target.id, ctx=ast.Load()), op=node.op, right=node.value)
        return ast.copy_location(ast.Assign(targets=[node.target], value=value), node)


def measure_brep(
    data: bytes, *, tessellate: bool = True, tolerance: float = TESSELLATION_TOLERANCE,
    angular_tolerance: float = ANGULAR_TOLERANCE, max_triangles: int = DEFAULT_MAX_TRIANGLES,
) -> Outcome:
    """Read a shape from OCCT's binary BREP bytes and measure it, as :func:`execute_program` measures a program's.

    The second stage of a ``cadquery``-profile program: it runs in a worker that never ran such a
    program, so nothing the program did to its own process (patched classes, a finalizer that patches
    them later, a forged frame) reaches what is measured. The bytes are untrusted data, parsed by OCCT.
    The binary format keeps every number exact, so the mesh is the one the program's process would make.
    """
    import io

    import cadquery as cq
    from OCP.BinTools import BinTools
    from OCP.BRepTools import BRepTools
    from OCP.TopoDS import TopoDS_Shape

    start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - start  # noqa: E731
    try:
        handle = TopoDS_Shape()
        BinTools.Read_s(handle, io.BytesIO(data))
        if handle.IsNull():
            raise ValueError("the bytes hold no shape")
        # the bytes may carry faces' triangulations, which bounding box, mesh and STL would reuse: the
        # program's own mesh, of any shape. Force: also where a face has no surface, which is then invalid.
        BRepTools.Clean_s(handle, True)
        result, shape = _measure(cq.Shape.cast(handle), tessellate, tolerance, angular_tolerance, max_triangles,
                                 min_faces(Profile.CADQUERY), start)
        return Outcome(result, shape if result.ok else None)
    except (ProgramTimeout, MemoryError):
        raise
    except Exception as exc:  # OCCT failures on broken bytes or a broken shape
        return Outcome(failure(ExecStatus.INVALID, f"cannot evaluate the shape: {exception_text(exc)}", elapsed()))


def shape_to_brep(shape) -> bytes:
    """OCCT's binary BREP of ``shape``, geometry only (no triangulation): exact, and what :func:`measure_brep` reads."""
    import io

    from OCP.BinTools import BinTools, BinTools_FormatVersion

    buffer = io.BytesIO()
    BinTools.Write_s(shape.wrapped, buffer, False, False, BinTools_FormatVersion.BinTools_FormatVersion_CURRENT)
    return buffer.getvalue()


def export_shape(shape, path: str, kind: str, tolerance: float, angular_tolerance: float) -> None:
    """Write ``shape`` as ``kind`` ('STEP' or 'STL') to ``path``."""
    import cadquery as cq

    cq.exporters.export(shape, path, exportType=kind, tolerance=tolerance, angularTolerance=angular_tolerance)


def _line_of(exc: BaseException) -> str:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<program>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def _module_name(tree: ast.Module) -> str:
    """``"__cq_main__"`` for a script written for CQ-editor, which runs scripts under that name (its
    ``if __name__ == "__cq_main__": show_object(...)`` would otherwise build nothing), else ``"__main__"``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and node.value == "__cq_main__":
            return "__cq_main__"
    return "__main__"


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


def _select_shape(namespace: dict, tree: ast.Module, profile: Profile):
    """``(shape, "")`` or ``(None, reason)``; the rule is in the sandbox module doc."""
    import cadquery as cq

    shown = namespace.get("__shown__")
    if isinstance(shown, ShownObjects) and shown:
        shapes = [s for s in (_as_shape(obj) for obj in shown) if s is not None]
        if shapes:
            return (shapes[0] if len(shapes) == 1 else cq.Compound.makeCompound(shapes)), ""
    # CAD-Recode's programs name the part r; ordinary CadQuery (cq-cli, CQ-editor's examples) names it result,
    # where an r may be anything else (a loop's rib, a radius)
    named = ("r", "result") if profile is Profile.STRICT else ("result", "r")
    candidates = [*named, *(n for n in reversed(_assigned_names(tree)) if n not in named)]
    for name in candidates:
        shape = _as_shape(namespace.get(name))
        if shape is not None:
            return shape, ""
    return None, f"the program built no shape: assign a cq.Workplane or cq.Shape to '{named[0]}'"


def _as_shape(value):
    """The shape a result value stands for (Shape, Workplane, Assembly), else None.

    Always a new cadquery object made here from an OCCT shape (:func:`genuine_shape`), never the
    program's own object: a subclass of ``cq.Solid`` could answer ``Volume`` or ``isValid`` itself.
    """
    import cadquery as cq

    if isinstance(value, cq.Shape):
        return genuine_shape(value)
    if isinstance(value, cq.Workplane):
        return _workplane_shape(value)
    if isinstance(value, cq.Assembly):
        return genuine_shape(cq.Assembly.toCompound(value))
    return None


def _workplane_shape(wp):
    import cadquery as cq

    try:
        return genuine_shape(cq.Workplane.findSolid(wp))
    except ValueError:
        shapes = [genuine_shape(v) for v in cq.Workplane.vals(wp) if isinstance(v, cq.Shape)]
        if len(shapes) == 1:
            return shapes[0]
        return cq.Compound.makeCompound(shapes)  # no solid: reported as invalid by _measure


def genuine_shape(shape):
    """``cq.Shape.cast`` of ``shape``'s OCCT shape, whose type must be OCCT's own; ``TypeError`` otherwise."""
    import cadquery as cq

    handle = shape.wrapped
    if type(handle) not in _occt_shape_types():
        raise TypeError(f"the result is not a CadQuery shape (its OCCT shape is a {type(handle).__name__})")
    return cq.Shape.cast(handle)


def _occt_shape_types() -> frozenset:
    from OCP import TopoDS

    return frozenset(getattr(TopoDS, f"TopoDS_{kind}") for kind in (
        "Shape", "Solid", "CompSolid", "Compound", "Shell", "Face", "Wire", "Edge", "Vertex"))


def _measure(shape, tessellate, tolerance, angular_tolerance, max_triangles, fewest_faces,
             start) -> tuple[ExecResult, object]:
    import cadquery as cq

    elapsed = lambda: time.perf_counter() - start  # noqa: E731
    solids = shape.Solids()
    if not solids:
        kinds = sorted({type(s).__name__ for s in _leaves(shape)})
        if not kinds:
            return failure(ExecStatus.INVALID, "the result is empty: its Workplane holds no shape", elapsed()), None
        return failure(ExecStatus.INVALID, f"the result has no solid (it holds {', '.join(kinds)}); "
                       "extrude or revolve it", elapsed()), None
    if len(solids) > 1:
        # One shape per program: fuse so shared space counts once; disjoint solids stay a compound.
        shape = solids[0].fuse(*solids[1:]).clean()
    elif not isinstance(shape, cq.Solid):
        shape = solids[0]
    if not shape.isValid():
        return failure(ExecStatus.INVALID, "the solid fails the B-rep validity check (BRepCheck)", elapsed()), None
    stray = _stray_sub_shape(shape)
    if stray:
        return failure(ExecStatus.INVALID, f"the solid carries {stray}, which bounds nothing; "
                       "its box, area and mesh would not be the solid's", elapsed()), None
    num_faces = len(shape.Faces())
    if num_faces < fewest_faces:
        counted = f"{num_faces} face" + ("" if num_faces == 1 else "s")
        rule = f"more than {fewest_faces - 1} (the evaluation protocol)" if fewest_faces > 1 else "at least one"
        return failure(ExecStatus.INVALID, f"the solid has {counted}; a valid solid has {rule}", elapsed()), None
    volume = shape.Volume()
    box = shape.BoundingBox()
    extent = max(box.xlen, box.ylen, box.zlen)
    if not volume > 1e-9 * extent**3:
        return failure(ExecStatus.INVALID, f"the solid has no positive volume (volume {volume:.3g})", elapsed()), None

    vertices = faces = None
    if tessellate:
        points, triangles = shape.tessellate(tolerance, angular_tolerance)
        if len(triangles) > max_triangles:  # before building arrays of them
            return failure(ExecStatus.INVALID, f"the mesh has {len(triangles)} triangles; the limit is "
                           f"{max_triangles} (max_triangles)", elapsed()), None
        vertices = np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64).reshape(-1, 3)
        faces = np.array(triangles, dtype=np.int64).reshape(-1, 3)
        if len(faces) == 0:
            return failure(ExecStatus.INVALID, "the solid tessellates to no triangles", elapsed()), None
    return ExecResult(
        ExecStatus.OK, "", vertices, faces, num_faces, float(volume), float(shape.Area()),
        (box.xmin, box.ymin, box.zmin), (box.xmax, box.ymax, box.zmax), elapsed(),
    ), shape


def _stray_sub_shape(shape) -> str:
    """What of the solid bounds nothing ("an internal face", edge or vertex, "a face with no boundary"), or "".

    BRepCheck accepts a solid that also holds a sheet or a vertex that bounds nothing, and its volume stays right,
    but bounding box, area and tessellation count them: a 1 x 2 x 3 box holding an internal 1000 x 1000 sheet
    measured 1000 wide, and so did one with a second shell of one face without edges. No CadQuery call builds
    either; code that reaches OCCT itself can. The explorer composes orientations, so whatever sits in an internal
    shell or wire is found as internal too.
    """
    from OCP.BRepTools import BRepTools
    from OCP.TopAbs import TopAbs_EDGE, TopAbs_EXTERNAL, TopAbs_FACE, TopAbs_INTERNAL, TopAbs_VERTEX
    from OCP.TopExp import TopExp_Explorer
    from OCP.TopoDS import TopoDS

    for kind, name in ((TopAbs_FACE, "face"), (TopAbs_EDGE, "edge"), (TopAbs_VERTEX, "vertex")):
        explorer = TopExp_Explorer(shape.wrapped, kind)
        while explorer.More():
            if explorer.Current().Orientation() in (TopAbs_INTERNAL, TopAbs_EXTERNAL):
                return f"an internal {name}"
            if kind == TopAbs_FACE and BRepTools.OuterWire_s(TopoDS.Face_s(explorer.Current())).IsNull():
                return "a face with no boundary"
            explorer.Next()
    return ""


def _leaves(shape):
    import cadquery as cq

    if isinstance(shape, cq.Compound):
        return [leaf for child in shape for leaf in _leaves(child)]
    return [shape]


