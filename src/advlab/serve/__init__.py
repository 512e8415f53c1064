"""The HTTP prediction API (``advlab serve``): a FastAPI app over one classifier, and a helper to run
it on loopback in a background thread (tests, benchmarks, the demo).

Names are imported on first use: the worker process that parses large bodies imports only
``advlab.serve.decode`` and must not pay for torch and FastAPI.
"""

from __future__ import annotations

import importlib

_WHERE = {"DEFAULT_MAX_BATCH": "app", "DEFAULT_MAX_BODY": "app", "QueryCounter": "app", "create_app": "app",
          "app_from_checkpoint": "app", "raise_open_file_limit": "server", "running_server": "server",
          "server_config": "server"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"advlab.serve.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'advlab.serve' has no attribute {name!r}")


__all__ = sorted(_WHERE)
