"""Predictions for what a user names (photos, folders of photos, videos) and the files they ask for: the work of
``ferkit predict``.

Every input is processed: one that cannot be read (a truncated photo, a video without frames) becomes a
``FailedInput`` with its reason, and the others go on. With an output folder, annotated photos (``<name>.jpg``),
annotated videos (``<name>.mp4``), video timelines (``<name>_timeline.csv``) and ``results.json`` are first written
to a hidden folder inside it and moved into place together at the end, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
from tqdm import tqdm

from ferkit.errors import FerkitError
from ferkit.fileio import atomic_write, check_not_folders, check_out_dir, staging_dir
from ferkit.infer.draw import annotate
from ferkit.infer.recognizer import Face, Recognizer
from ferkit.infer.source import expand_inputs, input_kind, read_image
from ferkit.infer.video import DETECT_EVERY, VideoResult, check_detect_every, process_video

RESULTS_FILE = "results.json"
STAGING_PREFIX = ".ferkit-predict-"
JPEG_QUALITY = 90


@dataclass
class PhotoResult:
    """The faces of one photo and, with an output folder, where its annotated copy was written."""

    source: str
    width: int
    height: int
    faces: list[Face]
    processing_s: float
    annotated: str | None = None
    kind: str = "image"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "status": "ok", "width": self.width,
                "height": self.height, "faces": [f.to_dict() for f in self.faces],
                "processing_s": round(self.processing_s, 4), "annotated": self.annotated}


@dataclass
class FailedInput:
    """An input that could not be read, and why."""

    source: str
    kind: str  # image | video
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "status": "unreadable", "reason": self.reason}


@dataclass
class PredictRun:
    """Every input's result, in input order, and the settings that produced them."""

    settings: dict[str, Any]
    results: list[PhotoResult | VideoResult | FailedInput]
    out: str | None = None

    @property
    def failed(self) -> list[FailedInput]:
        return [r for r in self.results if isinstance(r, FailedInput)]

    def summary(self) -> str:
        """One line: how many photos and videos, how many of them unreadable."""
        counts = [(sum(r.kind == kind for r in self.results), kind) for kind in ("image", "video")]
        parts = [f"{n} {'photo' if kind == 'image' else 'video'}{'s' * (n != 1)}" for n, kind in counts if n]
        return ", ".join(parts) + (f", {len(self.failed)} unreadable" if self.failed else "")

    def to_dict(self) -> dict[str, Any]:
        return {**self.settings, "summary": self.summary(), "results": [r.to_dict() for r in self.results]}

    def files(self) -> list[str]:
        """Files written into the output folder."""
        if self.out is None:
            return []
        found = [f for r in self.results for f in (getattr(r, "annotated", None), getattr(r, "out_video", None),
                                                   getattr(r, "out_csv", None)) if f]
        return [*found, str(Path(self.out) / RESULTS_FILE)]


def output_names(paths: list[Path], kinds: list[str], taken: set[str] | None = None) -> list[tuple[str, ...]]:
    """File names in the output folder per input: (<name>.jpg,) for photos, (<name>.mp4, <name>_timeline.csv) for
    videos; a name already taken (by another input, or in ``taken``) gets -2, -3, ... ."""
    taken, out = {RESULTS_FILE, *(taken or ())}, []
    for path, kind in zip(paths, kinds):
        ext, stem, i = (".jpg" if kind == "image" else ".mp4"), path.stem, 2
        while f"{stem}{ext}" in taken or f"{stem}_timeline.csv" in taken:
            stem, i = f"{path.stem}-{i}", i + 1
        names = (f"{stem}{ext}",) if kind == "image" else (f"{stem}{ext}", f"{stem}_timeline.csv")
        taken.update(names)
        out.append(names)
    return out


def foreign_files(out_dir: Path) -> set[str]:
    """Names of the files in ``out_dir`` that no earlier run wrote: new results never take them. An earlier run's
    results.json lists what it wrote, and a new run into the same folder replaces those."""
    if not out_dir.is_dir():
        return set()
    ours: set[str] = set()
    if (out_dir / RESULTS_FILE).is_file():
        try:
            previous = json.loads((out_dir / RESULTS_FILE).read_text())["results"]
            ours = {Path(r[k]).name for r in previous for k in ("annotated", "out_video", "out_csv") if r.get(k)}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise FerkitError(f"{out_dir / RESULTS_FILE} was not written by ferkit predict and would be overwritten; "
                              "give another --out folder") from None
    return {p.name for p in out_dir.iterdir() if p.name not in ours and p.name != RESULTS_FILE}


def predict_inputs(inputs: Sequence[str | Path], recognizer: Recognizer, out: str | Path | None = None, *,
                   detect: bool = True, detect_every: int = DETECT_EVERY, progress: bool = False) -> PredictRun:
    """Run ``recognizer`` on photos, folders of photos and videos (``sample`` = the bundled photo).

    ``detect`` False treats each photo as one already-cropped face (no videos then). ``detect_every``: video frames
    per detector run. ``out``: a folder for the annotated photos and videos, video timelines and results.json.
    Names that do not exist and unknown file types fail before work starts; a file that cannot be decoded becomes a
    ``FailedInput`` in the results (``PredictRun.failed``) and the rest are processed.
    """
    check_detect_every(detect_every)
    paths = expand_inputs(inputs)
    kinds = [input_kind(p) for p in paths]
    if not detect and "video" in kinds:
        video = paths[kinds.index("video")]
        raise FerkitError(f"{video}: without face detection each input must be a face photo, not a video")
    out_dir = check_out_dir(out) if out is not None else None
    names = output_names(paths, kinds, foreign_files(out_dir) if out_dir is not None else None)
    stage, created = None, []
    if out_dir is not None:
        inputs_resolved = {p.resolve() for p in paths}
        targets = [RESULTS_FILE, *(n for group in names for n in group)]
        check_not_folders([out_dir / n for n in targets])
        for n in targets:
            if (out_dir / n).resolve() in inputs_resolved:
                raise FerkitError(f"{out_dir / n} is an input and would be overwritten; give another --out folder")
        created = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # to remove again on failure
        out_dir.mkdir(parents=True, exist_ok=True)
        stage = staging_dir(out_dir, STAGING_PREFIX)
    try:
        results = _run(paths, kinds, names, recognizer, stage, detect, detect_every, progress)
        run = PredictRun(recognizer.describe(), results, str(out_dir) if out_dir is not None else None)
        if stage is not None:
            run = _publish(run, stage, out_dir)
    except BaseException:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
            for d in created:  # innermost first
                if not any(d.iterdir()):
                    d.rmdir()
        raise
    return run


def _run(paths: list[Path], kinds: list[str], names: list[tuple[str, ...]], recognizer: Recognizer,
         stage: Path | None, detect: bool, detect_every: int,
         progress: bool) -> list[PhotoResult | VideoResult | FailedInput]:
    results: list[PhotoResult | VideoResult | FailedInput] = []
    photos = kinds.count("image")
    bar = tqdm(total=photos, desc="photos", unit="photo", disable=not progress or photos < 2, leave=False)
    for path, kind, files in zip(paths, kinds, names):
        files = [stage / n for n in files] if stage is not None else [None] * len(files)
        try:
            if kind == "video":
                results.append(process_video(path, recognizer, *files, progress=progress, detect_every=detect_every))
            else:
                results.append(_photo(path, recognizer, files[0], detect))
        except FerkitError as e:  # this input cannot be read: say why, keep going
            for f in files:
                if f is not None:
                    f.unlink(missing_ok=True)
            results.append(FailedInput(str(path), kind, str(e)))
        if kind == "image":
            bar.update()
    bar.close()
    return results


def _photo(path: Path, recognizer: Recognizer, annotated: Path | None, detect: bool) -> PhotoResult:
    start = time.perf_counter()
    image = read_image(path)
    faces = recognizer.predict(image) if detect else recognizer.predict_faces([image])
    result = PhotoResult(str(path), image.shape[1], image.shape[0], faces, time.perf_counter() - start)
    if annotated is not None:
        _, data = cv2.imencode(".jpg", annotate(image, faces), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        atomic_write(annotated, data.tobytes())
        result.annotated = str(annotated)
    return result


def _publish(run: PredictRun, stage: Path, out_dir: Path) -> PredictRun:
    """Move the staged files into ``out_dir``, write results.json there, remove the staging folder."""
    def moved(f: str | None) -> str | None:
        if f is None:
            return None
        os.replace(f, out_dir / Path(f).name)
        return str(out_dir / Path(f).name)

    results = [replace(r, annotated=moved(r.annotated)) if isinstance(r, PhotoResult)
               else replace(r, out_video=moved(r.out_video), out_csv=moved(r.out_csv)) if isinstance(r, VideoResult)
               else r for r in run.results]
    run = replace(run, results=results)
    os.replace(atomic_write(stage / RESULTS_FILE, json.dumps(run.to_dict(), indent=2) + "\n"), out_dir / RESULTS_FILE)
    stage.rmdir()
    return run


CAMERA_NAME = "webcam"  # file names of a camera recording: webcam.mp4, webcam_timeline.csv


def predict_camera(camera: int, recognizer: Recognizer, out: str | Path | None = None, *,
                   window: str | None = None, detect_every: int = DETECT_EVERY) -> PredictRun:
    """Faces tracked live from webcam ``camera`` until it is stopped (q or Esc in the window, or Ctrl-C).

    ``window``: a title to show the annotated frames in; ``out``: a folder for the annotated video, its timeline
    and results.json.
    """
    check_detect_every(detect_every)
    out_dir = check_out_dir(out) if out is not None else None
    files = (out_dir / f"{CAMERA_NAME}.mp4", out_dir / f"{CAMERA_NAME}_timeline.csv") if out_dir else (None, None)
    result = process_video(camera, recognizer, *files, window=window, detect_every=detect_every)
    run = PredictRun(recognizer.describe(), [result], str(out_dir) if out_dir is not None else None)
    if out_dir is not None:
        atomic_write(out_dir / RESULTS_FILE, json.dumps(run.to_dict(), indent=2) + "\n")
    return run


def face_columns(labels: Sequence[str]) -> list[str]:
    return ["source", "status", "reason", "faces", "frame", "time_s", "track_id", "short_track", "x", "y", "w", "h",
            *labels, "emotion", "score"]


def face_rows(run: PredictRun) -> list[dict[str, Any]]:
    """One row per face of every photo and per tracked face per frame of every video (columns ``face_columns``):
    source, status (ok or unreadable), reason, faces (in the photo or frame), frame, time_s, track_id, short_track
    (1 for a face seen too briefly for the summaries; these four empty for photos), x, y, w, h, one column per
    emotion, emotion, score. A photo without a face and an
    unreadable input keep one row, its face columns empty."""
    labels = run.settings["labels"]
    rows = []
    for r in run.results:
        if isinstance(r, FailedInput):
            rows.append({"source": r.source, "status": "unreadable", "reason": r.reason, "faces": ""})
        elif isinstance(r, PhotoResult):
            base = {"source": r.source, "status": "ok", "reason": "", "faces": len(r.faces), "frame": "",
                    "time_s": "", "track_id": "", "short_track": ""}
            rows += [{**base, **dict(zip("xywh", f.box)), **(d := f.to_dict())["emotions"], "emotion": d["emotion"],
                      "score": d["score"]} for f in r.faces] or [base]
        else:
            per_frame = Counter(t["frame"] for t in r.timeline)
            for t in r.timeline:
                top = max(labels, key=lambda k: t[k])
                rows.append({"source": r.source, "status": "ok", "reason": "", "faces": per_frame[t["frame"]], **t,
                             "emotion": top, "score": t[top]})
            if not r.timeline:
                rows.append({"source": r.source, "status": "ok", "reason": "", "faces": 0})
    return rows
