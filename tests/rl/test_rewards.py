"""Each reward on known shapes: the maximum, the penalty, the documented fallback, a bounded monotone CD reward."""

import math

import numpy as np
import pytest
import trimesh

from cad_recode.errors import UsageError
from cad_recode.geometry.normalize import fit_normalization
from cad_recode.geometry.sampling import sample_surface
from cad_recode.geometry.shapes import example_program
from cad_recode.rl.rewards import (
    CD_REWARD_SCALE,
    INVALID_PENALTY,
    REWARD_SCALE,
    REWARDS,
    RewardTarget,
    cd_reward,
    check_target,
    closed_solid_problem,
    get_reward,
    score,
)

HALF_CUBE = "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-20))\nr=w0.workplane(offset=20).box(80,80,40)\n"
BROKEN = "import cadquery as cq\nr=cq.Workplane('XY').box(1,1,1).fillet(50)\n"


@pytest.fixture(scope="module")
def runs(sandbox):
    """The cube, a box of half its height and a program that fails, run in the sandbox."""
    cube, half, broken = sandbox.map([example_program("cube"), HALF_CUBE, BROKEN])
    assert cube.ok and half.ok and not broken.ok
    return {"cube": cube, "half": half, "broken": broken}


def _target(mesh: trimesh.Trimesh, watertight: bool = True) -> RewardTarget:
    """The target the way sources build it: the mesh and its dense surface in the model frame."""
    transform = fit_normalization(np.asarray(mesh.bounds))
    model = mesh.copy()
    model.vertices = transform.apply(mesh.vertices)
    return RewardTarget(points=sample_surface(model, 8192, seed=0), mesh=model, watertight=watertight)


def _open(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The mesh with two triangles missing: no longer a closed solid."""
    return trimesh.Trimesh(mesh.vertices, mesh.faces[2:], process=False)


def test_the_cube_against_itself_scores_the_maximum_under_both_iou_rewards(runs):
    target = _target(runs["cube"].to_trimesh())
    assert score([runs["cube"]], target, get_reward("iou_gt")) == [pytest.approx(REWARD_SCALE, abs=1e-9)]
    assert score([runs["cube"]], target, get_reward("iou_input")) == [pytest.approx(REWARD_SCALE, abs=1e-9)]


def test_iou_reward_is_ten_times_the_protocol_iou(runs):
    # each shape is normalized to the unit cube by its own bounding box: the 80 x 80 x 40 box becomes
    # 1 x 1 x 0.5, half the cube, so IoU = 0.5 and the reward 5
    target = _target(runs["cube"].to_trimesh())
    assert score([runs["half"]], target, get_reward("iou_gt")) == [pytest.approx(5.0, abs=1e-6)]


def test_an_invalid_program_gets_the_penalty_from_every_reward(runs):
    target = _target(runs["cube"].to_trimesh())
    for reward in REWARDS.values():
        assert score([runs["broken"], None], target, reward) == [INVALID_PENALTY, INVALID_PENALTY]
        assert reward(None, target) == INVALID_PENALTY


def test_a_candidate_that_is_not_a_closed_solid_gets_the_iou_penalty_but_a_cd_score(runs):
    target = _target(runs["cube"].to_trimesh())
    open_candidate = _open(runs["cube"].to_trimesh())
    assert get_reward("iou_gt")(open_candidate, target) == INVALID_PENALTY
    assert 0.0 < get_reward("cd_input")(open_candidate, target) < REWARD_SCALE  # one face missing: far, not void


def test_a_non_watertight_input_mesh_falls_back_to_cd_input(runs):
    cube = runs["cube"].to_trimesh()
    problem = closed_solid_problem(_open(cube))
    assert closed_solid_problem(cube) is None
    assert problem is not None and "not a closed" in problem and "mesh A" not in problem
    target = _target(_open(cube), watertight=False)
    iou_input, cd_input = get_reward("iou_input"), get_reward("cd_input")
    for run in ("cube", "half"):
        assert score([runs[run]], target, iou_input) == score([runs[run]], target, cd_input)
    # the fallback is the CD reward, not the IoU: the half box is not scored 5
    assert score([runs["half"]], target, iou_input)[0] != pytest.approx(5.0, abs=0.1)


def test_cd_input_is_near_the_maximum_for_the_cube_and_lower_for_the_half_box(runs):
    target = _target(runs["cube"].to_trimesh())
    cd_input = get_reward("cd_input")
    same, half = score([runs["cube"], runs["half"]], target, cd_input)
    assert 9.9 < same <= REWARD_SCALE
    assert 0.0 < half < same
    # the candidate may come in program units ([-100, 100]) or the model frame: each is normalized alone
    model_frame = runs["half"].to_trimesh()
    model_frame.vertices = model_frame.vertices / 100.0
    assert cd_input(model_frame, target) == pytest.approx(half, abs=1e-9)


def test_cd_reward_is_bounded_and_monotone():
    cds = np.concatenate([[0.0], np.geomspace(1e-3, 1e3, 200)])
    rewards = np.array([cd_reward(float(cd)) for cd in cds])
    assert rewards[0] == REWARD_SCALE and rewards.min() >= 0.0 and rewards.max() <= REWARD_SCALE
    assert np.all(np.diff(rewards) < 0)  # strictly falling while a float can tell
    assert cd_reward(1e9) == 0.0 and cd_reward(math.inf) == 0.0  # a huge CD is 0, never below
    assert cd_reward(CD_REWARD_SCALE) == pytest.approx(REWARD_SCALE / math.e)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="must be >= 0"):
            cd_reward(bad)


def test_an_unknown_reward_name_names_the_closest():
    with pytest.raises(UsageError, match=r"unknown reward 'iou_inptu' \(did you mean 'iou_input'\?\)"):
        get_reward("iou_inptu")
    with pytest.raises(UsageError, match="choose one of iou_gt, iou_input, cd_input"):
        get_reward("volume")


def test_a_reward_refuses_a_target_without_what_it_needs(runs):
    cloud_only = RewardTarget(points=_target(runs["cube"].to_trimesh()).points, mesh=None, watertight=False)
    with pytest.raises(UsageError, match="iou_gt needs a closed ground-truth solid"):
        check_target(get_reward("iou_gt"), cloud_only)
    for name in ("cd_input", "iou_input"):  # points are enough; iou_input falls back to cd_input on a cloud
        check_target(get_reward(name), cloud_only)
        assert get_reward(name)(runs["cube"].to_trimesh(), cloud_only) > 9.9


def test_a_custom_reward_is_any_named_callable(runs):
    class Volume:
        name = "volume"

        def __call__(self, solid, target):
            return -10.0 if solid is None else float(solid.volume) / 1e5

    target = _target(runs["cube"].to_trimesh())
    assert score([runs["cube"], runs["broken"]], target, Volume()) == [pytest.approx(5.12), -10.0]
    check_target(Volume(), target)  # no check method: nothing to refuse
