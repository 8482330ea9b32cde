"""Regenerate the README's picture of the web app: docs/web_app.png.

    .venv/bin/python scripts/web_screenshot.py [OUT.png]

It runs the browser test that uploads the built-in cube as STL (a tiny test model,
Debian's chromium, headless) and saves the whole page once both views are drawn.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/web/test_browser.py::test_the_uploaded_cube_is_reconstructed_and_drawn_beside_its_points"

if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "web_app.png").resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WEB_SCREENSHOT": str(out)}
    run = subprocess.run([sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider"], cwd=ROOT, env=env, check=False)
    if run.returncode != 0 or not out.is_file():
        sys.exit(f"web_screenshot: error: the browser test failed, {out} not written")
    print(f"wrote {out}")
