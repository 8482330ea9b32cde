"""Inference recipe: point cloud, mesh or STEP file in; CadQuery program, solid and report out.

    recoder = CADRecoder.from_pretrained("base_or_model", lora_path="run_dir")
    rec = recoder.reconstruct("part.stl", num_candidates=8)
    rec.code, rec.mesh, rec.result (the sandbox's ExecResult), rec.report (JSON-ready dict)
    recoder.save(rec, "out/part.py")      # part.py, part.stl, part.step, part.png, part.json

Which weights (the guide's rule, said out loud in ``recoder.source``):

1. ``lora_path/merged_model/`` when it exists (a self-contained merged model);
2. else ``lora_path`` itself when it is a full model (``config.json``, a full fine-tune);
3. else the adapter in ``lora_path`` on top of the base model (``path_or_base``, or the
   ``base_model_name_or_path`` the adapter recorded). Several adapters may be loaded
   by name (``adapters={"name": path}``) and switched with :meth:`CADRecoder.set_adapter`;
   each carries its own trained projector (PEFT ``modules_to_save``).

The tokenizer comes from the adapter / model folder (training saves it there), so
everything works offline from local folders.

Best of N (design.md §2): the input is turned into N point sets by the one
sampling function (:func:`cad_recode.geometry.sampling.to_model_points`), seeds
``seed .. seed+N-1`` (N FPS draws), generated in ONE batch; every candidate runs
in the sandbox; the valid candidate whose surface is closest (Chamfer) to the
INPUT points wins. Ground truth, when given, is only measured, never used to choose.

Units. The model reads points normalized to [-1, 1]^3 and writes programs in
CAD-Recode units, where that cube spans [-100, 100]. ``restore_units`` maps the
solid back to the input's own units:
``x_input = transform.invert(x_model / 100) = x_model / (100 * scale) + center``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import trimesh

import cad_recode.model  # noqa: F401  registers model_type "cad_recode" with the Auto classes
from cad_recode.atomic import atomic_file
from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.normalize import Transform
from cad_recode.geometry.sampling import NUM_SURFACE_POINTS, ModelPoints, sample_surface, to_model_points
from cad_recode.model.runaway import DEFAULT_RUNAWAY_FACTOR, RunawayStop

MODEL_UNITS = 100.0
"""Half the side of the cube that normalized [-1, 1] points map to in generated programs."""
MERGED_DIR = "merged_model"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
RUN_CONFIG = "config.yaml"
DEFAULT_ADAPTER = "default"
OUTPUT_SUFFIXES = (".py", ".stl", ".step", ".png", ".json")


# --------------------------------------------------------------------------- where the weights are


@dataclass
class ModelSource:
    """What will be loaded. ``kind``: merged_model | full_model | adapter."""

    kind: str
    model_dir: Path | None = None  # merged or full model folder
    base: str | None = None  # base model name or folder (adapter kind)
    adapters: dict[str, Path] = field(default_factory=dict)
    tokenizer_dir: Path | None = None
    tiny_config: Path | None = None  # a tiny_model run: its base is rebuilt from this config.yaml

    def describe(self) -> str:
        if self.kind == "adapter":
            names = ", ".join(f"{name}={path}" for name, path in self.adapters.items())
            base = f"tiny base rebuilt from {self.tiny_config}" if self.tiny_config else f"base model {self.base}"
            return f"{base} + adapter {names}"
        label = "merged model" if self.kind == "merged_model" else "full model"
        return f"{label} {self.model_dir}"


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: unreadable {what} ({str(err).splitlines()[0]}); re-export it") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} is not a JSON object; re-export it")
    return data


def _is_cad_recode_model(folder: Path) -> bool:
    config = folder / "config.json"
    return config.is_file() and _read_json(config, "model config").get("model_type") == "cad_recode"


def _check_adapter_dir(path: Path) -> dict:
    """The adapter's config, after checking that its files are there and readable."""
    if not path.exists():
        raise InputError(f"adapter folder {path} does not exist; pass the output_dir of a LoRA training run")
    if not path.is_dir():
        raise InputError(f"adapter path {path} is a file; pass the folder that holds {ADAPTER_CONFIG}")
    if not (path / ADAPTER_CONFIG).is_file():
        raise InputError(
            f"{path}: {ADAPTER_CONFIG} is missing (and there is no {MERGED_DIR}/ or config.json); "
            "pass the output_dir of a training run or a merged model folder"
        )
    config = _read_json(path / ADAPTER_CONFIG, "adapter config")
    if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
        raise InputError(f"{path}: {ADAPTER_WEIGHTS[0]} is missing; the adapter was not saved completely")
    return config


def _recorded_base(adapter_dir: Path) -> str | None:
    return _read_json(adapter_dir / ADAPTER_CONFIG, "adapter config").get("base_model_name_or_path") or None


def resolve_source(
    path_or_base: str | os.PathLike | None,
    lora_path: str | os.PathLike | None = None,
    adapters: dict[str, str | os.PathLike] | None = None,
    prefer_merged: bool = True,
) -> ModelSource:
    """Decide which weights to load (see the module docstring); only reads small files."""
    named = {name: Path(path) for name, path in (adapters or {}).items()}
    lora = Path(lora_path) if lora_path is not None else None
    base = str(path_or_base) if path_or_base is not None else None

    if lora is None and not named and base is not None and Path(base).is_dir():
        folder = Path(base)  # a training output_dir or a merged model given as the model itself
        if _is_cad_recode_model(folder) or (folder / ADAPTER_CONFIG).is_file() or (folder / MERGED_DIR).is_dir():
            lora, base = folder, None
    if lora is not None and not named:
        if not lora.exists():
            raise InputError(f"lora_path {lora} does not exist; pass the output_dir of a training run")
        merged = lora / MERGED_DIR
        if prefer_merged and (merged / "config.json").is_file():
            return ModelSource("merged_model", model_dir=merged, tokenizer_dir=merged)
        if _is_cad_recode_model(lora):
            return ModelSource("full_model", model_dir=lora, tokenizer_dir=lora)
    if lora is not None:
        if DEFAULT_ADAPTER in named:
            raise UsageError(f"adapter name {DEFAULT_ADAPTER!r} is taken by --lora_path; name the other adapters differently")
        named = {DEFAULT_ADAPTER: lora, **named}
    if not named:
        where = base or "(none given)"
        raise UsageError(
            f"model {where} is not a trained CAD-Recode model (no {MERGED_DIR}/, adapter or cad_recode config.json); "
            "pass --lora_path with the training output_dir, or a merged model folder"
        )
    for path in named.values():
        _check_adapter_dir(path)
    first = next(iter(named.values()))
    if base is not None:
        _check_local(base, "base model")
    tokenizer_dir = first if (first / "tokenizer_config.json").is_file() else None
    tiny = None
    if base is None:
        # A tiny_model run's recorded base name (if any) is not where its random base came from.
        tiny = _tiny_run_config(first)
        base = None if tiny is not None else _recorded_base(first)
        if base is None and tiny is None:
            raise UsageError(f"adapter {first} does not record its base model; pass --base_model")
    return ModelSource("adapter", base=base, adapters=named, tokenizer_dir=tokenizer_dir, tiny_config=tiny)


def _tiny_run_config(adapter_dir: Path) -> Path | None:
    """The config.yaml of a ``tiny_model`` training run (its random base is rebuilt from it), else None."""
    path = adapter_dir / RUN_CONFIG
    if not path.is_file():
        return None
    from cad_recode.config import load_config

    try:
        return path if load_config(path).tiny_model is not None else None
    except UsageError:
        return None


# --------------------------------------------------------------------------- loading


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(folder: str | os.PathLike):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=Path(str(folder)).exists())
    except (OSError, ValueError, TypeError) as err:
        raise InputError(
            f"no usable tokenizer in {folder} ({str(err).splitlines()[0][:160]}); training saves it beside the "
            "adapter and in merged_model/: copy tokenizer.json and tokenizer_config.json there"
        ) from None


def adapter_num_point_tokens(adapter_dir: Path) -> int | None:
    """num_point_tokens of the run that trained this adapter (its config.yaml), if recorded."""
    path = adapter_dir / RUN_CONFIG
    if not path.is_file():
        return None
    import yaml

    try:
        value = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("num_point_tokens")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


def _check_local(name_or_path: str | os.PathLike, what: str) -> None:
    """A name that is clearly a path (absolute, ./, ../, ~) must exist: never send it to the hub."""
    text = str(name_or_path)
    if (Path(text).is_absolute() or text.startswith((".", "~"))) and not Path(text).expanduser().exists():
        raise InputError(f"{what} folder {text} does not exist; check the path")


def load_cad_recode_model(folder: str | os.PathLike, dtype: str | torch.dtype = "float32"):
    """A saved CADRecodeForCausalLM (merged or full fine-tune) from ``folder``."""
    import cad_recode.model  # noqa: F401  registers the Auto classes
    from cad_recode.model import CADRecodeForCausalLM, load_base_lm

    _check_local(folder, "model")
    model = load_base_lm(folder, dtype=dtype)
    if not isinstance(model, CADRecodeForCausalLM):
        raise InputError(f"{folder} holds a plain {type(model).__name__}, not a CAD-Recode model with a projector")
    return model


def load_base(base: str, dtype: str | torch.dtype = "float32", num_point_tokens: int | None = None):
    """The full-precision base the adapters go on: a CADRecodeForCausalLM (a bare LM is wrapped)."""
    from cad_recode.model import DEFAULT_NUM_POINT_TOKENS, CADRecodeForCausalLM, load_base_lm

    _check_local(base, "base model")
    model = load_base_lm(base, dtype=dtype)
    if not isinstance(model, CADRecodeForCausalLM):
        model = CADRecodeForCausalLM.from_lm(model, num_point_tokens=num_point_tokens or DEFAULT_NUM_POINT_TOKENS)
    return model


def load_source_base(source: ModelSource, tokenizer, dtype: str | torch.dtype = "float32"):
    """The full-precision base of an adapter source: loaded, or rebuilt for a tiny_model run."""
    tokens = adapter_num_point_tokens(next(iter(source.adapters.values())))
    if source.tiny_config is None:
        return load_base(source.base, dtype=dtype, num_point_tokens=tokens)
    from cad_recode.config import load_config
    from cad_recode.model import CADRecodeForCausalLM, resolve_dtype
    from cad_recode.train import build_tiny

    cfg = load_config(source.tiny_config)
    lm = build_tiny(cfg, vocab_size=len(tokenizer)).to(resolve_dtype(dtype))  # same seed: the same random base
    return CADRecodeForCausalLM.from_lm(lm, num_point_tokens=cfg.num_point_tokens)


def attach_adapters(base_model, adapters: dict[str, Path], base_name: str):
    """PeftModel with every adapter loaded under its name; the first is active.

    An adapter that does not fit the base (another architecture or size) is a
    one-line InputError naming both.
    """
    from peft import PeftModel

    peft_model = None
    for name, path in adapters.items():
        try:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(base_model, str(path), adapter_name=name, is_trainable=False)
            else:
                peft_model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as err:
            lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
            detail = next((line for line in lines if "size mismatch" in line), lines[-1] if lines else type(err).__name__)
            raise InputError(
                f"adapter {path} (trained on {_recorded_base(path) or 'an unrecorded base'}) does not fit base model "
                f"{base_name}: {detail[:240]}; pass the --base_model it was trained on"
            ) from None
    peft_model.set_adapter(next(iter(adapters)))
    peft_model.eval()
    return peft_model


# --------------------------------------------------------------------------- results


@dataclass
class Candidate:
    """One generated program: which point draw, what happened when it ran, how close it is."""

    seed: int
    code: str
    tokens: int  # generated tokens, up to the end token
    finished: bool  # ended with <|endoftext|> (False: cut at max_new_tokens, or as a runaway)
    status: str = ""
    reason: str = ""
    cd_input: float | None = None  # CD x10^3 to the input points, unit cube (protocol units)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("seed", "status", "reason", "cd_input", "tokens", "finished")}


@dataclass
class Reconstruction:
    """The result for one input. ``code`` is the winner's program ('' if no candidate was valid)."""

    code: str
    result: Any  # the winner's ExecResult, or None
    mesh: trimesh.Trimesh | None  # the winner's solid, in input units if restore_units, else model units
    report: dict[str, Any]
    candidates: list[Candidate]
    input_points: np.ndarray  # the first draw's normalized model points (for the picture)
    transform: Transform

    @property
    def valid(self) -> bool:
        return self.mesh is not None


@dataclass
class Decoding:
    """How a program is produced: generation (greedy by default, design.md §2), then optional refinement."""

    max_new_tokens: int = 768
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    # best-of-N: end a candidate once half its siblings finished and it is this many times longer
    # than the longest of them (cad_recode.model.runaway); 0 never ends one early
    runaway_factor: float = DEFAULT_RUNAWAY_FACTOR
    # > 0: fit the winner's integer dimensions to the input points with up to this many sandbox
    # runs (cad_recode.refine); the report keeps the program as the model wrote it. 0: off
    refine_evaluations: int = 0

    def __post_init__(self):
        if self.refine_evaluations < 0:
            raise UsageError(f"refine_evaluations must be >= 0 (0: off), got {self.refine_evaluations}")
        if self.max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.runaway_factor != 0 and not self.runaway_factor > 1:
            raise UsageError(f"runaway_factor must be 0 (off) or > 1, got {self.runaway_factor}")
        if self.temperature is not None and self.temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {self.top_p}")

    def to_dict(self) -> dict[str, Any]:
        return dict(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample, temperature=self.temperature,
                    top_p=self.top_p, runaway_factor=self.runaway_factor, refine_evaluations=self.refine_evaluations)


@dataclass
class EncodedInput:
    """An input after encoding: its N point draws and the dense cloud the candidates are judged against."""

    name: str
    draws: list[ModelPoints]
    dense: np.ndarray  # input units; normalized by CloudDistance
    ground_truth: trimesh.Trimesh | None
    ground_truth_name: str | None
    encode_seconds: float
    truth_seconds: float  # loading / running the ground truth: counted under metrics


def _compare_with_truth(mesh: trimesh.Trimesh, truth: trimesh.Trimesh) -> dict[str, Any]:
    """Report fields cd_gt and iou_gt (None when not measurable), and iou_error / gt_error when something failed."""
    from cad_recode.geometry.metrics import compare_meshes

    fields: dict[str, Any] = {"cd_gt": None, "iou_gt": None}
    try:
        comparison = compare_meshes(mesh, truth)
    except (ValueError, InputError) as err:
        return {**fields, "gt_error": str(err).splitlines()[0]}
    fields.update(cd_gt=comparison.cd, iou_gt=None if math.isnan(comparison.iou) else comparison.iou)
    if comparison.iou_error:
        fields["iou_error"] = comparison.iou_error
    return fields


def restore_mesh(mesh: trimesh.Trimesh, transform: Transform) -> trimesh.Trimesh:
    """Model units -> the input's units: ``transform.invert(x / 100)``."""
    restored = mesh.copy()
    restored.vertices = transform.invert(np.asarray(mesh.vertices) / MODEL_UNITS)
    return restored


def restored_program(code: str, transform: Transform) -> str:
    """``code`` plus one line that scales and moves its solid ``r`` into the input's units.

    Shape.scale works about the origin: ``x * k + center`` with ``k = 1 / (100 * scale)``.
    Only for programs that keep their result in ``r`` (CAD-Recode style); callers fall
    back to the model-unit STEP when this program fails.
    """
    k = 1.0 / (MODEL_UNITS * transform.scale)
    cx, cy, cz = (float(c) for c in transform.center)
    return (
        f"{code.rstrip()}\nimport cadquery as cq\n"
        f"r=cq.Workplane('XY').newObject([r.findSolid().scale({k!r}).translate(cq.Vector({cx!r},{cy!r},{cz!r}))])\n"
    )


def check_writable(path: str | os.PathLike) -> Path:
    """One-line InputError unless a file can be written at ``path`` (checked before any work)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output {path} is a folder; give a file name such as {path / 'part.py'}")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InputError(f"cannot write output {path}: {blocker} is a file, not a folder; choose another path")
    probe = path.with_name(f".{path.name}.write-test")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise InputError(f"cannot write output {path}: {err.strerror or err}; choose a writable folder") from None
    return path


def output_paths(code_path: str | os.PathLike) -> dict[str, Path]:
    """part.py -> {py, stl, step, png, json} beside it."""
    code_path = Path(code_path)
    stem = code_path.with_suffix("") if code_path.suffix == ".py" else code_path
    return {suffix[1:]: stem.with_name(stem.name + suffix) for suffix in OUTPUT_SUFFIXES}


# --------------------------------------------------------------------------- the recoder


class CADRecoder:
    """A loaded model + tokenizer + sandbox; reconstructs shapes. Use as a context manager or ``close()``."""

    def __init__(self, model, tokenizer, *, source: ModelSource | None = None, device=None, sandbox=None,
                 sandbox_workers: int = 1):
        from cad_recode.tokenizer import CodeTokens

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

    def generate(self, points: np.ndarray, decoding: Decoding, seed: int = 0,
                 group_size: int = 1) -> list[tuple[str, int, bool]]:
        """(B, P, 3) normalized points -> B x (code, generated tokens, finished), one batch.

        ``group_size``: rows ``g*N .. g*N+N-1`` are the N candidates of one input, so
        a runaway among them can end early (``decoding.runaway_factor``).
        """
        tensor = torch.as_tensor(np.asarray(points, dtype=np.float32), device=self.device)
        if decoding.do_sample:
            torch.manual_seed(seed)
        runaway = None
        if group_size > 1 and decoding.runaway_factor:
            runaway = RunawayStop(group_size, self.tokens.end_id, decoding.runaway_factor)
        rows = self.core.generate_ids(
            tensor, self.tokens, max_new_tokens=decoding.max_new_tokens, num_candidates=1,
            do_sample=decoding.do_sample, temperature=decoding.temperature, top_p=decoding.top_p,
            stopping_criteria=[runaway] if runaway else None,
        )
        out = []
        for i, ids in enumerate(rows.tolist()):
            cut = runaway is not None and runaway.cut is not None and bool(runaway.cut[i])
            if cut:  # ended by RunawayStop: drop the padding it got after the cut
                while ids and ids[-1] == self.tokens.pad_id:
                    ids.pop()
            finished = not cut and self.tokens.end_id in ids
            kept = ids[: ids.index(self.tokens.end_id)] if finished else ids
            out.append((self.tokenizer.decode(kept, skip_special_tokens=False), len(kept), finished))
        return out

    def encode_input(self, source, num_candidates: int, seed: int = 0, ground_truth=None) -> EncodedInput:
        """Load one input; its N point draws (seeds seed..seed+N-1), dense cloud and ground truth."""
        started = time.perf_counter()
        name, geometry = _load_input(source)
        draws = [to_model_points(geometry, n_points=self.num_point_tokens, seed=seed + k) for k in range(num_candidates)]
        if isinstance(geometry, trimesh.Trimesh):
            dense = sample_surface(geometry, NUM_SURFACE_POINTS, seed=seed)
        else:
            dense = np.asarray(geometry, dtype=np.float64)
        encoded = time.perf_counter()
        truth, truth_name = (None, None)
        if ground_truth is not None:
            truth_name, truth = _load_ground_truth(ground_truth, self.sandbox)
        return EncodedInput(name, draws, dense, truth, truth_name, encoded - started, time.perf_counter() - encoded)

    def reconstruct(
        self,
        points_or_path,
        num_candidates: int = 1,
        *,
        ground_truth=None,
        restore_units: bool = False,
        seed: int = 0,
        max_new_tokens: int = 768,
        do_sample: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
    ) -> Reconstruction:
        """One input (path, mesh or (N, 3) array) -> :class:`Reconstruction`; see the module docstring.

        ``ground_truth``: a mesh, a path (mesh/STEP/.py program) or ``("name", mesh)``, only measured.
        """
        return self.reconstruct_many(
            [points_or_path], num_candidates, ground_truths=[ground_truth], restore_units=restore_units, seed=seed,
            decoding=Decoding(max_new_tokens, do_sample, temperature, top_p),
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
        prepared = [self.encode_input(source, n, seed, truth) for source, truth in zip(inputs, truths)]
        started = time.perf_counter()
        points = np.stack([draw.points for item in prepared for draw in item.draws])
        generated = self.generate(points, decoding, seed=seed, group_size=n)
        generate_seconds = (time.perf_counter() - started) / len(prepared)
        started = time.perf_counter()
        executed = self.sandbox.map([code for code, _, _ in generated])
        execute_seconds = (time.perf_counter() - started) / len(prepared)
        out = []
        for i, item in enumerate(prepared):
            rows = list(zip(generated[i * n : (i + 1) * n], executed[i * n : (i + 1) * n]))
            out.append(self.judge_candidates(item, rows, seed, decoding, restore_units,
                                   dict(encode=item.encode_seconds, generate=generate_seconds, execute=execute_seconds)))
        return out

    def judge_candidates(self, item: EncodedInput, rows, seed, decoding, restore_units, timings) -> Reconstruction:
        """Measure each candidate against the input points, keep the closest valid one, compare with GT.

        ``rows``: per candidate ((code, generated tokens, finished), ExecResult), in draw order.
        """
        from cad_recode.geometry.metrics import CloudDistance, protocol_cd
        from cad_recode.refine import refine_program

        started = time.perf_counter()
        to_input = CloudDistance(item.dense)  # the input cloud indexed once for every candidate
        candidates, meshes = [], []
        for k, ((code, tokens, finished), result) in enumerate(rows):
            candidate = Candidate(seed + k, code, tokens, finished, result.status.value, result.reason)
            mesh = None
            if result.ok:
                try:
                    mesh = result.to_trimesh()
                    candidate.cd_input = protocol_cd(to_input(mesh, where=f"candidate {k}"))
                except (ValueError, InputError) as err:  # degenerate tessellation: not a usable solid
                    mesh, candidate.status, candidate.reason = None, "invalid", str(err).splitlines()[0]
            candidates.append(candidate)
            meshes.append(mesh)
        scored = [(c.cd_input, k) for k, c in enumerate(candidates) if c.cd_input is not None and math.isfinite(c.cd_input)]
        best = min(scored)[1] if scored else None
        code = candidates[best].code if best is not None else ""
        result = rows[best][1] if best is not None else None
        mesh = meshes[best] if best is not None else None
        cd_input = candidates[best].cd_input if best is not None else None
        transform = item.draws[0].transform
        refinement = None
        if best is not None and decoding.refine_evaluations:
            refined = refine_program(code, item.dense, self.sandbox, max_evaluations=decoding.refine_evaluations,
                                     start_result=result)
            refinement = {**refined.to_dict(), "model_code": code}
            timings["refine"] = refined.seconds
            if refined.changed:
                code, result, mesh = refined.code, refined.result, refined.result.to_trimesh()
                cd_input = protocol_cd(to_input(mesh, where="refined program"))
        report: dict[str, Any] = {
            "input": item.name,
            "model": self.describe(),
            "valid": best is not None,
            "best_candidate": best,
            "num_candidates": len(candidates),
            "num_valid_candidates": len(scored),
            "cd_input": cd_input,
            "ground_truth": item.ground_truth_name,
            "cd_gt": None,
            "iou_gt": None,
            "units": "input" if restore_units else "model",
            "transform": transform.to_dict(),
            "decoding": decoding.to_dict(),
        }
        if refinement is not None:
            report["refinement"] = refinement
        if mesh is not None and item.ground_truth is not None:
            report.update(_compare_with_truth(mesh, item.ground_truth))
            if refinement is not None:  # the program as written, measured too: refined and model-only figures
                written = report if mesh is meshes[best] else _compare_with_truth(meshes[best], item.ground_truth)
                refinement.update(model_cd_gt=written["cd_gt"], model_iou_gt=written["iou_gt"])
        if mesh is not None and restore_units:
            mesh = restore_mesh(mesh, transform)
        timings["metrics"] = time.perf_counter() - started - timings.get("refine", 0.0) + item.truth_seconds
        timings["total"] = sum(timings.values())
        report["timings"] = {k: round(v, 6) for k, v in timings.items()}
        report["tokens"] = {
            "prompt": self.num_point_tokens + 1,
            "generated": [c.tokens for c in candidates],
            "generated_total": sum(c.tokens for c in candidates),
            "best": candidates[best].tokens if best is not None else None,
        }
        report["candidates"] = [c.to_dict() for c in candidates]
        if best is None:
            reasons = sorted({f"{c.status}: {c.reason}" if c.reason else c.status for c in candidates})
            report["reason"] = "; ".join(reasons)[:500]
        return Reconstruction(
            code=code,
            result=result,
            mesh=mesh,
            report=report,
            candidates=candidates,
            input_points=item.draws[0].points,
            transform=transform,
        )

    # -- outputs

    def save(self, rec: Reconstruction, code_path: str | os.PathLike, *, picture: bool = True) -> dict[str, Path]:
        """Write part.py (+ .stl, .step when valid, .png, .json) beside ``code_path``; returns the paths written.

        With no valid candidate, part.py holds the first candidate's program under a
        comment saying why it failed, so the user can see what the model wrote.
        """
        paths = output_paths(code_path)
        written: dict[str, Path] = {}
        code = rec.code
        if not rec.valid:
            first = rec.candidates[0] if rec.candidates else None
            reason = rec.report.get("reason", "no candidate")
            code = f"# INVALID: no candidate built a valid solid ({' '.join(reason.split())[:300]})\n" + (first.code if first else "")
        with atomic_file(paths["py"]) as tmp:
            tmp.write_text(code if code.endswith("\n") else code + "\n", encoding="utf-8")
        written["py"] = paths["py"]
        if rec.valid:
            self._export_solid(rec, paths)
            written.update(stl=paths["stl"], step=paths["step"])
        if picture:
            from cad_recode.render import render_comparison

            points = rec.input_points
            if rec.report["units"] == "input":
                points = rec.transform.invert(points)
            else:
                points = np.asarray(points) * MODEL_UNITS
            render_comparison(points, rec.mesh, paths["png"], title=Path(rec.report["input"]).name)
            written["png"] = paths["png"]
        rec.report["outputs"] = {k: str(v) for k, v in written.items()}
        with atomic_file(paths["json"]) as tmp:
            tmp.write_text(json.dumps(rec.report, indent=2, default=_json_default) + "\n", encoding="utf-8")
        written["json"] = paths["json"]
        return written

    def _export_solid(self, rec: Reconstruction, paths: dict[str, Path]) -> None:
        """STL and STEP of the winner, by the sandbox (never in this process)."""
        if rec.report["units"] == "input":
            result = self.sandbox.run(restored_program(rec.code, rec.transform), step_path=paths["step"],
                                      stl_path=paths["stl"], tessellate=False)
            if result.ok:
                return
            # The program keeps its solid elsewhere than ``r``: STEP in model units, STL restored here.
            rec.report["step_units"] = "model"
            result = self.sandbox.run(rec.code, step_path=paths["step"], tessellate=False)
            with atomic_file(paths["stl"]) as tmp:
                rec.mesh.export(tmp, file_type="stl")
        else:
            result = self.sandbox.run(rec.code, step_path=paths["step"], stl_path=paths["stl"], tessellate=False)
        if not result.ok:
            raise InputError(f"could not export the solid to {paths['step']}: {result.status.value}: {result.reason}")


# --------------------------------------------------------------------------- inputs


def _load_input(source) -> tuple[str, trimesh.Trimesh | np.ndarray]:
    from cad_recode.geometry.loaders import load_geometry

    if isinstance(source, (str, os.PathLike)):
        return str(source), load_geometry(source)
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], str):
        return source[0], source[1]
    if isinstance(source, trimesh.Trimesh):
        return "mesh", source
    if isinstance(source, ModelPoints):
        return "points", source.transform.invert(source.points)
    return "points", np.asarray(source, dtype=np.float64)


def _load_ground_truth(truth, sandbox) -> tuple[str, trimesh.Trimesh]:
    """A mesh, ("name", mesh), a .py program (run in the sandbox) or a mesh/STEP file."""
    from cad_recode.geometry.loaders import load_geometry

    if isinstance(truth, tuple):
        return truth[0], truth[1]
    if isinstance(truth, trimesh.Trimesh):
        return "mesh", truth
    path = Path(truth)
    if path.suffix == ".py":
        try:
            code = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InputError(f"ground truth {path}: cannot read it ({err}); give a CadQuery .py, a mesh or STEP") from None
        result = sandbox.run(code)
        if not result.ok:
            raise InputError(f"ground truth program {path} builds no valid solid ({result.status.value}: {result.reason})")
        return str(path), result.to_trimesh()
    geometry = load_geometry(path)
    if not isinstance(geometry, trimesh.Trimesh):
        raise InputError(f"ground truth {path} is a point cloud; CD and IoU need a mesh, STEP file or .py program")
    return str(path), geometry


def shape_input(name: str, sandbox) -> tuple[tuple[str, trimesh.Trimesh], tuple[str, trimesh.Trimesh]]:
    """A built-in example: its program is the ground truth; its solid (sampled later) is the input."""
    from cad_recode.geometry.shapes import example_program

    result = sandbox.run(example_program(name))
    if not result.ok:
        raise InputError(f"built-in shape {name!r} failed in the sandbox: {result.status.value}: {result.reason}")
    mesh = result.to_trimesh()
    return (f"shape:{name}", mesh), (f"shape:{name}", mesh)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
