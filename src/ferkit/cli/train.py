"""``ferkit train`` and ``ferkit prior``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ferkit.cli.common import TTA_METAVAR, new_table
from ferkit.errors import FerkitError
from ferkit.fileio import check_out_file


def add_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML recipe",
                       description="Train a model. Any config key can be overridden as --section.key VALUE, "
                       "e.g. --train.epochs 5 --optim.lr 3e-4 --model.kwargs '{width: 48}'.")
    p.add_argument("config", nargs="?", help="YAML recipe (see configs/); not needed with --resume")
    p.add_argument("--data", metavar="PATH", help="dataset: folder, .zip or fer2013.csv (sets data.path)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--epochs", type=int, help="train.epochs; with stages, caps every stage at this many epochs")
    p.add_argument("--pretrained-file", metavar="PATH", help="ImageNet weights file (.safetensors or state dict)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run exactly where it stopped")
    p.set_defaults(func=cmd_train, overrides=True)

    p = sub.add_parser("prior", help="handle a model's class prior: sweep logit adjustment, write an adjusted model",
                       description="A model trained on skewed labels (FER+: a third neutral, under 1% contempt) "
                       "answers the rare classes too seldom. Without --tau, score the checkpoint on --split with its "
                       "logits shifted by -tau * log(training prior) for a range of tau (0: as trained, 1: balanced). "
                       "With --tau and --out, write that adjusted model.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN", help="a run directory or a checkpoint")
    p.add_argument("--data", metavar="PATH", help="the dataset it was trained on: its training split gives the prior "
                   "(an adjusted model, such as a shipped one, records its prior) and --split is scored")
    p.add_argument("--split", help="split to score the sweep on (default: val)")
    p.add_argument("--tta", metavar=TTA_METAVAR, help="test-time augmentation (default: the model's own)")
    p.add_argument("--tau", type=float, help="write the model adjusted with this tau (needs --out)")
    p.add_argument("--out", metavar="OUT.safetensors", help="where to write the adjusted checkpoint")
    p.add_argument("--json", action="store_true", help="print the sweep as JSON")
    p.set_defaults(func=cmd_prior)


def parse_overrides(extra: list[str]) -> list[str]:
    """``--section.key value`` / ``--section.key=value`` pairs as ``section.key=value`` strings."""
    out, i = [], 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or "." not in item.split("=")[0]:
            raise FerkitError(f"unrecognized argument {item!r}; config overrides look like --train.epochs 5")
        if "=" in item:
            out.append(item[2:])
            i += 1
        elif i + 1 < len(extra):
            out.append(f"{item[2:]}={extra[i + 1]}")
            i += 2
        else:
            raise FerkitError(f"{item} needs a value, e.g. {item} 5")
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from ferkit.config import load_config, set_epochs
    from ferkit.train.trainer import resume, train

    logging.getLogger("ferkit").setLevel(logging.INFO)
    printer = epoch_printer()
    if args.resume:
        if args.config or args.extra or args.data or args.epochs is not None or args.pretrained_file:
            raise FerkitError("--resume continues a run with its saved config; give no recipe or overrides with it")
        summary = resume(args.resume, progress=True, callbacks=[printer])
    else:
        if not args.config:
            raise FerkitError("give a recipe, e.g. ferkit train configs/default.yaml --data ../shared/data/fer2013.zip")
        cfg = load_config(args.config, parse_overrides(args.extra))
        if args.data:  # paths as given: no YAML reading ("a #1/x.zip" is not a comment)
            cfg.data.path = args.data
        if args.pretrained_file:
            cfg.model.pretrained_file = args.pretrained_file
        if args.epochs is not None:
            set_epochs(cfg, args.epochs)
        out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
        summary = train(cfg, out, progress=True, callbacks=[printer])
    best = summary["best"]
    print(f"best epoch {summary['best_epoch']}: " + ", ".join(f"{k} {v:.4f}" for k, v in best.items()))
    print(f"run directory: {summary['run_dir']} (best checkpoint {summary['best_checkpoint']})")
    return 0


def epoch_printer():
    """A callback that prints one line per finished epoch: the CLI's view of a run."""
    from ferkit.train.callbacks import Callback

    class EpochPrinter(Callback):
        def on_stage_start(self, trainer, stage):
            if trainer.ctx.is_main:
                if stage == 0:
                    from ferkit.data.dataset import leak_note

                    ds = trainer.data.dataset
                    print(f"data: {leak_note(ds.leaks_excluded, ds.leaks_kept)}", flush=True)
                    if trainer.cfg.data.extra_labels:
                        print(f"data: {trainer.data.extra_matched:,} of {len(trainer.data.train):,} training faces "
                              f"also labelled by {trainer.cfg.data.extra_labels} "
                              f"(weight {trainer.cfg.data.extra_weight})", flush=True)
                s = trainer.stages[stage]
                n = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
                print(f"stage {stage + 1}/{len(trainer.stages)}: {s.epochs} epochs, trainable {s.trainable} "
                      f"({n:,} parameters), {len(trainer.data.train):,} train / {len(trainer.data.val):,} "
                      f"{trainer.data.val.split} images, {trainer.device}, {trainer.amp_dtype or 'fp32'}", flush=True)

        def on_epoch_end(self, trainer, m):
            if trainer.ctx.is_main:
                print(f"epoch {m['epoch']:3d}  loss {m['train_loss']:.4f}  acc {m['train_accuracy']:.4f}  "
                      f"val_loss {m['val_loss']:.4f}  val_acc {m['val_accuracy']:.4f}  "
                      f"val_f1 {m['val_macro_f1']:.4f}  lr {m['lr']:.2e}  {m['images_per_s']:.0f} img/s  "
                      f"{m['epoch_time_s']:.0f}s", flush=True)

    return EpochPrinter()


def cmd_prior(args: argparse.Namespace) -> int:
    from ferkit.train.prior import adjust_checkpoint, sweep_prior

    if (args.tau is None) != (args.out is None):
        raise FerkitError("--tau and --out go together: without them the command sweeps tau and writes nothing")
    if args.out is not None:
        sweep_only = [o for o, v in (("--split", args.split), ("--tta", args.tta), ("--json", args.json)) if v]
        if sweep_only:
            raise FerkitError(f"the sweep's {', '.join(sweep_only)} do nothing with --tau and --out, which write a "
                              "model and score nothing; leave them out")
        out = Path(args.out)
        check_out_file(out, (".safetensors",), "a checkpoint is a .safetensors file")
        from ferkit.models.checkpoint import read_meta

        if args.data is not None and read_meta(args.checkpoint).get("prior_adjustment"):
            print(f"--data not read: {args.checkpoint} records the prior it was trained with")
        path = adjust_checkpoint(args.checkpoint, out, args.tau, args.data)
        print(f"wrote {path} (logits shifted by {-args.tau + 0:g} x log(training prior) from the model as trained)")
        return 0
    if args.data is None:
        raise FerkitError("give --data: the sweep scores each tau on --split of the dataset the model was trained on")
    args.split = args.split or "val"
    prior, rows = sweep_prior(args.checkpoint, args.data, args.split, tta=args.tta,
                              progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps({"prior": prior.tolist(), "rows": [r.to_dict() for r in rows]}, indent=2))
        return 0
    from rich.console import Console

    table = new_table(f"logit adjustment of {args.checkpoint} on {args.split} of {args.data}",
                      ("tau", "accuracy", "macro F1", "lowest recall", "of class"), left=("of class",))
    for r in rows:
        table.add_row(f"{r.tau:g}", f"{r.accuracy:.4f}", f"{r.macro_f1:.4f}", f"{r.min_recall:.3f}", r.min_recall_class)
    Console(width=120).print(table)
    return 0

