"""The page: upload or pick a part, reconstruct, look at both side by side, edit, rebuild, download.

:func:`build_app` lays out the Gradio Blocks and wires two actions, also callable
through ``gradio_client`` (api names ``/reconstruct`` and ``/rebuild``); :func:`launch`
serves it. Each browser session keeps its own result in a ``gr.State``; Gradio's
queue runs at most ``--workers`` jobs at once. Expected mistakes (a broken file, an
upload over the limits, a program that fails) come back as one line in the page
(``gr.Error``) and the server keeps serving.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # offline: no telemetry or version checks, before gradio loads

import shutil
import sys
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from cad_recode.errors import CadRecodeError, UsageError
from cad_recode.geometry.loaders import SUPPORTED_SUFFIXES
from cad_recode.geometry.shapes import EXAMPLE_SHAPES
from cad_recode.model.constrained import DEFAULT_GRAMMAR
from cad_recode.web.service import DEFAULT_REFINE_BUDGET, InputContext, JobOptions, ReconstructionService
from cad_recode.web.settings import ServeSettings
from cad_recode.web.views import (
    CANDIDATE_HEADERS,
    candidate_rows,
    mesh_glb,
    metrics_markdown,
    points_glb,
    status_markdown,
)

MAX_CANDIDATES_IN_PAGE = 16
VIEW_ANGLE = (-55, 65, None)
"""Model3D camera (azimuth and polar angle in degrees; distance: framed by the viewer): three faces in sight."""
CACHE_SWEEP = (3600, 3600)
"""Gradio deletes its copies of served files every hour once they are an hour old."""


@dataclass
class Session:
    """One browser session's result: what a rebuild edits, and the folder its files live in."""

    context: InputContext | None = None
    job_dir: Path | None = None


class JobFolders:
    """A fresh folder per job under one root; a session's previous folder goes once its next job succeeded."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        folder = self.root / uuid.uuid4().hex
        folder.mkdir()
        return folder

    @staticmethod
    def drop(folder: Path | None) -> None:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def page_error(err: Exception) -> gr.Error:
    """The one line a user sees for any failure; unexpected ones are logged with their traceback here."""
    if isinstance(err, CadRecodeError):
        return gr.Error(str(err).splitlines()[0], print_exception=False)
    traceback.print_exc(file=sys.stderr)
    first = (str(err).splitlines() or [""])[0][:300]
    return gr.Error(f"internal error ({type(err).__name__}: {first}); the server keeps serving", print_exception=False)


class Actions:
    """The page's two actions; each returns the values of its outputs, or raises one line (``gr.Error``)."""

    def __init__(self, service: ReconstructionService, folders: JobFolders):
        self.service = service
        self.folders = folders

    def reconstruct(self, upload, example, candidates, refine, budget, restore_units, pose_auto, grammar, session,
                    progress=gr.Progress()):  # noqa: B008  Gradio injects the request's progress bar here
        started, folder = time.perf_counter(), None
        try:
            options = JobOptions(int(candidates), bool(refine), int(budget), bool(restore_units), bool(pose_auto),
                                 bool(grammar))
            if upload:
                shape = self.service.load_upload(upload)
            elif example:
                shape = self.service.load_example(example)
            else:
                raise UsageError("upload a point cloud, mesh or STEP file, or pick a built-in example")
            folder = self.folders.new()
            outcome, context = self.service.reconstruct(shape, options, folder,
                                                        lambda f, what: progress(f, desc=what))
            input_view = points_glb(context.display_points(), folder / "input.glb")
            result_view = mesh_glb(context.display_mesh(outcome.mesh), folder / "result.glb") if outcome.valid else None
        except Exception as err:  # noqa: BLE001  every failure is one line in the page
            self.folders.drop(folder)
            raise page_error(err) from None
        self.folders.drop(session.job_dir if session else None)
        seconds = time.perf_counter() - started
        return (status_markdown(outcome, seconds, "Reconstructed"), str(input_view),
                None if result_view is None else str(result_view), outcome.code, metrics_markdown(outcome),
                candidate_rows(outcome.candidates), [str(p) for p in outcome.files.values()],
                Session(context, folder))

    def rebuild(self, code, session):
        started, folder = time.perf_counter(), None
        try:
            if session is None or session.context is None:
                raise UsageError("reconstruct a part first: a rebuild is measured against its input")
            folder = self.folders.new()
            outcome = self.service.rebuild(code or "", session.context, folder)
            result_view = mesh_glb(session.context.display_mesh(outcome.mesh), folder / "result.glb")
        except Exception as err:  # noqa: BLE001
            self.folders.drop(folder)
            raise page_error(err) from None
        self.folders.drop(session.job_dir)
        seconds = time.perf_counter() - started
        return (status_markdown(outcome, seconds, "Rebuilt"), str(result_view), metrics_markdown(outcome),
                [str(p) for p in outcome.files.values()], Session(session.context, folder))


def build_app(service: ReconstructionService, settings: ServeSettings, work_root: Path) -> gr.Blocks:
    """The page's layout, wired to :class:`Actions` (api names ``/reconstruct`` and ``/rebuild``)."""
    folders = JobFolders(work_root)
    actions = Actions(service, folders)
    with gr.Blocks(title="CAD-Recode", delete_cache=CACHE_SWEEP) as demo:
        # a closed session's files go with it (Gradio calls this when the session's state is dropped)
        session = gr.State(None, delete_callback=lambda s: folders.drop(s.job_dir if s else None))
        gr.Markdown(f"## CAD-Recode: a part in, an editable CadQuery program out\nModel: `{service.describe()}`")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label=f"point cloud, mesh or STEP (up to {settings.max_upload_mb:g} MB, "
                                 f"{settings.max_points:,} points)", file_types=list(SUPPORTED_SUFFIXES),
                                 type="filepath", elem_id="upload")
                example = gr.Dropdown(list(EXAMPLE_SHAPES), value=None, label="or a built-in example part "
                                      "(an upload takes precedence)", elem_id="example")
                candidates = gr.Slider(1, MAX_CANDIDATES_IN_PAGE, value=1, step=1, label="candidates (best of N)")
                refine = gr.Checkbox(False, label="refine the dimensions against the input")
                budget = gr.Slider(10, 1000, value=DEFAULT_REFINE_BUDGET, step=10,
                                   label="refinement budget (sandbox runs)")
                restore_units = gr.Checkbox(False, label="restore the input's units and position")
                pose_auto = gr.Checkbox(False, label="always try other orientations (pose auto; a part that "
                                                     "looks turned gets them anyway)")
                grammar = gr.Checkbox(DEFAULT_GRAMMAR, label="grammar: programs always parse")
                run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct")
                status = gr.Markdown(label="status", elem_id="status")
            with gr.Column(scale=3):
                with gr.Row():
                    input_view = gr.Model3D(label="input points", elem_id="input-view", height=360,
                                            camera_position=VIEW_ANGLE)
                    result_view = gr.Model3D(label="reconstruction", elem_id="result-view", height=360,
                                              camera_position=VIEW_ANGLE)
                metrics = gr.Markdown(label="metrics", elem_id="metrics")
        with gr.Row():
            with gr.Column(scale=3):
                code = gr.Code(language="python", interactive=True, label="program (edit, then Rebuild)",
                               elem_id="code", lines=8)
            with gr.Column(scale=1, min_width=240):
                rebuild_button = gr.Button("Rebuild", elem_id="rebuild")
                downloads = gr.File(file_count="multiple", label="downloads (.py .step .stl .json)",
                                    interactive=False, elem_id="downloads")
        table = gr.Dataframe(headers=CANDIDATE_HEADERS, interactive=False, label="candidates", elem_id="candidates")

        run.click(actions.reconstruct, [upload, example, candidates, refine, budget, restore_units, pose_auto, grammar,
                                        session],
                  [status, input_view, result_view, code, metrics, table, downloads, session], api_name="reconstruct")
        rebuild_button.click(actions.rebuild, [code, session], [status, result_view, metrics, downloads, session],
                             api_name="rebuild")
    demo.queue(default_concurrency_limit=settings.workers)
    return demo


def launch(service: ReconstructionService, settings: ServeSettings, work_root: Path, *,
           block: bool = True) -> gr.Blocks:
    """Serve the page on ``settings.host:settings.port``; jobs write under ``work_root``.

    With ``block=False`` return once the server is up (``demo.close()`` stops it).
    """
    root = work_root
    demo = build_app(service, settings, root)
    demo.launch(server_name=settings.host, server_port=settings.port, max_file_size=settings.max_upload_bytes,
                allowed_paths=[str(root)], ssr_mode=False, quiet=True, prevent_thread_lock=not block,
                footer_links=["api"])
    return demo
