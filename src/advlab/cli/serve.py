"""advlab serve: a checkpoint behind an HTTP prediction API (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse

from advlab.cli.common import add_device_arg, device_from, positive_int
from advlab.errors import AdvlabError
from advlab.models import load_checkpoint


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a checkpoint as an HTTP prediction API (POST /predict)",
                       description="Serve a classifier checkpoint: POST /predict takes a batch of images (JSON "
                       "arrays in [0, 1], base64 float32, or PNG) and returns probabilities or only labels; "
                       "GET /health describes the model. Queries are counted per client (token or address).")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by advlab")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--labels-only", action="store_true", help="answer only the top label (decision-based oracle)")
    p.add_argument("--token", action="append", default=None,
                   help="accepted bearer token (repeatable); queries are then counted per token")
    p.add_argument("--query-budget", type=positive_int, default=None, help="images each client may query")
    p.add_argument("--max-batch", type=positive_int, default=256, help="images per request (default 256)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body in MiB (default 32)")
    add_device_arg(p)
    p.set_defaults(func=run)


def build_app(args: argparse.Namespace):
    from advlab.serve import create_app

    if not 0 <= args.port <= 65535:
        raise AdvlabError(f"--port must be in 0..65535, got {args.port}")
    if args.max_body_mb <= 0:
        raise AdvlabError(f"--max-body-mb must be positive, got {args.max_body_mb}")
    model, meta = load_checkpoint(args.checkpoint, device_from(args))
    shape = meta.get("input_shape") or [meta["model_args"]["channels"], meta["model_args"]["size"],
                                        meta["model_args"]["size"]]
    classes = meta.get("classes") or [str(k) for k in range(meta["model_args"]["num_classes"])]
    return create_app(model, classes, labels_only=args.labels_only, token=args.token,
                      query_budget=args.query_budget, max_batch=args.max_batch,
                      max_body_bytes=int(args.max_body_mb * 2**20), input_shape=tuple(shape)), meta


def run(args: argparse.Namespace) -> int:
    import uvicorn

    app, meta = build_app(args)
    print(f"serving {meta['architecture']} ({meta.get('dataset', '?')}) on http://{args.host}:{args.port} "
          f"({'labels only' if args.labels_only else 'probabilities'}"
          f"{', token required' if args.token else ''}"
          f"{f', {args.query_budget} queries per client' if args.query_budget else ''}); Ctrl-C stops")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
