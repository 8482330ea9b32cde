"""The model layer: point encoder, LM wrapper, save/load, LoRA, QLoRA, merge and export.

Everything runs on tiny random Qwen3 / Qwen2 models (hidden 32, 2 layers, vocab 300)
built from configs, offline.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from cad_recode.errors import InputError, UsageError
from cad_recode.model import (
    CADRecodeConfig,
    CADRecodeForCausalLM,
    PointEncoder,
    apply_lora,
    build_tiny_lm,
    count_parameters,
    fourier_features,
    load_base_lm,
    merged_copy,
    optimizer_groups,
    quantization_config,
    save_merged,
)
from cad_recode.model.tokenizer import CodeTokens, train_code_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = 300
POINTS = 16
TOKENS = CodeTokens(start_id=1, end_id=0, pad_id=0)  # the small BPE's ids (see test_tokenizer.py)


def tiny_model(architecture: str = "qwen3", seed: int = 0, tie: bool = True) -> CADRecodeForCausalLM:
    lm = build_tiny_lm(architecture, vocab_size=VOCAB, seed=seed, tie_word_embeddings=tie)
    torch.manual_seed(seed + 1)  # the projector's init
    return CADRecodeForCausalLM.from_lm(lm, num_point_tokens=POINTS)


def batch(seed: int = 0, batch_size: int = 2, length: int = 9):
    """Dataset-style batch: [im_start] + code + [eos], right-padded; labels[:, 0] = -100."""
    g = torch.Generator().manual_seed(seed)
    points = torch.rand(batch_size, POINTS, 3, generator=g) * 2 - 1
    ids = torch.randint(3, VOCAB, (batch_size, length), generator=g)
    ids[:, 0] = TOKENS.start_id
    ids[:, -1] = TOKENS.end_id
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, 0] = -100
    # second row is 3 tokens shorter: padded
    ids[1, -3:] = TOKENS.pad_id
    mask[1, -3:] = 0
    labels[1, -3:] = -100
    ids[1, -4] = TOKENS.end_id
    labels[1, -4] = TOKENS.end_id
    return dict(points=points, input_ids=ids, attention_mask=mask, labels=labels)


def logits_of(model, data):
    model.eval()
    with torch.no_grad():
        return model(points=data["points"], input_ids=data["input_ids"], attention_mask=data["attention_mask"]).logits


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def tied(model: CADRecodeForCausalLM) -> bool:
    return model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()


def train_steps(model, data, steps: int, lr: float = 1e-2):
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = model(**data).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return loss.item()


# -- point encoder ------------------------------------------------------------------------


def test_fourier_features_exact_values():
    xyz = torch.tensor([[0.5, -0.25, 1.0]])
    features = fourier_features(xyz)
    assert features.shape == (1, 51) and features.dtype == torch.float32
    expected = [0.5, -0.25, 1.0]
    scaled = [c * 2.0**k for c in (0.5, -0.25, 1.0) for k in range(8)]  # coordinate-major, no pi
    expected += [math.sin(v) for v in scaled] + [math.cos(v) for v in scaled]
    torch.testing.assert_close(features[0], torch.tensor(expected), rtol=0, atol=1e-6)


def test_point_encoder_shape_and_fp32():
    encoder = PointEncoder(hidden_size=32)
    assert encoder.proj.in_features == 51 and encoder.proj.out_features == 32
    out = encoder(torch.rand(2, 7, 3, dtype=torch.float64))
    assert out.shape == (2, 7, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\(batch, num_points, 3\)"):
        encoder(torch.rand(7, 3))


def test_projector_stays_fp32_in_a_bf16_model(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.point_encoder.proj.weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    assert model.embed_points(torch.rand(1, 4, 3)).dtype == torch.bfloat16  # cast for the LM
    data = batch()
    assert model(**data).logits.shape == (2, POINTS + 9, VOCAB)


# -- forward and loss ---------------------------------------------------------------------


def test_loss_is_cross_entropy_over_code_and_end_token_only():
    model = tiny_model()
    data = batch()
    out = model(**data)
    assert out.logits.shape == (2, POINTS + 9, VOCAB)
    full_labels = torch.cat([torch.full((2, POINTS), -100), data["labels"]], dim=1)
    targets = full_labels[:, 1:]  # position i predicts token i + 1
    counted = targets != -100
    # row 0: 7 code tokens + end token; row 1: 4 code tokens + end token; never points or <|im_start|>
    assert counted.sum(dim=1).tolist() == [8, 5]
    assert not counted[:, : POINTS].any()
    manual = F.cross_entropy(out.logits[:, :-1][counted].float(), targets[counted])
    torch.testing.assert_close(out.loss, manual, rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_the_real_positions():
    model = tiny_model()
    data = batch()
    padded = logits_of(model, data)
    real = 9 - 3  # row 1 has 3 padding tokens
    alone = dict(
        points=data["points"][1:2], input_ids=data["input_ids"][1:2, :real], attention_mask=data["attention_mask"][1:2, :real]
    )
    torch.testing.assert_close(logits_of(model, alone)[0], padded[1, : POINTS + real], rtol=1e-4, atol=1e-5)


def test_gradient_reaches_the_point_encoder():
    model = tiny_model()
    model(**batch()).loss.backward()
    grad = model.point_encoder.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_point_count_must_match_the_config():
    model = tiny_model()
    data = batch()
    with pytest.raises(ValueError, match=r"points must have shape \(batch, 16, 3\)"):
        model(**dict(data, points=data["points"][:, :8]))


def test_points_change_the_prediction():
    model = tiny_model()
    data = batch()
    other = dict(data, points=-data["points"])
    assert not torch.allclose(logits_of(model, data)[:, POINTS:], logits_of(model, other)[:, POINTS:])


# -- architectures, save and load ---------------------------------------------------------


@pytest.mark.parametrize(
    "architecture,tie",
    [
        ("qwen3", True),  # Qwen3-1.7B-Base ties input and output embeddings
        ("qwen2", True),  # Qwen2 and Qwen2.5 share the "qwen2" architecture
        ("qwen2", False),
    ],
)
def test_save_load_round_trip(tmp_path, architecture, tie):
    model = tiny_model(architecture, tie=tie)
    data = batch()
    expected = logits_of(model, data)
    assert tied(model) is tie
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "cad_recode" and config["text_config"]["model_type"] == architecture
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm.model.embed_tokens.weight" in keys and "point_encoder.proj.weight" in keys
    assert ("lm.lm_head.weight" in keys) is not tie  # a tied weight is stored once

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is CADRecodeForCausalLM and loaded.config.num_point_tokens == POINTS
    assert tied(loaded) is tie
    torch.testing.assert_close(logits_of(loaded, data), expected, rtol=0, atol=0)


def test_wrapping_keeps_the_lm_weights():
    lm = build_tiny_lm(vocab_size=VOCAB, seed=3)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    model = CADRecodeForCausalLM.from_lm(lm)
    assert model.config.num_point_tokens == 256 and model.config.text_config is lm.config
    after = model.lm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.config.text_config._attn_implementation == "sdpa"  # the LM's choice survives wrapping


def test_default_config_is_qwen3():
    config = CADRecodeConfig()
    assert config.text_config.model_type == "qwen3" and config.num_point_tokens == 256


def test_gradient_checkpointing_gives_the_same_gradients():
    data = batch()
    grads = []
    for checkpointing in (False, True):
        model = tiny_model()
        model.config.text_config.use_cache = False
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        model(**data).loss.backward()
        grads.append(model.point_encoder.proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


# -- generation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def memorized():
    """A tiny model overfit on two (points, program) pairs: greedy decoding must reproduce them."""
    model = tiny_model(seed=5)
    g = torch.Generator().manual_seed(7)
    points = torch.rand(2, POINTS, 3, generator=g) * 2 - 1
    codes = [torch.randint(3, VOCAB, (6,), generator=g).tolist(), torch.randint(3, VOCAB, (4,), generator=g).tolist()]
    ids = torch.full((2, 8), TOKENS.pad_id)
    labels = torch.full((2, 8), -100)
    mask = torch.zeros(2, 8, dtype=torch.long)
    for row, code in enumerate(codes):
        seq = [TOKENS.start_id] + code + [TOKENS.end_id]
        ids[row, : len(seq)] = torch.tensor(seq)
        labels[row, 1 : len(seq)] = torch.tensor(seq[1:])
        mask[row, : len(seq)] = 1
    data = dict(points=points, input_ids=ids, attention_mask=mask, labels=labels)
    loss = train_steps(model, data, steps=60, lr=3e-2)
    assert loss < 0.05
    model.eval()
    return model, points, codes


def test_greedy_generation_reproduces_and_stops_at_eos(memorized):
    model, points, codes = memorized
    rows = model.generate_ids(points, TOKENS, max_new_tokens=20)
    assert TOKENS.strip_rows(rows) == codes
    assert rows.shape[1] == len(codes[0]) + 1  # stopped at the end token, not at max_new_tokens
    assert rows[1, len(codes[1])].item() == TOKENS.end_id  # shorter row padded after its end token
    model.train()  # e.g. generation-based eval during training: dropout is switched off, then back on
    again = model.generate_ids(points, TOKENS, max_new_tokens=20)
    assert model.training
    model.eval()
    assert torch.equal(rows, again)


def test_cached_generation_equals_a_full_recompute(memorized):
    model, points, _ = memorized
    rows = model.generate_ids(points[:1], TOKENS, max_new_tokens=5)
    ids = torch.tensor([[TOKENS.start_id]])
    with torch.no_grad():
        for _ in range(rows.shape[1]):
            next_id = model(points=points[:1], input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
            if next_id.item() == TOKENS.end_id:
                break
    assert ids[0, 1:].tolist() == rows[0].tolist()


def test_generate_code_decodes_and_sampling_gives_candidates(memorized):
    model, points, _ = memorized
    tokenizer = train_code_tokenizer(["r=w0.box(1,2,3)\n"] * 4, vocab_size=VOCAB)
    texts = model.generate_code(points, tokenizer, max_new_tokens=10)
    assert len(texts) == 2 and all(isinstance(t, str) and "<|endoftext|>" not in t for t in texts)
    sampled = model.generate_ids(points, TOKENS, max_new_tokens=3, num_candidates=3, do_sample=True, temperature=2.0)
    assert sampled.shape[0] == 6
    with pytest.raises(UsageError, match="identical programs"):
        model.generate_ids(points, TOKENS, num_candidates=2)


# -- LoRA ---------------------------------------------------------------------------------


def test_lora_goes_on_lm_projections_only():
    peft_model = apply_lora(tiny_model(), r=4, alpha=8, dropout=0.0)
    lora_modules = [n for n, _ in peft_model.named_modules() if n.endswith("lora_A")]
    assert len(lora_modules) == 2 * 7  # 2 layers x q,k,v,o,gate,up,down
    assert all(n.startswith("base_model.model.lm.model.layers.") for n in lora_modules)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert all("lora_" in n or ".point_encoder.modules_to_save.default." in n for n in trainable)
    assert sum("point_encoder" in n for n in trainable) == 2  # projector weight + bias, fully trained
    assert tied(peft_model.get_base_model())
    counts = count_parameters(peft_model)
    assert counts.groups["lora"] == (counts.groups["lora"][0],) * 2
    assert counts.groups["lm"][1] == 0
    assert counts.trainable == counts.groups["lora"][1] + 51 * 32 + 32
    # PEFT's frozen copy of the projector is memory, not another parameter of the model
    assert counts.total == count_parameters(tiny_model()).total + counts.groups["lora"][0]
    groups = optimizer_groups(peft_model, learning_rate=1e-4, projector_learning_rate=1e-3, weight_decay=0.1)
    by_lr = {}
    for group in groups:
        by_lr.setdefault(group["lr"], []).extend(group["params"])
    assert {id(p) for p in by_lr[1e-3]} == {
        id(p) for n, p in peft_model.named_parameters() if p.requires_grad and "point_encoder" in n
    }
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    assert all(g["weight_decay"] == 0.0 for g in groups if g["params"][0].ndim == 1)
    with pytest.raises(UsageError, match=r"lora_target_modules \['qkv_proj'\] not found"):
        apply_lora(tiny_model(), target_modules=["q_proj", "qkv_proj"])


def test_parameter_count_counts_tied_weights_once():
    model = tiny_model()
    counts = count_parameters(model)
    unique = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert counts.total == unique == counts.trainable
    assert counts.groups["point_encoder"] == (51 * 32 + 32,) * 2


def test_each_adapter_carries_its_own_projector(tmp_path):
    from peft import PeftModel

    saved = {}
    for name, seed in (("a", 1), ("b", 2)):
        peft_model = apply_lora(tiny_model(), r=4, alpha=8, dropout=0.0)
        train_steps(peft_model, batch(seed), steps=2)
        peft_model.save_pretrained(tmp_path / name)
        saved[name] = logits_of(peft_model, batch())
        with safe_open(str(tmp_path / name / "adapter_model.safetensors"), "pt") as f:
            assert {"base_model.model.point_encoder.proj.weight", "base_model.model.point_encoder.proj.bias"} <= set(
                f.keys()
            )
    multi = PeftModel.from_pretrained(tiny_model(), tmp_path / "a", adapter_name="a")
    multi.load_adapter(tmp_path / "b", adapter_name="b")
    for name in ("a", "b", "a"):
        multi.set_adapter(name)
        torch.testing.assert_close(logits_of(multi, batch()), saved[name], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(saved["a"], saved["b"])
    merged_b = merged_copy(multi, tiny_model, adapter_name="b")  # merges b's LoRA and b's projector
    assert multi.active_adapter == "a"
    assert rel_diff(logits_of(merged_b, batch()), saved["b"]) < 1e-4


# -- merge and export ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_adapter():
    peft_model = apply_lora(tiny_model(), r=4, alpha=8, dropout=0.0)
    train_steps(peft_model, batch(1), steps=3)
    return peft_model


def test_merged_copy_matches_and_leaves_the_live_model_training(trained_adapter):
    live = trained_adapter
    data = batch()
    expected = logits_of(live, data)
    before = {n: p.detach().clone() for n, p in live.named_parameters() if p.requires_grad}

    merged = merged_copy(live, tiny_model)
    assert type(merged) is CADRecodeForCausalLM and tied(merged)
    assert not any("lora" in n or "modules_to_save" in n for n, _ in merged.named_modules())
    assert rel_diff(logits_of(merged, data), expected) < 1e-4

    after = dict(live.named_parameters())
    assert all(torch.equal(before[n], after[n]) and after[n].requires_grad for n in before)
    assert any("lora" in n for n, _ in live.named_modules())  # still a LoRA model
    train_steps(live, batch(2), steps=1)
    changed = [n for n, p in live.named_parameters() if "lora_B" in n and not torch.equal(before[n], p)]
    assert changed, "LoRA weights must keep training after a merge"


def test_merged_copy_accepts_a_bare_lm_loader(trained_adapter):
    merged = merged_copy(trained_adapter, lambda: build_tiny_lm(vocab_size=VOCAB, seed=0))
    assert rel_diff(logits_of(merged, batch()), logits_of(trained_adapter, batch())) < 1e-4
    with pytest.raises(UsageError, match="adapter 'nope' not loaded"):
        merged_copy(trained_adapter, tiny_model, adapter_name="nope")
    wider = lambda: build_tiny_lm(vocab_size=VOCAB, hidden_size=64, intermediate_size=128)  # noqa: E731
    with pytest.raises(UsageError, match="does not fit the base"):
        merged_copy(trained_adapter, wider)


def test_save_merged_reloads_with_auto_model(trained_adapter, tmp_path):
    tokenizer = train_code_tokenizer(["r=w0.box(10,20,30)\n"] * 4, vocab_size=VOCAB)
    merged = merged_copy(trained_adapter, tiny_model)
    out = tmp_path / "merged_model"
    save_merged(merged, tokenizer, out, max_shard_size="40KB")  # force sharding on the tiny model
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors.index.json"} <= names
    assert sum(n.startswith("model-") and n.endswith(".safetensors") for n in names) > 1
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 0 and generation["pad_token_id"] == 0
    assert generation["max_new_tokens"] == 768 and generation.get("do_sample", False) is False
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert "lm.lm_head.weight" not in index["weight_map"]  # tied: stored once

    loaded = AutoModelForCausalLM.from_pretrained(out)
    assert tied(loaded)
    torch.testing.assert_close(logits_of(loaded, batch()), logits_of(merged, batch()), rtol=0, atol=0)
    assert loaded.generation_config.max_new_tokens == 768
    assert CodeTokens.from_tokenizer(AutoTokenizer.from_pretrained(out)) == TOKENS

    with pytest.raises(FileExistsError):
        save_merged(merged, tokenizer, out)
    with pytest.raises(UsageError, match="merge an adapter first"):
        save_merged(trained_adapter, tokenizer, tmp_path / "other")
    assert not (tmp_path / "other").exists()


# -- QLoRA (bitsandbytes 4-bit works on the CPU) -----------------------------------------


@pytest.fixture(scope="module")
def saved_base(tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "tiny"
    tiny_model().save_pretrained(path)
    return path


def test_qlora_trains_on_cpu_and_merges_into_full_precision(saved_base):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear4bit

    base = load_base_lm(saved_base, dtype="float32", quantization=quantization_config("float32"))
    assert isinstance(base, CADRecodeForCausalLM) and base.is_loaded_in_4bit
    assert isinstance(base.lm.model.layers[0].self_attn.q_proj, Linear4bit)
    assert not isinstance(base.point_encoder.proj, Linear4bit) and base.point_encoder.proj.weight.dtype == torch.float32
    assert not isinstance(base.lm.lm_head, Linear4bit)

    peft_model = apply_lora(base, r=4, alpha=8, dropout=0.0)
    counts = count_parameters(peft_model)
    assert counts.groups["lm"][0] == count_parameters(tiny_model()).groups["lm"][0]  # 4-bit counted unpacked
    data = batch(1)
    first = peft_model(**data).loss
    first.backward()
    assert peft_model.base_model.model.point_encoder.modules_to_save["default"].proj.weight.grad.abs().sum() > 0
    peft_model.zero_grad()
    assert train_steps(peft_model, data, steps=3) < first.item()

    def full_precision():
        return load_base_lm(saved_base, dtype="float32")

    merged = merged_copy(peft_model, full_precision)
    assert not any(isinstance(m, Linear4bit) for m in merged.modules())
    # Reference: the same adapter, unmerged, on the full-precision base.
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    reference = get_peft_model(full_precision(), peft_model.peft_config["default"])
    set_peft_model_state_dict(reference, get_peft_model_state_dict(peft_model))
    assert rel_diff(logits_of(merged, data), logits_of(reference, data)) < 1e-4

    with pytest.raises(UsageError, match="needs a full-precision base"):
        merged_copy(peft_model, lambda: load_base_lm(saved_base, dtype="float32", quantization=quantization_config()))


# -- loading errors -----------------------------------------------------------------------


def test_missing_base_model_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=r"huggingface-cli download Qwen/Qwen3-0\.6B-Base-not-here --local-dir"):
        load_base_lm("Qwen/Qwen3-0.6B-Base-not-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="has no config.json"):
        load_base_lm(tmp_path / "empty")
    with pytest.raises(UsageError, match="unknown dtype"):
        load_base_lm(tmp_path / "empty", dtype="float12")


# -- expected notices stay quiet, the rest are not hidden -------------------------------------


def test_resume_of_a_tied_model_reties_instead_of_warning(tmp_path, caplog):
    """The Trainer re-ties (no "missing keys lm_head") when the missing keys are exactly _keys_to_ignore_on_save."""
    import logging

    from safetensors.torch import load_file
    from transformers import Trainer

    model = tiny_model(tie=True)
    model.save_pretrained(tmp_path)
    fresh = tiny_model(seed=5, tie=True)
    result = fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=False)
    assert set(result.missing_keys) == fresh._keys_to_ignore_on_save == {"lm.lm_head.weight"}
    with caplog.at_level(logging.WARNING):
        Trainer._issue_warnings_after_load(type("T", (), {"model": fresh})(), result)
    assert "missing keys" not in caplog.text and tied(fresh)
    assert tiny_model(tie=False)._keys_to_ignore_on_save == set()  # an untied head is saved and loaded as usual


def test_lora_on_the_wrapper_raises_no_deprecation_warning():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_lora(tiny_model(), r=2, alpha=4, dropout=0.0)
    assert [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)] == []


def test_only_the_optional_kernel_notice_of_bitsandbytes_is_dropped(caplog):
    import logging

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                       "already `pip install kernels` and the kernels >= 0.11.1", "No module named 'kernels'")
        logger.warning("some other bitsandbytes problem")
    assert "kernels" not in caplog.text and "some other bitsandbytes problem" in caplog.text
