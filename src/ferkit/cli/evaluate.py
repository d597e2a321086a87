"""``ferkit evaluate`` and ``ferkit report``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ferkit.cli.common import TTA_METAVAR, new_table


def add_parsers(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, per-class F1, confusion matrix and calibration of a checkpoint",
                       description="Evaluate a checkpoint (or a run directory's best one) on a labelled dataset. "
                       "Classes are matched by name; images of classes the model cannot predict are left out.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN",
                   help="a shipped model (default, fer2013), a run directory or a .safetensors checkpoint")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset: folder, .zip or fer2013.csv")
    p.add_argument("--split", help="split to score (default: test, or the only split of a dataset without "
                   "split folders)")
    p.add_argument("--tta", metavar=TTA_METAVAR,
                   help="test-time augmentation: none, flip (face and mirror), tencrop (corners, centre, mirrors) or "
                   "multiscale (ten crops at three framings); default: the checkpoint's own (set when it was shipped, "
                   "else none)")
    p.add_argument("--ensemble", nargs="+", default=[], metavar="CHECKPOINT",
                   help="more checkpoints or runs whose probabilities are averaged with the first one's")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--out", metavar="DIR", help="also write metrics.json, confusion_matrix.png and reliability.png")
    p.add_argument("--batch-size", type=int, default=256, help="faces per forward pass (default: 256)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="compare trained runs in one HTML page: scores, cost, curves, Grad-CAM",
                       description="Evaluate every run once on a split and write a self-contained HTML report "
                       "(and a Markdown table beside it): accuracy, loss and macro F1, parameters, size, FLOPs and "
                       "CPU latency, learning curves, confusion matrices, per-class F1, sample predictions, "
                       "Grad-CAM and CBAM attention maps, and the class distribution.")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories, .safetensors checkpoints or a shipped model (default, fer2013)")
    p.add_argument("--data", required=True, metavar="PATH", help="dataset: folder, .zip or fer2013.csv")
    p.add_argument("--out", required=True, metavar="REPORT.html", help="the HTML file; REPORT.md is written beside it")
    p.add_argument("--split", help="split to score (default: test, or the only split of a dataset without split "
                   "folders)")
    p.add_argument("--tta", metavar=TTA_METAVAR,
                   help="test-time augmentation for every model (default: each checkpoint's own)")
    p.set_defaults(func=cmd_report)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ferkit.evaluate import evaluate, save_evaluation
    from ferkit.evaluate.save import FILES
    from ferkit.fileio import check_out_dir

    if args.out:
        check_out_dir(args.out, files=FILES)
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


def cmd_report(args: argparse.Namespace) -> int:
    from ferkit.report import make_report

    report, html, md = make_report(args.runs, args.data, args.out, split=args.split, tta=args.tta,
                                   progress=sys.stderr.isatty())
    for r in report.runs:
        print(f"{r.name}: {r.evaluation.split} accuracy {r.evaluation.accuracy:.4f}, macro F1 "
              f"{r.evaluation.macro_f1:.4f}, {r.cost.latency_ms:.2f} ms per face on CPU")
    print(f"report written to {html} (table: {md})")
    return 0

