"""Emotion label sets and the mappings between them.

Every label that enters ferkit is first turned into its canonical name (``"anger"`` -> ``"angry"``), so datasets
with different spellings can be merged, compared and evaluated against each other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ferkit.errors import DataError

# Order of the FER-2013 challenge CSV: emotion 0=Angry 1=Disgust 2=Fear 3=Happy 4=Sad 5=Surprise 6=Neutral.
FER2013 = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# Order of the FER+ vote columns (the last two, unknown and not-a-face, are not emotions).
FERPLUS = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")
FERPLUS_VOTE_COLUMNS = (*FERPLUS, "unknown", "not_face")

CANONICAL = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")

ALIASES = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
}


def canonical(name: str) -> str:
    """The canonical spelling of an emotion name; unknown names are returned lower-cased, unchanged."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


@dataclass(frozen=True)
class LabelMap:
    """How a dataset's class names become a model's classes.

    ``rename`` maps (canonical) names to other names (several to one merges classes), ``drop`` removes classes
    (their images are left out), and ``classes`` lists the output classes in order (images of other classes are
    left out); by default they are the remaining names in canonical order (FER-2013's, then contempt, then any
    others alphabetically).
    """

    classes: tuple[str, ...] | None = None
    rename: Mapping[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()

    def resolve(self, source: Sequence[str]) -> tuple[tuple[str, ...], list[int]]:
        """Output class names and, for each source class index, its output index (-1 = dropped)."""
        names = [canonical(s) for s in source]
        known = set(names)
        rename = {canonical(k): canonical(v) for k, v in self.rename.items()}
        drop = {canonical(d) for d in self.drop}
        for name in [*rename, *drop]:
            if name not in known:
                raise DataError(
                    f"class {name!r} in the label mapping is not in this dataset; its classes are: "
                    f"{', '.join(sorted(known))}"
                )
        mapped = [None if n in drop else rename.get(n, n) for n in names]
        remaining = {m for m in mapped if m is not None}
        if self.classes is not None:
            out = tuple(canonical(c) for c in self.classes)
            absent = [c for c in out if c not in remaining]
            if absent:
                raise DataError(
                    f"requested classes {', '.join(absent)} are not in this dataset; its classes are: "
                    f"{', '.join(sorted(remaining))}"
                )
        else:
            out = ordered(remaining)
        index = {c: i for i, c in enumerate(out)}
        return out, [index.get(m, -1) for m in mapped]


def ordered(names: Iterable[str]) -> tuple[str, ...]:
    """Names in the canonical order (FER-2013 first, then contempt), others after them alphabetically."""
    names = set(names)
    known = [c for c in CANONICAL if c in names]
    return tuple(known + sorted(names - set(CANONICAL)))
