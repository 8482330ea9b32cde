"""The sandbox's processes as the parent sees them: the zygote, and one record per worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cad_recode.geometry.confinement import SCRATCH_ROOT, bwrap_command
from cad_recode.geometry.exec_result import ExecResult, printable_line


@dataclass
class _Job:
    index: int
    request: dict
    timeout: float
    paths: dict[str, Path] = field(default_factory=dict)  # export kind -> where the parent writes it
    blob: bytes = b""  # sent after the request's header: a measure job's BREP bytes
    brep: bytes | None = None  # what a cadquery-profile program's first stage sent, for its measure job


@dataclass
class _Worker:
    requests: int  # fd: we write requests here
    results: int  # fd: the worker writes frames here (non-blocking on our side)
    started: float
    fork: int = 0  # the zygote's report and kill name the worker by this number (pids are reused)
    pid: int | None = None  # known once the worker says it is ready
    ready: bool = False
    job: _Job | None = None
    deadline: float = 0.0  # of the job, then of the clean-up after its result
    buffer: bytearray = field(default_factory=bytearray)
    pending: tuple[ExecResult, dict] | None = None  # a result not yet trusted (no idle frame / exit yet)
    retiring: bool = False
    served: int = 0  # results it sent: the parent's own count, for its retirement
    ended: bool = False  # its result pipe reached EOF


def _in_keeper_thread(task):
    """Run ``task`` in one long-lived thread: bwrap's --die-with-parent follows the thread that started it."""
    if threading.current_thread() is threading.main_thread():
        return task()
    global _keeper
    with _keeper_lock:
        if _keeper is None:
            import queue

            _keeper = queue.Queue()

            def serve():
                while True:
                    work, box, done = _keeper.get()
                    try:
                        box.append(work())
                    except BaseException as exc:  # handed back to the caller
                        box.append(exc)
                    done.set()

            threading.Thread(target=serve, name="cad-recode-sandbox-keeper", daemon=True).start()
    box: list = []
    done = threading.Event()
    _keeper.put((task, box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


_keeper = None
_keeper_lock = threading.Lock()


class _Zygote:
    """The process, inside the OS boundary, that forks workers (see ``_sandbox_worker._zygote``)."""

    def __init__(self, confine: bool):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log = tempfile.TemporaryFile()  # its stderr: the reason if it fails to start
        self.host_scratch = None if confine else tempfile.mkdtemp(prefix="cad_recode_scratch_")
        scratch = SCRATCH_ROOT if confine else self.host_scratch
        argv = ["-m", "cad_recode.geometry._sandbox_worker", "zygote", str(theirs.fileno()), scratch]
        threads = dict(MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        if confine:
            command, env, cwd = bwrap_command(argv, threads), None, None
        else:
            command, env, cwd = [sys.executable, *argv], dict(os.environ, **threads), scratch
        self.proc = _in_keeper_thread(lambda: subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=env, cwd=cwd,
            pass_fds=(theirs.fileno(),), start_new_session=True))
        theirs.close()
        self.sock = ours
        self.sock.setblocking(False)
        self.exits: dict[int, int] = {}  # fork number -> the worker's waitpid status, as the zygote reports them
        self.forks = 0  # fork numbers handed out: the zygote reports and kills workers by them, never by pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork_worker(self, config: dict) -> tuple[int, int, int]:
        """Ask for a worker; returns (request fd, result fd, fork number). A failed request yields a result
        fd at EOF."""
        request_r, request_w = os.pipe()
        result_r, result_w = os.pipe()
        self.forks += 1
        try:
            socket.send_fds(self.sock, [json.dumps({"op": "fork", "fork": self.forks, **config}).encode()],
                            [request_r, result_w])
        except OSError:
            pass  # the zygote is gone: result_r reads EOF at once and counts as a failed start
        finally:
            os.close(request_r)
            os.close(result_w)
        os.set_blocking(result_r, False)
        return request_w, result_r, self.forks

    def kill(self, fork: int) -> None:
        try:
            self.sock.send(json.dumps({"op": "kill", "fork": fork}).encode())
        except OSError:
            pass

    def read_reports(self, wait: float = 0.0) -> None:
        """Collect exit reports that have arrived (waiting up to ``wait`` s for the first)."""
        end = time.monotonic() + wait
        while True:
            try:
                message = self.sock.recv(1 << 16)
            except BlockingIOError:
                if time.monotonic() >= end or not self.alive():
                    return
                time.sleep(0.005)
                continue
            except OSError:
                return
            if not message:
                return
            try:
                report = json.loads(message)
                self.exits[int(report["fork"])] = int(report["status"])
            except (ValueError, KeyError, TypeError):
                return
            wait = 0.0
            end = time.monotonic()

    def start_error(self) -> str:
        try:
            self.log.seek(0)
            lines = self.log.read()[-4000:].decode("utf-8", "replace").strip().splitlines()
        except (OSError, ValueError):
            lines = []
        return printable_line(lines[-1]) if lines else f"the sandbox could not start (exit code {self.proc.poll()})"

    def close(self) -> None:
        self.sock.close()  # the zygote reads EOF and exits; bwrap's PID namespace takes the workers
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        if self.host_scratch:
            shutil.rmtree(self.host_scratch, ignore_errors=True)


def how_it_ended(status: int | None) -> str:
    if status is None:
        return "it stopped answering"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"
