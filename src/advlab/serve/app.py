"""The prediction API: FastAPI app serving one classifier to black-box clients.

POST /predict takes a batch of images and returns probabilities (or only the top labels):

- JSON ``{"array": {"shape": [N, C, H, W], "dtype": "float32", "data": BASE64}}``: raw little-endian
  float32 bytes, exact and compact (what ``HttpOracle`` sends);
- JSON ``{"instances": [[[[...]]]]}``: nested lists of floats in [0, 1], shape (N, C, H, W);
- JSON ``{"png": [BASE64, ...]}``: PNG (or any Pillow-readable) images of the model's size;
- multipart/form-data with one or more image files.

Every request is checked before the model sees it; hostile input gets a 4xx and a one-line reason:
400 malformed body or undecodable image, 401 missing token, 403 wrong token, 408 body not sent in
time, 413 body or batch too large, 415 unsupported content type, 422 wrong shape / NaN / values
outside [0, 1] / strings or oversized integers as numbers, 429 query budget spent; 503 when the
limit of bodies received at once is reached (sent before the body is read). Queries are counted per
client (its token, else its address) in images. Bodies above 1 MiB are parsed in a worker process:
json.loads holds the GIL for seconds on a 32 MiB body and would stall every other request.
"""

from __future__ import annotations

import asyncio
import hmac
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from torch import nn

from advlab import __version__
from advlab.attacks.blackbox.oracle import model_answers
from advlab.errors import AdvlabError, check_images
from advlab.models import CheckpointMeta, load_model
from advlab.serve.decode import Refusal, decode_body, decode_body_safely, follow_server

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_BODY = 32 * 2**20
DEFAULT_MAX_BODIES = 4  # request bodies received and parsed at once; more get 503 at once, unread
DEFAULT_BODY_TIMEOUT = 30.0  # seconds a client has to send its whole body
WORKER_PARSE_BYTES = 2**20  # larger bodies are parsed in a worker process: JSON parsing holds the GIL

_parser_pool: ProcessPoolExecutor | None = None
_parser_lock = threading.Lock()


def _parser() -> ProcessPoolExecutor:
    """One worker process (shared by the apps of this process) that parses large bodies, so that a
    32 MiB JSON body (seconds of json.loads holding the GIL) never stalls the event loop. Forked from
    a server process that preloads only the decoder (numpy, no torch); replaced every 64 bodies so
    parsing memory goes back to the system."""
    global _parser_pool
    with _parser_lock:
        if _parser_pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["advlab.serve.decode"])
            _parser_pool = ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=64,
                                               initializer=follow_server, initargs=(os.getpid(),))
        return _parser_pool


def _drop_parser(pool: ProcessPoolExecutor) -> None:
    global _parser_pool
    with _parser_lock:
        if _parser_pool is pool:
            _parser_pool = None
    pool.shutdown(wait=False, cancel_futures=True)


class QueryCounter:
    """Images answered per client; thread-safe; refuses a batch that would pass the budget."""

    def __init__(self, budget: int | None) -> None:
        self.budget = budget
        self.used: dict[str, int] = {}
        self.lock = threading.Lock()

    def charge(self, client: str, n: int) -> tuple[int, int | None]:
        with self.lock:
            used = self.used.get(client, 0)
            if self.budget is not None and used + n > self.budget:
                raise Refusal(429, f"query budget of {self.budget} images per client exhausted ({used} used, "
                                   f"{n} more asked)")
            self.used[client] = used + n
            return used + n, None if self.budget is None else self.budget - used - n


def create_app(model: nn.Module, classes: list[str], labels_only: bool = False, token: str | list[str] | None = None,
               query_budget: int | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_body_bytes: int = DEFAULT_MAX_BODY, input_shape: tuple[int, int, int] | None = None,
               max_bodies: int = DEFAULT_MAX_BODIES, body_timeout: float = DEFAULT_BODY_TIMEOUT) -> FastAPI:
    """The prediction API for model (images in [0, 1] -> logits) with the given class names.

    input_shape (C, H, W) is checked on every request; PNG input needs it. token: one or several
    accepted bearer tokens (queries are then counted per token; the interactive docs are then off,
    as they would be served without it); query_budget: images per client. At most max_bodies request
    bodies are received and parsed at once (others get 503 before their body is read), each within
    body_timeout seconds (else 408).
    """
    if input_shape is None:
        raise AdvlabError("create_app needs input_shape (C, H, W): the checkpoint's metadata has it")
    shape = tuple(int(s) for s in input_shape)
    tokens = [token] if isinstance(token, str) else list(token or [])
    counter = QueryCounter(query_budget)
    model = model.eval()
    lock = threading.Lock()  # one forward pass at a time: the CPU threads are already all busy
    bodies = threading.BoundedSemaphore(max_bodies)  # taken and released on the event loop only
    docs = {} if not tokens else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="advlab prediction API", version=__version__,
                  description="POST /predict: class probabilities (or labels) for a batch of images in [0, 1].",
                  **docs)
    app.state.counter = counter

    def client_key(request: Request) -> str:
        if not tokens:
            return f"address:{request.client.host if request.client else 'unknown'}"
        header = request.headers.get("authorization", "")
        if not header:
            raise Refusal(401, "missing token: send the header 'Authorization: Bearer TOKEN'")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Refusal(401, "malformed Authorization header: use 'Bearer TOKEN'")
        for accepted in tokens:
            if hmac.compare_digest(given.encode(), accepted.encode()):
                return f"token:{accepted}"
        raise Refusal(403, "wrong token")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 20:
                raise Refusal(400, "invalid Content-Length header")
            if int(declared) > max_body_bytes:
                raise Refusal(413, f"body of {declared} bytes exceeds the limit of {max_body_bytes}")
        chunks, size = [], 0
        stream = request.stream().__aiter__()
        deadline = asyncio.get_running_loop().time() + body_timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                chunk = await asyncio.wait_for(stream.__anext__(), timeout=max(left, 0.001))
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise Refusal(408, f"body not received within {body_timeout:g} s") from None
            except ClientDisconnect:  # the client is gone; nobody reads the answer, nothing to log
                raise Refusal(400, "client disconnected before sending the whole body") from None
            size += len(chunk)
            if size > max_body_bytes:
                raise Refusal(413, f"body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def parse(body: bytes, content_type: str):
        if len(body) <= WORKER_PARSE_BYTES:
            x, want_labels = await run_in_threadpool(decode_body, body, content_type, shape, max_batch)
            return torch.from_numpy(x), want_labels
        pool = _parser()
        try:
            x, want_labels, refusal = await asyncio.wrap_future(
                pool.submit(decode_body_safely, body, content_type, shape, max_batch))
        except BrokenProcessPool:  # the worker died (killed, out of memory): start a fresh one next time
            _drop_parser(pool)
            raise Refusal(503, "the body parser was restarted; send the request again") from None
        if refusal is not None:
            raise Refusal(*refusal)
        return torch.from_numpy(x), want_labels

    def validate(x: torch.Tensor) -> None:
        try:
            check_images(x, "images")
        except AdvlabError as exc:
            raise Refusal(422, str(exc)) from None
        if tuple(x.shape[1:]) != shape:
            raise Refusal(422, f"images have shape {tuple(x.shape[1:])} but the model takes {shape} (C, H, W)")
        if x.shape[0] > max_batch:
            raise Refusal(413, f"batch of {x.shape[0]} images exceeds the limit of {max_batch}")

    def answer(x: torch.Tensor, want_labels: bool) -> torch.Tensor:
        with lock:
            return model_answers(model, x, labels_only=want_labels, batch_size=max_batch)

    @app.exception_handler(Refusal)
    async def refused(request: Request, exc: Refusal) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        if exc.status in (400, 408, 413, 503) and request.url.path == "/predict":
            headers = {**(headers or {}), "Connection": "close"}  # the rest of the body was never read
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail}, headers=headers)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "advlab_version": __version__, "input_shape": list(shape),
                "num_classes": len(classes), "classes": list(classes), "labels_only": labels_only,
                "max_batch": max_batch, "max_body_bytes": max_body_bytes, "query_budget": query_budget,
                "auth": bool(tokens)}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        client = client_key(request)  # authentication before reading the body
        if not bodies.acquire(blocking=False):
            raise Refusal(503, f"{max_bodies} request bodies are being received already; retry shortly")
        try:
            body = await read_body(request)
            x, want_labels = await parse(body, request.headers.get("content-type", ""))
            del body
        finally:
            bodies.release()
        validate(x)
        used, left = counter.charge(client, x.shape[0])
        labels_wanted = labels_only or want_labels
        out = await run_in_threadpool(answer, x, labels_wanted)
        content: dict = {"queries_used": used, "queries_left": left}
        if labels_wanted:
            content["labels"] = out.tolist()
        else:
            content["labels"] = out.argmax(1).tolist()
            content["probabilities"] = out.tolist()
        return JSONResponse(content)

    return app


def app_from_checkpoint(path: str, device: torch.device | str = "cpu", **options) -> tuple[FastAPI, CheckpointMeta]:
    """The prediction API for a classifier checkpoint (its class names and input shape from the typed
    metadata); options are create_app's (labels_only, token, query_budget, max_batch, ...)."""
    model, info = load_model(path, device)
    if info.kind != "classifier":
        raise AdvlabError(f"{path} holds a {info.architecture} {info.kind}; serve needs a classifier")
    return create_app(model, info.classes, input_shape=info.input_shape, **options), info
