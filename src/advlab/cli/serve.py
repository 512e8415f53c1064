"""advlab serve: a checkpoint behind an HTTP prediction API (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse

from advlab.cli.common import add_device_arg, device_from, port_number, positive_float, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a checkpoint as an HTTP prediction API (POST /predict)",
                       description="Serve a classifier checkpoint: POST /predict takes a batch of images (JSON "
                       "arrays in [0, 1], base64 float32, or PNG) and returns probabilities or only labels; "
                       "GET /health describes the model. Queries are counted per client (token or address).")
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by advlab")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, loopback only)")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--labels-only", action="store_true", help="answer only the top label (decision-based oracle)")
    p.add_argument("--token", action="append", default=None,
                   help="accepted bearer token (repeatable); queries are then counted per token")
    p.add_argument("--query-budget", type=positive_int, default=None, help="images each client may query")
    p.add_argument("--max-batch", type=positive_int, default=256, help="images per request (default 256)")
    p.add_argument("--max-body-mb", type=positive_float(4096), default=32.0,
                   help="largest request body in MiB (default 32)")
    p.add_argument("--max-bodies", type=positive_int, default=4,
                   help="request bodies received at once; more get 503 before being read (default 4)")
    p.add_argument("--header-timeout", type=positive_float(3600), default=10.0,
                   help="seconds a connection has to send its request headers (default 10)")
    p.add_argument("--body-timeout", type=positive_float(3600), default=30.0,
                   help="seconds a client has to send its whole body (default 30)")
    p.add_argument("--trust-proxy", action="store_true",
                   help="take the client address from X-Forwarded-For when the request comes from a proxy on "
                   "loopback (only behind a reverse proxy: otherwise any client could choose the address its "
                   "query budget is counted under)")
    add_device_arg(p)
    p.set_defaults(func=run)


def build_app(args: argparse.Namespace):
    """(app, CheckpointMeta) of the checkpoint with the command line's limits."""
    from advlab.serve import app_from_checkpoint

    return app_from_checkpoint(args.checkpoint, device_from(args), labels_only=args.labels_only, token=args.token,
                               query_budget=args.query_budget, max_batch=args.max_batch,
                               max_body_bytes=int(args.max_body_mb * 2**20), max_bodies=getattr(args, "max_bodies", 4),
                               body_timeout=getattr(args, "body_timeout", 30.0))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from advlab.serve import raise_open_file_limit, server_config

    app, info = build_app(args)
    raise_open_file_limit()
    print(f"serving {info.architecture} ({info.dataset or '?'}) on http://{args.host}:{args.port} "
          f"({'labels only' if args.labels_only else 'probabilities'}"
          f"{', token required' if args.token else ''}"
          f"{f', {args.query_budget} queries per client' if args.query_budget else ''}); Ctrl-C stops")
    uvicorn.Server(server_config(app, args.host, args.port, trust_proxy=args.trust_proxy,
                                 header_timeout=args.header_timeout)).run()
    return 0
