"""The rewards of online RL: small named callables that score one candidate solid against one input.

cadrille's reward is ``10 * IoU`` with the target and ``-10`` for an invalid
program (design.md §2). Three built-ins, each needing something different:

- ``iou_gt``: ``REWARD_SCALE * IoU`` with the ground-truth solid. Needs a prepared
  dataset (programs), so every input has its truth solid.
- ``iou_input``: ``REWARD_SCALE * IoU`` with the input mesh itself. Needs
  watertight input meshes (a folder of closed STL/OBJ/PLY or STEP parts, no
  programs). IoU is undefined for an open mesh, so an input that is not a closed
  solid (or is a point cloud) is scored by ``cd_input`` instead; :mod:`cad_recode.rl.sources` says so
  once, naming those inputs, when it opens the folder.
- ``cd_input``: ``REWARD_SCALE * exp(-CD / CD_REWARD_SCALE)``, CD being the
  protocol's Chamfer distance (x10^3, unit cube) from the candidate to the input
  points. Needs only points: raw clouds and scans too.

Every metric is the evaluation's own (:mod:`cad_recode.geometry.metrics`), so RL
optimizes what ``eval`` reports: IoU normalizes each shape to the unit cube by
its own bounding box (``mesh_iou``), CD is what ``infer`` ranks candidates by
(``CloudDistance`` and ``protocol_cd``, as in ``inference/judge.py``). Because
each shape is normalized on its own, the candidate may be given in program units
([-100, 100]) or in the model frame ([-1, 1]); the score is the same.

A program that failed, built no solid, or built one whose tessellation no metric
can use (not a closed solid for IoU, no surface for CD) scores
``INVALID_PENALTY``. Your own reward: any object with a ``name`` and
``__call__(solid, target) -> float``; register it in ``REWARDS``.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, Sequence

import numpy as np
import trimesh

from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.metrics import CloudDistance, iou, mesh_iou, mesh_normalization, protocol_cd

INVALID_PENALTY = -10.0
"""The reward of a program that built no usable solid (cadrille)."""
REWARD_SCALE = 10.0
"""The best reward: ``REWARD_SCALE * IoU`` (cadrille), and ``cd_input``'s value at CD 0."""
CD_REWARD_SCALE = 10.0
"""``cd_input``'s CD (x10^3) at which the reward falls to ``REWARD_SCALE / e``.

Fitted so that ``cd_input`` tracks ``10 * IoU``: on 171 pairs (60 shapes of the
broad generator against copies with perturbed literals; ``benchmarks/bench_rl.py
cd_scale``), the RMSE between ``10 exp(-CD / s)`` and ``10 IoU`` was 2.07 at s = 5,
1.44 at 10, 1.38 at 15 and 1.75 at 30; the rank agreement with IoU (0.89) does not
depend on s. Typical values at s = 10: IoU 0.99 ~ CD 0.25 -> 9.8; IoU 0.85 ~ CD 1.0
-> 9.0; IoU 0.6 ~ CD 5 -> 6.1; IoU 0.4 ~ CD 12 -> 3.0; IoU < 0.3 ~ CD 37 -> 0.2.
Two samplings of one surface never reach CD 0 (metrics module doc), so even a
perfect answer scores a little under 10.
"""


@dataclass(frozen=True, eq=False)
class RewardTarget:
    """What one input's candidates are scored against; identity-hashed so its caches are per input."""

    points: np.ndarray  # (N, 3) input surface points, model frame ([-1, 1]^3)
    mesh: trimesh.Trimesh | None  # the target solid (truth or input mesh), model frame; None for a cloud
    watertight: bool  # mesh is a closed solid (IoU is defined on it)

    @cached_property
    def cloud_distance(self) -> CloudDistance:
        """The input cloud, normalized (by the target solid's own box when there is one) and indexed once."""
        box = None if self.mesh is None else mesh_normalization(self.mesh, "target solid")
        return CloudDistance(self.points, box)


class Reward(Protocol):
    """A reward: ``solid`` is the candidate's tessellated solid, None when its program failed."""

    name: str

    def __call__(self, solid: trimesh.Trimesh | None, target: RewardTarget) -> float: ...


def closed_solid_problem(mesh: trimesh.Trimesh) -> str | None:
    """Why IoU is undefined on ``mesh`` (not closed, inside out, flat), or None when it is a closed solid.

    The IoU's own check (manifold3d after welding), so "watertight" here means "IoU works".
    """
    try:
        iou(mesh, mesh)
    except ValueError as err:
        return str(err).replace("mesh A", "mesh").splitlines()[0]
    return None


def _scaled_iou(solid: trimesh.Trimesh, truth: trimesh.Trimesh) -> float:
    return REWARD_SCALE * mesh_iou(solid, truth)


class IoUGroundTruth:
    """``iou_gt``: ``REWARD_SCALE * IoU`` with the ground-truth solid (a prepared dataset)."""

    name = "iou_gt"

    def check(self, target: RewardTarget) -> None:
        if target.mesh is None or not target.watertight:
            raise UsageError("reward iou_gt needs a closed ground-truth solid per input (a prepared dataset); "
                             "for a folder of meshes use iou_input, for clouds cd_input")

    def __call__(self, solid: trimesh.Trimesh | None, target: RewardTarget) -> float:
        self.check(target)
        if solid is None:
            return INVALID_PENALTY
        return _guarded(_scaled_iou, solid, target.mesh)


class CDInput:
    """``cd_input``: ``REWARD_SCALE * exp(-CD / CD_REWARD_SCALE)``, CD (x10^3) to the input points; in [0, 10]."""

    name = "cd_input"

    def check(self, target: RewardTarget) -> None:
        return None  # every target has points

    def __call__(self, solid: trimesh.Trimesh | None, target: RewardTarget) -> float:
        if solid is None:
            return INVALID_PENALTY
        return _guarded(lambda s, t: cd_reward(protocol_cd(t.cloud_distance(s))), solid, target)


class IoUInput:
    """``iou_input``: ``REWARD_SCALE * IoU`` with the input mesh; ``cd_input`` for an open mesh or a cloud."""

    name = "iou_input"

    def check(self, target: RewardTarget) -> None:
        return None  # an input without a closed mesh falls back to cd_input (sources announce which)

    def __call__(self, solid: trimesh.Trimesh | None, target: RewardTarget) -> float:
        if target.mesh is None or not target.watertight:  # announced once by sources, not here
            return REWARDS["cd_input"](solid, target)
        if solid is None:
            return INVALID_PENALTY
        return _guarded(_scaled_iou, solid, target.mesh)


def cd_reward(cd: float) -> float:
    """A protocol CD (x10^3, >= 0) as a bounded reward: 10 at 0, falling monotonically towards 0."""
    if not cd >= 0:  # NaN too
        raise ValueError(f"a Chamfer distance must be >= 0, got {cd!r}")
    return REWARD_SCALE * math.exp(-cd / CD_REWARD_SCALE)


def _guarded(measure, solid: trimesh.Trimesh, target) -> float:
    """The measure, or the penalty when the candidate's solid is unusable by the metric."""
    try:
        value = float(measure(solid, target))
    except (ValueError, InputError):  # not a closed solid, no surface, zero extent
        return INVALID_PENALTY
    return value if math.isfinite(value) else INVALID_PENALTY


REWARDS: dict[str, Reward] = {reward.name: reward for reward in (IoUGroundTruth(), IoUInput(), CDInput())}
"""Rewards by name; add your own here (``REWARDS["mine"] = MyReward()``) to select it by name."""


def get_reward(name: str) -> Reward:
    """The reward called ``name``; UsageError naming the closest known one."""
    if name in REWARDS:
        return REWARDS[name]
    close = difflib.get_close_matches(str(name), list(REWARDS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UsageError(f"unknown reward {name!r}{hint}; choose one of {', '.join(REWARDS)}")


def check_target(reward: Reward, target: RewardTarget) -> None:
    """UsageError when ``target`` lacks what ``reward`` needs (a custom reward without ``check`` passes)."""
    check = getattr(reward, "check", None)
    if check is not None:
        check(target)


def score(results: Sequence, target: RewardTarget, reward: Reward) -> list[float]:
    """Sandbox results (``ExecResult``) -> rewards; failed, empty or untessellated programs get the penalty."""
    rewards = []
    for result in results:
        solid = None
        if result is not None and result.ok:
            try:
                solid = result.to_trimesh()
            except ValueError:
                solid = None
            if solid is not None and len(solid.faces) == 0:
                solid = None
        rewards.append(float(reward(solid, target)))
    return rewards
