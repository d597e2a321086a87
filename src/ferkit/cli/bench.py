"""``ferkit bench ...``: speed, robustness and detector benchmarks."""

from __future__ import annotations

import argparse
import json
import sys

from ferkit.cli.common import TTA_METAVAR, new_table
from ferkit.fileio import check_out_file


def add_parsers(bench) -> None:
    p = bench.add_parser("train", help="training images/s: ferkit's trainer against a naive fp32 eager loop")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset to train on, e.g. ../shared/data/fer2013.zip")
    p.add_argument("--model", default="fernet", help="registered model name (default: fernet)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=20, help="measured batches per variant and round (after 3 "
                   "warm-up batches)")
    p.add_argument("--rounds", type=int, default=3, help="rounds in which the variants take turns; medians reported")
    p.add_argument("--precision", default="auto", help="ferkit trainer precision: auto | fp32 | bf16 | fp16")
    p.add_argument("--compile", default="auto", choices=["auto", "true", "false"],
                   help="torch.compile in ferkit's trainer (default: auto, as train.compile: on CUDA GPUs only)")
    p.set_defaults(func=cmd_bench_train)

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
    p.add_argument("--detector", default="auto", help="face detector (default: auto, as ferkit predict)")
    p.add_argument("--backend", choices=["torch", "onnxruntime"], help="classifier runtime (default: by file type)")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    p.add_argument("--requests", type=int, default=400, help="requests per scenario (default: 400)")
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
    p.add_argument("--tta", default="none", metavar=TTA_METAVAR[:-1] + ",own}",
                   help="test-time augmentation for every model (default: none; own: each model's protocol)")
    p.add_argument("--limit", type=int, metavar="N", help="score N random faces of the split (default: all)")
    p.add_argument("--perturbation", action="append", metavar="NAME",
                   help="only this perturbation (repeatable; default: all)")
    p.add_argument("--plot", metavar="PNG", help="write the grouped bar chart here")
    p.add_argument("--fer-python", metavar="PATH",
                   help="also score the fer package on the same faces, run by this Python (one that has fer)")
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


def cmd_bench_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ferkit.bench.train import bench_train
    from ferkit.device import native_bf16

    rows = bench_train(args.data, args.model, args.batch_size, args.batches, precision=args.precision,
                       compile={"true": True, "false": False}.get(args.compile, "auto"), rounds=args.rounds)
    import torch

    where = (torch.cuda.get_device_name() if torch.cuda.is_available() else
             f"CPU ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads, "
             f"native bf16: {native_bf16(torch.device('cpu'))}")
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

    rows = bench_serve(args.model, args.detector, args.backend, args.clients, args.requests)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    runtime = f" on {args.backend}" if args.backend else ""
    table = new_table(f"ferkit serve: POST /v1/faces of a 640x480 one-face JPEG, {args.model} + {args.detector}"
                      f"{runtime}, {args.requests} requests per row, {os.cpu_count()} CPU cores",
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
    title = f"face detectors on {rows[0].faces if rows else 0} {args.split} faces of {args.data}"
    columns = ["detector", "found", "box side / crop side", "box centre below crop centre",
               "accuracy, dataset crops", "accuracy, detector crops", "ms per 432x432 image"]
    if group:
        title += f" and {group} faces in group photos"
        columns += ["group: found", "group: found and right", "group: false detections"]
    table = new_table(f"{title}, model {args.model}", columns, left=("detector",))
    for r in rows:
        cells = [r.detector, f"{r.found:.1%}", f"{r.side:.3f}", f"{r.below:+.3f}", f"{r.accuracy_dataset_crops:.4f}",
                 f"{r.accuracy_detector_crops:.4f}", f"{r.ms_per_image:.1f}"]
        if group:
            cells += [f"{r.group_found:.1%}", f"{r.group_correct:.1%}", str(r.group_false)]
        table.add_row(*cells)
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

    from ferkit.bench.robustness import (
        FRAMINGS,
        bench_robustness,
        check_perturbations,
        plot_robustness,
    )

    names = check_perturbations(args.perturbation)
    if args.plot:
        check_out_file(args.plot, (".png",), "the plot is a PNG image", "--plot")
    total = (len(args.models) + (args.fer_python is not None)) * len(names)
    bar = tqdm(total=total, unit="step", disable=args.json or not sys.stderr.isatty())
    rows = bench_robustness(args.models, args.data, args.split, None if args.tta == "own" else args.tta, names,
                            args.limit, on_step=lambda model, perturbation: bar.update(), fer_python=args.fer_python)
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

