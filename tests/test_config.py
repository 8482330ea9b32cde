"""TrainConfig: shipped YAMLs, the guide's defaults, flags over YAML, clear errors, round trips."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from cad_recode.config import (
    LR_SCHEDULERS,
    SECTIONS,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    config_sections,
    config_to_dict,
    field_names,
    load_config,
    save_config,
)
from cad_recode.errors import UsageError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LORA_YAML = CONFIGS / "train_config_lora.yaml"
QLORA_YAML = CONFIGS / "train_config_qlora.yaml"
TINY_YAML = CONFIGS / "train_config_tiny.yaml"
SHIPPED = [LORA_YAML, QLORA_YAML, TINY_YAML]


def write_yaml(tmp_path: Path, text: str, name: str = "x.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


# --- Shipped configs ---------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_config_loads_and_names_every_key(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    assert cfg.base_model and cfg.output_dir


def test_lora_yaml_spells_out_the_defaults():
    assert load_config(LORA_YAML) == TrainConfig()


def test_qlora_yaml_is_4bit_nf4_with_smaller_batches():
    cfg = load_config(QLORA_YAML)
    lora = load_config(LORA_YAML)
    assert (cfg.finetune_method, cfg.use_qlora, cfg.load_in_4bit) == ("qlora", True, True)
    assert (cfg.bnb_4bit_quant_type, cfg.bnb_4bit_compute_dtype, cfg.bnb_4bit_use_double_quant) == ("nf4", "bfloat16", True)
    assert cfg.base_model == "Qwen/Qwen3-1.7B-Base"
    assert cfg.per_device_train_batch_size < lora.per_device_train_batch_size
    assert cfg.gradient_accumulation_steps > lora.gradient_accumulation_steps
    assert cfg.merge_at_end and not cfg.merge_at_checkpoints


def test_tiny_yaml_builds_a_small_qwen3_offline():
    cfg = load_config(TINY_YAML)
    assert cfg.finetune_method == "full"
    assert cfg.tokenizer == "train_whole_numbers"
    assert cfg.tiny_model["architecture"] == "qwen3"
    spec = cfg.tiny_model
    assert spec["num_attention_heads"] % spec["num_key_value_heads"] == 0
    assert spec["head_dim"] * spec["num_attention_heads"] == spec["hidden_size"]
    assert not cfg.bf16 and not cfg.fp16 and cfg.torch_dtype == "float32"
    assert cfg.output_dir.startswith("runs/tiny") and cfg.data_dir.startswith("runs/tiny")


# --- The guide's defaults -------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value",
    [
        ("base_model", "Qwen/Qwen3-1.7B-Base"),
        ("lora_r", 16),
        ("lora_alpha", 32),
        ("lora_dropout", 0.1),
        ("lora_target_modules", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
        ("auto_merge_lora", True),
        ("auto_merge_final", True),
        ("keep_lora_only", True),
        ("keep_lora_final", True),
        ("merge_final_only", False),
        ("use_qlora", False),
        ("load_in_4bit", False),
        ("bnb_4bit_compute_dtype", "bfloat16"),
        ("bnb_4bit_quant_type", "nf4"),
        ("finetune_method", "lora"),
        ("learning_rate", 2e-4),
        ("lr_scheduler_type", "cosine"),
        ("num_point_tokens", 256),
        ("num_surface_points", 8192),
        ("noise_std", 0.01),
        ("noise_prob", 0.5),
        ("uneven_prob", 0.25),
        ("uneven_strength", 0.9),
        ("missing_side_prob", 0.1),
        ("missing_fraction", 1.0 / 3.0),
        ("max_code_tokens", 768),
        ("max_new_tokens", 768),
        ("report_to", "tensorboard"),
    ],
)
def test_default_matches_guide(key, value):
    assert getattr(TrainConfig(), key) == value


def test_every_field_has_help_and_a_section():
    sections = config_sections()
    assert [title for title, _ in sections] == [title for title, _ in SECTIONS]
    assert [f.name for _, fields in sections for f in fields] == list(field_names())
    for f in dataclasses.fields(TrainConfig):
        assert len(f.metadata.get("help", "")) > 10, f.name


def test_scheduler_names_are_transformers_names():
    from transformers.trainer_utils import SchedulerType

    assert set(LR_SCHEDULERS) <= {s.value for s in SchedulerType}


def test_trainer_keys_keep_transformers_names():
    from transformers import TrainingArguments

    trainer_keys = {f.name for f in dataclasses.fields(TrainingArguments)}
    ours = ["per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler_type",
            "warmup_steps", "weight_decay", "max_grad_norm", "max_steps", "num_train_epochs", "bf16", "fp16",
            "save_steps", "save_total_limit", "logging_steps", "eval_steps", "do_eval", "seed", "output_dir",
            "report_to", "resume_from_checkpoint", "dataloader_num_workers", "per_device_eval_batch_size"]
    assert set(ours) <= trainer_keys
    assert set(ours) <= set(field_names())


# --- Unknown keys and wrong types --------------------------------------------------------


@pytest.mark.parametrize(
    "key, suggestion",
    [("lora_rank", "lora_r"), ("learning_rte", "learning_rate"), ("use_qlra", "use_qlora"), ("Lora_Alpha", "lora_alpha")],
)
def test_unknown_key_names_file_key_and_closest(tmp_path, key, suggestion):
    path = write_yaml(tmp_path, f"lora_r: 8\n{key}: 16\n")
    with pytest.raises(UsageError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: unknown key {key!r} (did you mean {suggestion!r}?)"


def test_unknown_key_without_a_close_match_points_to_help(tmp_path):
    path = write_yaml(tmp_path, "banana: 1\n")
    with pytest.raises(UsageError, match=r"unknown key 'banana' \(the valid keys are the flags listed by --help\)"):
        load_config(path)


def test_unknown_override_key_names_the_command_line():
    with pytest.raises(UsageError, match=r"^command line: unknown key 'lora_rank' \(did you mean 'lora_r'\?\)$"):
        load_config(None, {"lora_rank": 8})


@pytest.mark.parametrize(
    "line, message",
    [
        ("lora_r: sixteen", "'lora_r' must be an int, got 'sixteen'"),
        ("lora_r: 16.5", "'lora_r' must be an int, got 16.5"),
        ("lora_r: true", "'lora_r' must be an int, got True"),
        ("lora_r: null", "'lora_r' must be an int, got null"),
        ("learning_rate: fast", "'learning_rate' must be a number, got 'fast'"),
        ("learning_rate: .nan", "'learning_rate' must be a number, got nan"),
        ("bf16: maybe", "'bf16' must be true or false, got 'maybe'"),
        ("bf16: 1", "'bf16' must be true or false, got 1"),
        ("base_model: 3", "'base_model' must be a string, got 3"),
        ("lora_target_modules: 5", "'lora_target_modules' must be a list of strings, got 5"),
        ("lora_target_modules: [q_proj, 5]", "'lora_target_modules' must be a list of strings, got ['q_proj', 5]"),
        ("tiny_model: [1, 2]", "'tiny_model' must be a mapping or a string or null, got [1, 2]"),
        ("save_total_limit: all", "'save_total_limit' must be an int or null, got 'all'"),
    ],
)
def test_wrong_type_names_key_type_and_value(tmp_path, line, message):
    path = write_yaml(tmp_path, line + "\n")
    with pytest.raises(UsageError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"


def test_wrong_type_from_a_flag_names_the_command_line():
    with pytest.raises(UsageError) as err:
        parse(["--config", str(LORA_YAML), "--lora_r", "sixteen"])
    assert str(err.value) == "command line: 'lora_r' must be an int, got 'sixteen'"


@pytest.mark.parametrize(
    "text, key, value",
    [
        ("learning_rate: 2e-4", "learning_rate", 2e-4),
        ("learning_rate: 5E-4", "learning_rate", 5e-4),
        ("learning_rate: '3e-5'", "learning_rate", 3e-5),
        ("learning_rate: 1", "learning_rate", 1.0),
        ("max_steps: 1e5", "max_steps", 100000),
        ("noise_std: 1.0e-2", "noise_std", 0.01),
        ("weight_decay: 0", "weight_decay", 0.0),
        ("lora_r: '32'", "lora_r", 32),
        ("lora_target_modules: q_proj, v_proj", "lora_target_modules", ["q_proj", "v_proj"]),
        ("save_total_limit: null", "save_total_limit", None),
    ],
)
def test_numbers_and_lists_are_read_leniently(tmp_path, text, key, value):
    cfg = load_config(write_yaml(tmp_path, text + "\n"))
    assert getattr(cfg, key) == value
    assert type(getattr(cfg, key)) is type(value)


def test_exponent_floats_are_floats_inside_tiny_model_too(tmp_path):
    cfg = load_config(write_yaml(tmp_path, "tiny_model:\n  hidden_size: 64\n  rms_norm_eps: 1e-6\n"))
    assert cfg.tiny_model == {"hidden_size": 64, "rms_norm_eps": 1e-6, "architecture": "qwen3"}


def test_ints_are_not_floats_and_floats_are_floats():
    cfg = TrainConfig(learning_rate=1, lora_r=16.0)
    assert type(cfg.learning_rate) is float and type(cfg.lora_r) is int


# --- Out of range and conflicts ---------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lora_r": 0}, "'lora_r' must be > 0, got 0"),
        ({"lora_alpha": -1}, "'lora_alpha' must be > 0, got -1"),
        ({"lora_dropout": 1.0}, "'lora_dropout' must be in [0, 1), got 1.0"),
        ({"lora_dropout": -0.1}, "'lora_dropout' must be in [0, 1), got -0.1"),
        ({"noise_prob": 1.5}, "'noise_prob' must be in [0, 1], got 1.5"),
        ({"uneven_prob": -0.1}, "'uneven_prob' must be in [0, 1], got -0.1"),
        ({"uneven_strength": 1.0}, "'uneven_strength' must be in [0, 0.99], got 1.0"),
        ({"missing_side_prob": 2}, "'missing_side_prob' must be in [0, 1], got 2.0"),
        ({"missing_fraction": 1.0}, "'missing_fraction' must be in [0, 1), got 1.0"),
        ({"learning_rate": 0}, "'learning_rate' must be > 0, got 0.0"),
        ({"max_steps": 0}, "'max_steps' must be -1 (use num_train_epochs) or > 0, got 0"),
        ({"save_total_limit": 0}, "'save_total_limit' must be > 0 (or null to keep all), got 0"),
        ({"lora_target_modules": []}, "'lora_target_modules' must name at least one module, got []"),
        ({"finetune_method": "loar"}, "'finetune_method' must be one of lora, qlora, full, got 'loar' (did you mean 'lora'?)"),
        ({"lr_scheduler_type": "cosin"}, "'lr_scheduler_type' must be one of"),
        ({"torch_dtype": "fp16"}, "'torch_dtype' must be one of auto, bfloat16, float16, float32, got 'fp16'"),
        ({"bnb_4bit_quant_type": "int4"}, "'bnb_4bit_quant_type' must be one of nf4, fp4, got 'int4'"),
        ({"overflow": "wrap"}, "'overflow' must be one of drop, truncate, got 'wrap'"),
        ({"attn_implementation": "flash"}, "'attn_implementation' must be one of"),
        ({"fp16": True}, "bf16 and fp16 are both true"),
        ({"num_point_tokens": 512, "num_surface_points": 256}, "num_surface_points (256) must be >= num_point_tokens (512)"),
        ({"tokenizer": "train"}, "tokenizer 'train' needs tiny_model"),
        ({"tokenizer": "train_whole_numbers"}, "tokenizer 'train_whole_numbers' needs tiny_model"),
        ({"tiny_model": {"hidden_size": 0}}, "tiny_model hidden_size must be a positive int, got 0"),
        ({"merge_final_only": True, "auto_merge_final": False}, "merge_final_only is true but auto_merge_final is false"),
        ({"keep_lora_only": False, "auto_merge_lora": False}, "checkpoints would hold nothing"),
        ({"keep_lora_final": False, "auto_merge_final": False}, "would save no final model"),
        ({"finetune_method": "full", "use_qlora": True}, "finetune_method 'full' conflicts with use_qlora: true"),
        ({"finetune_method": "full", "load_in_4bit": True}, "finetune_method 'full' conflicts with load_in_4bit: true"),
    ],
)
def test_bad_values_and_conflicts_are_usage_errors(overrides, message):
    with pytest.raises(UsageError) as err:
        load_config(None, overrides, overrides_source="test")
    text = str(err.value)
    assert text.startswith("test: ") and message in text
    assert "\n" not in text


def test_range_error_names_the_file_that_set_the_value(tmp_path):
    path = write_yaml(tmp_path, "lora_r: 0\n")
    with pytest.raises(UsageError, match=rf"^{path}: 'lora_r' must be > 0, got 0$"):
        load_config(path)
    with pytest.raises(UsageError, match=r"^command line: 'lora_r' must be > 0"):
        load_config(str(LORA_YAML), {"lora_r": "0"})


def test_merge_flags_are_ignored_for_full_finetuning():
    cfg = TrainConfig(finetune_method="full", keep_lora_final=False, auto_merge_final=False)
    assert not (cfg.merge_at_end or cfg.merge_at_checkpoints or cfg.adapter_at_end or cfg.adapter_at_checkpoints)


@pytest.mark.parametrize(
    "flags, at_checkpoint, at_end",
    [
        # (merge at checkpoints, adapter at checkpoints), (merge at end, adapter at end)
        ({}, (True, True), (True, True)),
        ({"merge_final_only": True}, (False, True), (True, True)),
        ({"auto_merge_lora": False}, (False, True), (True, True)),
        ({"keep_lora_only": False}, (True, False), (True, True)),
        ({"auto_merge_final": False}, (True, True), (False, True)),
        ({"keep_lora_final": False}, (True, True), (True, False)),
    ],
)
def test_merge_flags_say_what_is_written_where(flags, at_checkpoint, at_end):
    cfg = TrainConfig(**flags)
    assert (cfg.merge_at_checkpoints, cfg.adapter_at_checkpoints) == at_checkpoint
    assert (cfg.merge_at_end, cfg.adapter_at_end) == at_end


def test_projector_learning_rate_defaults_to_learning_rate():
    assert TrainConfig(learning_rate=1e-3).projector_lr == 1e-3
    assert TrainConfig(learning_rate=1e-3, projector_learning_rate=5e-3).projector_lr == 5e-3


# --- Method keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, method",
    [
        ({}, "lora"),
        ({"use_qlora": True}, "qlora"),
        ({"load_in_4bit": True}, "qlora"),
        ({"finetune_method": "qlora"}, "qlora"),
        ({"finetune_method": "lora", "use_qlora": True}, "qlora"),
        ({"finetune_method": "full"}, "full"),
    ],
)
def test_method_keys_agree_after_validation(settings, method):
    cfg = TrainConfig(**settings)
    assert cfg.finetune_method == method
    assert cfg.use_qlora == cfg.load_in_4bit == (method == "qlora")


@pytest.mark.parametrize(
    "yaml_path, flags, method",
    [
        (LORA_YAML, ["--use_qlora"], "qlora"),
        (LORA_YAML, ["--use_qlora", "true"], "qlora"),
        (QLORA_YAML, ["--finetune_method", "lora"], "lora"),
        (QLORA_YAML, ["--finetune_method", "full"], "full"),
        (QLORA_YAML, ["--use_qlora", "false"], "lora"),
        (TINY_YAML, ["--use_qlora"], "qlora"),
        (TINY_YAML, ["--use_qlora", "false"], "full"),
        (TINY_YAML, ["--finetune_method", "lora"], "lora"),
    ],
)
def test_a_flag_that_names_the_method_decides_it(yaml_path, flags, method):
    cfg = parse(["--config", str(yaml_path), *flags])
    assert cfg.finetune_method == method


def test_conflicting_method_in_one_file_is_an_error(tmp_path):
    path = write_yaml(tmp_path, "finetune_method: full\nuse_qlora: true\n")
    with pytest.raises(UsageError, match=rf"^{path}: finetune_method 'full' conflicts with use_qlora: true"):
        load_config(path)


# --- Command line ---------------------------------------------------------------------------


def test_guide_commands_work_as_written():
    assert parse(["--config", str(LORA_YAML)]) == load_config(LORA_YAML)
    assert parse(["--config", str(QLORA_YAML)]).finetune_method == "qlora"
    assert parse(["--config", str(LORA_YAML), "--use_qlora"]).finetune_method == "qlora"
    resumed = parse(["--config", str(LORA_YAML), "--resume_from_checkpoint", "checkpoints_qwen3_lora/checkpoint-10000"])
    assert resumed.resume_from_checkpoint == "checkpoints_qwen3_lora/checkpoint-10000"
    evaluated = parse(["--config", str(LORA_YAML), "--do_eval", "--eval_steps", "1000"])
    assert evaluated.do_eval is True and evaluated.eval_steps == 1000


def test_flag_overrides_yaml_and_absent_flags_do_not(tmp_path):
    path = write_yaml(tmp_path, "lora_r: 8\nlora_alpha: 16\nlearning_rate: 1.0e-4\n")
    cfg = parse(["--config", path, "--lora_r", "64", "--learning_rate=5e-4"])
    assert (cfg.lora_r, cfg.lora_alpha, cfg.learning_rate) == (64, 16, 5e-4)
    assert parse(["--config", path]).lora_r == 8


def test_no_config_means_defaults_plus_flags():
    assert parse([]) == TrainConfig()
    assert parse(["--lora_r", "8"]) == TrainConfig(lora_r=8)


@pytest.mark.parametrize(
    "argv, value",
    [(["--do_eval"], True), (["--do_eval", "true"], True), (["--do_eval", "false"], False),
     (["--do_eval=no"], False), (["--do_eval", "ON"], True), ([], False)],
)
def test_bool_flag_forms(argv, value):
    assert parse(argv).do_eval is value


def test_bool_flag_rejects_other_words():
    with pytest.raises(UsageError, match=r"'do_eval' must be true or false, got 'maybe'"):
        parse(["--do_eval", "maybe"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--lora_target_modules", "q_proj,v_proj"],
        ["--lora_target_modules", "q_proj", "v_proj"],
        ["--lora_target_modules", "q_proj", "--lora_target_modules", "v_proj"],
    ],
)
def test_list_flag_forms(argv):
    assert parse(argv).lora_target_modules == ["q_proj", "v_proj"]


def test_null_and_mapping_flags():
    cfg = parse(["--config", str(TINY_YAML), "--tiny_model", "{hidden_size: 64, num_hidden_layers: 2}"])
    assert cfg.tiny_model == {"hidden_size": 64, "num_hidden_layers": 2, "architecture": "qwen3"}
    assert parse(["--save_total_limit", "none"]).save_total_limit is None
    assert parse(["--tiny_model", "tiny/config.json"]).tiny_model == "tiny/config.json"
    with pytest.raises(UsageError, match="'tiny_model' must be a mapping"):
        parse(["--tiny_model", "{hidden_size: 64"])


def test_every_field_is_a_flag_and_help_renders():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    text = parser.format_help()
    for name in field_names():
        assert f"--{name}" in text
    assert vars(parser.parse_args([])) == {"config": None}


# --- YAML files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("lora_r: 8\nlora_r: 16\n", "key 'lora_r' is given twice (first on line 1)"),
        ("- lora_r\n- 8\n", "a config is a flat mapping of 'key: value' lines, got a list"),
        ("lora_r: [8\n", "invalid YAML at line"),
    ],
)
def test_malformed_yaml_is_a_usage_error(tmp_path, text, message):
    path = write_yaml(tmp_path, text)
    with pytest.raises(UsageError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="config file .*nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="is a folder, not a file"):
        load_config(tmp_path)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write_yaml(tmp_path, "# nothing yet\n")) == TrainConfig()


# --- Saving -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        load_config(LORA_YAML),
        load_config(QLORA_YAML),
        load_config(TINY_YAML),
        TrainConfig(learning_rate=3e-5, projector_learning_rate=1e-3, base_model="2e-4", data_dir="true",
                    lora_target_modules=["q_proj"], resume_from_checkpoint="auto", save_total_limit=None,
                    tiny_model="models/tiny/config.json", max_steps=-1, num_train_epochs=0.5),
    ],
    ids=["lora", "qlora", "tiny", "odd-values"],
)
def test_save_load_round_trip(tmp_path, cfg):
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]  # no temporary left behind
    assert config_to_dict(load_config(path)) == config_to_dict(cfg)


def test_config_to_dict_is_plain_and_ordered():
    values = config_to_dict(TrainConfig())
    assert list(values) == list(field_names())
    values["lora_target_modules"].append("lm_head")
    assert "lm_head" not in TrainConfig().lora_target_modules


def test_scan_augmentation_keys_round_trip_into_the_training_items(tmp_path):
    """The augmentation keys survive save/load and become the train split's ScanAugmentation."""
    from cad_recode.geometry.augment import ScanAugmentation
    from cad_recode.training.recipe import scan_augmentation

    keys = dict(noise_std=0.02, noise_prob=0.3, uneven_prob=0.5, uneven_strength=0.7, missing_side_prob=0.2,
                missing_fraction=0.25)
    path = tmp_path / "config.yaml"
    save_config(TrainConfig(**keys), path)
    loaded = load_config(path)
    assert {k: getattr(loaded, k) for k in keys} == keys
    assert scan_augmentation(loaded) == ScanAugmentation(**keys)
    assert scan_augmentation(TrainConfig()) == ScanAugmentation()  # the defaults are the same numbers
