"""``ferkit bench serve``: the HTTP API under load, with and without micro-batching, against one client.

The server runs as ``ferkit serve`` in a subprocess on loopback; clients are threads, each with its own keep-alive
connection, sending a bounded number of requests of one photo (a 640x480 frame with one face) and timing each answer.
They share the server's CPU cores, so they are plain ``http.client`` connections, the least CPU a Python client
takes (httpx took five times more per request, as much as a fifth of both cores at 16 clients).
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np

from ferkit.bench.infer import bench_frame
from ferkit.errors import FerkitError
from ferkit.infer.detect import DEFAULT_DETECTOR
from ferkit.infer.source import SAMPLE_PHOTO


@dataclass
class ServeRow:
    scenario: str
    clients: int
    batching: bool
    requests: int
    photos_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    ratio: float = 1.0  # photos/s against the first row (one client)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def drive(url: str, photo: bytes, clients: int, requests: int, headers: dict[str, str]) -> tuple[float, list[float]]:
    """``requests`` POST /v1/faces split over ``clients`` threads: (wall seconds, each request's latency)."""
    address = urlsplit(url)
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    shares = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                conn.request("POST", "/v1/faces", photo, {"Content-Type": "image/jpeg", **headers})
                r = conn.getresponse()
                body = r.read()
                dt = time.perf_counter() - t0
                with lock:
                    (latencies.append(dt) if r.status == 200 else failures.append(f"{r.status} {body[:200]!r}"))
        except (OSError, http.client.HTTPException) as e:
            with lock:
                failures.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in shares if n]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if failures:
        raise FerkitError(f"{len(failures)} of {requests} requests failed, e.g. {failures[0][:200]}")
    return wall, latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def bench_serve(model: str = "default", detector: str = DEFAULT_DETECTOR, backend: str | None = None,
                clients: int = 16, requests: int = 400, warmup: int = 10) -> list[ServeRow]:
    """One client sequentially, ``clients`` with micro-batching, ``clients`` without; ratios against the first."""
    from ferkit.serve import require_serve_extra, running_server

    require_serve_extra()
    if clients < 2 or requests < clients:
        raise FerkitError(f"give at least 2 clients and as many requests ({clients} clients, {requests} requests)")
    photo = cv2.imencode(".jpg", bench_frame(cv2.imread(str(SAMPLE_PHOTO))), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    photo = photo.tobytes()
    rows = []
    plan = [(True, [("sequential", 1), ("concurrent, micro-batched", clients)]),
            (False, [("concurrent, one forward pass per request", clients)])]
    for batching, scenarios in plan:
        args = ["--model", model, "--detector", detector, "--max-queue", str(max(64, 2 * clients)),
                *(["--backend", backend] if backend else [])]
        with running_server(*args, *([] if batching else ["--no-batching"])) as server:
            drive(server.url, photo, 1, warmup, {})
            for name, n in scenarios:
                wall, lat = drive(server.url, photo, n, requests, {})
                rows.append(ServeRow(name, n, batching, requests, requests / wall, 1000 * statistics.median(lat),
                                     1000 * percentile(lat, 95), 1000 * percentile(lat, 99)))
    for r in rows:
        r.ratio = r.photos_per_s / rows[0].photos_per_s
    return rows
