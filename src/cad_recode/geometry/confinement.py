"""The sandbox's OS layer, parent side: run the zygote (and so every worker) inside bubblewrap.

What the boundary is (``bwrap`` from Debian's ``bubblewrap`` package):

* own user, PID, network, IPC, UTS and cgroup namespaces (``--unshare-all``): no
  network at all, and every process of the sandbox lives in one PID namespace
  whose init is bwrap; when bwrap ends (``--die-with-parent``: when this process
  ends, or when :class:`~cad_recode.geometry.sandbox.Sandbox` closes the zygote)
  the kernel kills everything inside, whatever session or group it moved to;
* ``--new-session`` (no terminal to inject keystrokes into), ``--cap-drop ALL``;
* a filesystem made of read-only binds of exactly what Python and CadQuery need
  (``/usr``, the interpreter's prefix, every ``sys.path`` entry, a few files of
  ``/etc``), a private ``/dev`` and ``/proc``, and one writable tmpfs,
  :data:`SCRATCH_ROOT`, that holds a scratch directory per worker (removed when the
  worker ends). Home directories, ``/work`` outside ``sys.path``, ``/tmp`` and
  ``/etc/shadow`` are simply not there;
* a clean environment (no tokens or keys inherited).

Inside, each worker confines itself further right after the fork
(:mod:`cad_recode.geometry._confine_worker`: Landlock, seccomp).

:func:`require_os_sandbox` probes all this once per process and raises
:class:`OsSandboxUnavailable` with one line saying how to install what is missing.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

from cad_recode.errors import CadRecodeError

SCRATCH_ROOT = "/scratch"
"""Inside the sandbox: the tmpfs that holds one scratch directory per worker."""
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`) and pyseccomp "
                "(`pip install pyseccomp`), or pass --unsafe_no_os_sandbox to run programs without OS "
                "confinement (UNSAFE: a hostile program can then read and write your files)")
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "localtime")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_KEPT_ENV = ("LANG", "LC_ALL", "LC_CTYPE", "TZ", "PATH")


class OsSandboxUnavailable(CadRecodeError):
    """The OS layer cannot start here; the message says what is missing and how to install it."""

    exit_code = 2


def python_paths() -> list[str]:
    """Real paths of every existing ``sys.path`` entry, in order (what the zygote imports from)."""
    seen: dict[str, None] = {}
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            seen.setdefault(os.path.realpath(entry), None)
    return list(seen)


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
    interpreter = os.path.realpath(sys.executable)
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(interpreter)))
    roots.update(python_paths())
    covered: list[str] = []
    for path in sorted(roots, key=len):  # skip paths inside one already bound
        if path.startswith(("/usr/", "/bin/", "/lib")) or any(path.startswith(c + "/") for c in covered):
            continue
        if os.path.isdir(path):
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


def bwrap_command(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` (a command that runs Python) wrapped in bwrap with the boundary of the module doc."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise OsSandboxUnavailable(f"cannot confine programs: `bwrap` was not found on PATH; {INSTALL_HINT}")
    return [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        *_read_only_mounts(), "--dev", "/dev", "--proc", "/proc", "--tmpfs", SCRATCH_ROOT,
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
