"""Dataset formats: detect which one a path holds and list its images.

Every format yields the same `Entry` records (split, path inside the dataset, class name or FER+ votes) and reads
any entry as a grayscale image at its native size, so everything downstream is format-agnostic.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from ferkit.data.tree import SubTree, Tree, children, file_digest, open_tree
from ferkit.errors import DataError
from ferkit.labels import FER2013, FERPLUS, FERPLUS_VOTE_COLUMNS, canonical, ordered

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}

SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
CSV_USAGE = {"training": "train", "publictest": "test", "privatetest": "private"}
FERPLUS_FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}


@dataclass(frozen=True)
class Entry:
    """One image of a dataset, before decoding."""

    split: str
    path: str  # inside the dataset: "train/happy/Training_1.jpg", "FER2013Valid/fer0028638.png", "fer2013.csv:12"
    label: str | None  # canonical class name; None when the image has no usable label (FER+ unknown / not-a-face)
    votes: tuple[int, ...] | None = None  # FER+ annotator votes in FERPLUS_VOTE_COLUMNS order


@dataclass
class Decoded:
    image: np.ndarray | None  # (H, W) uint8 gray, None when the file cannot be decoded
    channels: int  # colour channels of the stored file (1 gray, 3 colour, 4 with alpha)
    problem: str = ""  # "" | "corrupt" | "not_image"


class DatasetReader:
    """A dataset on disk in one of the known formats."""

    format: str
    location: str
    classes: tuple[str, ...]  # canonical class names; Entry.label is one of them
    split_origin: dict[str, str]  # split -> the name the dataset gives it

    def entries(self) -> list[Entry]:
        raise NotImplementedError

    def decode(self, entry: Entry) -> Decoded:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError


def decode_bytes(data: bytes, name: str) -> Decoded:
    """Decode an encoded image file to gray uint8; a failure is reported, not raised."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        ext = PurePosixPath(name).suffix.lower()
        return Decoded(None, 0, "corrupt" if ext in IMAGE_EXTENSIONS else "not_image")
    return Decoded(to_gray(img), 1 if img.ndim == 2 else img.shape[2])


def to_gray(img: np.ndarray) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8 or 16 bit) as (H, W) uint8 gray."""
    if img.dtype == np.uint16:
        img = (img // 257).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 3:
        code = {1: None, 3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}[img.shape[2]]
        img = img[:, :, 0] if code is None else cv2.cvtColor(img, code)
    return np.ascontiguousarray(img)


class FolderReader(DatasetReader):
    """Class folders, optionally inside split folders: ``[split/]class/image`` (Kaggle FER-2013, CK+, ...)."""

    def __init__(self, tree: Tree, split_dirs: dict[str, str] | None):
        self.tree = tree
        self.location = tree.location
        self._entries = []
        if split_dirs is None:  # a flat class-folder tree is one split to carve validation data from
            self.split_origin = {"train": "(all)"}
            layout = [("train", "")]
        else:
            self.split_origin = {split: d for d, split in split_dirs.items()}
            layout = [(split, d + "/") for d, split in split_dirs.items()]
        for split, prefix in layout:
            for rel in tree.files():
                if not rel.startswith(prefix):
                    continue
                parts = rel[len(prefix):].split("/")
                if len(parts) >= 2:  # files lying beside the class folders are not images of a class
                    self._entries.append(Entry(split, rel, canonical(parts[0])))
        self.classes = ordered(e.label for e in self._entries)
        is_fer = set(self.classes) == set(FER2013) and set(self.split_origin) <= {"train", "test", "val"}
        self.format = "fer2013-folders" if is_fer else "class-folders"

    def entries(self) -> list[Entry]:
        return self._entries

    def decode(self, entry: Entry) -> Decoded:
        return decode_bytes(self.tree.read(entry.path), entry.path)

    def fingerprint(self) -> str:
        return self.tree.fingerprint()


class CsvReader(DatasetReader):
    """The FER-2013 challenge CSV: ``emotion,pixels,Usage`` with 48x48 = 2304 space-separated gray values."""

    format = "fer2013-csv"
    classes = FER2013

    def __init__(self, name: str, data: bytes, fingerprint: str):
        self.location = name
        self._fingerprint = fingerprint
        self._entries: list[Entry] = []
        self._pixels: dict[str, np.ndarray] = {}
        reader = csv.reader(io.StringIO(data.decode("utf-8-sig", errors="replace")))
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:2] != ["emotion", "pixels"] or header[2:] not in ([], ["usage"]):
            raise DataError(
                f"{name}: header is {','.join(header) or '(empty)'!r}, expected 'emotion,pixels,Usage' "
                "(the FER-2013 challenge CSV)"
            )
        self.split_origin = {}
        side = None
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            where = f"{name} line {line}"
            if len(row) != len(header):
                raise DataError(f"{where}: {len(row)} columns, expected {len(header)}; fix or remove the row")
            try:
                emotion = int(row[0])
            except ValueError:
                raise DataError(f"{where}: emotion {row[0]!r} is not a number 0-6; fix or remove the row") from None
            if not 0 <= emotion < len(FER2013):
                raise DataError(f"{where}: emotion {emotion} is out of range 0-6; fix or remove the row")
            try:
                pixels = np.array(row[1].split(), dtype=np.float32)
            except ValueError:
                raise DataError(f"{where}: pixels must be numbers 0-255 separated by spaces; fix or remove the "
                                "row") from None
            side = side or int(round(len(pixels) ** 0.5))
            if (len(pixels) != side * side or side == 0 or not np.isfinite(pixels).all()
                    or pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255):
                raise DataError(
                    f"{where}: {len(pixels)} pixel values, expected {side * side} values 0-255 "
                    f"({side}x{side} like the rows above); fix or remove the row"
                )
            usage = row[2].strip() if len(row) > 2 else "Training"
            split = CSV_USAGE.get(usage.lower())
            if split is None:
                raise DataError(
                    f"{where}: Usage {usage!r} is not Training, PublicTest or PrivateTest; fix or remove the row"
                )
            self.split_origin[split] = usage
            path = f"{PurePosixPath(name).name}:{line}"
            self._entries.append(Entry(split, path, FER2013[emotion]))
            self._pixels[path] = pixels.astype(np.uint8).reshape(side, side)
        if not self._entries:
            raise DataError(f"{name}: the CSV has a header but no rows")

    def entries(self) -> list[Entry]:
        return self._entries

    def decode(self, entry: Entry) -> Decoded:
        return Decoded(self._pixels[entry.path], 1)

    def fingerprint(self) -> str:
        return self._fingerprint


class FerPlusReader(DatasetReader):
    """Microsoft's FER+ layout: ``FER2013Train|Valid|Test/`` with images and a header-less ``label.csv``."""

    format = "ferplus"
    classes = FERPLUS

    def __init__(self, tree: Tree, label_files: list[str]):
        self.tree = tree
        self.location = tree.location
        self._entries = []
        self.split_origin = {}
        for rel in label_files:
            folder = PurePosixPath(rel).parent
            split = FERPLUS_FOLDERS[folder.name]
            self.split_origin[split] = folder.name
            text = tree.read(rel).decode("utf-8", errors="replace")
            rows = csv.reader(io.StringIO(text.replace("\0", "")))
            for line, row in enumerate(_csv_rows(rows, f"{tree.location}/{rel}"), start=1):
                if not row:
                    continue
                if len(row) != 2 + len(FERPLUS_VOTE_COLUMNS):
                    raise DataError(
                        f"{tree.location}/{rel} line {line}: {len(row)} columns, expected 12 "
                        "(image, box, 10 vote counts); is this a FER+ label.csv?"
                    )
                if not row[0].strip():
                    raise DataError(f"{tree.location}/{rel} line {line}: the image name is empty; fix or remove "
                                    "the row")
                try:
                    votes = tuple(int(v) for v in row[2:])
                except ValueError:
                    raise DataError(f"{tree.location}/{rel} line {line}: vote counts must be integers") from None
                self._entries.append(Entry(split, f"{folder}/{row[0]}", ferplus_majority(votes), votes))
        if not self._entries:
            raise DataError(f"{tree.location}: {', '.join(label_files)} list no images; is this a FER+ label.csv?")

    def entries(self) -> list[Entry]:
        return self._entries

    def decode(self, entry: Entry) -> Decoded:
        try:
            data = self.tree.read(entry.path)
        except (FileNotFoundError, KeyError):
            return Decoded(None, 0, "missing")
        return decode_bytes(data, entry.path)

    def fingerprint(self) -> str:
        return self.tree.fingerprint()


def _csv_rows(reader, name: str):
    """The rows of a CSV reader, its parse errors (binary data, stray quotes) as one DataError."""
    try:
        yield from reader
    except csv.Error as e:
        raise DataError(f"{name}: not a readable CSV ({e})") from None


def ferplus_majority(votes: tuple[int, ...]) -> str | None:
    """The emotion with the most votes, or None when unknown / not-a-face wins or nobody voted.

    Ties go to the first column in FER+ order, as ``numpy.argmax`` does in Microsoft's reference code.
    """
    if sum(votes) == 0:
        return None
    top = int(np.argmax(votes))
    return FERPLUS[top] if top < len(FERPLUS) else None


def open_reader(path: str | Path) -> DatasetReader:
    """Detect the format of a folder, .zip or .csv and open it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file() and not zipfile_like(path):
        if path.suffix.lower() != ".csv":
            raise DataError(
                f"{path}: not a dataset; give a folder, a .zip archive or the fer2013.csv file"
            )
        return CsvReader(str(path), path.read_bytes(), file_digest(path))
    tree = open_tree(path)
    files = tree.files()
    if not files:
        raise DataError(f"{path}: is empty; it should hold class folders like train/happy/*.jpg")
    label_files = [f for f in files if re.search(r"(^|/)FER2013(Train|Valid|Test)/label\.csv$", f)]
    if label_files:
        return FerPlusReader(tree, label_files)
    csvs = [f for f in files if PurePosixPath(f).name.lower() == "fer2013.csv"]
    if csvs:
        rel = csvs[0]
        return CsvReader(f"{tree.location}/{rel}", tree.read(rel), hashlib.blake2b(
            f"{tree.fingerprint()}/{rel}".encode(), digest_size=16).hexdigest())
    return folder_reader(tree)


def zipfile_like(path: Path) -> bool:
    return path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)


def folder_reader(tree: Tree) -> FolderReader:
    # Unwrap single top folders such as archive/ or images/ around the real layout.
    while True:
        dirs, plain = children(tree.files())
        if len(dirs) == 1 and not plain:
            tree = SubTree(tree, dirs.pop())
        else:
            break
    if not dirs:
        raise DataError(
            f"{tree.location}: no class sub-folders; put each class's images in a folder named after the class "
            "(e.g. train/happy/001.jpg)"
        )
    depth_two = {f.split("/")[0] for f in tree.files() if f.count("/") >= 2}
    if all(d in depth_two for d in dirs) and {SPLIT_ALIASES.get(d.lower()) for d in dirs} - {None}:
        split_dirs = {}
        for d in sorted(dirs):
            split = SPLIT_ALIASES.get(d.lower(), d.lower())
            if split in split_dirs.values():
                raise DataError(f"{tree.location}: folders {d!r} and another both name the {split!r} split")
            split_dirs[d] = split
        reader = FolderReader(tree, split_dirs)
    else:
        reader = FolderReader(tree, None)
    if not reader.entries():
        raise DataError(
            f"{tree.location}: no images inside the class folders; expected class/image files like happy/001.jpg"
        )
    return reader
