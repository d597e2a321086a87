"""The HTTP API: ``create_app(settings)`` is a FastAPI application serving one Recognizer.

    POST /v1/faces        one or several images (multipart ``files``, or the raw bytes of one) -> faces per image
    POST /v1/videos       a video (multipart ``file`` or raw bytes) -> a job; GET /v1/jobs/{id} -> progress, result
    GET  /v1/models       the model being served and the shipped ones
    GET  /healthz, /readyz, /metrics (Prometheus), /docs (OpenAPI)

Detection runs in a pool of threads, one detector each; the faces of concurrent requests are classified together
by a ``MicroBatcher``. Past ``max_queue`` requests in flight the server answers 503 with Retry-After instead of
queueing without end. Every error is JSON ``{"error": ..., "detail": ...}`` with its 4xx code.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferkit.device import cpu_threads
from ferkit.errors import DataError, FerkitError
from ferkit.infer.crop import find_faces
from ferkit.infer.detect import DEFAULT_DETECTOR, PerThreadDetector
from ferkit.infer.recognizer import Recognizer, make_faces
from ferkit.infer.source import ImageTooLarge, decode_image
from ferkit.serve.batcher import MicroBatcher
from ferkit.serve.errors import ApiError
from ferkit.serve.jobs import JobQueue
from ferkit.serve.metrics import Metrics

API_KEY_HEADER = "x-api-key"
OPEN_PATHS = {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/docs/oauth2-redirect", "/redoc"}


@dataclass
class Settings:
    model: str = "default"
    detector: str = DEFAULT_DETECTOR
    backend: str | None = None
    tta: str = "none"  # none | flip | tencrop | multiscale, as ferkit predict
    api_key: str | None = None
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))  # detection threads
    threads: int = 1  # CPU threads per model call: requests share the cores, each one runs on one
    batching: bool = True
    max_batch: int = 64  # faces per forward pass
    max_wait_ms: float = 4.0  # how long a batch waits for more faces
    max_queue: int = 64  # requests in flight past which the server answers 503
    max_upload_mb: float = 20.0  # per request (photos) ; videos get max_video_mb
    max_video_mb: float = 200.0
    max_images: int = 16  # per request
    max_pixels: int = 40_000_000  # per image, read from its header before decoding
    timeout_s: float = 30.0  # per request
    max_jobs: int = 16  # video jobs kept (queued, running and finished)


# ---- response schemas (for the OpenAPI page; the handlers build plain dicts) -----------------------------------

class FaceOut(BaseModel):
    box: list[int]
    emotions: dict[str, float]
    emotion: str
    score: float


class ImageOut(BaseModel):
    name: str
    width: int
    height: int
    faces: list[FaceOut]
    timing_ms: dict[str, float]


class FacesOut(BaseModel):
    model: str
    images: list[ImageOut]


class ErrorOut(BaseModel):
    error: str
    detail: str


ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 411, 413, 415, 422, 503, 504)}
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
VIDEO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}}}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class Engine:
    """What the endpoints share: the recognizer, the detection pool, the batcher, video jobs and metrics."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.recognizer = Recognizer.load(settings.model, settings.detector, settings.backend, settings.tta)
        self.metrics = Metrics()
        self.detecting = 0  # requests between upload and classification: their faces are on their way
        self.batcher = MicroBatcher(self.recognizer.classifier.predict, settings.max_batch,
                                    settings.max_wait_ms / 1000, settings.batching, self.metrics.batch_size.observe,
                                    lambda: self.detecting > 0)
        self.detector = PerThreadDetector(settings.detector)  # used from the pool's threads
        self.pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="ferkit-detect")
        self.jobs = JobQueue(self.recognizer, settings.detector, settings.max_jobs)
        self.in_flight = 0
        self.ready = False

    def decode_and_detect(self, name: str, data: bytes) -> tuple[np.ndarray, list, np.ndarray, float, float]:
        """In a pool thread: (image, face boxes, face crops, seconds decoding took, seconds detecting took)."""
        t0 = time.perf_counter()
        try:
            image = decode_image(data, name, self.settings.max_pixels)
        except ImageTooLarge as e:
            raise ApiError(413, "image too large", str(e)) from None
        except DataError as e:
            raise ApiError(415, "not an image", str(e)) from None
        t1 = time.perf_counter()
        boxes, crops = find_faces(self.detector, image, self.recognizer.classifier.face_size)
        return image, boxes, crops, t1 - t0, time.perf_counter() - t1

    async def faces(self, name: str, data: bytes) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.detecting += 1
        try:  # one hand-off to the pool per image: each one waits in its queue once
            image, boxes, crops, decode, detect = await asyncio.get_running_loop().run_in_executor(
                self.pool, self.decode_and_detect, name, data)
        finally:
            self.detecting -= 1
        t2 = time.perf_counter()
        probs = await self.batcher.classify(crops) if len(boxes) else np.zeros((0, len(self.recognizer.labels)))
        t3 = time.perf_counter()
        self.metrics.faces.inc(len(boxes))
        faces = make_faces(boxes, probs, self.recognizer.labels)
        ms = {"decode": decode, "detect": detect, "classify": t3 - t2, "total": t3 - t0}  # total: with waits
        return {"name": name, "width": int(image.shape[1]), "height": int(image.shape[0]),
                "faces": [f.to_dict() for f in faces], "timing_ms": {k: round(v * 1000, 2) for k, v in ms.items()}}

    async def warm_up(self) -> None:
        from ferkit.infer.source import SAMPLE_PHOTO

        await self.faces("warm-up", SAMPLE_PHOTO.read_bytes())
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        await self.batcher.stop()
        self.pool.shutdown(wait=True)
        self.jobs.close()


async def read_body(request: Request, limit_mb: float) -> bytes:
    """The request body, refused (413) past ``limit_mb`` before it is read; a Content-Length is required."""
    length = request.headers.get("content-length")
    if length is None:
        raise ApiError(411, "length required", "send the body with a Content-Length header (not chunked)")
    if not length.isdigit():
        raise ApiError(400, "bad request", f"Content-Length {length!r} is not a number")
    if int(length) > limit_mb * 2**20:
        raise ApiError(413, "request too large", f"{int(length) / 2**20:.1f} MB; the limit is {limit_mb:g} MB "
                       "per request")
    return await request.body()


async def uploads(request: Request, field_name: str, limit_mb: float, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each uploaded file: multipart ``field_name`` parts, or the raw body as one file."""
    body = await read_body(request, limit_mb)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=max_files, max_fields=max_files)
        except StarletteHTTPException as e:  # Starlette's verdict on the body: too many parts, or malformed
            too_many = str(e.detail).startswith("Too many")
            raise ApiError(413 if too_many else 400, "too many files" if too_many else "bad multipart body",
                           f"{e.detail} per request" if too_many else str(e.detail)) from None
        except Exception as e:  # noqa: BLE001 - python-multipart's errors are many and all mean a bad body
            raise ApiError(400, "bad multipart body", str(e) or type(e).__name__) from None
        files = [f for f in form.getlist(field_name) if hasattr(f, "read")]
        out = [(PurePath(f.filename or f"{field_name}{i}").name, await f.read()) for i, f in enumerate(files)]
        await form.close()
        if not out:
            raise ApiError(400, "no file", f"send the file(s) as multipart form field {field_name!r}")
        return out
    if not body:  # anything but multipart is the raw bytes of one file (curl --data-binary says urlencoded)
        raise ApiError(400, "empty body", "send an image as the request body or as multipart files")
    return [(request.headers.get("x-filename") or "upload", body)]


def create_app(settings: Settings | None = None, engine_factory: Callable[[Settings], Engine] = Engine) -> FastAPI:
    settings = settings or Settings()
    engine = engine_factory(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await engine.batcher.start()
        await engine.warm_up()
        yield
        await engine.close()

    app = FastAPI(title="ferkit", version="1", lifespan=lifespan,
                  description="Facial emotion recognition: faces and their emotions in photos and videos.")
    app.state.engine = engine
    m = engine.metrics

    app.add_middleware(Guard, engine=engine)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error_response(e)

    @app.exception_handler(FerkitError)
    async def ferkit_error(request: Request, e: FerkitError):
        return error_response(ApiError(400, "bad request", str(e)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return error_response(ApiError(e.status_code, str(e.detail).lower(), str(e.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        detail = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return error_response(ApiError(422, "invalid request", detail))

    @app.post("/v1/faces", response_model=FacesOut, responses=ERRORS, openapi_extra=IMAGE_BODY,
              summary="Faces and their emotions in one or several images")
    async def faces(request: Request) -> JSONResponse:
        files = await uploads(request, "files", settings.max_upload_mb, settings.max_images)
        if len(files) > settings.max_images:
            raise ApiError(413, "too many images", f"{len(files)} images; the limit is {settings.max_images} "
                           "per request")
        images = await asyncio.gather(*(engine.faces(name, data) for name, data in files))
        return JSONResponse({"model": settings.model, "images": list(images)})  # built to FacesOut: not re-checked

    @app.post("/v1/videos", status_code=202, responses=ERRORS, openapi_extra=VIDEO_BODY,
              summary="Start a video job: faces tracked over the frames")
    async def videos(request: Request) -> dict[str, Any]:
        files = await uploads(request, "file", settings.max_video_mb, 1)
        name, data = files[0]
        job = engine.jobs.submit(name, data)
        return {"id": job.id, "status": job.status, "url": f"/v1/jobs/{job.id}"}

    @app.get("/v1/jobs/{job_id}", responses=ERRORS, summary="A video job: progress, then tracks and timeline")
    async def job(job_id: str, format: str = "json"):
        found = engine.jobs.get(job_id)
        if found is None:
            raise ApiError(404, "no such job", f"no job {job_id!r}; jobs are kept until {settings.max_jobs} newer "
                           "ones finish")
        if format == "csv":
            if found.status != "done":
                raise ApiError(409 if found.status != "failed" else 422, "not done",
                               f"job {job_id} is {found.status}; the CSV timeline comes when it is done")
            return PlainTextResponse(found.csv(), media_type="text/csv")
        if format != "json":
            raise ApiError(400, "bad format", f"format {format!r}; use json or csv")
        return found.to_dict()

    @app.get("/v1/models", summary="The model being served and the shipped ones")
    async def models() -> dict[str, Any]:
        from ferkit.models.weights import WEIGHTS

        return {"serving": {**engine.recognizer.describe(), "model": settings.model, "threads": cpu_threads(),
                            "workers": settings.workers},
                "shipped": [{"name": w.name, "summary": w.summary} for w in WEIGHTS.values()]}

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The model is loaded and warm", responses={503: {"model": ErrorOut}})
    async def readyz():
        if not engine.ready:
            raise ApiError(503, "not ready", "the model is still loading")
        return {"status": "ready"}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(m.render(), media_type=m.content_type)

    return app


class Guard:
    """Around every HTTP request (plain ASGI, no task per request): the API key (401), the in-flight limit (503
    with Retry-After), the per-request timeout (504) and the request metrics."""

    def __init__(self, app, engine: Engine):
        self.app, self.engine, self.settings = app, engine, engine.settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, engine, settings = scope["path"], self.engine, self.settings
        route = path if path in OPEN_PATHS or not path.startswith("/v1/jobs/") else "/v1/jobs/{id}"
        start = time.perf_counter()
        status = None  # once the response has started

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if path not in OPEN_PATHS and settings.api_key:
                headers = Headers(scope=scope)
                given = (headers.get(API_KEY_HEADER) or headers.get("authorization", "")).removeprefix("Bearer ")
                if not secrets.compare_digest(given.strip().encode(), settings.api_key.encode()):
                    raise ApiError(401, "unauthorized", f"send the API key in the {API_KEY_HEADER} header")
            if not path.startswith("/v1/"):
                await self.app(scope, receive, send_status)
            elif engine.in_flight >= settings.max_queue:
                raise ApiError(503, "busy", f"{engine.in_flight} requests in flight; retry shortly",
                               {"Retry-After": "1"})
            else:
                engine.in_flight += 1
                engine.metrics.queue_depth.set(engine.in_flight)
                try:
                    await asyncio.wait_for(self.app(scope, receive, send_status), settings.timeout_s)
                except TimeoutError:
                    raise ApiError(504, "timeout", f"the request took more than {settings.timeout_s:g} s") from None
                finally:
                    engine.in_flight -= 1
                    engine.metrics.queue_depth.set(engine.in_flight)
        except ApiError as e:
            if status is None:  # an answer already under way cannot be replaced; the connection closes
                await error_response(e)(scope, receive, send_status)
        finally:
            engine.metrics.observe(route, scope["method"], status or 500, time.perf_counter() - start)


def error_response(e: ApiError) -> JSONResponse:
    return JSONResponse({"error": e.error, "detail": e.detail}, status_code=e.status, headers=e.headers)
