"""Kernel-level confinement a sandbox worker applies to itself, right after the zygote forks it.

Three layers, all irreversible for the process (``no_new_privs`` is set first):

* **Landlock** (:func:`restrict_files`): the worker may create, write, rename or
  remove files only beneath its own scratch directory (and write ``/dev/null``), and
  read anything but the other workers' scratch directories (what the programs running
  beside it write there: one ``map`` may hold programs from many sources); on kernels
  with Landlock ABI >= 6 it may not signal processes outside its own domain (the
  zygote, other workers) nor reach abstract unix sockets; with ABI >= 4
  it may not bind or connect TCP sockets. Landlock is skipped where the kernel has
  none (the bubblewrap layer still makes the filesystem read-only).
* **a file size limit** (:func:`limit_file_size`): ``RLIMIT_FSIZE`` of
  :data:`WORKER_FILE_BYTES`, well above the largest export the parent accepts;
  a larger write fails with ``EFBIG`` (``SIGXFSZ`` is ignored so it does not kill).
  Scratch files live in memory (a tmpfs that ``RLIMIT_AS`` does not see), so this
  and the tmpfs's own size (:data:`~cad_recode.geometry.confinement.SCRATCH_BYTES`)
  are what bound them.
* **seccomp** (:func:`deny_syscalls`): no new processes or threads (``fork``,
  ``vfork``, ``clone``, ``clone3``), no ``execve``, no ``ptrace`` or
  cross-process memory access, no ``setsid``/``setpgid`` (nothing leaves the
  worker's group), no new namespaces or mounts, no sockets, no signals to other
  processes (``kill``, ``tgkill``, ``rt_sigqueueinfo``, ``rt_tgsigqueueinfo``, and
  no ``fcntl`` ``F_SETOWN``/``F_SETOWN_EX``/``F_SETSIG``, which aim ``SIGIO`` at a
  process), no ``TIOCSTI`` terminal injection, no kernel keyring, BPF, perf or
  io_uring. Limits, priorities, CPU affinity, scheduling, I/O priority and NUMA
  placement may be changed only for the worker itself (target 0): the zygote and
  the other workers share its uid, and a worker that lowered the zygote's
  ``RLIMIT_AS`` or niceness would break or slow every worker forked after it. No
  ``chmod``/``chown``/``utimes``/xattr calls of any kind: Landlock does not cover
  file metadata, and ``/dev``'s nodes are the host's own inodes. No ``memfd``,
  SysV shared memory, message queues or semaphores, nor POSIX message queues:
  memory that ``RLIMIT_AS`` does not count, and IPC objects would outlive the
  worker. No ``F_SETPIPE_SZ``: the worker's pipes to the parent keep their size.
  No inotify or fanotify instances (counted against the host user's limits). No
  threads: a program made 6000 raw pthreads in 0.2 s, each a PID of the machine's
  (``RLIMIT_NPROC`` does not bind root, and there is no pids cgroup); workers run
  single-threaded anyway (OCCT's pool is the calling thread, OpenMP and BLAS are
  told one thread).

The filter is a deny-list over an allow default: CadQuery, OCCT and CPython use a
broad and version-dependent set of ordinary syscalls, and what a program could do
with them is already bounded by the namespaces of the bubblewrap layer.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import signal
import stat

from cad_recode.geometry.sandbox_frames import MAX_EXPORT_BYTES

WORKER_FILE_BYTES = 2 * MAX_EXPORT_BYTES
"""Largest file a worker may write (``RLIMIT_FSIZE``): twice the largest export the parent accepts."""

_PR_SET_NO_NEW_PRIVS = 38
_SYS_LANDLOCK = {"create_ruleset": 444, "add_rule": 445, "restrict_self": 446}  # same on x86_64 and aarch64
_LANDLOCK_CREATE_RULESET_VERSION = 1
_LANDLOCK_RULE_PATH_BENEATH = 1
# Filesystem rights (ABI 1..5).
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_WRITE_RIGHTS_V1 = sum(1 << i for i in (4, 5, 6, 7, 8, 9, 10, 11, 12)) | _WRITE_FILE  # remove/make_*
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1

_TIOCSTI = 0x5412
_F_SETOWN, _F_SETSIG, _F_SETOWN_EX, _F_SETPIPE_SZ = 8, 10, 15, 1031
_PRIO_PROCESS, _IOPRIO_WHO_PROCESS = 0, 1
_DENIED_SYSCALLS = (
    "fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "setsid", "setpgid", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount",
    "open_tree", "fsopen", "fsmount", "socket", "socketpair", "connect", "bind", "listen", "accept",
    "accept4", "tkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "kcmp", "keyctl",
    "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "personality", "init_module", "finit_module", "delete_module", "kexec_load", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "setuid", "setgid", "setreuid", "setregid",
    "setresuid", "setresgid", "setgroups", "name_to_handle_at", "open_by_handle_at",
    # file metadata, which Landlock does not cover
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime", "utimes",
    "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
    "fremovexattr",
    # memory outside RLIMIT_AS, and IPC objects that outlive the worker
    "memfd_create", "memfd_secret", "shmget", "msgget", "semget", "mq_open",
    # new threads (each takes a PID of the whole machine) and watches counted against the host user
    "clone", "inotify_init", "inotify_init1", "fanotify_init",
)
# Newer than some libseccomp versions that know no name for them; numbers of x86_64 and aarch64.
_UNNAMED_SYSCALLS = {"setxattrat": 463, "removexattrat": 466, "file_setattr": 469}
# Syscalls that act on the process (or user, group) an argument names: (name, argument, its "self" value).
_SELF_ONLY = (
    ("prlimit64", 0, 0), ("sched_setaffinity", 0, 0), ("sched_setscheduler", 0, 0), ("sched_setparam", 0, 0),
    ("sched_setattr", 0, 0), ("migrate_pages", 0, 0), ("move_pages", 0, 0),
    ("setpriority", 0, _PRIO_PROCESS), ("setpriority", 1, 0),
    ("ioprio_set", 0, _IOPRIO_WHO_PROCESS), ("ioprio_set", 1, 0),
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1  # the kernel's struct landlock_path_beneath_attr is packed
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args) -> int:
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def set_no_new_privs() -> None:
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(code)}")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    try:
        return _syscall(_SYS_LANDLOCK["create_ruleset"], None, ctypes.c_size_t(0),
                        ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    except OSError:
        return 0


def restrict_files(scratch: str) -> int:
    """Landlock: writes only beneath ``scratch`` (and to /dev/null), reads anywhere but beside ``scratch``
    in its parent (the other workers' scratch directories); returns the ABI used (0: none)."""
    abi = landlock_abi()
    if abi < 1:
        return 0
    write = _WRITE_RIGHTS_V1 | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0) | (
        _IOCTL_DEV if abi >= 5 else 0)
    read = _READ_FILE | _READ_DIR
    attr = _RulesetAttr(write | read, (_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
                        (_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else (16 if abi >= 4 else 8)
    ruleset = _syscall(_SYS_LANDLOCK["create_ruleset"], ctypes.byref(attr), ctypes.c_size_t(size),
                       ctypes.c_uint32(0))
    try:
        rules = [(path, read) for path in readable_outside(os.path.dirname(scratch))]
        rules += [(scratch, write | read), ("/dev/null", _WRITE_FILE | (_TRUNCATE if abi >= 3 else 0))]
        for path, rights in rules:
            _add_path_rule(ruleset, path, rights)
        _syscall(_SYS_LANDLOCK["restrict_self"], ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return abi


def readable_outside(scratch_root: str) -> list[str]:
    """What covers every path but ``scratch_root``'s subtree: at each level from ``/`` down, the
    entries beside the way to it (a rule on a directory covers all beneath it, so none may be on the way)."""
    covering, here = [], "/"
    for step in os.path.abspath(scratch_root).strip("/").split("/"):
        covering += [os.path.join(here, name) for name in sorted(os.listdir(here)) if name != step]
        here = os.path.join(here, step)
    return covering


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:  # a dangling link, or an entry gone since it was listed: nothing to read there
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= ~_READ_DIR  # directory rights on a file are refused (EINVAL)
        rule = _PathBeneath(rights, fd)
        _syscall(_SYS_LANDLOCK["add_rule"], ctypes.c_int(ruleset),
                 ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)


def limit_file_size() -> None:
    """``RLIMIT_FSIZE`` (soft and hard) of :data:`WORKER_FILE_BYTES`; a write past it fails with ``EFBIG``."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error the program sees, not a killed worker
    resource.setrlimit(resource.RLIMIT_FSIZE, (WORKER_FILE_BYTES, WORKER_FILE_BYTES))


def _deny_by_name(rules, denied, name: str) -> None:
    try:
        rules.add_rule(denied, name)
    except (OSError, ValueError, RuntimeError):  # a name this libseccomp does not know
        number = _UNNAMED_SYSCALLS.get(name)
        if number is not None and platform.machine() in ("x86_64", "aarch64"):
            rules.add_rule(denied, number)
        # else: a syscall this architecture does not have


def deny_syscalls() -> None:
    """Load the seccomp filter described in the module doc (``ImportError`` without pyseccomp)."""
    import pyseccomp as sc

    own_pid = os.getpid()
    denied = sc.ERRNO(errno.EPERM)
    rules = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in (*_DENIED_SYSCALLS, *_UNNAMED_SYSCALLS):
        _deny_by_name(rules, denied, name)
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # its flags are out of reach: glibc falls back to clone
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        rules.add_rule(denied, name, sc.Arg(0, sc.NE, own_pid))
    # One comparison per argument and rule: "0 or own pid" cannot be said, so only 0 (the caller) passes.
    for name, index, itself in _SELF_ONLY:
        rules.add_rule(denied, name, sc.Arg(index, sc.NE, itself))
    # 32-bit commands compared on their low half: the kernel ignores the upper one.
    rules.add_rule(denied, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, _TIOCSTI))
    for command in (_F_SETOWN, _F_SETSIG, _F_SETOWN_EX, _F_SETPIPE_SZ):
        rules.add_rule(denied, "fcntl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, command))
    rules.load()


def confine_worker(scratch: str) -> dict:
    """Apply every layer to the calling process; returns what was applied (for the ready frame)."""
    set_no_new_privs()
    landlock = restrict_files(scratch)
    limit_file_size()
    deny_syscalls()
    return {"landlock_abi": landlock, "seccomp": True}
