import cv2
import numpy as np
import pytest

from inference.imageio import ImageDecodeError, decode_image, read_image, sniff_format


def _encode(image, ext=".png"):
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def test_decodes_grey_rgba_and_16bit_to_bgr_uint8():
    grey = np.full((20, 30), 200, np.uint8)
    rgba = np.dstack([np.full((20, 30, 3), 50, np.uint8), np.full((20, 30), 255, np.uint8)])
    deep = np.full((20, 30), 65535, np.uint16)
    for image, value in [(grey, 200), (rgba, 50), (deep, 255)]:
        out = decode_image(_encode(image))
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8
        assert int(out[0, 0, 0]) == value


def test_rejects_bad_bytes_with_clear_messages():
    jpeg = _encode(np.zeros((64, 64, 3), np.uint8), ".jpg")
    assert sniff_format(jpeg) == "jpeg"
    with pytest.raises(ImageDecodeError, match="unknown file signature"):
        decode_image(b"hello world, not an image")
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="truncated JPEG"):
        decode_image(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageDecodeError, match="cannot be decoded"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ImageDecodeError, match="not accepted"):
        decode_image(_encode(np.zeros((8, 8), np.uint8), ".bmp"), formats=("jpeg", "png"))


def test_rejects_oversized_dimensions():
    data = _encode(np.zeros((300, 400, 3), np.uint8), ".jpg")
    assert decode_image(data, max_width=400, max_height=300).shape == (300, 400, 3)
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(data, max_width=399, max_height=1000)


def test_read_image_names_the_file(tmp_path):
    with pytest.raises(ImageDecodeError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty.png: empty"):
        read_image(empty)
