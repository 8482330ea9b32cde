"""What reading STEP files in a process of their own costs, against reading them in the caller's.

    python benchmarks/bench_step_reader.py --files 20

Writes ``--files`` STEP parts (plates with holes, CadQuery's exporter), then reads them all twice,
interleaved file by file: by ``_step_reader.read_step_arrays`` in this process (CadQuery imported
beforehand) and by ``load_geometry`` (the reader process, confined where the OS layer works: each file's
bytes go down a pipe and the mesh comes back; its first file pays its start). Prints whether the reader
is confined, the first file's time apart and the median of the rest for each way, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from benchinfo import machine_info, machine_line  # noqa: E402


def write_parts(folder: Path, count: int) -> list[Path]:
    import cadquery as cq

    paths = []
    for k in range(count):
        part = cq.Workplane("XY").box(200, 150, 20 + k).faces(">Z").workplane().rarray(100, 60, 2, 2).hole(20 + k)
        paths.append(folder / f"part{k}.step")
        cq.exporters.export(part, str(paths[-1]))
    return paths


def timed(read, path) -> float:
    started = time.perf_counter()
    read(path)
    return time.perf_counter() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=20)
    args = p.parse_args(argv)

    from cad_recode.geometry._step_reader import read_step_arrays
    from cad_recode.geometry import loaders
    from cad_recode.geometry.loaders import load_geometry

    with tempfile.TemporaryDirectory() as folder:
        paths = write_parts(Path(folder), args.files)
        read_step_arrays(paths[0])  # CadQuery's first import and first read, in this process
        own, apart = [], []
        for path in paths:
            own.append(timed(read_step_arrays, path))
            apart.append(timed(load_geometry, path))
    print(machine_line(machine_info("cadquery")))
    print(f"reader confined (OS layer): {'yes' if loaders._step_reader.confined else 'no'}")
    print(f"in this process: first {own[0]:.3f} s, then median {statistics.median(own[1:]):.3f} s a file")
    print(f"reader process:  first {apart[0]:.3f} s (its start), then median {statistics.median(apart[1:]):.3f} s a file")
    print(f"ratio after the first file: {statistics.median(apart[1:]) / statistics.median(own[1:]):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
