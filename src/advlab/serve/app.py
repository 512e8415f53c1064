"""The prediction API: FastAPI app serving one classifier to black-box clients.

POST /predict takes a batch of images and returns probabilities (or only the top labels):

- JSON ``{"array": {"shape": [N, C, H, W], "dtype": "float32", "data": BASE64}}``: raw little-endian
  float32 bytes, exact and compact (what ``HttpOracle`` sends);
- JSON ``{"instances": [[[[...]]]]}``: nested lists of floats in [0, 1], shape (N, C, H, W);
- JSON ``{"png": [BASE64, ...]}``: PNG (or any Pillow-readable) images of the model's size;
- multipart/form-data with one or more image files.

Every request is checked before the model sees it; hostile input gets a 4xx and a one-line reason:
400 malformed body or undecodable image, 401 missing token, 403 wrong token, 413 body or batch too
large, 415 unsupported content type, 422 wrong shape / NaN / values outside [0, 1], 429 query budget
spent. Queries are counted per client (its token, else its address) in images.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import hmac
import io
import json
import threading

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from torch import nn

from advlab import __version__
from advlab.attacks.blackbox.oracle import model_answers
from advlab.errors import AdvlabError, check_images

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_BODY = 32 * 2**20


class Refusal(Exception):  # noqa: N818 (an HTTP answer, not a bug)
    """A request the API refuses, with its status code and a reason for the client."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


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


def _decode_array(spec, max_batch: int, max_values: int) -> torch.Tensor:
    if not isinstance(spec, dict) or not {"shape", "data"} <= set(spec):
        raise Refusal(400, '"array" must be an object with "shape", "dtype" (float32) and base64 "data"')
    if spec.get("dtype", "float32") != "float32":
        raise Refusal(422, f'"array.dtype" must be float32, got {spec.get("dtype")!r}')
    shape = spec["shape"]
    if (not isinstance(shape, list) or len(shape) != 4
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise Refusal(422, f'"array.shape" must be 4 positive integers (N, C, H, W), got {shape!r}')
    if shape[0] > max_batch:
        raise Refusal(413, f"batch of {shape[0]} images exceeds the limit of {max_batch}")
    count = int(np.prod(shape))
    if count > max_values:
        raise Refusal(413, f"array of {count} values is larger than any allowed batch")
    try:
        raw = base64.b64decode(spec["data"], validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise Refusal(400, '"array.data" is not valid base64') from None
    if len(raw) != 4 * count:
        raise Refusal(422, f'"array.data" holds {len(raw)} bytes but shape {shape} needs {4 * count}')
    return torch.from_numpy(np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape))


def _decode_instances(instances, max_batch: int) -> torch.Tensor:
    if not isinstance(instances, list) or not instances:
        raise Refusal(422, '"instances" must be a non-empty list of images (N, C, H, W)')
    if len(instances) > max_batch:
        raise Refusal(413, f"batch of {len(instances)} images exceeds the limit of {max_batch}")
    try:
        array = np.array(instances, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise Refusal(422, '"instances" must be a rectangular nested list of numbers (N, C, H, W)') from None
    return torch.from_numpy(array)


def _decode_image(data: bytes, shape: tuple[int, int, int], position: int) -> torch.Tensor:
    from PIL import Image

    channels, height, width = shape
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size != (width, height):
                raise Refusal(422, f"image {position} is {img.size[0]}x{img.size[1]} but the model takes "
                                   f"{width}x{height}")
            img = img.convert("L" if channels == 1 else "RGB")
            array = np.asarray(img, dtype=np.uint8)
    except Refusal:
        raise
    except Exception as exc:  # Pillow raises many types on corrupt input; all mean "undecodable"
        raise Refusal(400, f"image {position} could not be decoded ({type(exc).__name__})") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.astype(np.float32) / 255.0)


def _decode_pngs(items, shape, max_batch: int) -> torch.Tensor:
    if not isinstance(items, list) or not items:
        raise Refusal(422, '"png" must be a non-empty list of base64-encoded images')
    if len(items) > max_batch:
        raise Refusal(413, f"batch of {len(items)} images exceeds the limit of {max_batch}")
    images = []
    for k, item in enumerate(items):
        if not isinstance(item, str):
            raise Refusal(422, f'"png" item {k} must be a base64 string')
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise Refusal(400, f'"png" item {k} is not valid base64') from None
        images.append(_decode_image(data, shape, k))
    return torch.stack(images)


def _multipart_files(body: bytes, content_type: str) -> list[bytes]:
    """File parts of a multipart/form-data body (stdlib parser: no extra dependency)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise Refusal(400, "multipart body could not be parsed (check the boundary)")
    files = [part.get_payload(decode=True) or b"" for part in message.iter_parts()
             if part.get_filename() is not None or part.get_content_type().startswith("image/")]
    if not files:
        raise Refusal(422, "multipart body holds no image files")
    return files


def create_app(model: nn.Module, classes: list[str], labels_only: bool = False, token: str | list[str] | None = None,
               query_budget: int | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_body_bytes: int = DEFAULT_MAX_BODY, input_shape: tuple[int, int, int] | None = None) -> FastAPI:
    """The prediction API for model (images in [0, 1] -> logits) with the given class names.

    input_shape (C, H, W) is checked on every request; PNG input needs it. token: one or several
    accepted bearer tokens (queries are then counted per token); query_budget: images per client.
    """
    if input_shape is None:
        raise AdvlabError("create_app needs input_shape (C, H, W): the checkpoint's metadata has it")
    shape = tuple(int(s) for s in input_shape)
    tokens = [token] if isinstance(token, str) else list(token or [])
    counter = QueryCounter(query_budget)
    model = model.eval()
    lock = threading.Lock()  # one forward pass at a time: the CPU threads are already all busy
    max_values = max_batch * int(np.prod(shape))
    app = FastAPI(title="advlab prediction API", version=__version__,
                  description="POST /predict: class probabilities (or labels) for a batch of images in [0, 1].")
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
            try:
                if int(declared) > max_body_bytes:
                    raise Refusal(413, f"body of {declared} bytes exceeds the limit of {max_body_bytes}")
            except ValueError:
                raise Refusal(400, "invalid Content-Length header") from None
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise Refusal(413, f"body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(body: bytes, content_type: str) -> tuple[torch.Tensor, bool]:
        kind = content_type.split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            files = _multipart_files(body, content_type)
            if len(files) > max_batch:
                raise Refusal(413, f"batch of {len(files)} images exceeds the limit of {max_batch}")
            return torch.stack([_decode_image(f, shape, k) for k, f in enumerate(files)]), False
        if kind not in ("application/json", ""):
            raise Refusal(415, f"unsupported content type {kind!r}; send application/json or multipart/form-data")
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise Refusal(400, "body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise Refusal(400, 'body must be a JSON object with "array", "instances" or "png"')
        present = [k for k in ("array", "instances", "png") if k in payload]
        if len(present) != 1:
            raise Refusal(400, 'body must hold exactly one of "array", "instances" or "png"')
        want_labels = payload.get("labels_only", False)
        if not isinstance(want_labels, bool):
            raise Refusal(422, '"labels_only" must be true or false')
        if present[0] == "array":
            x = _decode_array(payload["array"], max_batch, max_values)
        elif present[0] == "instances":
            x = _decode_instances(payload["instances"], max_batch)
        else:
            x = _decode_pngs(payload["png"], shape, max_batch)
        return x, want_labels

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
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "advlab_version": __version__, "input_shape": list(shape),
                "num_classes": len(classes), "classes": list(classes), "labels_only": labels_only,
                "max_batch": max_batch, "max_body_bytes": max_body_bytes, "query_budget": query_budget,
                "auth": bool(tokens)}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        client = client_key(request)  # authentication before reading the body
        body = await read_body(request)
        x, want_labels = parse(body, request.headers.get("content-type", ""))
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
