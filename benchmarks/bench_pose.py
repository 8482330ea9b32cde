"""Pose candidates on the built-in shapes in random poses: alignment, rank, place-back IoU, time.

    python benchmarks/bench_pose.py                 # 11 shapes x 3 rotations, clean and noisy
    python benchmarks/bench_pose.py --rotations 1   # quicker

No model: the ground-truth program stands in for what a model would write in
the candidate's frame. Figures per condition (clean mesh input; a dense cloud
with Gaussian noise sigma = 0.01 in normalized units):

- top-candidate misalignment: degrees from the first candidate's frame to the
  nearest frame whose axes are the part's axes (0 = the model sees an
  axis-aligned part, in some one of the 24 orientations; a round part turned
  about its own axis counts as misaligned although it looks the same);
- rank of the best candidate: the program's solid is placed back under every
  candidate (numerically, no sandbox) and judged by CD to the input points, as
  best-of-N does; the rank of the winner (1 = first) is the budget a model that
  writes the program perfectly in every pose would need;
- IoU (protocol) of the winner, the program and its place-back line run in the
  sandbox, against the rotated input mesh;
- milliseconds per ``pose_candidates`` call (all candidates, 8192 points).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
from benchinfo import machine_info, machine_line
from scipy.spatial.transform import Rotation

from cad_recode.geometry.metrics import chamfer_distance, mesh_iou
from cad_recode.geometry.normalize import fit_normalization
from cad_recode.geometry.pose import (
    angle_to_cube_group,
    place_back,
    pose_candidates,
    posed_model_points,
)
from cad_recode.geometry.sampling import add_noise, sample_surface, to_model_points
from cad_recode.geometry.sandbox import Sandbox
from cad_recode.geometry.shapes import EXAMPLE_SHAPES

MATCH_DEGREES = 2.0  # "aligned" in the summary line


@dataclass(frozen=True)
class PoseRow:
    shape: str
    misalignment: float  # degrees from the first candidate to the part's axes
    rank: int  # 1-based rank of the candidate best-of-N keeps
    iou: float  # protocol IoU of that candidate's placed-back program with the input
    ms: float  # pose_candidates time


def measure(sandbox, name: str, program: str, truth, turn: np.ndarray, noise: float, seed: int) -> PoseRow:
    scan = truth.copy()
    scan.vertices = np.asarray(truth.vertices) @ turn.T
    input_transform = to_model_points(scan).transform
    dense = input_transform.apply(sample_surface(scan, seed=seed))
    if noise:
        dense = add_noise(dense, std=noise, prob=1.0, rng=np.random.default_rng(seed))
    started = time.perf_counter()
    candidates = pose_candidates(dense, budget=None)
    seconds = time.perf_counter() - started
    judged = dense[:: max(1, len(dense) // 2048)]  # the normalized input points, thinned for speed
    program_points = sample_surface(truth, n=2048, seed=seed)  # model units, the program's frame
    scores = []
    for candidate in candidates:
        placement = posed_model_points(scan, candidate, input_transform, n_points=16).placement
        placed_points = placement.to_input_frame(program_points)
        scores.append(chamfer_distance(fit_normalization(placed_points).apply(placed_points), judged))
    rank = int(np.argmin(scores)) + 1
    placed = place_back(program, posed_model_points(scan, candidates[rank - 1], input_transform).placement)
    result = sandbox.run(placed)
    return PoseRow(
        shape=name, misalignment=angle_to_cube_group(candidates[0].rotation @ turn), rank=rank,
        iou=mesh_iou(result.to_trimesh(), scan) if result.ok else float("nan"), ms=seconds * 1e3,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rotations", type=int, default=3, help="random rotations per shape")
    args = parser.parse_args()
    print(machine_line(machine_info("numpy", "scipy", "trimesh")))
    with Sandbox(workers=1) as sandbox:
        truths = {name: sandbox.run(code).to_trimesh() for name, code in EXAMPLE_SHAPES.items()}
        for noise in (0.0, 0.01):
            rows = []
            for index, (name, code) in enumerate(EXAMPLE_SHAPES.items()):
                for r in range(args.rotations):
                    turn = Rotation.random(random_state=1000 * index + r).as_matrix()
                    rows.append(measure(sandbox, name, code, truths[name], turn, noise, seed=r))
            print(f"\n## input noise sigma = {noise} ({len(rows)} shape poses)\n")
            print("| shape | top misalignment deg (max) | rank of best candidate (max) | IoU placed back (min) |")
            print("|---|---|---|---|")
            for name in EXAMPLE_SHAPES:
                mine = [row for row in rows if row.shape == name]
                print(f"| {name} | {max(r.misalignment for r in mine):.2f} | "
                      f"{max(r.rank for r in mine)} | {min(r.iou for r in mine):.4f} |")
            ious = [row.iou for row in rows]
            print(f"\nmean IoU {statistics.mean(ious):.4f}, min {min(ious):.4f}; "
                  f"top candidate within 2 deg of axis-aligned: "
                  f"{sum(row.misalignment < MATCH_DEGREES for row in rows)}/{len(rows)}; "
                  f"best candidate within the first 4: {sum(row.rank <= 4 for row in rows)}/{len(rows)}; "
                  f"pose_candidates median {statistics.median(row.ms for row in rows):.1f} ms")


if __name__ == "__main__":
    main()
