"""RL inputs: a prepared split made here with the project's generator and prepare, and a folder of parts."""

import shutil

import numpy as np
import pytest
import trimesh

from cad_recode.data.generator.dataset import generate_dataset
from cad_recode.data.labels import read_family_labels
from cad_recode.data.prepare import prepare_dataset
from cad_recode.data.shards import PreparedSplit, ShapeRecord, read_manifest, write_shard
from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.loaders import load_geometry
from cad_recode.geometry.sampling import to_model_points
from cad_recode.geometry.shapes import example_program
from cad_recode.rl.rewards import REWARD_SCALE, get_reward, score
from cad_recode.rl.sources import open_mesh_folder, open_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """16 broad programs (8 train), prepared: shapes with family labels."""
    root = tmp_path_factory.mktemp("prepared")
    generate_dataset(root / "programs", 16, seed=1, complexity="broad", execute=False, progress=False,
                     val_fraction=0.25, test_fraction=0.25)
    prepare_dataset(root / "programs", root / "data", progress=False)
    return root / "data"


def _in_model_frame(points: np.ndarray) -> None:
    assert points.min() >= -1 - 1e-9 and points.max() <= 1 + 1e-9
    assert (points.max(axis=0) - points.min(axis=0)).max() == pytest.approx(2.0, abs=0.05)


def test_prepared_split_gives_every_shape_with_its_truth_solid_and_family(prepared, sandbox):
    items = open_prepared(prepared, "train", num_surface_points=2048, sandbox=sandbox)
    split = PreparedSplit.open(prepared, "train")
    labels = read_family_labels(prepared)
    assert [i.name for i in items] == list(split.ids()) and len(items) == 8
    assert [i.family for i in items] == [labels[i.name] for i in items]
    for item in items:
        assert item.points.shape == (2048, 3) and item.target.points is item.points
        assert item.target.watertight and item.target.mesh is not None
        _in_model_frame(item.points)
        _in_model_frame(np.asarray(item.target.mesh.vertices))
    # the model's points are inference's own: to_model_points of the stored mesh, same seed
    record = split[0]
    mesh = trimesh.Trimesh(record["vertices"], record["faces"], process=False)
    expected = to_model_points(mesh, n_points=64, n_surface=2048, seed=3).points
    assert np.allclose(items[0].model_points(seed=3, n_points=64), expected, atol=1e-5)
    # the truth program, run again, scores the maximum against its own target
    result = sandbox.run(record["code"])
    assert score([result], items[0].target, get_reward("iou_gt")) == [pytest.approx(REWARD_SCALE, abs=1e-6)]


def test_prepared_families_and_limit(prepared):
    labels = read_family_labels(prepared)
    outline = [i for i, f in labels.items() if f == "outline" and i.startswith("train/")]
    items = open_prepared(prepared, "train", families=["outline"], num_surface_points=256)
    assert [i.name for i in items] == outline and {i.family for i in items} == {"outline"}
    assert len(open_prepared(prepared, "train", limit=2, num_surface_points=256)) == 2
    with pytest.raises(UsageError, match=r"no family 'gear'; it has box, cylinder, "):
        open_prepared(prepared, "train", families=["gear"])
    with pytest.raises(InputError, match="has no split 'holdout'"):
        open_prepared(prepared, "holdout")
    with pytest.raises(UsageError, match="limit must be a positive integer"):
        open_prepared(prepared, "train", limit=0)


def test_an_open_truth_mesh_is_rebuilt_in_the_sandbox_or_left_out_with_one_notice(prepared, sandbox, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    split = PreparedSplit.open(data, "train")
    records = [ShapeRecord(**{k: v for k, v in split[i].items()}) for i in range(len(split))]
    records[1].faces = records[1].faces[2:]  # two triangles lost: not a closed solid any more
    shard = read_manifest(data)["splits"]["train"]["shards"][0]
    write_shard(data / "train" / shard["file"], split="train", index=0, ids_hash="test", num_planned=len(records),
                records=records, failures=[])
    notices = []
    rebuilt = open_prepared(data, "train", num_surface_points=256, sandbox=sandbox, notice=notices.append)
    assert len(rebuilt) == 8 and rebuilt[1].target.watertight and notices == []
    left = open_prepared(data, "train", num_surface_points=256, notice=notices.append)
    assert [i.name for i in left] == [r.id for r in records if r.id != records[1].id]
    assert len(notices) == 1 and records[1].id in notices[0] and "not closed" in notices[0]


@pytest.fixture(scope="module")
def parts(sandbox, tmp_path_factory):
    """A watertight STL, an open STL, a STEP, a point cloud; plus the cube's sandbox result."""
    folder = tmp_path_factory.mktemp("parts")
    cube = sandbox.run(example_program("cube"))
    cube_mesh = cube.to_trimesh()
    cube_mesh.export(folder / "cube.stl")
    trimesh.Trimesh(cube_mesh.vertices, cube_mesh.faces[2:], process=False).export(folder / "open.stl")
    (folder / "sub").mkdir()
    assert sandbox.run(example_program("cylinder"), step_path=folder / "sub" / "bar.step").ok
    np.save(folder / "scan.npy", trimesh.sample.sample_surface(cube_mesh, 20000, seed=1)[0])
    (folder / "notes.txt.bak").write_text("not an input")
    return folder, cube


def test_mesh_folder_gives_each_part_in_the_model_frame_and_names_the_open_ones(parts):
    folder, cube = parts
    notices = []
    items = open_mesh_folder(folder, num_surface_points=1024, notice=notices.append)
    by_name = {i.name: i for i in items}
    assert list(by_name) == ["cube.stl", "open.stl", "scan.npy", "sub/bar.step"]
    assert {n: i.target.watertight for n, i in by_name.items()} == {
        "cube.stl": True, "open.stl": False, "scan.npy": False, "sub/bar.step": True}
    assert by_name["scan.npy"].target.mesh is None and by_name["scan.npy"].points.shape == (1024, 3)
    assert all(i.family is None and i.points.shape == (1024, 3) for i in items)
    for item in items:
        _in_model_frame(item.points)
    assert len(notices) == 1
    assert "2 of 4 inputs" in notices[0] and "open.stl, scan.npy" in notices[0] and "cd_input" in notices[0]
    # normalized exactly as inference normalizes a file: to_model_points of what load_geometry reads
    expected = to_model_points(load_geometry(folder / "cube.stl"), n_points=32, n_surface=1024, seed=5).points
    assert np.allclose(by_name["cube.stl"].model_points(seed=5, n_points=32), expected, atol=1e-5)
    # the cube's program scores the maximum on its own mesh; the open one falls back to cd_input
    iou_input, cd_input = get_reward("iou_input"), get_reward("cd_input")
    assert score([cube], by_name["cube.stl"].target, iou_input) == [pytest.approx(REWARD_SCALE, abs=1e-6)]
    assert score([cube], by_name["open.stl"].target, iou_input) == score([cube], by_name["open.stl"].target,
                                                                         cd_input)
    assert len(open_mesh_folder(folder, num_surface_points=64, limit=2, notice=notices.append)) == 2


def test_a_broken_file_or_a_bad_folder_is_one_clear_error(parts, tmp_path):
    folder, _ = parts
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "broken.stl").write_bytes(b"\x00garbage that is no STL" * 3)
    with pytest.raises(InputError, match=r"broken.stl: "):
        open_mesh_folder(bad, num_surface_points=64, notice=lambda _: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no point cloud, mesh or STEP file"):
        open_mesh_folder(tmp_path / "empty")
    with pytest.raises(InputError, match="not a folder"):
        open_mesh_folder(folder / "cube.stl")
    with pytest.raises(InputError, match="no such folder"):
        open_mesh_folder(tmp_path / "missing")
