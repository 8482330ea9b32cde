"""CAD-Recode: point cloud or mesh in, editable CadQuery program out.

Layers, lower never importing higher:
  geometry  -> sandboxed CadQuery, point/mesh I/O, normalization, FPS, metrics
  data      -> program generator, dataset preparation, torch Dataset/collator
  model     -> point encoder + causal-LM wrapper
  recipes   -> train, merge, infer, evaluate
  cli       -> argument parsing only
"""

__version__ = "0.1.0"
