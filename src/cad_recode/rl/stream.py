"""Which inputs each update takes: a seeded order per epoch, skipping solved inputs (hard-example mining).

Every process computes the same stream, and each takes its share of an update's inputs. The
stream's whole state is ``(epoch, position, solved)``: saved in every checkpoint, so a resumed
run takes exactly the inputs an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ItemStream:
    num_items: int
    seed: int
    epoch: int = 0
    position: int = 0
    solved: set[int] = field(default_factory=set)

    def order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

    @property
    def unsolved(self) -> int:
        return self.num_items - len(self.solved)

    def take(self, count: int) -> list[int]:
        """The next ``count`` unsolved inputs (wrapping into new epochs); [] when every input is solved."""
        if self.unsolved == 0:
            return []
        taken: list[int] = []
        order = self.order(self.epoch)
        while len(taken) < count:
            if self.position >= self.num_items:
                self.epoch, self.position = self.epoch + 1, 0
                order = self.order(self.epoch)
            index = int(order[self.position])
            self.position += 1
            if index not in self.solved:
                taken.append(index)
        return taken

    def state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "solved": sorted(self.solved)}

    def restore(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.solved = {int(i) for i in state["solved"]}
