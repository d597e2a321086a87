"""The report as one self-contained HTML page: every picture embedded as base64 PNG, the style sheet inline."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ferkit import __version__
from ferkit.report import figures
from ferkit.report.compare import Report, RunResult, RunView
from ferkit.report.table import duration, si, table_cells

TEMPLATE = "report.html.j2"
ATTENTION_MIN_RANGE = 0.01  # spatial attention whose weights span less than this is shown as flat, not stretched


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _same_split(run: RunResult, report: Report) -> bool:
    """Whether the run picked its best epoch on the very split the report scores it on."""
    same_data = run.val_data is not None and Path(run.val_data).name == Path(report.data).name
    return same_data and run.val_split == report.split


def run_card(run: RunResult, color: str, best_accuracy: float, report: Report) -> dict[str, Any]:
    ev = run.evaluation
    return {
        "name": run.name, "color": color, "architecture": run.architecture, "tta": ev.tta,
        "accuracy": f"{ev.accuracy:.1%}", "best": ev.accuracy == best_accuracy and len(report.runs) > 1,
        "stats": [("macro F1", f"{ev.macro_f1:.3f}"), ("parameters", si(run.cost.parameters)),
                  ("CPU latency", f"{run.cost.latency_ms:.1f} ms"), ("FLOPs", si(run.cost.flops)),
                  ("training", duration(run.train_time_s) if run.train_time_s is not None else "—")],
        "n": f"{ev.n:,}",
        "selected_on_split": _same_split(run, report),
    }


def sample_tiles(view: RunView, labels: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Right and wrong picks as tiles: the face, its true label, the prediction and its probability."""
    tiles: dict[str, list[dict[str, Any]]] = {"right": [], "wrong": []}
    for i in view.samples:
        pred = int(view.probs[i].argmax())
        ok = pred == int(view.y[i])
        tiles["right" if ok else "wrong"].append({
            "src": data_uri(figures.face_png(view.faces[i])), "pred": labels[pred],
            "prob": f"{view.probs[i, pred]:.0%}", "true": labels[int(view.y[i])],
            "true_prob": f"{view.probs[i, int(view.y[i])]:.0%}",
        })
    return tiles


def cam_row(run: RunResult, view: RunView, color: str) -> dict[str, Any]:
    labels = run.evaluation.labels
    tiles = []
    for k, i in enumerate(view.showcase):
        pred = int(view.probs[i].argmax())
        heat = view.cam.maps[k]
        flat = heat.max() <= 0  # nothing in the map raised the score: show the face alone, not a uniform colour
        src = figures.face_png(view.inputs[k]) if flat else figures.heatmap_png(view.inputs[k], heat)
        tiles.append({"src": data_uri(src), "pred": labels[pred], "prob": f"{view.probs[i, pred]:.0%}",
                      "ok": pred == int(view.y[i]), "flat": flat})
    return {"name": run.name, "color": color, "layer": view.cam.layer, "tiles": tiles}


def attention_block(run: RunResult, view: RunView, color: str) -> dict[str, Any]:
    """Each CBAM's spatial maps, stretched to their own range (stated beside them), and the channel weights."""
    labels = run.evaluation.labels
    blocks = []
    for a in view.attention:
        spatial = a["spatial"]  # (M, h, w) in [0, 1]
        lo, hi = float(spatial.min()), float(spatial.max())
        flat = hi - lo < ATTENTION_MIN_RANGE
        tiles = [figures.face_png(view.inputs[k]) if flat
                 else figures.heatmap_png(view.inputs[k], (spatial[k] - lo) / (hi - lo))
                 for k in range(len(view.showcase))]
        blocks.append({"name": a["name"], "size": f"{spatial.shape[1]}×{spatial.shape[2]}",
                       "range": f"{lo:.2f}–{hi:.2f}" + (" (flat)" if flat else ""),
                       "tiles": [data_uri(t) for t in tiles]})
    titles = [labels[int(view.y[i])] for i in view.showcase]
    return {"name": run.name, "color": color, "blocks": blocks,
            "channels": data_uri(figures.channel_attention_png(view.attention, titles))}


def render_html(report: Report, progress: bool = False) -> str:
    """The whole page as a string; nothing is written."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    runs, views = report.runs, report.views
    colors = [figures.model_color(i) for i in range(len(runs))]
    labels = runs[0].evaluation.labels
    bar = tqdm(total=4 * len(runs) + 3, desc="drawing", unit="figure", disable=not progress)
    try:
        cols, rows = table_cells(report)
        best_acc = max(r.evaluation.accuracy for r in runs)
        curves = []
        for run, color in zip(runs, colors):
            png = figures.learning_curves_png(run.history, color, run.best_epoch) if run.history else None
            curves.append({"name": run.name, "color": color, "src": data_uri(png) if png else None,
                           "epochs": run.epochs})
            bar.update()
        f1 = figures.f1_bars_png(labels, [{**{c: s.f1 for c, s in r.evaluation.per_class.items()},
                                            "macro avg": r.evaluation.macro_f1} for r in runs],
                                 [r.name for r in runs], colors)
        bar.update()
        confusion = []
        for run, color in zip(runs, colors):
            confusion.append({"name": run.name, "color": color, "accuracy": f"{run.evaluation.accuracy:.1%}",
                              "f1": f"{run.evaluation.macro_f1:.3f}",
                              "src": data_uri(figures.confusion_png(run.evaluation, color))})
            bar.update()
        samples = []
        for run, view, color in zip(runs, views, colors):
            samples.append({"name": run.name, "color": color, **sample_tiles(view, run.evaluation.labels)})
            bar.update()
        first = views[0]
        showcase = [{"src": data_uri(figures.face_png(first.faces[i])), "true": labels[int(first.y[i])]}
                    for i in first.showcase]
        cams, attention = [], []
        for run, view, color in zip(runs, views, colors):
            if view.cam is not None:
                cams.append(cam_row(run, view, color))
            if view.attention:
                attention.append(attention_block(run, view, color))
            bar.update()
        splits = report.dataset["splits"]
        distribution = data_uri(figures.class_distribution_png(splits, report.split))
        bar.update()
        env = Environment(loader=PackageLoader("ferkit.report", "templates"), autoescape=select_autoescape())
        html = env.get_template(TEMPLATE).render(
            report=report, version=__version__, data_name=Path(report.data).name,
            cards=[run_card(r, c, best_acc, report) for r, c in zip(runs, colors)],
            columns=cols, rows=[{"color": c, "cells": row} for c, row in zip(colors, rows)],
            groups=_groups(cols), curves=curves, f1=data_uri(f1), confusion=confusion, samples=samples,
            showcase=showcase, cams=cams, attention=attention, distribution=distribution,
            split_total=f"{sum(splits.get(report.split, {}).values()):,}",
            tta=report.tta or "each model's own",
            columns_per_row=2 if len(runs) in (2, 4) else min(len(runs), 3),
        )
        bar.update()
    finally:
        bar.close()
    return html


def _groups(cols) -> list[dict[str, Any]]:
    """Consecutive columns of one group as (name, span) for the two-row table header."""
    out: list[dict[str, Any]] = []
    for c in cols:
        if out and out[-1]["name"] == c.group:
            out[-1]["span"] += 1
        else:
            out.append({"name": c.group, "span": 1})
    return out

