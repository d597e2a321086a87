"""The web app in a real browser: `ferkit app` on a free port, driven by Playwright through Debian's chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import png_header

from ferkit.infer import SAMPLE_PHOTO
from ferkit.models.weights import WEIGHTS

CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT_S = 90
RESULT_TIMEOUT_MS = 60_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ferkit app exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"ferkit app did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The app as a user starts it, with a models folder holding a run (a copy of the fer2013 model) and a
    checkpoint whose header is broken: (url, the `ferkit app` process)."""
    root = tmp_path_factory.mktemp("app")
    models = root / "models"
    (models / "run1").mkdir(parents=True)
    shutil.copy(WEIGHTS["fer2013"].path, models / "run1" / "best.safetensors")
    (models / "broken.safetensors").write_bytes(b"\x0c\x00\x00\x00\x00\x00\x00\x00{not a json}")
    port, log = free_port(), root / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ferkit.cli", "app", "--port", str(port),
                                 "--models-dir", str(models)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "TMPDIR": str(root)})  # video work files stay in the test's folder
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, proc, log)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def app_url(app_server):
    return app_server[0]


@pytest.fixture(scope="module")
def chromium():
    """Playwright's chromium driver on Debian's browser; ``launch(*flags)`` starts a headless browser."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the app tests drive Debian's chromium; install it with "
                    "`apt-get install -y chromium` (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield lambda *flags: p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                               args=["--no-sandbox", *flags])


@pytest.fixture(scope="module")
def browser(chromium):
    b = chromium()
    yield b
    b.close()


@pytest.fixture
def page(browser, app_url):
    yield from open_page(browser, app_url)


def open_page(browser, url: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.goto(url)
    tab(page, "Photo").wait_for(timeout=RESULT_TIMEOUT_MS)
    wait_idle(page)
    yield page
    assert page.locator('[data-testid="stException"]').count() == 0, "a traceback is shown in the page"
    context.close()


def tab(page, name: str):
    return page.locator('[data-testid="stTab"]').filter(has_text=re.compile(f"{name}$"))


def wait_idle(page) -> None:
    """Until the app's script run is over: widgets touched mid-run can be replaced under the test."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=RESULT_TIMEOUT_MS)


def upload(page, label: str, *files: Path) -> None:
    """Give files to the uploader labelled ``label`` and wait until the page shows them."""
    wait_idle(page)
    box = page.locator('[data-testid="stFileUploader"]').filter(has_text=label)
    box.locator('input[type="file"]').set_input_files([str(f) for f in files])
    for f in files:
        box.locator('[data-testid="stFileChip"]').filter(has_text=f.name).wait_for(timeout=RESULT_TIMEOUT_MS)


def test_photo_shows_each_face_and_downloads_json(page, tmp_path):
    upload(page, "Photos", SAMPLE_PHOTO)
    card = page.locator(".fk-face")
    card.first.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert card.count() == 1
    assert page.locator(".fk-summary").first.get_attribute("data-faces") == "1"
    assert card.first.locator(".fk-emotion").inner_text().strip() == "happy"
    page.screenshot(path=str(tmp_path / "photo.png"), full_page=True)
    with page.expect_download() as dl:
        page.get_by_role("button", name="Download results (JSON)").click()
    report = json.loads(Path(dl.value.path()).read_text())
    [photo] = report["photos"]
    assert photo["file"] == SAMPLE_PHOTO.name and len(photo["faces"]) == 1
    assert photo["faces"][0]["emotion"] == "happy" and report["model"].startswith("default")


def test_bad_uploads_get_a_message_and_the_page_keeps_working(page, app_url, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(SAMPLE_PHOTO.read_bytes()[:300])  # a JPEG cut off after its header
    upload(page, "Photos", notes, fake)
    alerts = page.locator('[data-testid="stAlertContentError"]')
    alerts.nth(1).wait_for(timeout=RESULT_TIMEOUT_MS)
    text = alerts.all_inner_texts()
    assert any("notes.txt is not a photo file" in t for t in text), text
    assert any("holiday.jpg could not be read as an image" in t for t in text), text
    page.screenshot(path=str(tmp_path / "errors.png"), full_page=True)
    # the server is still up and the same page still recognises a good photo
    with urllib.request.urlopen(f"{app_url}/_stcore/health", timeout=5) as r:
        assert r.read().strip() == b"ok"
    upload(page, "Photos", SAMPLE_PHOTO)
    page.locator(".fk-face").first.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert page.locator(".fk-face .fk-emotion").first.inner_text().strip() == "happy"


def memory_mb(pid: int, field: str) -> float:
    """VmRSS (now) or VmHWM (the peak since the last reset) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def streamlit_pid(launcher: int) -> int:
    """`ferkit app` runs Streamlit in a child process: its pid."""
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and
                (p / "stat").is_file() and (p / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(launcher)]
    assert len(children) == 1, children
    return children[0]


def test_photo_uploads_cost_the_server_bounded_memory(browser, app_server, tmp_path):
    """A PNG whose header claims 30000x30000 pixels (under 1 MB on the wire) is refused from its header, and the
    largest photo the app accepts (7000x7000) is read and answered, each within 500 MB of server memory."""
    url, launcher = app_server
    server = streamlit_pid(launcher.pid)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(30000, 30000))
    big = tmp_path / "big.png"
    scene = np.full((7000, 7000, 3), 128, np.uint8)
    scene[2000:4500, 2000:4500] = cv2.resize(cv2.imread(str(SAMPLE_PHOTO)), (2500, 2500))
    cv2.imwrite(str(big), scene)
    del scene
    for photo, answer in ((bomb, '[data-testid="stAlertContentError"]'), (big, ".fk-face")):
        session = open_page(browser, url)
        page = next(session)
        before = memory_mb(server, "VmRSS")
        Path(f"/proc/{server}/clear_refs").write_text("5")  # the peak starts again from now
        upload(page, "Photos", photo)
        page.locator(answer).first.wait_for(timeout=RESULT_TIMEOUT_MS)
        wait_idle(page)
        peak = memory_mb(server, "VmHWM") - before
        print(f"{photo.name}: peak {peak:.0f} MB over the {before:.0f} MB the server held before")
        assert peak < 500, f"{photo.name}: {peak:.0f} MB"
        next(session, None)


def test_sessions_at_once_each_get_their_own_faces(browser, app_url, tmp_path):
    """Two browser sessions upload different photos at the same moment (one face; two faces) and share the
    server's model: each page shows its own photo's faces."""
    photo = cv2.imread(str(SAMPLE_PHOTO))
    pair = tmp_path / "pair.jpg"
    cv2.imwrite(str(pair), np.hstack([photo, photo[:, ::-1]]))
    sessions = [open_page(browser, app_url) for _ in range(2)]
    pages = [next(s) for s in sessions]
    for page, upload_file in zip(pages, (SAMPLE_PHOTO, pair)):
        box = page.locator('[data-testid="stFileUploader"]').filter(has_text="Photos")
        box.locator('input[type="file"]').set_input_files([str(upload_file)])  # both before either answers
    for page in pages:
        page.locator(".fk-face").first.wait_for(timeout=RESULT_TIMEOUT_MS)
        wait_idle(page)
    from ferkit.infer import Recognizer

    alone = [Recognizer.load().predict(p) for p in (SAMPLE_PHOTO, pair)]  # what each photo gives by itself
    assert len(alone[0]) != len(alone[1])
    for page, faces in zip(pages, alone):
        assert page.locator(".fk-face .fk-emotion").all_inner_texts() == [f.emotion for f in faces]
    for session in sessions:  # each page's own checks (no traceback shown), then its browser context is closed
        next(session, None)


def test_a_broken_model_file_is_named_and_pages_keep_working(page):
    note = page.locator('[data-testid="stSidebar"]').get_by_text("not offered: broken.safetensors")
    note.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert "not a readable safetensors checkpoint" in note.inner_text()
    upload(page, "Photos", SAMPLE_PHOTO)
    page.locator(".fk-face").first.wait_for(timeout=RESULT_TIMEOUT_MS)


def test_compare_runs_two_models_side_by_side(page, tmp_path):
    tab(page, "Compare models").click()
    upload(page, "Photo for every model", SAMPLE_PHOTO)
    cards = page.locator(".fk-face")
    cards.nth(1).wait_for(timeout=RESULT_TIMEOUT_MS)
    assert cards.count() == 2  # one face, two models
    assert [e.strip() for e in page.locator(".fk-face .fk-emotion").all_inner_texts()] == ["happy", "happy"]
    # Two different models answered: default (a bar for each of 8 emotions) and fer2013 (7, no contempt).
    assert [cards.nth(i).locator(".fk-row").count() for i in (0, 1)] == [8, 7]
    default, fer2013 = cards.all_inner_texts()
    assert "contempt" in default and "contempt" not in fer2013
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)


def test_video_is_tracked_played_and_charted(page, tmp_path):
    # a real clip: the sample photo drifting right by a pixel a frame for one second
    photo = cv2.imread(str(SAMPLE_PHOTO))  # (512, 512, 3)
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    for i in range(10):
        writer.write(cv2.warpAffine(photo, np.float32([[1, 0, i], [0, 1, 0]]), (512, 512),
                                    borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    tab(page, "Video").click()
    upload(page, "Video", clip)
    video = page.locator("video").first
    video.wait_for(timeout=RESULT_TIMEOUT_MS)
    # chromium decodes the re-encoded video: it knows its size and can play it
    page.wait_for_function("() => { const v = document.querySelector('video'); "
                           "return v && v.readyState >= 2 && v.videoWidth === 512; }", timeout=RESULT_TIMEOUT_MS)
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('video').currentTime > 0.2", timeout=RESULT_TIMEOUT_MS)
    track = page.locator(".fk-track")
    track.first.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert track.count() == 1 and "happy" in track.first.inner_text()
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    charts.first.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert charts.count() == 1  # one timeline per track
    with page.expect_download() as dl:
        page.get_by_role("button", name="Emotion timeline (CSV)").click()
    rows = Path(dl.value.path()).read_text().splitlines()
    assert rows[0].startswith("frame,time_s,track_id,short_track,x,y,w,h,") and len(rows) == 1 + 10
    page.screenshot(path=str(tmp_path / "video.png"), full_page=True)


def webcam_component(page):
    tab(page, "Webcam").click()
    return page.frame_locator('iframe[title="streamlit_webrtc.component.webrtc_streamer"]')


def test_webcam_without_a_camera_leaves_the_page_working(page):
    component = webcam_component(page)
    component.get_by_role("button", name="Start").click()
    # a headless browser has no camera: the component says so, and the rest of the page keeps working
    component.get_by_text("Requested device not found").wait_for(timeout=RESULT_TIMEOUT_MS)
    tab(page, "Photo").click()
    upload(page, "Photos", SAMPLE_PHOTO)
    page.locator(".fk-face").first.wait_for(timeout=RESULT_TIMEOUT_MS)
    assert page.locator(".fk-face .fk-emotion").first.inner_text().strip() == "happy"


def test_webcam_recognises_a_face_live(chromium, app_url, tmp_path):
    # chromium's fake camera plays a file: the sample photo, as Y4M (planar YUV 4:2:0)
    photo = cv2.imread(str(SAMPLE_PHOTO))
    h, w = photo.shape[:2]
    camera = tmp_path / "camera.y4m"
    with camera.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        f.write((b"FRAME\n" + cv2.cvtColor(photo, cv2.COLOR_BGR2YUV_I420).tobytes()) * 10)
    from playwright.sync_api import expect

    browser = chromium("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                       f"--use-file-for-fake-video-capture={camera}")
    try:
        for page in open_page(browser, app_url):
            webcam_component(page).get_by_role("button", name="Start").click()
            # the readout beside the video refreshes every second with the faces of the latest frame
            card = page.locator(".fk-face")
            card.first.wait_for(timeout=RESULT_TIMEOUT_MS)
            assert card.count() == 1 and card.first.locator(".fk-emotion").inner_text().strip() == "happy"
            fps = page.locator('[data-testid="stMetric"]').filter(has_text="Frames per second")
            expect(fps.locator('[data-testid="stMetricValue"]')).not_to_have_text("0.0", timeout=RESULT_TIMEOUT_MS)
            assert float(fps.locator('[data-testid="stMetricValue"]').inner_text()) > 0
            page.screenshot(path=str(tmp_path / "webcam.png"))
    finally:
        browser.close()


# ---- the parts without a browser: command line, upload checks, browser video, model discovery ----

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferkit.cli", "app", *args], capture_output=True, text=True,
                          timeout=120)


def test_cli_refuses_what_it_cannot_serve(tmp_path):
    missing = run_cli("--models-dir", str(tmp_path / "nowhere"), "--port", str(free_port()))
    notes = tmp_path / "notes.txt"
    notes.write_text("hi")
    wrong = run_cli("--model", str(notes), "--port", str(free_port()))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = run_cli("--port", str(busy.getsockname()[1]))
    for r, words in ((missing, "no such folder"), (wrong, "give a shipped model's name, a run directory"),
                     (taken, "is in use")):
        assert r.returncode == 2 and r.stderr.startswith("error: ") and words in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_uploads_are_checked_for_type_size_and_content(tmp_path):
    from ferkit.app.launch import MAX_PHOTO_MB
    from ferkit.app.uploads import UploadError, read_photo, save_video

    data = SAMPLE_PHOTO.read_bytes()
    assert read_photo("me.JPG", data).shape == (512, 512, 3)
    for name, payload, words in (("notes.txt", b"hello", "not a photo file"),
                                 ("empty.png", b"", "is empty"),
                                 ("cut.jpg", data[:300], "could not be read as an image"),
                                 ("huge.jpg", data + bytes(MAX_PHOTO_MB * 2**20), f"the limit is {MAX_PHOTO_MB} MB")):
        with pytest.raises(UploadError, match=words):
            read_photo(name, payload)
    with pytest.raises(UploadError, match="could not be decoded as a video"):
        save_video("talk.mp4", b"not a video at all", tmp_path / "v1")
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5, (512, 512))
    for _ in range(5):
        writer.write(cv2.imread(str(SAMPLE_PHOTO)))
    writer.release()
    info = save_video("clip.avi", clip.read_bytes(), tmp_path / "v2")
    assert (info.frames, info.width, info.height, info.fps) == (5, 512, 512, 5.0) and info.path.is_file()


def test_models_folder_offers_checkpoints_and_onnx_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    from ferkit.app.models import SHIPPED_CHOICES, find_models, model_choices
    from ferkit.export import cached_onnx

    (tmp_path / "runs" / "a").mkdir(parents=True)
    shutil.copy(WEIGHTS["default"].path, tmp_path / "runs" / "a" / "best.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "runs" / "imagenet.safetensors"))  # weights not from ferkit
    shutil.copy(cached_onnx("default"), tmp_path / "export.onnx")  # a real export of the default model
    (tmp_path / "fake.onnx").write_bytes(b"onnx")  # the name of a model, not one
    (tmp_path / "notes.txt").write_text("hi")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "runs" / "a" / "resume.safetensors"))  # a run's training state
    found, unusable = find_models(str(tmp_path))
    assert [c.label for c in found] == ["export.onnx", "runs/a/best.safetensors"]
    assert [u.split(":")[0] for u in unusable] == ["fake.onnx", "runs/imagenet.safetensors"]  # each with its reason
    assert "not a readable ONNX model" in unusable[0] and str(tmp_path) not in unusable[0]
    choices, problem = model_choices(None, str(tmp_path))
    assert choices[:2] == SHIPPED_CHOICES and len(choices) == 4
    assert problem.startswith("not offered: fake.onnx: ") and "runs/imagenet.safetensors: " in problem
    assert [c.source for c in SHIPPED_CHOICES] == ["default", "fer2013"]
    choices, problem = model_choices("fer2013", None)
    assert [c.source for c in choices] == ["fer2013", "default"]  # the start model first
    choices, problem = model_choices(str(tmp_path / "export.onnx"), str(tmp_path / "nowhere"))
    assert [c.label for c in choices] == ["export.onnx", *(c.label for c in SHIPPED_CHOICES)]
    assert "no such folder" in problem


def test_webcam_frames_follow_faces_as_predict_webcam_does():
    """The webcam tab's frame callback runs the shared follower: faces keep one track ID from frame to frame and the
    overlay shows it, as `ferkit predict --webcam` and videos do."""
    import av

    from ferkit.app.webcam import LiveStats, frame_callback
    from ferkit.infer import Recognizer

    stats = LiveStats()
    callback = frame_callback(Recognizer.load(), stats)
    photo = cv2.imread(str(SAMPLE_PHOTO))
    ids = []
    for i in range(6):
        image = np.ascontiguousarray(np.roll(photo, 2 * i, axis=1))
        out = callback(av.VideoFrame.from_ndarray(image, format="bgr24")).to_ndarray(format="bgr24")
        assert out.shape == image.shape and np.any(out != image)  # drawn on
        ids.append({face.get("track_id") for face in stats.faces if 150 < face["box"][0] < 190})  # the astronaut
    assert ids == [{1}] * 6
