"""``ferkit batch``: folders, archives and path lists to Parquet, resumable, and the Ray engine's equal rows."""

from __future__ import annotations

import os
import signal
import subprocess
import tarfile
import time
import zipfile

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import FERKIT, decode, real_faces, run_main

from ferkit.infer.source import SAMPLE_PHOTO


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Photos with and without faces, an unreadable one and a short video, as a folder, a zip, a tar.gz and a list."""
    root = tmp_path_factory.mktemp("archive")
    photo = cv2.imread(str(SAMPLE_PHOTO))
    folder = root / "photos"
    (folder / "more").mkdir(parents=True)
    cv2.imwrite(str(folder / "astronaut.jpg"), photo)
    cv2.imwrite(str(folder / "more" / "flipped.png"), photo[:, ::-1])
    cv2.imwrite(str(folder / "more" / "wall.png"), np.full((120, 160, 3), 90, np.uint8))
    (folder / "more" / "broken.jpg").write_bytes(SAMPLE_PHOTO.read_bytes()[:300])
    (folder / "notes.txt").write_text("not an input: only photos and videos are listed\n")
    writer = cv2.VideoWriter(str(folder / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (512, 512))
    for k in range(8):
        writer.write(np.roll(photo, 4 * k, axis=1))
    writer.release()
    with zipfile.ZipFile(root / "photos.zip", "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root))
    with tarfile.open(root / "photos.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname="photos")
    (root / "list.txt").write_text("# one path per line\nphotos/astronaut.jpg\n\nphotos/more/wall.png\n")
    return root


def read(out, kind):
    return pq.read_table(out / kind).to_pandas()


def test_local_engine_writes_faces_and_status_parquet(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    args = [inputs / "photos", inputs / "photos.zip", inputs / "photos.tar.gz", inputs / "list.txt"]
    code, stdout, _ = run_main(capsys, "batch", *args, "--out", out, "--chunk", "3")
    assert code == 1  # one unreadable photo per copy; the rest are out
    status = read(out, "status")
    assert len(status) == 5 * 3 and status.source.is_unique  # the list names two photos of the folder again
    by_name = {(s.split("!")[-1].split("/")[-1], k): v for s, k, v in zip(status.source, status.kind, status.status)}
    assert by_name[("astronaut.jpg", "image")] == "ok" and by_name[("wall.png", "image")] == "no_face"
    assert by_name[("broken.jpg", "image")] == "unreadable" and by_name[("clip.mp4", "video")] == "ok"
    assert all(status[status.status == "unreadable"].reason.str.contains("not a readable image"))
    faces = read(out, "faces")
    schema = pq.read_schema(next((out / "faces").glob("part-*.parquet")))
    assert schema.field("x").type == pa.int32() and schema.field("happy").type == pa.float32()
    assert schema.names[:8] == ["source", "frame", "time_s", "track_id", "x", "y", "w", "h"]
    photos = faces[faces.frame.isna()]
    assert set(photos.emotion) == {"happy"} and len(photos) == 2 * 3
    video = faces[faces.source.str.endswith("clip.mp4")]
    assert len(video) == 8 * 3 and set(video.track_id) == {1} and list(video.frame[:8]) == list(range(8))
    probs = faces[["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt"]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-3)
    assert "15 inputs" in stdout and "3 unreadable" in stdout
    # The same command again: everything is done already.
    code, stdout, _ = run_main(capsys, "batch", *args, "--out", out)
    assert code == 0 and "15 done by an earlier run, skipped" in stdout
    assert len(read(out, "status")) == 15


def test_local_engine_runs_a_thread_per_call_and_searches_two_chunks_ahead(inputs):
    import torch

    from ferkit.device import cpu_threads
    from ferkit.infer.archive import ChunkProcessor, _pipelined
    from ferkit.infer.source import list_inputs

    events = []

    class Recorded(ChunkProcessor):
        def submit(self, refs):
            events.append("submit")
            return super().submit(refs)

        def finish(self, refs, futures):
            events.append(("finish", torch.get_num_threads(), cpu_threads()))
            return super().finish(refs, futures)

    before = (torch.get_num_threads(), cpu_threads())
    assert before[1] == (os.cpu_count() or 1)  # nothing run before in this process left it changed
    processor = Recorded(workers=2)
    refs = sorted((r for r in list_inputs([inputs / "photos"]) if r.kind == "image"), key=lambda r: r.source)
    results = list(_pipelined(processor, iter([[r] for r in refs])))
    processor.close()
    assert events[:4] == ["submit", "submit", "submit", ("finish", 1, 1)] and len(events) == 2 * len(refs)
    assert [statuses[0]["source"] for statuses, _ in results] == [r.source for r in refs]
    assert (torch.get_num_threads(), cpu_threads()) == before  # given back once the job is done


def test_resume_after_kill_9_processes_each_input_once(fer_zip, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for name, data in real_faces(fer_zip, 60)["happy"]:
        cv2.imwrite(str(folder / name), cv2.resize(decode(data), (192, 192)))
    out = tmp_path / "out"
    cmd = [str(FERKIT), "batch", str(folder), "--out", str(out), "--chunk", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list((out / "status").glob("part-*.parquet"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read(out, "status"))
    assert 0 < done_before < 60
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    status, faces = read(out, "status"), read(out, "faces")
    assert len(status) == 60 and status.source.is_unique  # none lost, none twice
    clean = tmp_path / "clean"
    assert subprocess.run([*cmd[:3], "--out", str(clean)], capture_output=True).returncode == 0
    expected = read(clean, "faces")
    assert sorted(faces.source) == sorted(expected.source)
    merged = faces.sort_values(["source", "x"]).reset_index(drop=True)
    assert np.allclose(merged.happy, expected.sort_values(["source", "x"]).reset_index(drop=True).happy, atol=1e-5)


def test_ray_engine_gives_the_local_engines_rows(inputs, tmp_path, capsys):
    pytest.importorskip("ray")
    args = [inputs / "photos", inputs / "photos.tar.gz"]
    run_main(capsys, "batch", *args, "--out", tmp_path / "local", "--chunk", "2")
    code, stdout, _ = run_main(capsys, "batch", *args, "--out", tmp_path / "ray", "--chunk", "2", "--engine", "ray",
                               "--workers", "2")
    assert code == 1 and "ray" in stdout
    for kind in ("status", "faces"):
        a, b = read(tmp_path / "local", kind), read(tmp_path / "ray", kind)
        assert list(a.columns) == list(b.columns) and list(a.source) == list(b.source)
        numeric = [c for c in a.columns if a[c].dtype.kind == "f" and c != "seconds"]
        assert np.allclose(a[numeric].fillna(-1).to_numpy(), b[numeric].fillna(-1).to_numpy(), atol=1e-5)
        text = [c for c in a.columns if a[c].dtype.kind != "f"]
        assert a[text].equals(b[text])


def test_bad_inputs_say_what_is_wrong(inputs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["batch", tmp_path / "missing", "--out", tmp_path / "o1"], "no such file or folder"),
        (["batch", tmp_path / "empty", "--out", tmp_path / "o2"], "no photos or videos found"),
        (["batch", inputs / "photos" / "notes.txt", "--out", tmp_path / "o3"], "no such file or folder"),
        (["batch", inputs / "photos", "--out", inputs / "photos.zip"], "is a file, not a folder"),
        (["batch", inputs / "photos", "--out", tmp_path / "o4", "--model", "nope"], "nope"),
    ]
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    cases.append((["batch", tmp_path / "bad.zip", "--out", tmp_path / "o5"], "not a readable zip archive"))
    cases.append((["batch", inputs / "photos", "--out", "/proc/ferkit-batch"], "/proc/ferkit-batch"))
    from ferkit.device import cpu_threads

    for args, message in cases:
        code, _, err = run_main(capsys, *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
        assert cpu_threads() == (os.cpu_count() or 1), args  # a failed job gives the thread setting back
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o5").exists()


def test_bench_batch_compares_the_engines_on_the_same_scenes(fer_zip, capsys):
    import json

    code, out, _ = run_main(capsys, "bench", "batch", "--data", fer_zip, "--photos", "6", "--no-ray", "--json")
    assert code == 0
    naive, local = json.loads(out)
    assert (naive["photos"], local["photos"]) == (6, 6) and naive["faces"] == local["faces"] > 0
    assert naive["ratio"] == 1 and local["ratio"] > 0
