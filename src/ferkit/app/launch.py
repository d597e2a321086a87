"""Starting the app: ``streamlit run`` on the page file in a subprocess, with ferkit's options passed through."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from ferkit.errors import FerkitError

APP_FILE = Path(__file__).with_name("main.py")
HOST = "127.0.0.1"
DEFAULT_PORT = 8501
MODEL_SUFFIXES = (".safetensors", ".onnx")
MAX_PHOTO_MB = 20
MAX_VIDEO_MB = 200  # the largest upload the server accepts
PRIMARY_COLOR = "#4f46e5"  # buttons, tabs and selections


@dataclass
class AppOptions:
    """What the page is started with: the model selected first (None: the shipped one) and the folder searched
    for more."""

    model: str | None = None
    models_dir: str | None = None


def check_app_installed() -> None:
    missing = [m for m in ("streamlit", "streamlit_webrtc", "av") if importlib.util.find_spec(m) is None]
    if missing:
        raise FerkitError(f"the web app needs {', '.join(missing)}: pip install 'ferkit[app]'")


def check_model(model: str) -> str:
    """A shipped model's name, a run directory or a .safetensors / .onnx file; returns it as the app will load it."""
    from ferkit.models.checkpoint import resolve_checkpoint
    from ferkit.models.weights import WEIGHTS

    if model in WEIGHTS:
        return model
    path = resolve_checkpoint(model)
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise FerkitError(f"--model {model}: give a shipped model's name, a run directory, or a .safetensors or "
                          ".onnx file")
    return str(path.resolve())


def check_port_free(port: int) -> None:
    if not 0 < port < 65536:
        raise FerkitError(f"--port {port}: give a port number between 1 and 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the server will: connections of a stopped server that linger in TIME_WAIT do not block the port
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise FerkitError(f"port {port} on {HOST} is in use (is the app already running?); "
                                  "pick another with --port") from None
            raise FerkitError(f"cannot listen on {HOST}:{port} ({e.strerror}); pick another with --port") from None


def app_command(options: AppOptions, port: int) -> list[str]:
    """The ``streamlit run`` command line; ferkit's own options follow ``--`` and reach ``parse_app_args``."""
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_FILE),
           "--server.address", HOST, "--server.port", str(port),
           "--server.headless", "true",  # print the address instead of asking questions or opening a browser
           "--server.fileWatcherType", "none",
           "--server.maxUploadSize", str(MAX_VIDEO_MB),
           "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer",
           "--theme.primaryColor", PRIMARY_COLOR,
           "--"]
    if options.model:
        cmd += ["--model", options.model]
    if options.models_dir:
        cmd += ["--models-dir", options.models_dir]
    return cmd


def parse_app_args(argv: list[str]) -> AppOptions:
    """The options ``app_command`` passes to the page."""
    p = argparse.ArgumentParser(prog="ferkit app")
    p.add_argument("--model")
    p.add_argument("--models-dir")
    args = p.parse_args(argv)
    return AppOptions(model=args.model, models_dir=args.models_dir)


def launch(model: str | None = None, models_dir: str | Path | None = None, port: int | None = None) -> int:
    """Serve the app on http://127.0.0.1:<port> (default 8501) until interrupted, ``model`` (default: the shipped
    one) selected at start; returns Streamlit's exit code."""
    check_app_installed()
    port = DEFAULT_PORT if port is None else port
    options = AppOptions(model=None if model is None else check_model(model))
    if models_dir is not None:
        folder = Path(models_dir).expanduser()
        if not folder.is_dir():
            raise FerkitError(f"--models-dir {models_dir}: no such folder; give the folder that holds your "
                              ".safetensors or .onnx models (run directories are searched too)")
        options.models_dir = str(folder.resolve())
    check_port_free(port)
    proc = subprocess.Popen(app_command(options, port))
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # a `kill` of ferkit stops the server too, instead of leaving it running
        previous = signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached Streamlit too; let it shut down cleanly.
        return proc.wait()
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
