"""The HTTP prediction API (``advlab serve``): a FastAPI app over one classifier, and a helper to run
it on loopback in a background thread (tests, benchmarks, the demo)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from advlab.serve.app import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY, QueryCounter, create_app


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Serve app with uvicorn in a daemon thread; yields its base URL and stops it on exit.

    port 0 takes a free port; the socket is bound here and handed to uvicorn, so no other process can
    take the port in between."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the prediction server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY", "QueryCounter", "create_app", "running_server"]
