"""``cad-recode rl`` and ``train_cad_recode_rl.py``: flags over YAML, --dry_run, one-line errors, a mesh-folder run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trimesh

sys.path.insert(0, str(Path(__file__).parent))
import rl_artifacts as ra  # noqa: E402

from cad_recode.cli import main  # noqa: E402
from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.model.runlog import read_train_log  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "configs" / "rl_config_tiny.yaml"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sandbox):
    root = tmp_path_factory.mktemp("rl_inputs")
    cube = sandbox.run(example_program("cube")).to_trimesh()
    return ra.prepared_boxes(root / "data"), ra.start_model(cube, root / "start")


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["rl", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_dry_run_prints_the_plan_flags_override_the_yaml_and_nothing_is_written(inputs, tmp_path, capsys):
    data, start = inputs
    out = tmp_path / "out"
    code, stdout, _ = _run(capsys, "--config", TINY_YAML, "--start_model", start, "--data_dir", data,
                           "--output_dir", out, "--dry_run")
    assert code == 0
    assert "RL plan" in stdout and f"full model {start}" in stdout
    assert "128 programs sampled, 64 trained on" in stdout  # the YAML: 16 inputs x 8 samples, top 4
    code, stdout, _ = _run(capsys, "--config", TINY_YAML, "--start_model", start, "--data_dir", data,
                           "--output_dir", out, "--dry_run", "--num_generations", "4", "--top_k", "2")
    assert code == 0 and "64 programs sampled, 32 trained on" in stdout  # the flags won
    assert "anchor           off" in stdout
    assert "self-imitation   off" in stdout
    code, stdout, _ = _run(capsys, "--config", TINY_YAML, "--start_model", start, "--data_dir", data,
                           "--output_dir", out, "--dry_run", "--anchor_data_dir", data, "--anchor_families", "box",
                           "plate", "--anchor_coef", "0.5", "--anchor_rollouts", "4")
    assert code == 0
    assert (f"{data} (split train, box, plate): 16 programs per update, SFT loss x 0.5; 4 shapes per update "
            "rolled out beside the inputs") in stdout
    assert "160 programs sampled, 80 trained on" in stdout  # 16 + 4 inputs x 8 samples, top 4
    code, stdout, _ = _run(capsys, "--config", TINY_YAML, "--start_model", start, "--data_dir", data,
                           "--output_dir", out, "--dry_run", "--imitation_coef", "2", "--imitation_sources", "fit")
    assert code == 0
    assert "self-imitation   the best of fit per input, where it beats greedy's reward by 0.5: SFT loss x 2.0" in stdout
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["--kl_bta", "0.1"], "unknown flag '--kl_bta' (did you mean '--kl_beta'?)"),
    (["--top_k", "32"], "top_k (32) must be <= num_generations (8)"),
    (["--start_model", "/nonexistent/run"], "start_model /nonexistent/run does not exist"),
    (["--reward", "iou_gtt"], "unknown reward 'iou_gtt' (did you mean 'iou_gt'?)"),
    (["--data_dir", "null", "--mesh_dir", "parts", "--reward", "iou_gt"], "reward iou_gt needs ground-truth programs"),
    (["--data_dir", "null"], "give data_dir (a prepared dataset"),
    (["--anchor_data_dir", "/nonexistent/data"], "anchor_data_dir /nonexistent/data not found"),
    (["--anchor_families", "ring"], "anchor_families selects replayed programs, but anchor_data_dir is not set"),
    (["--anchor_rollouts", "-1"], "'anchor_rollouts' must be >= 0, got -1"),
])
def test_bad_settings_are_one_line_errors(argv, expected, inputs, tmp_path, capsys):
    data, start = inputs
    base = ["--config", TINY_YAML, "--start_model", start, "--data_dir", data, "--output_dir", tmp_path / "o"]
    code, stdout, stderr = _run(capsys, *base, *argv)
    assert code == 2, stderr
    assert expected in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "o").exists()


def test_unknown_yaml_key_names_the_closest(tmp_path, capsys):
    config = tmp_path / "rl.yaml"
    config.write_text(TINY_YAML.read_text() + "shapes_per_updat: 8\n")
    code, _, stderr = _run(capsys, "--config", config, "--dry_run")
    assert code == 2
    assert stderr.strip() == (f"cad-recode rl: error: {config}: unknown key 'shapes_per_updat' "
                              "(did you mean 'shapes_per_update'?)")


def test_a_folder_that_is_no_model_is_refused(inputs, tmp_path, capsys):
    data, _ = inputs
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    code, _, stderr = _run(capsys, "--config", TINY_YAML, "--start_model", empty, "--data_dir", data,
                           "--output_dir", tmp_path / "o")
    assert code == 2
    assert f"start_model {empty}:" in stderr and "not a trained CAD-Recode model" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_mesh_folder_run_with_iou_input_through_the_shim(inputs, tmp_path):
    """Your own meshes, no programs: two STL boxes, reward iou_input, one update, via train_cad_recode_rl.py."""
    _, start = inputs
    parts = tmp_path / "parts"
    parts.mkdir()
    for i, extents in enumerate([(80, 80, 40), (60, 90, 30)]):
        trimesh.creation.box(extents=extents).export(parts / f"part{i}.stl")
    out = tmp_path / "out"
    command = [sys.executable, str(REPO / "train_cad_recode_rl.py"), "--config", str(TINY_YAML),
               "--start_model", str(start), "--data_dir", "null", "--mesh_dir", str(parts), "--reward", "iou_input",
               "--output_dir", str(out), "--max_updates", "1", "--shapes_per_update", "2", "--num_generations", "2",
               "--top_k", "1", "--max_new_tokens", "100", "--val_num_samples", "1", "--report_to", "none"]
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rl: 1 updates" in result.stdout
    records = read_train_log(out)
    assert [r["step"] for r in records] == [1] and 0.0 < records[0]["val_iou"] <= 1.0
    assert (out / "model.safetensors").is_file() and (out / "rl_curves.png").is_file()


def test_the_readme_custom_reward_loads_by_module_and_scores(tmp_path, monkeypatch, capsys):
    """The README's own-reward example, imported as module:attribute, scores a cube against itself 10; a name that
    does not import is a one-line error."""
    import re

    import numpy as np

    from cad_recode.rl.inputs import resolve_reward
    from cad_recode.rl.rewards import RewardTarget

    readme = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(# my_rewards\.py\n.*?)```", readme, re.S).group(1)
    (tmp_path / "my_rewards.py").write_text(example)
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = resolve_reward("my_rewards:volume_match")
    unit = trimesh.creation.box(extents=(2, 2, 2))  # the model frame
    target = RewardTarget(points=np.asarray(unit.vertices), mesh=unit, watertight=True)
    assert reward.name == "volume_match"
    assert reward(trimesh.creation.box(extents=(200, 200, 200)), target) == pytest.approx(10.0)  # program units
    assert reward(None, target) == -10.0
    code, _, stderr = _run(capsys, "--config", TINY_YAML, "--reward", "no_such_module:x", "--dry_run")
    assert code == 2 and "reward 'no_such_module:x' cannot be imported" in stderr
