"""Replay of labelled programs during RL (InstructGPT's "PPO-ptx"): keeps what RL's inputs never show.

RL from one family's meshes moves weights that other families share: in ``bench_rl.py adapt`` rings
lost 3 to 13 points while the model learnt stacked bodies, and no reward ever saw a ring
(BENCHMARKS.md, issue 18). The anchor adds, to every optimizer step, the SFT loss on a few programs
of a prepared dataset (typically the start model's own training data, which a `data generate` run
rebuilds for the quickstart's model):

    loss = clipped policy loss + anchor_coef x (token-mean cross-entropy of anchor_per_update programs)

The anchor's programs are drawn afresh each update, seeded by (seed, update), with the scan
augmentations and point draws SFT uses, so a resumed run replays the same ones. Each process takes its
share. ``anchor_families`` restricts the draw (e.g. every family but the one RL adapts to);
``anchor_by_family`` draws every family as often as any other (programs and rolled-out shapes alike),
so a family with few rows (cylinders are 5 % of the quickstart's data) is replayed as often as the rest.

The replayed programs keep the likelihood of the right program, but not what greedy decoding
writes: on ring meshes RL learnt to cut a bore into cylinders while the cylinders' programs stayed
likely (BENCHMARKS.md). ``anchor_rollouts`` therefore also rolls out a few anchor shapes each update
beside RL's own inputs, scored by the run's reward against their truth solids, so a bore cut into a
cylinder costs reward. They are drawn like the programs, seeded by (seed, update), not from the
hard-example stream, so resuming needs no state for them. Measured on rings, they held every other
family, cylinders included, but the rings then gained little: the model took the easier reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import trimesh

from cad_recode.errors import InputError
from cad_recode.rl.rewards import closed_solid_problem
from cad_recode.rl.rollouts import derived_seed
from cad_recode.rl.sources import RLItem, mesh_item
from cad_recode.rl.update import SequenceBatch

ANCHOR_STREAM = 3  # derived_seed's stream numbers (0-2: rollouts, points, dropout): the replayed programs,
ROLLOUT_STREAM = 4  # and the anchor shapes rolled out


@dataclass
class Anchor:
    """The replayed programs (a PointCodeDataset of the chosen rows, how many per update) and their shapes."""

    dataset: object  # cad_recode.data.dataset.PointCodeDataset
    rows: np.ndarray  # dataset indices that may be drawn
    per_update: int
    seed: int
    labels: dict[str, str] = field(default_factory=dict)  # id -> family, when the data carries labels
    odds: np.ndarray | None = None  # each row's chance of a draw (by family, see open_anchor); None = uniform

    def draw(self, update: int, rank: int, world: int) -> list[int]:
        """This process's share of the update's anchor programs (dataset indices)."""
        rng = np.random.default_rng(derived_seed(self.seed, ANCHOR_STREAM, update))
        chosen = rng.choice(self.rows, size=min(self.per_update, len(self.rows)), replace=False, p=self.odds)
        return [int(i) for i in chosen[rank::world]]

    def batches(self, update: int, rank: int, world: int, micro_batch_size: int, pad_id: int,
                device: torch.device) -> list[SequenceBatch]:
        """The update's anchor programs as micro-batches (point draws seeded by the update)."""
        self.dataset.set_epoch(update)
        items = [self.dataset[i] for i in self.draw(update, rank, world)]
        return [_as_batch(items[i:i + micro_batch_size], pad_id, device)
                for i in range(0, len(items), micro_batch_size)]

    def rollout_items(self, update: int, count: int, num_surface_points: int) -> list[RLItem]:
        """``count`` anchor shapes to roll out in ``update`` (every process's; each takes ``[rank::world]``).

        Each has its truth solid (the prepared mesh) as reward target; a shape whose mesh is not a
        closed solid (IoU undefined) is passed over. One-line error when the rows hold fewer than ``count``.
        """
        items: list[RLItem] = []
        rng = np.random.default_rng(derived_seed(self.seed, ROLLOUT_STREAM, update))
        if self.odds is None:
            order = rng.permutation(self.rows)
        else:
            order = rng.choice(self.rows, size=len(self.rows), replace=False, p=self.odds)
        for row in order:
            record = self.dataset.split[int(self.dataset.records[row])]
            mesh = trimesh.Trimesh(record["vertices"], record["faces"], process=False)
            if closed_solid_problem(mesh) is None:
                items.append(mesh_item(record["id"], mesh, num_surface_points, self.labels.get(record["id"]), None))
                if len(items) == count:
                    return items
        raise InputError(f"anchor_rollouts ({count}) is more than the {len(items)} closed truth solids of the anchor "
                         "data's chosen families; lower anchor_rollouts")


def _as_batch(items: Sequence[dict], pad_id: int, device: torch.device) -> SequenceBatch:
    from cad_recode.data.dataset import IGNORE_INDEX, PointCodeCollator

    batch = PointCodeCollator(pad_id)(items)
    mask = (batch["labels"][:, 1:] != IGNORE_INDEX).float()
    return SequenceBatch(batch["points"].to(device), batch["input_ids"].to(device), batch["attention_mask"].to(device),
                         mask.to(device), torch.zeros(len(items), device=device))


def check_anchor_dir(data_dir: str) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"anchor_data_dir {root} not found; give a prepared dataset with programs (e.g. the "
                         "start model's training data, runs/tiny/data after the quickstart)")
    return root


def open_anchor(data_dir: str, split: str, families: Sequence[str], per_update: int, tokenizer, *,
                num_point_tokens: int, num_surface_points: int, max_code_tokens: int, seed: int,
                by_family: bool = False) -> Anchor:
    """The anchor of a prepared dataset; one-line errors for a missing folder or unknown families."""
    from cad_recode.data.dataset import PointCodeDataset
    from cad_recode.data.labels import read_family_labels
    from cad_recode.data.shards import PreparedSplit
    from cad_recode.rl.sources import select_rows

    root = check_anchor_dir(data_dir)
    split_data = PreparedSplit.open(root, split)
    dataset = PointCodeDataset(split_data, tokenizer, n_points=num_point_tokens, n_surface=num_surface_points,
                               max_code_tokens=max_code_tokens, seed=seed)
    labels = read_family_labels(root)
    allowed = set(select_rows(split_data, labels, root, list(families) or None, None, setting="anchor_families"))
    rows = np.array([i for i, record in enumerate(dataset.records) if int(record) in allowed], dtype=np.int64)
    if len(rows) == 0:
        raise InputError(f"anchor_data_dir {root}: split {split!r} has no program of at most {max_code_tokens} "
                         f"tokens in families {', '.join(families) or 'all'}")
    odds = None
    if by_family:  # each family as likely as any other: its rows share 1 / (number of families)
        if not labels:
            raise InputError(f"anchor_data_dir {root} carries no family labels, so anchor_by_family cannot balance "
                             "the families; set anchor_by_family false")
        ids = list(split_data.ids())
        family = np.array([labels.get(ids[int(dataset.records[row])], "") for row in rows])
        names, index, counts = np.unique(family, return_inverse=True, return_counts=True)
        odds = 1.0 / (len(names) * counts[index])
        odds /= odds.sum()
    return Anchor(dataset, rows, per_update, seed, labels, odds)
