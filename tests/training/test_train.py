"""The training recipe end to end on a tiny Qwen3 (hidden 32, 2 layers) and a hand-made prepared dataset.

What each test proves is in its docstring. The dataset is written straight
through the storage layer (shards + manifest) from trimesh meshes of the
programs' shapes, so no test here waits for CadQuery except the evaluation one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import types
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import TrainerCallback

from cad_recode.training import checkpointing as ckpt
from cad_recode.cli import main
from cad_recode.config import load_config, save_config
from cad_recode.data.batching import length_grouped_order
from cad_recode.data.shards import PreparedSplit, ShapeRecord, build_manifest, hash_ids, write_manifest, write_shard
from cad_recode.errors import InputError, UsageError
from cad_recode.training.plan import plan
from cad_recode.training.budget import decide, planned_steps, resumed_max_steps
from cad_recode.training.recipe import build_trainer, setup, train

REPO = Path(__file__).resolve().parents[2]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 64, "vocab_size": 320}


def _box(a: int, b: int, h: int, z: int) -> tuple[str, trimesh.Trimesh]:
    code = f"import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,{z}))\nr=w0.workplane(offset={h}/2).box({a},{b},{h})\n"
    mesh = trimesh.creation.box(extents=(a, b, h))
    mesh.apply_translation((0, 0, z + h / 2))
    return code, mesh


def _cylinder(h: int, radius: int) -> tuple[str, trimesh.Trimesh]:
    code = f"import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,0))\nr=w0.cylinder({h},{radius})\n"
    return code, trimesh.creation.cylinder(radius=radius, height=h, sections=32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """16 training and 4 validation shapes (boxes and cylinders) in CAD-Recode style."""
    root = tmp_path_factory.mktemp("prepared")
    rng = np.random.default_rng(0)
    shapes = []
    for i in range(20):
        if i % 3 == 2:
            shapes.append(_cylinder(int(rng.integers(10, 90)), int(rng.integers(5, 45))))
        else:
            shapes.append(_box(*(int(v) for v in rng.integers(4, 100, 3)), z=int(rng.integers(-50, 0))))
    infos = []
    for split, part in (("train", shapes[:16]), ("val", shapes[16:])):
        records = [
            ShapeRecord(f"{split}/{i}.py", code, np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32),
                        m.volume, m.area, 6)
            for i, (code, m) in enumerate(part)
        ]
        infos.append(write_shard(root / split / "shard-00000.arrow", split=split, index=0,
                                 ids_hash=hash_ids(r.id for r in records), num_planned=len(records),
                                 records=records, failures=[]))
    write_manifest(root, build_manifest(infos))
    return root


def tiny_config(data_dir: Path, output_dir: Path, **overrides):
    values = dict(
        base_model="tiny-test", tiny_model=dict(TINY), tokenizer="train", torch_dtype="float32",
        finetune_method="lora", lora_r=4, lora_alpha=8, lora_dropout=0.1,
        num_point_tokens=32, num_surface_points=256, data_dir=str(data_dir), max_code_tokens=128,
        dataloader_num_workers=0, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        learning_rate=5e-3, warmup_steps=1, max_steps=4, bf16=False, gradient_checkpointing=False,
        output_dir=str(output_dir), save_steps=2, save_total_limit=2, logging_steps=1, report_to="none",
        do_eval=False, seed=0,
    )
    values.update(overrides)
    return load_config(None, values)


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted(path.rglob("*"))} if path.exists() else {}


def _losses(output_dir: Path) -> dict[int, float]:
    """Per-step training loss of a run; a resumed run's later line for a step wins."""
    return {r["step"]: r["loss"] for r in ckpt.read_train_log(output_dir) if "loss" in r}


# --------------------------------------------------------------------------- layout and merging


@pytest.fixture(scope="module")
def lora_run(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    result = train(tiny_config(data_dir, out, report_to="tensorboard"))
    assert result.global_step == 4
    return out


def test_lora_run_writes_the_guide_layout(lora_run, data_dir):
    """The output folder is design.md §3's: adapter, tokenizer, config.yaml, checkpoint-N/, merged_model/."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    import cad_recode.model  # noqa: F401 - registers the cad_recode Auto classes

    names = {p.name for p in lora_run.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "config.yaml", "checkpoint-2", "checkpoint-4", "merged_model", "train_log.jsonl", "runs",
            "training_curves.png"} <= names
    assert load_config(lora_run / "config.yaml") == tiny_config(data_dir, lora_run, report_to="tensorboard")
    merged = lora_run / "merged_model"
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    saved = json.loads((merged / "config.json").read_text())
    assert (saved["num_point_tokens"], saved["num_surface_points"]) == (32, 256)  # inference samples as training did
    for step in (2, 4):  # every checkpoint: adapter + its own merged copy, marked complete last
        names = {p.name for p in (lora_run / f"checkpoint-{step}").iterdir()}
        assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "config.yaml",
                "merged_model"} <= names
    # The adapter file carries the trained projector (modules_to_save), not just the LoRA matrices.
    with safe_open(str(lora_run / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert any("point_encoder" in k for k in keys) and any("lora_A" in k for k in keys)
    # merged_model is self-contained: model, tokenizer and greedy generation config reload from it alone.
    model = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    generation = GenerationConfig.from_pretrained(merged)
    assert type(model).__name__ == "CADRecodeForCausalLM"
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    assert generation.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>") and not generation.do_sample
    assert not any("lora_" in name for name, _ in model.named_parameters())
    # The final projector in merged_model is the trained one from the adapter.
    adapter = load_file(lora_run / "adapter_model.safetensors")
    trained = next(v for k, v in adapter.items() if "point_encoder" in k and k.endswith("proj.weight"))
    assert torch.equal(model.point_encoder.proj.weight, trained)
    # TensorBoard got the loss curve.
    assert list((lora_run / "runs").rglob("events.out.tfevents.*"))


def _lora_delta(adapter: dict[str, torch.Tensor], module: str, scale: float) -> torch.Tensor:
    a = next(v for k, v in adapter.items() if k.endswith(f"{module}.lora_A.weight"))
    b = next(v for k, v in adapter.items() if k.endswith(f"{module}.lora_B.weight"))
    return scale * b @ a


class _Snapshots(TrainerCallback):
    """LoRA weights of the live model right after each checkpoint (merge included) and at the end."""

    def __init__(self):
        self.at_save = {}

    def on_save(self, args, state, control, model=None, **kwargs):
        self.at_save[state.global_step] = {k: v.detach().clone() for k, v in model.named_parameters() if "lora_" in k}


def test_checkpoint_merge_never_touches_the_live_model(data_dir, tmp_path):
    """After checkpoint-2 is merged, training goes on: LoRA layers still there, unmerged, and still changing.

    The checkpoint's merged_model holds base + B·A·scale of the adapter saved at that step.
    """
    from peft.tuners.lora import LoraLayer

    cfg = tiny_config(data_dir, tmp_path / "run", save_steps=2, max_steps=4, lora_dropout=0.0)
    run = setup(cfg)
    snapshots = _Snapshots()
    trainer = build_trainer(run, [snapshots])
    trainer.train()
    live = trainer.model
    lora_layers = [m for m in live.modules() if isinstance(m, LoraLayer)]
    assert lora_layers and not any(m.merged for m in lora_layers)  # never merged in place
    at_2, at_4 = snapshots.at_save[2], snapshots.at_save[4]
    changed = [k for k in at_2 if not torch.equal(at_2[k], at_4[k])]
    assert len(changed) == len(at_2)  # every LoRA matrix kept training after the merge at step 2
    final = {k: v for k, v in live.named_parameters() if "lora_" in k}
    assert all(torch.equal(final[k], at_4[k]) for k in at_4)

    checkpoint = tmp_path / "run" / "checkpoint-2"
    adapter = load_file(checkpoint / "adapter_model.safetensors")
    merged = load_file(checkpoint / "merged_model" / "model.safetensors")
    base = run.base_loader()  # the same tiny base, rebuilt from the seed
    name = "model.layers.0.self_attn.q_proj.weight"
    expected = base.state_dict()[name] + _lora_delta(adapter, "layers.0.self_attn.q_proj", cfg.lora_alpha / cfg.lora_r)
    torch.testing.assert_close(merged[f"lm.{name}"], expected, rtol=1e-5, atol=1e-6)


def test_full_finetune_saves_the_whole_model(data_dir, tmp_path):
    """finetune_method full: no adapter, no merged_model; output_dir itself is the trained model."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    cfg = tiny_config(data_dir, out, finetune_method="full", max_steps=2, save_steps=2)
    train(cfg)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "config.yaml",
            "checkpoint-2"} <= names
    assert not names & {"adapter_config.json", "adapter_model.safetensors", "merged_model"}
    model = AutoModelForCausalLM.from_pretrained(out)
    initial = setup(cfg).model  # same seed: the weights the run started from
    trained, start = model.state_dict(), initial.state_dict()
    assert not torch.equal(trained["lm.model.layers.0.mlp.up_proj.weight"], start["lm.model.layers.0.mlp.up_proj.weight"])
    assert not torch.equal(trained["point_encoder.proj.weight"], start["point_encoder.proj.weight"])
    # Tied embeddings stay tied through training and saving.
    assert model.lm.lm_head.weight.data_ptr() == model.lm.model.embed_tokens.weight.data_ptr()


def test_whole_number_tokenizer_is_trained_and_saved_with_the_run(data_dir, tmp_path):
    """tokenizer train_whole_numbers: the run's own BPE may spell a number in one token; it reloads as saved."""
    from transformers import AutoTokenizer

    out = tmp_path / "whole"
    train(tiny_config(data_dir, out, tokenizer="train_whole_numbers", finetune_method="full", max_steps=1,
                      save_steps=1))
    tokenizer = AutoTokenizer.from_pretrained(out)
    codes = PreparedSplit.open(data_dir, "train").codes()
    numbers = set()
    for code in codes:
        ids = tokenizer.encode(code, add_special_tokens=False)
        assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == code
        numbers |= {piece for piece in tokenizer.convert_ids_to_tokens(ids) if piece.isdigit() and len(piece) > 1}
    assert numbers  # the Qwen-style split ("train") never makes a token of two digits
    assert load_config(str(out / "config.yaml")).tokenizer == "train_whole_numbers"


def test_projector_has_its_own_learning_rate(data_dir, tmp_path):
    """projector_learning_rate puts the point encoder in its own AdamW group; LoRA keeps learning_rate."""
    cfg = tiny_config(data_dir, tmp_path / "run", projector_learning_rate=1e-4, learning_rate=2e-3)
    trainer = build_trainer(setup(cfg))
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for group in optimizer.param_groups:
        kinds = {"point_encoder" in names[id(p)] for p in group["params"]}
        assert len(kinds) == 1
        assert group["lr"] == (1e-4 if kinds.pop() else 2e-3)
    trained = {names[id(p)] for g in optimizer.param_groups for p in g["params"]}
    assert trained == {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "point_encoder" in n for n in trained)


@pytest.mark.parametrize(
    "flags, in_checkpoint, not_in_checkpoint, final",
    [
        # keep_lora_only false: checkpoints hold only the merged copy (and cannot be resumed)
        ({"keep_lora_only": False}, {"merged_model", "config.yaml"},
         {"adapter_model.safetensors", "optimizer.pt", "rng_state.pth"}, {"adapter_model.safetensors", "merged_model"}),
        # merge_final_only: no merge while training, one at the end
        ({"merge_final_only": True}, {"adapter_model.safetensors", "optimizer.pt"}, {"merged_model"},
         {"adapter_model.safetensors", "merged_model"}),
        # keep_lora_final false: the run ends with merged_model/ and no adapter in output_dir
        ({"keep_lora_final": False, "auto_merge_lora": False}, {"adapter_model.safetensors"}, {"merged_model"},
         {"merged_model", "tokenizer.json"}),
    ],
)
def test_auto_merge_flags(flags, in_checkpoint, not_in_checkpoint, final, data_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(data_dir, out, max_steps=2, save_steps=2, **flags))
    names = {p.name for p in (out / "checkpoint-2").iterdir()}
    assert in_checkpoint <= names and not names & not_in_checkpoint
    top = {p.name for p in out.iterdir()}
    assert final <= top
    if not flags.get("keep_lora_final", True):
        assert "adapter_model.safetensors" not in top
    if not flags.get("keep_lora_only", True):
        with pytest.raises(InputError) as excinfo:
            train(tiny_config(data_dir, out, max_steps=4, resume_from_checkpoint=str(out / "checkpoint-2"), **flags))
        assert "keep_lora_only" in _one_line_error(excinfo)


def test_bf16_and_gradient_checkpointing(data_dir, tmp_path):
    """The GPU settings of the 1.7B configs (bf16 autocast, gradient checkpointing) run the same code on CPU."""
    out = tmp_path / "run"
    train(tiny_config(data_dir, out, bf16=True, gradient_checkpointing=True, max_steps=2, save_steps=2, auto_merge_lora=False))
    losses = _losses(out)
    assert sorted(losses) == [1, 2] and all(np.isfinite(v) for v in losses.values())
    start = {k: v for k, v in setup(tiny_config(data_dir, tmp_path / "x")).model.named_parameters() if "lora_B" in k}
    trained = load_file(out / "adapter_model.safetensors")
    changed = [k for k, v in trained.items() if "lora_B" in k and v.abs().max() > 0]
    assert changed and all(v.abs().max() == 0 for v in start.values())  # B starts at zero and moved


# --------------------------------------------------------------------------- resume

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import torch
    torch.set_num_threads(1)
    from transformers import TrainerCallback
    from cad_recode.config import load_config
    from cad_recode.training.recipe import train

    class StallAfter(TrainerCallback):  # timing only: gives the parent time to SIGKILL mid-run
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= int(sys.argv[2]):
                time.sleep(600)

    train(load_config(None, json.loads(sys.argv[1])), callbacks=[StallAfter()])
    """
)


def _child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.parametrize("group_by_length", [False, True], ids=["shuffled", "length-grouped"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(group_by_length, data_dir, tmp_path):
    """SIGKILL a run after checkpoint-3; `--resume_from_checkpoint auto` reproduces the losses of steps 4-8.

    Dropout (RNG), point noise (per-item seeds), shuffling or length grouping (data position),
    AdamW moments and the cosine schedule all have to be restored for the
    per-step losses to agree to 1e-5.
    """
    settings = dict(max_steps=8, save_steps=3, save_total_limit=None, warmup_steps=2, lora_dropout=0.1,
                    group_by_length=group_by_length)
    reference = tmp_path / "reference"
    train(tiny_config(data_dir, reference, **settings))
    expected = _losses(reference)

    killed = tmp_path / "killed"
    overrides = {**tiny_config(data_dir, killed, **settings).__dict__}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    log = tmp_path / "child.log"
    with open(log, "wb") as stream:  # a file, not a pipe: the progress bar must never block the child
        child = subprocess.Popen([sys.executable, str(script), json.dumps(overrides), "5"], env=_child_env(),
                                 stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 400
        # The child stalls inside step 5, after logging step 4 and completing checkpoint-3.
        while not (max(_losses(killed), default=0) >= 4 and ckpt.is_complete(killed / "checkpoint-3")):
            assert child.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "child run did not reach step 5"
            time.sleep(0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (killed / "adapter_model.safetensors").exists()  # it never got to the end
    assert max(_losses(killed)) == 4

    result = train(tiny_config(data_dir, killed, **settings, resume_from_checkpoint="auto"))
    assert result.resumed_from == killed / "checkpoint-3"
    resumed = _losses(killed)
    assert sorted(resumed) == list(range(1, 9))
    for step in range(1, 9):
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6), step  # bit-exact in practice
    assert (killed / "adapter_model.safetensors").is_file() and (killed / "merged_model").is_dir()
    # The resumed model ends where the uninterrupted one ended.
    a, b = load_file(reference / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7)


def test_auto_resume_takes_the_newest_complete_checkpoint(tmp_path):
    """A checkpoint without its config.yaml mark (cut off mid-write) is skipped by `auto`."""
    out = tmp_path / "run"
    for step in (2, 4, 6):
        (out / f"checkpoint-{step}").mkdir(parents=True)
    (out / "checkpoint-10").mkdir()  # numeric, not lexical order
    for step in (2, 10):
        save_config(load_config(None), out / f"checkpoint-{step}" / "config.yaml")
    cfg = load_config(None, {"output_dir": str(out), "resume_from_checkpoint": "auto"})
    assert ckpt.resolve_resume(cfg) == out / "checkpoint-10"
    (out / "checkpoint-10" / "config.yaml").unlink()
    assert ckpt.resolve_resume(cfg) == out / "checkpoint-2"


def test_auto_resume_says_which_checkpoint_or_that_it_starts_fresh(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)  # complete-looking, but not a real checkpoint: refused after the line
    save_config(tiny_config(tmp_path / "data", out), out / "checkpoint-4" / "config.yaml")
    with pytest.raises(InputError):
        train(tiny_config(tmp_path / "data", out, resume_from_checkpoint="auto"))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"resuming from {out / 'checkpoint-4'} (the newest complete checkpoint)"]

    fresh = tmp_path / "fresh"
    with pytest.raises(InputError, match="not found"):  # no data: stops right after saying so
        train(tiny_config(tmp_path / "data", fresh, resume_from_checkpoint="auto"))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"resume_from_checkpoint auto: {fresh} has no complete checkpoint-N/, so training starts from step 0"]


# --------------------------------------------------------------------------- bad input


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_corrupt_checkpoint_is_refused_and_nothing_is_written(lora_run, data_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(lora_run, out)
    weights = out / "checkpoint-4" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = _tree(out)
    cfg = tiny_config(data_dir, out, resume_from_checkpoint=str(out / "checkpoint-4"), max_steps=6)
    with pytest.raises(InputError) as excinfo:
        train(cfg)
    assert "corrupt" in _one_line_error(excinfo)
    assert _tree(out) == before


def test_checkpoint_of_another_base_model_is_refused(lora_run, data_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(lora_run, out)
    before = _tree(out)
    other = dict(TINY, hidden_size=64)
    cfg = tiny_config(data_dir, out, tiny_model=other, resume_from_checkpoint="auto", max_steps=6)
    with pytest.raises(InputError) as excinfo:
        train(cfg)
    assert "tiny_model" in _one_line_error(excinfo) and "checkpoint-4" in str(excinfo.value)
    # Same config keys but other weights in the file: caught by the shape check.
    cfg = tiny_config(data_dir, out, resume_from_checkpoint="auto", max_steps=6)
    path = out / "checkpoint-4" / "adapter_model.safetensors"
    tensors = load_file(path)
    key = next(k for k in tensors if "lora_A" in k)
    tensors[key] = torch.zeros(8, tensors[key].shape[1])
    from safetensors.torch import save_file

    save_file(tensors, path)
    before = _tree(out)
    with pytest.raises(InputError) as excinfo:
        train(cfg)
    assert "does not fit" in _one_line_error(excinfo)
    assert _tree(out) == before


def test_output_dir_holding_another_run_is_refused(lora_run, data_dir):
    before = _tree(lora_run)
    with pytest.raises(UsageError) as excinfo:
        train(tiny_config(data_dir, lora_run))
    assert "--overwrite_output_dir" in _one_line_error(excinfo)
    assert _tree(lora_run) == before


def test_overwrite_output_dir_replaces_the_old_run(data_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(data_dir, out, max_steps=4, save_steps=4))
    train(tiny_config(data_dir, out, max_steps=2, save_steps=2, overwrite_output_dir=True))
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["checkpoint-2"]
    assert max(_losses(out)) == 2 and len(ckpt.read_train_log(out)) == 3  # 2 steps + the summary line


def test_missing_data_dir(tmp_path):
    with pytest.raises(InputError) as excinfo:
        train(tiny_config(tmp_path / "nowhere", tmp_path / "run"))
    assert "cad-recode data prepare" in _one_line_error(excinfo)
    assert not (tmp_path / "run").exists()


def _labelled_copy(data_dir: Path, root: Path) -> Path:
    """``data_dir`` with family labels in its manifest, as generated data carries them (shape i%3 == 2: cylinder)."""
    shutil.copytree(data_dir, root)
    family = {f"{split}/{i}.py": "cylinder" if (offset + i) % 3 == 2 else "box"
              for split, offset, count in (("train", 0, 16), ("val", 16, 4)) for i in range(count)}
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["families"] = {"names": ["box", "cylinder", "ring"], "weights": {"box": 0.5, "cylinder": 0.4, "ring": 0.1},
                            "by_id": family}  # rings: a family of the level that no program drew
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def test_family_weights_change_what_training_draws_and_nothing_else(data_dir, tmp_path, capsys):
    """11 boxes and 5 cylinders in training; weights 3:5 give 6 box and 10 cylinder draws: each cylinder twice."""
    labelled = _labelled_copy(data_dir, tmp_path / "data")
    run = setup(tiny_config(labelled, tmp_path / "run", family_weights={"box": 3, "cylinder": 5, "ring": 2}, do_eval=True))
    ids = [run.train_dataset[i]["id"] for i in range(len(run.train_dataset))]
    cylinders = [i for i in ids if int(i.split("/")[1].split(".")[0]) % 3 == 2]
    assert len(ids) == 16 and len(cylinders) == 10 and all(cylinders.count(c) == 2 for c in set(cylinders))
    assert len(set(ids) - set(cylinders)) == 6  # six boxes, none twice
    run.train_dataset.set_epoch(1)  # the next epoch thins the boxes anew; the shares stay
    later = [run.train_dataset[i]["id"] for i in range(16)]
    assert sorted(c for c in later if c in cylinders) == sorted(cylinders) and set(later) - set(ids)
    run.train_dataset.set_epoch(0)
    assert [run.train_dataset[i]["id"] for i in range(16)] == ids  # an epoch's draw is fixed by its seed
    first, second = [i for i, item_id in enumerate(ids) if item_id == cylinders[0]]
    assert not torch.equal(run.train_dataset[first]["points"], run.train_dataset[second]["points"])  # other points
    assert sorted(run.eval_dataset[i]["id"] for i in range(4)) == [f"val/{i}.py" for i in range(4)]  # untouched
    assert "training mix (family: share in the data -> share of training draws): box 69% -> 38%, " \
           "cylinder 31% -> 62%" in capsys.readouterr().err


def test_group_by_length_feeds_the_trainer_batches_of_like_length(data_dir, tmp_path):
    run = setup(tiny_config(data_dir, tmp_path / "run", group_by_length=True, per_device_train_batch_size=4))
    lengths = run.train_dataset.item_lengths()
    assert len(set(lengths.tolist())) == 4  # boxes and cylinders of several lengths
    loader = build_trainer(run).get_train_dataloader()
    seen = [batch["attention_mask"].sum(1).tolist() for batch in loader]
    grouped = length_grouped_order(lengths, 4, (0, 0)).reshape(-1, 4)
    assert seen == [lengths[batch].tolist() for batch in grouped]
    padded = lambda batches: sum(len(b) * max(b) for b in batches)  # noqa: E731
    shuffled = np.random.default_rng(0).permutation(lengths).reshape(-1, 4).tolist()
    assert padded(seen) < padded(shuffled)


def test_group_by_length_weighs_every_token_alike(data_dir, tmp_path):
    """A step's summed token loss is divided by the tokens of an average step, not by its own count."""
    run = setup(tiny_config(data_dir, tmp_path / "run", group_by_length=True, per_device_train_batch_size=4,
                           lora_dropout=0.0))  # no dropout: train and eval mode compute alike
    trainer = build_trainer(run)
    per_step = float((run.train_dataset.item_lengths() - 1).mean()) * 4 * 2  # batch 4 x accumulation 2
    assert trainer.tokens_per_step() == pytest.approx(per_step)
    batch = next(iter(trainer.get_train_dataloader()))
    tokens = int((batch["labels"][:, 1:] != -100).sum())
    assert tokens != per_step / 2  # this micro-batch is not an average one
    run.model.eval()
    with torch.no_grad():
        token_mean = float(run.model(**batch).loss)
        evaluated = float(trainer.compute_loss(run.model, dict(batch), num_items_in_batch=torch.tensor(tokens)))
    assert evaluated == pytest.approx(token_mean, rel=1e-5)  # evaluation: this batch's own token mean
    run.model.train()
    with torch.no_grad():
        weighted = float(trainer.compute_loss(run.model, dict(batch), num_items_in_batch=torch.tensor(tokens)))
    assert weighted == pytest.approx(token_mean * tokens / per_step, rel=1e-5)


# --------------------------------------------------------------------------- a wall-clock budget


def test_budget_decides_steps_by_hand():
    """What `max_minutes` holds at a measured speed, against hand-computed counts."""
    cfg = load_config(None, dict(max_steps=5600, max_minutes=12))
    short = decide(cfg, 0.2, items=10800, world_size=1)
    assert (short.max_steps, short.fitting_steps, short.planned_steps) == (3600, 3600, 5600)
    assert "3600 steps fit 12 min at 0.200 s a step; training 3600 of the 5600 planned steps" in short.line(12)
    roomy = decide(cfg, 0.1, items=10800, world_size=1)
    assert (roomy.max_steps, roomy.fitting_steps) == (5600, 7200)
    assert "training all 5600 planned steps" in roomy.line(12)
    # epochs: 100 items over 2 processes, batches of 8 -> 7 a process, accumulation 2 -> 3 steps an epoch
    epochs = load_config(None, dict(max_steps=-1, num_train_epochs=3, per_device_train_batch_size=8,
                                    gradient_accumulation_steps=2, max_minutes=1))
    assert planned_steps(epochs, items=100, world_size=2) == 9
    assert decide(epochs, 1.0, items=100, world_size=2).max_steps == -1  # all epochs fit: kept as epochs
    assert decide(epochs, 10.0, items=100, world_size=2).max_steps == 6
    with pytest.raises(InputError, match=r"max_minutes=1 holds no training step: a step takes 75.00 s"):
        decide(epochs, 75.0, items=100, world_size=2)


@pytest.mark.parametrize("minutes, expected", [(0, "must be > 0"), (-1, "must be > 0"),
                                               (float("nan"), "must be a number")])
def test_budget_must_be_a_positive_number(minutes, expected):
    with pytest.raises(UsageError, match=f"'max_minutes' {expected}"):
        load_config(None, dict(max_minutes=minutes))


@pytest.mark.parametrize("group_by_length", [False, True], ids=["shuffled", "length-grouped"])
def test_budget_run_trains_as_a_run_of_its_step_count(group_by_length, data_dir, tmp_path, capsys):
    """A 2-second budget cuts a run of a million steps, and the probe before it leaves no trace: the model
    equals that of a run configured with the chosen count (dropout on, so the RNG streams count too)."""
    settings = dict(save_steps=10**6, logging_steps=10**6, lora_dropout=0.1, group_by_length=group_by_length)
    budgeted = tmp_path / "budgeted"
    result = train(tiny_config(data_dir, budgeted, max_steps=10**6, max_minutes=2 / 60, **settings))
    steps = result.global_step
    assert 1 <= steps < 10**6
    assert f"training {steps} of the 1000000 planned steps" in capsys.readouterr().err
    assert load_config(budgeted / "config.yaml").max_steps == steps  # the run folder says what it trained
    reference = tmp_path / "reference"
    train(tiny_config(data_dir, reference, max_steps=steps, **settings))
    a, b = load_file(reference / "adapter_model.safetensors"), load_file(budgeted / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _learning_rates(output_dir: Path) -> dict[int, float]:
    return {r["step"]: r["learning_rate"] for r in ckpt.read_train_log(output_dir) if "learning_rate" in r}


@pytest.mark.parametrize("seconds, steps", [(1.0, 45), (1.5, 40), (4.0, 21)], ids=["faster", "a-little-faster", "slower"])
def test_budget_settled_over_the_warmup_trains_as_a_run_of_that_count(seconds, steps, data_dir, tmp_path, capsys,
                                                                      monkeypatch):
    """The probe says 2 s a step, so 30 steps fit a minute; the warmup's own steps (a clock of the test's own) take
    ``seconds``. At the warmup's last step (20) the count becomes what fits at that speed, at most 1.5 x 30 and at
    least one step more; the schedule is laid over it, and the model and every step's learning rate equal those
    of a run configured with that count from the start."""
    from cad_recode.training import budget as budget_module

    monkeypatch.setattr(budget_module, "time_steps", lambda run, probe: 2.0)
    ticks = iter(range(10**6))
    monkeypatch.setattr(budget_module, "clock", lambda: seconds * next(ticks))
    settings = dict(save_steps=10**6, warmup_steps=20, save_total_limit=None)
    budgeted = tmp_path / "budgeted"
    result = train(tiny_config(data_dir, budgeted, max_steps=10**6, max_minutes=1, **settings))
    err = capsys.readouterr().err
    assert ("max_minutes: 30 steps fit 1 min at 2.000 s a step; training 30 of the 1000000 planned steps "
            "(timed again over the warmup; settled at step 20, at most 45)") in err
    assert (f"max_minutes: steps 4-20 took {seconds:.3f} s each, so {int(60 / seconds)} steps fit 1 min; "
            f"training {steps} of the 1000000 planned steps") in err
    assert result.global_step == steps
    assert load_config(budgeted / "config.yaml").max_steps == steps
    state = json.loads((budgeted / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert state["max_steps"] == steps  # what a resume trains towards
    reference = tmp_path / "reference"
    train(tiny_config(data_dir, reference, max_steps=steps, **settings))
    assert _learning_rates(budgeted) == _learning_rates(reference)
    if steps > 21:  # (21 steps hold one step after the warmup, at the full rate)
        assert _learning_rates(budgeted)[steps] < 0.01 * 5e-3  # the cosine's tail, not a cut-off run
    a, b = load_file(reference / "adapter_model.safetensors"), load_file(budgeted / "adapter_model.safetensors")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_budget_is_not_timed_again_over_a_short_warmup(data_dir, tmp_path, capsys, monkeypatch):
    from cad_recode.training import budget as budget_module

    monkeypatch.setattr(budget_module, "time_steps", lambda run, probe: 2.0)
    result = train(tiny_config(data_dir, tmp_path / "run", max_steps=10**6, max_minutes=0.2, warmup_steps=5,
                               save_steps=10**6))
    assert result.global_step == 6
    err = capsys.readouterr().err
    assert "training 6 of the 1000000 planned steps\n" in err and "timed again" not in err


def test_typical_step_time_leaves_out_evaluations_and_saves():
    from cad_recode.training.budget import typical_mean

    assert typical_mean([0.2, 0.2, 0.3, 0.2, 9.0, 0.1]) == pytest.approx(0.2)
    with pytest.raises(ValueError):
        typical_mean([])


def test_budget_run_resumes_towards_its_checkpoint_s_steps(data_dir, tmp_path, capsys):
    """Resuming keeps the step count the checkpoint was trained towards; no second probe decides anew."""
    out = tmp_path / "run"
    train(tiny_config(data_dir, out, max_steps=6, save_steps=3, save_total_limit=None))
    (out / "adapter_model.safetensors").unlink()
    capsys.readouterr()
    result = train(tiny_config(data_dir, out, max_steps=10**6, max_minutes=1000, save_steps=3,
                               resume_from_checkpoint=str(out / "checkpoint-3")))
    assert result.global_step == 6 and result.resumed_from == out / "checkpoint-3"
    assert "max_minutes: resuming the run planned for 6 steps" in capsys.readouterr().err
    state = out / "checkpoint-3" / "trainer_state.json"
    state.write_text("{}")
    with pytest.raises(InputError, match="cannot read the run's planned steps"):
        resumed_max_steps(out / "checkpoint-3")


def test_family_weights_need_labelled_data_and_the_data_s_families(data_dir, tmp_path):
    with pytest.raises(InputError) as excinfo:
        setup(tiny_config(data_dir, tmp_path / "run", family_weights={"box": 1}))
    assert "family_weights needs a family label for every training program; 16 of 16" in _one_line_error(excinfo)
    labelled = _labelled_copy(data_dir, tmp_path / "data")
    with pytest.raises(InputError) as excinfo:
        setup(tiny_config(labelled, tmp_path / "run", family_weights={"box": 1, "cylinder": 1, "gear": 1}))
    assert "family_weights names gear, which the training split does not hold" in _one_line_error(excinfo)
    with pytest.raises(UsageError) as excinfo:
        tiny_config(labelled, tmp_path / "run", family_weights={"box": -1, "cylinder": 1})
    assert "'family_weights' must map family names to numbers >= 0" in _one_line_error(excinfo)


def test_data_dir_that_is_a_file_is_called_a_file(tmp_path):
    (tmp_path / "data.csv").write_text("id\n")
    with pytest.raises(InputError) as excinfo:
        train(tiny_config(tmp_path / "data.csv", tmp_path / "run"))
    message = _one_line_error(excinfo)
    assert f"data_dir {tmp_path / 'data.csv'} is a file, not a folder" in message and "not found" not in message
    assert not (tmp_path / "run").exists()


def test_qlora_without_bitsandbytes(data_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # what `import bitsandbytes` sees when absent
    with pytest.raises(UsageError) as excinfo:
        train(tiny_config(data_dir, tmp_path / "run", use_qlora=True))
    assert "pip install bitsandbytes" in _one_line_error(excinfo)
    assert not (tmp_path / "run").exists()


def test_base_model_not_available_offline(data_dir, tmp_path):
    cfg = tiny_config(data_dir, tmp_path / "run", tiny_model=None, tokenizer=None, base_model="no-such-org/no-such-model")
    with pytest.raises(InputError) as excinfo:
        train(cfg)
    message = _one_line_error(excinfo)
    assert "huggingface-cli download no-such-org/no-such-model" in message and "--base_model" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--lora_r", "sixteen"], "'lora_r' must be an int"),
        (["--learning_rate", "fast"], "'learning_rate' must be a number"),
        (["--finetune_method", "qlorra"], "did you mean 'qlora'"),
    ],
)
def test_bad_flags_are_one_line_errors(flags, expected, tmp_path, capsys):
    assert main(["train", "--output_dir", str(tmp_path / "run"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_unknown_config_key_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("lora_rank: 8\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'lora_rank'" in err and "did you mean 'lora_r'" in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- dry run, QLoRA, eval


def test_dry_run_prints_the_plan_and_writes_nothing(data_dir, tmp_path, capsys):
    """The plan's trainable count is LoRA (r=4 on 7 projections x 2 layers) + the projector, counted by hand."""
    out = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    save_config(tiny_config(data_dir, out), config)
    assert main(["train", "--config", str(config), "--dry_run"]) == 0
    text = capsys.readouterr().out
    # per layer: r * (in + out) for q(32->32) k,v(32->16) o(32->32) gate,up(32->64) down(64->32)
    lora = 2 * 4 * (64 + 48 + 48 + 64 + 96 + 96 + 96)
    projector = 51 * 32 + 32
    assert f"{lora + projector:,} trainable" in text
    for word in ("parameters:", "weight bytes:", "est. peak memory:", "tokens per step:"):
        assert word in text
    assert f"{2 * 2 * (32 + 128):,} at most" in text  # batch x accumulation x (points + code)
    assert "time budget" not in text
    assert main(["train", "--config", str(config), "--dry_run", "--max_minutes", "7.5"]) == 0
    assert "time budget:        7.5 min of steps" in capsys.readouterr().out
    assert not out.exists()
    lora_plan = plan(tiny_config(data_dir, out))
    qlora_plan = plan(tiny_config(data_dir, out, use_qlora=True))
    assert qlora_plan.trainable_params == lora_plan.trainable_params
    assert qlora_plan.weight_bytes < lora_plan.weight_bytes


def test_dry_run_of_qwen3_1_7b_from_its_config(tmp_path, capsys):
    """The default LoRA config on Qwen3-1.7B's architecture (meta device, no weights): r=16 on all 7
    projections is 17.4M LoRA parameters, about 1% (not the guide's 0.8M)."""
    from transformers import AutoConfig

    base = tmp_path / "qwen3-1.7b"
    AutoConfig.for_model(
        "qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
        num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
    ).save_pretrained(base)
    assert main(["train", "--config", str(REPO / "configs/train_config_lora.yaml"), "--base_model", str(base),
                 "--output_dir", str(tmp_path / "run"), "--dry_run"]) == 0
    text = capsys.readouterr().out
    # per layer r * (in + out): q, o 2048->2048; k, v 2048->1024; gate, up 2048->6144; down 6144->2048
    lora = 28 * 16 * (2 * 4096 + 2 * 3072 + 3 * 8192)
    assert lora == 17_432_576 and f"lora {lora:,}" in text
    assert f"{8 * 4 * (256 + 768):,} at most" in text
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method, torch_dtype, expected", [
    ("full", "auto", torch.float32), ("full", "bfloat16", torch.bfloat16), ("lora", "auto", torch.bfloat16)])
def test_full_fine_tuning_keeps_fp32_master_weights(method, torch_dtype, expected, tmp_path):
    """A base saved in bf16: full fine-tuning loads it in fp32 unless a dtype is asked for; LoRA keeps it as saved."""
    from transformers import AutoModelForCausalLM, Qwen3Config

    from cad_recode.training.recipe import build_model

    base = tmp_path / "base"
    AutoModelForCausalLM.from_config(Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                                 head_dim=16), dtype=torch.bfloat16).save_pretrained(base)
    cfg = load_config(None, dict(base_model=str(base), finetune_method=method, torch_dtype=torch_dtype))
    model, _ = build_model(cfg, vocab_size=300)
    lm_weight = next(p for n, p in model.named_parameters() if "q_proj" in n and "lora_" not in n)
    assert lm_weight.dtype == expected
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "point_encoder" in n)


def test_qlora_trains_a_4bit_base_on_cpu_and_merges_into_full_precision(data_dir, tmp_path):
    """QLoRA: the live LM's projections are bitsandbytes 4-bit (NF4, double quant); merged_model is plain fp32."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    out = tmp_path / "qlora"
    cfg = tiny_config(data_dir, out, use_qlora=True, bnb_4bit_compute_dtype="float32", max_steps=2, save_steps=2)
    run = setup(cfg)
    quantized = [m for m in run.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # every projection of both layers; projector and LM head stay unquantized
    assert quantized[0].weight.quant_type == "nf4" and quantized[0].weight.quant_state.nested
    assert not isinstance(run.model.get_base_model().point_encoder.proj, bnb.nn.Linear4bit)
    train(cfg)
    assert {"adapter_model.safetensors", "merged_model"} <= {p.name for p in out.iterdir()}
    merged = AutoModelForCausalLM.from_pretrained(out / "merged_model")
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in merged.modules())
    assert merged.lm.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32


def test_eval_logs_loss_and_generation_metrics(data_dir, tmp_path):
    """--do_eval: validation loss plus IR / CD / IoU of generated programs, in the log and TensorBoard."""
    from cad_recode.evaluate import GenerationMetrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "eval"
    cfg = tiny_config(data_dir, out, do_eval=True, eval_steps=2, max_steps=2, save_steps=2, eval_num_samples=2,
                      max_new_tokens=12, report_to="tensorboard")
    train(cfg, generation_metrics=GenerationMetrics)
    evals = [r for r in ckpt.read_train_log(out) if "eval_ir" in r]
    assert len(evals) == 1 and evals[0]["step"] == 2
    losses = [r for r in ckpt.read_train_log(out) if "eval_loss" in r]
    assert losses and np.isfinite(losses[0]["eval_loss"])
    record = evals[0]
    assert 0.0 <= record["eval_ir"] <= 1.0 and {"eval_cd_mean", "eval_cd_median", "eval_iou"} <= set(record)
    events = EventAccumulator(str(next((out / "runs").iterdir())))
    events.Reload()
    assert {"eval/loss", "eval/ir", "eval/cd_mean", "eval/iou"} <= set(events.Tags()["scalars"])


class _Oracle(torch.nn.Module):
    """Stands in for a perfectly trained model: writes each validation shape's own program (one broken).

    It answers ``generate_ids`` as CADRecodeForCausalLM does, so the evaluator's real path
    (CADRecoder: decode, sandbox, best of N, protocol metrics) runs on it.
    """

    def __init__(self, codes: list[str], tokenizer, num_point_tokens: int = 32):
        super().__init__()
        self.codes, self.tokenizer, self.embed = list(codes), tokenizer, torch.nn.Embedding(len(tokenizer), 4)
        self.config = types.SimpleNamespace(num_point_tokens=num_point_tokens, num_surface_points=256)

    def get_input_embeddings(self):
        return self.embed

    def get_output_embeddings(self):  # its width sizes the grammar's masks (which this oracle never consults)
        return self.embed

    def generate_ids(self, points, tokens, num_candidates=1, **kwargs):
        assert points.shape[1:] == (self.config.num_point_tokens, 3) and num_candidates == 1
        rows = [self.tokenizer.encode(self.codes.pop(0)) + [tokens.end_id] for _ in range(points.shape[0])]
        width = max(len(r) for r in rows)
        return torch.tensor([r + [tokens.pad_id] * (width - len(r)) for r in rows])


def test_shape_metrics_of_perfect_and_broken_programs(data_dir, tmp_path):
    """The generation metrics are the protocol's: the ground-truth program scores IoU ~1 and CD near the
    sampling floor; a program that does not run counts in IR and is left out of CD and IoU."""
    from cad_recode.data.shards import PreparedSplit
    from cad_recode.evaluate import GenerationMetrics
    from cad_recode.model.tokenizer import train_code_tokenizer

    split = PreparedSplit.open(data_dir, "val")
    cfg = tiny_config(data_dir, tmp_path / "run", eval_num_samples=4, per_device_eval_batch_size=3)
    codes = [split[i]["code"] for i in range(4)]
    codes[1] = "import cadquery as cq\nr=cq.Workplane('XY').box(0,1,1)\n"  # no solid
    tokenizer = train_code_tokenizer(codes * 2, vocab_size=300)
    evaluator = GenerationMetrics(split, tokenizer=tokenizer, cfg=cfg)
    oracle = _Oracle(codes, tokenizer)
    oracle.train()
    try:
        metrics = evaluator(oracle)
    finally:
        evaluator.close()
    assert metrics["ir"] == pytest.approx(0.25)
    assert metrics["iou"] > 0.98 and 0 <= metrics["cd_mean"] < 1.0 and 0 <= metrics["cd_median"] < 1.0
    assert oracle.training and not oracle.codes  # back in training mode; every program was asked for once


# --------------------------------------------------------------------------- multi-process

DISTRIBUTED_CHILD = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    out, record = os.path.abspath(sys.argv[2]), sys.argv[3]
    rank = int(os.environ["RANK"])
    writes = []

    def audit(event, args):  # every file this rank creates, opens for writing, moves or deletes
        if event == "open" and isinstance(args[0], str) and args[1] and any(c in args[1] for c in "wax+"):
            path = args[0]
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree"):
            path = args[0] if isinstance(args[0], str) else os.fspath(args[0])
        else:
            return
        if os.path.abspath(path).startswith(out):
            writes.append(os.path.relpath(os.path.abspath(path), out))

    sys.addaudithook(audit)
    from transformers import TrainerCallback
    from cad_recode.config import load_config
    from cad_recode.training.recipe import train

    class Dump(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
            torch.save(weights, f"{record}/weights_{rank}.pt")

    train(load_config(None, json.loads(sys.argv[1])), callbacks=[Dump()])
    with open(f"{record}/writes_{rank}.json", "w") as f:
        json.dump(writes, f)
    """
)


def test_two_cpu_processes_under_torchrun(data_dir, tmp_path):
    """torchrun --nproc_per_node 2 (gloo): ranks end with identical weights, a time budget settles alike on both,
    and only rank 0 writes the run folder.

    The one file rank 1 writes is its own RNG state in each checkpoint, which resuming needs.
    Writes are seen through a Python audit hook (open for writing, mkdir, rename, remove); files
    written by native code (torch.save, safetensors) are not visible to it.
    """
    out, record = tmp_path / "run", tmp_path / "record"
    record.mkdir()
    # a budget that holds all 24 steps: both ranks probe, and the slowest one's time decides for both; both
    # time their 20 warmup steps too, and settle the count together (a rank alone would hang the other)
    overrides = {**tiny_config(data_dir, out, max_steps=24, warmup_steps=20, save_steps=12,
                               max_minutes=1000).__dict__}
    script = tmp_path / "child.py"
    script.write_text(DISTRIBUTED_CHILD)
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(script), json.dumps(overrides), str(out), str(record)]
    # Own process group: if torchrun hangs, its two ranks are killed with it instead of outliving the test.
    launcher = subprocess.Popen(command, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    try:
        _, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.communicate()
        raise
    assert launcher.returncode == 0, stderr[-3000:]
    assert stderr.count("steps 4-20 took") == 1, stderr[-3000:]  # settled once, said once (rank 0)
    assert load_config(out / "config.yaml").max_steps == 24
    w0, w1 = torch.load(record / "weights_0.pt"), torch.load(record / "weights_1.pt")
    assert w0.keys() == w1.keys() and w0
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    # Rank 1 only creates the checkpoint folders (exist_ok) to put its RNG state in; rank 0 writes the rest.
    writes = json.loads((record / "writes_1.json").read_text())
    assert all(re.fullmatch(r"checkpoint-\d+(/rng_state_1\.pth)?", w) for w in writes), writes
    rank0 = json.loads((record / "writes_0.json").read_text())
    assert "train_log.jsonl" in rank0 and any(w.startswith("checkpoint-12/") for w in rank0)  # the audit sees writes
    assert {"adapter_model.safetensors", "merged_model", "checkpoint-12"} <= {p.name for p in out.iterdir()}
    assert sorted(_losses(out)) == list(range(1, 25))  # one log line per step, not one per rank
