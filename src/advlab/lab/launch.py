"""Starting the lab: the model registry (the demo's MNIST model when none is given), the address
checks (a non-loopback address needs a token), the listening socket and the URL to open.

    app, registry, token = build_lab(["model.safetensors"])
    serve_lab(app, "127.0.0.1", 8765, token)
"""

from __future__ import annotations

import ipaddress
import secrets
import socket

import torch

from advlab.errors import AdvlabError

DEFAULT_PORT = 8765


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


def url_for(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def default_checkpoint(device: torch.device | str = "cpu", data_dir: str | None = None) -> str:
    """The MNIST model of `advlab demo`: trained once, then taken from the cache."""
    from advlab.training import default_config, train_model

    config = default_config("mnist")
    print(f"lab: no --model given: using {config.model} on MNIST (trained once, then reused from the cache)")
    _, meta, path, cached = train_model(config, device, data_dir, progress=True)
    print(f"lab: {'reused' if cached else 'trained'} {config.model}, test accuracy {meta['test_accuracy']:.4f}")
    return str(path)


def build_lab(checkpoints: list[str] | None = None, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
              token: str | None = None, max_jobs: int = 2, max_upload_mb: float = 8.0, cache_models: bool = True,
              data_dir: str | None = None, device: torch.device | str = "cpu", options=None,
              dataset: str | None = None):
    """(app, registry, token) for these settings, checked before any work; token 'random' makes one up.
    checkpoints may be any model specs; options (advlab.models.SpecOptions) and dataset (their test
    images) apply to the specs that are not advlab checkpoints."""
    from advlab.lab.app import create_lab_app
    from advlab.lab.models import ModelRegistry

    token = secrets.token_urlsafe(16) if token == "random" else token
    check_bind(host, port, token)
    if max_upload_mb <= 0:
        raise AdvlabError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    paths = checkpoints or [default_checkpoint(device, data_dir)]
    registry = ModelRegistry(paths, scan_cache=cache_models, device=device, data_dir=data_dir, options=options,
                             dataset=dataset)
    app = create_lab_app(registry, token=token, max_jobs=max_jobs, max_upload_bytes=int(max_upload_mb * 2**20),
                         data_dir=data_dir)
    return app, registry, token


def serve_lab(app, host: str, port: int, on_listening=None) -> None:
    """Listen on host:port (0: a free port) and serve until interrupted; on_listening(port) once bound."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise AdvlabError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
    if on_listening is not None:
        on_listening(sock.getsockname()[1])
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
