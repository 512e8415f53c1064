"""advlab lab: the interactive page (pick an image, attack it, certify it, backdoor it) on this machine."""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket

from advlab.cli.common import add_device_arg, device_from, port_number, positive_float, positive_int
from advlab.errors import AdvlabError

DEFAULT_PORT = 8765


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="the interactive lab: a local web page to attack, certify and backdoor models",
                       description="Serve the lab, a web page on this machine where every part of advlab can be "
                       "tried by hand: white-box and black-box attacks with live progress, fooling images, "
                       "randomized-smoothing certificates, a backdoored model, the print-and-photo simulation. "
                       "Without --model it trains (once, then reuses from the cache) the MNIST model of `advlab "
                       "demo`. Binds to loopback; a public address needs --token.")
    p.add_argument("--model", action="append", default=None, metavar="CHECKPOINT",
                   help="a .safetensors classifier checkpoint (repeatable; the first is the default); the cached "
                   "checkpoints are offered too")
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, token: str | None) -> None:
    if not 0 <= port <= 65535:
        raise AdvlabError(f"--port must be in 0..65535, got {port}")
    if not is_loopback(host) and not token:
        raise AdvlabError(f"--host {host} is reachable from other machines: pass --token (e.g. --token random) so "
                          "that only people given the URL can use the lab, or keep the default 127.0.0.1")


def default_checkpoint(args: argparse.Namespace, device) -> str:
    """The MNIST model of `advlab demo`: trained once, then taken from the cache."""
    from advlab.training import default_config, train_model

    config = default_config("mnist")
    print(f"lab: no --model given: using {config.model} on MNIST (trained once, then reused from the cache)")
    _, meta, path, cached = train_model(config, device, args.data_dir, progress=True)
    print(f"lab: {'reused' if cached else 'trained'} {config.model}, test accuracy {meta['test_accuracy']:.4f}")
    return str(path)


def build(args: argparse.Namespace):
    """(app, url, token) for the arguments; checks everything before any work."""
    from advlab.lab import create_lab_app
    from advlab.lab.models import ModelRegistry

    token = secrets.token_urlsafe(16) if args.token == "random" else args.token
    check_bind(args.host, args.port, token)
    if args.max_upload_mb <= 0:
        raise AdvlabError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    device = device_from(args)
    paths = args.model or [default_checkpoint(args, device)]
    registry = ModelRegistry(paths, scan_cache=args.cache_models, device=device, data_dir=args.data_dir)
    app = create_lab_app(registry, token=token, max_jobs=args.max_jobs,
                         max_upload_bytes=int(args.max_upload_mb * 2**20), data_dir=args.data_dir)
    return app, registry, token


def url_for(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    app, registry, token = build(args)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        raise AdvlabError(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); choose another --port") from None
    port = sock.getsockname()[1]
    print(f"lab: {len(registry.entries)} model(s); open {url_for(args.host, port, token)} (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
    return 0
