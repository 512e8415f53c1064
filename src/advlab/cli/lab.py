"""advlab lab: the interactive page (pick an image, attack it, certify it, backdoor it) on this machine."""

from __future__ import annotations

import argparse

from advlab.cli.common import (
    add_device_arg,
    add_model_spec_args,
    device_from,
    port_number,
    positive_float,
    positive_int,
    spec_options,
)
from advlab.errors import AdvlabError
from advlab.lab.launch import DEFAULT_PORT, build_lab, serve_lab, url_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="the interactive lab: a local web page to attack, certify and backdoor models",
                       description="Serve the lab, a web page on this machine where every part of advlab can be "
                       "tried by hand: white-box and black-box attacks with live progress, fooling images, "
                       "randomized-smoothing certificates, a backdoored model, the print-and-photo simulation. "
                       "Without --model it trains (once, then reuses from the cache) the MNIST model of `advlab "
                       "demo`. Binds to loopback; a public address needs --token.")
    p.add_argument("--model", action="append", default=None, metavar="MODEL",
                   help="a .safetensors classifier checkpoint, or another model spec (not an architecture name): "
                   "timm:NAME, PATH.py:FUNCTION or package.module:FUNCTION (runs your code), TorchScript or .onnx "
                   "(repeatable; the first is the default); the cached checkpoints are offered too")
    add_model_spec_args(p)
    p.add_argument("--dataset", default=None, help="the test images of the --model specs that are not advlab "
                   "checkpoints: mnist, cifar10 or folder:PATH (default: none, uploads only)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback only)")
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                   help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--token", default=None, help="require this token on every API call (needed for a non-loopback "
                   "--host); 'random' makes one up; the printed URL carries it")
    p.add_argument("--max-jobs", type=positive_int, default=2, help="long operations running at once (default: 2)")
    p.add_argument("--max-upload-mb", type=positive_float(), default=8.0, help="largest upload in MiB (default: 8)")
    p.add_argument("--no-cache-models", dest="cache_models", action="store_false",
                   help="offer only the --model checkpoints, not those in advlab's model cache")
    p.add_argument("--data-dir", default=None, help="where data sets live (default: $ADVLAB_DATA; MNIST falls back "
                   "to the copy inside the package)")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = spec_options(args)
    if (options.given() or args.dataset) and not args.model:
        raise AdvlabError("--weights, --mean, --dataset and the other model-spec options apply to a --model spec")
    app, registry, token = build_lab(args.model, args.host, args.port, args.token, args.max_jobs, args.max_upload_mb,
                                     args.cache_models, args.data_dir, device_from(args), options, args.dataset)
    serve_lab(app, args.host, args.port, lambda port: print(f"lab: {len(registry.entries)} model(s); open "
                                                            f"{url_for(args.host, port, token)} (Ctrl-C stops)",
                                                            flush=True))
    return 0
