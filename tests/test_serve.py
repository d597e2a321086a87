"""``ferkit serve``: the real server in a subprocess on a free port, driven over HTTP."""

from __future__ import annotations

import io
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from csv import DictReader
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import FERKIT, png_header

from ferkit.infer.source import SAMPLE_PHOTO
from ferkit.serve import running_server

KEY = "test-key-1234"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def server():
    with running_server("--api-key", KEY, "--max-upload-mb", "2", "--workers", "2") as srv:
        yield srv.url
    # SIGTERM: a clean shutdown (uvicorn re-raises the signal once it has finished)
    assert srv.proc.returncode in (0, -15) and "Application shutdown complete" in srv.output


def post_faces(url: str, files: list[tuple[str, bytes]], headers=HEADERS) -> httpx.Response:
    return httpx.post(f"{url}/v1/faces", files=[("files", f) for f in files], headers=headers, timeout=60)


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def test_sample_photo_gives_one_happy_face(server):
    r = post_faces(server, [("astronaut.jpg", SAMPLE_PHOTO.read_bytes())])
    assert r.status_code == 200, r.text
    image = r.json()["images"][0]
    assert (image["name"], image["width"], image["height"]) == ("astronaut.jpg", 512, 512)
    assert len(image["faces"]) == 1 and image["faces"][0]["emotion"] == "happy"
    assert set(image["timing_ms"]) == {"decode", "detect", "classify", "total"}
    # Each request runs on one core (concurrent ones fill the others), unless --threads says otherwise.
    serving = httpx.get(f"{server}/v1/models", headers=HEADERS).json()["serving"]
    assert (serving["threads"], serving["workers"]) == (1, 2)
    # The raw bytes of one image are the same request.
    raw = httpx.post(f"{server}/v1/faces", content=SAMPLE_PHOTO.read_bytes(), headers=HEADERS, timeout=60)
    assert raw.json()["images"][0]["faces"] == image["faces"]


def faces_served(url: str) -> float:
    line = next(x for x in httpx.get(f"{url}/metrics").text.splitlines() if x.startswith("ferkit_faces_total"))
    return float(line.split()[-1])


def test_several_images_and_concurrent_requests_each_get_their_own_faces(server):
    before = faces_served(server)
    photo = cv2.imread(str(SAMPLE_PHOTO))
    variants = [("flipped.jpg", jpeg(photo[:, ::-1])), ("small.jpg", jpeg(cv2.resize(photo, (320, 320)))),
                ("padded.jpg", jpeg(cv2.copyMakeBorder(photo, 60, 0, 90, 0, cv2.BORDER_CONSTANT))),
                ("original.jpg", SAMPLE_PHOTO.read_bytes())]
    variants.append(("noface.png", cv2.imencode(".png", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()))
    solo = {name: post_faces(server, [(name, data)]).json()["images"][0]["faces"] for name, data in variants}
    assert solo["noface.png"] == [] and all(solo[n] for n in solo if n != "noface.png")
    boxes = {n: tuple(f[0]["box"]) for n, f in solo.items() if f}
    assert len(set(boxes.values())) == 4  # four different places, so a mix-up would show

    together = post_faces(server, variants).json()["images"]
    assert [i["name"] for i in together] == [n for n, _ in variants]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda v: (v[0], post_faces(server, [v])), variants * 4))
    for name, got in [*((i["name"], i["faces"]) for i in together),
                      *((n, r.json()["images"][0]["faces"]) for n, r in answers)]:
        assert [f["box"] for f in got] == [f["box"] for f in solo[name]]
        for a, b in zip(got, solo[name]):
            assert a["emotion"] == b["emotion"]
            assert max(abs(a["emotions"][k] - b["emotions"][k]) for k in a["emotions"]) < 2e-3
    assert faces_served(server) - before == 4 + 4 + 4 * 4  # solo, together, concurrent


def test_bad_requests_get_their_4xx_and_the_server_keeps_serving(server):
    cases = [
        (post_faces(server, [("a.jpg", SAMPLE_PHOTO.read_bytes())], headers={}), 401),
        (post_faces(server, [("a.jpg", SAMPLE_PHOTO.read_bytes())], headers={"X-API-Key": "wrong"}), 401),
        (post_faces(server, [("notes.txt", b"hello, not an image")]), 415),
        (post_faces(server, [("empty.jpg", b"")]), 415),
        (post_faces(server, [("bomb.png", png_header(30000, 30000))]), 413),
        (post_faces(server, [("big.jpg", b"\xff" * (3 * 2**20))]), 413),
        (post_faces(server, [(f"{i}.jpg", SAMPLE_PHOTO.read_bytes()) for i in range(17)]), 413),
        (httpx.post(f"{server}/v1/faces", content=b"", headers=HEADERS), 400),
        (httpx.post(f"{server}/v1/faces", content=b"--x\r\nbroken",
                    headers={**HEADERS, "Content-Type": "multipart/form-data; boundary=x"}), 400),
        (httpx.get(f"{server}/v1/jobs/nope", headers=HEADERS), 404),
        (httpx.get(f"{server}/v1/nothing", headers=HEADERS), 404),
        (httpx.post(f"{server}/v1/videos", files={"file": ("clip.txt", b"x")}, headers=HEADERS), 415),
    ]
    for response, code in cases:
        assert response.status_code == code, response.text
        body = response.json()
        assert set(body) == {"error", "detail"} and body["detail"]
    assert "more than the 40,000,000" in cases[4][0].json()["detail"]
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert post_faces(server, [("a.jpg", SAMPLE_PHOTO.read_bytes())]).status_code == 200
    metrics = httpx.get(f"{server}/metrics").text
    assert 'ferkit_errors_total{code="401",route="/v1/faces"} 2.0' in metrics
    assert 'ferkit_errors_total{code="404",route="other"}' in metrics


def test_video_job_goes_from_queued_to_done(server, tmp_path):
    photo = cv2.imread(str(SAMPLE_PHOTO))
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    for k in range(12):
        writer.write(np.roll(photo, 3 * k, axis=1))
    writer.release()
    r = httpx.post(f"{server}/v1/videos", files={"file": ("clip.mp4", path.read_bytes())}, headers=HEADERS)
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running", "done")
    url = f"{server}{r.json()['url']}"
    for _ in range(240):
        job = httpx.get(url, headers=HEADERS).json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert job["status"] == "done", job
    assert job["progress"] == {"frames_done": 12, "frames_total": 12}
    assert job["result"]["frames"] == 12 and job["result"]["source"] == "clip.mp4"
    tracks = job["result"]["tracks"]
    assert len(tracks) == 1 and tracks[0]["emotion"] == "happy" and tracks[0]["frames"] == 12
    csv = httpx.get(url, params={"format": "csv"}, headers=HEADERS)
    assert csv.headers["content-type"].startswith("text/csv")
    timeline = list(DictReader(io.StringIO(csv.text)))
    assert [r["frame"] for r in timeline if r["track_id"] == str(tracks[0]["track_id"])] == [str(k) for k in range(12)]
    assert all(r["short_track"] == "1" for r in timeline if r["track_id"] != str(tracks[0]["track_id"]))
    # A file that is no video fails its job alone, with a reason.
    bad = httpx.post(f"{server}/v1/videos", files={"file": ("broken.mp4", b"\0" * 5000)}, headers=HEADERS)
    for _ in range(60):
        job = httpx.get(f"{server}{bad.json()['url']}", headers=HEADERS).json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert job["status"] == "failed" and "broken.mp4" in job["error"] and "/tmp" not in job["error"]


def test_micro_batcher_merges_concurrent_faces_and_splits_the_answers(fer_zip):
    import asyncio

    from conftest import decode, real_faces

    from ferkit.infer.classify import load_classifier
    from ferkit.serve.batcher import MicroBatcher

    classifier = load_classifier("default")
    faces = np.stack([decode(data) for files in real_faces(fer_zip, 2).values() for _, data in files])
    requests = [faces[i:i + k] for i, k in zip(range(0, 14, 2), (1, 2, 1, 3, 2, 1, 2))]
    sizes = []

    async def run(enabled: bool):
        batcher = MicroBatcher(classifier.predict, max_batch=8, max_wait_s=0.05, enabled=enabled,
                               on_batch=sizes.append)
        await batcher.start()
        out = await asyncio.gather(*(batcher.classify(r) for r in requests))
        await batcher.stop()
        return out

    async def lone(more_coming: bool):  # one request, then another once the first is answered
        batcher = MicroBatcher(classifier.predict, max_batch=8, max_wait_s=2.0, on_batch=sizes.append,
                               more_coming=lambda: more_coming)
        await batcher.start()
        first = asyncio.ensure_future(batcher.classify(requests[0]))
        await asyncio.sleep(0.2)
        await asyncio.gather(first, batcher.classify(requests[1]))
        await batcher.stop()

    asyncio.run(lone(True))  # the first waits for more faces, and the second joins it
    assert sizes == [len(requests[0]) + len(requests[1])]
    sizes.clear()
    asyncio.run(lone(False))  # nothing else on its way: the first goes at once
    assert sizes == [len(requests[0]), len(requests[1])]
    sizes.clear()
    batched = asyncio.run(run(True))
    assert sum(sizes) == sum(map(len, requests)) and max(sizes) <= 8 and len(sizes) < len(requests)
    sizes.clear()
    solo = asyncio.run(run(False))
    assert sizes == [len(r) for r in requests]
    for a, b, r in zip(batched, solo, requests):
        assert a.shape == (len(r), 8) and np.allclose(a, b, atol=1e-3)
        assert np.allclose(a, classifier.predict(r), atol=1e-3)


def test_openapi_fuzzing_finds_no_server_error(server, tmp_path):
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/v1/faces", "/v1/videos", "/v1/jobs/{job_id}", "/v1/models", "/healthz", "/readyz",
            "/metrics"} <= set(schema["paths"])
    st = Path(FERKIT).parent / "schemathesis"
    result = subprocess.run([str(st), "run", f"{server}/openapi.json", "--checks", "not_a_server_error",
                             "--max-examples", "15", "-H", f"X-API-Key: {KEY}", "--no-color"],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]


def test_bench_serve_measures_each_scenario(capsys):
    from conftest import run_main

    code, out, _ = run_main(capsys, "bench", "serve", "--clients", "4", "--requests", "8", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["clients"], r["batching"]) for r in rows] == [(1, True), (4, True), (4, False)]
    assert rows[0]["ratio"] == 1 and all(r["photos_per_s"] > 0 and r["p50_ms"] <= r["p99_ms"] for r in rows)
    code, _, err = run_main(capsys, "bench", "serve", "--clients", "1")
    assert code == 2 and "at least 2 clients" in err


def test_serve_needs_its_options_right(tmp_path):
    bad = subprocess.run([str(FERKIT), "serve", "--model", "nonexistent-model"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "nonexistent-model" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([str(FERKIT), "serve", "--port", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--port 0 is out of range" in bad.stderr


def test_full_queue_answers_503_and_a_slow_request_504():
    from fastapi.testclient import TestClient

    from ferkit.serve.app import Settings, create_app

    with TestClient(create_app(Settings(max_queue=0))) as client:
        r = client.post("/v1/faces", content=SAMPLE_PHOTO.read_bytes())
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"] == "busy"
        assert client.get("/readyz").status_code == 200  # health checks are never queued
        assert 'ferkit_errors_total{code="503",route="/v1/faces"} 1.0' in client.get("/metrics").text
    with TestClient(create_app(Settings(timeout_s=0.001))) as client:
        r = client.post("/v1/faces", content=SAMPLE_PHOTO.read_bytes())
        assert r.status_code == 504 and r.json()["error"] == "timeout"
