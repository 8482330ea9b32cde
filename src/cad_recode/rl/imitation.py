"""Self-imitation: teach greedy decoding the best program found for an input, when it beats greedy's own.

RL's samples improved while greedy output did not (BENCHMARKS.md, issue 18: on outline meshes the
sampled reward rose 4.8 -> 5.9 and greedy validation IoU stayed flat), and the negative half of the
policy gradient leaks into shapes the reward never sees (from ring meshes, cylinders got a bore).
Self-imitation (Oh et al. 2018; expert iteration) uses only the positive half, aimed at greedy:

1. decode each input greedily (the program ``infer`` would write with one candidate) and score it;
2. the best program found for the input: the best of the group's samples, and, with ``fit`` among
   ``imitation_sources``, the best of the points' own outline fits (:mod:`cad_recode.geometry.
   extrusion_fit`, the programs ``infer``'s refinement starts from), scored by the same reward;
3. when the best beats greedy by at least ``imitation_margin`` reward, its cross-entropy joins the update,
   weighted ``imitation_coef`` (token mean), exactly like the anchor's replayed programs.

Nothing here needs a program of the input: the targets come from the input's own points and the
run's reward, so it works on a folder of the user's meshes. A fit depends on the input alone, so it is
run and scored once per input and kept (:class:`FitCache`); greedy is decoded afresh every update.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from cad_recode.defaults import MODEL_UNITS  # RL items are in the model frame [-1, 1]; fits are written in +-100
from cad_recode.rl.rollouts import Group
from cad_recode.rl.update import Selected


@dataclass
class Found:
    """One candidate target: its code tokens, whether it ended, its reward, where it came from."""

    ids: list[int]
    finished: bool
    reward: float
    source: str  # "samples" or "fit"


@dataclass
class FitCache:
    """The best outline fit of each input (index -> Found, or None when no fit built a solid)."""

    max_tokens: int
    best: dict[int, Found | None] = field(default_factory=dict)

    def lookup(self, items: Sequence, indices: Sequence[int], tokenizer, sandbox, reward) -> list[Found | None]:
        """The best fit of each ``items[i]``, fitting, running and scoring the inputs not seen before in one batch."""
        from cad_recode.geometry.extrusion_fit import extrusion_programs
        from cad_recode.rl.rewards import score

        new = [i for i in dict.fromkeys(indices) if i not in self.best]
        codes = {i: [fit.code for fit in extrusion_programs(np.asarray(items[i].points) * MODEL_UNITS)] for i in new}
        flat = [code for i in new for code in codes[i]]
        results = iter(sandbox.map(flat) if flat else [])
        for i in new:
            ran = [next(results) for _ in codes[i]]
            self.best[i] = None
            for code, result, value in zip(codes[i], ran, score(ran, items[i].target, reward)):
                ids = tokenizer(code, add_special_tokens=False)["input_ids"]
                if not result.ok or len(ids) + 1 > self.max_tokens:  # no solid, or more than the model may write
                    continue
                if self.best[i] is None or value > self.best[i].reward:
                    self.best[i] = Found(list(ids), True, float(value), "fit")
        return [self.best[i] for i in indices]


def greedy_rewards(model, tokenizer, items: Sequence, groups: Sequence[Group], *, max_new_tokens: int,
                   grammar: bool, sandbox, reward, device: torch.device) -> list[float]:
    """The reward of the program greedy decoding writes for each group's point draw (one generate call)."""
    from cad_recode.rl.rewards import score
    from cad_recode.rl.validation import greedy_results

    if not groups:
        return []
    results = greedy_results(model, tokenizer, np.stack([g.points for g in groups]), max_new_tokens=max_new_tokens,
                             grammar=grammar, sandbox=sandbox, device=device)
    return [score([result], items[g.item].target, reward)[0] for g, result in zip(groups, results)]


def best_sample(group: Group) -> Found | None:
    """The group's highest-reward sample that ran and ended (a cut program is no program to imitate)."""
    best = None
    for sample in group.samples:
        if sample.status == "ok" and sample.finished and (best is None or sample.reward > best.reward):
            best = Found(list(sample.ids), True, sample.reward, "samples")
    return best


def imitation_targets(groups: Sequence[Group], greedy_rewards: Sequence[float], fits: Sequence[Found | None],
                      sources: Sequence[str], margin: float) -> list[tuple[Selected, str]]:
    """(sequence to imitate, its source) for each group whose best found program beats greedy by ``margin``.

    ``fits[g]``: group g's best fit (None: none, or ``fit`` not among ``sources``). Ties prefer the sample,
    the model's own spelling.
    """
    targets = []
    for group, greedy, fit in zip(groups, greedy_rewards, fits, strict=True):
        found = [f for f in (best_sample(group) if "samples" in sources else None,
                             fit if "fit" in sources else None) if f is not None]
        if not found:
            continue
        best = max(found, key=lambda f: f.reward)  # max keeps the first of equals: the sample
        if best.reward >= greedy + margin:
            targets.append((Selected(group.points, best.ids, best.finished, 0.0), best.source))
    return targets
