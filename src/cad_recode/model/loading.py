"""Finding and loading a trained model: a run folder, a merged or full model, or adapters on a base.

Which weights (the guide's rule, said out loud in ``ModelSource.describe``):

1. ``lora_path/merged_model/`` when it exists (a self-contained merged model);
2. else ``lora_path`` itself when it is a full model (``config.json``, a full fine-tune);
3. else the adapter in ``lora_path`` on top of the base model (``path_or_base``, or the
   ``base_model_name_or_path`` the adapter recorded). Several adapters may be loaded
   by name and switched; each carries its own trained projector (PEFT ``modules_to_save``).

The tokenizer comes from the adapter / model folder (training saves it there), so
everything works offline from local folders. The names of a run folder's files are
defined here, once, for the training recipe, inference and merging alike.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cad_recode.errors import InputError, UsageError

# What a training run's output_dir holds (design.md §3).
MERGED_DIR = "merged_model"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS[0])
RUN_CONFIG = "config.yaml"
CHECKPOINT_PREFIX = "checkpoint-"
TRAIN_LOG = "train_log.jsonl"
DEFAULT_ADAPTER = "default"


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
        if (path / "config.json").is_file():  # a full or merged model: its weights need no adapter
            raise InputError(f"{path} is a full model (config.json), not a LoRA adapter ({ADAPTER_CONFIG} is "
                             "missing): nothing to merge into it; use it as it is, or pass a LoRA run's output_dir")
        if (path / MERGED_DIR / "config.json").is_file():
            raise InputError(f"{path} holds only {MERGED_DIR}/ ({ADAPTER_CONFIG} is missing): it is merged "
                             f"already; use {path / MERGED_DIR} as it is")
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
    return path if run_settings(adapter_dir).get("tiny_model") is not None else None


def run_settings(adapter_dir: Path) -> dict:
    """The training run's config.yaml beside an adapter, as a mapping ({} when absent or unreadable).

    Read directly (not through TrainConfig): a folder may come from an older or newer
    version, and loading needs only a few keys.
    """
    path = adapter_dir / RUN_CONFIG
    if not path.is_file():
        return {}
    import yaml

    try:
        settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return settings if isinstance(settings, dict) else {}


# --------------------------------------------------------------------------- loading


def default_device() -> torch.device:
    """CUDA when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def hub_offline() -> bool:
    """True when the user asked transformers not to reach the hub (HF_HUB_OFFLINE)."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """The tokenizer in a local folder, or a hub name (downloaded only when not offline).

    One rule for every caller: a folder that exists is read locally, never looked up
    on the hub; a name is looked up only without HF_HUB_OFFLINE.
    """
    from transformers import AutoTokenizer

    import cad_recode.model  # noqa: F401  registers model_type "cad_recode" before reading a model folder

    local = Path(str(name_or_path)).expanduser()
    try:
        return AutoTokenizer.from_pretrained(
            str(local) if local.exists() else str(name_or_path), trust_remote_code=trust_remote_code,
            local_files_only=local.exists() or hub_offline(),
        )
    except (OSError, ValueError, TypeError) as err:
        detail = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        if local.exists():
            raise InputError(
                f"no usable tokenizer in {local} ({detail}); training saves it beside the adapter and in "
                "merged_model/: copy tokenizer.json and tokenizer_config.json there"
            ) from None
        raise InputError(
            f"tokenizer {str(name_or_path)!r} is not available ({detail}); download the model with "
            f"`huggingface-cli download {name_or_path} --local-dir models/{Path(str(name_or_path)).name}` and pass "
            "that folder as --base_model (or --tokenizer)"
        ) from None


def run_point_settings(adapter_dir: Path) -> dict[str, int]:
    """num_point_tokens / num_surface_points of the run that trained this adapter, where recorded."""
    settings = run_settings(adapter_dir)
    return {key: settings[key] for key in ("num_point_tokens", "num_surface_points")
            if isinstance(settings.get(key), int) and not isinstance(settings.get(key), bool)}


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


def load_base(base: str, dtype: str | torch.dtype = "float32", **point_settings):
    """The full-precision base the adapters go on: a CADRecodeForCausalLM (a bare LM is wrapped).

    ``point_settings``: num_point_tokens / num_surface_points of the run (see run_point_settings).
    """
    from cad_recode.model import CADRecodeForCausalLM, load_base_lm

    _check_local(base, "base model")
    model = load_base_lm(base, dtype=dtype)
    if not isinstance(model, CADRecodeForCausalLM):
        model = CADRecodeForCausalLM.from_lm(model, **point_settings)
    return model


def load_source_base(source: ModelSource, tokenizer, dtype: str | torch.dtype = "float32"):
    """The full-precision base of an adapter source: loaded, or rebuilt for a tiny_model run."""
    from cad_recode.model import CADRecodeForCausalLM, resolve_dtype
    from cad_recode.model.builders import build_tiny

    first = next(iter(source.adapters.values()))
    points = run_point_settings(first)
    if source.tiny_config is None:
        return load_base(source.base, dtype=dtype, **points)
    from cad_recode.config import TrainConfig

    settings = run_settings(first)
    seed = settings.get("seed", TrainConfig.seed)
    lm = build_tiny(settings["tiny_model"], vocab_size=len(tokenizer), seed=seed)  # same seed: the same random base
    return CADRecodeForCausalLM.from_lm(lm.to(resolve_dtype(dtype)), **points)


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
