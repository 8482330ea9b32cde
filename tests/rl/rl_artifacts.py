"""Tiny RL inputs for the RL loop tests (not a test module): a prepared dataset of boxes and a start model.

- ``prepared_boxes(root)``: a prepared dataset (shards + manifest, written through the storage
  layer like tests/training) of centred boxes in CAD-Recode style: 8 training, 2 validation.
- the start model is ``infer_artifacts.save_memorizer``: a full tiny model (hidden 64, 32 point
  tokens) trained to write the cube program, so its samples are mostly valid boxes whose IoU with
  each target differs -- groups with different rewards, in a few seconds.
- ``rl_config(...)``: an RLConfig sized for seconds per update on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import trimesh

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/infer_artifacts.py
import infer_artifacts as art  # noqa: E402

from cad_recode.data.shards import ShapeRecord, build_manifest, hash_ids, write_manifest, write_shard  # noqa: E402
from cad_recode.rl.config import load_rl_config  # noqa: E402

BOXES = [(80, 80, 80), (80, 60, 40), (90, 30, 30), (50, 50, 20), (70, 70, 60), (40, 80, 80), (60, 60, 60),
         (100, 20, 20), (80, 80, 70), (30, 60, 90)]


def _box(a: int, b: int, c: int) -> tuple[str, trimesh.Trimesh]:
    code = (f"import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,{-c // 2}))\n"
            f"r=w0.workplane(offset={c}/2).box({a},{b},{c})\n")
    mesh = trimesh.creation.box(extents=(a, b, c))
    mesh.apply_translation((0, 0, -(c // 2) + c / 2))
    return code, mesh


def prepared_boxes(root: Path) -> Path:
    shapes = [_box(*dims) for dims in BOXES]
    infos = []
    for split, part in (("train", shapes[:8]), ("val", shapes[8:])):
        records = [ShapeRecord(f"{split}/{i}.py", code, np.asarray(m.vertices, np.float32),
                               np.asarray(m.faces, np.int32), m.volume, m.area, 6) for i, (code, m) in enumerate(part)]
        infos.append(write_shard(root / split / "shard-00000.arrow", split=split, index=0,
                                 ids_hash=hash_ids(r.id for r in records), num_planned=len(records),
                                 records=records, failures=[]))
    write_manifest(root, build_manifest(infos))
    return root


def start_model(cube_mesh, folder: Path) -> Path:
    return art.save_memorizer(cube_mesh, folder)


def settings(data_dir: Path, start: Path, output_dir: Path, **overrides) -> dict:
    values = dict(
        start_model=str(start), data_dir=str(data_dir), finetune_method="full", torch_dtype="float32",
        num_generations=4, top_k=2, temperature=1.0, max_new_tokens=art.MAX_NEW_TOKENS, generation_batch_size=2,
        shapes_per_update=4, ppo_epochs=2, micro_batch_size=4, learning_rate=1e-3, max_grad_norm=1.0,
        max_updates=3, eval_steps=2, val_num_samples=2, save_steps=2, save_total_limit=None,
        output_dir=str(output_dir), report_to="none", seed=0, hard_example_threshold=None,
    )
    values.update(overrides)
    return values


def rl_config(data_dir: Path, start: Path, output_dir: Path, **overrides):
    return load_rl_config(None, settings(data_dir, start, output_dir, **overrides))
