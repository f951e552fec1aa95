import cv2
import numpy as np
import pytest

from inference.imageio import (
    FRAME_HEADER,
    FRAME_HEADER_MAGIC,
    FrameMessage,
    FrameRejected,
    ImageDecodeError,
    decode_image,
    image_size,
    read_image,
    sniff_format,
    validate_frame,
)


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


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
def test_image_size_reads_the_header_of_every_accepted_format(ext, faces_dir):
    photo = cv2.imread(str(faces_dir / "group_photos" / "dlib_2008_007676.jpg"))
    for image in (photo, cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)[:37, :53]):
        data = _encode(image, ext)
        kind, width, height = image_size(data)
        assert kind == sniff_format(data) and (width, height) == (image.shape[1], image.shape[0])


def test_image_size_refuses_unknown_and_cut_headers():
    png = _encode(np.zeros((10, 20), np.uint8))
    with pytest.raises(FrameRejected) as err:
        image_size(png[:20])
    assert err.value.code == "truncated"
    with pytest.raises(FrameRejected) as err:
        image_size(b"GIF89a" + b"\x00" * 20)
    assert err.value.code == "not_an_image"


def test_a_decompression_bomb_is_refused_from_its_header_before_any_pixel_is_decoded():
    """A PNG whose header claims 20000x20000 px (1.2 GB decoded) is refused from its IHDR, in well under the memory a
    decode would take (the IDAT here is not even valid)."""
    import struct
    import tracemalloc
    import zlib

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + b"\x00" * 64
    tracemalloc.start()
    with pytest.raises(ImageDecodeError, match="too large: 20000x20000"):
        decode_image(bomb, max_width=1920, max_height=1080)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000


def _frame(data: bytes, **limits) -> FrameMessage:
    return validate_frame(data, **({"max_bytes": 1_000_000, "max_width": 1920, "max_height": 1080} | limits))


def test_validate_frame_accepts_jpeg_and_png_with_or_without_the_frm1_header():
    jpeg = _encode(np.zeros((48, 64, 3), np.uint8), ".jpg")
    png = _encode(np.zeros((16, 32), np.uint8))
    assert (_frame(jpeg).width, _frame(jpeg).height, _frame(jpeg).sequence) == (64, 48, None)
    assert (_frame(png).width, _frame(png).height) == (32, 16)
    msg = _frame(FRAME_HEADER.pack(FRAME_HEADER_MAGIC, 7, 1.7e12) + jpeg)
    assert (msg.sequence, msg.captured_at_ms, msg.data) == (7, 1.7e12, jpeg)
    assert _frame(FRAME_HEADER.pack(FRAME_HEADER_MAGIC, 8, float("nan")) + jpeg).captured_at_ms is None


@pytest.mark.parametrize(
    ("payload", "limits", "code"),
    [
        ("text", {}, "binary_expected"),
        (b"FRM1\x00\x00", {}, "bad_header"),
        (b"", {}, "empty"),
        (b"\xff\xd8\xff" + b"\x00" * 2000, {"max_bytes": 1000}, "too_large"),
        (b"GIF89a" + b"\x00" * 50, {}, "not_an_image"),
        (_encode(np.zeros((8, 8), np.uint8), ".bmp"), {}, "not_an_image"),  # accepted for uploads, not as a frame
        (_encode(np.zeros((48, 64, 3), np.uint8), ".jpg")[:-2], {}, "truncated"),
        (_encode(np.zeros((48, 64, 3), np.uint8), ".jpg"), {"max_width": 63}, "too_big_dimensions"),
    ],
)
def test_validate_frame_refuses_bad_messages_with_a_stable_code(payload, limits, code):
    with pytest.raises(FrameRejected) as err:
        _frame(payload, **limits)
    assert err.value.code == code and err.value.detail
