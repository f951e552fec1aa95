"""Reading, validating and decoding images into OpenCV BGR ``uint8`` arrays, with clear errors for bad input.

Frames from the network are checked without decoding pixels (``image_size`` reads the dimensions from the header,
``validate_frame`` checks a whole camera frame message) and decoded in memory only (``decode_image``); nothing is
written to disk.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

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


#: Optional 16-byte header in front of a camera frame message: ``b"FRM1"``, uint32 sequence, float64 client capture
#: time (ms since the Unix epoch), all big-endian.
FRAME_HEADER = struct.Struct(">4sId")
FRAME_HEADER_MAGIC = b"FRM1"

#: JPEG start-of-frame markers that carry the image size (ITU-T T.81, table B.1: SOF0-3, 5-7, 9-11, 13-15).
_JPEG_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


class ImageDecodeError(ValueError):
    """The bytes or file are not a decodable image within the allowed size."""


class FrameRejected(ValueError):
    """A frame message that must not be analysed.

    Attributes:
        code: stable machine-readable reason: ``binary_expected``, ``empty``, ``too_large``, ``bad_header``,
            ``not_an_image``, ``truncated``, ``too_big_dimensions``.
        detail: human-readable explanation.
    """

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class FrameMessage:
    """A validated frame message.

    Attributes:
        data: the JPEG or PNG bytes (header removed).
        width, height: image size in pixels, read from the image header.
        sequence: the client's frame number from the ``FRM1`` header, or ``None`` without a header.
        captured_at_ms: the client's capture time (ms since the Unix epoch), or ``None`` (no header, NaN, negative).
    """

    data: bytes
    width: int
    height: int
    sequence: int | None
    captured_at_ms: float | None


def sniff_format(data: bytes) -> str | None:
    """Image format from the leading magic bytes (``jpeg``, ``png``, ``bmp``, ``tiff``, ``webp``) or ``None``."""
    for magic, name in MAGIC.items():
        if data.startswith(magic):
            if name == "webp" and data[8:12] != b"WEBP":
                return None
            return name
    return None


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's start-of-frame segment (ITU-T T.81, B.2.2); raises ``FrameRejected``."""
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            raise FrameRejected("not_an_image", "corrupt JPEG: marker expected")
        while i < n and data[i] == 0xFF:
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in (0x01, *range(0xD0, 0xD8)):  # TEM and RSTn stand alone
            continue
        if marker == 0xD9 or i + 2 > n:
            break
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:
            raise FrameRejected("not_an_image", "corrupt JPEG segment length")
        if marker in _JPEG_SOF_MARKERS:
            if i + 7 > n:
                break
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return width, height
        i += length
    raise FrameRejected("truncated", "truncated JPEG: no frame header found")


def _webp_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a WebP from its first chunk (Google's WebP container specification)."""
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    raise FrameRejected("truncated", "truncated WebP: no image header found")


def _tiff_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first IFD of a TIFF (tags 256 ImageWidth and 257 ImageLength, TIFF 6.0 sect. 2)."""
    order = "<" if data[:2] == b"II" else ">"
    try:
        (offset,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, offset)
        size: dict[int, int] = {}
        for k in range(min(count, 1000)):
            tag, kind, _, value = struct.unpack_from(order + "HHI4s", data, offset + 2 + 12 * k)
            if tag in (256, 257):
                size[tag] = struct.unpack_from(order + ("H" if kind == 3 else "I"), value)[0]
    except struct.error:
        raise FrameRejected("truncated", "truncated TIFF: no complete image directory") from None
    if 256 not in size or 257 not in size:
        raise FrameRejected("not_an_image", "TIFF without image width and length")
    return size[256], size[257]


def image_size(data: bytes) -> tuple[str, int, int]:
    """Format and size of an encoded image read from its header, without decoding any pixel.

    Args:
        data: JPEG, PNG, BMP, TIFF or WebP bytes.

    Returns:
        ``(format, width, height)``: a ``sniff_format`` name and the size in pixels.

    Raises:
        FrameRejected: ``not_an_image`` (unknown signature, corrupt header) or ``truncated`` (header cut short).
    """
    kind = sniff_format(data)
    if kind == "jpeg":
        width, height = _jpeg_size(data)
    elif kind == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise FrameRejected("truncated", "truncated PNG: no IHDR chunk")
        width, height = struct.unpack(">II", data[16:24])
    elif kind == "bmp":
        if len(data) < 26:
            raise FrameRejected("truncated", "truncated BMP: no info header")
        width, height = struct.unpack("<ii", data[18:26])
        width, height = abs(width), abs(height)  # negative height: top-down rows
    elif kind == "tiff":
        width, height = _tiff_size(data)
    elif kind == "webp":
        width, height = _webp_size(data)
    else:
        raise FrameRejected("not_an_image", "not a JPEG, PNG, BMP, TIFF or WebP image")
    return kind, int(width), int(height)


def validate_frame(data: object, *, max_bytes: int, max_width: int, max_height: int) -> FrameMessage:
    """Check one camera frame message cheaply, without decoding pixels.

    Args:
        data: the message payload; ``bytes``/``bytearray`` (anything else, e.g. a text message, is refused). An
            optional ``FRAME_HEADER`` prefix, then a JPEG (must end with the EOI marker) or PNG (must end with IEND).
        max_bytes: largest image in bytes (header excluded).
        max_width, max_height: largest image size in pixels, read from the image header.

    Returns:
        A ``FrameMessage``.

    Raises:
        FrameRejected: with code ``binary_expected``, ``bad_header``, ``empty``, ``too_large``, ``not_an_image``,
            ``truncated`` or ``too_big_dimensions``.
    """
    if not isinstance(data, bytes | bytearray):
        raise FrameRejected("binary_expected", "send frames as binary JPEG/PNG messages, not text")
    data = bytes(data)
    sequence = captured_at_ms = None
    if data[:4] == FRAME_HEADER_MAGIC:
        if len(data) < FRAME_HEADER.size:
            raise FrameRejected("bad_header", "frame header is shorter than 16 bytes")
        _, sequence, captured_at_ms = FRAME_HEADER.unpack_from(data)
        data = data[FRAME_HEADER.size :]
        if captured_at_ms != captured_at_ms or captured_at_ms < 0:  # NaN or negative
            captured_at_ms = None
    if not data:
        raise FrameRejected("empty", "empty frame")
    if len(data) > max_bytes:
        raise FrameRejected("too_large", f"frame of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    kind = sniff_format(data)
    if kind == "jpeg":
        if not data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9":
            raise FrameRejected("truncated", "truncated JPEG: no end-of-image marker")
    elif kind == "png":
        if len(data) >= 24 and b"IEND" not in data[-12:]:
            raise FrameRejected("truncated", "truncated PNG: no IEND chunk")
    else:
        raise FrameRejected("not_an_image", "not a JPEG or PNG image")
    _, width, height = image_size(data)
    if width <= 0 or height <= 0:
        raise FrameRejected("not_an_image", "image has no pixels")
    if width > max_width or height > max_height:
        raise FrameRejected(
            "too_big_dimensions", f"image of {width}x{height} pixels exceeds the limit of {max_width}x{max_height}"
        )
    return FrameMessage(data=data, width=width, height=height, sequence=sequence, captured_at_ms=captured_at_ms)


def _normalise(image: np.ndarray) -> np.ndarray:
    """Decoded image of any depth/channels -> BGR ``uint8 (H, W, 3)``."""
    if image.dtype == np.uint16:
        image = (image / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        low, high = float(image.min()), float(image.max())
        image = ((image - low) * (255.0 / max(high - low, 1e-12))).round().astype(np.uint8)  # min-max to 0..255
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
        # The header's size before any pixel is allocated (decompression bombs).
        try:
            _, width, height = image_size(data)
        except FrameRejected as exc:
            raise ImageDecodeError(exc.detail) from None
        if (max_width and width > max_width) or (max_height and height > max_height):
            raise ImageDecodeError(f"image too large: {width}x{height} px (max {max_width}x{max_height})")
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


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (BGR ``uint8 (H, W, 3)``) scaled to fit into ``size`` = (width, height) pixels, keeping its aspect
    ratio (``INTER_AREA`` down, ``INTER_LINEAR`` up), centred on a grey (128) canvas of exactly that size: a photo
    as a webcam of that size would frame it (``manage.py loadtest --size``). Returns a new ``uint8 (height, width,
    3)`` array."""
    width, height = size
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    canvas = np.full((height, width, 3), 128, np.uint8)
    y0, x0 = (height - new_h) // 2, (width - new_w) // 2
    canvas[y0 : y0 + new_h, x0 : x0 + new_w] = resized
    return canvas
