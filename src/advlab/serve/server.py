"""Running the prediction API on uvicorn with the limits a public socket needs.

uvicorn has no timeout for a request's headers: a client that opens a connection and sends a byte now
and then holds it forever (1,100 such sockets made /health time out). GuardedH11Protocol closes a
connection whose request headers are not complete within header_timeout seconds, on a fresh
connection and again after each answer on a kept-alive one. The body's own deadline is the app's
(create_app's body_timeout). Proxy headers (X-Forwarded-For) are ignored unless trust_proxy is set:
they would let any client choose the address its query budget is counted under.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT = 10.0


def guarded_protocol(header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline on each request's headers."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_deadline()

        def connection_lost(self, exc) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_overdue)

        def _headers_overdue(self) -> None:
            # IDLE: no complete request line and headers yet (nothing, or a slow trickle of them)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def server_config(app, host: str, port: int, *, trust_proxy: bool = False,
                  header_timeout: float = DEFAULT_HEADER_TIMEOUT, log_level: str = "warning", **extra):
    """The uvicorn Config every advlab server uses (the CLI, tests, benchmarks)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=guarded_protocol(header_timeout),
                          proxy_headers=trust_proxy, timeout_keep_alive=5, **extra)


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0, trust_proxy: bool = False,
                   header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> Iterator[str]:
    """Serve app with uvicorn in a daemon thread; yields its base URL and stops it on exit.

    port 0 takes a free port; the socket is bound here and handed to uvicorn, so no other process can
    take the port in between."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, host, port, trust_proxy=trust_proxy, header_timeout=header_timeout,
                                          log_level="error", lifespan="off"))
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


def raise_open_file_limit() -> None:
    """Every connection is a file descriptor: take the hard limit (the usual soft 1,024 would make a
    thousand idle sockets refuse everyone else; the header timeout then closes them)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if hard != resource.RLIM_INFINITY else 65536
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError):  # not on this platform, or not allowed: keep the limit
        pass
