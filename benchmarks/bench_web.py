"""Web app latency: upload-to-result for the built-in cube against `cad-recode infer`'s work, and two users at once.

    python benchmarks/bench_web.py                   # tiny test model (tests/infer_artifacts.py), ~1 minute
    python benchmarks/bench_web.py --model DIR       # any model `infer` takes, e.g. the quickstart's model
    python benchmarks/bench_web.py --json web.json

Figures (issue 17), measured side by side in one run, the same loaded model and sandbox:

- **server**: a gradio_client call on a local server (``--workers 2``): upload the cube's
  STL, reconstruct, views (GLB), exports, and the client's download of every output;
- **infer**: what ``cad-recode infer --point_cloud_file cube.stl --ground_truth cube.stl --output cube.py
  --no_png`` does per input with the model loaded (load the file, reconstruct, CD and IoU against the
  closed input mesh as the page shows them, write .py .stl .step .json);
  the ratio server / infer (target <= 1.3). For context, one cold ``cad-recode infer`` command
  (a new process: imports, model load, CadQuery start) is timed too.
- **two users**: two clients start a reconstruction at the same moment; both must complete,
  and neither may wait longer than the sum of the two jobs run alone.

Medians of ``--repeats`` alternating runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import torch
from benchinfo import machine_info, machine_line

from cad_recode.geometry.shapes import example_program
from cad_recode.inference import Decoding
from cad_recode.web.app import launch
from cad_recode.web.service import ReconstructionService
from cad_recode.web.settings import ServeSettings

TARGET_RATIO = 1.3


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="model folder (default: the tests' tiny cube model, built here)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--candidates", type=int, nargs="+", default=[1, 8], help="best of N, one comparison per N")
    p.add_argument("--refine", type=int, default=0, help="refinement budget in sandbox runs on both sides (0: off); "
                   "the quickstart's shipped setting is 120")
    p.add_argument("--port", type=int, default=7877)
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def tiny_model(root: Path) -> Path:
    import infer_artifacts as art

    from cad_recode.geometry.sandbox import Sandbox

    with Sandbox() as box:
        cube = box.run(example_program("cube")).to_trimesh()
    return art.save_memorizer(cube, root / "model")


def time_infer(service: ReconstructionService, stl: Path, out: Path, n: int = 1, refine: int = 0) -> float:
    """`cad-recode infer ... --ground_truth cube.stl --output cube.py --no_png`'s per-input work, model loaded."""
    recoder = service.recoder
    started = time.perf_counter()
    rec = recoder.reconstruct_many([stl], n, ground_truths=[stl], decoding=Decoding(service.settings.max_new_tokens,
                                                                                     refine_evaluations=refine))[0]
    recoder.save(rec, out / "cube.py", picture=False)
    return time.perf_counter() - started


def time_server(client, stl: Path, handler: list | None = None, n: int = 1, refine: int = 0) -> float:
    """Upload to result; ``handler`` collects the server's own time for the job (the page's status line)."""
    from gradio_client import handle_file

    started = time.perf_counter()
    # upload, example, candidates, refine, budget, restore units, pose auto, grammar (the page's defaults)
    result = client.predict(handle_file(str(stl)), None, n, refine > 0, refine or 120, False, False, True,
                            api_name="/reconstruct")
    seconds = time.perf_counter() - started
    assert "valid solid" in result[0], result[0]
    if handler is not None:
        handler.append(float(re.search(r"in \*\*([0-9.]+) s\*\*", result[0]).group(1)))
    return seconds


def cold_infer(model: Path, stl: Path, out: Path) -> float:
    command = [sys.executable, "-m", "cad_recode.cli", "infer", "--base_model", str(model), "--point_cloud_file", str(stl),
               "--ground_truth", str(stl), "--output", str(out / "cold.py"), "--no_png"]
    started = time.perf_counter()
    run = subprocess.run(command, check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    if run.returncode != 0:
        sys.exit(f"bench_web: error: cad-recode infer failed: {run.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - started


def compare(service, client, links_only, stl: Path, out: Path, n: int, repeats: int, refine: int = 0) -> dict:
    """Medians of alternating runs: infer's work, the server with and without the client's downloads."""
    server, no_download, handler, infer = [], [], [], []
    for _ in range(repeats):  # alternate, so load changes hit all three
        infer.append(time_infer(service, stl, out, n, refine))
        server.append(time_server(client, stl, handler, n, refine))
        no_download.append(time_server(links_only, stl, None, n, refine))
    med = statistics.median
    return {"server_s": med(server), "server_handler_s": med(handler), "server_no_download_s": med(no_download),
            "infer_s": med(infer), "ratio": med(server) / med(infer), "ratio_no_download": med(no_download) / med(infer)}


def two_users(url: str, stl: Path) -> dict:
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(2)]
    alone = [time_server(c, stl) for c in clients]
    waits: list[float] = [0.0, 0.0]
    barrier = threading.Barrier(2)

    def user(k):
        barrier.wait()
        waits[k] = time_server(clients[k], stl)

    threads = [threading.Thread(target=user, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"alone_s": alone, "together_s": waits, "sum_alone_s": sum(alone),
            "ok": all(w > 0 for w in waits) and max(waits) <= sum(alone)}


def main(argv=None) -> int:
    args = parse_args(argv)
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or tiny_model(root)
        settings = ServeSettings(port=args.port, workers=2)
        service = ReconstructionService.load(str(model), settings, device="cpu")
        stl = root / "cube.stl"
        service.recoder.sandbox.run(example_program("cube")).to_trimesh().export(stl)
        demo = launch(service, settings, root / "jobs", block=False)
        try:
            client = Client(f"http://127.0.0.1:{args.port}/", verbose=False)
            links_only = Client(f"http://127.0.0.1:{args.port}/", verbose=False, download_files=False)
            time_server(client, stl), time_infer(service, stl, root)  # warm both paths
            figures = {n: compare(service, client, links_only, stl, root, n, args.repeats, args.refine) for n in args.candidates}
            users = two_users(f"http://127.0.0.1:{args.port}/", stl)
            cold = cold_infer(model, stl, root)
        finally:
            demo.close()
            service.close()
    m = machine_info("torch", "gradio")
    results = {"machine": m, "model": str(args.model or "tiny test model (tests/infer_artifacts.py)"),
               "repeats": args.repeats, "candidates": {str(n): f for n, f in figures.items()},
               "cold_infer_command_s": cold, "two_users": users}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Machine: {machine_line(m)}")
    for n, f in figures.items():
        print(f"best of {n}: upload-to-result {f['server_s']:.3f} s (handler {f['server_handler_s']:.3f} s; "
              f"{f['server_no_download_s']:.3f} s without downloading the 6 files), infer's work {f['infer_s']:.3f} s "
              f"-> ratio {f['ratio']:.2f} (target <= {TARGET_RATIO}), {f['ratio_no_download']:.2f} without downloads")
    print(f"one cold `cad-recode infer` command: {cold:.2f} s")
    print(f"two users at once: {users['together_s'][0]:.3f} s and {users['together_s'][1]:.3f} s; alone "
          f"{users['alone_s'][0]:.3f} + {users['alone_s'][1]:.3f} = {users['sum_alone_s']:.3f} s -> "
          f"{'both within the sum' if users['ok'] else 'OVER the sum'}")
    return 0 if all(f["ratio"] <= TARGET_RATIO for f in figures.values()) and users["ok"] else 1


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
