"""The page in a real browser: Debian's chromium driven by Playwright, headless, WebGL on SwiftShader.

Every page records its requests: none may leave the test server on 127.0.0.1 (no CDN,
web fonts or analytics). ``WEB_SCREENSHOT=path`` saves the first test's page
(``python scripts/web_screenshot.py`` makes the README's picture that way).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

from cad_recode.geometry.loaders import load_geometry

RESULT_TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1400, "height": 1000}
BLANK_SPREAD = 20.0
"""Grey-level std of a 3D view: about 5 while empty, 45 with the cube or its points drawn (measured)."""


class Tab:
    """One browser context (its own Gradio session) with one page, and every URL it requested."""

    def __init__(self, browser, server):
        self.server = server
        self.context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(server.url)
        self.page.wait_for_selector("#reconstruct")

    def upload(self, path: Path) -> None:
        """Set the file and wait until the upload is done and the page lists it.

        Not ``get_by_text(name)``: the name shows as text only in the progress line while the
        upload runs (the finished list splits it into stem and extension), so that wait passed
        only when it caught the upload in flight, and failed when the upload was quicker.
        """
        self.page.locator("#upload input[type=file]").set_input_files(str(path))
        self.page.locator("#upload").get_by_label(path.name, exact=True).wait_for(timeout=RESULT_TIMEOUT_MS)

    def run(self, button: str, done: str) -> str:
        self.page.click(button)
        self.page.wait_for_function(f"document.querySelector('#status').innerText.includes({done!r})",
                                    timeout=RESULT_TIMEOUT_MS)
        return self.page.inner_text("#status")

    def download(self, suffix: str, to: Path) -> Path:
        with self.page.expect_download() as info:
            self.page.locator(f'#downloads a[download$="{suffix}"]').click()
        info.value.save_as(to)
        return to

    def offsite_requests(self) -> list[str]:
        local = self.server.url.rstrip("/")
        return [url for url in self.requests if not url.startswith((local, "data:", "blob:"))]

    def close(self) -> None:
        self.context.close()


@pytest.fixture()
def tab(browser, web_server):
    opened = Tab(browser, web_server)
    yield opened
    assert opened.offsite_requests() == []
    opened.close()


def canvas_spread(tab: Tab, view: str) -> float:
    """Grey-level standard deviation of a 3D view's canvas: about 0 while blank."""
    from PIL import Image

    png = tab.page.locator(f"{view} canvas").screenshot()
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64).std())


def wait_drawn(tab: Tab, view: str, timeout_s: float = 20.0) -> float:
    """The canvas's spread once something is drawn (a GLB takes about 3 s under SwiftShader)."""
    spread = 0.0
    for _ in range(int(timeout_s / 0.5)):
        spread = canvas_spread(tab, view)
        if spread > BLANK_SPREAD:
            break
        tab.page.wait_for_timeout(500)
    return spread


def test_the_uploaded_cube_is_reconstructed_and_drawn_beside_its_points(tab, web_server):
    tab.upload(web_server.cube_stl)
    assert "valid solid" in tab.run("#reconstruct", "Reconstructed")
    assert wait_drawn(tab, "#result-view") > BLANK_SPREAD and wait_drawn(tab, "#input-view") > BLANK_SPREAD
    assert "box(80,80,80)" in tab.page.inner_text("#code")
    assert "IoU with the input solid: 100.0%" in tab.page.inner_text("#metrics")
    names = tab.page.locator("#downloads a[download]").evaluate_all("links => links.map(a => a.download)")
    assert names == ["cube.py", "cube.step", "cube.stl", "cube.json"]
    if os.environ.get("WEB_SCREENSHOT"):
        tab.page.screenshot(path=os.environ["WEB_SCREENSHOT"], full_page=True)


def test_an_edited_number_is_rebuilt_and_the_step_download_has_the_new_size(tab, web_server, tmp_path):
    tab.upload(web_server.cube_stl)
    tab.run("#reconstruct", "Reconstructed")
    code = tab.page.inner_text("#code .cm-content")
    tab.page.click("#code .cm-content")
    tab.page.keyboard.press("Control+A")
    tab.page.keyboard.insert_text(code.replace("box(80,80,80)", "box(80,80,30)"))
    assert "Rebuilt" in tab.run("#rebuild", "Rebuilt")
    step = tab.download(".step", tmp_path / "edited.step")
    assert sorted(np.round(load_geometry(step).extents, 3).tolist()) == [30.0, 80.0, 80.0]


def test_a_broken_file_shows_the_loader_s_reason_in_the_page(tab, web_server):
    broken = web_server.files / "scan.stl"
    broken.write_bytes(b"solid x\n garbage here\n")
    tab.upload(broken)
    tab.page.click("#reconstruct")
    tab.page.get_by_text("scan.stl: no mesh or points could be read from it").wait_for(timeout=RESULT_TIMEOUT_MS)
    big = web_server.files / "huge.xyz"
    big.write_text("0 0 0\n1 0 0\n0 1 0\n0 0 1\n" * 50_000)  # 1.2 MB, over the 1 MB limit
    tab.page.locator("#upload button[aria-label='Clear']").first.click()
    tab.page.locator("#upload input[type=file]").set_input_files(str(big))
    tab.page.get_by_text('exceed the maximum allowed size of 1.0 Mb: "huge.xyz"').wait_for()


def test_two_tabs_at_once_each_get_their_own_result(browser, web_server, tmp_path):
    tabs = [Tab(browser, web_server), Tab(browser, web_server)]
    try:
        tabs[0].upload(web_server.cube_stl)
        tabs[1].page.locator("#example input").fill("cylinder")
        tabs[1].page.keyboard.press("Enter")
        for tab in tabs:
            tab.page.click("#reconstruct")
        for tab in tabs:
            tab.page.wait_for_function("document.querySelector('#status').innerText.includes('Reconstructed')",
                                       timeout=RESULT_TIMEOUT_MS)
        names = [tab.page.locator("#downloads a[download]").first.get_attribute("download") for tab in tabs]
        assert names == ["cube.py", "cylinder.py"]
        assert all(tab.offsite_requests() == [] for tab in tabs)
    finally:
        for tab in tabs:
            tab.close()
