"""Write files and folders under a temporary name, then rename them into place.

A reader (or a rerun after a crash) sees either the complete old content or the
complete new content, never a half-written file. Everything the project saves
(exports, dataset shards, checkpoints) goes through these two helpers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from cad_recode.errors import InputError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success move it to ``path``.

    With ``overwrite`` an existing ``path`` is replaced only after the new
    content is complete; without it an existing ``path`` is an error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists")
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp_path, 0o777 & ~_current_umask())
    try:
        yield tmp_path
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp_path, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp_path, path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise


def check_writable(path: str | os.PathLike, *, folder: bool = False, what: str = "output") -> Path:
    """One-line InputError unless ``path`` (a file, or with ``folder`` a folder) can be written.

    Meant to run before any work, so a command never finds out at the end. Creates
    nothing: a temporary file is made and removed in the nearest folder that exists
    (a read-only filesystem fails there even for root; a path under a regular file
    fails by name).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"cannot write {what} {path}: it is a file, not a folder; choose a folder")
    if not folder and path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name such as {path / 'part.py'}")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InputError(f"cannot write {what} {path}: {blocker} is a file, not a folder; choose another path")
    existing = path if path.is_dir() else next(p for p in path.parents if p.exists())
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise InputError(f"cannot write {what} {path}: {existing} is not writable ({err.strerror or err}); "
                         "choose a writable folder") from None
    return path
