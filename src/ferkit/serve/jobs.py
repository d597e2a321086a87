"""Video jobs: uploaded videos processed one at a time in a worker thread, polled by id."""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ferkit.errors import FerkitError
from ferkit.infer.detect import get_detector
from ferkit.infer.recognizer import Recognizer
from ferkit.infer.source import VIDEO_EXTENSIONS
from ferkit.infer.video import VideoResult, process_video, timeline_csv
from ferkit.serve.errors import ApiError


@dataclass
class Job:
    id: str
    name: str
    status: str = "queued"  # queued | running | done | failed
    frames_done: int = 0
    frames_total: int | None = None
    error: str | None = None
    result: VideoResult | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "name": self.name, "status": self.status,
                             "progress": {"frames_done": self.frames_done, "frames_total": self.frames_total}}
        if self.error:
            d["error"] = self.error
        if self.result is not None:
            r = self.result.to_dict()
            r["source"] = self.name  # not the server's temporary path
            d["result"] = r
            d["timeline"] = self.result.timeline
        return d

    def csv(self) -> str:
        return timeline_csv(self.result.timeline, self.result.labels)


class JobQueue:
    def __init__(self, recognizer: Recognizer, detector: str, max_jobs: int):
        # The worker's own detector; the classifier is shared with the photo endpoint (inference is thread-safe).
        self.recognizer = Recognizer(recognizer.classifier, get_detector(detector))
        self.max_jobs = max_jobs
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="ferkit-video")
        self._dir = Path(tempfile.mkdtemp(prefix="ferkit-serve-"))

    def submit(self, name: str, data: bytes) -> Job:
        suffix = PurePath(name).suffix.lower()
        if suffix not in VIDEO_EXTENSIONS:
            raise ApiError(415, "not a video", f"{name!r}: give the file name with its video extension "
                           f"({', '.join(sorted(VIDEO_EXTENSIONS))}), as the multipart filename or X-Filename")
        if not data:
            raise ApiError(400, "empty body", "the video is empty")
        with self._lock:
            if len(self.jobs) >= self.max_jobs:
                finished = [j for j in self.jobs.values() if j.status in ("done", "failed")]
                if not finished:
                    raise ApiError(503, "busy", f"{self.max_jobs} video jobs are queued or running; retry later",
                                   {"Retry-After": "10"})
                del self.jobs[finished[0].id]  # the oldest finished one
            job = Job(uuid.uuid4().hex, PurePath(name).name)
            self.jobs[job.id] = job
        path = self._dir / f"{job.id}{suffix}"
        path.write_bytes(data)
        self._worker.submit(self._run, job, path)
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def _run(self, job: Job, path: Path) -> None:
        job.status = "running"

        def on_frame(n: int) -> None:
            job.frames_done = n

        try:
            from ferkit.infer.source import open_source

            with open_source(path) as src:
                job.frames_total = src.frame_count
            job.result = process_video(path, self.recognizer, on_frame=on_frame)
            job.status = "done"
        except FerkitError as e:
            job.error, job.status = str(e).replace(str(path), job.name), "failed"
        except Exception as e:  # noqa: BLE001 - a job fails alone; the server goes on
            job.error, job.status = f"{type(e).__name__}: {e}", "failed"
        finally:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._dir, ignore_errors=True)
