"""``ferkit data inspect``, ``ferkit data clean`` and ``ferkit data agree``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ferkit.cli.common import add_cache_arg, new_table
from ferkit.fileio import check_out_dir, check_out_file


def add_parsers(sub) -> None:
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

    p = data.add_parser("agree", help="how often two labellings of the same faces agree (FER-2013 and FER+)",
                        description="Find the faces of a split of DATASET in a split of OTHER by their pixels and "
                        "count how often the two labels name the same class, per class and as a matrix. "
                        "FER+ majority votes against FER-2013's labels of the PublicTest faces: "
                        "ferkit data agree fer2013.zip ferplus.zip --split test --other-split val")
    p.add_argument("path", metavar="DATASET", help="dataset whose labels are the rows: folder, .zip or fer2013.csv")
    p.add_argument("other", metavar="OTHER", help="another labelling of (some of) the same faces")
    p.add_argument("--split", default="train", help="split of DATASET (default: train)")
    p.add_argument("--other-split", metavar="SPLIT", help="split of OTHER (default: the same name as --split)")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the matrix of the two labels")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    add_cache_arg(p)
    p.set_defaults(func=cmd_data_agree)


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from ferkit.data import scan_dataset
    from ferkit.data.inspect import describe, plot_dataset

    if args.plot:
        check_out_file(args.plot, (".png",), "the plot is a PNG image", "--plot")
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

    out = check_out_dir(args.out or f"{Path(args.path).stem}-clean")
    scan = scan_dataset(args.path, cache_dir=args.cache_dir, progress=not args.json)
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


def cmd_data_agree(args: argparse.Namespace) -> int:
    import numpy as np

    from ferkit.data import load_dataset
    from ferkit.data.agree import label_agreement, plot_agreement
    from ferkit.errors import DataError

    if args.plot is not None:
        check_out_file(args.plot, (".png",), "the plot is a PNG image", "--plot")
    load = {"cache_dir": args.cache_dir, "progress": not args.json, "keep_leaks": True}  # every face of each split
    faces = load_dataset(args.path, **load)[args.split]
    other = load_dataset(args.other, **load)[args.other_split or args.split]
    for path, split in ((args.path, faces), (args.other, other)):
        if not len(split):
            raise DataError(f"{path} has no labelled faces in its {split.split!r} split; give a split with faces")
    a = label_agreement(faces, other, args.path, args.other)
    if a.found < a.n / 2:  # copies of the same images are found nearly all; different faces only by chance
        raise DataError(f"only {a.found:,} of the {a.n:,} faces of {args.path} ({a.split}) are in {args.other} "
                        f"({a.other_split}); give two labellings of the same images, the one with fewer faces first")
    if args.plot is not None:
        plot_agreement(a, args.plot)
    if args.json:
        print(json.dumps(a.to_dict(), indent=2))
        return 0
    from rich.console import Console

    name, other_name = a.names
    cm = np.asarray(a.counts)
    says = f"{other_name} says"
    table = new_table(f"{name} {a.split} against {other_name} {a.other_split}",
                      ("label", "faces", "found", "same label", says), left=("label", says))
    for i, row in enumerate(a.rows):
        found = int(cm[i].sum())
        top = ", ".join(f"{a.cols[j]} {cm[i, j] / found:.0%}" for j in np.argsort(-cm[i], kind="stable")[:3]
                        if cm[i, j])
        same = f"{a.per_class[row]:.1%}" if found else "-"
        table.add_row(row, f"{a.faces[i]:,}", f"{found:,}", same, top)
    console = Console()
    console.print(table)
    console.print(f"{a.found:,} of {a.n:,} faces found in both; the same label on {a.agreement:.1%} of them",
                  highlight=False)
    if args.plot is not None:
        console.print(f"plot written to {args.plot}")
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

