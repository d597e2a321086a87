"""Shared fixtures: the real datasets in ../shared/data and small real subsets built from them."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
FER_ZIP = SHARED / "fer2013.zip"
FERPLUS_ZIP = SHARED / "ferplus.zip"
FERKIT = Path(sys.executable).parent / "ferkit"  # the console script of this environment


def run_cli(*args) -> subprocess.CompletedProcess:
    """``ferkit ARGS`` in a new process, as a user runs it."""
    return subprocess.run([str(FERKIT), *map(str, args)], capture_output=True, text=True)


def kill_once(args, glob_dir: Path, pattern: str, timeout: float = 120) -> None:
    """Start ``ferkit ARGS`` in a new process and SIGKILL it as soon as ``glob_dir`` holds ``pattern``."""
    import os
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "ferkit", *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and not list(glob_dir.glob(pattern)):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def run_main(capsys, *args) -> tuple[int, str, str]:
    """``ferkit ARGS`` in this process: (exit code, stdout, stderr)."""
    from ferkit.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Keep the decode cache of the test run out of the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FERKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def fer_zip() -> Path:
    if not FER_ZIP.exists():
        pytest.fail(f"the real FER-2013 data is missing: expected {FER_ZIP}")
    return FER_ZIP


@pytest.fixture(scope="session")
def decoded_fer_zip(fer_zip) -> Path:
    """fer2013.zip with its faces in the test run's decode cache, so a command's output holds no decoding bar."""
    from ferkit.data import load_dataset

    load_dataset(fer_zip)
    return fer_zip


@pytest.fixture(scope="session")
def ferplus_zip() -> Path:
    if not FERPLUS_ZIP.exists():
        pytest.fail(f"the real FER+ data is missing: expected {FERPLUS_ZIP}")
    return FERPLUS_ZIP


def real_faces(fer_zip: Path, per_class: int, split: str = "train") -> dict[str, list[tuple[str, bytes]]]:
    """The first ``per_class`` JPEG files of each class of a split of the real FER-2013 zip."""
    out: dict[str, list[tuple[str, bytes]]] = {}
    with zipfile.ZipFile(fer_zip) as zf:
        for name in sorted(zf.namelist()):
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == split and parts[2]:
                files = out.setdefault(parts[1], [])
                if len(files) < per_class:
                    files.append((parts[2], zf.read(name)))
    return out


@pytest.fixture(scope="session")
def fer_subset(fer_zip, tmp_path_factory) -> Path:
    """A real Kaggle-layout zip of FER-2013's first 650 training and 60 PublicTest faces of each class (disgust has
    436 training faces): enough for the training tests, and decoded and cleaned in a moment."""
    target = tmp_path_factory.mktemp("subset") / "fer2013.zip"
    with zipfile.ZipFile(target, "w") as zf:
        for split, per_class in (("train", 650), ("test", 60)):
            for cls, files in real_faces(fer_zip, per_class, split).items():
                for name, data in files:
                    zf.writestr(f"{split}/{cls}/{name}", data)
    return target


def write_kaggle_folder(fer_zip: Path, root: Path, per_class: int = 6) -> Path:
    """A small real Kaggle-layout folder: train/<class>/*.jpg and test/<class>/*.jpg."""
    for split in ("train", "test"):
        for cls, files in real_faces(fer_zip, per_class, split).items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for name, data in files:
                (d / name).write_bytes(data)
    return root


@pytest.fixture
def kaggle_folder(fer_zip, tmp_path) -> Path:
    return write_kaggle_folder(fer_zip, tmp_path / "fer2013")


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, f.relative_to(folder.parent).as_posix())
    return target


def csv_from_faces(faces: dict[str, list[tuple[str, bytes]]], usage: str = "Training") -> str:
    """A fer2013.csv (emotion,pixels,Usage) built from real decoded images."""
    from ferkit.labels import FER2013

    buf = io.StringIO()
    buf.write("emotion,pixels,Usage\n")
    for cls, files in faces.items():
        for _, data in files:
            pixels = " ".join(str(v) for v in decode(data).ravel())
            buf.write(f"{FER2013.index(cls)},{pixels},{usage}\n")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header announces width x height pixels (a decompression bomb as far as any reader can tell)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + \
        chunk(b"IEND", b"")


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """Offline, an empty Hugging Face cache, and no socket can connect: a test cannot reach the network or hang."""
    import socket

    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
