"""CADRecodeForCausalLM: a point encoder in front of any Hugging Face causal LM.

Sequence layout (design.md §2):

    [P point embeddings] + <|im_start|> + code + <|endoftext|>

The dataset gives ``input_ids = [im_start] + code + [eos]`` with
``labels[0] = -100``; ``forward`` prepends the point embeddings, ones in the
attention mask and -100 labels for them, then hands everything to the LM, whose
own loss shifts the labels. So the loss falls on the code and the end token only.

The config nests the LM's own config as ``text_config`` (any model_type the
Auto classes know: qwen3, qwen2, llama, ...), so ``save_pretrained`` writes one
``config.json`` and ``AutoModelForCausalLM.from_pretrained(dir)`` rebuilds the
whole model after ``import cad_recode.model`` (the Auto registration happens at
import). The LM's tied input/output embeddings stay tied: the wrapper collects
the LM's tie map under the ``lm.`` prefix, and the weight is saved once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoConfig, AutoModelForCausalLM, GenerationConfig, GenerationMixin, LogitsProcessorList, PreTrainedModel,
    StoppingCriteriaList,
)
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec

from cad_recode import defaults
from cad_recode.errors import UsageError
from cad_recode.model.encoder import NUM_FOURIER_FREQUENCIES, PointEncoder
from cad_recode.model.tokenizer import CodeTokens

IGNORE_INDEX = -100
DEFAULT_MAX_NEW_TOKENS = defaults.MAX_NEW_TOKENS
DEFAULT_NUM_POINT_TOKENS = defaults.NUM_POINT_TOKENS


class CADRecodeConfig(PreTrainedConfig):
    """``text_config``: the wrapped LM's config; ``num_point_tokens``: points per shape after FPS;
    ``num_surface_points``: surface samples drawn before FPS (training and inference must agree)."""

    model_type = "cad_recode"
    sub_configs_defaults = {"text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3")}

    text_config: dict | PreTrainedConfig | None = None
    num_point_tokens: int = DEFAULT_NUM_POINT_TOKENS
    num_surface_points: int = defaults.NUM_SURFACE_POINTS
    num_fourier_frequencies: int = NUM_FOURIER_FREQUENCIES
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # transformers reads the tie flag of every PreTrainedModel from its own config;
        # mirror the LM's flag so the top-level view agrees with the nested one.
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))


def code_generation_config(tokens: CodeTokens, **overrides) -> GenerationConfig:
    """Greedy, at most 768 new tokens, stop at <|endoftext|> (design.md §2); ``overrides`` that are None are ignored."""
    settings = dict(
        max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
        do_sample=False,
        num_beams=1,
        eos_token_id=tokens.end_id,
        pad_token_id=tokens.pad_id,
        bos_token_id=None,
    )
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if not settings["do_sample"]:
        # Sampling knobs are meaningless (and warned about) in greedy mode.
        for key in ("temperature", "top_p", "top_k"):
            settings.pop(key, None)
    return GenerationConfig(**settings)


@dataclass
class PromptBatch:
    """What ``generate`` needs: prompt embeddings and their attention mask."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor


class CADRecodeForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = CADRecodeConfig
    config: CADRecodeConfig
    base_model_prefix = "cad_recode"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    # The LM checks its own attention backend; the wrapper must not veto it.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Loaded in bf16/fp16, the projector still computes in fp32 (design.md §2).
    _keep_in_fp32_modules_strict = ["point_encoder"]

    def __init__(self, config: CADRecodeConfig, lm: PreTrainedModel | None = None):
        super().__init__(config)
        self.point_encoder = PointEncoder(config.text_config.hidden_size, config.num_fourier_frequencies)
        if lm is None:
            lm = AutoModelForCausalLM.from_config(config.text_config)
        else:
            # An already initialized (e.g. pretrained) LM: tell post_init not to re-initialize it.
            for module in lm.modules():
                module._is_hf_initialized = True
        self.lm = lm
        self.post_init()
        # A tied output head is not saved (it is the input embedding). Listing it here is how the
        # Trainer knows, on resume, to re-tie it instead of warning "missing keys lm_head".
        self._keys_to_ignore_on_save = set(getattr(self, "all_tied_weights_keys", None) or ())

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_lm(cls, lm: PreTrainedModel, num_point_tokens: int = DEFAULT_NUM_POINT_TOKENS,
                num_surface_points: int = defaults.NUM_SURFACE_POINTS) -> CADRecodeForCausalLM:
        """Wrap an existing causal LM (random or pretrained, quantized or not) with a fresh fp32 projector."""
        config = CADRecodeConfig(
            text_config=lm.config,
            num_point_tokens=num_point_tokens,
            num_surface_points=num_surface_points,
            # The config setter pushes these down to text_config; keep the LM's own choice.
            attn_implementation=lm.config._attn_implementation,
            experts_implementation=lm.config._experts_implementation,
        )
        model = cls(config, lm=lm)
        model.point_encoder.to(device=lm.get_input_embeddings().weight.device, dtype=torch.float32)
        # PEFT records this as the adapter's base_model_name_or_path.
        model.name_or_path = lm.name_or_path
        # Quantization state lives on the LM; PEFT and the Trainer look for it on the top model.
        for attr in ("hf_quantizer", "is_loaded_in_4bit", "is_loaded_in_8bit", "quantization_method"):
            if hasattr(lm, attr):
                setattr(model, attr, getattr(lm, attr))
        return model

    @property
    def dtype(self) -> torch.dtype:
        # The LM's dtype, not the first parameter's: that is the fp32 projector, and
        # save_pretrained records self.dtype, so a bf16 export would reload as fp32.
        return self.lm.dtype

    @property
    def is_gradient_checkpointing(self) -> bool:
        # PEFT (get_peft_model) still reads this old name, which transformers 5 deprecates with a
        # FutureWarning on every LoRA run; answer it with the new property, silently.
        return self.is_activation_checkpointing

    def save_pretrained(self, *args, **kwargs):
        # The nested LM config records the LM's dtype too, so both levels of config.json agree.
        self.config.text_config.dtype = self.lm.dtype
        return super().save_pretrained(*args, **kwargs)

    # -- embeddings (delegated so resize/tie/PEFT helpers find them) ----------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.lm.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module | None:
        return self.lm.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm.set_output_embeddings(value)

    # -- forward -----------------------------------------------------------------------

    def embed_points(self, points: torch.Tensor) -> torch.Tensor:
        """(B, P, 3) -> (B, P, hidden) in the LM's embedding dtype."""
        embed_weight = self.get_input_embeddings().weight
        encoder_device = next(self.point_encoder.parameters()).device
        return self.point_encoder(points.to(encoder_device)).to(device=embed_weight.device, dtype=embed_weight.dtype)

    def prepend_points(
        self,
        points: torch.Tensor,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Put the point embeddings in front; extend the mask with ones and the labels with -100."""
        if points.ndim != 3 or points.shape[1] != self.config.num_point_tokens:
            raise ValueError(
                f"points must have shape (batch, {self.config.num_point_tokens}, 3) for this model "
                f"(config.num_point_tokens), got {tuple(points.shape)}"
            )
        point_embeds = self.embed_points(points)
        batch, num_points = point_embeds.shape[:2]
        if inputs_embeds.shape[0] != batch:
            raise ValueError(f"points batch {batch} != token batch {inputs_embeds.shape[0]}")
        device = inputs_embeds.device
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=device)
        point_mask = torch.ones(batch, num_points, dtype=attention_mask.dtype, device=device)
        attention_mask = torch.cat([point_mask, attention_mask], dim=1)
        if labels is not None:
            point_labels = torch.full((batch, num_points), IGNORE_INDEX, dtype=labels.dtype, device=labels.device)
            labels = torch.cat([point_labels, labels], dim=1)
        return torch.cat([point_embeds, inputs_embeds], dim=1), attention_mask, labels

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        points: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ):
        """Training: ``points`` (B,P,3) + ``input_ids``/``labels`` (B,T). Generation steps: ids or embeds only.

        Extra keyword arguments (cache, use_cache, position_ids, logits_to_keep,
        num_items_in_batch, ...) go to the LM unchanged. Logits and loss cover
        P + T positions; the loss is the LM's own shifted cross-entropy.
        """
        if points is not None:
            if inputs_embeds is None:
                if input_ids is None:
                    raise ValueError("points need input_ids or inputs_embeds to follow them")
                inputs_embeds = self.get_input_embeddings()(input_ids)
            inputs_embeds, attention_mask, labels = self.prepend_points(points, inputs_embeds, attention_mask, labels)
            input_ids = None
        return self.lm(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs
        )

    # -- generation --------------------------------------------------------------------

    def build_prompt(self, points: torch.Tensor, tokens: CodeTokens) -> PromptBatch:
        """[points] + <|im_start|> as embeddings; every prompt has the same length, so no padding."""
        embed = self.get_input_embeddings()
        start = torch.full((points.shape[0], 1), tokens.start_id, dtype=torch.long, device=embed.weight.device)
        inputs_embeds, attention_mask, _ = self.prepend_points(points, embed(start))
        return PromptBatch(inputs_embeds, attention_mask)

    @torch.no_grad()
    def generate_ids(
        self,
        points: torch.Tensor,
        tokens: CodeTokens | object,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        num_candidates: int = 1,
        do_sample: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        stopping_criteria: list | None = None,
        logits_processor: list | None = None,
    ) -> torch.LongTensor:
        """Generate code token ids for (B, P, 3) points -> (B * num_candidates, L).

        Rows are grouped per shape (candidates of shape 0 first). A row that
        stopped early is padded with the pad id after its <|endoftext|>. Several
        candidates per shape need ``do_sample``; for best-of-N over several point
        draws pass the draws as a batch instead. ``stopping_criteria``: extra
        ``transformers.StoppingCriteria`` (e.g. :class:`cad_recode.model.runaway.RunawayStop`);
        ``logits_processor``: extra ``transformers.LogitsProcessor`` objects (e.g. the program grammar of
        :mod:`cad_recode.model.constrained`).
        """
        tokens = CodeTokens.from_any(tokens)
        if num_candidates > 1 and not do_sample:
            raise UsageError(
                f"num_candidates={num_candidates} with greedy decoding gives {num_candidates} identical programs; "
                "set do_sample=True or pass several point draws as a batch"
            )
        config = code_generation_config(
            tokens,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            num_return_sequences=num_candidates,
        )
        prompt = self.build_prompt(points, tokens)
        # Called mid-training too (generation-based eval): dropout off so greedy stays greedy.
        was_training = self.training
        self.eval()
        try:
            # Decoder-only generate() given only inputs_embeds returns just the new tokens.
            return self.generate(
                inputs_embeds=prompt.inputs_embeds, attention_mask=prompt.attention_mask, generation_config=config,
                stopping_criteria=StoppingCriteriaList(stopping_criteria or []),
                logits_processor=LogitsProcessorList(logits_processor or []),
            )
        finally:
            self.train(was_training)

    def generate_code(self, points: torch.Tensor, tokenizer, **generate_kwargs) -> list[str]:
        """``generate_ids`` then decode each row up to its first <|endoftext|>."""
        tokens = CodeTokens.from_tokenizer(tokenizer)
        rows = self.generate_ids(points, tokens, **generate_kwargs)
        return [tokenizer.decode(ids, skip_special_tokens=False) for ids in tokens.strip_rows(rows)]


def register_auto_classes() -> None:
    """Make ``AutoConfig``/``AutoModelForCausalLM`` know ``model_type = "cad_recode"`` (idempotent)."""
    try:
        AutoConfig.register(CADRecodeConfig.model_type, CADRecodeConfig)
    except ValueError:  # already registered (module re-imported)
        pass
    try:
        AutoModelForCausalLM.register(CADRecodeConfig, CADRecodeForCausalLM)
    except ValueError:
        pass
