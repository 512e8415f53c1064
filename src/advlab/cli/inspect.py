"""advlab inspect: what a model spec resolves to, checked before a long run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advlab.cli.common import (
    MODEL_SPEC_HELP,
    add_data_args,
    add_device_arg,
    add_model_spec_args,
    check_model_fits,
    dataset_split,
    declare_output_file,
    device_from,
    resolve_model,
)
from advlab.models.describe import describe_model, format_description
from advlab.models.spec import info_from_metadata
from advlab.runtime import atomic_write


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show what a model spec resolves to (shape, normalization, classes, layers)",
                       description="Resolve a model spec as every command does and print what was found: "
                       "architecture, parameter count, input size, normalization, classes, the output shape of a "
                       "forward pass, and the named layers (what --layer accepts). With --dataset, also check "
                       "that the model fits that data's image shape and classes.")
    p.add_argument("model", metavar="MODEL", help=MODEL_SPEC_HELP)
    add_model_spec_args(p)
    add_data_args(p, dataset=None)
    p.add_argument("--all-layers", action="store_true", help="list every layer (default: the first and last 30)")
    p.add_argument("--json", default=None, help="also write the summary here as JSON")
    declare_output_file(p, "json", ".json")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = device_from(args)
    model, meta = resolve_model(args.model, args, device)
    info = info_from_metadata(meta, model, args.model)
    summary = describe_model(model, info, device)
    print(format_description(summary, args.all_layers))
    if args.dataset:
        check_model_fits(meta, dataset_split(args, "test", 1), args.model)
        print(f"fits {args.dataset}: images {'x'.join(map(str, info.input_shape))}, {info.num_classes} classes")
    if args.json:
        text = json.dumps(summary, indent=1)
        atomic_write(Path(args.json), lambda tmp: tmp.write_text(text))
    return 0
