"""RGB images to and from PNG / JPEG bytes, for recordings and pictures (robot side, no torch).

PNG is written and read with zlib alone (8-bit RGB, filter 0 on write; every filter on read), so
the robot's core install can record lossless frames and write profile.png without an imaging
library. JPEG needs an encoder: OpenCV (the ``camera`` extra, which a robot with a real camera has)
or Pillow, whichever is importable; otherwise a one-line error names the extra.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from edge.errors import UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MISSING = ("JPEG frames need OpenCV or Pillow: pip install 'legato-edge[camera]' "
                "(or record PNG frames: --record-image png)")  # fmt: skip


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(rgb: np.ndarray, level: int = 3) -> bytes:
    """(H, W, 3) uint8 RGB -> PNG bytes (lossless; zlib ``level`` 1 fast .. 9 small)."""
    img = np.ascontiguousarray(rgb, np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"encode_png needs an (H, W, 3) image, got shape {img.shape}")
    h, w = img.shape[:2]
    raw = np.zeros((h, 1 + 3 * w), np.uint8)  # filter byte 0 (none) before each row
    raw[:, 1:] = img.reshape(h, 3 * w)
    hdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return PNG_MAGIC + _chunk(b"IHDR", hdr) + _chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + \
        _chunk(b"IEND", b"")  # fmt: skip


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes (8-bit RGB or RGBA, not interlaced) -> (H, W, 3) uint8 RGB."""
    if data[:8] != PNG_MAGIC:
        raise ValueError("not a PNG (bad signature)")
    pos, idat, w = 8, [], 0
    h = ch = 0
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if tag == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or color not in (2, 6) or interlace:
                raise ValueError(f"PNG of depth {depth}, colour type {color}, interlace {interlace}: "
                                 "only 8-bit RGB/RGBA without interlace is read here")  # fmt: skip
            ch = 3 if color == 2 else 4
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
    stride = w * ch
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + stride)
    out = np.zeros((h, stride), np.int32)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        prev = out[y - 1] if y else np.zeros(stride, np.int32)
        if f == 0:
            out[y] = line
        elif f == 2:
            out[y] = (line + prev) & 255
        elif f in (1, 3, 4):  # the left neighbour makes these sequential along the row
            row = out[y]
            for x in range(stride):
                left = row[x - ch] if x >= ch else 0
                if f == 1:
                    pred = left
                elif f == 3:
                    pred = (left + prev[x]) // 2
                else:
                    ul = prev[x - ch] if x >= ch else 0
                    p = left + prev[x] - ul
                    pa, pb, pc = abs(p - left), abs(p - prev[x]), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (prev[x] if pb <= pc else ul)
                row[x] = (line[x] + pred) & 255
        else:
            raise ValueError(f"PNG row filter {f} is not defined")
    return out.astype(np.uint8).reshape(h, w, ch)[..., :3].copy()


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes through OpenCV or Pillow (UsageError naming the extra)."""
    img = np.ascontiguousarray(rgb, np.uint8)
    try:
        import cv2

        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
        if not ok:
            raise ValueError("OpenCV could not encode the frame as JPEG")
        return buf.tobytes()
    except ImportError:
        pass
    try:
        import io

        from PIL import Image
    except ImportError:
        raise UsageError(JPEG_MISSING) from None
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="JPEG", quality=int(quality))
    return out.getvalue()


def jpeg_available() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("cv2", "PIL"))


def decode_image(data: bytes, fmt: str) -> np.ndarray:
    """PNG or JPEG bytes -> (H, W, 3) uint8 RGB."""
    if fmt == "png":
        return decode_png(data)
    if fmt not in ("jpeg", "jpg"):
        raise ValueError(f"unknown image format {fmt!r} (png or jpeg)")
    try:
        import cv2

        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError("OpenCV could not decode the JPEG frame")
        return np.ascontiguousarray(img[..., ::-1])
    except ImportError:
        pass
    try:
        import io

        from PIL import Image
    except ImportError:
        raise UsageError(JPEG_MISSING.replace("frames need", "frames need, to be read,")) from None
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
