"""The comparison table: its columns, how each value is written, which is best, and the Markdown version."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferkit.report.compare import Report, RunResult


def si(value: float) -> str:
    """1234567 -> '1.23M'; thousands, millions, billions."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


def percent(v: float) -> str:
    return f"{v:.1%}"


def decimals(v: float) -> str:
    return f"{v:.3f}"


@dataclass(frozen=True)
class Column:
    """One column: its group, header, value getter, formatter and which way is better (None: no best)."""

    group: str
    header: str
    value: Callable[[RunResult], Any]
    text: Callable[[Any], str]
    better: str | None  # "max", "min" or None


def columns(split: str) -> list[Column]:
    test = f"{split} split"
    return [
        Column("model", "model", lambda r: r.name, str, None),
        Column("model", "architecture", lambda r: r.architecture, str, None),
        Column("cost per face", "params", lambda r: r.cost.parameters, si, "min"),
        Column("cost per face", "size MB", lambda r: r.cost.size_mb, lambda v: f"{v:.2f}", "min"),
        Column("cost per face", "FLOPs", lambda r: r.cost.flops, si, "min"),
        Column("cost per face", "CPU ms", lambda r: r.cost.latency_ms, lambda v: f"{v:.2f}", "min"),
        Column("training, best epoch", "train acc", lambda r: r.train_accuracy, percent, "max"),
        Column("training, best epoch", "train loss", lambda r: r.train_loss, decimals, "min"),
        Column("training, best epoch", "val acc", lambda r: r.val_accuracy, percent, "max"),
        Column("training, best epoch", "val loss", lambda r: r.val_loss, decimals, "min"),
        Column(test, "test acc", lambda r: r.evaluation.accuracy, percent, "max"),
        Column(test, "test loss", lambda r: r.evaluation.log_loss, decimals, "min"),
        Column(test, "macro F1", lambda r: r.evaluation.macro_f1, decimals, "max"),
        Column("run", "train time", lambda r: r.train_time_s, duration, "min"),
        Column("run", "best epoch", lambda r: r.best_epoch, lambda v: str(v), None),
    ]


@dataclass
class Cell:
    text: str
    best: bool


def table_cells(report: Report) -> tuple[list[Column], list[list[Cell]]]:
    """Every run's row of cells; the best value of a column is marked when two or more runs have one."""
    cols = columns(report.split)
    rows: list[list[Cell]] = [[] for _ in report.runs]
    for col in cols:
        values = [col.value(r) for r in report.runs]
        known = [v for v in values if v is not None]
        best = None
        if col.better and len(known) > 1:
            best = col.text(max(known) if col.better == "max" else min(known))
        for row, run, v in zip(rows, report.runs, values):
            text = "—" if v is None else col.text(v)
            if col.header == "best epoch" and v is not None and run.epochs:
                text = f"{v} / {run.epochs}"
            row.append(Cell(text, best is not None and v is not None and text == best))
    return cols, rows


def markdown_table(report: Report) -> str:
    """The comparison as a GitHub Markdown table; the best value per column in bold."""
    cols, rows = table_cells(report)
    numeric = [c.better is not None or c.header == "best epoch" for c in cols]
    lines = [
        "| " + " | ".join(c.header for c in cols) + " |",
        "| " + " | ".join("---:" if n else "---" for n in numeric) + " |",
    ]
    for row in rows:
        cells = [f"**{c.text}**" if c.best else c.text.replace("|", "\\|") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(report: Report) -> str:
    """report.md: a heading saying what was compared, the table, and how cost was measured."""
    env = report.environment
    tta = report.tta or "each model's own"
    n = ", ".join(f"{r.name} {r.evaluation.n:,}" for r in report.runs)
    return (
        f"# Model comparison on {report.dataset['location']} ({report.split} split)\n\n"
        f"{markdown_table(report)}\n\n"
        f"Test figures: {report.split} split, TTA {tta}, images scored: {n}. Train and val figures: the run's own "
        "metrics at its best epoch (train on augmented batches). FLOPs and latency: one face, batch 1, one view; "
        "latency is the median of batch-1 forward passes (the models taking turns), "
        f"torch {env['torch']} eager on {env['cpu']} with "
        f"{env['threads']} threads. Best value per column in bold. Made {report.created}.\n"
        + "".join(f"\n**Warning:** {w}\n" for r in report.runs for w in r.evaluation.warnings)
    )
