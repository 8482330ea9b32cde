"""One web server for the web tests: a tiny saved model that writes the cube program, served on 127.0.0.1.

The server runs in this process (its own threads), with 2 workers so two sessions
run at once, and small limits (1 MB uploads, 20,000 points) so the limit tests
need only small files.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import infer_artifacts as art

from cad_recode.geometry.shapes import example_program
from cad_recode.web.settings import ServeSettings

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class Server:
    url: str
    settings: ServeSettings
    service: object
    cube_stl: Path
    files: Path
    model: Path  # a folder for the tests' own input files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def unused_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def web_server(tmp_path_factory, sandbox):
    from cad_recode.web.app import launch
    from cad_recode.web.service import ReconstructionService

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices; two sessions share the CI's two cores
    root = tmp_path_factory.mktemp("web")
    cube = sandbox.run(example_program("cube")).to_trimesh()
    model = art.save_memorizer(cube, root / "model")
    files = root / "files"
    files.mkdir()
    cube.export(files / "cube.stl")
    settings = ServeSettings(port=free_port(), workers=2, max_upload_mb=1, max_points=20_000,
                             max_new_tokens=art.MAX_NEW_TOKENS)
    service = ReconstructionService.load(str(model), settings, device="cpu")
    demo = launch(service, settings, root / "jobs", block=False)
    try:
        yield Server(f"http://127.0.0.1:{settings.port}/", settings, service, files / "cube.stl", files, model)
    finally:
        demo.close()
        service.close()
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (its own browser download is not used): headless, WebGL on SwiftShader."""
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )
        yield browser
        browser.close()


def pytest_configure(config):
    # gradio's queue calls pandas options that pandas 3 deprecates: not ours to fix, and not a failure.
    config.addinivalue_line("filterwarnings", "ignore::Warning:gradio.queueing")
