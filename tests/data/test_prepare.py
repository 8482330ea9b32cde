"""prepare_dataset: public-layout programs -> sharded meshes; failures, refusals, resume after SIGKILL."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cad_recode.data.prepare import prepare_dataset, read_failures
from cad_recode.data.shards import MANIFEST_NAME, PreparedSplit, partial_dir
from cad_recode.errors import InputError, UsageError

HEAD = "import cadquery as cq\n"
# Public CAD-Recode style programs with their exact solid volumes.
PLATE = HEAD + "w0=cq.Workplane('XY',origin=(0,0,-2))\nr=w0.workplane(offset=5/2).box(100,64,5)\n"
SHAFT = HEAD + "w0=cq.Workplane('YZ',origin=(-20,0,0))\nr=w0.cylinder(40,10)\n"
HOLED = HEAD + (
    "w0=cq.Workplane('ZX',origin=(0,0,0))\n"
    "r=w0.sketch().push([(0,0)]).rect(80,40).push([(20,0)]).circle(10,mode='s').finalize().extrude(30)\n"
)
ARCH = HEAD + (
    "w0=cq.Workplane('XY',origin=(0,0,-5))\n"
    "r=w0.sketch().segment((-50,-20),(50,-20)).segment((50,20)).arc((0,40),(-50,20)).close()"
    ".assemble().finalize().extrude(10)\n"
)
TOWER = HEAD + (
    "w0=cq.Workplane('XY',origin=(0,0,0))\nw1=cq.Workplane('XY',origin=(0,0,15))\n"
    "r=w0.box(20,20,20).union(w1.box(10,10,10))\n"
)
EXACT_VOLUMES = {
    "train/batch_00/0.py": 100 * 64 * 5,
    "train/batch_00/1.py": math.pi * 10**2 * 40,
    "train/batch_00/2.py": 80 * 40 * 30 - math.pi * 10**2 * 30,
    "val/0.py": 20**3 + 10**3,
}
# Broken inputs: each must be reported with its status and the run must go on.
BROKEN = {
    "train/batch_00/4.py": (HEAD + "r=cq.Workplane('XY').box(1,2,3\n", "syntax_error"),
    "train/batch_00/5.py": ("import os\nos.system('touch /tmp/cad_recode_pwned')\n", "rejected"),
    "train/batch_01/0.py": (b"r=cq.Workplane('XY')\xff\xfe.box(1,1,1)\n", "not_utf8"),
    "train/batch_01/1.py": ("", "empty"),
    "val/1.py": ("# padding\n" * 8000, "too_large"),
    "test/1.py": (HEAD + "r=cq.Workplane('XY').rect(10,10)\n", "invalid"),
}


def box_program(k: int) -> str:
    return HEAD + f"w0=cq.Workplane('XY',origin=(0,0,{k - 9}))\nr=w0.workplane(offset={k}/2).box({10 + k},{20 + k},{k + 1})\n"


def write_source(root: Path) -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = {
        "train/batch_00/0.py": PLATE, "train/batch_00/1.py": SHAFT, "train/batch_00/2.py": HOLED,
        "train/batch_00/3.py": ARCH, "val/0.py": TOWER, "test/0.py": PLATE,
        **{f"train/batch_01/{k}.py": box_program(k) for k in range(2, 14)},
        **{pid: content for pid, (content, _) in BROKEN.items()},
    }
    for pid, content in files.items():
        path = root / pid
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (root / "train" / ".hidden.py").write_text("ignored")
    return files


def read_all(root: Path) -> dict[str, list[tuple]]:
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    out = {}
    for split in manifest["splits"]:
        data = PreparedSplit.open(root, split)
        out[split] = [(r["id"], r["code"], r["vertices"], r["faces"]) for r in (data[i] for i in range(len(data)))]
    return out


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("programs")
    return root, write_source(root)


@pytest.fixture(scope="module")
def baseline(source, tmp_path_factory):
    """One uninterrupted run, two workers, shards of 3."""
    out = tmp_path_factory.mktemp("baseline") / "prepared"
    report = prepare_dataset(source[0], out, workers=2, shard_size=3, progress=False)
    return out, report


def test_public_style_programs_prepare_correctly(source, baseline):
    src, files = source
    out, report = baseline
    assert report.num_programs == len(files) == 24
    assert report.num_shapes == 24 - len(BROKEN)
    assert report.splits == {
        "train": {"programs": 20, "shapes": 16, "failed": 4},
        "val": {"programs": 2, "shapes": 1, "failed": 1},
        "test": {"programs": 2, "shapes": 1, "failed": 1},
    }
    content = read_all(out)
    ids = {split: [row[0] for row in rows] for split, rows in content.items()}
    assert ids["train"][:4] == [f"train/batch_00/{k}.py" for k in range(4)]
    assert ids["train"][4:] == [f"train/batch_01/{k}.py" for k in range(2, 14)]  # natural order: 2 < 10
    assert ids["val"] == ["val/0.py"] and ids["test"] == ["test/0.py"]
    for split, rows in content.items():
        for pid, code, vertices, faces in rows:
            assert code == files[pid]  # verbatim
            assert vertices.dtype == np.float32 and faces.dtype == np.int32
    train = PreparedSplit.open(out, "train")
    by_id = {train[i]["id"]: train[i] for i in range(len(train))} | {"val/0.py": PreparedSplit.open(out, "val")[0]}
    for pid, exact in EXACT_VOLUMES.items():
        row = by_id[pid]
        mesh = trimesh.Trimesh(row["vertices"], row["faces"])  # merges the per-face vertices
        assert mesh.is_watertight
        assert row["volume"] == pytest.approx(exact, rel=1e-9)  # the B-rep volume
        assert mesh.volume == pytest.approx(exact, rel=5e-3)  # the stored tessellation
    assert by_id["train/batch_00/0.py"]["num_faces"] == 6


def test_broken_programs_are_reported_not_fatal(baseline):
    out, report = baseline
    listed = {f.id: f for f in read_failures(out)}
    assert {pid: f.status for pid, f in listed.items()} == {pid: status for pid, (_, status) in BROKEN.items()}
    assert {f.id for f in report.failures} == set(BROKEN)
    assert "'os'" in listed["train/batch_00/5.py"].reason
    assert "0xff" in listed["train/batch_01/0.py"].reason
    assert "over the 65536-byte limit" in listed["val/1.py"].reason
    assert all(f.reason and "\n" not in f.reason for f in listed.values())
    assert not Path("/tmp/cad_recode_pwned").exists()
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["failures_by_status"] == report.failures_by_status
    assert sum(manifest["failures_by_status"].values()) == len(BROKEN)


def test_resume_after_sigkill_equals_uninterrupted_run(source, baseline, tmp_path):
    src, _ = source
    out = tmp_path / "prepared"
    work = partial_dir(out)

    # 1. Die inside the third shard's write: the bytes are on disk under a temporary name.
    killed = _run_prepare(src, out, die_at_shard_write=3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists()
    assert sorted(p.name for p in (work / "train").glob("shard-*")) == ["shard-00000.arrow", "shard-00001.arrow"]
    assert len(list((work / "train").glob(".shard-00002.arrow.*.tmp"))) == 1  # never a half shard
    with pytest.raises(InputError, match="unfinished preparation .* --resume"):
        prepare_dataset(src, out, shard_size=3, progress=False)

    # 2. Resume to the end: the temporary is swept, only the missing shards are prepared.
    report = prepare_dataset(src, out, shard_size=3, resume=True, progress=False)
    assert (report.shards_reused, report.shards_written) == (2, 9 - 2)  # train 7 shards, val 1, test 1
    sent_to_sandbox = 24 - 3  # all but the non-UTF-8, empty and too-large files
    assert report.programs_executed == sent_to_sandbox - 6  # shards 0 and 1 (6 programs) were kept
    assert not work.exists() and not list(out.rglob("*.tmp"))
    expected, got = read_all(baseline[0]), read_all(out)
    assert list(got) == list(expected)
    for split in expected:
        assert [r[:2] for r in got[split]] == [r[:2] for r in expected[split]]  # ids and code, no duplicates
        for (_, _, v1, f1), (_, _, v2, f2) in zip(got[split], expected[split]):
            np.testing.assert_array_equal(v1, v2)
            np.testing.assert_array_equal(f1, f2)
    assert json.loads((out / MANIFEST_NAME).read_text()) == json.loads((baseline[0] / MANIFEST_NAME).read_text())
    assert (out / "failures.csv").read_text() == (baseline[0] / "failures.csv").read_text()
    assert report.content_hash == baseline[1].content_hash


_PREPARE_SCRIPT = """
import os, signal, sys
from cad_recode.data import shards
from cad_recode.data.prepare import prepare_dataset

die_at = int(sys.argv[3])
if die_at:  # fault injection: SIGKILL right after a shard's bytes are written, before its rename
    real_fsync, calls = shards._fsync, []
    def fsync_then_die(path):
        real_fsync(path)
        calls.append(path)
        if len(calls) == die_at:
            os.kill(os.getpid(), signal.SIGKILL)
    shards._fsync = fsync_then_die
prepare_dataset(sys.argv[1], sys.argv[2], workers=1, shard_size=3, resume=True, progress=False)
"""


def _start_prepare(src: Path, out: Path, die_at_shard_write: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _PREPARE_SCRIPT, str(src), str(out), str(die_at_shard_write)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _run_prepare(src: Path, out: Path, die_at_shard_write: int) -> subprocess.CompletedProcess:
    proc = _start_prepare(src, out, die_at_shard_write)
    stdout, stderr = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_resume_of_a_finished_dataset_changes_nothing(source, baseline):
    out, first = baseline
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    report = prepare_dataset(source[0], out, shard_size=3, resume=True, progress=False)
    assert report.programs_executed == 0 and report.shards_written == 0 and report.shards_reused == 9
    assert report.content_hash == first.content_hash and report.num_shapes == first.num_shapes
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_refuses_to_clobber_outputs(source, baseline, tmp_path):
    src, out = source[0], baseline[0]
    with pytest.raises(InputError, match="already holds a prepared dataset; pass --resume .* or --overwrite"):
        prepare_dataset(src, out, shard_size=3, progress=False)
    with pytest.raises(InputError, match="prepared from other programs or another shard size"):
        prepare_dataset(src, out, shard_size=4, resume=True, progress=False)
    with pytest.raises(UsageError, match="--resume and --overwrite"):
        prepare_dataset(src, out, resume=True, overwrite=True)

    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(InputError, match="holds no prepared dataset"):
            prepare_dataset(src, precious, progress=False, **flags)
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_overwrite_replaces_a_dataset_only_when_the_new_one_is_complete(tmp_path):
    # Programs that fail before execution need no sandbox: a fast, complete run.
    first, second = tmp_path / "a", tmp_path / "b"
    for root, names in ((first, ["0", "1"]), (second, ["0", "1", "2"])):
        for name in names:
            (root / "val").mkdir(parents=True, exist_ok=True)
            (root / "val" / f"{name}.py").write_text("")
    out = tmp_path / "prepared"
    assert prepare_dataset(first, out, progress=False).num_programs == 2
    report = prepare_dataset(second, out, overwrite=True, progress=False)
    assert (report.num_programs, report.num_shapes, report.num_failed) == (3, 0, 3)
    assert json.loads((out / MANIFEST_NAME).read_text())["num_programs"] == 3
    assert len(PreparedSplit.open(out, "val")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "prepared"]  # no leftovers


def test_a_second_concurrent_run_is_refused(source, tmp_path):
    import fcntl

    out = tmp_path / "prepared"
    with open(tmp_path / ".prepared.lock", "w") as held:  # what a running prepare holds
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another `cad-recode data prepare` is writing it"):
            prepare_dataset(source[0], out, progress=False)
    assert not out.exists() and not partial_dir(out).exists()


_FULL_DISK_SCRIPT = """
import resource, signal, sys
from cad_recode.data.prepare import prepare_dataset
from cad_recode.errors import InputError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    prepare_dataset(sys.argv[1], sys.argv[2], shard_size=40, progress=False)
except InputError as err:
    print(err)
"""


def test_full_disk_leaves_no_corrupt_shard_and_resume_finishes(tmp_path):
    src, out = tmp_path / "src", tmp_path / "prepared"
    (src / "val").mkdir(parents=True)
    for k in range(50):  # empty programs fail before the sandbox; their reasons fill the shard's metadata
        (src / "val" / f"{k}.py").write_text("")
    run = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(src), str(out)],
                         capture_output=True, text=True, timeout=120)
    assert "no room to write shard-00000.arrow (File too large); free space and rerun with --resume" in run.stdout
    assert not out.exists() and not list(partial_dir(out).rglob("*.arrow")) and not list(tmp_path.rglob("*.tmp"))
    report = prepare_dataset(src, out, shard_size=40, resume=True, progress=False)
    assert (report.num_programs, report.num_failed, report.shards_written) == (50, 50, 2)


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "found no .py programs; lay programs out as train/batch_XX/N.py"),
        ({"0.py": PLATE, "1.py": PLATE}, "found 2 .py files but none under train/, val/ or test/"),
        ({"train/batch_00/notes.txt": "x"}, "found no .py programs"),
    ],
)
def test_source_without_programs_is_one_line_error(tmp_path, layout, message):
    src = tmp_path / "src"
    src.mkdir()
    for rel, text in layout.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    with pytest.raises(InputError, match=message) as err:
        prepare_dataset(src, tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and not partial_dir(tmp_path / "out").exists()


def test_missing_source_and_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="source folder does not exist"):
        prepare_dataset(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(UsageError, match="shard_size must be a positive integer"):
        prepare_dataset(tmp_path, tmp_path / "out", shard_size=0)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.5, 1.5])
def test_resume_after_sigkill_at_an_arbitrary_moment(source, baseline, tmp_path, delay):
    """SIGKILL from outside, ``delay`` seconds after the first shard exists (wherever the run is then)."""
    src, _ = source
    out = tmp_path / "prepared"
    proc = _start_prepare(src, out)
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        if list(partial_dir(out).glob("*/shard-*.arrow")):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    prepare_dataset(src, out, shard_size=3, resume=True, progress=False)
    assert read_all(out).keys() == read_all(baseline[0]).keys()
    assert json.loads((out / MANIFEST_NAME).read_text()) == json.loads((baseline[0] / MANIFEST_NAME).read_text())
    assert not partial_dir(out).exists() and not list(out.rglob("*.tmp"))


# Ordinary CadQuery, as a test set written by hand: outside the model's strict language.
HAND_WRITTEN = {
    "test/slot.py": HEAD + "result = cq.Workplane('XY').slot2D(80, 20).extrude(10)\n",
    "test/pocket.py": HEAD + "result = cq.Workplane('XY').box(60, 40, 20).faces('>Z').workplane().rect(20, 10).cutBlind(-5)\n",
}


def test_hand_written_cadquery_prepares_under_the_cadquery_profile_only(tmp_path):
    src = tmp_path / "src"
    for rel, text in HAND_WRITTEN.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    strict = prepare_dataset(src, tmp_path / "strict", progress=False)
    assert strict.num_shapes == 0 and {f.status for f in strict.failures} == {"rejected"}
    assert all("profile 'cadquery'" in f.reason for f in strict.failures)

    out = tmp_path / "ordinary"
    report = prepare_dataset(src, out, progress=False, profile="cadquery")
    assert report.num_shapes == 2 and not report.failures
    assert json.loads((out / MANIFEST_NAME).read_text())["profile"] == "cadquery"
    volumes = sorted(round(float(r["volume"])) for r in PreparedSplit.open(out, "test"))
    assert volumes == sorted([round(60 * 20 * 10 + math.pi * 10**2 * 10), 60 * 40 * 20 - 20 * 10 * 5])
    # a resume under the other profile would mix programs judged by two rules
    with pytest.raises(InputError, match="prepared with --profile cadquery, not strict"):
        prepare_dataset(src, out, progress=False, resume=True)
    assert prepare_dataset(src, out, progress=False, resume=True, profile="cadquery").programs_executed == 0
    with pytest.raises(UsageError, match="unknown sandbox profile 'loose'"):
        prepare_dataset(src, tmp_path / "bad", profile="loose")


def test_the_cli_passes_the_profile(tmp_path):
    src = tmp_path / "src"
    (src / "test").mkdir(parents=True)
    (src / "test" / "slot.py").write_text(HAND_WRITTEN["test/slot.py"])
    run = subprocess.run([sys.executable, "-m", "cad_recode.cli", "data", "prepare", "--src", str(src), "--output_dir",
                          str(tmp_path / "out"), "--profile", "cadquery", "--no_progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "prepared 1 of 1 programs" in run.stdout
