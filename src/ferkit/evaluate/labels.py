"""Matching label sets by name: a model against a dataset, and the members of an ensemble against each other."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


def ensemble_orders(label_lists: Sequence[Sequence[str]], names: Sequence[str] | None = None) -> list[np.ndarray]:
    """For each member, the column of its output that holds each of the first member's labels, in order.

    Members may list their labels in any order but must predict the same set: averaging a probability over
    classes some members cannot predict would not be a probability of anything.
    """
    names = list(names) if names is not None else [f"model {i + 1}" for i in range(len(label_lists))]
    first = [canonical(c) for c in label_lists[0]]
    orders = []
    for name, labels in zip(names, label_lists):
        labels = [canonical(c) for c in labels]
        if sorted(labels) != sorted(first) or len(set(labels)) != len(labels):
            raise FerkitError(f"{name} predicts ({', '.join(labels)}) but {names[0]} predicts ({', '.join(first)}); "
                              "an ensemble needs models of the same label set")
        orders.append(np.array([labels.index(c) for c in first]))
    return orders
