"""Checking what people upload: file type, size and whether it decodes, with a message that says what to do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.app.launch import MAX_PHOTO_MB, MAX_VIDEO_MB
from ferkit.data.formats import IMAGE_EXTENSIONS
from ferkit.errors import DataError, FerkitError
from ferkit.fileio import atomic_write
from ferkit.infer.source import VIDEO_EXTENSIONS, ImageTooLarge, VideoSource, decode_image

PHOTO_TYPES = tuple(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
VIDEO_TYPES = tuple(sorted(e.lstrip(".") for e in VIDEO_EXTENSIONS))
MAX_PHOTO_PIXELS = 50_000_000  # larger photos are refused rather than exhausting memory on a laptop


class UploadError(FerkitError):
    """An uploaded file the app cannot use; the message is shown in the page."""


@dataclass
class VideoInfo:
    path: Path
    frames: int
    fps: float
    width: int
    height: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps if self.fps > 0 else 0.0


def _check_name_and_size(name: str, size: int, types: tuple[str, ...], max_mb: int, kind: str) -> None:
    ext = Path(name).suffix.lower().lstrip(".")
    if ext not in types:
        raise UploadError(f"{name} is not a {kind} file: upload {', '.join(t.upper() for t in types)}.")
    if size == 0:
        raise UploadError(f"{name} is empty: upload the file again.")
    if size > max_mb * 1024 * 1024:
        raise UploadError(f"{name} is {size / 2**20:.0f} MB; the limit is {max_mb} MB per {kind}.")


def read_photo(name: str, data: bytes) -> np.ndarray:
    """The uploaded photo as a BGR uint8 image (EXIF rotation applied), or an UploadError."""
    _check_name_and_size(name, len(data), PHOTO_TYPES, MAX_PHOTO_MB, "photo")
    try:
        return decode_image(data, name, MAX_PHOTO_PIXELS)
    except ImageTooLarge:
        raise UploadError(f"{name} is too many pixels; resize it below "
                          f"{MAX_PHOTO_PIXELS // 1_000_000} megapixels.") from None
    except DataError:
        kind = Path(name).suffix.lstrip(".").upper()
        raise UploadError(f"{name} could not be read as an image: it may be damaged or not really a {kind} file. "
                          "Try exporting it again as JPEG or PNG.") from None


def save_video(name: str, data: bytes, folder: Path) -> VideoInfo:
    """Write the uploaded video into ``folder`` and check that OpenCV can decode its frames."""
    _check_name_and_size(name, len(data), VIDEO_TYPES, MAX_VIDEO_MB, "video")
    path = atomic_write(Path(folder) / f"upload{Path(name).suffix.lower()}", data)
    try:
        with VideoSource(path) as src:
            height, width = src.first.shape[:2]
            return VideoInfo(path=path, frames=src.frame_count or 0, fps=src.fps, width=width, height=height)
    except DataError:
        raise UploadError(f"{name} could not be decoded as a video: it may be damaged or use a codec "
                          "OpenCV cannot read. Try converting it to MP4 (H.264).") from None
