"""The inference recipe: point cloud, mesh or STEP file in; CadQuery program, solid and report out.

    recoder.py   CADRecoder: load a model (cad_recode.model.loading) and generate, batched best of N
    decoding.py  Decoding: the generation and refinement settings
    inputs.py    an input's N point draws, its dense cloud, its ground truth
    judge.py     measure candidates against the input, pick, refine, compare with a ground truth
    refine.py    fit the winner's integer literals to the input points (pattern search in the sandbox),
                 then structural edits (program_edits.py: drop a feature, hollow a body)
    results.py   Candidate, Reconstruction (typed; the JSON report is written from its fields)
    units.py     model units <-> the input's units
    export.py    part.py / .stl / .step / .png / .json, written atomically
    picture.py   the PNG: the input as given, the solid, both overlaid
"""

from cad_recode.inference.decoding import Decoding
from cad_recode.inference.recoder import CADRecoder
from cad_recode.inference.results import Candidate, Reconstruction

__all__ = ["CADRecoder", "Candidate", "Decoding", "Reconstruction"]
