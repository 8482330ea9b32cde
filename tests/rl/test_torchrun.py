"""``torchrun --nproc_per_node 2`` on the CPU (gloo): both ranks end with the same weights; only rank 0 writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import rl_artifacts as ra  # noqa: E402

from cad_recode.geometry.shapes import example_program  # noqa: E402
from cad_recode.model.runlog import read_train_log  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHILD = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    out, record_dir = os.path.abspath(sys.argv[2]), sys.argv[3]
    rank = int(os.environ["RANK"])
    writes = []

    def audit(event, args):  # every file this rank creates, opens for writing, moves or deletes under out
        if event == "open" and isinstance(args[0], str) and args[1] and any(c in args[1] for c in "wax+"):
            path = args[0]
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree"):
            path = args[0] if isinstance(args[0], str) else os.fspath(args[0])
        else:
            return
        if os.path.abspath(path).startswith(out):
            writes.append(os.path.relpath(os.path.abspath(path), out))

    sys.addaudithook(audit)
    from cad_recode.rl.config import load_rl_config
    from cad_recode.rl.loop import run_rl

    def dump(run, update, record):
        if update == run.cfg.max_updates:
            model = run.accelerator.unwrap_model(run.model)
            torch.save({k: v.detach().clone() for k, v in model.named_parameters()}, f"{record_dir}/weights_{rank}.pt")

    run_rl(load_rl_config(None, json.loads(sys.argv[1])), on_update=dump)
    with open(f"{record_dir}/writes_{rank}.json", "w") as f:
        json.dump(writes, f)
    """
)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sandbox):
    root = tmp_path_factory.mktemp("rl_inputs")
    cube = sandbox.run(example_program("cube")).to_trimesh()
    return ra.prepared_boxes(root / "data"), ra.start_model(cube, root / "start")


def test_two_cpu_processes_under_torchrun(inputs, tmp_path):
    """Each rank samples its half of an update's inputs and of the anchor's shapes and replays its half of the
    anchor's programs; DDP averages the gradients (the anchor's, accumulated without sync, included), so the
    ranks end equal.
    Rank 0 alone writes the run folder (rank 1's audit sees no write under output_dir), one log line per update."""
    data, start = inputs
    out, record = tmp_path / "run", tmp_path / "record"
    record.mkdir()
    settings = ra.settings(data, start, out, max_updates=2, save_steps=1, eval_steps=2, report_to="tensorboard",
                           temperature=2.0,  # varied samples: groups with different rewards, so weights move
                           anchor_data_dir=str(data), anchor_per_update=4,  # each rank replays 2, synced by DDP
                           anchor_rollouts=2)  # and rolls out one anchor shape
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(script), json.dumps(settings), str(out), str(record)]
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # own group: a hung rank dies with the launcher
    try:
        _, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.communicate()
        raise
    assert launcher.returncode == 0, stderr[-3000:]
    w0, w1 = torch.load(record / "weights_0.pt"), torch.load(record / "weights_1.pt")
    assert w0.keys() == w1.keys() and w0
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    from safetensors.torch import load_file

    before = load_file(start / "model.safetensors")
    assert any(not torch.equal(before[k], w0[k]) for k in before if k in w0)  # the update did something
    assert json.loads((record / "writes_1.json").read_text()) == []
    rank0 = json.loads((record / "writes_0.json").read_text())
    assert "train_log.jsonl" in rank0 and any(w.startswith("checkpoint-1/") for w in rank0)
    assert {"model.safetensors", "checkpoint-1", "rl_curves.png", "runs"} <= {p.name for p in out.iterdir()}
    records = read_train_log(out)
    assert [r["step"] for r in records] == [1, 2]  # one line per update, not one per rank
    assert "val_iou" in records[1]
