"""Exact resume: an RL run SIGKILLed after update 3 and resumed repeats the uninterrupted run's rollouts and weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import rl_artifacts as ra  # noqa: E402

from cad_recode.errors import InputError  # noqa: E402
from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.model.run_folder import is_complete  # noqa: E402
from cad_recode.model.runlog import read_train_log  # noqa: E402
from cad_recode.rl.loop import run_rl  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[2]
# The child stalls (sleeps) after update STALL was logged and checkpointed, and waits to be killed.
CHILD = textwrap.dedent(
    """
    import sys, time
    import torch
    torch.set_num_threads(1)
    from cad_recode.rl.config import load_rl_config
    from cad_recode.rl.loop import run_rl
    stall = int(sys.argv[2])
    run_rl(load_rl_config(None, __import__("json").loads(sys.argv[1])),
           on_update=lambda run, update, record: time.sleep(3600) if update == stall else None)
    """
)
SETTINGS = dict(max_updates=5, save_steps=2, eval_steps=0, lora_dropout=0.0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sandbox):
    root = tmp_path_factory.mktemp("rl_inputs")
    cube = sandbox.run(example_program("cube")).to_trimesh()
    return ra.prepared_boxes(root / "data"), ra.start_model(cube, root / "start")


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    return env


def _by_update(output_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_train_log(output_dir)}  # a resumed run's later line for an update wins


def test_resume_after_sigkill_repeats_rollouts_and_parameters(inputs, tmp_path):
    """Kill after update 3 (checkpoint-2 complete), resume with 'auto': updates 3-5 sample the same programs
    (rollout digests, the anchor's shapes included), replay the same anchor programs, get the same rewards and
    losses, and end at the same weights as an uninterrupted run."""
    data, start = inputs
    settings = dict(SETTINGS, anchor_data_dir=str(data), anchor_per_update=2, anchor_rollouts=2)
    reference = tmp_path / "reference"
    run_rl(ra.rl_config(data, start, reference, **settings))
    expected = _by_update(reference)

    killed = tmp_path / "killed"
    log = tmp_path / "child.log"
    with open(log, "wb") as stream:
        child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(ra.settings(data, start, killed, **settings)),
                                  "3"], env=_child_env(), stdout=stream, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not (3 in _by_update(killed) and is_complete(killed / "checkpoint-2")):
            assert child.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the child run did not reach update 3"
            time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not (killed / "model.safetensors").exists()  # it never got to the end

    result = run_rl(ra.rl_config(data, start, killed, **settings, resume_from_checkpoint="auto"))
    assert result.resumed_from == killed / "checkpoint-2" and result.updates == 5
    resumed = _by_update(killed)
    assert sorted(resumed) == [1, 2, 3, 4, 5]
    for update in range(1, 6):
        assert resumed[update]["rollout_digest"] == expected[update]["rollout_digest"], update
        for key in ("reward_mean", "reward_std", "loss", "anchor_loss", "anchor_reward_mean"):
            assert resumed[update][key] == pytest.approx(expected[update][key], rel=1e-6, abs=1e-9), (update, key)
    a, b = load_file(reference / "model.safetensors"), load_file(killed / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-8)


def test_resume_refuses_a_checkpoint_of_another_start_model(inputs, tmp_path):
    data, start = inputs
    out = tmp_path / "run"
    run_rl(ra.rl_config(data, start, out, max_updates=2, save_steps=1, eval_steps=0))
    other = ra.rl_config(data, start, out, max_updates=3, finetune_method="lora",
                         resume_from_checkpoint=str(out / "checkpoint-1"))
    with pytest.raises(InputError, match="was made for finetune_method='full'"):
        run_rl(other)
