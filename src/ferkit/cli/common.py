"""What every command module shares: exit codes and table helpers."""

from __future__ import annotations

import argparse
from collections.abc import Collection, Sequence

EXIT_USAGE = 2  # a mistake in the command: nothing was done
EXIT_SOME_FAILED = 1  # predict: some inputs could not be read; the others' results are out
TTA_METAVAR = "{none,flip,tencrop,multiscale}"  # ferkit.models.predict.TTA (the CLI starts without torch)


def new_table(title: str, columns: Sequence[str], left: Collection[str]):
    """A rich table with ``columns``: those in ``left`` (text) left-aligned, the others (numbers) right-aligned."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="left" if col in left else "right")
    return table


def add_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR",
                   help="decoded-dataset cache (default: $FERKIT_CACHE or ~/.cache/ferkit)")

