"""Request bodies to image batches, with every check a hostile body needs. No torch, no FastAPI:
this module also runs in the worker process that parses large bodies, so it must import fast.

decode_body(body, content_type, shape, max_batch) returns (float32 array (N, C, H, W), labels_only)
or raises Refusal (status, reason). Numbers are checked as JSON numbers: strings such as "0.5",
NaN/Infinity literals and integers too long to be a pixel are refused, and array shapes are checked
against the model's before any size is multiplied out.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import io
import json
import os
import threading
import time

import numpy as np

LONGEST_NUMBER = 40  # characters of a JSON integer; more cannot be a pixel and would be slow to convert


class Refusal(Exception):  # noqa: N818 (an HTTP answer, not a bug)
    """A request the API refuses, with its status code and a reason for the client. Picklable, so the
    parsing worker process can raise it."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail)
        self.status, self.detail = status, detail

    def __str__(self) -> str:
        return self.detail


def _parse_int(text: str) -> int:
    if len(text) > LONGEST_NUMBER:
        raise Refusal(422, f"a number of {len(text)} digits is not an image value, a size or a flag")
    return int(text)


def _parse_constant(name: str) -> float:
    raise Refusal(422, f"{name} is not a valid value: images must hold finite numbers in [0, 1]")


def load_json(body: bytes):
    try:
        return json.loads(body, parse_int=_parse_int, parse_constant=_parse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise Refusal(400, "body is not valid JSON") from None
    except ValueError as exc:  # e.g. a float literal Python cannot convert
        raise Refusal(400, f"body is not valid JSON ({str(exc)[:80]})") from None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_batch(n: int, max_batch: int) -> None:
    if n > max_batch:
        raise Refusal(413, f"batch of {n} images exceeds the limit of {max_batch}")


def decode_array(spec, shape: tuple[int, int, int], max_batch: int) -> np.ndarray:
    if not isinstance(spec, dict) or not {"shape", "data"} <= set(spec):
        raise Refusal(400, '"array" must be an object with "shape", "dtype" (float32) and base64 "data"')
    if spec.get("dtype", "float32") != "float32":
        raise Refusal(422, f'"array.dtype" must be float32, got {str(spec.get("dtype"))[:40]!r}')
    declared = spec["shape"]
    if not isinstance(declared, list) or len(declared) != 4 or not all(_is_count(s) and s > 0 for s in declared):
        raise Refusal(422, f'"array.shape" must be 4 positive integers (N, C, H, W), got {str(declared)[:80]}')
    # compared with the model's shape before any product is taken: no size can overflow
    if tuple(declared[1:]) != shape:
        raise Refusal(422, f"images have shape {tuple(declared[1:])} but the model takes {shape} (C, H, W)")
    _check_batch(declared[0], max_batch)
    count = declared[0] * shape[0] * shape[1] * shape[2]
    data = spec["data"]
    if not isinstance(data, str):
        raise Refusal(400, '"array.data" must be a base64 string')
    if len(data) > 4 * ((4 * count + 2) // 3) + 4:
        raise Refusal(422, f'"array.data" is longer than shape {declared} needs')
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(400, '"array.data" is not valid base64') from None
    if len(raw) != 4 * count:
        raise Refusal(422, f'"array.data" holds {len(raw)} bytes but shape {declared} needs {4 * count}')
    return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(declared)


def decode_instances(instances, max_batch: int) -> np.ndarray:
    if not isinstance(instances, list) or not instances:
        raise Refusal(422, '"instances" must be a non-empty list of images (N, C, H, W)')
    _check_batch(len(instances), max_batch)
    try:
        array = np.array(instances)
    except (ValueError, TypeError, OverflowError):
        raise Refusal(422, '"instances" must be a rectangular nested list of numbers (N, C, H, W)') from None
    if array.dtype.kind not in "iuf":  # strings ("0.5"), booleans, objects, ragged lists
        raise Refusal(422, '"instances" must be a rectangular nested list of JSON numbers (N, C, H, W); strings '
                           'and booleans are not numbers')
    return array.astype(np.float32)


def decode_image(data: bytes, shape: tuple[int, int, int], position: int) -> np.ndarray:
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
    return array.astype(np.float32) / 255.0


def decode_pngs(items, shape: tuple[int, int, int], max_batch: int) -> np.ndarray:
    if not isinstance(items, list) or not items:
        raise Refusal(422, '"png" must be a non-empty list of base64-encoded images')
    _check_batch(len(items), max_batch)
    images = []
    for k, item in enumerate(items):
        if not isinstance(item, str):
            raise Refusal(422, f'"png" item {k} must be a base64 string')
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise Refusal(400, f'"png" item {k} is not valid base64') from None
        images.append(decode_image(data, shape, k))
    return np.stack(images)


def multipart_files(body: bytes, content_type: str) -> list[bytes]:
    """File parts of a multipart/form-data body (stdlib parser: no extra dependency)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise Refusal(400, "multipart body could not be parsed (check the boundary)")
    files = [part.get_payload(decode=True) or b"" for part in message.iter_parts()
             if part.get_filename() is not None or part.get_content_type().startswith("image/")]
    if not files:
        raise Refusal(422, "multipart body holds no image files")
    return files


def decode_body(body: bytes, content_type: str, shape: tuple[int, int, int], max_batch: int) -> tuple[np.ndarray, bool]:
    """The images (float32, N x C x H x W, not yet range-checked) and the labels_only flag of a body."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        files = multipart_files(body, content_type)
        _check_batch(len(files), max_batch)
        return np.stack([decode_image(f, shape, k) for k, f in enumerate(files)]), False
    if kind not in ("application/json", ""):
        raise Refusal(415, f"unsupported content type {kind[:60]!r}; send application/json or multipart/form-data")
    payload = load_json(body)
    if not isinstance(payload, dict):
        raise Refusal(400, 'body must be a JSON object with "array", "instances" or "png"')
    present = [k for k in ("array", "instances", "png") if k in payload]
    if len(present) != 1:
        raise Refusal(400, 'body must hold exactly one of "array", "instances" or "png"')
    want_labels = payload.get("labels_only", False)
    if not isinstance(want_labels, bool):
        raise Refusal(422, '"labels_only" must be true or false')
    if present[0] == "array":
        x = decode_array(payload["array"], shape, max_batch)
    elif present[0] == "instances":
        x = decode_instances(payload["instances"], max_batch)
    else:
        x = decode_pngs(payload["png"], shape, max_batch)
    return x, want_labels


def decode_body_safely(body: bytes, content_type: str, shape: tuple[int, int, int],
                       max_batch: int) -> tuple[np.ndarray | None, bool, tuple[int, str] | None]:
    """decode_body for the worker process: a refusal comes back as (None, False, (status, reason))."""
    try:
        x, labels = decode_body(body, content_type, shape, max_batch)
        return x, labels, None
    except Refusal as exc:
        return None, False, (exc.status, exc.detail)


def follow_server(server_pid: int, every: float = 1.0) -> None:
    """Worker-process initializer: exit once the server process is gone. uvicorn ends on SIGTERM by
    re-raising the signal after its shutdown, which skips the executor's own clean-up, and a worker
    (forked from the forkserver, not from the server) would otherwise outlive it."""

    def watch() -> None:
        while True:
            time.sleep(every)
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # the pid was reused by another user's process: the server is gone
                os._exit(0)

    threading.Thread(target=watch, name="follow-server", daemon=True).start()
