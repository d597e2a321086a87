"""Comparison reports of trained runs: one self-contained HTML page and a Markdown table.

``make_report(["runs/a", "runs/b", "default"], "fer2013.zip", "report.html")`` evaluates every model once on a
split, measures its cost, reads its training history, explains a few faces, and writes ``report.html`` with
``report.md`` beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ferkit import fileio
from ferkit.fileio import atomic_write
from ferkit.report.compare import Report, RunResult, compare_runs
from ferkit.report.cost import LATENCY_REPEATS, ModelCost

__all__ = ["ModelCost", "Report", "RunResult", "check_out_file", "compare_runs", "make_report", "write_report"]

HTML_SUFFIXES = (".html", ".htm")


def check_out_file(out: str | Path) -> Path:
    """``out`` as an .html file that can be written, with ``.md`` beside it; checked before any work starts."""
    out = fileio.check_out_file(out, HTML_SUFFIXES, "the report is one HTML file")
    fileio.check_not_folders([out.with_suffix(".md")])
    return out


def write_report(report: Report, out: str | Path, progress: bool = False) -> tuple[Path, Path]:
    """Render the HTML page and the Markdown table, then write both atomically: ``out`` and ``out`` with ``.md``."""
    from ferkit.report.html import render_html
    from ferkit.report.table import markdown_report

    out = check_out_file(out)
    html = render_html(report, progress)
    md = markdown_report(report)
    return atomic_write(out, html), atomic_write(out.with_suffix(".md"), md)


def make_report(runs: Sequence[str | Path], data: str | Path, out: str | Path, split: str | None = None,
                tta: str | None = None, *, latency_repeats: int = LATENCY_REPEATS,
                progress: bool = False) -> tuple[Report, Path, Path]:
    """Compare ``runs`` on ``split`` of ``data`` and write the report; returns (report, HTML path, Markdown path)."""
    check_out_file(out)
    report = compare_runs(runs, data, split, tta, latency_repeats=latency_repeats, progress=progress)
    html, md = write_report(report, out, progress)
    return report, html, md
