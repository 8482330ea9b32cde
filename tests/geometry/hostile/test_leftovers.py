"""What a program leaves in its scratch directory is gone after it, and cannot harm the zygote that removes it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cad_recode.geometry._sandbox_worker import remove_tree  # noqa: E402
from hostile_common import REACH_OS, assert_contained  # noqa: E402

USED_SCRATCH = REACH_OS + "fs = o['statvfs']('/scratch')\nraise ValueError('used %d' % ((fs.f_blocks - fs.f_bfree) * fs.f_frsize))\n"


def used_scratch_bytes(pool) -> int:
    result = pool.run(USED_SCRATCH, _unchecked=True, profile="cadquery")
    assert result.reason.startswith("ValueError: used "), result.reason
    return int(result.reason.split()[2])


def test_thousands_of_nested_directories_do_not_end_the_zygote(pool, marker):
    """Python 3.11's recursive rmtree raised RecursionError in the zygote's SIGCHLD handler: it exited,
    taking every worker with it."""
    zygote = pool._zygote
    code = REACH_OS + "for _ in range(3000):\n    o['mkdir']('a')\n    o['chdir']('a')\nraise ValueError('nested')\n"

    result = pool.run(code, _unchecked=True, profile="cadquery")

    assert result.reason.startswith("ValueError: nested"), result.reason
    assert_contained(pool, result, marker)
    assert pool._zygote is zygote and zygote.alive()


def test_an_unreadable_directory_is_removed_with_its_worker(pool, marker):
    """A directory made with mode 0o300 (no chmod needed) could not be listed, so it and its files stayed in
    the shared scratch tmpfs until the sandbox closed; filled, it broke every later export."""
    before = used_scratch_bytes(pool)
    code = REACH_OS + (
        "o['mkdir']('d', 0o300)\nfd = o['open']('d/f', o['O_CREAT'] | o['O_WRONLY'], 0o600)\n"
        "for _ in range(32):\n    o['write'](fd, b'x' * (1 << 20))\nraise ValueError('wrote 32 MiB')\n"
    )

    result = pool.run(code, _unchecked=True, profile="cadquery")

    assert result.reason.startswith("ValueError: wrote 32 MiB"), result.reason
    assert used_scratch_bytes(pool) - before < 8 << 20
    assert_contained(pool, result, marker)


def test_remove_tree_takes_deep_unreadable_and_name_clashing_trees(tmp_path):
    root = tmp_path / "scratch"
    root.mkdir()
    here = os.getcwd()
    try:
        os.chdir(root)
        for _ in range(3000):  # deeper than one path may name (PATH_MAX, 4096 bytes)
            os.mkdir("a")
            os.chdir("a")
    finally:
        os.chdir(here)
    (root / "locked").mkdir(mode=0o300)
    (root / "locked" / "f").write_bytes(b"x")  # root may write where the mode says it may not
    (root / ".removing-1" / "x").mkdir(parents=True)  # the name the walk would move a directory to
    (root / "link").symlink_to(tmp_path / "outside")
    (tmp_path / "outside").write_text("kept")

    remove_tree(str(root), keep_root=True)

    assert root.is_dir() and list(root.iterdir()) == []
    assert (tmp_path / "outside").read_text() == "kept"  # a link is removed, never followed
    remove_tree(str(root))
    assert not root.exists()
