"""The sandbox's event loop over its workers (one call of ``Sandbox.run``/``map``)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import selectors
import sys
import time
from collections import deque

from cad_recode.geometry.exec_result import ExecResult, ExecStatus, failure
from cad_recode.geometry.sandbox_frames import (
    FRAME_HEAD, MAX_HEADER_BYTES, ProtocolViolation, encode_frame, frame_limits, parse_result, retires_after,
)
from cad_recode.geometry.sandbox_processes import _Job, _Worker, how_it_ended

KILL_GRACE = 1.0
"""Seconds past the timeout before the parent kills a worker stuck in C code."""
EXIT_GRACE = 5.0
"""Seconds a worker may take, after its result, to clean up (idle frame) or exit. At 2 s a loaded
machine (the test suite pinned to one core beside a benchmark) discarded good results."""
STARTUP_TIMEOUT = 180.0
"""Seconds the zygote and a worker may take to start before they count as failed."""
MAX_START_FAILURES = 3
SEND_TIMEOUT = 5.0
"""Seconds a request may wait for room in a worker's pipe; past them the worker is replaced."""
PIPE_DEFAULT_BYTES = 1 << 16
# What a worker may send that fails to parse: a forged frame must cost its job, never the caller's call.
UNTRUSTED_DATA_ERRORS = (ValueError, TypeError, KeyError, OverflowError, RecursionError)


class Loop:
    """Feeds idle workers, collects frames, settles results, enforces deadlines, replaces workers."""

    def __init__(self, sandbox, pending: deque[_Job], results: list, bar):
        self.sb, self.pending, self.results, self.bar = sandbox, pending, results, bar
        self.outstanding = len(pending)
        self.sel = selectors.DefaultSelector()
        for w in sandbox._workers:
            self.sel.register(w.results, selectors.EVENT_READ, w)

    def finish(self, job: _Job, result: ExecResult) -> None:
        self.results[job.index] = result
        self.outstanding -= 1
        if self.bar is not None:
            self.bar.update(1)

    def replace(self, w: _Worker, kill: bool = True) -> None:
        self.sel.unregister(w.results)
        self.sb._stop(w, kill)
        new = self.sb._spawn()
        self.sb._workers[self.sb._workers.index(w)] = new
        self.sel.register(new.results, selectors.EVENT_READ, new)

    def run(self, until_ready: bool) -> None:
        sb = self.sb
        for w in list(sb._workers):  # workers that died while idle: replace before use
            if w.ready and w.job is None and not self.receive(w)[1]:
                self.replace(w)
        while self.outstanding or (until_ready and not all(w.ready for w in sb._workers)):
            if sb._closed:  # by another thread (a caller interrupted): its workers are gone, nothing will answer
                raise RuntimeError("this Sandbox was closed while it was running programs")
            self.dispatch()
            if self.start_failed(until_ready):
                break
            for key, _ in self.sel.select(self.wait_time()):
                try:
                    self.on_readable(key.data)
                except UNTRUSTED_DATA_ERRORS as exc:  # whatever a worker sends must not end this call
                    self.violation(key.data, f"an unreadable frame ({type(exc).__name__})")
            if sb._zygote is not None:
                sb._zygote.read_reports()
            self.settle_exits()
            self.enforce_deadlines()

    def dispatch(self) -> None:
        now = time.monotonic()
        for w in list(self.sb._workers):
            if w.ready and w.job is None and not w.ended and self.pending:
                job = self.pending.popleft()
                if _send(w, job.request, job.blob):
                    w.job, w.deadline = job, now + job.timeout + KILL_GRACE
                else:  # the program never started: give it to the next worker
                    self.pending.appendleft(job)
                    self.replace(w)

    def start_failed(self, until_ready: bool) -> bool:
        sb = self.sb
        if sb._start_failures < MAX_START_FAILURES:
            return False
        reason = f"sandbox workers fail to start: {sb._last_start_error}"
        for w in sb._workers:
            if w.job is not None:
                self.finish(w.job, failure(ExecStatus.CRASHED, reason))
                w.job = None
        while self.pending:
            self.finish(self.pending.popleft(), failure(ExecStatus.CRASHED, reason))
        sb._start_failures = 0  # a later call tries again
        if until_ready:
            raise RuntimeError(reason)
        return True

    def wait_time(self) -> float | None:
        now = time.monotonic()
        deadlines = [w.deadline if w.job else w.started + STARTUP_TIMEOUT
                     for w in self.sb._workers if w.job or not w.ready]
        if any(w.pending is not None and w.retiring for w in self.sb._workers):
            deadlines.append(now + 0.005)  # exit reports come on the zygote's socket: poll it
        return max(0.0, min(deadlines) - now) if deadlines else None

    def on_readable(self, w: _Worker) -> None:
        frames, alive = self.receive(w)
        for header, blob in frames:
            kind = header.get("kind")
            if kind == "ready" and not w.ready and w.job is None:
                pid = header.get("pid")
                if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < 1 << 22:
                    return self.violation(w, "a ready frame without a process id")
                w.ready, w.pid = True, pid
                self.sb._start_failures = 0
            elif kind == "result" and w.job is not None and w.pending is None:
                request = w.job.request
                try:
                    w.pending = parse_result(header, blob, request["token"], self.sb.max_triangles,
                                             tuple(request["exports"]), mesh_asked=request["tessellate"],
                                             profile=request["profile"])
                except ProtocolViolation as exc:
                    return self.violation(w, str(exc))
                w.served += 1
                # the worker's own word may add a reason to retire (it saw shared state changed), never remove one
                w.retiring = header.get("retire") is True or retires_after(
                    w.served, self.sb.programs_per_worker, w.pending[0].status, request["profile"])
                w.deadline = time.monotonic() + EXIT_GRACE
            elif kind == "idle" and w.pending is not None and not w.retiring:
                self.finish(w.job, self.sb._commit(w))
                w.job = None
            else:
                return self.violation(w, f"an unexpected '{kind}' frame")
        if not alive:
            w.ended = True
            if w.pending is not None and w.retiring:
                return  # settle_exits decides by its exit status
            if w.job is not None:
                result = self.sb._death_result(w)
                if w.pending is not None:
                    result = failure(ExecStatus.CRASHED, f"{result.reason[:-1]} after its result); the result "
                                     "is discarded")
                self.finish(w.job, result)
                w.job = w.pending = None
            elif not w.ready:
                self.sb._note_start_failure()
            self.replace(w)

    def violation(self, w: _Worker, why: str) -> None:
        if w.job is not None:
            self.finish(w.job, failure(ExecStatus.CRASHED, f"the worker broke the protocol ({why}); "
                                       "its result is discarded"))
            w.job = w.pending = None
        self.replace(w, kill=True)

    def settle_exits(self) -> None:
        zygote = self.sb._zygote
        for w in list(self.sb._workers):
            if w.pending is None or not w.retiring or zygote is None or w.fork not in zygote.exits:
                continue
            status = zygote.exits.pop(w.fork)
            extra, _ = self.receive(w)  # anything after the result frame is a forgery
            if extra:
                self.violation(w, "frames after the last result")
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                self.finish(w.job, self.sb._commit(w))
                w.job = None
                self.replace(w, kill=False)
            else:
                self.finish(w.job, failure(ExecStatus.CRASHED, "the worker did not exit cleanly after its result "
                                           f"({how_it_ended(status)}); the result is discarded"))
                w.job = w.pending = None
                self.replace(w)

    def enforce_deadlines(self) -> None:
        now = time.monotonic()
        for w in list(self.sb._workers):
            if w.job is not None and now >= w.deadline:
                if w.pending is None:
                    result = failure(ExecStatus.TIMEOUT, f"program exceeded the {w.job.timeout:g} s timeout "
                                     "(the worker was killed)", w.job.timeout)
                else:
                    result = failure(ExecStatus.CRASHED, "the worker did not finish cleanly after its result; "
                                     "the result is discarded")
                self.finish(w.job, result)
                w.job = w.pending = None
                self.replace(w, kill=True)
            elif not w.ready and now >= w.started + STARTUP_TIMEOUT:
                self.sb._last_start_error = f"no worker ready after {STARTUP_TIMEOUT:g} s"
                self.sb._start_failures += 1
                self.replace(w)

    def receive(self, w: _Worker) -> tuple[list[tuple[dict, bytearray]], bool]:
        """Read what is available; return complete frames and whether the worker is still alive."""
        alive = True
        # a frame's cap is its job's: a job that asked for no files gets no room for them (a frame declared
        # at the largest cap made the parent hold 1.15 GB for a job that could send 48 MB)
        max_head, max_blob = frame_limits(self.sb.max_triangles, w.job.request["exports"],
                                          w.job.request["tessellate"]) if w.job \
            else (MAX_HEADER_BYTES, 0)
        try:
            chunk = os.read(w.results, max(1 << 16, _frame_remaining(w.buffer)))
            if chunk:
                w.buffer += chunk
            else:
                alive = False
        except BlockingIOError:
            pass
        except OSError:
            alive = False
        frames = []
        while len(w.buffer) >= FRAME_HEAD.size:
            head_len, blob_len = FRAME_HEAD.unpack_from(w.buffer)
            if head_len > max_head or blob_len > max_blob:
                return frames, False  # over the caps: never buffered, never trusted
            end = FRAME_HEAD.size + head_len + blob_len
            if len(w.buffer) < end:
                break
            try:
                header = json.loads(bytes(w.buffer[FRAME_HEAD.size: FRAME_HEAD.size + head_len]))
                if not isinstance(header, dict):
                    raise ValueError
            except UNTRUSTED_DATA_ERRORS:  # deeply nested JSON raises RecursionError
                return frames, False
            if end == len(w.buffer):  # the usual case, a frame alone in the buffer: its blob without a copy
                del w.buffer[:FRAME_HEAD.size + head_len]
                frames.append((header, w.buffer))
                w.buffer = bytearray()
            else:
                frames.append((header, w.buffer[FRAME_HEAD.size + head_len: end]))
                del w.buffer[:end]
        return frames, alive


def _send(w: _Worker, request: dict, blob: bytes = b"") -> bool:
    """Write the request without blocking past :data:`SEND_TIMEOUT`: a worker that stopped reading its
    requests (a program that took it over) must not hang the parent, which holds the sandbox's lock."""
    try:
        os.set_blocking(w.requests, False)
        frame = b"".join(bytes(part) for part in encode_frame({"kind": "run", **request}, blob))
        _make_room(w.requests, len(frame))
        view, deadline = memoryview(frame), time.monotonic() + SEND_TIMEOUT
        while view:
            try:
                view = view[os.write(w.requests, view):]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [w.requests], [], left)[1]:
                    return False
        return True
    except OSError:
        return False


def _make_room(fd: int, size: int) -> None:
    """Grow the request pipe to hold ``size`` bytes (best effort), so an idle worker's request never waits."""
    if sys.platform.startswith("linux") and size > PIPE_DEFAULT_BYTES:
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
        except OSError:  # over /proc/sys/fs/pipe-max-size: the write waits for the worker to read instead
            pass


def _frame_remaining(buffer: bytearray) -> int:
    if len(buffer) < FRAME_HEAD.size:
        return 0
    head_len, blob_len = FRAME_HEAD.unpack_from(buffer)
    return min(FRAME_HEAD.size + head_len + blob_len - len(buffer), 64 << 20)
