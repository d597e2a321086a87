"""The `fer` package (the most installed FER package) as the baseline of ferkit's benchmarks.

fer needs TensorFlow, which often lives in another environment than PyTorch, so its work runs as a script in the
Python that has it (``--fer-python``) and hands its results back as JSON or a .npy file.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ferkit.errors import FerkitError
from ferkit.labels import FER2013

LABELS = FER2013  # fer's emotions, in the order its classifier answers them

PRELUDE = """
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import cv2
import numpy as np
try:
    from fer.fer import FER
except ImportError:
    from fer import FER
"""

# Times FER().detect_emotions on one photo: prints {"ms": median, "faces": n}.
TIME_PHOTO = PRELUDE + """
import statistics, time
image, repeats = cv2.imread(sys.argv[1]), int(sys.argv[2])
detector = FER()
for _ in range(3):
    faces = detector.detect_emotions(image)
times = []
for _ in range(repeats):
    t0 = time.perf_counter()
    detector.detect_emotions(image)
    times.append(time.perf_counter() - t0)
print(json.dumps({"ms": 1000 * statistics.median(times), "faces": len(faces)}))
"""

# Classifies face crops (N, S, S) uint8 from a .npy file, each given to fer as the face box of its own image with
# no offsets (fer's own 10-pixel offsets would reach past a crop that is all there is of the photo); writes the
# emotion scores (N, 7) in fer's label order.
CLASSIFY_FACES = PRELUDE + """
faces, labels = np.load(sys.argv[1]), json.loads(sys.argv[3])
detector = FER(offsets=(0, 0))
scores = np.zeros((len(faces), len(labels)), np.float32)
for i, face in enumerate(faces):
    found = detector.detect_emotions(cv2.cvtColor(face, cv2.COLOR_GRAY2BGR),
                                     face_rectangles=[(0, 0, face.shape[1], face.shape[0])])
    scores[i] = [found[0]["emotions"][k] for k in labels]
np.save(sys.argv[2], scores)
"""


def fer_interpreter(fer_python: str | None) -> str | None:
    """The Python that runs fer: ``fer_python`` (checked now, before any measuring) or this one if it has fer."""
    if fer_python is None:
        return sys.executable if importlib.util.find_spec("fer") else None
    try:
        ok = subprocess.run([fer_python, "-c", "import fer"], capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise FerkitError(f"--fer-python {fer_python}: not a Python where `import fer` works; give the one of the "
                          "environment where fer is installed")
    return fer_python


def run_fer(python: str, script: str, *args: str, timeout: float = 3600) -> str:
    """Run ``script`` with ``args`` in ``python``; its standard output, or a one-line error."""
    try:
        out = subprocess.run([python, "-c", script, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FerkitError(f"--fer-python {python}: could not run it ({e})") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise FerkitError(f"--fer-python {python}: fer failed ({last}); give a Python where `import fer` works")
    return out.stdout


def fer_scores(python: str, faces: np.ndarray) -> np.ndarray:
    """fer's emotion scores (N, 7), in ``LABELS`` order, for face crops (N, S, S) uint8: rounded to two decimals, as
    fer gives them, so a tie goes to the first emotion, as in fer's own ``top_emotion``."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "faces.npy", Path(tmp) / "scores.npy"
        np.save(src, np.ascontiguousarray(faces, np.uint8))
        run_fer(python, CLASSIFY_FACES, str(src), str(dst), json.dumps(list(LABELS)))
        return np.load(dst)
