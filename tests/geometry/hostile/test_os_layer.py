"""Programs that call the kernel directly: other processes' limits, file metadata, memory RLIMIT_AS does not
count, signals, and the caller's own directories. Each probe records the errno of every attempt; the OS layer
must refuse the attack and leave the pool (and the zygote that forks its workers) as it was.
"""

from __future__ import annotations

import ast
import errno
import os
import platform
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest

import cad_recode
from cad_recode.geometry import confinement
from cad_recode.geometry._confine_worker import WORKER_FILE_BYTES
from cad_recode.geometry.sandbox import Sandbox
from hostile_common import GOOD, GOOD_VOLUME, REACH_OS, assert_contained  # noqa: E402

# What a probe calls: attempt(f, *args) gives 0 or the OSError's errno; c_attempt(name, *args) the same for a
# libc function that returns -1 and sets errno. A probe fills `seen` and ends by raising it.
PROBE = REACH_OS + (
    "ctypes = o['sys'].modules['ctypes']\nresource = o['sys'].modules['resource']\n"
    "libc = ctypes.CDLL(None, use_errno=True)\nlibc.syscall.restype = ctypes.c_long\nseen = {}\n"
    "zygote = o['getppid']()\n"
    "def attempt(call, *args):\n    try:\n        call(*args)\n    except OSError as exc:\n"
    "        return exc.errno\n    return 0\n"
    "def c_attempt(name, *args):\n    return ctypes.get_errno() if libc[name](*args) == -1 else 0\n"
)
SYSCALL_NUMBERS = {  # the ones without a Python or libc wrapper for another process
    "x86_64": {"ioprio_get": 252, "ioprio_set": 251, "rt_tgsigqueueinfo": 297},
    "aarch64": {"ioprio_get": 31, "ioprio_set": 30, "rt_tgsigqueueinfo": 240},
}.get(platform.machine(), {})
NOBODY = 3_999_999  # a pid that does not exist: without seccomp the kernel answers ESRCH, not EPERM


def observe(pool: Sandbox, probe: str) -> tuple:
    """(result, the probe's `seen` dict) of running ``probe`` unchecked, in the cadquery profile."""
    code = PROBE + f"NR = {SYSCALL_NUMBERS!r}\nNOBODY = {NOBODY}\n" + probe + "raise ValueError('seen ' + repr(seen))\n"
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert result.reason.startswith("ValueError: seen {"), result.reason
    return result, ast.literal_eval(result.reason.removeprefix("ValueError: seen ").rsplit(" (line ", 1)[0])


def assert_fresh_workers_measure_right(pool: Sandbox) -> None:
    """Each cadquery-profile run gets a newly forked worker: the zygote still forks good ones."""
    for _ in range(2):
        result = pool.run(GOOD, profile="cadquery")
        assert result.ok, result.reason
        assert result.volume == pytest.approx(GOOD_VOLUME, rel=1e-6)


def test_other_processes_limits_priority_and_cpus_are_out_of_reach(pool, marker):
    # Each call re-applies the current value, so a missing rule changes nothing but the errno.
    probe = (
        "nofile = resource.getrlimit(resource.RLIMIT_NOFILE)\nnice = o['getpriority'](o['PRIO_PROCESS'], 0)\n"
        "cpus = o['sched_getaffinity'](0)\nparam = o['sched_param'](0)\n"
        "seen['prlimit'] = attempt(resource.prlimit, zygote, resource.RLIMIT_NOFILE, nofile)\n"
        "seen['setpriority'] = attempt(o['setpriority'], o['PRIO_PROCESS'], zygote, nice)\n"
        "seen['setpriority_user'] = attempt(o['setpriority'], o['PRIO_USER'], 0, nice)\n"
        "seen['affinity'] = attempt(o['sched_setaffinity'], zygote, cpus)\n"
        "seen['scheduler'] = attempt(o['sched_setscheduler'], zygote, o['SCHED_OTHER'], param)\n"
        "seen['param'] = attempt(o['sched_setparam'], zygote, param)\n"
        "if NR:\n    io = libc.syscall(NR['ioprio_get'], 1, 0)\n"
        "    seen['ioprio'] = 0 if libc.syscall(NR['ioprio_set'], 1, zygote, io) == 0 else ctypes.get_errno()\n"
        # the worker's own limits are set this way, and must stay settable
        "seen['own_rlimit'] = attempt(resource.setrlimit, resource.RLIMIT_NOFILE, nofile)\n"
        "seen['own_affinity'] = attempt(o['sched_setaffinity'], 0, cpus)\n"
        "seen['own_priority'] = attempt(o['setpriority'], o['PRIO_PROCESS'], 0, nice)\n"
    )
    result, seen = observe(pool, probe)
    others = {"prlimit", "setpriority", "setpriority_user", "affinity", "scheduler", "param"}
    others |= {"ioprio"} if SYSCALL_NUMBERS else set()
    assert {name: seen[name] for name in others} == dict.fromkeys(others, errno.EPERM)
    assert (seen["own_rlimit"], seen["own_affinity"], seen["own_priority"]) == (0, 0, 0)
    assert_contained(pool, result, marker)
    assert_fresh_workers_measure_right(pool)


def test_file_metadata_cannot_change(pool, marker):
    # /dev's nodes are the host's, so the probe uses its own files and /scratch, each set to what it is.
    probe = (
        "fd = o['open']('probe', o['O_WRONLY'] | o['O_CREAT'], 0o600)\n"
        "st = o['stat']('probe')\nroot_mode = o['stat']('/scratch').st_mode & 0o7777\n"
        "seen['chmod_scratch_root'] = attempt(o['chmod'], '/scratch', root_mode)\n"
        "seen['chmod'] = attempt(o['chmod'], 'probe', 0o600)\n"
        "seen['fchmod'] = attempt(o['fchmod'], fd, 0o600)\n"
        "seen['chown'] = attempt(o['chown'], 'probe', st.st_uid, st.st_gid)\n"
        "seen['lchown'] = attempt(o['lchown'], 'probe', st.st_uid, st.st_gid)\n"
        "seen['fchown'] = attempt(o['fchown'], fd, st.st_uid, st.st_gid)\n"
        "seen['utime'] = attempt(o['utime'], 'probe', None)\n"
        "seen['setxattr'] = attempt(o['setxattr'], 'probe', 'user.probe', b'1')\n"
        "seen['removexattr'] = attempt(o['removexattr'], 'probe', 'user.probe')\n"
    )
    result, seen = observe(pool, probe)
    assert seen == dict.fromkeys(["chmod_scratch_root", "chmod", "fchmod", "chown", "lchown", "fchown", "utime",
                                  "setxattr", "removexattr"], errno.EPERM)
    assert_contained(pool, result, marker)
    assert_fresh_workers_measure_right(pool)  # a /scratch made read-only would stop every new worker


def test_signals_cannot_be_aimed_at_other_processes(pool, marker):
    probe = (
        "seen['sigqueue'] = c_attempt('sigqueue', NOBODY, 0, ctypes.c_void_p(0))\n"
        "seen['own_sigqueue'] = c_attempt('sigqueue', o['getpid'](), 0, ctypes.c_void_p(0))\n"
        "if NR:\n    info = (ctypes.c_int * 32)(0, 0, -1)  # si_code SI_QUEUE, which the kernel lets through\n"
        "    tg = libc.syscall(NR['rt_tgsigqueueinfo'], NOBODY, NOBODY, 0, info)\n"
        "    seen['tgsigqueue'] = 0 if tg == 0 else ctypes.get_errno()\n"
        "r, w = o['pipe']()\nowner = (ctypes.c_int * 2)(1, zygote)  # F_OWNER_PID\n"
        "seen['setown'] = c_attempt('fcntl', r, 8, zygote)\n"
        "seen['setown_ex'] = c_attempt('fcntl', r, 15, owner)\n"
        "seen['setsig'] = c_attempt('fcntl', r, 10, 10)\n"
        "seen['setpipe_sz'] = c_attempt('fcntl', w, 1031, 4096)\n"
    )
    result, seen = observe(pool, probe)
    assert seen.pop("own_sigqueue") == 0
    expected = ["sigqueue", "setown", "setown_ex", "setsig", "setpipe_sz"] + (["tgsigqueue"] if SYSCALL_NUMBERS else [])
    assert seen == dict.fromkeys(expected, errno.EPERM)
    assert_contained(pool, result, marker)


def test_memory_that_rlimit_as_does_not_count_is_refused(pool, marker):
    probe = (
        "seen['memfd'] = attempt(o['memfd_create'], 'probe')\n"
        "for name, args, remove in (('shmget', (0, 1 << 20, 0o1600), 'shmctl'), ('msgget', (0, 0o1600), 'msgctl'),\n"
        "                           ('semget', (0, 1, 0o1600), 'semctl')):\n"
        "    ident = libc[name](*args)\n"
        "    seen[name] = ctypes.get_errno() if ident == -1 else 0\n"
        "    if ident != -1:  # IPC objects outlive the worker: do not leave one behind\n"
        "        libc[remove](ident, 0, None)\n"
    )
    result, seen = observe(pool, probe)
    assert seen == dict.fromkeys(["memfd", "shmget", "msgget", "semget"], errno.EPERM)
    assert_contained(pool, result, marker)


def test_no_threads_and_no_watches(pool, marker):
    """A program made 6000 raw threads in 0.2 s, each a PID of the machine's (RLIMIT_NPROC does not bind root)."""
    probe = (
        "try:\n    o['sys'].modules['_thread'].start_new_thread(o['getpid'], ())\n    seen['thread'] = 0\n"
        "except RuntimeError:\n    seen['thread'] = 'refused'\n"
        "seen['inotify'] = c_attempt('inotify_init1', 0)\n"
    )
    result, seen = observe(pool, probe)
    assert seen == {"thread": "refused", "inotify": errno.EPERM}
    assert_contained(pool, result, marker)
    assert_fresh_workers_measure_right(pool)


def test_a_program_cannot_raise_its_own_memory_limit(pool, marker):
    probe = (
        "soft, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
        "seen['hard_is_soft'] = soft == hard != resource.RLIM_INFINITY\n"
        "try:\n    resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "    seen['raised'] = True\nexcept (ValueError, OSError):\n    seen['raised'] = False\n"
    )
    result, seen = observe(pool, probe)
    assert seen == {"hard_is_soft": True, "raised": False}
    assert_contained(pool, result, marker)


def test_scratch_files_are_bounded(pool, marker):
    probe = (  # sparse writes: the probe itself uses no memory
        f"fd = o['open']('big', o['O_WRONLY'] | o['O_CREAT'])\nLIMIT = {WORKER_FILE_BYTES}\n"
        "seen['below_limit'] = attempt(o['pwrite'], fd, b'x', LIMIT - 1)\n"
        "seen['past_limit'] = attempt(o['pwrite'], fd, b'x', LIMIT)\n"
        "fs = o['statvfs']('/scratch')\nseen['scratch_bytes'] = fs.f_blocks * fs.f_frsize\n"
    )
    result, seen = observe(pool, probe)
    assert (seen["below_limit"], seen["past_limit"]) == (0, errno.EFBIG)
    if confinement.bwrap_sizes_tmpfs(shutil.which("bwrap")):
        assert seen["scratch_bytes"] == confinement.SCRATCH_BYTES
    assert_contained(pool, result, marker)


def test_only_the_scratch_tmpfs_takes_writes(pool, marker):
    # Landlock refuses these too (EACCES); the read-only root, /dev and /proc refuse them even where it is missing.
    probe = "".join(f"seen[{path!r}] = attempt(o['open'], {path!r}, o['O_WRONLY'] | o['O_CREAT'])\n"
                    for path in ("/probe", "/dev/shm/probe", "/dev/probe", str(marker)))
    probe += "seen['zygote_oom'] = attempt(o['open'], '/proc/%d/oom_score_adj' % zygote, o['O_WRONLY'])\n"
    result, seen = observe(pool, probe)
    assert seen == dict.fromkeys(["/probe", "/dev/shm/probe", "/dev/probe", str(marker), "zygote_oom"], errno.EROFS)
    assert_contained(pool, result, marker)


def test_the_callers_directories_are_not_bound(tmp_path, monkeypatch):
    # `python -m cad_recode.cli ...` from a home directory puts it first on sys.path ('' for -c and the REPL).
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("FAKE-PRIVATE-KEY")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    package = Path(cad_recode.__file__).resolve().parent
    hidden = {"key": tmp_path / ".ssh" / "id_rsa", "tests": Path(__file__).parent,
              "repo": package.parent.parent / "pyproject.toml"}  # an editable install's project; else absent anyway
    probe = "".join(f"seen[{name!r}] = attempt(o['stat'], {str(path)!r})\n" for name, path in hidden.items())
    probe += f"seen['package'] = attempt(o['stat'], {str(package / '__init__.py')!r})\n"
    with Sandbox(workers=1, timeout=10) as sandbox:
        result, seen = observe(sandbox, probe)
        assert seen == {**dict.fromkeys(hidden, errno.ENOENT), "package": 0}, seen
        assert not result.ok
        good = sandbox.run(GOOD)
        assert good.ok and good.volume == pytest.approx(GOOD_VOLUME, rel=1e-6), good.reason


def test_only_library_folders_and_the_package_are_on_the_import_path(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), *sys.path])
    paths = confinement.python_paths()
    assert str(tmp_path) not in paths and "" not in paths and os.getcwd() not in paths
    assert str(Path(cad_recode.__file__).resolve().parent.parent) in paths
