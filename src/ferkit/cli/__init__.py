"""The ``ferkit`` command: each subcommand parses its arguments and calls one library function. A module per
group of commands adds its parsers (``add_parsers``) and holds their ``cmd_*`` functions."""

from __future__ import annotations

import argparse
import logging
import sys

from ferkit.cli import bench, data, evaluate, models, predict, serve, train
from ferkit.cli.common import EXIT_USAGE
from ferkit.errors import FerkitError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    # torch.compile on a CUDA build without a GPU warns about CUDA_HOME on every run; nothing for the user to do.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        return args.func(args) or 0
    except FerkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a path the system refuses: an --out under /proc, a read-only folder, a full disk
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; give a path you can write to", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    from ferkit import __version__

    parser = argparse.ArgumentParser(prog="ferkit",
                                     description="Facial emotion recognition: data, training, inference.")
    parser.add_argument("--version", action="version", version=f"ferkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data.add_parsers(sub)
    train.add_parsers(sub)
    evaluate.add_parsers(sub)
    predict.add_parsers(sub)
    models.add_parsers(sub)
    bench_sub = sub.add_parser("bench", help="speed benchmarks").add_subparsers(
        dest="bench_command", required=True, metavar="WHAT")
    bench.add_parsers(bench_sub)
    serve.add_parsers(sub)
    return parser
