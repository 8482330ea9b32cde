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

from cad_recode.atomic import atomic_file
from cad_recode.errors import CadRecodeError, InputError, UsageError
from cad_recode.geometry.sandbox import DEFAULT_TIMEOUT  # light: numpy only, no CadQuery

PROGRAM_SUFFIX = ".py"
EXPORT_SUFFIXES = (".stl", ".step", ".stp")


class ProgramFailed(CadRecodeError):
    """A CadQuery program that was rejected, failed or built no valid solid (exit 1)."""

    exit_code = 1


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
    p.add_argument("--out", type=Path, metavar="SHAPE.stl|.step", help="export the solid here")
    _add_timeout(p)
    p.set_defaults(func=cmd_exec)

    p = subparsers.add_parser(
        "points",
        help="turn a point cloud, mesh or STEP file into the model's normalized points",
        description="Load INPUT, normalize it (bbox centre, 2/max extent), sample 8192 surface "
        "points and farthest-point-sample N of them; save them as .npy and print the transform "
        "that maps them back (original = points / scale + center).",
    )
    p.add_argument("input", type=Path, metavar="INPUT")
    p.add_argument("--out", type=Path, metavar="POINTS.npy", help="default: INPUT's name + .points.npy, beside it")
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
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser(
        "shapes",
        help="list the built-in example shapes or print one's program",
        description="'list' (the default) prints the names; NAME prints that shape's CadQuery "
        "program, or writes it with --out.",
    )
    p.add_argument("name", nargs="?", default="list", metavar="list|NAME")
    p.add_argument("--out", type=Path, metavar="F.py", help="write the program here instead of printing it")
    p.set_defaults(func=cmd_shapes)


def _add_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT,
        help=f"wall-clock limit per program in seconds (default {DEFAULT_TIMEOUT:g})",
    )


# --------------------------------------------------------------------------- exec


def cmd_exec(args: argparse.Namespace) -> int:
    from cad_recode.geometry.sandbox import Sandbox

    code = _read_program(args.program)
    timeout = _check_timeout(args.timeout)
    out = _check_suffix(args.out, EXPORT_SUFFIXES, "--out") if args.out else None
    _reject_early(args.program, code)
    # The sandbox writes the export atomically, and only for a valid solid.
    export = {} if out is None else {"stl_path" if out.suffix.lower() == ".stl" else "step_path": out}
    with Sandbox(workers=1, timeout=timeout) as sandbox:
        result = sandbox.run(code, **export)
    if not result.ok:
        raise _program_failed(args.program, result)
    print(_describe(result) + (f"; wrote {out}" if out else ""))
    return 0


def _reject_early(path: Path, code: str) -> None:
    """Fail a program the static check rejects before paying seconds for a CadQuery worker.

    The sandbox runs the same check again; this only makes the common refusal fast.
    Syntax errors are left to the sandbox, which reports them with their own status.
    """
    from cad_recode.geometry.sandbox import ExecStatus
    from cad_recode.geometry.static_check import ProgramRejected, check_program

    try:
        check_program(code)
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

    if args.n < 1:
        raise UsageError(f"--n must be a positive number of points, got {args.n}")
    out = args.out or args.input.with_name(args.input.name + ".points.npy")
    _check_suffix(out, (".npy",), "--out")
    model_points = to_model_points(load_geometry(args.input), n_points=args.n, seed=args.seed)
    with atomic_file(out) as tmp, open(tmp, "wb") as handle:
        np.save(handle, model_points.points)  # a handle: np.save would append .npy to a path
    points = model_points.points
    print(f"wrote {out}: {points.shape[0]} points, {points.dtype}, in [{points.min():.3f}, {points.max():.3f}]")
    print("transform (original = points / scale + center): " + json.dumps(model_points.transform.to_dict()))
    return 0


# --------------------------------------------------------------------------- compare


def cmd_compare(args: argparse.Namespace) -> int:
    from cad_recode.geometry.metrics import compare_meshes

    timeout = _check_timeout(args.timeout)
    paths = {"A": args.a, "B": args.b}
    for label, path in paths.items():
        _check_exists(path, label)
    programs = {label: _read_program(path) for label, path in paths.items() if _is_program(path)}
    for label, code in programs.items():
        _reject_early(paths[label], code)
    # Files first: a bad file should fail before any program runs.
    meshes = {label: _load_mesh(path, label) for label, path in paths.items() if label not in programs}
    if programs:
        meshes.update(_run_programs(programs, paths, timeout))
    result = compare_meshes(meshes["A"], meshes["B"], seed=args.seed)
    if args.json:
        print(json.dumps({"a": str(args.a), "b": str(args.b), **result.to_dict()}))
    else:
        print(f"CD x10^3: {result.cd:.4f}")
        if math.isnan(result.iou):
            print(f"IoU: n/a ({result.iou_error})")
        else:
            print(f"IoU: {result.iou:.4f}")
    return 0


def _run_programs(programs: dict[str, str], paths: dict[str, Path], timeout: float) -> dict:
    from cad_recode.geometry.sandbox import Sandbox

    meshes = {}
    with Sandbox(workers=1, timeout=timeout) as sandbox:
        for label, code in programs.items():
            result = sandbox.run(code)
            if not result.ok:
                raise _program_failed(paths[label], result)
            meshes[label] = result.to_trimesh()
    return meshes


def _load_mesh(path: Path, label: str):
    from cad_recode.geometry.loaders import load_geometry

    shape = load_geometry(path)
    if not hasattr(shape, "faces"):
        raise InputError(
            f"{path}: {label} is a point cloud; compare needs surfaces (a program, mesh or STEP file)"
        )
    return shape


# --------------------------------------------------------------------------- shapes


def cmd_shapes(args: argparse.Namespace) -> int:
    from cad_recode.geometry.shapes import EXAMPLE_SHAPES, example_program

    if args.name == "list":
        if args.out:
            raise UsageError("--out needs a shape NAME, not 'list'; e.g. cad-recode shapes cube --out cube.py")
        print("\n".join(EXAMPLE_SHAPES))
        return 0
    code = example_program(args.name)
    if args.out is None:
        print(code, end="" if code.endswith("\n") else "\n")
        return 0
    _check_suffix(args.out, (PROGRAM_SUFFIX,), "--out")
    with atomic_file(args.out) as tmp:
        tmp.write_text(code, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


# --------------------------------------------------------------------------- shared checks


def _is_program(path: Path) -> bool:
    return path.suffix.lower() == PROGRAM_SUFFIX


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file ({what}); check the path")
    if not path.is_file():
        raise InputError(f"{path}: not a file ({what})")


def _read_program(path: Path) -> str:
    _check_suffix(path, (PROGRAM_SUFFIX,), "program")
    _check_exists(path, "program")
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise InputError(f"{path}: cannot read the program as UTF-8 text ({err.__class__.__name__})") from None


def _check_suffix(path: Path, allowed: tuple[str, ...], what: str) -> Path:
    if path.suffix.lower() not in allowed:
        raise UsageError(
            f"{path}: {what} must end in {' or '.join(allowed)}, not {path.suffix or '(no extension)'!r}"
        )
    return path


def _check_timeout(timeout: float) -> float:
    if not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")
    return timeout
