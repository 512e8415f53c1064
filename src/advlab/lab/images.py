"""Images in and out of the lab: safe decoding of uploads, PNG encoding, the magnified perturbation.

An upload is untrusted: its size in bytes is capped before it is read, its pixel count is checked from
the header before a single pixel is decoded (a small PNG can declare a 100,000 x 100,000 canvas: a
decompression bomb), Pillow's own bomb check is turned into an error, and only PNG and JPEG are accepted.
"""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import torch

from advlab.errors import AdvlabError

FORMATS = ("PNG", "JPEG")
DEFAULT_MAX_UPLOAD_BYTES = 8 * 2**20
DEFAULT_MAX_PIXELS = 4096 * 4096


def decode_upload(data: bytes, shape: tuple[int, int, int], max_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """A PNG or JPEG upload as a float (C, H, W) image in [0, 1] of the model's shape.

    The picture is centre-cropped to the model's aspect ratio and resized (Lanczos); colour images
    become grey for a one-channel model and grey ones are repeated for a three-channel model.
    Raises AdvlabError with what to fix for anything else.
    """
    from PIL import Image, ImageOps

    if not data:
        raise AdvlabError("the upload is empty: choose a PNG or JPEG file")
    if len(data) > max_bytes:
        raise AdvlabError(f"the upload is {len(data)} bytes; the limit is {max_bytes} bytes")
    channels, height, width = shape
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in FORMATS:
                    raise AdvlabError(f"the upload is {img.format or 'not an image'}; send a PNG or JPEG file")
                w, h = img.size
                if w * h > max_pixels:
                    raise AdvlabError(f"the image declares {w}x{h} pixels, more than the limit of {max_pixels} "
                                      "(a decompression bomb?); send a smaller picture")
                img.load()
                img = ImageOps.exif_transpose(img)
                if img.mode in ("RGBA", "LA", "P"):  # transparency over white, as a viewer shows it
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(background, img)
                img = img.convert("L" if channels == 1 else "RGB")
                img = ImageOps.fit(img, (width, height), method=Image.LANCZOS)
                array = np.asarray(img, dtype=np.uint8)
        except AdvlabError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise AdvlabError("the image is a decompression bomb (far more pixels than its file size suggests); "
                              "send a normal picture") from None
        except Exception as exc:  # Pillow raises many types on corrupt input; all mean "undecodable"
            raise AdvlabError(f"the upload could not be decoded as PNG or JPEG ({type(exc).__name__})") from None
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy()).float() / 255.0


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) uint8 (rounded)."""
    array = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def png_bytes(x: torch.Tensor) -> bytes:
    """The image as a lossless 8-bit PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def image_url(x: torch.Tensor) -> str:
    return data_url(png_bytes(x))


def magnified_perturbation(delta: torch.Tensor) -> tuple[torch.Tensor, float]:
    """delta (C, H, W) mapped to [0, 1] around mid-grey so that its largest entry reaches the edge;
    returns the image and the magnification factor (1 when delta is zero)."""
    peak = float(delta.abs().max())
    factor = 0.5 / peak if peak > 0 else 1.0
    return (0.5 + delta * factor).clamp(0, 1), factor
