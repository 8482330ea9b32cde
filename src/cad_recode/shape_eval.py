"""Generation metrics of a model under training: IR, CD (x10^3) and IoU on validation shapes.

The recipe calls a :class:`ShapeEvaluator` at every evaluation (``--do_eval``).
It goes through the same path as ``cad-recode eval``,
:meth:`cad_recode.infer.CADRecoder.reconstruct_many`: ``eval_num_candidates``
point draws per shape generated greedily in one batch, every program run only
in the sandbox, the valid candidate closest to the INPUT points kept (never one
chosen against the ground truth), then CD and IoU against the ground truth as
the protocol of :mod:`cad_recode.geometry.metrics` defines them.
"""

from __future__ import annotations

from cad_recode.config import TrainConfig


class ShapeEvaluator:
    """Generation metrics on the first ``eval_num_samples`` validation shapes: IR, CD (x10^3), IoU."""

    def __init__(self, split, tokenizer, cfg: TrainConfig):
        import trimesh

        self.tokenizer, self.cfg, self.sandbox = tokenizer, cfg, None
        self.shapes = []
        for index in range(min(cfg.eval_num_samples, len(split))):
            record = split[index]
            self.shapes.append((record["id"], trimesh.Trimesh(record["vertices"], record["faces"], process=False)))

    def __call__(self, model) -> dict[str, float]:
        from cad_recode.evaluate import protocol_row, summarize_rows
        from cad_recode.geometry.sandbox import Sandbox
        from cad_recode.infer import CADRecoder, Decoding

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        was_training = base.training
        if self.sandbox is None:
            self.sandbox = Sandbox(workers=1)
        n = self.cfg.eval_num_candidates
        try:
            recoder = CADRecoder(base, self.tokenizer, device=base.get_input_embeddings().weight.device,
                                 sandbox=self.sandbox)
            reconstructions = recoder.reconstruct_many(
                self.shapes, n, ground_truths=self.shapes, decoding=Decoding(self.cfg.max_new_tokens),
                batch_size=max(1, self.cfg.per_device_eval_batch_size // n),
            )
        finally:
            base.train(was_training)
        summary = summarize_rows([protocol_row(name, r.report) for (name, _), r in zip(self.shapes, reconstructions)])
        return {"ir": summary.invalid_ratio, "cd_mean": summary.mean_cd, "cd_median": summary.median_cd,
                "iou": summary.mean_iou}

    def close(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None
