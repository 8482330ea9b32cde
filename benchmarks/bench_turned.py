"""Does an input look turned? ``pose.turned_ratio`` on upright, noisy, cut and rotated test parts.

    python benchmarks/bench_turned.py --data runs/tiny/data --limit 200

The default ``--pose if_turned`` tries the pose candidates only for an input whose box in its own axes is
over ``TURNED_BOX_RATIO`` times its tightest box. This prints that ratio's spread for the first
``--limit`` test shapes of a prepared dataset under each ``--conditions`` (the eval conditions, seeded
as ``eval`` seeds them), computed as inference computes it (8192 surface points of the input, or the
cloud itself), and how many shapes cross the threshold; then the same for the hand-written style sets,
whose parts are upright as drawn (a few are drawn turned on purpose). No model is needed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import machine_info, machine_line  # noqa: E402

from cad_recode.data.shards import PreparedSplit  # noqa: E402
from cad_recode.defaults import NUM_SURFACE_POINTS  # noqa: E402
from cad_recode.geometry.pose import TURNED_BOX_RATIO, turned_ratio  # noqa: E402
from cad_recode.geometry.robustness import condition_by_name, condition_shape, shape_seed  # noqa: E402
from cad_recode.geometry.sampling import sample_surface  # noqa: E402

STYLE_SETS = ("style_set", "style_set_b", "style_set_c")


def input_ratio(source) -> float:
    """The ratio as ``encode_input`` computes it: a mesh's surface sample, or the cloud itself."""
    if isinstance(source, trimesh.Trimesh):
        dense = sample_surface(source, NUM_SURFACE_POINTS, seed=0)
    else:
        dense = np.asarray(source, dtype=np.float64)
    return turned_ratio(dense[:: max(1, len(dense) // NUM_SURFACE_POINTS)])


def report(name: str, ratios: list[float], seconds: float, names: list[str] | None = None) -> None:
    values = np.asarray(ratios)
    over = values > TURNED_BOX_RATIO
    q = np.quantile(values, [0.0, 0.5, 0.99, 1.0])
    print(f"| {name} | {len(values)} | {q[0]:.3f} | {q[1]:.3f} | {q[2]:.3f} | {q[3]:.3f} | {int(over.sum())} | "
          f"{1000 * seconds / len(values):.0f} ms |")
    if names is not None and over.any():
        print("|   looks turned: " + ", ".join(f"{n} {r:.2f}" for n, r, o in zip(names, values, over) if o) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="a prepared dataset (its test split)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--conditions", nargs="+", default=["clean", "noise_0.01", "noise_0.02", "missing_side",
                                                       "stray_points", "rotated"])
    args = p.parse_args(argv)

    print(machine_line(machine_info("trimesh", "scipy")))
    print(f"threshold TURNED_BOX_RATIO = {TURNED_BOX_RATIO}\n")
    print("| inputs | shapes | min | median | 99 % | max | over the threshold | per input |")
    print("|---|---|---|---|---|---|---|---|")
    split = PreparedSplit.open(args.data, "test")
    records = [split[i] for i in range(min(args.limit, len(split)))]
    for name in args.conditions:
        condition, ratios, started = condition_by_name(name), [], time.perf_counter()
        for record in records:
            mesh = trimesh.Trimesh(record["vertices"], record["faces"], process=False)
            shaped = condition_shape(mesh, condition, seed=shape_seed(0, record["id"]))
            source = shaped.input
            if name == "stray_points":  # inference drops them before it reads the input
                from cad_recode.geometry.stray_points import without_stray_points

                source, _ = without_stray_points(source)
            ratios.append(input_ratio(source))
        report(f"test split, {name}", ratios, time.perf_counter() - started)

    from cad_recode.geometry.sandbox import Sandbox

    data = Path(__file__).parent / "data"
    with Sandbox(workers=1, profile="cadquery") as sandbox:
        for style in STYLE_SETS:
            files = sorted((data / style / "test").glob("*.py"))
            results = sandbox.map([f.read_text() for f in files])
            started = time.perf_counter()
            ratios = [input_ratio(r.to_trimesh()) for r in results]
            report(style, ratios, time.perf_counter() - started, [f.stem for f in files])
    return 0


if __name__ == "__main__":
    sys.exit(main())
