"""How a program is produced: the generation settings, then optional refinement."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cad_recode import defaults
from cad_recode.errors import UsageError
from cad_recode.geometry.pose import DEFAULT_POSE_BUDGET
from cad_recode.model.constrained import DEFAULT_GRAMMAR
from cad_recode.model.runaway import DEFAULT_RUNAWAY_FACTOR


POSE_MODES = ("if_turned", "none", "auto")
SAMPLING_MODES = ("none", "after_first", "all")
# best-of-N's sampled candidates: on an under-trained model T 0.5 to 1.0 gave 1.7 to 4 IoU points
# over all-greedy point draws (BENCHMARKS.md)
SAMPLING_TEMPERATURE = 0.8


@dataclass
class Decoding:
    """Greedy by default (design.md §2); every field is recorded in the report."""

    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    # best-of-N: "none": every candidate greedy on its own point draw (the published protocol's);
    # "after_first": each reading of the input (the input as given, or each pose) gets one greedy
    # candidate and the others are sampled, other guesses rather than the same guess from other
    # points (it lifted an under-trained model, not a well-trained one: BENCHMARKS.md); "all":
    # every candidate sampled
    sampling: str = "none"
    temperature: float | None = None  # of sampled candidates; None: SAMPLING_TEMPERATURE
    top_p: float | None = None
    # best-of-N: end a candidate once half its siblings finished and it is this many times longer
    # than the longest of them (cad_recode.model.runaway); 0 never ends one early
    runaway_factor: float = DEFAULT_RUNAWAY_FACTOR
    # > 0: fit the winner's integer dimensions to the input points (and try structural edits:
    # drop a feature, hollow a body) with up to this many sandbox runs (cad_recode.inference.refine); the report keeps
    # the program as the model wrote it. 0: off
    refine_evaluations: int = 0
    # with refinement on: a sketch-and-extrude program fitted to the input points runs too
    # (cad_recode.inference.fitted_start) and replaces the model's winner as refinement's start when
    # clearly closer; False: refinement starts from the model's winner only
    outline_fit: bool = True
    # constrain every token to the program grammar (cad_recode.model.constrained): programs always parse
    grammar: bool = DEFAULT_GRAMMAR
    # "auto": the N candidates are decoded under up to pose_budget orientations of the input
    # (cad_recode.geometry.pose) and placed back by a final line; "none": the input as given;
    # "if_turned": "auto" for an input that looks turned (pose.TURNED_BOX_RATIO), else "none"
    pose: str = "if_turned"
    pose_budget: int = DEFAULT_POSE_BUDGET
    # a point cloud's points off on their own, away from its surface, and a mesh's islands beyond its
    # main body are dropped before anything reads the input (cad_recode.geometry.stray_points); False: as given
    drop_stray_points: bool = True

    def __post_init__(self):
        if self.refine_evaluations < 0:
            raise UsageError(f"refine_evaluations must be >= 0 (0: off), got {self.refine_evaluations}")
        if self.max_new_tokens < 1:
            raise UsageError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.runaway_factor != 0 and not self.runaway_factor > 1:
            raise UsageError(f"runaway_factor must be 0 (off) or > 1, got {self.runaway_factor}")
        if self.sampling not in SAMPLING_MODES:
            raise UsageError(f"sampling must be one of {', '.join(SAMPLING_MODES)}, got {self.sampling!r}")
        if self.temperature is not None and self.temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {self.top_p}")

        if self.pose not in POSE_MODES:
            raise UsageError(f"pose must be one of {', '.join(POSE_MODES)}, got {self.pose!r}")
        if isinstance(self.pose_budget, bool) or not isinstance(self.pose_budget, int) or self.pose_budget < 1:
            raise UsageError(f"pose_budget must be a positive integer, got {self.pose_budget!r}")

    @property
    def sampling_temperature(self) -> float:
        return SAMPLING_TEMPERATURE if self.temperature is None else self.temperature

    def greedy_rows(self, first_of_reading: list[bool]) -> list[bool]:
        """Which candidates decode greedily, given which ones are the first of their reading."""
        if self.sampling == "none":
            return [True] * len(first_of_reading)
        if self.sampling == "all":
            return [False] * len(first_of_reading)
        return list(first_of_reading)

    def to_dict(self) -> dict:
        return asdict(self)
