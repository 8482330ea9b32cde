"""The sandbox's OS layer, parent side: run the zygote (and so every worker) inside bubblewrap.

What the boundary is (``bwrap`` from Debian's ``bubblewrap`` package):

* own user, PID, network, IPC, UTS and cgroup namespaces (``--unshare-all``): no
  network at all, and every process of the sandbox lives in one PID namespace
  whose init is bwrap; when bwrap ends (``--die-with-parent``: when this process
  ends, or when :class:`~cad_recode.geometry.sandbox.Sandbox` closes the zygote)
  the kernel kills everything inside, whatever session or group it moved to;
* ``--new-session`` (no terminal to inject keystrokes into), ``--cap-drop ALL``;
* a filesystem made of read-only binds of exactly what Python and CadQuery need
  (``/usr``, the interpreter's installation, its standard library and site
  directories, the ``cad_recode`` package folder itself, a few files of ``/etc``),
  a private ``/dev`` and ``/proc``, and one writable tmpfs, :data:`SCRATCH_ROOT`
  (:data:`SCRATCH_BYTES` in all), that holds a scratch directory per worker
  (removed when the worker ends). The root, ``/dev`` and ``/proc`` are then
  remounted read-only, so even without Landlock nothing else takes a write
  (``/dev``'s device nodes are the host's; seccomp keeps their metadata as it is).
  The caller's working directory, its script's directory and every other
  ``sys.path`` entry (see :func:`python_paths`), home directories, ``/tmp`` and
  ``/etc/shadow`` are simply not there;
* a clean environment (no tokens or keys inherited).

Inside, each worker confines itself further right after the fork
(:mod:`cad_recode.geometry._confine_worker`: Landlock, a file size limit, seccomp).

:func:`require_os_sandbox` probes all this once per process and raises
:class:`OsSandboxUnavailable` with one line saying how to install what is missing.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
import sysconfig

from cad_recode.errors import CadRecodeError
from cad_recode.geometry._confine_worker import WORKER_FILE_BYTES

SCRATCH_ROOT = "/scratch"
"""Inside the sandbox: the tmpfs that holds one scratch directory per worker."""
SCRATCH_BYTES = 2 * WORKER_FILE_BYTES
"""Size of that tmpfs, shared by all workers: its files are memory that no worker's ``RLIMIT_AS`` counts."""
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`) and pyseccomp "
                "(`pip install pyseccomp`), or pass --unsafe_no_os_sandbox to run programs without OS "
                "confinement (UNSAFE: a hostile program can then read and write your files)")
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "localtime")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_KEPT_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "PATH")


class OsSandboxUnavailable(CadRecodeError):
    """The OS layer cannot start here; the message says what is missing and how to install it."""

    exit_code = 2


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _existing_real_dirs(paths) -> set[str]:
    return {os.path.realpath(p) for p in paths if p and os.path.isdir(p)}


def _library_dirs() -> set[str]:
    """This interpreter's standard library and every site directory it installs packages into."""
    scheme = sysconfig.get_paths()
    dirs = [scheme[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    dirs += site.getsitepackages()
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return _existing_real_dirs(dirs)


def package_dir() -> str:
    """Real path of the ``cad_recode`` package folder (in site-packages, or in an editable install's source tree)."""
    import cad_recode

    return os.path.dirname(os.path.realpath(cad_recode.__file__))


def python_paths() -> list[str]:
    """The zygote's import path: the ``sys.path`` entries inside the standard library or a site directory, in
    order, then the folder that holds ``cad_recode``.

    Every other entry is the caller's, not the worker's: ``sys.path[0]`` (the working directory under
    ``python -m``, a script's directory), a test folder, an editable install's source tree. They may hold
    anything (a repository's ``.git``, a home directory's keys), so they are neither on the path nor bound.
    """
    libraries = _library_dirs()
    seen: dict[str, None] = {}
    for path in map(os.path.realpath, filter(os.path.isdir, filter(None, sys.path))):
        if any(_within(path, folder) for folder in libraries):
            seen.setdefault(path, None)
    seen.setdefault(os.path.dirname(package_dir()), None)
    return list(seen)


def _python_dirs() -> set[str]:
    """Folders Python needs bound: the interpreter's installation, its import path, and the package folder alone
    (binding its parent would expose the rest of an editable install's source tree)."""
    interpreter = os.path.realpath(sys.executable)
    dirs = _existing_real_dirs((os.path.dirname(os.path.dirname(interpreter)), sys.base_prefix, sys.base_exec_prefix))
    dirs.update(python_paths())
    package = package_dir()
    if not any(_within(os.path.dirname(package), folder) for folder in _library_dirs()):
        dirs.discard(os.path.dirname(package))
    dirs.add(package)
    return dirs


def _exposes_a_home(path: str) -> bool:
    """Is ``path`` the filesystem root, a home directory or a folder above one (binding it would expose the home)?"""
    home = os.path.realpath(os.path.expanduser("~"))
    return path == "/" or _within(home, path)


def _read_only_mounts() -> list[str]:
    """bwrap arguments for the read-only part of the filesystem."""
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC_FILES:
        path = os.path.join("/etc", name)
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    covered: list[str] = list(_SYSTEM_DIRS)
    for path in sorted(_python_dirs(), key=len):  # skip paths inside one already bound
        if any(_within(path, c) for c in covered) or _exposes_a_home(path):
            continue
        covered.append(path)
        args += ["--ro-bind", path, path]
    return args


def sandbox_environment(extra: dict[str, str]) -> list[str]:
    """bwrap arguments for a clean environment: locale, PATH, PYTHONPATH and ``extra``."""
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.update({k: v for k, v in os.environ.items() if k.startswith(("CSF_", "MMGT_"))})  # OCCT settings
    env.update(PYTHONPATH=os.pathsep.join(python_paths()), HOME=SCRATCH_ROOT, TMPDIR=SCRATCH_ROOT,
               PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1", **extra)
    args = ["--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, value]
    return args


@functools.lru_cache(maxsize=None)
def bwrap_sizes_tmpfs(bwrap: str) -> bool:
    """Does this bwrap have ``--size`` (0.7 and later)?"""
    try:
        done = subprocess.run([bwrap, "--help"], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--size" in done.stdout + done.stderr


def _scratch_mount(bwrap: str) -> list[str]:
    """The scratch tmpfs, :data:`SCRATCH_BYTES` large (an older bwrap leaves the kernel's default, half the RAM)."""
    size = ["--size", str(SCRATCH_BYTES)] if bwrap_sizes_tmpfs(bwrap) else []
    return [*size, "--tmpfs", SCRATCH_ROOT]


def bwrap_command(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` (a command that runs Python) wrapped in bwrap with the boundary of the module doc."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise OsSandboxUnavailable(f"cannot confine programs: `bwrap` was not found on PATH; {INSTALL_HINT}")
    return [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        *_read_only_mounts(), "--dev", "/dev", "--proc", "/proc", *_scratch_mount(bwrap),
        "--remount-ro", "/", "--remount-ro", "/dev", "--remount-ro", "/proc",  # writable: the scratch tmpfs alone
        "--chdir", SCRATCH_ROOT, *sandbox_environment(env), "--",
        os.path.realpath(sys.executable), "-s", *argv,
    ]


@functools.lru_cache(maxsize=1)
def _probe() -> str:
    """'' when bwrap, namespaces, seccomp and this package all work inside the boundary; else the reason."""
    try:
        import pyseccomp  # noqa: F401  (the worker loads its filter with it)
    except (ImportError, OSError) as exc:
        return f"the seccomp layer needs pyseccomp and libseccomp ({exc})"
    try:
        command = bwrap_command(["-c", "import cad_recode.geometry._confine_worker"], {})
    except OsSandboxUnavailable as exc:
        return str(exc).split(";")[0].removeprefix("cannot confine programs: ")
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap does not run ({exc})"
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"bwrap cannot create the sandbox ({lines[-1] if lines else f'exit code {done.returncode}'})"
    return ""


def require_os_sandbox() -> None:
    """Raise :class:`OsSandboxUnavailable` (one line: what is missing, how to install) unless the OS layer works."""
    problem = _probe()
    if problem:
        raise OsSandboxUnavailable(f"cannot confine programs: {problem}; {INSTALL_HINT}")
