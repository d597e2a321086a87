"""``ferkit serve``: an HTTP API over a Recognizer (FastAPI on uvicorn; ``pip install 'ferkit[serve]'``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ferkit.errors import FerkitError


def require_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise FerkitError(f"ferkit serve needs {e.name}: pip install 'ferkit[serve]'") from None


def serve(settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the API until SIGINT / SIGTERM; requests in flight are finished first."""
    require_serve_extra()
    import uvicorn

    from ferkit.device import cpu_threads_limited
    from ferkit.serve.app import create_app

    with cpu_threads_limited(settings.threads):  # before any runtime is created
        app = create_app(settings)
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30,
                    limit_concurrency=settings.max_queue * 4)


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen
    output: str = ""  # what it printed, once stopped


@contextmanager
def running_server(*args: str, ready_timeout_s: float = 180.0) -> Iterator[ServerProcess]:
    """``ferkit serve ARGS`` in a subprocess on a free loopback port, yielded once /readyz answers; stopped with
    SIGTERM (a graceful shutdown) on leaving the block."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ferkit = Path(sys.executable).parent / "ferkit"
    proc = subprocess.Popen([str(ferkit), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = ServerProcess(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise FerkitError(f"ferkit serve exited: {proc.stdout.read().strip()[-2000:]}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise FerkitError(f"ferkit serve did not become ready in {ready_timeout_s:g} s")
            time.sleep(0.3)
        yield server
    finally:
        proc.terminate()
        try:
            server.output = proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            server.output = proc.communicate()[0]
