"""RLConfig: every setting of an RL run; YAML keys = fields = ``cad-recode rl`` flags (design.md §5).

The same machinery as the training config (:mod:`cad_recode.config`): each field
carries its help text, ``__post_init__`` checks every value, an unknown key is a
one-line error naming the closest valid one, and a flag overrides the YAML.
The defaults are ``configs/rl_config_lora.yaml`` (Qwen3-1.7B-Base + LoRA on a GPU) but for its data_dir;
the recipe's defaults follow cadrille (design.md §2) where they are not measured here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from cad_recode import defaults
from cad_recode.config import CHOICES as TRAIN_CHOICES
from cad_recode.config import RunOutputs, config_error, config_field, require, require_choice

IMITATION_SOURCES = ("samples", "fit")  # where self-imitation takes programs from (cad_recode.rl.imitation)

REWARD_HELP = ("iou_gt (IoU with the ground-truth solid of a prepared dataset), iou_input (IoU with the input "
               "mesh itself; a mesh that is not watertight falls back to cd_input), cd_input (Chamfer distance to "
               "the input points, mapped to [0, 10]), or 'package.module:name' for your own reward callable")


@dataclass
class RLConfig(RunOutputs):
    """Every setting of an RL run. Defaults: Qwen3-1.7B-Base + LoRA, from a LoRA training run, on one GPU."""

    # --- Start model ---
    start_model: str = config_field(
        "checkpoints_qwen3_lora",
        "The trained model RL starts from: a training output_dir (its merged_model/ when present), a merged or "
        "full model folder, or a LoRA adapter folder (its base from base_model or the adapter's record).",
    )
    base_model: str | None = config_field(
        None, "Base model of an adapter-only start_model, when the adapter does not record it (else null).",
    )
    torch_dtype: str = config_field(
        "auto", "dtype of the LM weights: auto (bfloat16 on a GPU, float32 on the CPU), bfloat16, float16, float32.",
    )
    gradient_checkpointing: bool = config_field(
        False, "Recompute activations in the backward pass: less memory for about 30 percent more time.",
    )

    # --- Method ---
    finetune_method: str = config_field(
        "lora",
        "lora: a new LoRA adapter (and the projector) on the start model. qlora: the same on the start model "
        "loaded in 4-bit. full: every weight of the start model trained.",
    )
    use_qlora: bool = config_field(False, "The guide's switch: true makes finetune_method qlora.")
    load_in_4bit: bool = config_field(False, "Load the start model in 4-bit; true means QLoRA, like use_qlora.")
    bnb_4bit_compute_dtype: str = config_field("bfloat16", "QLoRA: dtype the 4-bit layers compute in.")
    bnb_4bit_quant_type: str = config_field("nf4", "QLoRA: 4-bit data type, nf4 or fp4.")
    bnb_4bit_use_double_quant: bool = config_field(True, "QLoRA: also quantize the quantization constants.")

    # --- LoRA ---
    lora_r: int = config_field(defaults.LORA_R, "LoRA rank of the RL adapter.")
    lora_alpha: int = config_field(defaults.LORA_ALPHA, "LoRA scaling numerator (update scaled by alpha / r).")
    lora_dropout: float = config_field(
        0.0, "Dropout on the LoRA branch; 0 keeps the first PPO pass's ratio exactly 1.",
    )
    lora_target_modules: list[str] = config_field(
        list(defaults.LORA_TARGET_MODULES), "Linear layers of the LM that get LoRA adapters.",
    )

    # --- Auto-merge (LoRA and QLoRA runs) ---
    auto_merge_lora: bool = config_field(True, "Write checkpoint-N/merged_model/ (start model + RL adapter).")
    auto_merge_final: bool = config_field(True, "Write OUTPUT_DIR/merged_model/, the model inference prefers.")
    keep_lora_only: bool = config_field(
        True, "Keep the adapter files in every checkpoint-N/ (false keeps only merged_model/: not resumable).",
    )
    keep_lora_final: bool = config_field(True, "Keep the final adapter files in OUTPUT_DIR.")
    merge_final_only: bool = config_field(False, "Merge only at the end: no checkpoint-N/merged_model/.")

    # --- Data ---
    data_dir: str | None = config_field(
        None, "A prepared dataset (`cad-recode data prepare`): programs give ground-truth solids (reward iou_gt).",
    )
    mesh_dir: str | None = config_field(
        None, "Or a folder of your own meshes / STEP files without programs (reward iou_input or cd_input).",
    )
    split: str = config_field("train", "The prepared dataset's split RL samples from.")
    families: list[str] = config_field([], "Only these families of a labelled prepared dataset (empty: all).")
    limit: int | None = config_field(None, "Use at most this many inputs (null: all).")
    reward: str = config_field("iou_gt", REWARD_HELP)

    # --- Rollouts ---
    num_generations: int = config_field(16, "Programs sampled per input (the group size G; cadrille: 16).")
    top_k: int = config_field(4, "Samples per group trained on: those with the largest |advantage| (cadrille: 4).")
    temperature: float = config_field(1.0, "Sampling temperature of the rollouts (cadrille: 1.0).")
    top_p: float | None = config_field(None, "Nucleus sampling of the rollouts; null = off.")
    max_new_tokens: int = config_field(defaults.MAX_NEW_TOKENS, "Longest sampled program, in tokens.")
    grammar: bool = config_field(True, "Constrain sampled programs to the program grammar, as inference does.")
    runaway_factor: float = config_field(
        2.0, "End a sample once half its group finished and it is this many times longer; 0 = never.",
    )
    generation_batch_size: int = config_field(
        4, "Inputs per generate call (x num_generations rows); the sandbox runs one chunk while the next generates.",
    )
    overlap_sandbox: bool = config_field(
        True, "Run programs and rewards of one chunk in a thread while the next chunk generates.",
    )
    sandbox_workers: int = config_field(1, "Sandbox worker processes per RL process.")
    hard_example_threshold: float | None = config_field(
        9.5,
        "Hard-example mining: an input whose samples all score at least this is solved and not drawn again; "
        "null = never skip.",
    )

    # --- Update ---
    shapes_per_update: int = config_field(
        32, "Inputs (groups) per policy update, over all processes (16-64: one shape per update is a random walk).",
    )
    ppo_epochs: int = config_field(3, "Passes over an update's samples (cadrille: 3).")
    clip_eps: float = config_field(0.1, "PPO clip range of the probability ratio (cadrille: 0.1).")
    kl_beta: float = config_field(0.0, "Weight of the KL term to the start policy; 0 = none (cadrille).")
    policy_coef: float = config_field(
        1.0, "Weight of the clipped policy loss; 0 leaves only the anchor and self-imitation terms (expert iteration).",
    )
    micro_batch_size: int = config_field(8, "Sequences per forward/backward; gradients accumulate over an update.")
    learning_rate: float = config_field(3e-5, "AdamW learning rate (cadrille: 3e-5).")
    projector_learning_rate: float | None = config_field(None, "Learning rate of the point projector; null = learning_rate.")
    weight_decay: float = config_field(0.0, "AdamW weight decay.")
    max_grad_norm: float = config_field(0.1, "Gradient clipping norm (cadrille: 0.1); 0 disables clipping.")
    lr_scheduler_type: str = config_field("constant", "Learning rate schedule after warmup (transformers' names).")
    warmup_steps: int = config_field(0, "Updates of linear warmup.")
    max_updates: int = config_field(200, "Policy updates to run.")

    # --- Anchor (replayed programs) ---
    anchor_data_dir: str | None = config_field(
        None,
        "A prepared dataset with programs (e.g. the start model's training data) replayed as SFT loss in every "
        "update, so families RL's inputs never show are kept (PPO-ptx); null = off.",
    )
    anchor_split: str = config_field("train", "The anchor dataset's split.")
    anchor_families: list[str] = config_field([], "Only these families of a labelled anchor dataset (empty: all).")
    anchor_per_update: int = config_field(16, "Replayed programs per update, over all processes.")
    anchor_coef: float = config_field(1.0, "Weight of the replayed programs' cross-entropy against the policy loss.")
    anchor_by_family: bool = config_field(
        False, "Draw every family of a labelled anchor dataset as often as any other, not by its share of the data.",
    )
    anchor_rollouts: int = config_field(
        0,
        "Anchor shapes rolled out per update beside RL's own inputs (over all processes), scored by the reward "
        "against their truth solids, so greedy output on the other families is rewarded too; 0 = none.",
    )

    # --- Self-imitation ---
    imitation_coef: float = config_field(
        0.0,
        "Weight of the cross-entropy of the best program found for each input (its samples, its outline fits) "
        "when it beats what greedy decoding writes by imitation_margin; 0 = off (cad_recode.rl.imitation).",
    )
    imitation_margin: float = config_field(
        0.5, "Reward by which the best program found must beat greedy's to be imitated (0.5 = 0.05 IoU).",
    )
    imitation_sources: list[str] = config_field(
        ["samples", "fit"], "Where imitated programs come from: samples (the group's), fit (the points' outline fits).",
    )

    # --- Validation ---
    eval_steps: int = config_field(10, "Updates between greedy validations (IoU, IR, reward); 0 = only at the end.")
    val_num_samples: int = config_field(32, "Validation inputs, fixed for the whole run.")
    val_split: str = config_field("val", "The prepared dataset's validation split.")
    val_mesh_dir: str | None = config_field(
        None, "Validation meshes for a mesh_dir run; null = the first val_num_samples training meshes.",
    )

    # --- Saving and logging ---
    output_dir: str = config_field("checkpoints_qwen3_lora_rl", "Run folder: checkpoint-N/, adapter, merged_model/, logs.")
    overwrite_output_dir: bool = config_field(False, "Allow output_dir to hold another run (replaced).")
    save_steps: int = config_field(20, "Write checkpoint-N/ every this many updates.")
    save_total_limit: int | None = config_field(3, "Keep only the newest this many checkpoints; null = all.")
    logging_steps: int = config_field(1, "Log every this many updates.")
    report_to: str = config_field("tensorboard", "tensorboard or none (train_log.jsonl is always written).")
    resume_from_checkpoint: str | None = config_field(
        None, "Continue from checkpoint-N/ (a folder), or 'auto' for the newest complete one in output_dir.",
    )

    # --- Run ---
    seed: int = config_field(42, "Seed of input order, point draws and sampling (each update reseeds from it).")
    dry_run: bool = config_field(False, "Print the plan (model, trainable parameters, samples per update); run nothing.")

    def _check_values(self) -> None:
        for key, choices in CHOICES.items():
            require_choice(self, key, choices)
        for key in ("lora_r", "lora_alpha", "num_generations", "top_k", "temperature", "max_new_tokens",
                    "generation_batch_size", "sandbox_workers", "shapes_per_update", "ppo_epochs", "clip_eps",
                    "micro_batch_size", "learning_rate", "max_updates", "val_num_samples", "save_steps",
                    "logging_steps", "anchor_per_update"):
            require(self, key, getattr(self, key) > 0, "must be > 0")
        for key in ("kl_beta", "policy_coef", "anchor_coef", "anchor_rollouts", "imitation_coef", "imitation_margin",
                    "weight_decay", "max_grad_norm", "warmup_steps", "eval_steps", "seed"):
            require(self, key, getattr(self, key) >= 0, "must be >= 0")
        require(self, "lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)")
        require(self, "runaway_factor", self.runaway_factor == 0 or self.runaway_factor > 1, "must be 0 (off) or > 1")
        if self.top_p is not None:
            require(self, "top_p", 0 < self.top_p <= 1, "must be in (0, 1] (or null)")
        for key in ("limit", "save_total_limit", "projector_learning_rate"):
            if getattr(self, key) is not None:
                require(self, key, getattr(self, key) > 0, "must be > 0 (or null)")
        for key in ("start_model", "output_dir", "reward", "split", "anchor_split"):
            require(self, key, bool(getattr(self, key).strip()), "must not be empty")
        require(self, "lora_target_modules", bool(self.lora_target_modules), "must name at least one module")
        if self.data_dir is not None and self.mesh_dir is not None:
            raise config_error(("data_dir", "mesh_dir"), "data_dir and mesh_dir are both set; RL reads one "
                               "source: a prepared dataset (data_dir) or a folder of meshes (mesh_dir)")
        if self.anchor_families and self.anchor_data_dir is None:
            raise config_error(("anchor_families", "anchor_data_dir"),
                               "anchor_families selects replayed programs, but anchor_data_dir is not set")
        if self.anchor_by_family and self.anchor_data_dir is None:
            raise config_error(("anchor_by_family", "anchor_data_dir"),
                               "anchor_by_family balances the anchor's families, but anchor_data_dir is not set")
        if self.anchor_rollouts and self.anchor_data_dir is None:
            raise config_error(("anchor_rollouts", "anchor_data_dir"),
                               "anchor_rollouts rolls out shapes of the anchor data, but anchor_data_dir is not set")
        anchored = self.anchor_data_dir is not None and self.anchor_coef > 0
        if self.policy_coef == 0 and self.imitation_coef == 0 and not anchored:
            raise config_error(("policy_coef", "imitation_coef"), "policy_coef is 0 and there is no imitation or "
                               "anchor term: nothing would train; set imitation_coef (or policy_coef) above 0")
        unknown = [source for source in self.imitation_sources if source not in IMITATION_SOURCES]
        not_known = f" (not {', '.join(unknown)})" if unknown else ""
        require(self, "imitation_sources", bool(self.imitation_sources) and not unknown,
                f"must list some of {', '.join(IMITATION_SOURCES)}{not_known}")
        if self.top_k > self.num_generations:
            raise config_error(("top_k", "num_generations"),
                               f"top_k ({self.top_k}) must be <= num_generations ({self.num_generations})")


# train's choices, less the SFT-only key (overflow of long programs)
CHOICES = {key: choices for key, choices in TRAIN_CHOICES.items() if key in {f.name for f in fields(RLConfig)}}
RLConfig.CHOICES = CHOICES
RLConfig.YAML_TITLE = "cad-recode RL config"
RLConfig.SECTIONS = (
    ("Start model", "start_model"),
    ("Method", "finetune_method"),
    ("LoRA", "lora_r"),
    ("Auto-merge (LoRA and QLoRA runs)", "auto_merge_lora"),
    ("Data", "data_dir"),
    ("Rollouts", "num_generations"),
    ("Update", "shapes_per_update"),
    ("Anchor (replayed programs)", "anchor_data_dir"),
    ("Self-imitation", "imitation_coef"),
    ("Validation", "eval_steps"),
    ("Saving and logging", "output_dir"),
    ("Run", "seed"),
)


def load_rl_config(path=None, overrides=None, **kwargs) -> RLConfig:
    """Defaults, the YAML at ``path``, then ``overrides`` (flags): an :class:`RLConfig` or a one-line UsageError."""
    from cad_recode.config import load_config

    return load_config(path, overrides, cls=RLConfig, **kwargs)
