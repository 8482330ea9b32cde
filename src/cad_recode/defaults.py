"""Defaults that more than one layer needs, each defined once (design.md §2 and §3).

Kept at the bottom of the package (no imports) so geometry, data, model, the
recipes and the config can all read them.
"""

NUM_POINT_TOKENS = 256
"""Points per shape after FPS, one "point token" each."""
NUM_SURFACE_POINTS = 8192
"""Surface samples drawn from a mesh before FPS, and per shape for the protocol's CD."""
MAX_NEW_TOKENS = 768
"""Longest generated program, in tokens."""
NOISE_STD = 0.01
"""Training augmentation: std of Gaussian noise on the points, in normalized units."""
NOISE_PROB = 0.5
"""Training augmentation: the share of shapes that get the noise."""
UNEVEN_PROB = 0.25
"""Training augmentation: the share of shapes whose point density falls off along a random direction."""
UNEVEN_STRENGTH = 0.9
"""Training augmentation: the chance to keep a surface point falls from 1 to 1 - this across the part."""
MISSING_SIDE_PROB = 0.1
"""Training augmentation: the share of shapes with one side cut away, as a scan that missed it."""
MISSING_FRACTION = 1.0 / 3.0
"""Training augmentation: the share of the surface a missing side takes (furthest along a random axis)."""
MODEL_UNITS = 100.0
"""Half the side of the cube that normalized [-1, 1] points map to in programs ([-100, 100])."""

LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.1
LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The guide's seven projections of every decoder layer."""
