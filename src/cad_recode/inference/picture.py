"""One offscreen picture per reconstruction: the input as given, the reconstruction, and both overlaid.

matplotlib's Agg backend, so it works on machines without a display. The three
panels share one viewpoint and one set of axis limits, so a reconstruction at the
wrong scale or place is visible at a glance; the axis labels name the units.
Triangles and points are subsampled so a 5 M-point input still draws in about a second.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cad_recode.atomic import atomic_file

MAX_TRIANGLES = 3000  # per panel; beyond this matplotlib's 3-D renderer gets slow (every k-th is kept)
MAX_POINTS = 4000  # per panel, every k-th point
VIEW = {"elev": 25.0, "azim": -60.0}  # one viewpoint for all three panels
PANELS = ("input", "reconstruction", "overlay")
INPUT_COLOUR, SOLID_COLOUR, SOLID_EDGE = "#d9534f", "#8fb3d9", "#3a5f85"


@dataclass(frozen=True)
class Picture:
    """What was drawn: the file, its panel titles, its title and the axis labels (with units)."""

    path: Path
    panels: tuple[str, ...]
    title: str
    axis_labels: tuple[str, str, str]
    num_input_triangles: int  # drawn (after subsampling); 0 when the input is a point cloud
    num_input_points: int  # drawn in the overlay (and in the input panel for a cloud)


def render_comparison(input_cloud, mesh, path: str | os.PathLike, *, input_mesh=None, title: str = "",
                      units: str = "", dpi: int = 100) -> Picture:
    """Write a PNG of three panels: the input, ``mesh`` (a trimesh, or None = no valid solid), both overlaid.

    ``input_cloud`` (N, 3) and ``input_mesh`` (a trimesh or None) are the input in the
    same units as ``mesh``; the input panel draws the mesh when there is one, else the
    points. ``units`` names those units in every axis label.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cloud = _every_kth(np.asarray(input_cloud, dtype=np.float64).reshape(-1, 3), MAX_POINTS)
    solid = _triangles(mesh)
    given = _triangles(input_mesh)
    centre, half = _common_box([cloud, solid.reshape(-1, 3), given.reshape(-1, 3)])
    labels = tuple(f"{axis} ({units})" if units else axis for axis in "xyz")

    figure = Figure(figsize=(12, 4.4), dpi=dpi)
    FigureCanvasAgg(figure)
    panels = [figure.add_subplot(1, 3, k + 1, projection="3d") for k in range(3)]
    left, middle, right = panels
    if len(given):
        _draw_solid(left, given, facecolor="#e8a09e", edgecolor="#a94442", alpha=1.0)
    else:
        _draw_points(left, cloud, colour=cloud[:, 2] if len(cloud) else INPUT_COLOUR)
    _draw_result(middle, solid, alpha=1.0)
    _draw_result(right, solid, alpha=0.35)
    _draw_points(right, cloud, colour=INPUT_COLOUR)
    for axes, name in zip(panels, ("input (mesh)" if len(given) else "input (points)", "reconstruction",
                                   "overlay: input points on the reconstruction")):
        axes.set_title(name, fontsize=9)
        _frame(axes, centre, half, labels)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.04, top=0.88, wspace=0.12)
    path = Path(path)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    return Picture(path, tuple(a.get_title() for a in figure.axes), title, labels, len(given), len(cloud))


def _every_kth(rows: np.ndarray, limit: int) -> np.ndarray:
    return rows[:: int(np.ceil(len(rows) / limit))] if len(rows) > limit else rows


def _triangles(mesh) -> np.ndarray:
    """(T, 3, 3) of at most MAX_TRIANGLES of ``mesh``'s faces; (0, 3, 3) for None or an empty mesh."""
    if mesh is None or not len(mesh.faces):
        return np.zeros((0, 3, 3))
    return np.asarray(mesh.vertices, dtype=np.float64)[_every_kth(np.asarray(mesh.faces), MAX_TRIANGLES)]


def _common_box(parts: list[np.ndarray]) -> tuple[np.ndarray, float]:
    """Centre and half-side of one cube holding everything drawn (so every panel has the same limits)."""
    everything = np.concatenate([p for p in parts if len(p)] or [np.zeros((1, 3))])
    low, high = everything.min(0), everything.max(0)
    return (low + high) / 2, max(float((high - low).max()) / 2, 1e-9)


def _draw_solid(axes, triangles: np.ndarray, *, facecolor: str, edgecolor: str, alpha: float) -> None:
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    axes.add_collection3d(Poly3DCollection(triangles, facecolor=facecolor, edgecolor=edgecolor, linewidth=0.1,
                                           alpha=alpha))


def _draw_result(axes, triangles: np.ndarray, *, alpha: float) -> None:
    if len(triangles):
        _draw_solid(axes, triangles, facecolor=SOLID_COLOUR, edgecolor=SOLID_EDGE, alpha=alpha)
    else:
        axes.text2D(0.5, 0.5, "no valid solid", ha="center", va="center", transform=axes.transAxes, color="red")


def _draw_points(axes, cloud: np.ndarray, *, colour) -> None:
    if len(cloud):
        shading = {"cmap": "viridis"} if isinstance(colour, np.ndarray) else {}  # a cmap with one colour warns
        axes.scatter(cloud[:, 0], cloud[:, 1], cloud[:, 2], s=1.5, c=colour, depthshade=False, **shading)


def _frame(axes, centre: np.ndarray, half: float, labels: tuple[str, str, str]) -> None:
    axes.set_xlim(centre[0] - half, centre[0] + half)
    axes.set_ylim(centre[1] - half, centre[1] + half)
    axes.set_zlim(centre[2] - half, centre[2] + half)
    axes.set_box_aspect((1, 1, 1))
    axes.view_init(**VIEW)
    axes.set_xlabel(labels[0], fontsize=6, labelpad=-2)
    axes.set_ylabel(labels[1], fontsize=6, labelpad=-2)
    axes.set_zlabel(labels[2], fontsize=6, labelpad=-2)
    axes.tick_params(labelsize=5, pad=-2)
