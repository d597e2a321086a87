"""Where photos and videos come from: what a user named, listed, and frames read from it.

``expand_inputs`` turns what ``ferkit predict`` was given (files, folders, the word ``sample``) into a checked list
of image and video files before any work starts; ``list_inputs`` streams every photo and video of folders (searched
recursively), zip / tar archives and lists of paths for ``ferkit batch``, as ``InputRef``s. ``open_source`` gives
the frames of an image file, a folder of images, a video file or a webcam; photos are read with ``read_image``.
"""

from __future__ import annotations

import base64
import io
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from ferkit.data.formats import IMAGE_EXTENSIONS
from ferkit.errors import DataError, InputError, InputTypeError

SAMPLE = "sample"  # the word that stands for the bundled sample photo
SAMPLE_PHOTO = Path(__file__).resolve().parents[1] / "assets" / "astronaut.jpg"
VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"}
DEFAULT_FPS = 30.0  # for sources that do not say their frame rate (webcams, folders of frames)
MAX_PIXELS = 100_000_000  # photos past this (10000 x 10000) are refused from their header, before decoding
SEP = "!"  # archive.zip!inner/photo.jpg


@dataclass
class Frame:
    """One BGR uint8 (H, W, 3) frame, its index in the source and its time in seconds."""

    image: np.ndarray
    index: int
    time_s: float


def media_kind(name: str) -> str | None:
    """'image', 'video' or None, from a file name."""
    ext = PurePosixPath(name).suffix.lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def input_kind(path: Path) -> str:
    """'image' or 'video', from the file name; an error for anything else."""
    if (kind := media_kind(path.name)) is not None:
        return kind
    raise DataError(f"{path}: not an image or video file name; images: {', '.join(sorted(IMAGE_EXTENSIONS))}; "
                    f"videos: {', '.join(sorted(VIDEO_EXTENSIONS))}")


def folder_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name; an error when there is none."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: no images in this folder (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image and video files named by ``inputs``: files, folders (their images) and ``sample`` (the bundled photo;
    write ./sample for a file of that name). Missing paths and unknown file types fail before anything runs."""
    if not inputs:
        raise DataError("give at least one image, folder or video (or 'sample' for the bundled photo)")
    out = []
    for item in inputs:
        path = SAMPLE_PHOTO if str(item) == SAMPLE else Path(item).expanduser()
        if path.is_dir():
            out.extend(folder_images(path))
        elif path.is_file():
            input_kind(path)
            out.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return out


@dataclass(frozen=True)
class InputRef:
    """One photo or video: a file, or a member of a zip or tar archive."""

    source: str  # what the rows say: the path, or archive!member
    kind: str  # image | video
    path: str  # the file or the archive
    member: str | None = None
    data: bytes | None = field(default=None, repr=False)  # tar members, read while streaming through the archive

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.member is None:
            return Path(self.path).read_bytes()
        with zipfile.ZipFile(self.path) as zf:
            return zf.read(self.member)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["data"] = None if self.data is None else base64.b64encode(self.data).decode()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InputRef:
        return cls(**{**d, "data": None if d["data"] is None else base64.b64decode(d["data"])})


def archive_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    return None


def list_inputs(inputs: Sequence[str | Path]) -> Iterator[InputRef]:
    """Every photo and video in ``inputs`` (files, folders searched recursively in name order, .zip / .tar[.gz]
    archives, and .txt files listing one path per line, relative to the list), lazily; names that do not exist
    fail at once."""
    for item in inputs:
        path = Path(item).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if (kind := media_kind(name)) is not None:
                        yield InputRef(str(Path(root) / name), kind, str(Path(root) / name))
        elif (archive := archive_kind(path)) == "zip":
            try:
                with zipfile.ZipFile(path) as zf:
                    names = [i.filename for i in zf.infolist() if not i.is_dir()]
            except zipfile.BadZipFile:
                raise DataError(f"{path}: not a readable zip archive") from None
            for name in names:
                if (kind := media_kind(name)) is not None:
                    yield InputRef(f"{path}{SEP}{name}", kind, str(path), name)
        elif archive == "tar":
            try:
                with tarfile.open(path) as tf:
                    for m in tf:  # streams: neither the member list nor the archive is ever held whole
                        if m.isfile() and (kind := media_kind(m.name)) is not None:
                            data = tf.extractfile(m).read()
                            yield InputRef(f"{path}{SEP}{m.name}", kind, str(path), m.name, data)
            except tarfile.TarError as e:
                raise DataError(f"{path}: not a readable tar archive ({e})") from None
        elif path.suffix.lower() == ".txt":
            with path.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        target = Path(line).expanduser()
                        yield from list_inputs([target if target.is_absolute() else path.parent / target])
        elif (kind := media_kind(path.name)) is not None:
            yield InputRef(str(path), kind, str(path))
        else:
            raise DataError(f"{path}: not a photo, video, folder, .zip / .tar archive or .txt list of paths")


class ImageTooLarge(DataError):
    """An image whose header announces more pixels than ``MAX_PIXELS``: refused before it is decoded."""


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, without decoding its pixels; None when no header is
    recognised."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Image.DecompressionBombError:  # Pillow's own limit (over 179 million pixels) is past ours anyway
        return (MAX_PIXELS + 1, 1)
    except Exception:  # not an image Pillow knows: OpenCV decides below
        return None


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes as BGR uint8 (H, W, 3). A picture of more than ``max_pixels`` (default ``MAX_PIXELS``)
    is refused from its header, before decoding (a small PNG can unpack to gigabytes)."""
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    size = image_size(data)
    if size is not None and size[0] * size[1] > limit:
        raise ImageTooLarge(f"{name}: {size[0]}x{size[1]} pixels, more than the {limit:,} this reads; "
                            "shrink the picture first")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise DataError(f"{name}: not a readable image (corrupt, empty or another kind of file)")
    if image.shape[0] * image.shape[1] > limit:  # a format whose header Pillow could not read
        raise ImageTooLarge(f"{name}: {image.shape[1]}x{image.shape[0]} pixels, more than the {limit:,} this "
                            "reads; shrink the picture first")
    return image


def check_image(image: Any, what: str = "image") -> np.ndarray:
    """An array a caller passed as a picture, as uint8 (H, W) gray or (H, W, 3) BGR; a one-line error for anything
    else. Floats are read as [0, 1] when they stay within it, else as 0-255; 16-bit as 0-65535."""
    if not isinstance(image, np.ndarray):
        raise InputTypeError(f"{what}: expected a numpy array (H, W) or (H, W, 3), got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InputError(f"{what}: shape {image.shape}; expected (H, W) gray, (H, W, 3) BGR or (H, W, 4) BGRA")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{what}: shape {image.shape} has no pixels")
    if image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype.kind == "f":
        if not np.isfinite(image).all():
            raise InputError(f"{what}: holds NaN or infinite values")
        image = image * 255 if image.min() >= 0 and image.max() <= 1 else image
        image = np.clip(image, 0, 255).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        if image.dtype.kind not in "iu":
            raise InputError(f"{what}: dtype {image.dtype}; give uint8 pixel values")
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """A photo as BGR uint8 (H, W, 3); a one-line error for a missing, unreadable, non-image or too large file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    return decode_image(data, str(path), max_pixels)


class Source:
    """Frames of one source; iterate over it, then ``close`` it (or use it in a ``with`` block)."""

    kind = ""
    name = ""
    fps = DEFAULT_FPS
    frame_count: int | None = None  # None when unknown (webcams)
    live = False  # frames come in real time (a camera) and never end by themselves

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ImageSource(Source):
    """An image file or a folder of images, one frame per image, in name order."""

    def __init__(self, path: Path):
        self.kind = "folder" if path.is_dir() else "image"
        self.name = str(path)
        self.files = folder_images(path) if path.is_dir() else [path]
        self.frame_count = len(self.files)

    def __iter__(self):
        for i, f in enumerate(self.files):
            yield Frame(read_image(f), i, i / self.fps)


class VideoSource(Source):
    """A video file (decoded by OpenCV's FFmpeg) or a webcam index."""

    def __init__(self, source: Path | int):
        self.live = isinstance(source, int)
        self.kind = "webcam" if self.live else "video"
        self.name = f"webcam {source}" if self.live else str(source)
        self.cap = cv2.VideoCapture(source if self.live else str(source))
        if not self.cap.isOpened():
            self.cap.release()
            if self.live:
                raise DataError(f"camera {source} cannot be opened; check that a camera is connected and free, "
                                "or try another index")
            raise DataError(f"{source}: cannot be decoded as a video (corrupt, empty or an unsupported format)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not self.live else None
        self.first = self._read()
        if self.first is None:
            self.close()
            raise DataError(f"{self.name}: no frame could be read" +
                            ("" if self.live else " (an empty, truncated or unsupported video)"))

    def _read(self) -> np.ndarray | None:
        ok, image = self.cap.read()
        if not ok or image is None:
            return None
        return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)

    def __iter__(self):
        start = time.perf_counter()
        image, i = self.first, 0
        while image is not None:
            t = time.perf_counter() - start if self.live else i / self.fps
            yield Frame(image, i, t)
            image, i = self._read(), i + 1

    def close(self):
        self.cap.release()


def open_source(source: str | Path | int) -> Source:
    """Frames from an image file, a folder of images, a video file or (an int) a webcam index."""
    if isinstance(source, int):
        return VideoSource(source)
    path = SAMPLE_PHOTO if str(source) == SAMPLE else Path(source).expanduser()
    if path.is_dir():
        return ImageSource(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file or folder")
    return ImageSource(path) if input_kind(path) == "image" else VideoSource(path)
