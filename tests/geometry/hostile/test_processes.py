"""New processes, setsid escapes, ptrace and signals to the zygote: all refused by seccomp and the PID namespace."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest

from hostile_common import REACH_OS, assert_contained  # noqa: E402

ATTEMPTS = {
    "fork": "pid = o['fork']()\n",
    "setsid": "o['setsid']()\n",
    "exec": "o['execv']('/bin/sh', ['sh', '-c', 'touch {marker}'])\n",
    "system": "code = o['system']('touch {marker}')\nassert code == 0\n",
    "kill_the_zygote": "o['kill'](2, 9)\n",
    "kill_everyone": "o['kill'](-1, 9)\n",
    "ptrace_the_zygote": ("c = o['sys'].modules['ctypes'].CDLL(None, use_errno=True)\n"
                          "if c.ptrace(16, 2, 0, 0) == -1:\n    raise PermissionError('ptrace refused')\n"),
    "network": "s = o['sys'].modules['socket'].create_connection(('127.0.0.1', 22), timeout=1)\n",
    "unix_socket_of_the_host": "s = o['sys'].modules['socket'].socket(o['sys'].modules['socket'].AF_UNIX)\n",
}


@pytest.mark.parametrize("attack", ATTEMPTS.values(), ids=ATTEMPTS.keys())
def test_no_process_leaves_the_worker(pool, marker, attack):
    result = pool.run(REACH_OS + attack.format(marker=marker), _unchecked=True, profile="cadquery")
    assert result.status.value == "error", result.reason
    assert_contained(pool, result, marker)


def test_a_thread_dies_with_its_worker(pool, marker):
    # Threads are allowed (OCCT may use them) but cannot outlive the worker, which retires after failing.
    code = (REACH_OS + "threading = o['sys'].modules['threading']\nt = threading.Thread(target=o['sleep'] if "
            "'sleep' in o else (lambda: None))\nt.start()\nraise ValueError('done')\n")
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert_contained(pool, result, marker)
