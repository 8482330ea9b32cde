"""Reinforcement learning (issue 18): the issue's three targets on the CPU, time-boxed, and the cd_input scale.

    python benchmarks/bench_rl.py cd_scale
    python benchmarks/bench_rl.py adapt --start runs/tiny/model --data runs/tiny/data --family stacked \
        --minutes 20 --test_limit 300 --workdir runs/bench_rl
    python benchmarks/bench_rl.py versus_sft --start runs/tiny/model --data runs/tiny/data --minutes 45 \
        --test_limit 300 --parallel --workdir runs/bench_rl
    python benchmarks/bench_rl.py cost --start runs/tiny/model --data runs/tiny/data --updates 3 \
        --workdir runs/bench_rl

- ``cd_scale``: how ``cd_input``'s ``10 exp(-CD / s)`` tracks ``10 IoU`` for several s, on shapes of
  the broad generator against copies whose literals are perturbed (the figures behind
  ``rewards.CD_REWARD_SCALE``).
- ``adapt`` (target 1, unlabeled adaptation): the training meshes of one family are exported as STL
  files (no programs), ``cad-recode rl`` runs on that folder with reward ``iou_input`` for the given
  minutes, and the start model and the result are evaluated greedily on the test split: IoU by
  family, with the paired difference and its standard error (an invalid output counts as IoU 0 in
  the pairing). Target: the family +5 points, every other family within 2.
- ``versus_sft`` (target 2): RL with ``iou_gt`` on the prepared data against continued SFT (the start
  run resumed from its last checkpoint with more steps), each for the same wall time; the same
  paired comparison, and IR. Target: RL no worse than SFT beyond one standard error, IR no higher.
  ``--parallel`` runs the two side by side, one core each.
- ``cost`` (target 3): ``cad-recode rl`` for a few updates with the sandbox overlapped with
  generation and without; the split of an update's time from the run's log, and the speed-up.

Each RL or SFT run is a subprocess with a wall-clock limit; when the limit ends it, the newest
complete checkpoint is evaluated. Everything is written under ``--workdir``; ``--json`` saves the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import machine_info, machine_line, mean_and_se  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "cad_recode.cli"]
RL_CONFIG = ROOT / "configs" / "rl_config_tiny.yaml"


# --------------------------------------------------------------------------- cd_scale


def _perturb(code: str, spread: float, rng: np.random.Generator) -> str:
    """Half of the literals after the import line scaled by 1 + N(0, spread), rounded."""
    head, _, body = code.partition("\n")

    def move(match: re.Match) -> str:
        value = float(match.group(1))
        return str(round(value * (1 + rng.normal(0, spread)))) if rng.random() < 0.5 else match.group(1)

    return head + "\n" + re.sub(r"(?<![\w.])(\d+(?:\.\d+)?)", move, body)


def cd_scale(args) -> dict:
    from cad_recode.data.generator.dataset import generate_dataset
    from cad_recode.geometry.metrics import CloudDistance, mesh_iou, protocol_cd
    from cad_recode.geometry.sampling import sample_surface
    from cad_recode.geometry.sandbox import Sandbox

    out = Path(args.workdir) / "cd_scale_programs"
    shutil.rmtree(out, ignore_errors=True)
    rng = np.random.default_rng(0)
    with Sandbox(workers=2) as sandbox:
        generate_dataset(out, args.num, seed=3, complexity="broad", progress=False, sandbox=sandbox, execute=False)
        codes = [p.read_text() for p in sorted(out.rglob("*.py"))][: args.num]
        spreads = (0.05, 0.15, 0.4)
        truths = sandbox.map(codes)
        candidates = sandbox.map([_perturb(c, s, rng) for c in codes for s in spreads])
    pairs = []
    for k, candidate in enumerate(candidates):
        truth = truths[k // len(spreads)]
        if not (candidate.ok and truth.ok):
            continue
        try:
            iou = mesh_iou(candidate.to_trimesh(), truth.to_trimesh())
        except ValueError:
            continue
        cloud = sample_surface(truth.to_trimesh(), 8192, seed=1)
        pairs.append((iou, protocol_cd(CloudDistance(cloud)(candidate.to_trimesh()))))
    iou, cd = np.array(pairs).T
    rmse = {s: float(np.sqrt(np.mean((10 * np.exp(-cd / s) - 10 * iou) ** 2))) for s in (2, 5, 10, 15, 30)}
    bins = [(lo, hi, float(np.median(cd[(iou >= lo) & (iou < hi)]))) for lo, hi in
            ((0, .3), (.3, .5), (.5, .7), (.7, .8), (.8, .9), (.9, .95), (.95, 1.01)) if ((iou >= lo) & (iou < hi)).any()]
    print(f"{len(pairs)} pairs; RMSE of 10 exp(-CD/s) against 10 IoU: "
          + ", ".join(f"s={s}: {v:.2f}" for s, v in rmse.items()))
    print("median CD x10^3 by IoU bin: " + ", ".join(f"[{lo}, {hi}): {m:.2f}" for lo, hi, m in bins))
    return {"pairs": len(pairs), "rmse": rmse, "median_cd_by_iou": bins}


# --------------------------------------------------------------------------- evaluation and pairing


def greedy_eval(model: Path, data: str, split: str, limit: int | None) -> dict[str, dict]:
    """id -> {iou (0 when invalid), valid}: one greedy program per test shape, no refinement."""
    from cad_recode.evaluate import evaluate
    from cad_recode.inference import CADRecoder, Decoding

    recoder = CADRecoder.from_pretrained(str(model), device="cpu", sandbox_workers=2)
    try:
        report = evaluate(recoder, data, split=split, limit=limit, decoding=Decoding(), batch_size=8, progress=False)
    finally:
        recoder.close()
    return {r["id"]: {"iou": float(r["iou"]) if r["valid"] and r["iou"] is not None else 0.0,
                      "valid": bool(r["valid"])} for r in report.rows}


def cached_eval(path: Path, model: Path, data: str, limit: int | None) -> dict[str, dict]:
    """``greedy_eval`` on the test split, kept in ``path`` so a rerun (or a run cut short) does not repeat it."""
    stamp = max((f.stat().st_mtime for f in Path(model).rglob("*.safetensors")), default=0.0)  # a new run's weights
    key = {"model": str(Path(model).resolve()), "weights_mtime": stamp, "data": str(data), "limit": limit}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["rows"]
    rows = greedy_eval(model, data, "test", limit)
    path.write_text(json.dumps({"key": key, "rows": rows}))
    return rows


def paired(before: dict, after: dict, ids: list[str]) -> dict:
    """Mean IoU before and after (percent), the mean paired difference and its standard error, IR."""
    a = np.array([before[i]["iou"] for i in ids]) * 100
    b = np.array([after[i]["iou"] for i in ids]) * 100
    diff, se = mean_and_se(b - a)
    return {"n": len(ids), "before": float(a.mean()), "after": float(b.mean()), "diff": diff, "se": se,
            "ir_before": 100 * float(np.mean([not before[i]["valid"] for i in ids])),
            "ir_after": 100 * float(np.mean([not after[i]["valid"] for i in ids]))}


def family_table(before: dict, after: dict, labels: dict[str, str]) -> dict[str, dict]:
    families = sorted({labels.get(i, "?") for i in before})
    table = {f: paired(before, after, [i for i in before if labels.get(i, "?") == f]) for f in families}
    table["all"] = paired(before, after, list(before))
    return table


def print_table(table: dict[str, dict], names: tuple[str, str]) -> None:
    print(f"| family | n | {names[0]} IoU % | {names[1]} IoU % | diff ± SE | IR % {names[0]} | IR % {names[1]} |")
    print("|---|---|---|---|---|---|---|")
    for family, r in table.items():
        print(f"| {family} | {r['n']} | {r['before']:.1f} | {r['after']:.1f} | {r['diff']:+.1f} ± {r['se']:.1f} "
              f"| {r['ir_before']:.1f} | {r['ir_after']:.1f} |")


# --------------------------------------------------------------------------- runs with a time limit


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_together(runs: dict[str, tuple[list[str], Path]], seconds: float, pin: bool = False) -> dict[str, dict]:
    """Run the commands at once (each its own process group) for at most ``seconds`` of wall time.

    At the limit each one still running gets SIGINT, then SIGKILL 60 s later. ``pin`` gives each
    command one core of its own (``taskset``, one OpenMP thread): two torch processes that share 2
    cores spin-wait on each other and both slow down many times over, so runs compared side by side
    get a core each. Each result's ``seconds`` is when that command ended.
    """
    started = time.perf_counter()
    running, results = {}, {}
    for core, (name, (command, log)) in enumerate(runs.items()):
        env = dict(os.environ)
        if pin:
            command = ["taskset", "-c", str(core % (os.cpu_count() or 1))] + command
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        out = open(log, "w")
        # SIGINT restored: a benchmark started in the background (nohup, &) ignores it, and so would its
        # children, which then ran on until the SIGKILL
        running[name] = (subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                          start_new_session=True, preexec_fn=_default_sigint), out, log)
    interrupted_at = None
    while running:
        elapsed = time.perf_counter() - started
        for name, (process, out, log) in list(running.items()):
            if process.poll() is not None:
                out.close()
                results[name] = {"returncode": process.returncode, "seconds": elapsed, "log": str(log),
                                 "interrupted": interrupted_at is not None}
                del running[name]
        if running and interrupted_at is None and elapsed >= seconds:
            interrupted_at = elapsed
            for process, _, _ in running.values():
                os.killpg(process.pid, signal.SIGINT)
        elif running and interrupted_at is not None and elapsed >= interrupted_at + 60:
            for process, _, _ in running.values():
                os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.5)
    return {name: results[name] for name in runs}


def run_for(command: list[str], seconds: float, log: Path) -> dict:
    """Run ``command`` alone for at most ``seconds``."""
    return run_together({"run": (command, log)}, seconds)["run"]


def newest_model(output_dir: Path) -> Path:
    """The finished run's folder, else its newest checkpoint-N (its merged_model/ is preferred on loading)."""
    if (output_dir / "merged_model").is_dir() or (output_dir / "config.json").is_file():
        return output_dir
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not checkpoints:
        raise SystemExit(f"{output_dir}: the run left no checkpoint; see its log")
    return checkpoints[-1]


def rl_command(args, output_dir: Path, **flags) -> list[str]:
    command = CLI + ["rl", "--config", str(args.rl_config), "--start_model", str(args.start),
                     "--output_dir", str(output_dir), "--overwrite_output_dir", "true"]
    for key, value in flags.items():
        command += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return command + list(args.rl_flag or [])


def export_family(data: str, family: str, out: Path) -> int:
    """The training meshes of ``family`` as STL files: inputs without programs."""
    import trimesh

    from cad_recode.data.labels import read_family_labels
    from cad_recode.data.shards import PreparedSplit

    labels = read_family_labels(data)
    split = PreparedSplit.open(data, "train")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    count = 0
    for index, item_id in enumerate(split.ids()):
        if labels.get(item_id) == family:
            record = split[index]
            trimesh.Trimesh(record["vertices"], record["faces"], process=False).export(out / f"{index}.stl")
            count += 1
    if not count:
        raise SystemExit(f"{data}: no training shape of family {family!r}")
    return count


def log_records(output_dir: Path) -> list[dict]:
    path = output_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- the targets


def adapt(args) -> dict:
    from cad_recode.data.labels import read_family_labels

    work = Path(args.workdir)
    meshes = work / "adapt_meshes"
    count = export_family(args.data, args.family, meshes)
    print(f"{count} training meshes of {args.family} exported to {meshes} (no programs)")
    before = cached_eval(work / "eval_start.json", Path(args.start), args.data, args.test_limit)
    out = work / "rl_adapt"
    command = rl_command(args, out, data_dir="null", mesh_dir=meshes, reward="iou_input")
    run = run_for(command, args.minutes * 60, work / "rl_adapt.log")
    model = newest_model(out)
    after = cached_eval(work / "eval_rl_adapt.json", model, args.data, args.test_limit)
    table = family_table(before, after, read_family_labels(args.data))
    print(f"RL on {args.family} meshes for {run['seconds'] / 60:.1f} min (model {model}):")
    print_table(table, ("start", "RL"))
    return {"family": args.family, "meshes": count, "run": run, "model": str(model), "table": table,
            "curve": log_records(out)}


def versus_sft(args) -> dict:
    from cad_recode.data.labels import read_family_labels

    work = Path(args.workdir)
    seconds = args.minutes * 60
    rl_out = work / "rl_labelled"
    sft_out = work / "sft_continued"
    shutil.rmtree(sft_out, ignore_errors=True)
    shutil.copytree(args.start, sft_out)  # the start run's folder: resumed from its newest checkpoint
    start_steps = max(int(c.name.split("-")[1]) for c in Path(args.start).glob("checkpoint-*"))
    sft_command = CLI + ["train", "--config", str(args.sft_config), "--data_dir", args.data, "--output_dir",
                         str(sft_out), "--resume_from_checkpoint", "auto", "--max_steps",
                         str(args.sft_max_steps or 2 * start_steps), "--save_steps", "100"]
    runs = {"rl": (rl_command(args, rl_out, data_dir=args.data, reward="iou_gt"), work / "rl_labelled.log"),
            "sft": (sft_command, work / "sft_continued.log")}
    if args.parallel:  # side by side, a core each: the same wall time on the same share of the machine
        done = run_together(runs, seconds, pin=True)
    else:
        done = {name: run_for(command, seconds, log) for name, (command, log) in runs.items()}
    rl_run, sft_run = done["rl"], done["sft"]
    start = cached_eval(work / "eval_start.json", Path(args.start), args.data, args.test_limit)
    rl = cached_eval(work / "eval_rl_labelled.json", newest_model(rl_out), args.data, args.test_limit)
    sft = cached_eval(work / "eval_sft_continued.json", newest_model(sft_out), args.data, args.test_limit)
    labels = read_family_labels(args.data)
    tables = {"rl_vs_sft": family_table(sft, rl, labels), "rl_vs_start": family_table(start, rl, labels),
              "sft_vs_start": family_table(start, sft, labels)}
    for name, table in tables.items():
        print(f"\n{name}:")
        print_table(table, tuple(name.split("_vs_")[::-1]))
    return {"rl_run": rl_run, "sft_run": sft_run, "parallel": args.parallel, "tables": tables,
            "rl_curve": log_records(rl_out), "sft_curve": log_records(sft_out)}


PARTS = ("generate", "sandbox", "reward", "update")


def time_split(records: list[dict]) -> dict:
    """Mean seconds per update of each part (the first update, with its warm-up, left out when there are more)."""
    rows = [r for r in records if "seconds_rollout" in r]
    rows = rows[1:] if len(rows) > 1 else rows
    if not rows:
        return {}
    mean = {part: float(np.mean([r[f"seconds_{part}"] for r in rows])) for part in PARTS}
    mean["rollout_wall"] = float(np.mean([r["seconds_rollout"] for r in rows]))
    mean["update_wall"] = mean["rollout_wall"] + mean["update"]  # what one update costs end to end
    mean["updates"] = len(rows)
    return mean


def overlap_speedup(args) -> dict:
    """Rollouts with the sandbox overlapped and serial, alternated in one process on the same inputs and seeds.

    The sampled programs are the same both ways (same seeds), so only the scheduling differs; the
    rounds alternate (overlap, serial, overlap, ...) so a change in the machine's load hits both.
    """
    import torch

    from cad_recode.geometry.sandbox import Sandbox
    from cad_recode.inference import CADRecoder
    from cad_recode.rl.rewards import get_reward
    from cad_recode.rl.rollouts import RolloutSettings, collect_groups, derived_seed
    from cad_recode.rl.sources import open_prepared

    recoder = CADRecoder.from_pretrained(str(args.start), device="cpu")
    items = open_prepared(args.data, "train", num_surface_points=recoder.num_surface_points,
                          limit=args.shapes * args.rounds)
    rows = []
    with Sandbox(workers=1) as sandbox, torch.no_grad():
        for r in range(args.rounds):
            indices = list(range(r * args.shapes, (r + 1) * args.shapes))
            for overlap in (True, False) if r % 2 == 0 else (False, True):
                settings = RolloutSettings(8, 1.0, None, 400, True, 2.0, 4, overlap, recoder.num_point_tokens)
                _, times = collect_groups(recoder.core, recoder.tokenizer, items, indices, settings, sandbox=sandbox,
                                          reward=get_reward("iou_gt"), seeds=lambda c: derived_seed(0, r, c),
                                          point_seed=lambda i: derived_seed(1, i), device=torch.device("cpu"))
                rows.append({"round": r, "overlap": overlap, "wall": times.wall, "generate": times.generate,
                             "sandbox": times.sandbox, "reward": times.reward, "tokens": times.tokens})
                print(f"round {r} overlap {overlap}: wall {times.wall:.1f} s (generate {times.generate:.1f}, "
                      f"sandbox {times.sandbox:.1f}, reward {times.reward:.2f}), {times.tokens} tokens")
    recoder.close()
    ratios = [next(x["wall"] for x in rows if x["round"] == r and not x["overlap"])
              / next(x["wall"] for x in rows if x["round"] == r and x["overlap"]) for r in range(args.rounds)]
    print(f"serial / overlapped rollout wall time per round: {', '.join(f'{q:.2f}' for q in ratios)}; "
          f"median {float(np.median(ratios)):.2f}x")
    return {"rows": rows, "ratios": ratios, "median": float(np.median(ratios))}


def cost(args) -> dict:
    """The split of an update's time from a short `cad-recode rl` run, then the overlap speed-up side by side."""
    work = Path(args.workdir)
    out = work / "rl_cost"
    command = rl_command(args, out, data_dir=args.data, reward="iou_gt", max_updates=args.updates,
                         overlap_sandbox=False, eval_steps=0, save_steps=10_000)
    run = run_for(command, args.minutes * 60, work / "rl_cost.log")
    split = time_split(log_records(out))
    print(f"{run['seconds']:.0f} s for {args.updates} updates (return code {run['returncode']}), sandbox not overlapped")
    if split:
        parts = sum(split[p] for p in PARTS)
        print(f"| part | seconds per update (mean of {split['updates']}) | share |\n|---|---|---|")
        for part in PARTS:
            print(f"| {part} | {split[part]:.2f} | {100 * split[part] / parts:.0f} % |")
    return {"run": run, "split": split, "overlap": overlap_speedup(args)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("target", choices=("cd_scale", "adapt", "versus_sft", "cost"))
    p.add_argument("--workdir", default="runs/bench_rl")
    p.add_argument("--start", help="the trained run RL starts from (e.g. runs/tiny/model)")
    p.add_argument("--data", help="its prepared dataset (e.g. runs/tiny/data)")
    p.add_argument("--family", help="adapt: the family whose training meshes RL sees")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock limit of each RL or SFT run")
    p.add_argument("--test_limit", type=int, default=300, help="test shapes evaluated (the issue asks >= 300)")
    p.add_argument("--updates", type=int, default=3, help="cost: policy updates per run")
    p.add_argument("--shapes", type=int, default=8, help="cost: inputs per rollout round (8 programs each)")
    p.add_argument("--rounds", type=int, default=4, help="cost: overlap/serial rounds, alternated")
    p.add_argument("--num", type=int, default=60, help="cd_scale: generated shapes")
    p.add_argument("--rl_config", default=str(RL_CONFIG))
    p.add_argument("--sft_config", default=str(ROOT / "configs" / "train_config_tiny.yaml"))
    p.add_argument("--sft_max_steps", type=int, default=None, help="versus_sft: continued SFT's max_steps")
    p.add_argument("--parallel", action="store_true", help="versus_sft: run RL and SFT at once, one core each")
    p.add_argument("--rl_flag", action="append", help="extra `cad-recode rl` argument (repeatable), e.g. "
                   "--rl_flag=--learning_rate --rl_flag=1e-5")
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    machine = machine_info("torch", "transformers", "peft")
    print(machine_line(machine))
    result = {"cd_scale": cd_scale, "adapt": adapt, "versus_sft": versus_sft, "cost": cost}[args.target](args)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "result": result}, indent=1,
                                              default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
