"""Verb ``serve``: the local web app (argument parsing only; the app is ``cad_recode.web``)."""

from __future__ import annotations

import signal
import sys
import tempfile
import threading
from pathlib import Path

from cad_recode.cli.flags import add_sandbox_flags
from cad_recode.errors import UsageError
from cad_recode.web.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_POINTS,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_PORT,
    DEFAULT_WORKERS,
    ServeSettings,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="a local web app: upload a part, see the reconstruction, edit the program, download STEP",
        description="Serve the web app on http://HOST:PORT with MODEL (any model `infer` takes: a training "
        "output_dir, a merged or full model folder, an adapter). It binds to 127.0.0.1: only this machine "
        "can reach it. Another --host (e.g. 0.0.0.0) lets anyone who reaches that address run the model "
        "and the sandbox on this machine and upload files up to --max_upload_mb.",
    )
    p.add_argument("--model", required=True, metavar="DIR",
                   help="training output_dir (merged_model/ preferred), merged / full model folder, or adapter")
    p.add_argument("--base_model", metavar="PATH", help="the base model, when --model is an adapter that does "
                   "not record it")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"jobs that run at once (others queue) and sandbox processes (default {DEFAULT_WORKERS})")
    p.add_argument("--max_upload_mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help=f"largest upload accepted (default {DEFAULT_MAX_UPLOAD_MB:g})")
    p.add_argument("--max_points", type=int, default=DEFAULT_MAX_POINTS,
                   help=f"most points in a cloud, or vertices in a mesh (default {DEFAULT_MAX_POINTS:,})")
    p.add_argument("--max_new_tokens", type=int, default=768, help="longest program, in tokens (default 768)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", help="model dtype (default float32 on CPU, bfloat16 on GPU)")
    add_sandbox_flags(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    settings = ServeSettings(args.host, args.port, args.workers, args.max_upload_mb, args.max_points,
                             args.max_new_tokens)  # bad values fail here, before the model loads
    from transformers.utils import logging as hf_logging

    try:
        from cad_recode.web.app import launch
    except ImportError as err:
        raise UsageError(f"the web app needs {err.name or 'gradio'}: pip install -e '.[web]' (or '.[dev]')") from None
    from cad_recode.web.service import ReconstructionService

    hf_logging.disable_progress_bar()
    service = ReconstructionService.load(args.model, settings, base_model=args.base_model, device=args.device,
                                         dtype=args.dtype)
    # From here Ctrl+C (or SIGTERM) only sets a flag: a KeyboardInterrupt raised inside Gradio's launch,
    # after its server thread started but before it blocks, would leave that thread serving and the
    # process alive.
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"using {service.describe()}", file=sys.stderr, flush=True)
    demo = None
    try:
        with tempfile.TemporaryDirectory(prefix="cad-recode-web-") as work_root:
            demo = launch(service, settings, Path(work_root), block=False)
            print(f"serving on http://{settings.host}:{settings.port} (Ctrl+C stops)", file=sys.stderr, flush=True)
            while not stop.wait(0.5):
                pass
            print("stopping", file=sys.stderr, flush=True)
            demo.close()
            demo = None
    finally:
        if demo is not None:
            demo.close()
        service.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0
