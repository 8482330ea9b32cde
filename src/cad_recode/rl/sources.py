"""Where RL's inputs come from: a prepared dataset (programs, so truth solids) or a folder of the user's parts.

Each input becomes an :class:`RLItem`: its surface points and its reward target,
both in the model frame ([-1, 1]^3), normalized exactly as inference normalizes
an input (:func:`cad_recode.geometry.sampling.to_model_points`: bounding box of
the mesh's used vertices, ``2 / max extent``). The rollouts draw the model's
point tokens with :meth:`RLItem.model_points`, which calls that same function,
so RL reads the points training and inference read.

- :func:`open_prepared`: the truth solids that ``data prepare`` built in the
  sandbox (reward ``iou_gt``; the ids' family labels select families).
- :func:`open_mesh_folder`: every mesh, STEP file or point cloud under a folder,
  no programs (rewards ``iou_input`` and ``cd_input``). An input that is not a
  closed solid (an open mesh, a cloud) has no volume, so ``iou_input`` scores it
  by ``cd_input``; one notice line names those inputs when the folder is opened.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import trimesh

from cad_recode.defaults import NUM_POINT_TOKENS, NUM_SURFACE_POINTS
from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.normalize import Transform, fit_normalization
from cad_recode.geometry.sampling import sample_surface, to_model_points
from cad_recode.geometry.scan_noise import cloud_normalization
from cad_recode.geometry.stray_points import drop_stray_points
from cad_recode.rl.rewards import RewardTarget, closed_solid_problem

Notice = Callable[[str], None]
MAX_NAMED = 5  # inputs a notice names before "and N more"
TRUTH_PROFILE = "cadquery"  # dataset programs are ordinary CadQuery (as load_shape runs them)


@dataclass
class RLItem:
    """One RL input: what the model reads and what its candidates are scored against."""

    name: str  # the dataset id or the file's path relative to the folder
    points: np.ndarray  # (num_surface_points, 3) surface samples in the model frame (fewer for a small cloud)
    target: RewardTarget  # target.points is ``points``; target.mesh the truth or input solid, model frame
    family: str | None = None  # the generator's family label, when the data carries one

    def model_points(self, seed: int, n_points: int = NUM_POINT_TOKENS) -> np.ndarray:
        """The model's (n_points, 3) float32 point tokens for one draw: ``to_model_points`` of the input.

        A mesh is sampled afresh from ``seed`` (as training draws per epoch); a cloud is reduced by FPS.
        """
        source = self.target.mesh if self.target.mesh is not None else self.points
        return to_model_points(source, n_points=n_points, n_surface=len(self.points), seed=seed).points


def default_notice(line: str) -> None:
    """One line on stderr, from rank 0 only (every torchrun process opens the data)."""
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the model frame


def _model_frame_mesh(mesh: trimesh.Trimesh, where: str) -> trimesh.Trimesh:
    """``mesh`` moved and scaled into [-1, 1]^3 by the transform ``to_model_points`` fits on it."""
    used = np.unique(np.asarray(mesh.faces).reshape(-1))
    if len(used) == 0:
        raise InputError(f"{where}: the mesh has no faces; give a mesh with triangles")
    transform: Transform = fit_normalization(np.asarray(mesh.vertices)[used], where=where)
    return trimesh.Trimesh(transform.apply(mesh.vertices), np.asarray(mesh.faces), process=False)


def mesh_item(name: str, mesh: trimesh.Trimesh, num_surface_points: int, family: str | None,
              problem: str | None) -> RLItem:
    """An input from a mesh in any frame: moved into the model frame, its surface sampled (seed 0)."""
    model = _model_frame_mesh(mesh, name)
    points = sample_surface(model, num_surface_points, seed=0)
    return RLItem(name, points, RewardTarget(points, model, watertight=problem is None), family)


def _cloud_item(name: str, cloud: np.ndarray, num_surface_points: int) -> RLItem:
    """A point cloud: without its stray points and normalized as inference does (a noisy scan by its
    smoothed box), reduced to ``num_surface_points`` by the seeded choice inference uses."""
    cloud = drop_stray_points(cloud).points
    points = cloud_normalization(cloud, where=name).apply(cloud)
    if len(points) > num_surface_points:
        keep = np.random.default_rng(0).choice(len(points), num_surface_points, replace=False)
        points = points[np.sort(keep)]
    return RLItem(name, points, RewardTarget(points, None, watertight=False))


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def _check_count(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")


# --------------------------------------------------------------------------- prepared datasets


def select_rows(split, labels: dict[str, str], data_dir: Path, families: Sequence[str] | None,
                limit: int | None, setting: str = "families") -> list[int]:
    """Row indices of the split, of the chosen families, at most ``limit``; ``setting`` names the key in errors."""
    ids = list(split.ids())
    if families is None:
        rows = list(range(len(ids)))
    else:
        if not labels:
            raise UsageError(f"{data_dir}: carries no family labels, so families cannot be chosen; "
                             f"drop the {setting} setting or use data from `cad-recode data generate`")
        known = sorted(set(labels.values()))
        unknown = [f for f in families if f not in known]
        if unknown:
            raise UsageError(f"{data_dir}: no family {unknown[0]!r}; it has {', '.join(known)}")
        rows = [i for i, item_id in enumerate(ids) if labels.get(item_id) in set(families)]
        if not rows:
            raise InputError(f"{data_dir}: split {split.split!r} holds no shape of {', '.join(families)}")
    return rows if limit is None else rows[:limit]


def _rebuild(codes: dict[str, str], sandbox) -> dict[str, trimesh.Trimesh | str]:
    """Truth programs run again in the sandbox: a closed mesh, or why there is none."""
    out: dict[str, trimesh.Trimesh | str] = {}
    for (name, _), result in zip(codes.items(), sandbox.map(list(codes.values()), profile=TRUTH_PROFILE)):
        if not result.ok:
            out[name] = f"{result.status.value}: {result.reason}"
            continue
        mesh = result.to_trimesh()
        problem = closed_solid_problem(mesh)
        out[name] = mesh if problem is None else problem
    return out


def open_prepared(data_dir: str | os.PathLike, split: str, *, num_surface_points: int = NUM_SURFACE_POINTS,
                  sandbox=None, limit: int | None = None, families: Sequence[str] | None = None,
                  notice: Notice = default_notice) -> list[RLItem]:
    """The shapes of one split of a prepared dataset, each with its truth solid (reward ``iou_gt``).

    The truth solids are the meshes ``data prepare`` built from the programs in
    the sandbox. One whose stored mesh is not closed (IoU undefined) is built
    again in ``sandbox`` under the ``cadquery`` profile; when that fails too, or
    no sandbox is given, it is left out, and one notice line says which.
    ``families``: keep only shapes of these family labels; ``limit``: the first N kept.
    """
    from cad_recode.data.labels import read_family_labels
    from cad_recode.data.shards import PreparedSplit

    _check_count("num_surface_points", num_surface_points)
    _check_count("limit", limit, allow_none=True)
    data_dir = Path(data_dir)
    prepared = PreparedSplit.open(data_dir, split)
    labels = read_family_labels(data_dir)
    items: dict[str, RLItem | None] = {}
    broken: dict[str, str] = {}  # id -> its program, for a rebuild
    for row in select_rows(prepared, labels, data_dir, families, limit):
        record = prepared[row]
        mesh = trimesh.Trimesh(record["vertices"], record["faces"], process=False)
        if closed_solid_problem(mesh) is not None:
            broken[record["id"]] = record["code"]
            items[record["id"]] = None  # keeps the dataset's order
            continue
        items[record["id"]] = mesh_item(record["id"], mesh, num_surface_points, labels.get(record["id"]), None)
    rebuilt = _rebuild(broken, sandbox) if broken and sandbox is not None else {}
    left_out = []
    for name in broken:
        mesh = rebuilt.get(name)
        if isinstance(mesh, trimesh.Trimesh):
            items[name] = mesh_item(name, mesh, num_surface_points, labels.get(name), None)
        else:
            left_out.append(name)
            del items[name]
    if left_out:
        notice(f"rl: {len(left_out)} truth solid(s) of {data_dir} are not closed, so IoU is undefined on them; "
               f"left out: {_names(left_out)}")
    if not items:
        raise InputError(f"{data_dir}: split {split!r} gave no usable shape; check the dataset")
    return list(items.values())


# --------------------------------------------------------------------------- a folder of parts


def find_inputs(folder: str | os.PathLike) -> list[Path]:
    """Every mesh, STEP file and point cloud under ``folder`` (recursively, sorted), as ``infer`` collects them."""
    from cad_recode.geometry.loaders import SUPPORTED_SUFFIXES

    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such folder; give the folder of your parts")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give the folder that holds your meshes or STEP files")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: holds no point cloud, mesh or STEP file ({' '.join(SUPPORTED_SUFFIXES)})")
    return files


def open_mesh_folder(folder: str | os.PathLike, *, num_surface_points: int = NUM_SURFACE_POINTS,
                     limit: int | None = None, notice: Notice = default_notice) -> list[RLItem]:
    """The parts under ``folder`` (meshes, STEP files, point clouds), no programs; ``limit``: the first N files.

    A file that cannot be read raises its own one-line InputError (the reasons
    ``infer`` gives), before anything is trained. One notice line names the inputs
    that are not closed solids: ``iou_input`` scores them by ``cd_input``.
    """
    from cad_recode.geometry.loaders import load_geometry

    _check_count("num_surface_points", num_surface_points)
    _check_count("limit", limit, allow_none=True)
    folder = Path(folder)
    files = find_inputs(folder)[:limit]
    items, open_inputs = [], []
    for path in files:
        name = path.relative_to(folder).as_posix()
        geometry = load_geometry(path)
        if isinstance(geometry, trimesh.Trimesh):
            problem = closed_solid_problem(geometry)
            items.append(mesh_item(name, geometry, num_surface_points, None, problem))
        else:
            problem = "a point cloud"
            items.append(_cloud_item(name, geometry, num_surface_points))
        if problem is not None:
            open_inputs.append(name)
    if open_inputs:
        notice(f"rl: {len(open_inputs)} of {len(items)} inputs in {folder} are not closed solids (IoU is "
               f"undefined on them), so reward iou_input scores them by cd_input: {_names(open_inputs)}")
    return items
