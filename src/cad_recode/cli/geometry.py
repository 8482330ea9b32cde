"""Geometry verbs: ``exec``, ``points``, ``compare``, ``shapes``.

Argument parsing and printing only; the work is done by ``cad_recode.geometry``.
Exit codes: 0 success, 1 a program that runs but fails (rejected, error,
timeout, no valid solid...), 2 a usage or input mistake. Every failure is one
line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from cad_recode.atomic import atomic_file, check_writable
from cad_recode.cli.flags import add_output_flag, add_sandbox_flags
from cad_recode.errors import ProgramFailed, UsageError
from cad_recode.geometry.load_shape import PROGRAM_SUFFIX, is_program, read_program
from cad_recode.geometry.profiles import PROTOCOL_TIMEOUT, USER_PROGRAM_TIMEOUT, default_timeout

EXPORT_SUFFIXES = (".stl", ".step", ".stp")


def register(subparsers) -> None:
    """Add the geometry verbs to the ``cad-recode`` parser."""
    p = subparsers.add_parser(
        "exec",
        help="run a CadQuery program in the sandbox and export its solid",
        description="Run PROGRAM.py in the sandbox (static check, own process, time and memory "
        "limits) and optionally export the solid. Exit 1 with one line on stderr if the program "
        "is rejected, fails, times out or builds no valid solid.",
    )
    p.add_argument("program", type=Path, metavar="PROGRAM.py")
    add_output_flag(p, folder=False, old="--out", type=Path, metavar="SHAPE.stl|.step", help="export the solid here")
    _add_timeout(p)
    add_sandbox_flags(p, profile_default="cadquery")
    p.set_defaults(func=cmd_exec)

    p = subparsers.add_parser(
        "points",
        help="turn a point cloud, mesh or STEP file into the model's normalized points",
        description="Load INPUT, normalize it (bbox centre, 2/max extent), sample 8192 surface "
        "points and farthest-point-sample N of them; save them as .npy and print the transform "
        "that maps them back (original = points / scale + center).",
    )
    p.add_argument("input", type=Path, metavar="INPUT")
    add_output_flag(p, folder=False, old="--out", type=Path, metavar="POINTS.npy",
                    help="default: INPUT's name + .points.npy, beside it")
    p.add_argument("--n", type=int, default=256, help="number of points (default 256)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.set_defaults(func=cmd_points)

    p = subparsers.add_parser(
        "compare",
        help="Chamfer distance x10^3 and IoU of two shapes, per the evaluation protocol",
        description="A and B are each a CadQuery program (.py, run in the sandbox), a mesh or a "
        "STEP file. Both are normalized to the unit cube; CD uses 8192 surface samples each "
        "(squared distances, both directions, x10^3); IoU uses manifold3d booleans.",
    )
    p.add_argument("a", type=Path, metavar="A")
    p.add_argument("b", type=Path, metavar="B")
    p.add_argument("--seed", type=int, default=0, help="surface sampling seed (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _add_timeout(p)
    add_sandbox_flags(p, profile_default="cadquery")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser(
        "shapes",
        help="list the built-in example shapes or print one's program",
        description="'list' (the default) prints the names; NAME prints that shape's CadQuery "
        "program, or writes it with --output.",
    )
    p.add_argument("name", nargs="?", default="list", metavar="list|NAME")
    add_output_flag(p, folder=False, old="--out", type=Path, metavar="F.py",
                    help="write the program here instead of printing it")
    p.set_defaults(func=cmd_shapes)


def _add_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=None,
        help=f"wall-clock limit per program in seconds (default {PROTOCOL_TIMEOUT:g} under --profile strict, the "
             f"protocol's; {USER_PROGRAM_TIMEOUT:g} under cadquery, a part someone wrote)",
    )


# --------------------------------------------------------------------------- exec


def cmd_exec(args: argparse.Namespace) -> int:
    from cad_recode.geometry.sandbox import Sandbox

    code = _read_program(args.program)
    timeout = _check_timeout(args.timeout, args.profile)
    out = _check_suffix(args.output, EXPORT_SUFFIXES, "--output") if args.output else None
    _reject_early(args.program, code, args.profile)
    if out is not None:
        check_writable(out)  # else the sandbox's failed export would read as the program's fault
    # The sandbox writes the export atomically, and only for a valid solid.
    export = {} if out is None else {"stl_path" if out.suffix.lower() == ".stl" else "step_path": out}
    with Sandbox(workers=1, timeout=timeout, profile=args.profile) as sandbox:
        result = sandbox.run(code, **export)
    if not result.ok:
        raise _program_failed(args.program, result)
    print(_describe(result) + (f"; wrote {out}" if out else ""))
    return 0


def _reject_early(path: Path, code: str, profile: str) -> None:
    """Fail a program the static check rejects before paying seconds for a CadQuery worker.

    The sandbox runs the same check again; this only makes the common refusal fast.
    Syntax errors are left to the sandbox, which reports them with their own status.
    """
    from cad_recode.geometry.sandbox import ExecStatus
    from cad_recode.geometry.static_check import ProgramRejected, check_program

    try:
        check_program(code, profile=profile)
    except ProgramRejected as err:
        raise ProgramFailed(f"{path}: {ExecStatus.REJECTED.value}: {err}") from None
    except SyntaxError:
        pass


def _describe(result) -> str:
    lo, hi = result.bbox_min, result.bbox_max
    size = "x".join(f"{h - l:.4g}" for l, h in zip(lo, hi))
    corners = f"[{', '.join(f'{v:.4g}' for v in lo)}] .. [{', '.join(f'{v:.4g}' for v in hi)}]"
    return (
        f"ok: {result.num_faces} faces, volume {result.volume:.6g}, "
        f"bbox {corners} (size {size}), {result.seconds:.2f} s"
    )


def _program_failed(path: Path, result) -> ProgramFailed:
    status = getattr(result.status, "value", result.status)
    return ProgramFailed(f"{path}: {status}: {result.reason or 'no reason given'}")


# --------------------------------------------------------------------------- points


def cmd_points(args: argparse.Namespace) -> int:
    import numpy as np

    from cad_recode.geometry.loaders import load_geometry
    from cad_recode.geometry.sampling import to_model_points
    from cad_recode.geometry.stray_points import without_stray_points

    if args.n < 1:
        raise UsageError(f"--n must be a positive number of points, got {args.n}")
    out = args.output or args.input.with_name(args.input.name + ".points.npy")
    check_writable(_check_suffix(out, (".npy",), "--output"))
    geometry, strays = without_stray_points(load_geometry(args.input))  # as infer reads a scan
    model_points = to_model_points(geometry, n_points=args.n, seed=args.seed)
    with atomic_file(out) as tmp, open(tmp, "wb") as handle:
        np.save(handle, model_points.points)  # a handle: np.save would append .npy to a path
    points = model_points.points
    print(f"wrote {out}: {points.shape[0]} points, {points.dtype}, in [{points.min():.3f}, {points.max():.3f}]"
          + (f"; {strays} stray points apart from the surface dropped first" if strays else ""))
    print("transform (original = points / scale + center): " + json.dumps(model_points.transform.to_dict()))
    return 0


# --------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> int:
    from cad_recode.geometry.load_shape import load_shapes
    from cad_recode.geometry.metrics import compare_meshes
    from cad_recode.geometry.sandbox import Sandbox

    timeout = _check_timeout(args.timeout, args.profile)
    paths = [args.a, args.b]
    for path in paths:
        if is_program(path):
            _reject_early(path, _read_program(path), args.profile)
    with Sandbox(workers=1, timeout=timeout, profile=args.profile) as sandbox:
        mesh_a, mesh_b = _first_error_raised(load_shapes(paths, sandbox, what="compare input", profile=args.profile))
    result = compare_meshes(mesh_a, mesh_b, seed=args.seed)
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), **_json_safe(result.to_dict())}))
    else:
        print(f"CD x10^3: {result.cd:.4f}")
        if math.isnan(result.iou):
            print(f"IoU: n/a ({result.iou_error})")
        else:
            print(f"IoU: {result.iou:.4f}")
    return 0


def _first_error_raised(shapes: list) -> list:
    """Files are checked before any program runs (load_shapes), and the first problem is raised."""
    for shape in shapes:
        if isinstance(shape, Exception):
            raise shape
    return shapes


def _json_safe(values: dict) -> dict:
    """JSON has no NaN: an undefined metric is null."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}


# --------------------------------------------------------------------------- shapes


def cmd_shapes(args: argparse.Namespace) -> int:
    from cad_recode.geometry.shapes import EXAMPLE_SHAPES, example_program

    if args.name == "list":
        if args.output:
            raise UsageError("--output needs a shape NAME, not 'list'; e.g. cad-recode shapes cube --output cube.py")
        print("\n".join(EXAMPLE_SHAPES))
        return 0
    code = example_program(args.name)
    if args.output is None:
        print(code, end="" if code.endswith("\n") else "\n")
        return 0
    check_writable(_check_suffix(args.output, (PROGRAM_SUFFIX,), "--output"))
    with atomic_file(args.output) as tmp:
        tmp.write_text(code, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


# --------------------------------------------------------------------------- shared checks


def _read_program(path: Path) -> str:
    _check_suffix(path, (PROGRAM_SUFFIX,), "program")
    return read_program(path)


def _check_suffix(path: Path, allowed: tuple[str, ...], what: str) -> Path:
    if path.suffix.lower() not in allowed:
        raise UsageError(
            f"{path}: {what} must end in {' or '.join(allowed)}, not {path.suffix or '(no extension)'!r}"
        )
    return path


def _check_timeout(timeout: float | None, profile: str) -> float:
    if timeout is None:
        return default_timeout(profile)
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")
    return timeout
