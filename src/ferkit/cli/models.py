"""``ferkit export`` and ``ferkit list-models``."""

from __future__ import annotations

import argparse
import json

from ferkit.cli.common import new_table
from ferkit.errors import FerkitError


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32 or int8) or to a Hugging Face Hub folder",
                       description="Export a checkpoint to one self-describing .onnx file and check its outputs "
                       "against PyTorch (--int8 quantizes weights and activations, calibrated on real faces), or "
                       "write it as a folder in Hugging Face Hub layout: model.safetensors and its model card "
                       "(--hub), which loads by its path or, uploaded, as hf-hub:owner/name.")
    p.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN",
                   help="a shipped model (default, fer2013), a run directory or a checkpoint")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", metavar="OUT.onnx", help="where to write the ONNX model")
    target.add_argument("--hub", metavar="DIR", help="a new folder for the model in Hugging Face Hub layout")
    p.add_argument("--int8", action="store_true", help="static int8 quantization (about 4x smaller)")
    p.add_argument("--calibration", metavar="PATH", help="faces to calibrate int8 on and to check the export "
                   "with (a dataset; default: the checkpoint's training set when it is on this machine)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("list-models", help="every registered model with parameters and input size")
    p.set_defaults(func=cmd_list_models)


def cmd_export(args: argparse.Namespace) -> int:
    from ferkit.export import export_hub, export_onnx

    if args.hub:
        if args.int8 or args.calibration:
            raise FerkitError("--int8 and --calibration are ONNX options; a Hub folder holds the checkpoint as it is")
        out = export_hub(args.checkpoint, args.hub)
        if args.json:
            print(json.dumps({"path": str(out), "files": sorted(f.name for f in out.iterdir())}, indent=2))
        else:
            print(f"wrote {out}: {', '.join(sorted(f.name for f in out.iterdir()))}; upload it with "
                  f"`huggingface-cli upload OWNER/NAME {out}`, load it as hf-hub:OWNER/NAME or by its path")
        return 0
    r = export_onnx(args.checkpoint, args.onnx, int8=args.int8, calibration=args.calibration)
    if args.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    kind = "int8" if r.int8 else "fp32"
    print(f"wrote {r.path} ({kind}, {r.size_mb:.1f} MB) in {r.seconds:.0f} s; against PyTorch on {r.check_faces} "
          f"faces: top emotion agrees on {r.top1_agreement:.1%}, largest probability difference {r.max_prob_diff:.2g}")
    return 0


def cmd_list_models(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ferkit.models import count_parameters, list_models

    table = new_table("ferkit models", ("name", "family", "parameters", "input", "ImageNet weights", "description"),
                      left=("name", "family", "input", "ImageNet weights", "description"))
    for spec in list_models():
        params = count_parameters(spec.name)
        table.add_row(spec.name, spec.family, f"{params / 1e6:.2f}M", f"{spec.input_size}px",
                      "yes" if spec.pretrained_capable else "", spec.description)
    Console(width=200).print(table)
    print("any other timm model: timm:<name>, e.g. timm:convnext_tiny")
    return 0

