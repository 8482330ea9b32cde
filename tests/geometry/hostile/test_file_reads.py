"""Reading another worker's scratch directory: what a program writes there while it runs stays its own,
whatever runs beside it in the same ``map`` (a dataset's programs come from many sources)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hostile_common import REACH_OS  # noqa: E402

SECRET = "another person's part"
# the writer leaves a file in its own scratch directory and stays a while, as an export would
WRITER = REACH_OS + (f"fd = o['open']('part.step', o['O_WRONLY'] | o['O_CREAT'])\no['write'](fd, {SECRET!r}.encode())\n"
                     "o['close'](fd)\no['sys'].modules['time'].sleep(2.0)\n"
                     "import cadquery as cq\nr = cq.Workplane('XY').box(1, 1, 1)\n")
# the reader waits until the writer's file exists, then tries every worker's directory (PIDs are small
# in the sandbox's own PID namespace), by name and by listing
READER = REACH_OS + ("o['sys'].modules['time'].sleep(0.8)\nfound = []\n"
                     "for pid in range(1, 2000):\n"
                     "    try:\n"
                     "        fd = o['open']('/scratch/%d/part.step' % pid, o['O_RDONLY'])\n"
                     "        found.append(o['read'](fd, 100).decode())\n"
                     "    except OSError:\n"
                     "        pass\n"
                     "try:\n"
                     "    listed = o['listdir']('/scratch')\n"
                     "except OSError as err:\n"
                     "    listed = err.__class__.__name__\n"
                     "raise RuntimeError('found %r listed %r' % (found, listed))\n")


def run_side_by_side(pool, codes: list[str]):
    """``codes`` at once on the pool's workers, unchecked (``map`` with ``run``'s test-only ``_unchecked``)."""
    requests = [(pool._request(code, True, True, None, "cadquery"), {}) for code in codes]
    return pool._run_jobs(requests, None, progress=False)


def test_a_program_cannot_read_what_another_worker_s_program_wrote(pool):
    assert pool.num_workers == 2
    writer, reader = run_side_by_side(pool, [WRITER, READER])
    assert writer.ok, writer.reason  # the file was there all the while the reader looked
    assert "found [] listed 'PermissionError'" in reader.reason, reader.reason
    assert SECRET not in reader.reason


def test_a_program_still_reads_its_own_scratch_and_the_python_it_needs(pool):
    code = REACH_OS + ("fd = o['open']('mine.txt', o['O_WRONLY'] | o['O_CREAT'])\no['write'](fd, b'kept')\n"
                       "o['close'](fd)\nfd = o['open']('mine.txt', o['O_RDONLY'])\nmine = o['read'](fd, 10)\n"
                       "fd = o['open'](o['sys'].modules['os'].__file__, o['O_RDONLY'])\nsource = o['read'](fd, 20)\n"
                       "raise RuntimeError('read %r and %r, %d entries in /usr' % (mine, source, len(o['listdir']('/usr'))))\n")
    result = pool.run(code, _unchecked=True, profile="cadquery")
    assert "read b'kept' and b'" in result.reason and " 0 entries" not in result.reason, result.reason
