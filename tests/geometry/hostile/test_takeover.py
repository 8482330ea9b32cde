"""A program that takes over its worker's channels gets nothing beyond its own (discarded) job.

Each program here finds the worker's pipes and its request in the worker's own stack frames,
as a ``cadquery``-profile program can (that profile's Python rules are not the boundary).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cad_recode.geometry import sandbox_loop  # noqa: E402
from cad_recode.geometry.sandbox_processes import _Worker  # noqa: E402
from cad_recode.geometry.static_check import MAX_PROGRAM_BYTES  # noqa: E402
from hostile_common import GOOD, GOOD_VOLUME, REACH_OS, assert_contained  # noqa: E402

# The worker's result pipe, request pipe and current request, from its stack frames.
FIND_CHANNELS = REACH_OS + (
    "sys = o['sys']\n"
    "W = sys.modules['__main__']\n"
    "F = sys.modules['cad_recode.geometry.sandbox_frames']\n"
    "found, f = {}, sys._getframe()\n"
    "while f is not None:\n"
    "    found.update({k: v for k, v in f.f_locals.items() if k in ('proto_out', 'proto_in', 'request')"
    " and k not in found})\n"
    "    f = f.f_back\n"
    "out, inp, token = found['proto_out'], found['proto_in'], found['request']['token']\n"
    "def send_raw(head):\n"
    "    o['write'](out, F.FRAME_HEAD.pack(len(head), 0) + head)\n"
)

# Answers its own job as a worker that means to stay, then serves every later job a forged solid.
KEEP_THE_WORKER = FIND_CHANNELS + (
    "json = sys.modules['json']\n"
    "def answer(token, status, volume):\n"
    "    send_raw(json.dumps({'kind': 'result', 'token': token, 'status': status, 'reason': '' if status == 'ok'"
    " else 'done', 'num_faces': 6 if status == 'ok' else 0, 'volume': volume, 'area': 6.0,"
    " 'bbox_min': [0, 0, 0] if status == 'ok' else None, 'bbox_max': [1, 1, 1] if status == 'ok' else None,"
    " 'seconds': 0, 'nv': 0, 'nf': 0, 'exports': {}, 'retire': False}).encode())\n"
    "    send_raw(json.dumps({'kind': 'idle'}).encode())\n"
    "sys.modules['signal'].setitimer(sys.modules['signal'].ITIMER_REAL, 0)\n"
    "answer(token, 'error', 0.0)\n"
    "while True:\n"
    "    head = W._read_exact(inp, F.FRAME_HEAD.size)\n"
    "    if head is None:\n"
    "        break\n"
    "    length, blob = F.FRAME_HEAD.unpack(head)\n"
    "    answer(json.loads(W._read_exact(inp, length + blob)[:length])['token'], 'ok', 4242.0)\n"
)


def test_a_program_that_keeps_its_worker_answers_no_later_job(pool, marker):
    result = pool.run(KEEP_THE_WORKER, _unchecked=True, profile="cadquery")

    assert result.status.value == "crashed" and "protocol" in result.reason, result.reason
    for code in [GOOD] * 3:  # the worker it kept would have answered these with 4242
        good = pool.run(code)
        assert good.ok and good.volume == pytest.approx(GOOD_VOLUME, rel=1e-6), (good.status, good.volume)
    assert [r.volume for r in pool.map([GOOD, GOOD], profile="cadquery")] == pytest.approx([GOOD_VOLUME] * 2)
    assert_contained(pool, result, marker)


def test_a_header_nested_too_deep_to_parse_costs_only_its_job(pool, marker):
    code = FIND_CHANNELS + "send_raw(b'[' * 500000)\nsys.modules['time'].sleep(10)\n"

    result = pool.run(code, _unchecked=True, profile="cadquery")  # json.loads raised RecursionError here

    assert result.status.value == "crashed", result.reason
    assert_contained(pool, result, marker)


def test_a_number_too_large_for_a_float_breaks_the_protocol(pool, marker):
    volume = "1" + "0" * 400  # json.loads reads it as an int; math.isfinite raised OverflowError here
    code = FIND_CHANNELS + (
        "send_raw(('{\"kind\": \"result\", \"token\": \"%s\", \"status\": \"error\", \"reason\": \"x\", "
        "\"num_faces\": 0, \"volume\": " + volume + ", \"area\": 0, \"bbox_min\": null, \"bbox_max\": null, "
        "\"seconds\": 0, \"nv\": 0, \"nf\": 0, \"exports\": {}}' % token).encode())\n"
        "sys.modules['time'].sleep(10)\n"
    )

    result = pool.run(code, _unchecked=True, profile="cadquery")

    assert result.status.value == "crashed", result.reason
    assert "'volume' is not a finite number" in result.reason
    assert_contained(pool, result, marker)


def test_a_program_over_the_size_limit_is_refused_before_it_is_sent_even_unchecked(pool):
    result = pool.run("#" * (MAX_PROGRAM_BYTES + 1), _unchecked=True)

    assert result.status.value == "rejected"
    assert result.reason == f"program is {MAX_PROGRAM_BYTES + 1} bytes; the limit is {MAX_PROGRAM_BYTES}"
    assert pool.run(GOOD).ok


def test_a_request_to_a_worker_that_stopped_reading_gives_up(monkeypatch):
    monkeypatch.setattr(sandbox_loop, "SEND_TIMEOUT", 0.3)
    read_end, write_end = os.pipe()
    try:
        worker = _Worker(requests=write_end, results=read_end, started=time.monotonic())
        request = {"code": "#" * 50_000, "token": "t"}  # fits a pipe's default 64 KiB once, not twice
        assert sandbox_loop._send(worker, request) is True
        started = time.monotonic()

        assert sandbox_loop._send(worker, request) is False  # nobody reads: it waited SEND_TIMEOUT, not forever

        assert time.monotonic() - started < 3
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_frame_larger_than_its_job_could_need_is_never_buffered(pool, marker):
    """A job that asked for no files gets no room for them: a frame declared at the largest cap (with room
    for a STEP and an STL file) had the parent hold 1.15 GB before it read the header."""
    import tracemalloc

    blob = 200 << 20  # over this job's cap (a first stage's BREP: 64 MB at most), under a job's with both exports
    code = FIND_CHANNELS + (
        "head = b'{}'\n"
        f"o['write'](out, F.FRAME_HEAD.pack(len(head), {blob}) + head)\n"
        "chunk = b'x' * (1 << 20)\n"
        "try:\n"
        f"    for _ in range({blob >> 20}):\n"
        "        o['write'](out, chunk)\n"
        "except OSError:\n"
        "    pass\n"
    )
    tracemalloc.start()
    try:
        result = pool.run(code, _unchecked=True, profile="cadquery")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert result.status.value == "crashed", result.reason
    assert peak < 16 << 20, peak
    assert_contained(pool, result, marker)


def test_a_late_exit_report_is_never_read_as_the_next_workers(pool, marker):
    """The zygote reported exits by pid, and pids are reused: a report that came late for one worker (its
    scratch took long to remove) was read as the clean exit of the next worker that got its pid, whose forged
    result then counted, and which ran on unkilled. Reports now name the fork."""
    pool.start()
    for worker in pool._workers:  # what a late report left behind for each pid about to serve
        pool._zygote.exits[worker.pid] = 0
    code = KEEP_THE_WORKER.split("answer(token, 'error', 0.0)")[0] + (
        "sig = sys.modules['signal']\n"
        "sig.signal(sig.SIGALRM, sig.SIG_IGN)\nsig.signal(sig.SIGXCPU, sig.SIG_IGN)\n"
        "brep = sys.modules['io'].BytesIO()\n"
        "sys.modules['importlib'].import_module('OCP.BinTools').BinTools.Write_s("
        "sys.modules['cadquery'].Workplane().box(1, 1, 1).val().wrapped, brep)\n"
        "brep = brep.getvalue()\n"
        "head = json.dumps({'kind': 'result', 'token': token, 'status': 'ok', 'reason': '', 'num_faces': 6,"
        " 'volume': 4242.0, 'area': 6.0, 'bbox_min': [0, 0, 0], 'bbox_max': [1, 1, 1], 'seconds': 0, 'nv': 0,"
        " 'nf': 0, 'exports': {'BREP': len(brep)}, 'retire': True}).encode()\n"
        "o['write'](out, F.FRAME_HEAD.pack(len(head), len(brep)) + head + brep)\n"
        "while True:\n    pass\n"
    )

    # a well-formed first-stage frame (no mesh, the shape's BREP): only the exit can give it away
    result = pool.run(code, _unchecked=True, profile="cadquery")

    assert result.status.value == "crashed" and "did not finish cleanly" in result.reason, result
    assert_contained(pool, result, marker)
