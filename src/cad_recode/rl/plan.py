"""``cad-recode rl --dry_run``: what a run would do, from the config alone (no weights loaded, nothing written).

It still resolves the start model (so a wrong folder is reported now, not after loading) and
checks the data source, and counts the work: programs sampled, sequences trained and optimizer
steps per update and in total.
"""

from __future__ import annotations

from dataclasses import dataclass

from cad_recode.rl.config import RLConfig


@dataclass
class RLPlan:
    start: str
    method: str
    source: str
    reward: str
    anchor: str
    imitation: str
    samples_per_update: int
    trained_per_update: int
    optimizer_steps: int
    total_samples: int
    output_dir: str

    def format(self) -> str:
        return "\n".join([
            "RL plan (dry run: nothing loaded or written)",
            f"  start model      {self.start}",
            f"  method           {self.method}",
            f"  inputs           {self.source}",
            f"  reward           {self.reward}",
            f"  anchor           {self.anchor}",
            f"  self-imitation   {self.imitation}",
            f"  per update       {self.samples_per_update} programs sampled, {self.trained_per_update} trained on",
            f"  optimizer steps  {self.optimizer_steps} in all",
            f"  programs in all  {self.total_samples} (fewer once inputs are solved)",
            f"  output_dir       {self.output_dir}",
        ])


def plan(cfg: RLConfig) -> RLPlan:
    from cad_recode.rl.inputs import check_data_source, resolve_reward
    from cad_recode.rl.policy import resolve_start

    check_data_source(cfg)
    resolve_reward(cfg.reward)
    source = resolve_start(cfg)
    method = cfg.finetune_method
    if cfg.uses_lora:
        method += f" (r={cfg.lora_r}, alpha={cfg.lora_alpha}, on {', '.join(cfg.lora_target_modules)})"
    inputs = (f"prepared dataset {cfg.data_dir} split {cfg.split}" if cfg.data_dir is not None
              else f"mesh folder {cfg.mesh_dir}")
    shapes = cfg.shapes_per_update + cfg.anchor_rollouts
    samples = shapes * cfg.num_generations
    return RLPlan(
        start=source.describe(), method=method, source=inputs, reward=cfg.reward, anchor=describe_anchor(cfg),
        imitation=describe_imitation(cfg),
        samples_per_update=samples, trained_per_update=shapes * cfg.top_k,
        optimizer_steps=cfg.max_updates * cfg.ppo_epochs, total_samples=cfg.max_updates * samples,
        output_dir=cfg.output_dir,
    )


def describe_anchor(cfg: RLConfig) -> str:
    """The anchor in words ("off" without anchor_data_dir; check_data_source has checked its folder)."""
    if cfg.anchor_data_dir is None:
        return "off"
    families = ", ".join(cfg.anchor_families) or "all families"
    if cfg.anchor_by_family:
        families += ", drawn evenly"
    source = f"{cfg.anchor_data_dir} (split {cfg.anchor_split}, {families})"
    parts = [f"{cfg.anchor_per_update} programs per update, SFT loss x {cfg.anchor_coef}"] if cfg.anchor_coef else []
    if cfg.anchor_rollouts:
        parts.append(f"{cfg.anchor_rollouts} shapes per update rolled out beside the inputs")
    return f"{source}: " + ("; ".join(parts) or "nothing replayed (anchor_coef 0, anchor_rollouts 0)")


def describe_imitation(cfg: RLConfig) -> str:
    """Self-imitation in words ("off" at imitation_coef 0)."""
    if not cfg.imitation_coef:
        return "off"
    return (f"the best of {' and '.join(cfg.imitation_sources)} per input, where it beats greedy's reward by "
            f"{cfg.imitation_margin}: SFT loss x {cfg.imitation_coef}")
