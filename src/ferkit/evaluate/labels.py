"""Matching label sets by name: a model's labels against a dataset's classes (ensemble members: models.predict)."""

from __future__ import annotations

from collections.abc import Sequence


from ferkit.errors import FerkitError
from ferkit.labels import canonical


def match_classes(model_labels: Sequence[str], data_classes: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the model's labels the data also has, in the model's order; the data's classes the model cannot predict).

    Model labels the data lacks are simply absent from the first list: they stay prediction columns, and a
    prediction of one of them is a wrong answer.
    """
    model = [canonical(c) for c in model_labels]
    data = [canonical(c) for c in data_classes]
    common = [c for c in model if c in data]
    excluded = [c for c in data if c not in model]
    if not common:
        raise FerkitError(f"the data's classes ({', '.join(data)}) and the model's ({', '.join(model)}) have no "
                          "name in common; give a dataset of these emotions or a model trained on them")
    return common, excluded
