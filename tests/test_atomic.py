import pytest

from cad_recode.atomic import atomic_dir, atomic_file


def test_atomic_file_commits_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("hello")
        assert not target.exists()
    assert target.read_text() == "hello"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_refuses_existing_without_overwrite(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    with pytest.raises(FileExistsError):
        with atomic_dir(target):
            pass


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "weights").write_text("v2-partial")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "v1"
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
