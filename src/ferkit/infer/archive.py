"""Archive-scale prediction (``ferkit batch``): every photo and video named by folders, zip / tar archives and
lists of paths, to Parquet, resumable, on one machine or on a Ray cluster.

Inputs are listed lazily (``ferkit.infer.source.list_inputs``) and processed in chunks: the photos of a chunk are
decoded and their faces detected in a pool of threads (OpenCV and LiteRT release the GIL), then all their faces are
classified in one forward pass; videos are tracked file by file. Each chunk is written as two Parquet files,
``faces/part-N.parquet`` (one row per face, per frame in videos) and then ``status/part-N.parquet`` (one row per
input: ok, no_face or unreadable with the reason), each atomically. An input is done when a status file lists it:
a rerun of the same command skips those (also after kill -9) and removes faces files whose status file never came.

The Ray engine runs the same ``ChunkProcessor`` in actors that load the model once (Ray Data ``map_batches``) and
the driver writes their rows through the same ``PartWriter``, so both engines give the same rows.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import numpy as np

from ferkit.errors import DataError, FerkitError, UnknownNameError
from ferkit.fileio import atomic_write, check_out_dir
from ferkit.infer.detect import DEFAULT_DETECTOR
from ferkit.infer.source import InputRef, decode_image, list_inputs

T = TypeVar("T")
CHUNK = 64  # inputs per chunk (and per Parquet part)
STATUS_COLUMNS = ("source", "kind", "status", "reason", "faces", "width", "height", "seconds")


# ---- one chunk ------------------------------------------------------------------------------------------------


class ChunkProcessor:
    """Detection threads (one detector each) and the classifier: a chunk of inputs -> (status rows, face rows)."""

    def __init__(self, model: str = "default", detector: str = DEFAULT_DETECTOR, backend: str | None = None,
                 tta: str = "none", workers: int | None = None, detect_every: int = 3):
        from ferkit.device import cpu_threads_limited
        from ferkit.infer.classify import load_classifier
        from ferkit.infer.detect import PerThreadDetector

        self.workers = workers or os.cpu_count() or 1
        with ExitStack() as stack:
            # The pool's threads are the parallelism: threads of their own inside each model call would fight them.
            # Set before any runtime is made (LiteRT and onnxruntime read it then); close() sets it back.
            if self.workers > 1:
                stack.enter_context(cpu_threads_limited(1))
            self.classifier = load_classifier(model, backend, tta)
            self.detector = PerThreadDetector(detector)
            self._restore = stack.pop_all()
        self.detect_every = detect_every
        self.labels = self.classifier.labels
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ferkit-detect")

    def _detect(self, ref: InputRef) -> tuple[InputRef, Any, float]:
        """(ref, (image, boxes) or the reason it failed, seconds)."""
        from ferkit.infer.crop import find_faces

        start = time.perf_counter()
        try:
            image = decode_image(ref.read(), ref.source)
        except (FerkitError, OSError, KeyError, zipfile.BadZipFile) as e:
            return ref, str(e) if isinstance(e, FerkitError) else f"{ref.source}: cannot be read ({e})", 0.0
        boxes, crops = find_faces(self.detector, image, self.classifier.face_size)
        return ref, (image.shape, boxes, crops), time.perf_counter() - start

    def _video(self, ref: InputRef) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        import tempfile

        from ferkit.infer.recognizer import Recognizer
        from ferkit.infer.video import process_video

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ferkit-batch-") as tmp:
            try:
                path = Path(ref.path)
                if ref.member is not None or ref.data is not None:
                    path = Path(tmp) / f"video{PurePosixPath(ref.member).suffix.lower()}"
                    path.write_bytes(ref.read())
                result = process_video(path, Recognizer(self.classifier, self.detector.get()),
                                       detect_every=self.detect_every)
            except (FerkitError, OSError, KeyError, zipfile.BadZipFile) as e:
                return _status(ref, "unreadable", str(e).replace(str(path), ref.source)), []
        rows = [{"source": ref.source, **{k: r[k] for k in ("frame", "time_s", "track_id", "x", "y", "w", "h")},
                 **{c: r[c] for c in self.labels}} for r in result.timeline]
        for row in rows:
            row["emotion"] = max(self.labels, key=row.get)
            row["score"] = row[row["emotion"]]
        status = _status(ref, "ok" if rows else "no_face", "", len(result.tracks), result.width, result.height,
                         time.perf_counter() - start)
        return status, rows

    def __call__(self, refs: Sequence[InputRef]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self.finish(refs, self.submit(refs))

    def submit(self, refs: Sequence[InputRef]) -> list[Future]:
        """Start decoding and detecting the photos of ``refs`` in the pool."""
        return [self.pool.submit(self._detect, r) for r in refs if r.kind == "image"]

    def finish(self, refs: Sequence[InputRef],
               futures: list[Future]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Classify the faces ``submit`` found, all in one forward pass, and track the videos: (statuses, faces)."""
        detected = {r.source: out for r, *out in (f.result() for f in futures)}
        crops = [out[0][2] for out in detected.values() if not isinstance(out[0], str)]
        t0 = time.perf_counter()
        all_crops = np.concatenate(crops) if crops else np.zeros((0, 1, 1), np.uint8)
        probs = self.classifier.predict(all_crops) if len(all_crops) else np.zeros((0, len(self.labels)))
        share = (time.perf_counter() - t0) / max(len(all_crops), 1)  # classification time per face
        statuses, faces, k = [], [], 0
        for ref in refs:
            if ref.kind == "video":
                status, rows = self._video(ref)
                statuses.append(status)
                faces += rows
                continue
            found, seconds = detected[ref.source]
            if isinstance(found, str):
                statuses.append(_status(ref, "unreadable", found))
                continue
            shape, boxes, _ = found
            for box, p in zip(boxes, probs[k:k + len(boxes)]):
                top = int(np.argmax(p))
                faces.append({"source": ref.source, "frame": None, "time_s": None, "track_id": None,
                              "x": box[0], "y": box[1], "w": box[2], "h": box[3],
                              **{c: float(v) for c, v in zip(self.labels, p)},
                              "emotion": self.labels[top], "score": float(p[top])})
            k += len(boxes)
            statuses.append(_status(ref, "ok" if boxes else "no_face", "", len(boxes), shape[1], shape[0],
                                    seconds + share * len(boxes)))
        return statuses, faces

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self._restore.close()


def _status(ref: InputRef, status: str, reason: str, faces: int = 0, width: int = 0, height: int = 0,
            seconds: float = 0.0) -> dict[str, Any]:
    return {"source": ref.source, "kind": ref.kind, "status": status, "reason": reason, "faces": faces,
            "width": width, "height": height, "seconds": round(seconds, 6)}


# ---- output -------------------------------------------------------------------------------------------------


def face_schema(labels: Sequence[str]):
    import pyarrow as pa

    return pa.schema([("source", pa.string()), ("frame", pa.int32()), ("time_s", pa.float64()),
                      ("track_id", pa.int32()), ("x", pa.int32()), ("y", pa.int32()), ("w", pa.int32()),
                      ("h", pa.int32()), *((c, pa.float32()) for c in labels), ("emotion", pa.string()),
                      ("score", pa.float32())])


def status_schema():
    import pyarrow as pa

    return pa.schema([("source", pa.string()), ("kind", pa.string()), ("status", pa.string()),
                      ("reason", pa.string()), ("faces", pa.int32()), ("width", pa.int32()),
                      ("height", pa.int32()), ("seconds", pa.float64())])


class PartWriter:
    """The output folder: numbered Parquet parts, and which inputs they already cover."""

    def __init__(self, out: str | Path, labels: Sequence[str]):
        import pyarrow.parquet as pq

        self.out = check_out_dir(out)
        self.faces_dir, self.status_dir = self.out / "faces", self.out / "status"
        self.faces_dir.mkdir(parents=True, exist_ok=True)
        self.status_dir.mkdir(parents=True, exist_ok=True)
        self.labels = list(labels)
        done_parts = {p.name for p in self.status_dir.glob("part-*.parquet")}
        for p in self.faces_dir.glob("part-*.parquet"):
            if p.name not in done_parts:  # its chunk was killed before its status was written
                p.unlink()
        for p in self.faces_dir.glob(".*"):
            p.unlink()  # temporary files of a killed write
        for p in self.status_dir.glob(".*"):
            p.unlink()
        self.done: set[str] = set()
        for p in sorted(self.status_dir.glob("part-*.parquet")):
            self.done.update(pq.read_table(p, columns=["source"]).column("source").to_pylist())
        if self.done:
            first = sorted(self.faces_dir.glob("part-*.parquet"))
            if first and pq.read_schema(first[0]).names != face_schema(self.labels).names:
                raise FerkitError(f"{self.out} holds results of a model with other emotions; give another --out")
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in self.status_dir.glob("part-*.parquet")),
                                 default=0)

    def write(self, statuses: list[dict[str, Any]], faces: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = f"part-{self.next_part:06d}.parquet"
        for folder, rows, schema in ((self.faces_dir, faces, face_schema(self.labels)),
                                     (self.status_dir, statuses, status_schema())):  # status last: it marks done
            buf = io.BytesIO()
            table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
            pq.write_table(table, buf)
            atomic_write(folder / name, buf.getvalue())
        self.done.update(s["source"] for s in statuses)
        self.next_part += 1


# ---- the job ------------------------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    out: str
    engine: str
    inputs: int  # processed by this run
    skipped: int  # done by an earlier run
    faces: int
    no_face: int
    unreadable: int
    seconds: float

    @property
    def inputs_per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "inputs_per_s": round(self.inputs_per_s, 3)}


def chunks(refs: Iterator[InputRef], done: set[str], size: int, skipped: list[int]) -> Iterator[list[InputRef]]:
    chunk: list[InputRef] = []
    seen: set[str] = set()  # an input named twice (a folder and a list naming one of its photos) is done once
    for ref in refs:
        if ref.source in seen:
            continue
        seen.add(ref.source)
        if ref.source in done:
            skipped[0] += 1
            continue
        chunk.append(ref)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_archive(inputs: Sequence[str | Path], out: str | Path, model: str = "default",
                    detector: str = DEFAULT_DETECTOR, backend: str | None = None, tta: str = "none",
                    engine: str = "local",
                    workers: int | None = None, ray_address: str | None = None, chunk: int = CHUNK,
                    detect_every: int = 3, progress: bool = False) -> BatchSummary:
    """Run the job; see the module docstring. ``engine``: local (threads on this machine) or ray."""
    from tqdm import tqdm

    if engine not in ("local", "ray"):
        raise UnknownNameError(f"unknown engine {engine!r}; choose local or ray")
    if chunk < 1:
        raise FerkitError(f"chunk {chunk}: give 1 or more inputs per chunk")
    if detect_every < 1:
        raise FerkitError(f"detect every {detect_every} frames: give 1 (every frame) or more")
    refs = list_inputs(inputs)
    first = next(refs, None)
    if first is None:
        raise DataError(f"{', '.join(map(str, inputs))}: no photos or videos found")
    refs = _chain(first, refs)
    processor = ChunkProcessor(model, detector, backend, tta, workers, detect_every) if engine == "local" else None
    try:  # the processor's threads and thread setting are given back however the job ends
        labels = processor.labels if processor else _labels(model, backend, tta)
        writer = PartWriter(out, labels)
        skipped = [0]
        counts = {"inputs": 0, "faces": 0, "no_face": 0, "unreadable": 0}
        start = time.perf_counter()
        if engine == "local":
            results = _pipelined(processor, chunks(refs, writer.done, chunk, skipped))
        else:
            results = _ray_results(chunks(refs, writer.done, chunk, skipped), model, detector, backend, tta,
                                   workers, ray_address, detect_every)
        with tqdm(desc="inputs", unit="input", disable=not progress) as bar:
            for statuses, faces in results:
                writer.write(statuses, faces)
                counts["inputs"] += len(statuses)
                counts["faces"] += len(faces)
                counts["no_face"] += sum(s["status"] == "no_face" for s in statuses)
                counts["unreadable"] += sum(s["status"] == "unreadable" for s in statuses)
                bar.update(len(statuses))
    finally:
        if processor is not None:
            processor.close()
    return BatchSummary(str(writer.out), engine, counts["inputs"], skipped[0], counts["faces"], counts["no_face"],
                        counts["unreadable"], time.perf_counter() - start)


def _pipelined(processor: ChunkProcessor, chunk_iter: Iterator[list[InputRef]], ahead: int = 2):
    """Each chunk's results, with the photos of the next ``ahead`` chunks already decoding and detecting meanwhile
    (so the pool never waits while a chunk is classified and written)."""
    pending: deque = deque()
    for refs in chunk_iter:
        pending.append((refs, processor.submit(refs)))
        if len(pending) > ahead:
            yield processor.finish(*pending.popleft())
    while pending:
        yield processor.finish(*pending.popleft())


def _chain(first: T, rest: Iterator[T]) -> Iterator[T]:
    yield first
    yield from rest


def _labels(model: str, backend: str | None, tta: str) -> list[str]:
    from ferkit.infer.classify import load_classifier

    return load_classifier(model, backend, tta).labels


# ---- Ray -----------------------------------------------------------------------------------------------------


class _RayChunkActor:
    """A Ray actor: the model loaded once; each call processes the chunks of one Ray Data batch."""

    def __init__(self, model, detector, backend, tta, detect_every):
        from ferkit.device import set_cpu_threads

        set_cpu_threads(1)  # one actor per CPU is the parallelism
        self.processor = ChunkProcessor(model, detector, backend, tta, 1, detect_every)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import json

        import ray

        out_status, out_faces = [], []
        for refs_json in ray.get(list(batch["refs"])):
            refs = [InputRef.from_json(r) for r in json.loads(refs_json)]
            statuses, faces = self.processor(refs)
            out_status.append(json.dumps(statuses))
            out_faces.append(json.dumps(faces))
        return {"status": np.array(out_status, dtype=object), "faces": np.array(out_faces, dtype=object)}


def _ray_results(chunk_iter: Iterator[list[InputRef]], model, detector, backend, tta, workers, address,
                 detect_every) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The chunks processed by Ray Data actors (one per CPU unless ``workers``), in order."""
    import json

    try:
        import ray
    except ImportError:
        raise FerkitError("the ray engine needs Ray: pip install 'ferkit[ray]'") from None
    chunk_iter = iter(chunk_iter)
    first = next(chunk_iter, None)
    if first is None:
        return
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if address else {"num_cpus": workers or os.cpu_count()}))
    try:
        # Each chunk goes to the object store (which spills to disk when full), so the driver holds references
        # only, whatever the size of the tar members read into the chunks.
        items = [{"refs": ray.put(json.dumps([r.to_json() for r in c]))} for c in _chain(first, chunk_iter)]
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _RayChunkActor, batch_size=1, concurrency=n, num_cpus=1,
            fn_constructor_args=(model, detector, backend, tta, detect_every))
        for row in ds.iter_rows():
            yield json.loads(row["status"]), json.loads(row["faces"])
    finally:
        if started:
            ray.shutdown()
