"""Training items from a prepared split: fresh model points per epoch + tokenized code.

Item protocol (CAD-Recode). For record ``r`` of the split at epoch ``e``:

- points: :func:`cad_recode.geometry.augment.augmented_model_points` on the stored
  mesh (surface sample, the scan defects of ``augmentation``: uneven density, a
  missing side, then bounding-box normalization, FPS, noise), seeded from
  ``(seed, e, r)``: deterministic, fresh every epoch, and the same whatever the
  DataLoader's worker count (a record repeated by a family mixture adds its copy
  number, so its copies see different points);
- ``input_ids = [<|im_start|>] + code_ids + [<|endoftext|>]``;
- ``labels`` = ``input_ids`` with the ``<|im_start|>`` position at -100, so the
  loss covers the code and the end token. The model prepends the point
  embeddings and their -100 labels itself.

``max_code_tokens`` bounds what the model must generate: code plus end token
(greedy decoding stops after 768 new tokens). Longer programs are dropped
(found by a length pass at construction; :attr:`PointCodeDataset.num_dropped`)
or, with ``overflow="truncate"``, cut to ``max_code_tokens`` code tokens WITHOUT
an end token, so the model never learns to stop mid-program.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import trimesh
from torch.utils.data import Dataset

from cad_recode.data.mixture import Mixture
from cad_recode.data.shards import PreparedSplit
from cad_recode.errors import UsageError
from cad_recode.geometry.augment import ScanAugmentation, augmented_model_points
from cad_recode.geometry.sampling import NUM_POINT_TOKENS, NUM_SURFACE_POINTS

START_TOKEN = "<|im_start|>"
END_TOKEN = "<|endoftext|>"
IGNORE_INDEX = -100
OVERFLOW_MODES = ("drop", "truncate")
_LENGTH_PASS_BATCH = 1024


class PointCodeDataset(Dataset):
    """Prepared split -> dicts with ``points`` (n_points, 3) float32, ``input_ids``, ``labels``, ``id``.

    Call :meth:`set_epoch` before each epoch (before creating the DataLoader
    iterator; with ``persistent_workers=True`` the workers keep the old epoch).
    """

    def __init__(
        self,
        split: PreparedSplit,
        tokenizer,
        *,
        n_points: int = NUM_POINT_TOKENS,
        n_surface: int = NUM_SURFACE_POINTS,
        augmentation: ScanAugmentation | None = None,
        max_code_tokens: int = 768,
        overflow: str = "drop",
        seed: int = 0,
        start_token: str = START_TOKEN,
        end_token: str = END_TOKEN,
    ):
        if overflow not in OVERFLOW_MODES:
            raise UsageError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}, got {overflow!r}")
        if isinstance(max_code_tokens, bool) or not isinstance(max_code_tokens, int) or max_code_tokens < 2:
            raise UsageError(f"max_code_tokens must be an integer >= 2 (code + end token), got {max_code_tokens!r}")
        self.split = split
        self.tokenizer = tokenizer
        self.n_points, self.n_surface = n_points, n_surface
        # None: the training defaults; ScanAugmentation.off() for validation
        self.augmentation = ScanAugmentation() if augmentation is None else augmentation
        self.max_code_tokens = max_code_tokens
        self.overflow = overflow
        self.seed = int(seed)
        self.epoch = 0
        self.start_id = special_token_id(tokenizer, start_token)
        self.end_id = special_token_id(tokenizer, end_token)

        lengths = np.fromiter(self._code_lengths(), dtype=np.int64, count=len(split))
        too_long = lengths + 1 > max_code_tokens
        # each record's input_ids length (start token, code, end token), for length-grouped batches
        self._record_lengths = np.minimum(lengths, max_code_tokens) + np.where(too_long, 1, 2)
        self.num_total = len(split)
        self.num_dropped = int(too_long.sum()) if overflow == "drop" else 0
        self.num_truncated = int(too_long.sum()) if overflow == "truncate" else 0
        # Record indices kept, int64: 8 MB for a million shapes.
        self._indices = np.flatnonzero(~too_long) if overflow == "drop" else np.arange(len(split))
        self._kept = self._indices
        self._copies: np.ndarray | None = None  # a record's repeat number under a family mixture
        self._draw: Callable[[int], Mixture] | None = None

    @property
    def records(self) -> np.ndarray:
        """The split's record index behind each item (a record repeats under a family mixture)."""
        return self._indices

    @property
    def kept_records(self) -> np.ndarray:
        """The split's records this dataset holds (those that fit max_code_tokens), each once."""
        return self._kept

    def item_lengths(self) -> np.ndarray:
        """Each item's ``input_ids`` length at the current epoch, without loading an item."""
        return self._record_lengths[self._indices]

    def use_mixture(self, draw: Callable[[int], Mixture]) -> None:
        """Draw each epoch's items as ``draw(epoch)`` says (`cad_recode.data.mixture`), from the records kept here.

        Drawn anew at every `set_epoch`, so a thinned family shows other records each epoch.
        """
        self._draw = draw
        self._apply_mixture()

    def _apply_mixture(self) -> None:
        mixture = self._draw(self.epoch)
        if len(mixture.records) != len(self._kept) or not np.isin(mixture.records, self._kept).all():
            raise ValueError("a mixture must keep the epoch's length and draw only records this dataset kept")
        self._indices, self._copies = mixture.records, mixture.copies

    def _code_lengths(self) -> Iterator[int]:
        batch: list[str] = []
        for code in self.split.codes():
            batch.append(code)
            if len(batch) == _LENGTH_PASS_BATCH:
                yield from self._token_counts(batch)
                batch = []
        if batch:
            yield from self._token_counts(batch)

    def _token_counts(self, codes: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(codes, add_special_tokens=False)["input_ids"]]

    def set_epoch(self, epoch: int) -> None:
        """Points of the next epoch are drawn with this epoch in their seed."""
        self.epoch = int(epoch)
        if self._draw is not None:
            self._apply_mixture()

    def item_seed(self, index: int) -> int:
        """The sampling seed of dataset item ``index`` at the current epoch."""
        key = [self.seed, self.epoch, int(self._indices[index])]
        if self._copies is not None and self._copies[index]:
            key.append(int(self._copies[index]))  # a repeated record draws other points than its first copy
        state = np.random.SeedSequence(key).generate_state(1, np.uint32)
        return int(state[0])

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index = int(index) % len(self)
        rec = self.split[int(self._indices[index])]
        mesh = trimesh.Trimesh(rec["vertices"], rec["faces"], process=False)
        points = augmented_model_points(
            mesh, self.augmentation, n_points=self.n_points, n_surface=self.n_surface, seed=self.item_seed(index),
        ).points
        input_ids, labels = self.encode(rec["code"])
        return {
            "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            "input_ids": input_ids,
            "labels": labels,
            "id": rec["id"],
        }

    def encode(self, code: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, labels)`` of one program, following the module's protocol."""
        code_ids = self.tokenizer(code, add_special_tokens=False)["input_ids"]
        if len(code_ids) + 1 <= self.max_code_tokens:
            ids = [self.start_id, *code_ids, self.end_id]
        else:  # only reached with overflow="truncate": too-long programs were dropped otherwise
            ids = [self.start_id, *code_ids[: self.max_code_tokens]]
        input_ids = torch.tensor(ids, dtype=torch.long)
        labels = input_ids.clone()
        labels[0] = IGNORE_INDEX
        return input_ids, labels


def special_token_id(tokenizer, token: str) -> int:
    """Id of ``token`` in ``tokenizer``; UsageError if the tokenizer does not know it."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    unknown = token_id is None or (token_id == tokenizer.unk_token_id and token != tokenizer.unk_token)
    if unknown:
        raise UsageError(
            f"tokenizer {type(tokenizer).__name__} has no {token} token; load the tokenizer through "
            "cad_recode (which adds the CAD-Recode special tokens) or use a Qwen tokenizer"
        )
    return int(token_id)


class PointCodeCollator:
    """Items -> batch: ``points`` (B, n, 3) float32; ``input_ids``, ``labels``, ``attention_mask`` (B, L) long.

    Right padding: ``input_ids`` with ``pad_token_id``, ``labels`` with -100,
    ``attention_mask`` 0. ``pad_to_multiple_of`` rounds L up (tensor-core friendly).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        if isinstance(pad_token_id, bool) or not isinstance(pad_token_id, (int, np.integer)):
            raise UsageError(
                f"pad_token_id must be a token id, got {pad_token_id!r}; "
                "pass tokenizer.pad_token_id (or tokenizer.eos_token_id if it has no pad token)"
            )
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not items:
            raise ValueError("cannot collate an empty batch")
        length = max(len(it["input_ids"]) for it in items)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(items)
        input_ids = torch.full((batch, length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch, length), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            input_ids[row, :n] = it["input_ids"]
            labels[row, :n] = it["labels"]
            attention_mask[row, :n] = 1
        points = torch.stack([torch.as_tensor(it["points"], dtype=torch.float32) for it in items])
        return {"points": points, "input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
