"""Merging adapters into full-precision models, and several adapters on one base.

Adapters are trained here for a few steps with the model API (tests/infer_artifacts.py)
on a tiny full model saved as the base folder.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).parent))
import infer_artifacts as art  # noqa: E402

from cad_recode.cli import main  # noqa: E402
from cad_recode.errors import InputError, UsageError  # noqa: E402
from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.inference import CADRecoder  # noqa: E402
from cad_recode.model.loading import attach_adapters, load_base  # noqa: E402
from cad_recode.merge import merge_adapter  # noqa: E402
from cad_recode.model import CADRecodeForCausalLM, quantization_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def points(sandbox):
    return art.shape_points(sandbox.run(example_program("cube")).to_trimesh())


@pytest.fixture(scope="module")
def models(tmp_path_factory, sandbox, points):
    root = tmp_path_factory.mktemp("merge")
    cube = sandbox.run(example_program("cube")).to_trimesh()
    base = art.save_memorizer(cube, root / "base")
    return {
        "base": base,
        "a": art.adapter_run(base, root / "a", points, example_program("cube"), steps=2, lr=1e-3, seed=1),
        "b": art.adapter_run(base, root / "b", points, example_program("tube"), steps=5, lr=2e-2, seed=2),
    }


def logits(model, points):
    ids = torch.tensor([art.code_ids(example_program("cube"))[:20]] * len(points))
    with torch.no_grad():
        return model.eval()(points=points, input_ids=ids).logits


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def unmerged(base_dir: Path, adapter_dir: Path):
    return attach_adapters(load_base(str(base_dir)), {"default": adapter_dir}, str(base_dir))


# -- merge --------------------------------------------------------------------------------


def test_merge_script_matches_base_plus_adapter(models, points, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", "--base_model", str(models["base"]), "--lora_path", str(models["b"]),
                 "--output_path", str(out)]) == 0
    assert f"-> {out}" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert type(merged) is CADRecodeForCausalLM and merged.lm.model.embed_tokens.weight.dtype == torch.float32
    assert not any("lora" in name for name, _ in merged.named_parameters())
    reference = unmerged(models["base"], models["b"])
    assert rel_diff(logits(merged, points), logits(reference, points)) < 1e-4
    # ... and the trained projector came along (it differs from the base's)
    base = load_base(str(models["base"]))
    assert not torch.equal(merged.point_encoder.proj.weight, base.point_encoder.proj.weight)
    assert json.loads((out / "generation_config.json").read_text())["max_new_tokens"] == 768


def test_large_models_are_sharded_and_bf16_on_request(models, points, tmp_path):
    out = tmp_path / "sharded"
    report = merge_adapter(None, models["a"], out, max_shard_size="40KB", dtype="bfloat16")  # base from adapter_config
    assert report.base == str(models["base"]) and report.dtype == "bfloat16"
    assert "model.safetensors.index.json" in report.files
    assert sum(name.startswith("model-") for name in report.files) > 1
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.lm.model.embed_tokens.weight.dtype == torch.bfloat16
    assert merged.point_encoder.proj.weight.dtype == torch.float32  # the projector stays fp32


def test_qlora_adapter_merges_into_an_unquantized_base(models, points, tmp_path):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear4bit

    adapter = art.adapter_run(models["base"], tmp_path / "qlora", points, example_program("cube"), steps=2, lr=1e-2,
                              quantization=quantization_config("float32"))
    out = tmp_path / "qmerged"
    merge_adapter(models["base"], adapter, out)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any(isinstance(m, Linear4bit) for m in merged.modules())
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    assert rel_diff(logits(merged, points), logits(unmerged(models["base"], adapter), points)) < 1e-4


def test_merge_errors_are_one_line(models, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    with pytest.raises(UsageError, match="already exists"):
        merge_adapter(models["base"], models["a"], out)
    other = tmp_path / "other"
    CADRecodeForCausalLM.from_lm(art.build_tiny_lm(vocab_size=300, hidden_size=32), num_point_tokens=art.POINTS
                                 ).save_pretrained(other)
    with pytest.raises(InputError, match=f"trained on {models['base']}.*does not fit base model {other}"):
        merge_adapter(other, models["a"], tmp_path / "never")
    assert not (tmp_path / "never").exists()
    capsys.readouterr()
    assert main(["merge", "--lora_path", str(tmp_path / "missing"), "--output_path", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_merge_given_a_full_model_says_so(models, tmp_path, capsys):
    """config.json is there: the message must not claim it is missing."""
    assert main(["merge", "--lora_path", str(models["base"]), "--output_path", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{models['base']} is a full model (config.json), not a LoRA adapter" in err[0]
    assert "no merged_model/ or config.json" not in err[0] and not (tmp_path / "m").exists()


# -- several adapters ---------------------------------------------------------------------


def test_two_adapters_give_their_own_outputs(models, sandbox, points):
    both = CADRecoder.from_pretrained(models["base"], adapters={"a": models["a"], "b": models["b"]},
                                      sandbox=sandbox, device="cpu")
    assert both.adapters == ["a", "b"] and both.active_adapter == "a"
    # grammar off: these few-step adapters differ in what they would write, which the grammar may mask alike
    settings = dict(max_new_tokens=40, grammar=False)
    from cad_recode.inference import Decoding

    out_a = both.generate(points.numpy(), Decoding(**settings))
    proj_a = both.core.point_encoder(points).detach()
    both.set_adapter("b")
    out_b = both.generate(points.numpy(), Decoding(**settings))
    proj_b = both.core.point_encoder(points).detach()
    assert out_a != out_b and not torch.equal(proj_a, proj_b)  # LoRA and projector both switch

    for name, expected in (("a", out_a), ("b", out_b)):
        alone = CADRecoder.from_pretrained(lora_path=models[name], sandbox=sandbox, device="cpu")
        assert alone.generate(points.numpy(), Decoding(**settings)) == expected
    with pytest.raises(UsageError, match="adapter 'c' is not loaded; loaded: a, b"):
        both.set_adapter("c")


def test_cli_adapter_flags(models, tmp_path, capsys):
    argv = ["infer", "--base_model", str(models["base"]), "--adapter", f"a={models['a']}", "--adapter",
            f"b={models['b']}", "--shape", "cube", "--max_new_tokens", str(art.MAX_NEW_TOKENS), "--output"]
    main([*argv, str(tmp_path / "a.py")])
    assert "(active adapter: a)" in capsys.readouterr().err
    main([*argv, str(tmp_path / "b.py"), "--active_adapter", "b"])
    assert "(active adapter: b)" in capsys.readouterr().err
    assert json.loads((tmp_path / "a.json").read_text())["model"].endswith("(active adapter: a)")
    assert (tmp_path / "a.py").read_text() != (tmp_path / "b.py").read_text()
    assert main([*argv, str(tmp_path / "c.py"), "--active_adapter", "c"]) == 2
    assert main(["infer", "--base_model", str(models["base"]), "--adapter", "nameonly", "--shape", "cube"]) == 2
    assert "NAME=PATH" in capsys.readouterr().err
