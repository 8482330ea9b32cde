"""Every verb checks where it will write before the work starts: one line, exit 2, nothing written.

Tests run as root, where a chmod'ed folder is still writable; a path under a regular file
(and, on Linux, under /proc) cannot be written by anyone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cad_recode.cli import main

PROGRAM = "import cadquery as cq\nr=cq.Workplane('XY').box(10,10,10)\n"


@pytest.fixture
def place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("file.txt").write_text("not a folder")
    Path("part.py").write_text(PROGRAM)
    Path("programs").mkdir()
    return tmp_path


CASES = {
    "exec": ["exec", "part.py", "--output", "{out}/part.stl"],
    "points": ["points", "part.py", "--output", "{out}/points.npy"],
    "shapes": ["shapes", "cube", "--output", "{out}/cube.py"],
    "data generate": ["data", "generate", "--num", "2", "--output_dir", "{out}/programs"],
    "data prepare": ["data", "prepare", "--src", "programs", "--output_dir", "{out}/prepared"],
    "train": ["train", "--tiny_model", "{{hidden_size: 32}}", "--output_dir", "{out}/run"],
    "eval": ["eval", "--lora_path", "no_model", "--data", "programs", "--output_dir", "{out}/eval"],
    "merge": ["merge", "--lora_path", "no_adapter", "--output_path", "{out}/merged"],
    "curves": ["curves", "programs", "--output", "{out}/curves.png"],
}


@pytest.mark.parametrize("verb", CASES)
def test_an_output_under_a_file_is_refused_first_in_one_line(verb, place, capsys):
    argv = [arg.format(out="file.txt") for arg in CASES[verb]]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"cad-recode {verb}: error: cannot write")
    assert "file.txt is a file, not a folder" in err[0] and "invalid" not in err[0]  # exec: not the program's fault
    assert Path("file.txt").read_text() == "not a folder"


@pytest.mark.parametrize("verb", ["exec", "points", "data generate", "eval"])
def test_a_read_only_filesystem_is_refused_first(verb, place, capsys):
    proc = Path("/proc")
    if not proc.is_dir():
        pytest.skip("needs Linux /proc (read-only for everyone, root included)")
    argv = [arg.format(out="/proc/cad_recode_out") for arg in CASES[verb]]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "cannot write" in err[0] and "/proc is not writable" in err[0]


def test_merge_never_replaces_a_file_with_a_folder(place, capsys):
    code = main(["merge", "--lora_path", "no_adapter", "--output_path", "file.txt", "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write output_path file.txt: it is a file, not a folder" in err
    assert Path("file.txt").read_text() == "not a folder"
