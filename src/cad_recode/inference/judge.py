"""From executed candidates to one Reconstruction: measure, pick, refine, compare.

Best of N (design.md §2): every candidate ran in the sandbox; the valid one whose
surface is closest to the INPUT points wins, by the mean distance both ways (an L1
Chamfer; :mod:`cad_recode.geometry.metrics` says why not the squared one). A ground truth, when
given, is only measured afterwards, never used to choose. Each step is its own
small function returning typed values; :func:`judge` composes them.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import trimesh

from cad_recode.errors import InputError
from cad_recode.geometry.metrics import CloudDistance, compare_meshes, protocol_cd, protocol_distance
from cad_recode.inference.decoding import Decoding
from cad_recode.inference.inputs import EncodedInput
from cad_recode.inference.results import Candidate, Reconstruction, RefinementSummary, Timings, TruthComparison
from cad_recode.inference.units import restore_mesh

# a fitted program replaces the model's as refinement's start only when clearly closer: at about
# the same distance the model's program (a box, a cylinder) says more than a polygon does
FIT_MARGIN = 0.8
# (code, generated tokens, finished) of one generated program
Generated = tuple[str, int, bool]


def measure_candidates(rows: Sequence[tuple[Generated, object]], first_seed: int,
                       to_input: CloudDistance) -> tuple[list[Candidate], list[trimesh.Trimesh | None]]:
    """Each candidate's status, CD and mean distance to the input (protocol scale); its mesh when valid."""
    candidates, meshes = [], []
    for k, ((code, tokens, finished), result) in enumerate(rows):
        candidate = Candidate(first_seed + k, code, tokens, finished, result.status.value, result.reason)
        mesh = None
        if result.ok:
            try:
                mesh = result.to_trimesh()
                gap = to_input.gap(mesh, where=f"candidate {k}")
                candidate.cd_input, candidate.distance_input = protocol_cd(gap.squared), protocol_distance(gap.plain)
            except (ValueError, InputError) as err:  # degenerate tessellation: not a usable solid
                mesh, candidate.status, candidate.reason = None, "invalid", str(err).splitlines()[0]
        candidates.append(candidate)
        meshes.append(mesh)
    return candidates, meshes


def pick_best(candidates: Sequence[Candidate]) -> int | None:
    """Index of the valid candidate closest to the input (mean distance; the first on ties), or None."""
    scored = [(c.distance_input, k) for k, c in enumerate(candidates)
              if c.distance_input is not None and math.isfinite(c.distance_input)]
    return min(scored)[1] if scored else None


def compare_with_truth(mesh: trimesh.Trimesh, truth: trimesh.Trimesh, name: str) -> TruthComparison:
    """CD and IoU against the ground truth; a failed comparison says why instead of raising."""
    try:
        comparison = compare_meshes(mesh, truth)
    except (ValueError, InputError) as err:
        return TruthComparison(name, error=str(err).splitlines()[0])
    iou = None if math.isnan(comparison.iou) else comparison.iou
    return TruthComparison(name, cd=comparison.cd, iou=iou, iou_error=comparison.iou_error or "")


def refine_winner(code: str, result, cd_input: float | None, item: EncodedInput, sandbox, budget: int,
                  to_input: CloudDistance, outline_fit: bool = True):
    """The refinement search (cad_recode.inference.refine): (Refinement, its summary).

    It starts from the model's winner, or (``outline_fit``) from the fitted program
    (:mod:`.fitted_start`) when that one is clearly closer to the input points, or
    when the model wrote no valid program at all (``code`` ""): then (None, None)
    when no fitted program runs either.
    """
    from cad_recode.inference.fitted_start import best_fitted_start
    from cad_recode.inference.refine import refine_program

    started = time.perf_counter()
    fitted, fit_runs = best_fitted_start(item, sandbox, to_input, budget) if outline_fit else (None, 0)
    start_code, start_result = code, result
    if fitted is not None and (not code or fitted.cd_input < FIT_MARGIN * cd_input):
        start_code, start_result = fitted.code, fitted.result
    elif not code:
        return None, None
    else:
        fitted = None
    refined = refine_program(start_code, item.dense, sandbox, max_evaluations=budget - fit_runs,
                             start_result=start_result, frame=item.transform)
    refined.seconds = time.perf_counter() - started
    refined.evaluations += fit_runs
    if fitted is not None:
        refined.edits.insert(0, fitted.describe(cd_input))
    summary = RefinementSummary(
        model_code=code, cd_input_before=cd_input if fitted else _protocol(refined.start_distance),
        cd_input_after=_protocol(refined.distance), literals_changed=refined.changed,
        evaluations=refined.evaluations, seconds=refined.seconds, structure_edits=list(refined.edits),
        started_from=fitted.label if fitted else "model",
    )
    return refined, summary


def _protocol(raw: float) -> float | None:
    return protocol_cd(raw) if math.isfinite(raw) else None


def judge(item: EncodedInput, rows: Sequence[tuple[Generated, object]], *, first_seed: int, decoding: Decoding,
          restore_units: bool, sandbox, model_name: str, prompt_tokens: int, timings: Timings,
          on_stage: Callable[[str], None] | None = None) -> Reconstruction:
    """Measure, pick, refine (when asked), compare with the ground truth, restore units.

    ``on_stage`` hears one line as each long stage starts (metrics, refining).
    """
    stage = on_stage or (lambda _: None)
    started = time.perf_counter()
    stage(f"metrics: {len(rows)} candidate{'s' if len(rows) > 1 else ''} against {len(item.dense)} input points")
    to_input = CloudDistance(item.dense, item.transform)  # indexed once for every candidate, in the model's frame
    candidates, meshes = measure_candidates(rows, first_seed, to_input)
    greedy = decoding.greedy_rows(item.first_of_reading())
    for k, candidate in enumerate(candidates):
        candidate.pose, candidate.sampled = item.pose_name(k), not greedy[k]
    best = pick_best(candidates)
    code, result, mesh = ("", None, None) if best is None else (candidates[best].code, rows[best][1], meshes[best])
    cd_input = candidates[best].cd_input if best is not None else None
    refinement = None
    if decoding.refine_evaluations and (best is not None or decoding.outline_fit):
        stage(f"refining the winner (at most {decoding.refine_evaluations} sandbox runs)")
        refined, refinement = refine_winner(code, result, cd_input, item, sandbox, decoding.refine_evaluations,
                                            to_input, decoding.outline_fit)
        if refined is not None:
            timings.refine = refined.seconds
        if refined is not None and refined.modified:
            code, result, mesh = refined.code, refined.result, refined.result.to_trimesh()
            cd_input = protocol_cd(to_input(mesh, where="refined program"))
    truth = None
    if mesh is not None and item.ground_truth is not None:
        stage(f"metrics: CD and IoU against the ground truth {item.ground_truth_name}")
        truth = compare_with_truth(mesh, item.ground_truth, item.ground_truth_name)
        if refinement is not None and best is None:  # refinement started from the fit alone
            refinement.model_truth = TruthComparison(item.ground_truth_name, error="the model wrote no valid program")
        elif refinement is not None:  # the program as written, measured too: refined and model-only figures
            written = mesh is meshes[best]
            refinement.model_truth = truth if written else compare_with_truth(meshes[best], item.ground_truth,
                                                                               item.ground_truth_name)
    elif item.ground_truth is not None:
        truth = TruthComparison(item.ground_truth_name)
    transform = item.transform  # T0: a posed program was placed back into the input's frame
    if mesh is not None and restore_units:
        mesh = restore_mesh(mesh, transform)
    timings.metrics = time.perf_counter() - started - timings.refine + item.truth_seconds
    return Reconstruction(
        input_name=item.name, model=model_name, code=code, result=result, mesh=mesh, candidates=candidates,
        best=best, cd_input=cd_input, transform=transform, decoding=decoding, input_points=item.input_points,
        prompt_tokens=prompt_tokens, restored_units=restore_units, truth=truth, refinement=refinement,
        timings=timings, input_cloud=item.dense, input_mesh=item.mesh, input_noise=item.noise,
        input_stray_points=item.stray_points, input_stray_islands=item.stray_islands, input_turned=item.turned,
        input_extents=item.extents,
    )
