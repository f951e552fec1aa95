"""Reading and decoding images into OpenCV BGR ``uint8`` arrays, with clear errors for bad input.

Frames from the network are decoded in memory only (``decode_image``); nothing is written to disk.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

#: Magic numbers of the accepted still-image formats (file signatures, see e.g. the libmagic database).
MAGIC = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"RIFF": "webp",
}


class ImageDecodeError(ValueError):
    """The bytes or file are not a decodable image within the allowed size."""


def sniff_format(data: bytes) -> str | None:
    """Image format from the leading magic bytes (``jpeg``, ``png``, ``bmp``, ``tiff``, ``webp``) or ``None``."""
    for magic, name in MAGIC.items():
        if data.startswith(magic):
            if name == "webp" and data[8:12] != b"WEBP":
                return None
            return name
    return None


def _normalise(image: np.ndarray) -> np.ndarray:
    """Decoded image of any depth/channels -> BGR ``uint8 (H, W, 3)``."""
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def decode_image(
    data: bytes, max_width: int | None = None, max_height: int | None = None, formats: tuple[str, ...] | None = None
) -> np.ndarray:
    """Decode image bytes (JPEG, PNG, BMP, TIFF, WebP) to BGR ``uint8 (H, W, 3)``, in memory.

    Args:
        data: the encoded image.
        max_width, max_height: largest accepted decoded size in pixels (``None``: no limit).
        formats: accepted formats (``sniff_format`` names); ``None`` accepts all of ``MAGIC``.

    Raises:
        ImageDecodeError: empty data, unknown magic bytes, a format not in ``formats``, a JPEG without its end
            marker (truncated), undecodable data, or dimensions above the maxima.
    """
    if not data:
        raise ImageDecodeError("empty image data")
    kind = sniff_format(data)
    if kind is None:
        raise ImageDecodeError("not an image: unknown file signature (expected JPEG, PNG, BMP, TIFF or WebP)")
    if formats is not None and kind not in formats:
        raise ImageDecodeError(f"image format {kind} not accepted (expected {', '.join(formats)})")
    if kind == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageDecodeError("truncated JPEG: end-of-image marker missing")
    buffer = np.frombuffer(data, dtype=np.uint8)
    if max_width or max_height:
        # Check the header's size before allocating the full image (decompression bombs).
        header = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        if header is not None:
            approx_w, approx_h = header.shape[1] * 8, header.shape[0] * 8
            if (max_width and approx_w > max_width + 8) or (max_height and approx_h > max_height + 8):
                raise ImageDecodeError(
                    f"image too large: about {approx_w}x{approx_h} px (max {max_width}x{max_height})"
                )
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if image is None or image.size == 0:
        raise ImageDecodeError(f"corrupt {kind} data: cannot be decoded")
    height, width = image.shape[:2]
    if (max_width and width > max_width) or (max_height and height > max_height):
        raise ImageDecodeError(f"image too large: {width}x{height} px (max {max_width}x{max_height})")
    return _normalise(image)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (jpg, png, tiff, bmp, webp; grey, RGBA, 16-bit accepted) as BGR ``uint8 (H, W, 3)``.

    Raises:
        ImageDecodeError: the file is missing, empty, or not a decodable image (message names the file).
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{path}: {exc}") from exc
