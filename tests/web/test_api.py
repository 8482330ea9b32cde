"""The web app's actions through gradio_client (the documented Python API), against the test server."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import trimesh
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from cad_recode.cli import main
from cad_recode.errors import InputError
from cad_recode.geometry.loaders import load_geometry

NO_EXAMPLE, ONE, NO_REFINE, BUDGET, MODEL_UNITS = None, 1, False, 120, False


def reconstruct(client: Client, upload=None, example=None, candidates=ONE, refine=NO_REFINE, restore_units=False,
                pose_auto=False, grammar=True):
    return client.predict(handle_file(str(upload)) if upload else None, example, candidates, refine, BUDGET,
                          restore_units, pose_auto, grammar, api_name="/reconstruct")


def files_by_suffix(paths) -> dict[str, Path]:
    return {Path(p).suffix: Path(p) for p in paths}


def extents(step: Path) -> list[float]:
    return sorted(np.round(load_geometry(step).extents, 3).tolist())


@pytest.fixture()
def client(web_server):
    return Client(web_server.url, verbose=False)  # a new session per test


def test_an_uploaded_cube_comes_back_as_its_program_with_metrics_views_and_downloads(client, web_server):
    status, input_view, result_view, code, metrics, table, downloads = reconstruct(client, web_server.cube_stl)
    assert "Reconstructed in" in status and "valid solid" in status
    assert "box(80,80,80)" in code
    assert "IoU with the input solid: **100.0%**" in metrics  # a closed mesh: IoU against it
    assert table["data"][0][:2] == [0, "ok"] and len(table["data"]) == 1
    files = files_by_suffix(downloads)
    assert sorted(files) == [".json", ".py", ".step", ".stl"] and files[".py"].name == "cube.py"
    report = json.loads(files[".json"].read_text())
    assert report["valid"] and report["num_candidates"] == 1 and report["iou_gt"] == pytest.approx(1.0, abs=1e-3)
    assert extents(files[".step"]) == [80.0, 80.0, 80.0]  # model units
    import trimesh

    assert len(trimesh.load(input_view, force="mesh").faces) > 1000  # the input points, as small spheres
    # the views share the input's [-1, 1]^3 frame: the 80-unit cube program spans 0.8 of it
    assert trimesh.load(result_view, force="mesh").extents.max() == pytest.approx(0.8, abs=1e-3)


def test_pose_auto_and_grammar_options_reach_the_report(client, web_server):
    """The page's pose and grammar options are the CLI's: the report records them and the solid is still right."""
    _, _, _, code, _, table, downloads = reconstruct(client, web_server.cube_stl, candidates=2, pose_auto=True,
                                                     grammar=False)
    report = json.loads(files_by_suffix(downloads)[".json"].read_text())
    assert report["decoding"]["pose"] == "auto" and report["decoding"]["grammar"] is False
    assert report["valid"] and report["iou_gt"] > 0.95 and len(table["data"]) == 2
    assert "pose" in report


def test_a_noisy_scan_with_strays_says_so_in_the_metrics_and_the_report(client, web_server):
    from cad_recode.geometry.sampling import sample_surface

    points = sample_surface(load_geometry(web_server.cube_stl), 8192, seed=0)
    scan = web_server.files / "noisy_cube.npy"
    noisy = points + np.random.default_rng(0).normal(0.0, 0.4, points.shape)  # 0.01 of the half-side
    np.save(scan, np.vstack([noisy, [[500.0, 0.0, 0.0], [0.0, 0.0, -400.0]]]))  # and two stray points
    _, _, _, _, metrics, _, downloads = reconstruct(client, scan)
    report = json.loads(files_by_suffix(downloads)[".json"].read_text())
    assert report["box"] == "smoothed points" and 0.003 < report["input_noise"] < 0.006
    assert f"a noisy scan (noise {report['input_noise']:.4f}): boxed by its smoothed points" in metrics
    assert report["input_stray_points"] == 2 and "2 stray points apart from the surface dropped" in metrics
    assert report["looks_turned"] is False and "looks turned" not in metrics  # noise alone does not turn a part
    assert report["input_warning"] is None and "Warning" not in metrics


def test_a_flat_scan_is_reconstructed_with_a_warning(client, web_server):
    sheet = web_server.files / "one_side.npy"
    np.save(sheet, np.c_[np.random.default_rng(0).uniform(-30, 30, (2000, 2)), np.full(2000, 5.0)])
    _, _, _, _, metrics, _, downloads = reconstruct(client, sheet)
    report = json.loads(files_by_suffix(downloads)[".json"].read_text())
    assert report["valid"] and report["input_warning"].startswith("the input is flat")
    assert f"**Warning:** {report['input_warning']}" in metrics


def test_a_part_that_arrived_turned_is_decoded_in_other_orientations_too(client, web_server):
    from scipy.spatial.transform import Rotation

    bar = trimesh.creation.box(extents=(120.0, 30.0, 20.0))
    bar.vertices = np.asarray(bar.vertices) @ Rotation.from_euler("z", 30, degrees=True).as_matrix().T
    source = web_server.files / "turned_bar.stl"
    bar.export(source)
    _, _, _, _, metrics, _, downloads = reconstruct(client, source)
    report = json.loads(files_by_suffix(downloads)[".json"].read_text())
    assert report["looks_turned"] is True and report["decoding"]["pose"] == "if_turned" and report["pose"]
    assert (f"the part looked turned from the axes (its box is {report['input_turned']:.2f}× its tightest): "
            f"decoded in other orientations too, pose {report['pose']} won") in metrics
    assert report["valid"]


def test_a_built_in_example_with_candidates_refinement_and_restored_units(client, web_server):
    _, _, _, _, metrics, table, downloads = reconstruct(client, example="tube", candidates=2, refine=True,
                                                           restore_units=True)
    assert len(table["data"]) == 2 and "Solid in the input's units" in metrics
    files = files_by_suffix(downloads)
    assert files[".py"].name == "tube.py"
    report = json.loads(files[".json"].read_text())
    assert report["input"] == "shape:tube" and report["units"] == "input" and "refinement" in report


def test_an_edited_program_is_rebuilt_in_the_sandbox_and_downloads_follow(client, web_server):
    code = reconstruct(client, web_server.cube_stl)[3]
    status, _, metrics, downloads = client.predict(code.replace("box(80,80,80)", "box(80,80,40)"),
                                                             api_name="/rebuild")
    assert "Rebuilt in" in status and "CD to the input points" in metrics
    files = files_by_suffix(downloads)
    assert extents(files[".step"]) == [40.0, 80.0, 80.0]
    assert "box(80,80,40)" in files[".py"].read_text()
    report = json.loads(files[".json"].read_text())
    assert report["edited"] and report["cd_input"] > 1.0  # half the cube is far from the input's points


def test_an_edited_program_that_fails_gives_its_one_line_reason_and_the_session_goes_on(client, web_server):
    code = reconstruct(client, web_server.cube_stl)[3]
    with pytest.raises(AppError, match=r"^the edited program builds no valid solid: rejected: .*'os'"):
        client.predict("import os\nr=os.system('true')", api_name="/rebuild")
    with pytest.raises(AppError, match=r"builds no valid solid: error: .*"):
        client.predict(code.replace("box(80,80,80)", "box(80,80,undefined_name)"), api_name="/rebuild")
    assert "Rebuilt in" in client.predict(code, api_name="/rebuild")[0]  # the last good result still rebuilds


def test_rebuild_needs_a_reconstruction_first(client):
    with pytest.raises(AppError, match="reconstruct a part first"):
        client.predict("import cadquery as cq\nr=cq.Workplane().box(1,1,1)", api_name="/rebuild")


@pytest.mark.parametrize("name, content", [
    ("broken.stl", b"solid x\n garbage here\n"),
    ("nan.xyz", b"0 0 0\n1 0 0\nnan 1 0\n0 0 1\n"),
    ("flat.xyz", b"0 0 0\n0 0 0\n0 0 0\n0 0 0\n"),
    ("empty.obj", b""),
])
def test_bad_files_give_the_cli_loader_s_one_line_reason(client, web_server, name, content):
    path = web_server.files / name
    path.write_bytes(content)
    with pytest.raises(InputError) as cli_error:
        load_geometry(path)  # what `cad-recode infer` prints after "error: "
    expected = str(cli_error.value).replace(str(path), name)
    with pytest.raises(AppError) as page_error:
        reconstruct(client, path)
    assert str(page_error.value) == expected and "\n" not in expected
    assert "Reconstructed" in reconstruct(client, web_server.cube_stl)[0]  # the server keeps serving


def test_uploads_over_the_limits_are_refused_with_a_message(client, web_server):
    many = web_server.files / "many.npy"
    np.save(many, np.random.default_rng(0).normal(size=(25_000, 3)).astype(np.float32))  # 300 KB, 25,000 points
    with pytest.raises(AppError, match=r"^many.npy: 25,000 points is over this server's limit of 20,000"):
        reconstruct(client, many)
    big = web_server.files / "big.xyz"
    big.write_text("0 0 0\n1 0 0\n0 1 0\n0 0 1\n" * 70_000)  # 1.6 MB, over the 1 MB limit
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # refused before it is sent
        reconstruct(client, big)
    from cad_recode.web.settings import check_upload_size

    with pytest.raises(InputError, match=r"^big.xyz: 1.6 MB is over this server's upload limit of 1 MB"):
        check_upload_size(big, web_server.settings)  # and by the handler, should a client skip that check


def test_two_sessions_at_once_each_get_their_own_result(web_server):
    clients = {"cube": Client(web_server.url, verbose=False), "cylinder": Client(web_server.url, verbose=False)}
    results: dict[str, tuple] = {}

    def job(name):
        if name == "cube":
            results[name] = reconstruct(clients[name], web_server.cube_stl)
        else:
            results[name] = reconstruct(clients[name], example="cylinder")

    threads = [threading.Thread(target=job, args=(name,)) for name in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert set(results) == {"cube", "cylinder"}
    for name, client in clients.items():  # each session rebuilds its own input
        downloads = client.predict(results[name][3], api_name="/rebuild")[3]
        assert files_by_suffix(downloads)[".py"].name == f"{name}.py"


def test_serve_refuses_bad_flags_in_one_line_before_loading(capsys, tmp_path):
    assert main(["serve", "--model", str(tmp_path), "--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "cad-recode serve: error: --workers must be >= 1, got 0"
    assert main(["serve", "--model", str(tmp_path / "missing"), "--port", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"cad-recode serve: error: --model {tmp_path / 'missing'}: no such folder; pass a training "
                    "output_dir, a merged or full model folder, or an adapter folder")]


def test_the_readme_s_python_api_example_runs(web_server):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Web app"):]
    example = section[section.index("```python\n") + len("```python\n"):section.index("```\n\n`files`")]
    example = example.replace("http://127.0.0.1:7860/", web_server.url)
    example = example.replace('"scan.stl"', repr(str(web_server.cube_stl)))
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102  our own documentation, not user input
    assert "Rebuilt in" in namespace["status"] and len(namespace["files"]) == 4
    assert "box(60,60,60)" in files_by_suffix(namespace["files"])[".py"].read_text()  # the edit was rebuilt


def _start_serve(model: Path, port: int):
    """`cad-recode serve` in a child process on ``port``, its stderr piped."""
    import os
    import subprocess
    import sys

    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "cad_recode.cli", "serve", "--model", str(model),
                             "--port", str(port), "--max_new_tokens", "100"], stderr=subprocess.PIPE, text=True, env=env)


def test_cad_recode_serve_serves_the_page_on_localhost_until_interrupted(web_server, unused_port):
    import signal
    import time
    import urllib.request

    port = unused_port
    server = _start_serve(web_server.model, port)
    try:
        page = ""
        for _ in range(240):
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).read().decode()
                break
            except OSError:
                time.sleep(0.5)
        assert "<title>CAD-Recode</title>" in page or "CAD-Recode" in page
    finally:
        server.send_signal(signal.SIGINT)
        err = server.communicate(timeout=60)[1]
    assert f"using full model {web_server.model}" in err
    assert f"serving on http://127.0.0.1:{port}" in err


def test_ctrl_c_while_the_server_starts_still_stops_it(web_server, unused_port):
    """SIGINT as soon as the model is loaded, while Gradio starts its server: the process ends, cleanly."""
    import signal
    import socket

    server = _start_serve(web_server.model, unused_port)
    try:
        first = server.stderr.readline()  # "using full model ...": the server is being launched now
        server.send_signal(signal.SIGINT)
        err = first + server.communicate(timeout=60)[1]
    finally:
        if server.poll() is None:
            server.kill()
    assert first.startswith("using full model") and server.returncode == 0, err
    assert "Traceback" not in err and "stopping" in err
    with pytest.raises(OSError):  # nothing listens on the port any more
        socket.create_connection(("127.0.0.1", unused_port), timeout=2).close()
