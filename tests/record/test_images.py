"""edge/images.py: lossless PNG with zlib alone (what recordings and the fallback picture use), and
JPEG through OpenCV or Pillow."""

from __future__ import annotations

import numpy as np
import pytest

from edge.images import decode_image, decode_png, encode_jpeg, encode_png


def test_png_round_trips_bit_for_bit():
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(decode_png(data), img)


def test_png_of_other_writers_with_every_row_filter():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    img = (np.add.outer(np.arange(40), np.arange(50))[..., None] * [1, 2, 3] % 256).astype(np.uint8)
    img[5:9, 5:30] = rng.integers(0, 256, (4, 25, 3), dtype=np.uint8)
    for flt in (0, 8, 16, 32, 64, 128, 248):  # none, sub, up, avg, paeth, all (adaptive)
        ok, buf = cv2.imencode(".png", img[..., ::-1], [cv2.IMWRITE_PNG_FILTER, flt])
        assert ok and np.array_equal(decode_png(buf.tobytes()), img), flt
    ok, buf = cv2.imencode(".png", np.dstack([img[..., ::-1], np.full(img.shape[:2], 7, np.uint8)]))
    assert np.array_equal(decode_png(buf.tobytes()), img)  # RGBA: alpha dropped


def test_jpeg_is_close_not_exact():
    pytest.importorskip("cv2")
    img = np.zeros((48, 64, 3), np.uint8)
    img[:, :32] = (200, 40, 40)
    back = decode_image(encode_jpeg(img, 95), "jpeg")
    assert back.shape == img.shape and np.abs(back.astype(int) - img).mean() < 6
    with pytest.raises(ValueError, match="not a PNG"):
        decode_png(b"nope")
