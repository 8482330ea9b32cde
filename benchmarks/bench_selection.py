"""Best of N's choice: how close each way of picking comes to the truth, on the same candidates.

    python benchmarks/bench_selection.py --model runs/tiny/model --data runs/tiny/data --limit 600
    python benchmarks/bench_selection.py --model runs/tiny/model --data benchmarks/data/style_set
    python benchmarks/bench_selection.py --model runs/tiny/model --data runs/tiny/data --condition rotated --pose auto

Every shape's N candidates (greedy, one per point draw, grammar on, as ``cad-recode eval``) are run
once in the sandbox and measured against the input points both ways, squared (the protocol's CD,
which best of N minimized until 2026-12-02) and plain (the mean distance, what it minimizes now),
and against the ground truth (IoU; never used to choose). The table gives the mean IoU of the
program each key picks, as written (no refinement), with the paired difference against the squared
key, and two bounds: the first draw alone and the oracle (the best candidate by IoU).
``--skip`` leaves out the first shapes, to check a choice on shapes it was not made on.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import machine_info, machine_line  # noqa: E402

from cad_recode.evaluate import describe_data, iter_ground_truth  # noqa: E402
from cad_recode.geometry.metrics import CloudDistance  # noqa: E402
from cad_recode.geometry.robustness import ROBUSTNESS_CONDITIONS, condition_by_name, condition_shape, shape_seed  # noqa: E402
from cad_recode.inference import CADRecoder, Decoding  # noqa: E402
from cad_recode.inference.judge import compare_with_truth, measure_candidates  # noqa: E402

KEYS = ("squared", "plain")


def measure_shape(recoder, shape_id: str, mesh, args, decoding: Decoding) -> list[dict]:
    """Each candidate of one shape: both distances to the input and the IoU against the truth (None: invalid)."""
    shaped = condition_shape(mesh, condition_by_name(args.condition), seed=shape_seed(args.seed, shape_id))
    item = recoder.encode_input((shape_id, shaped.input), args.num_candidates, args.seed,
                                (shape_id, shaped.truth), decoding)
    points = np.stack([draw.points for draw in item.draws])
    generated = [(item.placed_back(k, code), tokens, finished) for k, (code, tokens, finished)
                 in enumerate(recoder.generate(points, decoding, seed=args.seed, group_size=args.num_candidates))]
    executed = recoder.sandbox.map([code for code, _, _ in generated])
    # measured as best of N measures them: cd_input (squared) and distance_input (plain), both x10^3
    candidates, meshes = measure_candidates(list(zip(generated, executed)), args.seed,
                                            CloudDistance(item.dense, item.transform))
    return [{"valid": False} if candidate_mesh is None else
            {"valid": True, "squared": c.cd_input, "plain": c.distance_input,
             "iou": compare_with_truth(candidate_mesh, item.ground_truth, shape_id).iou or 0.0}
            for c, candidate_mesh in zip(candidates, meshes)]


def picked_iou(candidates: list[dict], key: str) -> float:
    valid = [c for c in candidates if c["valid"]]
    return min(valid, key=lambda c: c[key])["iou"] if valid else 0.0  # min keeps the first of equals


def summarize(shapes: list[list[dict]]) -> dict:
    picks = {key: np.array([picked_iou(c, key) for c in shapes]) for key in KEYS}
    first = np.array([c[0]["iou"] if c[0]["valid"] else 0.0 for c in shapes])
    oracle = np.array([max([x["iou"] for x in c if x["valid"]] or [0.0]) for c in shapes])
    out = {"shapes": len(shapes), "first_draw": float(first.mean()), "oracle": float(oracle.mean())}
    for key in KEYS:
        diff = picks[key] - picks["squared"]
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else math.nan
        out[key] = {"iou": float(picks[key].mean()), "vs_squared": float(diff.mean()), "se": se,
                    "better": int(np.sum(diff > 1e-9)), "worse": int(np.sum(diff < -1e-9))}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="a prepared dataset, or a folder of programs or meshes")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="shapes, counted after --skip (default: all)")
    p.add_argument("--skip", type=int, default=0, help="leave out the first shapes")
    p.add_argument("--num_candidates", type=int, default=4)
    p.add_argument("--condition", default="clean", choices=[c.name for c in ROBUSTNESS_CONDITIONS])
    p.add_argument("--pose", default="none", choices=("none", "auto"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", help="also write the figures and every candidate's measures here")
    args = p.parse_args(argv)

    decoding = Decoding(pose=args.pose)
    kind, ids = describe_data(args.data, args.split)
    ids = ids[args.skip:][: args.limit]
    shapes, names = [], []
    with CADRecoder.from_pretrained(args.model, sandbox_workers=args.workers, device="cpu") as recoder:
        for truth in iter_ground_truth(args.data, kind, ids, recoder.sandbox, args.split):
            if truth.mesh is not None:
                shapes.append(measure_shape(recoder, truth.id, truth.mesh, args, decoding))
                names.append(truth.id)
    figures = summarize(shapes)
    info = machine_info("torch", "transformers")
    print(machine_line(info))
    print(f"{args.data} ({args.split}, shapes {args.skip}..{args.skip + figures['shapes']}), {args.condition}, "
          f"pose {args.pose}, best of {args.num_candidates}, as written:")
    print(f"  first draw alone {figures['first_draw']:.4f}, oracle (best by IoU) {figures['oracle']:.4f}")
    for key in KEYS:
        f = figures[key]
        print(f"  picked by {key:7s} {f['iou']:.4f}  vs squared {f['vs_squared']:+.4f} ± {f['se']:.4f}"
              f"  ({f['better']} shapes better, {f['worse']} worse)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "figures": figures,
                                               "candidates": dict(zip(names, shapes))}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
