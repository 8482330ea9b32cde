"""What the web server allows: where it listens, how many jobs run at once, how large an input may be.

Every default lives here once; ``cad-recode serve`` and :func:`cad_recode.web.app.build_app` import them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cad_recode.errors import InputError, UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_WORKERS = 1
DEFAULT_MAX_UPLOAD_MB = 50.0
DEFAULT_MAX_POINTS = 2_000_000
"""Points of a cloud, or vertices of a mesh, an upload may hold (a 50 MB float32 .npy holds about 4M)."""
DISPLAY_POINTS = 2048
"""Input points drawn in the left view (each a small sphere): enough to see the part, light for WebGL."""


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits. ``workers``: jobs that run at once (Gradio's queue) and sandbox processes."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    max_points: int = DEFAULT_MAX_POINTS
    max_new_tokens: int = 768

    def __post_init__(self):
        if self.workers < 1:
            raise UsageError(f"--workers must be >= 1, got {self.workers}")
        if not self.max_upload_mb > 0:
            raise UsageError(f"--max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.max_points < 3:
            raise UsageError(f"--max_points must be >= 3, got {self.max_points}")
        if not 0 < self.port < 65536:
            raise UsageError(f"--port must be in 1..65535, got {self.port}")
        if self.max_new_tokens < 1:
            raise UsageError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def check_upload_size(path: str | os.PathLike, settings: ServeSettings) -> None:
    """One-line InputError when the file is over ``--max_upload_mb`` (Gradio refuses larger uploads too)."""
    size = Path(path).stat().st_size
    if size > settings.max_upload_bytes:
        raise InputError(
            f"{Path(path).name}: {size / 2**20:.1f} MB is over this server's upload limit of "
            f"{settings.max_upload_mb:g} MB; decimate the mesh or subsample the cloud, or restart with --max_upload_mb"
        )


def check_point_count(name: str, count: int, settings: ServeSettings, what: str = "points") -> None:
    """One-line InputError when an upload holds more points (or mesh vertices) than ``--max_points``."""
    if count > settings.max_points:
        raise InputError(
            f"{name}: {count:,} {what} is over this server's limit of {settings.max_points:,}; "
            "subsample or decimate it, or restart with --max_points"
        )
