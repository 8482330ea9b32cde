"""One way from "a shape the user named" to a mesh: a .py program, a mesh file or a STEP file.

Programs run only in the sandbox (never in this process), under the ``cadquery`` profile by
default: a user's own programs are ordinary CadQuery (loops, functions, ``show_object``);
the OS confinement is the boundary either way. Meshes and STEP files go
through :func:`cad_recode.geometry.loaders.load_geometry`. Ground truths (``infer
--ground_truth``, ``eval`` folders), ``compare`` and the built-in examples all use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import trimesh

from cad_recode.errors import InputError, ProgramFailed, unexpected

PROGRAM_SUFFIX = ".py"
USER_PROGRAM_PROFILE = "cadquery"


def is_program(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == PROGRAM_SUFFIX


def read_program(path: str | os.PathLike, what: str = "program") -> str:
    """The text of a .py program; one-line InputError when it is missing or not UTF-8 text."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file ({what}); check the path")
    if not path.is_file():
        raise InputError(f"{path}: not a file ({what})")
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise InputError(f"{path}: cannot read the {what} as UTF-8 text ({err.__class__.__name__})") from None


def mesh_of_result(result, path: str | os.PathLike, what: str) -> trimesh.Trimesh:
    """The mesh of a sandbox result, or ProgramFailed naming the program and why."""
    if not result.ok:
        status = getattr(result.status, "value", result.status)
        raise ProgramFailed(f"{path}: {what} {status}: {result.reason or 'no reason given'}")
    return result.to_trimesh()


def load_shape(path: str | os.PathLike, sandbox, *, what: str = "shape",
               profile: str = USER_PROGRAM_PROFILE, timeout: float | None = None) -> trimesh.Trimesh:
    """A .py program (run in ``sandbox``), a mesh or a STEP file -> its mesh.

    ``what`` names the role in errors ("ground truth", "A"). A point cloud is an
    InputError: CD and IoU against it need surfaces.
    """
    return load_shapes([path], sandbox, what=what, strict=True, profile=profile, timeout=timeout)[0]


def load_shapes(
    paths: Sequence[str | os.PathLike], sandbox, *, what: str = "shape", strict: bool = False,
    profile: str = USER_PROGRAM_PROFILE, timeout: float | None = None,
) -> list[trimesh.Trimesh | InputError]:
    """Several shapes at once: the programs among them run in one ``sandbox.map`` (in parallel).

    Returns, in order, a mesh or the InputError explaining why there is none
    (``strict``: raise the first error instead, before running any program when a file is bad).
    ``timeout``: seconds a program may run (default: the sandbox's own; ground truths pass
    :data:`~cad_recode.geometry.profiles.USER_PROGRAM_TIMEOUT`).
    """
    from cad_recode.geometry.loaders import load_geometry

    out: list[trimesh.Trimesh | InputError | None] = [None] * len(paths)
    programs: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            if is_program(path):
                programs[index] = read_program(path, f"{what} program")
                continue
            geometry = load_geometry(path)
            if not isinstance(geometry, trimesh.Trimesh):
                raise InputError(f"{path}: {what} is a point cloud; CD and IoU need surfaces "
                                 "(a .py program, a mesh or a STEP file)")
            out[index] = geometry
        except Exception as err:  # an InputError; any other is a reader's bug, which must not cost the other shapes
            err = err if isinstance(err, InputError) else unexpected(path, err)
            if strict:
                raise err from None
            out[index] = err
    if programs:
        results = sandbox.map(list(programs.values()), profile=profile, timeout=timeout)
        for index, result in zip(programs, results):
            try:
                out[index] = mesh_of_result(result, paths[index], f"{what} program")
            except InputError as err:
                if strict:
                    raise
                out[index] = err
    return out
