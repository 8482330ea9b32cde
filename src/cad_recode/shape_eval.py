"""Generation metrics of a model under training: IR, CD (x10^3) and IoU on validation shapes.

The recipe calls a :class:`ShapeEvaluator` at every evaluation (``--do_eval``).
Each shape's input points come from the same ``to_model_points`` as training
(no noise, seeded by the shape's index); the model writes a program per point
cloud (greedy, or ``eval_num_candidates`` samples of which the one closest to
the INPUT points is kept, never one chosen against the ground truth); the
programs run only in the sandbox; CD and IoU follow the protocol of
``cad_recode.geometry.metrics``.
"""

from __future__ import annotations

import torch

from cad_recode.config import TrainConfig


class ShapeEvaluator:
    """Generation metrics on the first ``eval_num_samples`` validation shapes: IR, CD (x10^3), IoU.

    Programs run only in the sandbox; with several candidates the one closest
    to the INPUT points is kept (never chosen against the ground truth).
    """

    def __init__(self, split, tokenizer, cfg: TrainConfig):
        import trimesh

        from cad_recode.geometry.sampling import to_model_points

        self.tokenizer, self.cfg, self.sandbox = tokenizer, cfg, None
        self.shapes = []
        for index in range(min(cfg.eval_num_samples, len(split))):
            record = split[index]
            mesh = trimesh.Trimesh(record["vertices"], record["faces"], process=False)
            points = to_model_points(mesh, n_points=cfg.num_point_tokens, n_surface=cfg.num_surface_points, seed=index)
            self.shapes.append((torch.from_numpy(points.points), mesh))

    def __call__(self, model) -> dict[str, float]:
        from cad_recode.geometry.metrics import compare_meshes, select_best, summarize
        from cad_recode.geometry.sandbox import Sandbox

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        was_training = base.training
        base.eval()
        device = base.get_input_embeddings().weight.device
        n, step = self.cfg.eval_num_candidates, self.cfg.per_device_eval_batch_size
        codes: list[str] = []
        try:
            for start in range(0, len(self.shapes), step):
                points = torch.stack([p for p, _ in self.shapes[start : start + step]]).to(device)
                codes += base.generate_code(
                    points, self.tokenizer, max_new_tokens=self.cfg.max_new_tokens, num_candidates=n, do_sample=n > 1
                )
        finally:
            base.train(was_training)
        if self.sandbox is None:
            self.sandbox = Sandbox(workers=1)
        results = self.sandbox.map(codes)
        cds, ious = [], []
        for i, (points, truth) in enumerate(self.shapes):
            meshes = [r.to_trimesh() if r.ok else None for r in results[i * n : (i + 1) * n]]
            best = select_best(meshes, points.numpy()) if n > 1 else (0 if meshes[0] is not None else None)
            if best is None:
                cds.append(None), ious.append(None)
                continue
            try:
                comparison = compare_meshes(meshes[best], truth)
                cds.append(comparison.cd), ious.append(comparison.iou)
            except ValueError:  # a degenerate solid counts as invalid
                cds.append(None), ious.append(None)
        summary = summarize(cds, ious)
        return {"ir": summary.invalid_ratio, "cd_mean": summary.mean_cd, "cd_median": summary.median_cd, "iou": summary.mean_iou}

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None
