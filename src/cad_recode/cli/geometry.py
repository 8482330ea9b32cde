"""Geometry verbs: exec, points, compare, shapes."""


def register(subparsers) -> None:
    """Add the geometry verbs (filled in by the geometry-core work)."""
