"""CADRecoder: a loaded model, its tokenizer and a sandbox; point clouds in, programs out.

    recoder = CADRecoder.from_pretrained("base_or_model", lora_path="run_dir")
    rec = recoder.reconstruct("part.stl", num_candidates=8)
    rec.code, rec.mesh, rec.result (the sandbox's ExecResult), rec.to_report() (JSON-ready)
    recoder.save(rec, "out/part.py")      # part.py, part.stl, part.step, part.png, part.json

Which weights are loaded is :mod:`cad_recode.model.loading`'s rule (merged_model/
first, said out loud in ``recoder.describe()``). This module only loads and
generates: encoding the inputs is :mod:`.inputs`, choosing among candidates
:mod:`.judge`, writing files :mod:`.export`.

Best of N (design.md §2): the input is turned into N point sets by the one
sampling function (:func:`cad_recode.geometry.sampling.to_model_points`), seeds
``seed .. seed+N-1`` (N FPS draws), generated in ONE batch; every candidate runs
in the sandbox; the valid candidate closest to the INPUT points wins.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

import cad_recode.model  # noqa: F401  registers model_type "cad_recode" with the Auto classes
from cad_recode.errors import InputError, UsageError
from cad_recode.inference import export
from cad_recode.inference.decoding import Decoding
from cad_recode.inference.inputs import EncodedInput, encode_input
from cad_recode.inference.judge import judge
from cad_recode.inference.results import Reconstruction, Timings
from cad_recode.model.loading import (
    ModelSource,
    attach_adapters,
    default_device,
    load_cad_recode_model,
    load_source_base,
    load_tokenizer,
    resolve_source,
)


def _silent(_: str) -> None:
    pass


class CADRecoder:
    """A loaded model + tokenizer + sandbox; reconstructs shapes. Use as a context manager or ``close()``."""

    def __init__(self, model, tokenizer, *, source: ModelSource | None = None, device=None, sandbox=None,
                 sandbox_workers: int = 1):
        from cad_recode.model.tokenizer import CodeTokens

        self.model = model
        self.tokenizer = tokenizer
        self.tokens = CodeTokens.from_tokenizer(tokenizer)
        self.source = source
        self.device = torch.device(device) if device is not None else default_device()
        self.model.to(self.device)
        self.model.eval()
        vocab = self.core.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > vocab:
            raise InputError(f"tokenizer has {len(tokenizer)} tokens but the model only {vocab}; use the tokenizer saved with the model")
        self._sandbox = sandbox
        self._own_sandbox = sandbox is None
        self._sandbox_workers = sandbox_workers

    # -- construction

    @classmethod
    def from_pretrained(
        cls,
        path_or_base: str | os.PathLike | None = None,
        lora_path: str | os.PathLike | None = None,
        adapters: dict[str, str | os.PathLike] | None = None,
        *,
        active_adapter: str | None = None,
        prefer_merged: bool = True,
        dtype: str | torch.dtype | None = None,
        device=None,
        sandbox=None,
        sandbox_workers: int = 1,
    ) -> CADRecoder:
        """Load per the module docstring's rule; ``source.describe()`` says what was used."""
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or ("bfloat16" if device.type == "cuda" else "float32")
        source = resolve_source(path_or_base, lora_path, adapters, prefer_merged)
        tokenizer = load_tokenizer(source.tokenizer_dir or source.base)
        if source.kind == "adapter":
            base = load_source_base(source, tokenizer, dtype=dtype)
            model = attach_adapters(base, source.adapters, source.base or str(source.tiny_config))
        else:
            model = load_cad_recode_model(source.model_dir, dtype=dtype)
        recoder = cls(model, tokenizer, source=source, device=device, sandbox=sandbox, sandbox_workers=sandbox_workers)
        if active_adapter is not None:
            recoder.set_adapter(active_adapter)
        return recoder

    @property
    def core(self):
        """The CADRecodeForCausalLM (inside the PEFT wrapper when adapters are loaded)."""
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    @property
    def adapters(self) -> list[str]:
        return list(getattr(self.model, "peft_config", {}) or {})

    @property
    def active_adapter(self) -> str | None:
        return self.model.active_adapter if self.adapters else None

    def set_adapter(self, name: str) -> None:
        """Switch the active adapter (LoRA weights and its own projector)."""
        if not self.adapters:
            raise UsageError(f"no adapters loaded ({self.describe()}); load them with adapters={{name: path}}")
        if name not in self.adapters:
            raise UsageError(f"adapter {name!r} is not loaded; loaded: {', '.join(self.adapters)}")
        self.model.set_adapter(name)
        self.model.eval()

    def describe(self) -> str:
        text = self.source.describe() if self.source else type(self.core).__name__
        return f"{text} (active adapter: {self.active_adapter})" if len(self.adapters) > 1 else text

    @property
    def sandbox(self):
        if self._sandbox is None:
            from cad_recode.geometry.sandbox import Sandbox

            self._sandbox = Sandbox(workers=self._sandbox_workers)
        return self._sandbox

    def close(self) -> None:
        if self._own_sandbox and self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    def __enter__(self) -> CADRecoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the steps

    @property
    def num_point_tokens(self) -> int:
        return int(self.core.config.num_point_tokens)

    def generate(self, points: np.ndarray, decoding: Decoding, seed: int = 0, group_size: int = 1,
                 first_of_reading: list[bool] | None = None) -> list[tuple[str, int, bool]]:
        """(B, P, 3) normalized points -> B x (code, generated tokens, finished), one batch.

        ``group_size``: rows ``g*N .. g*N+N-1`` are the N candidates of one input, so
        a runaway among them can end early (``decoding.runaway_factor``). ``first_of_reading``:
        each row's flag from :meth:`EncodedInput.first_of_reading` (default: the first row of each
        group), which ``decoding.sampling`` keeps greedy. The decoding itself is
        :func:`cad_recode.model.generation.generate_programs`, shared with the RL rollouts.
        """
        from cad_recode.model.generation import generate_programs

        if first_of_reading is None:
            first_of_reading = [row % group_size == 0 for row in range(len(points))]
        greedy = decoding.greedy_rows(first_of_reading)
        tensor = torch.as_tensor(np.asarray(points, dtype=np.float32), device=self.device)
        rows = generate_programs(
            self.core, self.tokenizer, tensor, max_new_tokens=decoding.max_new_tokens, do_sample=not all(greedy),
            temperature=decoding.sampling_temperature, top_p=decoding.top_p, runaway_factor=decoding.runaway_factor,
            grammar=decoding.grammar, group_size=group_size, seed=seed, greedy_rows=greedy,
        )
        return [(row.code, len(row.ids), row.finished) for row in rows]

    @property
    def num_surface_points(self) -> int:
        """Surface samples drawn before FPS, as in training (the model's config records it)."""
        return int(self.core.config.num_surface_points)

    def encode_input(self, source, num_candidates: int, seed: int = 0, ground_truth=None,
                     decoding: Decoding | None = None) -> EncodedInput:
        """Load one input; its N point draws (seeds seed..seed+N-1, under ``decoding.pose``), dense cloud, ground truth."""
        decoding = decoding or Decoding()
        return encode_input(source, num_candidates, num_point_tokens=self.num_point_tokens,
                            num_surface_points=self.num_surface_points, seed=seed, ground_truth=ground_truth,
                            sandbox=self.sandbox, pose=decoding.pose, pose_budget=decoding.pose_budget,
                            drop_strays=decoding.drop_stray_points)

    def reconstruct(
        self,
        points_or_path,
        num_candidates: int = 1,
        *,
        ground_truth=None,
        restore_units: bool = False,
        seed: int = 0,
        max_new_tokens: int = Decoding.max_new_tokens,
        sampling: str = Decoding.sampling,
        temperature: float | None = None,
        top_p: float | None = None,
        pose: str = Decoding.pose,
        pose_budget: int = Decoding.pose_budget,
    ) -> Reconstruction:
        """One input (path, mesh or (N, 3) array) -> :class:`Reconstruction`; see the module docstring.

        ``ground_truth``: a mesh, a path (mesh/STEP/.py program) or ``("name", mesh)``, only measured.
        ``sampling``: which of the N candidates are sampled (see :class:`Decoding`).
        ``pose="auto"``: the candidates are decoded under up to ``pose_budget`` orientations (see :class:`Decoding`);
        ``"if_turned"`` (the default) only when the input looks turned, ``"none"``: as given.
        """
        return self.reconstruct_many(
            [points_or_path], num_candidates, ground_truths=[ground_truth], restore_units=restore_units, seed=seed,
            decoding=Decoding(max_new_tokens, sampling, temperature, top_p, pose=pose, pose_budget=pose_budget),
        )[0]

    def reconstruct_many(
        self,
        inputs: Sequence,
        num_candidates: int = 1,
        *,
        ground_truths: Sequence | None = None,
        restore_units: bool = False,
        seed: int = 0,
        decoding: Decoding | None = None,
        batch_size: int = 1,
        progress: bool | str = False,
    ) -> list[Reconstruction]:
        """Reconstruct several inputs; ``batch_size`` inputs (x N candidates) share one generate call.

        Returns a list; with ``progress`` a tqdm bar counts inputs.
        """
        if num_candidates < 1:
            raise UsageError(f"num_candidates must be >= 1, got {num_candidates}")
        decoding = decoding or Decoding()
        truths = list(ground_truths) if ground_truths is not None else [None] * len(inputs)
        if len(truths) != len(inputs):
            raise UsageError(f"{len(inputs)} inputs but {len(truths)} ground truths")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(inputs), desc=progress if isinstance(progress, str) else "reconstruct", unit="shape")
        results: list[Reconstruction] = []
        try:
            for start in range(0, len(inputs), max(1, batch_size)):
                chunk = range(start, min(start + max(1, batch_size), len(inputs)))
                results += self._reconstruct_chunk(
                    [inputs[i] for i in chunk], [truths[i] for i in chunk], num_candidates, seed, decoding, restore_units
                )
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        return results

    def _reconstruct_chunk(self, inputs, truths, n, seed, decoding, restore_units) -> list[Reconstruction]:
        prepared = [self.encode_input(source, n, seed, truth, decoding) for source, truth in zip(inputs, truths)]
        return self.reconstruct_encoded(prepared, n, seed=seed, decoding=decoding, restore_units=restore_units)

    def reconstruct_encoded(self, prepared: Sequence[EncodedInput], num_candidates: int, *, seed: int = 0,
                            decoding: Decoding | None = None, restore_units: bool = False,
                            on_stage: Callable[[str], None] | None = None) -> list[Reconstruction]:
        """Inputs already encoded (:meth:`encode_input`) -> one generate call for all of them, then judge each.

        ``on_stage`` hears one line as each stage starts (generating, sandbox, refining, metrics).
        """
        n, decoding, stage = num_candidates, decoding or Decoding(), on_stage or _silent
        started = time.perf_counter()
        points = np.stack([draw.points for item in prepared for draw in item.draws])
        stage(f"generating {len(points)} program{'s' if len(points) > 1 else ''} "
              f"(at most {decoding.max_new_tokens} tokens each)")
        generated = self.generate(points, decoding, seed=seed, group_size=n,
                                  first_of_reading=[first for item in prepared for first in item.first_of_reading()])
        generate_seconds = (time.perf_counter() - started) / len(prepared)
        stage(f"running {len(generated)} program{'s' if len(generated) > 1 else ''} in the sandbox")
        started = time.perf_counter()
        # a posed candidate runs with its place-back line: judged, refined and saved in the input's frame
        generated = [(item.placed_back(k, code), tokens, finished) for i, item in enumerate(prepared)
                     for k, (code, tokens, finished) in enumerate(generated[i * n : (i + 1) * n])]
        executed = self.sandbox.map([code for code, _, _ in generated])
        execute_seconds = (time.perf_counter() - started) / len(prepared)
        out = []
        for i, item in enumerate(prepared):
            rows = list(zip(generated[i * n : (i + 1) * n], executed[i * n : (i + 1) * n]))
            timings = Timings(encode=item.encode_seconds, generate=generate_seconds, execute=execute_seconds)
            out.append(judge(item, rows, first_seed=seed, decoding=decoding, restore_units=restore_units,
                             sandbox=self.sandbox, model_name=self.describe(),
                             prompt_tokens=self.num_point_tokens + 1, timings=timings, on_stage=on_stage))
        return out

    # -- outputs

    def save(self, rec: Reconstruction, code_path: str | os.PathLike, *, picture: bool = True) -> dict[str, Path]:
        """Write part.py (+ .stl, .step when valid, .png, .json) beside ``code_path``; see :mod:`.export`."""
        return export.save(rec, code_path, self.sandbox, picture=picture)
