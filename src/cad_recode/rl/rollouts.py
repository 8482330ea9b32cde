"""Rollouts: G sampled programs per input, run in the sandbox and scored, overlapped with generation.

Generation is inference's own path (:func:`cad_recode.model.generation.generate_programs`: the
runaway stop and the program grammar), so RL trains on programs decoded exactly as ``infer``
decodes them. Each input is drawn once per update (``RLItem.model_points``: the one sampling
function of training and inference, seeded) and its points repeated G times: rows ``g*G .. g*G+G-1`` are one group.

Inputs are processed in chunks of ``generation_batch_size``. With ``overlap`` a worker thread
runs chunk i's programs in the sandbox (separate processes) and scores them while the main
thread generates chunk i+1; the sandbox waits in I/O, so the two overlap even under the GIL.
Every random draw is seeded from (seed, update, rank, chunk), so an update's rollouts are a
function of the update number and the weights alone: a resumed run repeats them exactly.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from cad_recode.model.generation import GeneratedProgram, generate_programs


def derived_seed(*parts: int) -> int:
    """A 31-bit seed from integers (seed, update, rank, ...): independent streams, same on every rerun."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass
class Sample:
    """One sampled program: its code tokens, whether it ended, its sandbox status and reward."""

    ids: list[int]
    code: str
    finished: bool
    status: str
    reward: float


@dataclass
class Group:
    """The G samples of one input; ``points`` (P, 3) is the draw they were generated from."""

    item: int  # index of the input in the run's item list
    points: np.ndarray
    samples: list[Sample]

    @property
    def rewards(self) -> np.ndarray:
        return np.array([s.reward for s in self.samples], dtype=np.float64)


@dataclass
class RolloutTimes:
    """Seconds of one update's rollouts. ``sandbox`` and ``reward`` run in the worker thread when
    overlapped; ``wall`` is the main thread's time, so overlap shows as wall < the sum."""

    generate: float = 0.0
    sandbox: float = 0.0
    reward: float = 0.0
    wall: float = 0.0
    tokens: int = 0  # generated tokens (rows x their lengths)

    def add(self, other: RolloutTimes) -> None:
        for name in ("generate", "sandbox", "reward", "wall", "tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class RolloutSettings:
    num_generations: int
    temperature: float
    top_p: float | None
    max_new_tokens: int
    grammar: bool
    runaway_factor: float
    generation_batch_size: int
    overlap: bool
    num_point_tokens: int


@dataclass
class _Chunk:
    items: list[int]
    points: list[np.ndarray]
    programs: list[GeneratedProgram]
    scored: Future | None = None
    result: tuple | None = field(default=None)


def _run_and_score(codes: Sequence[str], targets: Sequence, group_size: int, sandbox, reward) -> tuple:
    """(per-row ExecResult statuses, per-row rewards, sandbox seconds, reward seconds) of one chunk."""
    from cad_recode.rl.rewards import score

    started = time.perf_counter()
    results = sandbox.map(list(codes))
    sandbox_seconds = time.perf_counter() - started
    started = time.perf_counter()
    rewards: list[float] = []
    for g, target in enumerate(targets):
        rewards += score(results[g * group_size:(g + 1) * group_size], target, reward)
    return [r.status.value for r in results], rewards, sandbox_seconds, time.perf_counter() - started


def collect_groups(model, tokenizer, items: Sequence, indices: Sequence[int], settings: RolloutSettings, *,
                   sandbox, reward, seeds: Callable[[int], int], point_seed: Callable[[int], int],
                   device: torch.device) -> tuple[list[Group], RolloutTimes]:
    """Sample, run and score ``settings.num_generations`` programs for each of ``items[i]``, i in ``indices``.

    ``seeds(chunk)``: the sampling seed of a chunk; ``point_seed(i)``: the FPS seed of input i.
    Returns the groups in ``indices`` order and the time split.
    """
    times, started = RolloutTimes(), time.perf_counter()
    G, step = settings.num_generations, settings.generation_batch_size
    chunks: list[_Chunk] = []
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        for c, first in enumerate(range(0, len(indices), step)):
            chunk_items = list(indices[first:first + step])
            points = [np.asarray(items[i].model_points(point_seed(i), settings.num_point_tokens), np.float32)
                      for i in chunk_items]
            batch = torch.from_numpy(np.repeat(np.stack(points), G, axis=0)).to(device)
            t0 = time.perf_counter()
            programs = generate_programs(
                model, tokenizer, batch, max_new_tokens=settings.max_new_tokens, do_sample=True,
                temperature=settings.temperature, top_p=settings.top_p, runaway_factor=settings.runaway_factor,
                grammar=settings.grammar, group_size=G, seed=seeds(c),
            )
            times.generate += time.perf_counter() - t0
            times.tokens += sum(len(p.ids) + int(p.finished) for p in programs)
            chunk = _Chunk(chunk_items, points, programs)
            args = ([p.code for p in programs], [items[i].target for i in chunk_items], G, sandbox, reward)
            if settings.overlap:
                chunk.scored = pool.submit(_run_and_score, *args)
            else:
                chunk.result = _run_and_score(*args)
            chunks.append(chunk)
        groups = [group for chunk in chunks for group in _groups_of(chunk, G, times)]
    except BaseException:
        # Ctrl+C or an error: the chunks still queued are dropped, not run and scored first; the one
        # running ends when the caller closes the sandbox
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    times.wall = time.perf_counter() - started
    return groups, times


def _groups_of(chunk: _Chunk, group_size: int, times: RolloutTimes) -> list[Group]:
    statuses, rewards, sandbox_seconds, reward_seconds = chunk.result or chunk.scored.result()
    times.sandbox += sandbox_seconds
    times.reward += reward_seconds
    groups = []
    for g, (item, points) in enumerate(zip(chunk.items, chunk.points)):
        rows = range(g * group_size, (g + 1) * group_size)
        samples = [Sample(chunk.programs[r].ids, chunk.programs[r].code, chunk.programs[r].finished, statuses[r],
                          float(rewards[r])) for r in rows]
        groups.append(Group(item, points, samples))
    return groups
