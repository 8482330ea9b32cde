"""Read one STEP file and tessellate it, in a process of its own: ``python -m cad_recode.geometry._step_reader
STEP OUT.npz``.

:func:`cad_recode.geometry.loaders.load_geometry` runs this instead of reading STEP in its own
process: OCCT parses the file in C++, and a file that makes it loop, balloon or crash would
otherwise hang or kill the caller (in the web app, the server). Here it meets a memory limit
(``RLIMIT_AS``, set before CadQuery is imported) and the caller's timeout, and a crash is one exit
status. Exit 0: ``OUT.npz`` holds ``vertices`` (V, 3) float64 and ``faces`` (F, 3) int64. Exit
:data:`INPUT_ERROR`: the last line of stderr is the one-line reason, naming the file.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

INPUT_ERROR = 3
MEMORY_BYTES = 8 << 30  # address space: the interpreter with CadQuery takes about 1.5 GiB of it


def read_step_arrays(path: Path):
    """(vertices, faces) of the STEP file's shapes, tessellated as the sandbox tessellates solids."""
    import cadquery as cq
    import numpy as np

    from cad_recode.errors import InputError
    from cad_recode.geometry.loaders import unreadable
    from cad_recode.geometry.sandbox import ANGULAR_TOLERANCE, TESSELLATION_TOLERANCE

    try:
        shapes = cq.importers.importStep(str(path)).vals()
    except Exception as exc:
        raise unreadable(path, "a STEP file", exc) from None
    shapes = [s for s in shapes if isinstance(s, cq.Shape)]
    if not shapes:
        raise InputError(f"{path}: the STEP file holds no shapes; export the part as a solid")
    shape = shapes[0] if len(shapes) == 1 else cq.Compound.makeCompound(shapes)
    try:
        vertices, triangles = shape.tessellate(TESSELLATION_TOLERANCE, ANGULAR_TOLERANCE)
    except Exception as exc:
        raise unreadable(path, "a STEP file that can be meshed", exc) from None
    if not triangles:
        raise InputError(f"{path}: the STEP file has no faces to mesh (wires or points only); export a solid")
    return (np.array([v.toTuple() for v in vertices], dtype=np.float64).reshape(-1, 3),
            np.array(triangles, dtype=np.int64).reshape(-1, 3))


def main(argv: list[str]) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    import numpy as np

    from cad_recode.errors import InputError

    step, out = Path(argv[0]), Path(argv[1])
    try:
        vertices, faces = read_step_arrays(step)
    except InputError as err:
        print(str(err), file=sys.stderr)
        return INPUT_ERROR
    with open(out, "wb") as handle:
        np.savez(handle, vertices=vertices, faces=faces)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
