"""``ferkit app`` and ``ferkit serve``."""

from __future__ import annotations

import argparse
import math

from ferkit.cli.common import TTA_METAVAR
from ferkit.errors import FerkitError


def add_parsers(sub) -> None:
    p = sub.add_parser("app", help="the web app: photos, videos and the webcam in the browser",
                       description="Serve the web app on http://127.0.0.1:PORT (Streamlit); Ctrl-C stops it. "
                       "Needs pip install 'ferkit[app]'.")
    p.add_argument("--model", default="default",
                   help="model selected at start: a shipped model (default, fer2013), a run directory, "
                        "a .safetensors or .onnx file")
    p.add_argument("--models-dir", metavar="DIR",
                   help="folder searched (with subfolders) for more .safetensors and .onnx models to choose from")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: 8501)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("serve", help="an HTTP API: faces in photos and videos as JSON (FastAPI on uvicorn)",
                       description="Serve POST /v1/faces, POST /v1/videos, GET /v1/jobs/ID, /v1/models, /healthz, "
                       "/readyz, /metrics and the OpenAPI page /docs. Needs pip install 'ferkit[serve]'. "
                       "Ctrl-C or SIGTERM stops it after the requests in flight.")
    p.add_argument("--model", default="default",
                   help="a shipped model (default, fer2013), a run directory, a .safetensors or .onnx file")
    p.add_argument("--detector", default="auto",
                   help="face detector (default: auto, BlazeFace if installed, else haar)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], help="classifier runtime (default: by file type)")
    p.add_argument("--tta", default="none", metavar=TTA_METAVAR, help="test-time augmentation")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this key in the X-API-Key header (or set FERKIT_API_KEY)")
    p.add_argument("--workers", type=int, help="detection threads (default: the CPU cores)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads per model call (default: 1, each request on one core and concurrent ones on "
                        "the others; the cores give a lone client the lowest latency)")
    p.add_argument("--no-batching", action="store_true", help="classify each request's faces on their own")
    p.add_argument("--max-wait-ms", type=float, default=4.0, help="how long a batch waits for more faces")
    p.add_argument("--max-queue", type=int, default=64, help="requests in flight past which it answers 503")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest photo request")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request before it answers 504")
    p.set_defaults(func=cmd_serve)


def cmd_app(args: argparse.Namespace) -> int:
    from ferkit.app import launch

    return launch(model=args.model, models_dir=args.models_dir, port=args.port)


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from ferkit.serve import require_serve_extra, serve

    require_serve_extra()
    from ferkit.serve.app import Settings

    for name in ("workers", "threads", "max_queue", "port"):
        value = getattr(args, name)
        if value is not None and not 0 < value < (65536 if name == "port" else 10_000):
            raise FerkitError(f"--{name.replace('_', '-')} {value} is out of range")
    if not (0 <= args.max_wait_ms < math.inf and 0 < args.max_upload_mb < math.inf and 0 < args.timeout < math.inf):
        raise FerkitError("--max-wait-ms must be a number of 0 or more, --max-upload-mb and --timeout numbers above 0")
    settings = Settings(model=args.model, detector=args.detector, backend=args.backend, tta=args.tta,
                        api_key=args.api_key or os.environ.get("FERKIT_API_KEY") or None,
                        batching=not args.no_batching, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                        max_upload_mb=args.max_upload_mb, timeout_s=args.timeout, threads=args.threads)
    if args.workers:
        settings.workers = args.workers
    serve(settings, args.host, args.port)
    return 0

