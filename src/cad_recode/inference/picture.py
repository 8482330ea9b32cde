"""One offscreen picture per reconstruction: the input points beside the reconstructed solid.

matplotlib's Agg backend, so it works on machines without a display. Both panels
share one set of axis limits, so a reconstruction at the wrong scale or place is
visible at a glance.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cad_recode.atomic import atomic_file

MAX_TRIANGLES = 6000  # beyond this matplotlib's 3-D renderer gets slow; every k-th triangle is kept


def render_comparison(points, mesh, path: str | os.PathLike, title: str = "", dpi: int = 100) -> Path:
    """Write a PNG: left the input points (N, 3), right ``mesh`` (a trimesh, or None = no valid solid)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    points = np.asarray(points, dtype=np.float64)
    figure = Figure(figsize=(8, 4), dpi=dpi)
    FigureCanvasAgg(figure)
    spans = [points]
    if mesh is not None:
        spans.append(np.asarray(mesh.vertices))
    everything = np.concatenate(spans)
    centre = (everything.min(0) + everything.max(0)) / 2
    half = max(float((everything.max(0) - everything.min(0)).max()) / 2, 1e-9)

    left = figure.add_subplot(1, 2, 1, projection="3d")
    left.scatter(points[:, 0], points[:, 1], points[:, 2], s=2, c=points[:, 2], cmap="viridis")
    left.set_title("input points")
    right = figure.add_subplot(1, 2, 2, projection="3d")
    if mesh is not None and len(mesh.faces):
        faces = np.asarray(mesh.faces)
        faces = faces[:: int(np.ceil(len(faces) / MAX_TRIANGLES))]
        triangles = np.asarray(mesh.vertices)[faces]
        right.add_collection3d(Poly3DCollection(triangles, facecolor="#8fb3d9", edgecolor="#3a5f85", linewidth=0.1))
        right.set_title("reconstruction")
    else:
        right.text2D(0.5, 0.5, "no valid solid", ha="center", va="center", transform=right.transAxes, color="red")
        right.set_title("reconstruction")
    for axes in (left, right):
        axes.set_xlim(centre[0] - half, centre[0] + half)
        axes.set_ylim(centre[1] - half, centre[1] + half)
        axes.set_zlim(centre[2] - half, centre[2] + half)
        axes.set_box_aspect((1, 1, 1))
        axes.tick_params(labelsize=6)
    if title:
        figure.suptitle(title, fontsize=9)
    path = Path(path)
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
