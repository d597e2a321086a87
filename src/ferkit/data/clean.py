"""Find images a model should not learn from or be scored on; never modify the source.

Reasons a file is flagged:
  corrupt      an image file that does not decode
  not_image    a file that is not an image at all
  missing      listed in a FER+ label.csv but absent
  near_blank   almost no pixel variation (blank or saturated frames)
  duplicate    the same pixels as an earlier image of the same split
  leak         a training image whose pixels also appear in an evaluation split (every training copy is flagged,
               so the evaluation split stays the one published results use)
  not_face     FER+ annotators' majority says it is not a face
"""

from __future__ import annotations

import csv
import hashlib
import json
import io
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ferkit.data.scan import Scan
from ferkit.errors import DataError
from ferkit.fileio import atomic_write
from ferkit.labels import FERPLUS_VOTE_COLUMNS

REASONS = ("corrupt", "not_image", "missing", "near_blank", "duplicate", "leak", "not_face")
BLANK_STD = 3.0  # gray-level standard deviation below which a face image carries no usable signal
TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class Finding:
    split: str
    path: str
    reason: str
    detail: str = ""

    def __post_init__(self):  # rows come out of numpy string arrays; keep plain str for JSON and CSV
        object.__setattr__(self, "split", str(self.split))
        object.__setattr__(self, "path", str(self.path))


def find_issues(scan: Scan, blank_std: float = BLANK_STD) -> list[Finding]:
    """All findings of a scanned dataset, in scan order within each reason."""
    out: list[Finding] = []
    ok = scan.problem == ""
    for i in np.flatnonzero(~ok):
        out.append(Finding(scan.split[i], scan.path[i], str(scan.problem[i])))

    std = scan.image.reshape(len(scan), -1).std(axis=1)
    for i in np.flatnonzero(ok & (std < blank_std)):
        out.append(Finding(scan.split[i], scan.path[i], "near_blank", f"pixel std {std[i]:.2f}"))

    # Same stored pixels and the same native size: an exact copy, whatever the file is called.
    digests = [
        hashlib.blake2b(scan.image[i].tobytes() + scan.native_hw[i].tobytes(), digest_size=12).digest()
        if ok[i] else None
        for i in range(len(scan))
    ]
    first: dict[tuple[str, bytes], int] = {}
    for i, d in enumerate(digests):
        if d is not None:
            first.setdefault((scan.split[i], d), i)
    evaluation = {d: i for (split, d), i in first.items() if split != TRAIN_SPLIT}
    for i, d in enumerate(digests):
        if d is None:
            continue
        if scan.split[i] == TRAIN_SPLIT and d in evaluation:  # every training copy, however many there are
            j = evaluation[d]
            out.append(Finding(scan.split[i], scan.path[i], "leak", f"same as {scan.split[j]} {scan.path[j]}"))
        elif (j := first[(scan.split[i], d)]) != i:
            note = "" if scan.label[i] == scan.label[j] else " (with a different label)"
            out.append(Finding(scan.split[i], scan.path[i], "duplicate", f"same as {scan.path[j]}{note}"))

    if scan.votes.shape[1]:
        not_face = FERPLUS_VOTE_COLUMNS.index("not_face")
        top = scan.votes.argmax(axis=1)
        for i in np.flatnonzero(top == not_face):
            out.append(Finding(scan.split[i], scan.path[i], "not_face", f"{scan.votes[i, not_face]} of "
                               f"{scan.votes[i].sum()} votes"))
    return out


def summarize(findings: list[Finding]) -> dict[str, dict[str, int]]:
    """Counts per reason and split: ``{"duplicate": {"train": 1234, "test": 5}, ...}``."""
    counts: dict[str, Counter] = {r: Counter() for r in REASONS}
    for f in findings:
        counts[f.reason][f.split] += 1
    return {r: dict(sorted(c.items())) for r, c in counts.items()}


def write_report(scan: Scan, findings: list[Finding], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``flagged.csv`` (one row per flagged file), then ``clean_report.json`` (summary), each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "source": scan.location,
        "format": scan.format,
        "fingerprint": scan.fingerprint,
        "num_images": len(scan),
        "num_flagged_files": len({(f.split, f.path) for f in findings}),
        "blank_std_threshold": BLANK_STD,
        "findings": summarize(findings),
    }
    json_path, csv_path = out / "clean_report.json", out / "flagged.csv"
    lines = [["split", "path", "reason", "detail"]] + [list(asdict(f).values()) for f in findings]
    summary, flagged = json.dumps(report, indent=2) + "\n", _csv_text(lines)  # both whole before either is written
    atomic_write(csv_path, flagged)
    atomic_write(json_path, summary)  # the summary last: where it is new, the list beside it is too
    return json_path, csv_path


def read_flagged(path: str | Path) -> set[str]:
    """Paths listed in a ``flagged.csv`` (as written by `write_report`, possibly edited by hand)."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise DataError(f"{path}: cannot read the flagged-files list ({e.strerror})") from None
    if rows and "path" not in rows[0]:
        raise DataError(f"{path}: no 'path' column; give the flagged.csv written by `ferkit data clean`")
    return {r["path"] for r in rows}


def _csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
